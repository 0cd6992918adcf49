import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

import gd_jax as gd
from gd_jax.cli import main

QUICK = ["--sizes", "784,16,10", "--epochs", "2", "--no-progress"]


def test_train_writes_a_complete_run_folder(tmp_path, capsys, mnist_sample):
    out = tmp_path / "run"
    assert main(["train", *QUICK, "--out", str(out), "--momentum", "0.5", "--cost", "cross-entropy",
                 "--eta", "0.5", "--init", "scaled"]) == 0
    assert sorted(p for p in os.listdir(out) if not p.startswith("checkpoint")) == \
        ["config.json", "history.json", "history.png", "params.npz"]
    history = json.loads((out / "history.json").read_text())
    config = json.loads((out / "config.json").read_text())
    assert config["sizes"] == [784, 16, 10] and config["learning_rate"] == 0.5 and config["momentum"] == 0.5
    assert history["config"] == config
    assert [e["epoch"] for e in history["epochs"]] == [1, 2]
    assert set(history["epochs"][0]) >= {"epoch", "train_cost", "eval_cost", "eval_accuracy", "seconds"}
    # The saved params give exactly the accuracy the run reported, through the public loader.
    params = gd.load_params(out / "params.npz")
    assert gd.accuracy(params, mnist_sample[1]) == pytest.approx(history["test_accuracy"], abs=1e-7)
    assert history["epochs"][-1]["eval_accuracy"] == pytest.approx(history["test_accuracy"], abs=1e-7)
    assert f"run folder {out}" in capsys.readouterr().out
    # The PNG is a real image: its signature and a plausible size.
    png = (out / "history.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_cli_run_equals_the_python_api(tmp_path):
    out = tmp_path / "run"
    assert main(["train", *QUICK, "--seed", "5", "--out", str(out)]) == 0
    init_key, shuffle_key = jax.random.split(jax.random.key(5))
    train, test = gd.load_mnist("sample")
    params, _ = gd.fit(gd.init_mlp(init_key, [784, 16, 10]), train, eval_data=test, epochs=2, batch_size=10,
                       optimizer=gd.sgd(3.0), cost=gd.quadratic_cost, key=shuffle_key)
    saved = gd.load_params(out / "params.npz")
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(saved)):
        np.testing.assert_array_equal(a, b)


def test_evaluate_reads_a_run_folder(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *QUICK, "--out", str(out)]) == 0
    trained = json.loads((out / "history.json").read_text())["test_accuracy"]
    capsys.readouterr()
    assert main(["evaluate", str(out)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["test_accuracy"] == pytest.approx(trained, abs=1e-7) and report["n"] == 10_000


def test_refuses_to_overwrite_a_run_folder_unless_told(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *QUICK, "--out", str(out)]) == 0
    before = {p: (out / p).read_bytes() for p in os.listdir(out) if (out / p).is_file()}
    capsys.readouterr()
    assert main(["train", *QUICK, "--out", str(out), "--seed", "9"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already exists" in err and "--overwrite" in err
    assert {p: (out / p).read_bytes() for p in before} == before
    assert main(["train", *QUICK, "--out", str(out), "--seed", "9", "--overwrite"]) == 0
    assert (out / "params.npz").read_bytes() != before["params.npz"]


@pytest.mark.parametrize("args", [["--sizes", "100,30,10"], ["--sizes", "784,30,5"], ["--eta", "-1"],
                                  ["--batch-size", "0"], ["--sizes", "784,x"], ["--cost", "hinge"]])
def test_bad_arguments_give_one_line_and_exit_2(tmp_path, capsys, args):
    out = tmp_path / "run"
    assert main(["train", "--no-progress", "--out", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gd-jax") and err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()  # validated before anything is written


@pytest.mark.slow
def test_default_command_reaches_the_textbook_accuracy(tmp_path, check_recorded_accuracy):
    """`gd-jax train` as the README runs it: all defaults, as a subprocess, via python -m."""
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "gd_jax", "train", "--out", str(out)], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    history = json.loads((out / "history.json").read_text())
    assert history["config"]["sizes"] == [784, 30, 10] and len(history["epochs"]) == 30
    assert history["config"]["learning_rate"] == 3.0 and history["config"]["batch_size"] == 10
    check_recorded_accuracy(history["test_accuracy"], "gd-jax train")


def test_full_mnist_offline_without_data_fails_at_once_with_the_three_ways(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--no-progress", "--dataset", "mnist", "--data-dir", str(tmp_path / "tfds"),
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "--data-dir" in err and "--idx-dir" in err and "--download" in err
    assert not out.exists()


def test_run_files_get_the_usual_permissions(tmp_path):
    out = tmp_path / "run"
    old = os.umask(0o022)
    try:
        assert main(["train", *QUICK, "--epochs", "1", "--out", str(out)]) == 0
    finally:
        os.umask(old)
    for name in ("config.json", "history.json", "params.npz", "history.png"):
        assert (out / name).stat().st_mode & 0o777 == 0o644, name
