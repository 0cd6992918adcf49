"""The run folder (gd_jax.cli.run_folder, resume, progress): atomic claims under concurrency, stale
temporaries, file modes, progress."""

import io
import json
import os
import stat
import subprocess
import sys

import numpy as np
import pytest

from gd_jax._src import serialization
from gd_jax.cli import errors, main, progress, resume, run_folder

DRAWN = ["--sizes", "784,16,10", "--no-progress"]
QUICK = [*DRAWN, "--no-figures"]  # where the figures are not what is tested: about 2 s less a run

# A child whose clock always says the same second, so that every default run name clashes.
_SAME_SECOND = ("import sys, time; time.strftime = lambda fmt, *t: '20260101-000000'; "
                "from gd_jax.cli import main; sys.exit(main())")


@pytest.mark.slow
def test_concurrent_runs_started_in_the_same_second_never_share_a_folder(tmp_path):
    seeds = [11, 12, 13]
    procs = [subprocess.Popen([sys.executable, "-c", _SAME_SECOND, "train", *QUICK, "--epochs", "1", "--seed",
                               str(seed)], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for seed in seeds]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outputs
    folders = sorted(os.listdir(tmp_path / "runs"))
    assert folders == ["20260101-000000", "20260101-000000-2", "20260101-000000-3"]
    found = []
    for name in folders:
        folder = tmp_path / "runs" / name
        config = json.loads((folder / "config.json").read_text())
        history = json.loads((folder / "history.json").read_text())
        # One run's files only: the config, the history's config and the command line agree.
        assert history["config"] == config and len(history["epochs"]) == 1
        assert config["segments"][0]["command"][-1] == str(config["seed"])
        found.append(config["seed"])
        # Each process announced its own folder.
        assert sum(f"run folder runs/{name}\n" in out for out, _ in outputs) == 1
    assert sorted(found) == seeds


def test_claim_takes_the_next_free_name_and_never_an_existing_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(run_folder.time, "strftime", lambda fmt, *t: "20260101-000000")
    root = str(tmp_path / "runs")
    first = run_folder.claim_run_folder(None, {"n": 1}, root=root)
    second = run_folder.claim_run_folder(None, {"n": 2}, root=root)
    os.makedirs(os.path.join(root, "20260101-000000-3"))  # a folder someone else made: skipped
    third = run_folder.claim_run_folder(None, {"n": 3}, root=root)
    names = [os.path.basename(f.path) for f in (first, second, third)]
    assert names == ["20260101-000000", "20260101-000000-2", "20260101-000000-4"]
    for n, folder in enumerate((first, second, third), 1):
        assert json.loads(open(folder.file("config.json")).read()) == {"n": n}
        folder.release()


def test_a_folder_in_use_or_claimed_is_refused(tmp_path):
    out = str(tmp_path / "run")
    with run_folder.claim_run_folder(out, {"n": 1}):
        with pytest.raises(errors.BadInput, match="is in use by another gd-jax process"):
            run_folder.open_run_folder(out)
    # Claimed meanwhile (empty when checked, config.json there when claiming): refused, the first run's file kept.
    empty = tmp_path / "empty"
    empty.mkdir()
    run_folder.write_json(empty / "config.json", {"n": 1}, exclusive=True)
    with pytest.raises(FileExistsError):
        run_folder.write_json(empty / "config.json", {"n": 2}, exclusive=True)
    assert json.loads((empty / "config.json").read_text()) == {"n": 1}


def test_resume_removes_the_temporary_files_a_killed_writer_left(tmp_path):
    out = tmp_path / "run"
    assert main(["train", *QUICK, "--epochs", "1", "--out", str(out)]) == 0
    stale = [out / ".tmp-k1l2m3params.npz", out / ".tmp-a1b2c3history.json",
             out / "checkpoints" / ".tmp-x9y8z7epoch-000002.npz"]
    for path in stale:
        path.write_bytes(b"half a file")
    assert main(["train", "--resume", str(out), "--epochs", "2", "--no-progress", "--no-figures"]) == 0
    assert not [p for p in stale if p.exists()]
    assert not [n for n in os.listdir(out) if n.startswith(".tmp-")]


def test_overwrite_removes_run_files_and_temporaries_but_nothing_else(tmp_path):
    out = tmp_path / "run"
    assert main(["train", *QUICK, "--epochs", "1", "--out", str(out)]) == 0
    (out / "notes.txt").write_text("mine")
    (out / ".tmp-abcparams.npz").write_bytes(b"stale")
    assert main(["train", *QUICK, "--epochs", "1", "--out", str(out), "--overwrite", "--seed", "4"]) == 0
    assert (out / "notes.txt").read_text() == "mine" and not (out / ".tmp-abcparams.npz").exists()
    assert json.loads((out / "config.json").read_text())["seed"] == 4


def test_atomic_writes_take_the_umask_without_setting_it(tmp_path, monkeypatch):
    old = os.umask(0o027)
    try:
        def no_umask(mask):
            raise AssertionError("os.umask changed the process-wide umask")

        monkeypatch.setattr(os, "umask", no_umask)
        serialization.atomic_write_bytes(tmp_path / "a.bin", b"data")
        # The reference: the mode a plain open() gives a new file under the same umask.
        with open(tmp_path / "plain.bin", "wb"):
            pass
        expected = stat.S_IMODE(os.stat(tmp_path / "plain.bin").st_mode)
        assert expected == 0o640
        assert stat.S_IMODE(os.stat(tmp_path / "a.bin").st_mode) == expected
        assert serialization.file_mode(tmp_path) == expected
    finally:
        monkeypatch.undo()
        os.umask(old)


def test_file_mode_without_proc_probes_a_file(tmp_path, monkeypatch):
    real_open = open

    def no_proc(path, *args, **kwargs):
        if str(path).startswith("/proc/"):
            raise FileNotFoundError(path)
        return real_open(path, *args, **kwargs)

    old = os.umask(0o077)
    try:
        monkeypatch.setattr("builtins.open", no_proc)
        assert serialization.file_mode(tmp_path) == 0o600
        os.umask(0o002)
        assert serialization.file_mode(tmp_path) == 0o664
        assert os.listdir(tmp_path) == []  # the probe is gone
    finally:
        os.umask(old)


def test_data_fingerprint_sees_one_changed_value():
    from gd_jax import Dataset

    x = np.zeros((5, 3), np.float32)
    y = np.arange(5, dtype=np.int32)
    a = resume.data_fingerprint({"train": Dataset(x, y)})
    x2 = x.copy()
    x2[4, 2] = 1e-7
    assert resume.data_fingerprint({"train": Dataset(x2, y)}) != a
    assert resume.data_fingerprint({"train": Dataset(x.copy(), y.copy())}) == a
    with pytest.raises(errors.BadInput, match="the train data differ from those run 'r' was trained on"):
        resume.check_same_data(a, resume.data_fingerprint({"train": Dataset(x2, y)}), out="r")


def test_progress_lines_are_labelled_and_the_estimate_leaves_compilation_out():
    stream = io.StringIO()
    bar = progress.EpochProgress(10, 0, eval_name="validation", stream=stream)  # not a terminal: plain lines
    bar.epoch_end({"epoch": 1, "train_cost": 0.25, "eval_accuracy": 0.5, "seconds": 1.0})
    lines = stream.getvalue().splitlines()
    assert lines == ["epoch 1/10: train cost 0.2500, validation accuracy 0.5000, 1.00 s training, 00:09 left"]
    assert "\r" not in stream.getvalue()


def test_progress_bar_on_a_terminal_is_labelled():
    stream = io.StringIO()
    bar = progress.EpochProgress(3, 1, stream=stream, bar=True)
    bar.epoch_end({"epoch": 2, "train_cost": 0.125, "eval_accuracy": 0.75, "seconds": 2.0})
    bar.close()
    text = stream.getvalue()
    assert "2/3 epochs" in text and "train cost 0.1250" in text and "test accuracy 0.7500" in text
    assert "00:02 left" in text


def test_plural():
    assert [progress.plural(n, "epoch") for n in (0, 1, 2)] == ["0 epochs", "1 epoch", "2 epochs"]


def _history(epochs: int = 2):
    import gd_jax as gd

    return gd.History.from_dict({"epochs": [{"epoch": e, "train_cost": 1.0 / e, "eval_accuracy": 0.5}
                                            for e in range(1, epochs + 1)]})


def test_the_figure_warm_up_ends_before_the_first_figure_is_drawn(tmp_path, monkeypatch):
    """matplotlib is not thread-safe: write_figures joins the warm-up thread before it draws."""
    import threading
    import time

    from gd_jax._src import plotting

    order = []
    monkeypatch.setattr(plotting, "warm_up", lambda: (time.sleep(0.5), order.append("warm-up")))
    monkeypatch.setattr(run_folder, "plot_history", lambda *a, **k: order.append("figure"))
    thread = run_folder.start_figure_warm_up()
    assert isinstance(thread, threading.Thread) and thread.daemon
    run_folder.write_figures(run_folder.RunFolder(str(tmp_path), None), _history(), {}, tensorboard=False,
                             warm_up=thread)
    assert order == ["warm-up", "figure"]


def test_a_failed_figure_warm_up_is_left_to_the_figures_to_report(monkeypatch):
    import threading

    from gd_jax._src import plotting

    uncaught = []
    monkeypatch.setattr(threading, "excepthook", uncaught.append)
    monkeypatch.setattr(plotting, "warm_up", lambda: 1 / 0)
    run_folder.start_figure_warm_up().join()
    assert uncaught == []


FIGURES = {"train": {"confusion.png", "hidden_weights.png", "history.png", "misclassified.png"},
           "sweep": {"accuracy.png", "costs.png"}}


def _pngs(folder) -> set[str]:
    return {name for name in os.listdir(folder) if name.endswith(".png")}


def _events(folder) -> list[str]:
    return sorted(name for name in os.listdir(folder) if name.startswith("events.out.tfevents."))


@pytest.mark.parametrize("command", ["train", "sweep"])
def test_no_figures_draws_none_and_removes_those_an_earlier_segment_drew(tmp_path, command, monkeypatch):
    out = tmp_path / "run"
    argv = [command, *DRAWN, "--batch-size", "100", "--out", str(out)]
    assert main([*argv, "--epochs", "1"]) == 0
    assert _pngs(out) == FIGURES[command]
    events_before = _events(out)
    drawn = []
    monkeypatch.setattr(run_folder, "start_figure_warm_up", lambda: drawn.append("warm-up"))
    monkeypatch.setattr(run_folder, "write_run_figures", lambda *a, **k: drawn.append("figures"))
    monkeypatch.setattr(run_folder, "plot_history", lambda *a, **k: drawn.append("figures"))
    monkeypatch.setattr(sys.modules["gd_jax.cli.sweep"], "plot_sweep", lambda *a, **k: drawn.append("figures"))
    assert main([command, "--resume", str(out), "--epochs", "2", "--no-progress", "--no-figures"]) == 0
    assert drawn == [] and _pngs(out) == set()  # the earlier figures showed one epoch of two: gone
    config = json.loads((out / "config.json").read_text())
    assert "no_figures" not in config and "no_figures" not in json.dumps(config.get("settings", {}))
    if command == "train":
        history = json.loads((out / "history.json").read_text())
        assert [e["epoch"] for e in history["epochs"]] == [1, 2] and "test_accuracy" in history
        # TensorBoard is written all the same: the complete file of both epochs replaced the first one's
        assert len(events_before) == 1 and len(_events(out)) == 1 and _events(out) != events_before
    else:
        assert [r["epoch"] for r in json.loads((out / "sweep.json").read_text())["records"]] == [1, 2]


def test_no_figures_needs_no_matplotlib(tmp_path, monkeypatch, capsys):
    cli_main = sys.modules["gd_jax.cli.main"]
    installed = cli_main.ensure_installed
    monkeypatch.setattr(cli_main, "ensure_installed", lambda module, **how: (
        installed("no_such_module_gd_jax", **how) if module == "matplotlib" else None))
    assert main(["train", *DRAWN, "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.rstrip().endswith("pip install 'gd-jax[all]', or pass --no-figures"), err
    assert main(["train", *DRAWN, "--epochs", "1", "--no-figures", "--out", str(tmp_path / "b")]) == 0
    assert _pngs(tmp_path / "b") == set()
