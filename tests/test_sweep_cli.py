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
import warnings

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
    assert cli.main(["train", *SMALL, "--eta", "3", "--seed", "1", "--epochs", "2", "--no-figures", "--out",
                     str(run)]) == 0
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
    (["--eta", "1,,2"], "--eta wants a number or a comma list"),
    (["--lmbda", "1,"], "--lmbda wants a number or a comma list"),
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
    assert main(["--resume", str(part), "--epochs", "2", "--no-progress", "--no-figures"]) == 0
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
    assert main(["--resume", str(out), "--epochs", str(done + 1), "--no-progress", "--no-figures"]) == 0
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


# --- issue 20: diverged models are an outcome, output habits, honest selection ----------------------------------


def test_a_sweep_where_every_model_diverges_exits_3_in_one_line_and_keeps_its_folder(tmp_path, capsys):
    out = tmp_path / "diverged"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no library warning reaches the user
        status = main([*SMALL, "--eta", "100000,10000000", "--epochs", "2", "--out", str(out)])
    captured = capsys.readouterr()
    assert status == 3
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert "every model diverged" in lines[0] and "learning_rate=100000" in lines[0] and "1e+07" in lines[0]
    assert "--eta 10000" in lines[0]
    assert sorted(os.listdir(out)) == ["accuracy.png", "checkpoints", "config.json", "costs.png", "params.npz",
                                       "sweep.csv", "sweep.json", "tensorboard"]
    assert len(os.listdir(out / "tensorboard")) == 2
    assert all(m["stop_reason"] == "diverged" for m in json.loads((out / "sweep.json").read_text())["models"])
    assert main(["--resume", str(out)]) == 3
    resumed = capsys.readouterr()
    assert resumed.err.strip().count("\n") == 0 and "nothing to resume" in resumed.err, resumed.err


def test_some_diverged_models_leak_no_warning_and_the_figures_are_in_fractions(tmp_path, capsys):
    out = tmp_path / "some"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        status = main([*SMALL, "--eta", "1,100000", "--epochs", "1", "--out", str(out)])
    assert status == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "1 of 2 models diverged: learning_rate=100000 (seed 0)" in err[0]


def test_plot_sweep_draws_titled_fractions_and_whole_epoch_ticks(finished, tmp_path):
    import matplotlib.pyplot as plt

    import gd_jax as gd
    from gd_jax._src import sweep_figures

    _, out = finished
    result = gd.load_sweep(out)
    seen = {}
    original = sweep_figures.save_figure

    def keep(fig, path):
        seen[os.path.basename(path)] = [(ax.get_ylabel(), ax.get_ylim(), list(ax.get_xticks()),
                                         ax.get_title(), fig._suptitle.get_text() if fig._suptitle else "")
                                        for ax in fig.axes]
        original(fig, path)

    sweep_figures.save_figure = keep
    try:
        sweep_figures.plot_sweep(result, tmp_path, title="a sweep")
    finally:
        sweep_figures.save_figure = original
        plt.close("all")
    (ylabel, ylim, _, _, suptitle), = seen["accuracy.png"]
    assert "fraction" in ylabel and ylim[1] <= 1.05 and "a sweep" in suptitle
    (_, _, xticks, title, _), = seen["costs.png"]
    assert "a sweep" in title and all(float(t).is_integer() for t in xticks)


def test_output_is_one_plain_line_per_epoch_with_plurals(tmp_path, capsys):
    out = tmp_path / "plain"
    assert main([*SMALL[:-1], "--eta", "3", "--epochs", "2", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["epoch 1/2", "epoch 2/2"] and "\r" not in captured.err
    assert "1 model," in captured.out and "over 1 seed," in captured.out
    assert "chosen on the test set" in captured.out and "--validation" in captured.out
    assert main(["--resume", str(out), "--no-progress"]) == 0
    resumed = capsys.readouterr()
    assert "already complete" in resumed.err and "already complete" in resumed.out
    assert " in " not in resumed.out.split(";")[0]  # no "2 epochs in 0.0 s"


def test_with_validation_the_best_is_chosen_on_validation_and_tested_once(tmp_path, capsys):
    out = tmp_path / "val"
    assert main([*SMALL, "--eta", "0.5,3", "--epochs", "1", "--validation", "--out", str(out)]) == 0
    line = capsys.readouterr().out
    assert "best on validation" in line and "tested once: test accuracy" in line
    assert "chosen on the test set" not in line


# --- issue 20: a sweep folder is a run folder of K models -------------------------------------------------------


def test_load_sweep_returns_the_result_and_its_models(finished):
    import gd_jax as gd

    _, out = finished
    result = gd.load_sweep(out)
    document = json.loads((out / "sweep.json").read_text())
    assert result.models == document["models"] and result.records == document["records"]
    assert result.select(learning_rate=3.0, seed=1) == [3]
    assert result.best("eval_accuracy")["learning_rate"] in (0.5, 3.0)
    stacked = np.load(out / "params.npz")
    np.testing.assert_array_equal(np.asarray(result.model_params(3)[0]["w"]), stacked["layer0/w"][3])
    network = gd.load_trained_network(out, model="learning_rate=3,seed=1")
    np.testing.assert_array_equal(np.asarray(network.params[1]["b"]), stacked["layer1/b"][3])
    with pytest.raises(ValueError, match="choose one with --model"):
        gd.load_trained_network(out)
    with pytest.raises(ValueError, match="2 models"):
        gd.load_trained_network(out, model="learning_rate=3")


@pytest.mark.parametrize("model", ["3", "learning_rate=3,seed=1"])
def test_evaluate_one_model_of_a_sweep_equals_its_recorded_test_accuracy(finished, capsys, model):
    _, out = finished
    capsys.readouterr()
    assert cli.main(["evaluate", str(out), "--model", model]) == 0
    shown = json.loads(capsys.readouterr().out)
    last = [r for r in json.loads((out / "sweep.json").read_text())["records"] if r["model"] == 3][-1]
    assert shown["model"] == 3
    assert shown["test_accuracy"] == pytest.approx(last["eval_accuracy"], abs=1e-6)


def test_evaluate_and_predict_without_model_list_the_models_in_one_line(finished, capsys, tmp_path):
    from PIL import Image

    _, out = finished
    capsys.readouterr()
    assert cli.main(["evaluate", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "3 (learning_rate=3, seed=1)" in err and "--model" in err
    image = tmp_path / "digit.png"
    Image.fromarray(np.zeros((28, 28), np.uint8) + np.eye(28, dtype=np.uint8) * 255).save(image)
    assert cli.main(["predict", str(out), str(image)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--model" in err
    assert cli.main(["predict", str(out), "--model", "2", str(image)]) == 0
    assert "digit.png" in capsys.readouterr().out


def test_train_resume_of_a_sweep_folder_points_to_sweep_resume(finished, capsys):
    _, out = finished
    capsys.readouterr()
    assert cli.main(["train", "--resume", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"gd-jax sweep --resume {out}" in err
