"""``gd-jax sweep``: the sweep folder, its rules (no overwrite, one-line errors, exit statuses)
and resume, each model against the same run made by ``gd-jax train``."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from gd_jax import cli


def main(argv: list[str]) -> int:
    return cli.main(["sweep", *argv])

SMALL = ["--sizes", "784,8,10", "--batch-size", "500", "--no-progress"]


def folder_bytes(path) -> dict[str, bytes]:
    found = {}
    for root, _, files in os.walk(path):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                found[os.path.relpath(os.path.join(root, name), path)] = f.read()
    return found


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A 2 x 2 sweep of 2 epochs: --eta 0.5,3 --seeds 2."""
    out = tmp_path_factory.mktemp("sweeps") / "a"
    status = main([*SMALL, "--eta", "0.5,3", "--seeds", "2", "--epochs", "2", "--out", str(out)])
    return status, out


def test_sweep_folder_holds_tables_params_and_figures(finished):
    status, out = finished
    assert status == 0
    assert sorted(os.listdir(out)) == ["accuracy.png", "checkpoints", "config.json", "costs.png", "params.npz",
                                       "sweep.csv", "sweep.json", "tensorboard"]
    document = json.loads((out / "sweep.json").read_text())
    config = json.loads((out / "config.json").read_text())
    assert document["config"]["learning_rate"] == config["grid"]["learning_rate"] == [0.5, 3.0]
    assert [(m["learning_rate"], m["seed"]) for m in document["models"]] == [(0.5, 0), (0.5, 1), (3.0, 0), (3.0, 1)]
    rows = list(csv.DictReader(io.StringIO((out / "sweep.csv").read_text())))
    assert len(rows) == len(document["records"]) == 8
    assert [float(r["eval_accuracy"]) for r in rows] == pytest.approx([r["eval_accuracy"] for r in document["records"]])
    params = np.load(out / "params.npz")
    assert params["layer0/w"].shape == (4, 784, 8) and params["layer1/b"].shape == (4, 10)
    for name in ("accuracy.png", "costs.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_each_model_equals_gd_jax_train_with_its_seed(finished, tmp_path):
    """Model (eta 3, seed 1) against `gd-jax train --eta 3 --seed 1` with the same settings."""
    _, out = finished
    run = tmp_path / "run"
    assert cli.main(["train", *SMALL, "--eta", "3", "--seed", "1", "--epochs", "2", "--out", str(run)]) == 0
    solo = np.load(run / "params.npz")
    stacked = np.load(out / "params.npz")
    # Equal to float32 rounding: XLA may choose another dot kernel for a batch of 4 products
    # of 500 rows than for one (at batch 16 the Python tests see bit-identical results).
    for name in solo.files:
        np.testing.assert_allclose(stacked[name][3], solo[name], rtol=0, atol=1e-6)
    history = json.loads((run / "history.json").read_text())
    records = [r for r in json.loads((out / "sweep.json").read_text())["records"] if r["model"] == 3]
    np.testing.assert_allclose([r["eval_accuracy"] for r in records], [e["eval_accuracy"] for e in history["epochs"]],
                               rtol=1e-6)


def test_existing_folder_is_never_overwritten(finished, capsys):
    _, out = finished
    before = folder_bytes(out)
    assert main([*SMALL, "--eta", "1", "--epochs", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "already exists" in err and "--overwrite" in err
    assert folder_bytes(out) == before


@pytest.mark.parametrize("options, message", [
    (["--eta", "0.1,x"], "--eta wants a number or a comma list"),
    (["--eta", "0.1,-1"], "--eta -1 is not a positive finite number"),
    (["--momentum", "0.5,1"], "--momentum 1 is outside [0, 1)"),
    (["--seeds", "0"], "--seeds wants a count >= 1"),
    (["--eta", "1,1"], "repeats a value"),
    (["--sizes", "100,8,10"], "train.x has 784 features"),
    (["--batch-size", "0"], "batch_size must be an integer between 1 and 5000"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, options, message):
    out = tmp_path / "never"
    assert main([*SMALL, "--epochs", "1", "--out", str(out), *options]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err, err
    assert not out.exists()


def test_resume_continues_to_the_uninterrupted_result(finished, tmp_path, capsys):
    _, whole = finished
    part = tmp_path / "part"
    assert main([*SMALL, "--eta", "0.5,3", "--seeds", "2", "--epochs", "1", "--out", str(part)]) == 0
    assert main(["--resume", str(part), "--eta", "1"]) == 2
    assert "conflicts with the run's saved learning_rate" in capsys.readouterr().err
    assert main(["--resume", str(part), "--epochs", "2", "--no-progress"]) == 0
    resumed, uninterrupted = np.load(part / "params.npz"), np.load(whole / "params.npz")
    for name in uninterrupted.files:
        np.testing.assert_array_equal(resumed[name], uninterrupted[name])
    records = json.loads((part / "sweep.json").read_text())["records"]
    assert records == json.loads((whole / "sweep.json").read_text())["records"]


@pytest.mark.slow
def test_ctrl_c_keeps_whole_files_and_resumes(tmp_path):
    """SIGINT after the first epoch's checkpoint: exit 130, every file whole, and --resume finishes."""
    out = tmp_path / "s"
    command = [sys.executable, "-c", "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler);"
               "from gd_jax.cli import main; sys.exit(main(['sweep', *sys.argv[1:]]))",
               *SMALL, "--batch-size", "10", "--eta", "0.5,3", "--epochs", "100000", "--out", str(out)]
    child = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300

    def trained_an_epoch() -> bool:  # epoch 1's checkpoint, or a later one (only the newest two are kept)
        return any(p.name != "epoch-000000.npz" for p in (out / "checkpoints").glob("epoch-*.npz"))

    while not trained_an_epoch() and time.time() < deadline:
        assert child.poll() is None, child.communicate()[1]  # it stopped before its first epoch: say why
        time.sleep(0.2)
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=300)
    assert child.returncode == 130, err
    assert "Continue with: gd-jax sweep --resume" in err
    document = json.loads((out / "sweep.json").read_text())
    done = len(document.get("epoch_seconds", []))
    assert done >= 1 and np.load(out / "params.npz")["layer0/w"].shape == (2, 784, 8)
    assert main(["--resume", str(out), "--epochs", str(done + 1), "--no-progress"]) == 0
    assert len(json.loads((out / "sweep.json").read_text())["epoch_seconds"]) == done + 1


def test_each_model_is_a_tensorboard_run_with_its_own_scalars_and_hyperparameters(finished):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    status, out = finished
    assert status == 0
    records = json.loads((out / "sweep.json").read_text())["records"]
    models = sorted({r["model"] for r in records})
    assert sorted(os.listdir(out / "tensorboard")) == [f"model-{i:03d}" for i in models]
    for i in models:
        events = EventAccumulator(str(out / "tensorboard" / f"model-{i:03d}"), size_guidance={"scalars": 0})
        events.Reload()
        own = [r for r in records if r["model"] == i]
        got = events.Scalars("cost/train")
        assert [(e.step, e.value) for e in got] == [(r["epoch"], float(np.float32(r["train_cost"]))) for r in own]
        start = plugin_data_pb2.HParamsPluginData.FromString(
            events.PluginTagToContent("hparams")["_hparams_/session_start_info"]).session_start_info
        assert start.hparams["learning_rate"].number_value == own[0]["learning_rate"]
        assert start.hparams["seed"].number_value == own[0]["seed"]
