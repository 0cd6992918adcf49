"""TensorBoard event files of a run folder (gd_jax._src.tensorboard), read back by TensorBoard itself.

Nothing here trusts the writer: every test reads the event files with tensorboard's own
``EventAccumulator`` (what ``tensorboard --logdir`` uses) and the HParams plugin's protocol
buffers, and compares the values with the history, config and figures they came from.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

import gd_jax as gd
from gd_jax._src.plotting import write_run_figures
from gd_jax._src.tensorboard import EVENT_SUFFIX, hparams_of, scalars_of, write_run_events

CONFIG = {"sizes": [784, 30, 10], "epochs": 3, "batch_size": 10, "learning_rate": 3.0, "momentum": None,
          "nesterov": False, "cost": "quadratic", "activation": "sigmoid", "init": "normal", "seed": 2,
          "validation": False}


@pytest.fixture(scope="module")
def run(tmp_path_factory, mnist_sample):
    """A real short run: (run folder with its figures, params, history, test data)."""
    train, test = mnist_sample
    params = gd.init_mlp(jax.random.key(0), [784, 30, 10])
    params, history = gd.fit(params, train.take(1000), eval_data=test.take(1000), epochs=3, batch_size=10,
                             optimizer=gd.sgd(3.0), cost=gd.quadratic_cost, key=jax.random.key(1))
    folder = tmp_path_factory.mktemp("run")
    figures = write_run_figures(folder, params, test.take(1000), history, CONFIG)
    return folder, history, figures


def read(folder) -> EventAccumulator:
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    events.Reload()
    return events


def event_files(folder) -> list[str]:
    return sorted(name for name in os.listdir(folder) if name.startswith("events.out.tfevents."))


def test_scalars_read_back_equal_the_history(run):
    folder, history, _ = run
    write_run_events(folder, history, CONFIG, test_cost=0.25, test_accuracy=0.875)
    events = read(folder)
    epochs = history["epoch"]
    for tag, column in [("cost/train", "train_cost"), ("cost/eval", "eval_cost"), ("accuracy/eval", "eval_accuracy"),
                        ("accuracy/train", "train_accuracy"), ("time/epoch_seconds", "seconds")]:
        got = events.Scalars(tag)
        assert [e.step for e in got] == epochs, tag
        # Event files store float32: equal to the history's values rounded to float32.
        assert [e.value for e in got] == [float(np.float32(v)) for v in history[column]], tag
    assert [(e.step, e.value) for e in events.Scalars("learning_rate")] == [(e, 3.0) for e in epochs]
    assert [(e.step, e.value) for e in events.Scalars("test/accuracy")] == [(3, 0.875)]
    assert [(e.step, e.value) for e in events.Scalars("test/cost")] == [(3, 0.25)]


def test_hyperparameters_read_back_equal_the_config(run):
    folder, history, _ = run
    write_run_events(folder, history, CONFIG, test_accuracy=0.875)
    content = read(folder).PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    got = {name: getattr(value, value.WhichOneof("kind")) for name, value in start.hparams.items()}
    assert got == {**CONFIG, "sizes": "784,30,10", "momentum": "none"}
    assert start.group_name == os.path.basename(folder)  # one row per run folder
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert sorted(h.name for h in experiment.hparam_infos) == sorted(CONFIG)
    assert sorted(m.name.tag for m in experiment.metric_infos) == sorted(
        ["cost/train", "cost/eval", "accuracy/train", "accuracy/eval", "test/accuracy"])


def test_figures_are_embedded_byte_for_byte(run):
    folder, history, figures = run
    write_run_events(folder, history, CONFIG, figures=list(figures.values()))
    events = read(folder)
    assert sorted(events.Tags()["images"]) == sorted(f"figures/{name[:-4]}" for name in figures)
    for name, path in figures.items():
        (image,) = events.Images(f"figures/{name[:-4]}")
        with open(path, "rb") as f:
            assert image.encoded_image_string == f.read()
        from PIL import Image

        with Image.open(path) as png:
            assert (image.width, image.height) == png.size
        assert image.step == 3
    write_run_events(folder, history, CONFIG, figures={"curves": figures["history.png"]})
    assert read(folder).Tags()["images"] == ["curves"]


def test_writing_again_replaces_the_events_and_keeps_foreign_files(run, tmp_path):
    _, history, _ = run
    foreign = tmp_path / "events.out.tfevents.1.elsewhere"  # another tool's events in the same folder
    foreign.write_bytes(b"")
    first = write_run_events(tmp_path, gd.History(history.epochs[:2]), CONFIG)
    second = write_run_events(tmp_path, history, CONFIG)  # a resumed run, one epoch more
    assert first != second and not os.path.exists(first)
    assert event_files(tmp_path) == sorted([foreign.name, os.path.basename(second)])
    assert second.endswith(EVENT_SUFFIX)
    assert [e.step for e in read(tmp_path).Scalars("cost/train")] == [1, 2, 3]  # not 1, 2, 1, 2, 3
    assert [n for n in os.listdir(tmp_path) if n.startswith(".tmp")] == []


def test_what_records_hold_is_written_and_absent_values_skipped(tmp_path):
    records = [
        {"epoch": 1, "train_cost": 0.5, "eval_cost": None, "eval_accuracy": None, "seconds": 0.1,
         "grad_norm": 2.0, "param_norm": 10.0, "learning_rate_scale": 1.0, "custom": 7},
        {"epoch": 2, "train_cost": math.nan, "eval_cost": None, "eval_accuracy": None, "seconds": 0.1,
         "grad_norm": 1.0, "param_norm": 11.0, "learning_rate_scale": 0.5, "custom": 8, "note": "text"},
    ]
    history = gd.History(records)
    assert scalars_of(history, {"learning_rate": 0.2}) == {
        "cost/train": [(1, 0.5)], "time/epoch_seconds": [(1, 0.1), (2, 0.1)],
        "norm/gradient": [(1, 2.0), (2, 1.0)], "norm/params": [(1, 10.0), (2, 11.0)],
        "learning_rate/scale": [(1, 1.0), (2, 0.5)], "other/custom": [(1, 7.0), (2, 8.0)],
        "learning_rate": [(1, 0.2), (2, 0.1)]}
    write_run_events(tmp_path, history.to_dict(), {"learning_rate": 0.2})  # history.json's form works too
    events = read(tmp_path)
    assert "cost/eval" not in events.Tags()["scalars"] and "accuracy/eval" not in events.Tags()["scalars"]
    assert [(e.step, e.value) for e in events.Scalars("norm/gradient")] == [(1, 2.0), (2, 1.0)]
    assert [(e.step, round(e.value, 6)) for e in events.Scalars("learning_rate")] == [(1, 0.2), (2, 0.1)]
    assert events.PluginTagToContent("hparams")  # a config: hyperparameters
    write_run_events(tmp_path, history)  # no config: no hyperparameters, no learning rate
    assert "learning_rate" not in read(tmp_path).Tags()["scalars"]


def test_hparams_of_turns_settings_into_values_tensorboard_holds():
    assert hparams_of({"sizes": [784, 30, 10], "momentum": None, "eta": 3.0, "nesterov": True, "cost": "q",
                       "data": {"a": 1}}) == {"sizes": "784,30,10", "momentum": "none", "eta": 3.0, "nesterov": True,
                                              "cost": "q", "data": "{'a': 1}"}


def test_bad_input_writes_nothing(run, tmp_path):
    _, history, _ = run
    with pytest.raises(FileNotFoundError, match=r"run folder not found: .*nowhere"):
        write_run_events(tmp_path / "nowhere", history, CONFIG)
    with pytest.raises(FileNotFoundError, match=r"figure not found: .*missing\.png"):
        write_run_events(tmp_path, history, CONFIG, figures=[tmp_path / "missing.png"])
    (tmp_path / "fake.png").write_text("not a png")
    with pytest.raises(ValueError, match=r"fake\.png' is not a PNG file"):
        write_run_events(tmp_path, history, CONFIG, figures=[tmp_path / "fake.png"])
    assert os.listdir(tmp_path) == ["fake.png"]


def test_a_fresh_process_writes_events_without_tensorflow_or_torch(run, tmp_path):
    _, history, _ = run
    (tmp_path / "history.json").write_text(json.dumps({"config": CONFIG, **history.to_dict()}))
    code = ("import json, sys; from gd_jax._src.tensorboard import write_run_events; "
            "h = json.load(open(sys.argv[1] + '/history.json')); write_run_events(sys.argv[1], h, h['config']); "
            "print(sorted({'tensorflow', 'torch', 'tensorboardX'} & {m.split('.')[0] for m in sys.modules}))")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    assert [e.value for e in read(tmp_path).Scalars("cost/train")] == [float(np.float32(v))
                                                                         for v in history["train_cost"]]


def test_norms_recorded_per_epoch_equal_numpy_and_backprop(mnist_sample, tmp_path):
    from gd_jax._src.analysis import gradient_norm, norms_recorder, parameter_norm

    train = mnist_sample[0].take(500)
    seen = []
    params, history = gd.fit(gd.init_mlp(jax.random.key(3), [784, 30, 10]), train, epochs=2, batch_size=50,
                             optimizer=gd.sgd(3.0), cost=gd.quadratic_cost, key=jax.random.key(4),
                             on_epoch_end=norms_recorder(train, cost=gd.quadratic_cost, n_classes=10,
                                                         then=lambda end: seen.append(dict(end.history.epochs[-1]))))
    assert [r["param_norm"] for r in seen] == history["param_norm"]  # recorded before `then` runs
    # The last epoch's norms against numpy: the parameters' norm, and the textbook backprop's gradient.
    flat = np.concatenate([np.asarray(p, np.float64).ravel() for layer in params for p in layer.values()])
    assert history["param_norm"][-1] == pytest.approx(np.linalg.norm(flat), rel=1e-5)
    y = np.eye(10)[np.asarray(train.y)]
    grads = gd.backprop([{k: np.asarray(v, np.float64) for k, v in layer.items()} for layer in params],
                        np.asarray(train.x, np.float64), y, cost="quadratic")
    want = np.sqrt(sum(np.sum(g ** 2) for layer in grads for g in layer.values()))
    assert history["grad_norm"][-1] == pytest.approx(want, rel=1e-4)
    assert parameter_norm(params) == history["param_norm"][-1]
    assert gradient_norm(params, train, cost=gd.quadratic_cost, n_classes=10) == history["grad_norm"][-1]
    # And TensorBoard shows them.
    write_run_events(tmp_path, history, CONFIG)
    events = read(tmp_path)
    assert [e.value for e in events.Scalars("norm/params")] == [float(np.float32(v)) for v in history["param_norm"]]
    assert [e.value for e in events.Scalars("norm/gradient")] == [float(np.float32(v)) for v in history["grad_norm"]]
    only_params = norms_recorder()
    _, plain = gd.fit(params, train, epochs=1, batch_size=50, optimizer=gd.sgd(3.0), cost=gd.quadratic_cost,
                      key=jax.random.key(4), on_epoch_end=only_params)
    assert "param_norm" in plain.epochs[0] and "grad_norm" not in plain.epochs[0]
    with pytest.raises(ValueError, match=r"needs cost= and n_classes= with train="):
        norms_recorder(train)


def test_gd_jax_train_writes_events_and_figures_that_match_its_history(tmp_path, mnist_sample, capsys):
    """A run folder from `gd-jax train` opens in TensorBoard: its scalars, hparams and images are the run's own."""
    from PIL import Image

    from gd_jax.cli import main

    out = tmp_path / "run"
    assert main(["train", "--epochs", "2", "--sizes", "784,12,10", "--no-progress", "--out", str(out)]) == 0
    history = json.loads((out / "history.json").read_text())
    events = read(out)
    for tag, column in [("cost/train", "train_cost"), ("accuracy/eval", "eval_accuracy")]:
        got = events.Scalars(tag)
        assert [e.step for e in got] == [1, 2]
        assert [e.value for e in got] == [float(np.float32(r[column])) for r in history["epochs"]], tag
    assert events.Scalars("test/accuracy")[-1].value == float(np.float32(history["test_accuracy"]))
    assert "_hparams_/session_start_info" in events.PluginTagToContent("hparams")
    figures = {"history.png", "confusion.png", "misclassified.png", "hidden_weights.png"}
    assert sorted(events.Tags()["images"]) == sorted(f"figures/{f.removesuffix('.png')}" for f in figures)
    for name in figures:
        with Image.open(out / name) as image:
            assert image.format == "PNG" and image.size[0] > 100
    # The confusion matrix drawn is the one of the saved parameters on the test set.
    params = gd.load_params(out / "params.npz")
    counts = gd.confusion_matrix(params, mnist_sample[1])
    assert counts.trace() == round(history["test_accuracy"] * mnist_sample[1].size)

    quiet = tmp_path / "quiet"
    assert main(["train", "--epochs", "1", "--sizes", "784,12,10", "--no-progress", "--no-tensorboard",
                 "--out", str(quiet)]) == 0
    assert event_files(quiet) == [] and (quiet / "confusion.png").exists()
    # --overwrite removes the event file with the rest of the run's files.
    assert main(["train", "--epochs", "1", "--sizes", "784,12,10", "--no-progress", "--no-tensorboard",
                 "--overwrite", "--out", str(out)]) == 0
    assert event_files(out) == []


# --- issue 20: TensorBoard follows a run while it trains ---------------------------------------------------------


def _watch_epochs(monkeypatch, folder_of_event_files) -> list[tuple[int, list[int]]]:
    """Reads the event files with EventAccumulator at the end of every epoch (what `tensorboard --logdir` sees
    then): returns (epoch, the steps of cost/train) each time."""
    from gd_jax.cli import progress

    seen: list[tuple[int, list[int]]] = []
    original = progress.EpochProgress.epoch_end

    def epoch_end(self, record):
        steps = [e.step for e in read(folder_of_event_files).Scalars("cost/train")]
        seen.append((int(record["epoch"]), steps))
        original(self, record)

    monkeypatch.setattr(progress.EpochProgress, "epoch_end", epoch_end)
    return seen


def test_train_writes_each_epoch_as_it_ends_and_resume_continues_the_stream(tmp_path, monkeypatch):
    from gd_jax.cli import main

    out = tmp_path / "live"
    seen = _watch_epochs(monkeypatch, out)
    small = ["train", "--sizes", "784,8,10", "--batch-size", "500", "--no-progress", "--no-figures"]
    assert main([*small, "--epochs", "2", "--out", str(out)]) == 0
    assert seen == [(1, [1]), (2, [1, 2])]
    assert main(["train", "--resume", str(out), "--epochs", "4", "--no-progress", "--no-figures"]) == 0
    assert seen[2:] == [(3, [1, 2, 3]), (4, [1, 2, 3, 4])]  # no duplicate step after the resume
    assert [e.step for e in read(out).Scalars("cost/train")] == [1, 2, 3, 4]
    assert len(event_files(out)) == 1


def test_sweep_writes_each_models_epoch_as_it_ends_and_resume_continues_the_stream(tmp_path, monkeypatch):
    from gd_jax.cli import main

    out = tmp_path / "sweep"
    seen = _watch_epochs(monkeypatch, out / "tensorboard" / "model-001")
    small = ["sweep", "--sizes", "784,8,10", "--batch-size", "500", "--eta", "0.5,3", "--no-progress", "--no-figures"]
    assert main([*small, "--epochs", "2", "--out", str(out)]) == 0
    assert seen == [(1, [1]), (2, [1, 2])]
    assert main(["sweep", "--resume", str(out), "--epochs", "3", "--no-progress", "--no-figures"]) == 0
    assert seen[2:] == [(3, [1, 2, 3])]
    events = read(out / "tensorboard" / "model-001")
    records = [r for r in json.loads((out / "sweep.json").read_text())["records"] if r["model"] == 1]
    assert [(e.step, e.value) for e in events.Scalars("cost/train")] == [
        (r["epoch"], float(np.float32(r["train_cost"]))) for r in records]
