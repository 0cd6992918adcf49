"""Runs that survive: SIGKILL and Ctrl-C in the middle of an epoch, then --resume; divergence; extending a run.

The reference for a resumed run is the same run uninterrupted: its final parameters must
be bit-identical (CPU) and its history the same except the wall-clock ``seconds``.
"""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

import gd_jax as gd
from gd_jax._src.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint
from gd_jax.cli import main

# Epochs long enough to be killed inside one (5,000 single-example steps, 0.15-0.25 s on a
# 2-core CPU); momentum, so that the optimizer state must be restored exactly too.
KILL_RUN = ["--sizes", "784,100,10", "--batch-size", "1", "--epochs", "3", "--cost", "cross-entropy", "--eta", "0.1",
            "--momentum", "0.5", "--init", "scaled", "--seed", "3", "--no-progress", "--no-figures"]
DRAWN = ["--sizes", "784,16,10", "--no-progress"]
QUICK = [*DRAWN, "--no-figures"]  # where the figures are not what is tested: about 2 s less a run


# A shell that starts a job in the background (as CI runners may) makes SIGINT ignored in every
# child, and Python keeps an ignored SIGINT ignored. The child restores what an interactive
# terminal gives (Python's own handler) before running the command line. (A preexec_fn would do
# it too, but runs Python code between fork and exec of a multithreaded JAX process.)
_CHILD = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
          "from gd_jax.cli import main; sys.exit(main())")


def _start(*args):
    return subprocess.Popen([sys.executable, "-c", _CHILD, "train", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_for_checkpoint(out, epoch, proc, timeout=120):
    """Polls until the checkpoint after ``epoch`` epochs exists (the process must still be running)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = list_checkpoints(out / "checkpoints")
        if found and found[-1][0] >= epoch:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.005)
    raise AssertionError(f"no checkpoint for epoch {epoch} within {timeout} s")


def _npz(path):
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def _without_seconds(history):
    """A history without what differs between processes: timings, and the environment of each segment."""
    config = {k: v for k, v in history["config"].items() if k != "segments"}
    timings = ("seconds", "compile_seconds")
    return {**{k: v for k, v in history.items() if k not in timings}, "config": config,
            "epochs": [{k: v for k, v in e.items() if k not in timings} for e in history["epochs"]]}


def _assert_same_run(a, b, *, momentum=False):
    """Two run folders hold bit-identical params and final state, and the same history but timings."""
    pa, pb = _npz(a / "params.npz"), _npz(b / "params.npz")
    assert pa.keys() == pb.keys()
    for k in pa:
        np.testing.assert_array_equal(pa[k], pb[k], strict=True)
    ca, cb = _npz(latest_checkpoint(a)), _npz(latest_checkpoint(b))
    arrays = [k for k in ca if k != "manifest.json"]
    assert arrays == [k for k in cb if k != "manifest.json"]
    assert any(k.startswith("state/opt_state/") and "/trace/" in k for k in arrays) == momentum
    for k in arrays:  # params, momentum trace, key
        np.testing.assert_array_equal(ca[k], cb[k], strict=True)
    ha, hb = (json.loads((d / "history.json").read_text()) for d in (a, b))
    assert _without_seconds(ha) == _without_seconds(hb)


# The same child, counting the epochs it trains: fit draws one batch order (gd_jax._src.train.shuffled_order)
# as each epoch begins, and the child appends a line to $GD_JAX_TEST_ORDERS for each.
_COUNTING_CHILD = """\
import os, signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)
import gd_jax._src.train
draw, log = gd_jax._src.train.shuffled_order, open(os.environ["GD_JAX_TEST_ORDERS"], "a", buffering=1)
def counted(key, n):
    log.write("order\\n")
    return draw(key, n)
gd_jax._src.train.shuffled_order = counted
from gd_jax.cli import main
sys.exit(main())
"""


def _counting(orders, *args):
    return subprocess.Popen([sys.executable, "-c", _COUNTING_CHILD, "train", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "GD_JAX_TEST_ORDERS": str(orders)})


def _lines(path):
    return path.read_text().count("\n") if path.exists() else 0


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_trains_only_the_missing_epochs_bit_identically(tmp_path):
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    first_orders, second_orders = tmp_path / "orders-1", tmp_path / "orders-2"
    reference = _start(*KILL_RUN, "--out", str(ref))  # runs alongside, on the other core
    victim = _counting(first_orders, *KILL_RUN, "--out", str(killed))
    deadline = time.monotonic() + 300
    while _lines(first_orders) < 2:  # epoch 2 has drawn its order: its 5,000 steps are running
        assert victim.poll() is None and time.monotonic() < deadline, victim.communicate()
        time.sleep(0.002)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL
    # The kill landed inside epoch 2: after it began, before it was saved (and epoch 3 never began).
    assert _lines(first_orders) == 2
    assert [e for e, _ in list_checkpoints(killed)] == [0, 1]
    killed_history = json.loads((killed / "history.json").read_text())
    assert len(killed_history["epochs"]) == 1 and "test_accuracy" not in killed_history
    # What it left is whole: the newest checkpoint loads and verifies (a stray .tmp-* file may remain).
    params = gd.init_mlp(jax.random.key(0), [784, 100, 10])
    assert load_checkpoint(killed, like=gd.TrainState(params, gd.sgd(0.1, 0.5).init(params))).epoch == 1
    gd.load_params(killed / "params.npz")

    resumed = _counting(second_orders, "--resume", str(killed), "--no-progress", "--no-figures")
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert f"resuming {killed} after epoch 1 of 3" in err
    # The resumed process trained epochs 2 and 3 only; epoch 1's record, its wall-clock seconds included,
    # is the killed process's own (a retrained epoch would have measured its own time).
    assert _lines(second_orders) == 2
    final = json.loads((killed / "history.json").read_text())
    assert final["epochs"][0] == killed_history["epochs"][0]
    segments = json.loads((killed / "config.json").read_text())["segments"]
    assert [(s["first_epoch"], s["last_epoch"]) for s in segments] == [(1, 1), (2, 3)]
    assert segments[0]["started"] == killed_history["config"]["segments"][0]["started"]
    assert reference.wait(timeout=300) == 0, reference.communicate()
    _assert_same_run(ref, killed, momentum=True)
    assert [e for e, _ in list_checkpoints(killed)] == [2, 3]  # bounded: the two newest


@pytest.mark.slow
# SIGTERM is what schedulers and `kill` send: it is handled as Ctrl-C is.
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_writes_nothing_half_done_and_says_how_to_resume(tmp_path, mnist_sample, signum):
    out = tmp_path / "run"
    proc = _start(*DRAWN, "--epochs", "200", "--out", str(out))
    _wait_for_checkpoint(out, 2, proc)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert f"gd-jax train --resume {out}" in err and "Traceback" not in err
    # Every file is whole: the JSON parses, the params and the checkpoint load and verify.
    done, path = list_checkpoints(out)[-1]
    assert 2 <= done < 200 and f"keeps epoch {done} of 200" in err
    history = json.loads((out / "history.json").read_text())
    assert len(history["epochs"]) == done and "test_accuracy" not in history
    params = gd.load_params(out / "params.npz")
    like = gd.TrainState(params, gd.sgd(3.0).init(params))
    ckpt = load_checkpoint(out, like=like)
    assert ckpt.epoch == done and ckpt.path == path
    for a, b in zip(jax.tree.leaves(ckpt.state.params), jax.tree.leaves(params)):
        np.testing.assert_array_equal(a, b)
    assert not [n for n in os.listdir(out / "checkpoints") if n.startswith(".tmp-")]
    assert (out / "history.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # the curves of the epochs done
    # And it resumes (here to one more epoch, in-process).
    assert main(["train", "--resume", str(out), "--epochs", str(done + 1), "--no-figures"]) == 0
    assert len(json.loads((out / "history.json").read_text())["epochs"]) == done + 1


def test_resume_extends_a_run_to_the_same_result_as_one_long_run(tmp_path, capsys):
    short, long = tmp_path / "short", tmp_path / "long"
    assert main(["train", *QUICK, "--epochs", "2", "--momentum", "0.9", "--out", str(short)]) == 0
    assert main(["train", "--resume", str(short), "--epochs", "4", "--no-progress", "--no-figures"]) == 0
    assert main(["train", *QUICK, "--epochs", "4", "--momentum", "0.9", "--out", str(long)]) == 0
    _assert_same_run(short, long, momentum=True)
    assert json.loads((short / "config.json").read_text())["epochs"] == 4
    # Resuming a finished run trains nothing and reports the same result.
    capsys.readouterr()
    before = (long / "params.npz").read_bytes()
    assert main(["train", "--resume", str(long), "--no-progress", "--no-figures"]) == 0
    assert "after epoch 4 of 4" in capsys.readouterr().err
    assert (long / "params.npz").read_bytes() == before


def test_resume_after_the_target_cost_was_reached_trains_no_further(tmp_path):
    out, ref = tmp_path / "run", tmp_path / "ref"
    args = [*QUICK, "--epochs", "10", "--target-cost", "0.2"]
    assert main(["train", *args, "--out", str(ref)]) == 0
    history = json.loads((ref / "history.json").read_text())
    assert history["stop_reason"] == "target_cost" and len(history["epochs"]) < 10
    # A run killed right after its last checkpoint, before its final files: the checkpoint is all it has.
    assert main(["train", *args, "--out", str(out)]) == 0
    (out / "history.json").unlink()
    (out / "params.npz").unlink()
    assert main(["train", "--resume", str(out), "--no-progress", "--no-figures"]) == 0
    _assert_same_run(out, ref)


def test_resume_before_the_first_checkpoint_starts_from_the_saved_config(tmp_path):
    out, ref = tmp_path / "run", tmp_path / "ref"
    assert main(["train", *QUICK, "--epochs", "2", "--seed", "7", "--out", str(ref)]) == 0
    out.mkdir()
    (out / "config.json").write_bytes((ref / "config.json").read_bytes())  # killed before epoch 0 was saved
    assert main(["train", "--resume", str(out), "--no-progress", "--no-figures"]) == 0
    _assert_same_run(out, ref)


@pytest.mark.parametrize("eta", [1e4])
def test_divergence_exits_3_keeps_a_readable_last_checkpoint_and_suggests_a_smaller_rate(tmp_path, capsys, eta):
    out = tmp_path / "run"
    assert main(["train", "--no-progress", "--epochs", "3", "--eta", str(eta), "--out", str(out)]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "diverged" in err and "learning rate" in err and f"--eta {eta / 10:g}" in err
    assert "epoch-000000.npz" in err
    # The last good checkpoint (the initial state: it diverged in epoch 1) loads, verified, and is finite.
    params = gd.init_mlp(jax.random.key(0), [784, 30, 10])
    ckpt = load_checkpoint(out, like=gd.TrainState(params, gd.sgd(eta).init(params)))
    assert ckpt.epoch == 0 and all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(ckpt.state.params))
    # It is the run's own initialisation: the same params as init_mlp from the run's seed.
    init_key, _ = jax.random.split(jax.random.key(2))
    for a, b in zip(jax.tree.leaves(ckpt.state.params), jax.tree.leaves(gd.init_mlp(init_key, [784, 30, 10]))):
        np.testing.assert_array_equal(a, b)
    history = json.loads((out / "history.json").read_text())
    assert history["stop_reason"] == "diverged" and history["last_good_epoch"] == 0
    fact = history["divergence"]  # the structured fact, not a number in a message
    assert fact["epoch"] == 1 and fact["reason"] == "growth" and fact["cost_finite"] is True
    assert fact["max_growth"] == 10.0 and fact["growth"] > fact["max_growth"]


def _write_idx(folder, train, test, *, n_train=300, n_test=100):
    folder.mkdir()
    images = lambda d, n: np.rint(np.asarray(d.x[:n]) * 255).astype(np.uint8).reshape(n, 28, 28)  # noqa: E731
    gd.write_idx(folder / "train-images-idx3-ubyte", images(train, n_train))
    gd.write_idx(folder / "train-labels-idx1-ubyte", np.asarray(train.y[:n_train], np.uint8))
    gd.write_idx(folder / "t10k-images-idx3-ubyte", images(test, n_test))
    gd.write_idx(folder / "t10k-labels-idx1-ubyte", np.asarray(test.y[:n_test], np.uint8))


def test_resume_on_other_data_of_the_same_size_is_refused(tmp_path, capsys, mnist_sample):
    idx, out = tmp_path / "idx", tmp_path / "run"
    _write_idx(idx, *mnist_sample)
    assert main(["train", *QUICK, "--epochs", "1", "--dataset", "idx", "--idx-dir", str(idx), "--out", str(out)]) == 0
    # The same files in another folder resume (--idx-dir may change) ...
    moved = tmp_path / "moved"
    moved.mkdir()
    for f in idx.iterdir():
        (moved / f.name).write_bytes(f.read_bytes())
    assert main(["train", "--resume", str(out), "--epochs", "2", "--idx-dir", str(moved), "--no-progress",
                 "--no-figures"]) == 0
    # ... but one changed pixel in a training image of the same size is another data set.
    images = gd.read_idx(moved / "train-images-idx3-ubyte")
    images[7, 14, 14] ^= 0xFF
    gd.write_idx(moved / "train-images-idx3-ubyte", images)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    capsys.readouterr()
    assert main(["train", "--resume", str(out), "--epochs", "3", "--idx-dir", str(moved), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the train data differ from those run" in err and "SHA-256" in err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def test_each_segment_of_a_resumed_run_keeps_its_own_record(tmp_path):
    out = tmp_path / "run"
    assert main(["train", *QUICK, "--epochs", "1", "--out", str(out)]) == 0
    first = json.loads((out / "config.json").read_text())["segments"]
    assert main(["train", "--resume", str(out), "--epochs", "3", "--no-progress", "--no-figures"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["segments"][0] == first[0]  # untouched by the resume
    assert [(s["first_epoch"], s["last_epoch"]) for s in config["segments"]] == [(1, 1), (2, 3)]
    assert config["segments"][1]["command"] == ["gd-jax", "train", "--resume", str(out), "--epochs", "3",
                                                "--no-progress", "--no-figures"]
    assert json.loads((out / "history.json").read_text())["config"] == config
