"""Checkpoints: exact round trips, bounded history, atomic writes, and no silent load of a bad file."""

import io
import itertools
import json
import os
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gd_jax as gd
from gd_jax._src import checkpoint as ck
from gd_jax._src.checkpoint import CheckpointError, list_checkpoints, load_checkpoint, save_checkpoint

SIZES = [6, 5, 3]
OPTIMIZERS = {
    "sgd": lambda: gd.sgd(0.5),
    "momentum": lambda: gd.sgd(0.5, momentum=0.9),
    "nesterov": lambda: gd.sgd(0.5, momentum=0.9, nesterov=True),
    "optax-sgd-momentum": lambda: optax.sgd(0.5, momentum=0.9),
    "optax-adam": lambda: optax.adam(1e-2),  # an int32 step count, two moment trees
    "optax-chain": lambda: optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(0.5)),
}


def _trained_state(optimizer, sizes=SIZES, dtype=jnp.float32, seed=0):
    """A TrainState whose params and every optimizer-state leaf hold distinct random values (built in numpy)."""
    rng = np.random.default_rng(seed)
    dtype = jnp.dtype(dtype)
    params = [{"w": rng.standard_normal((m, n)).astype(dtype), "b": rng.standard_normal(n).astype(dtype)}
              for m, n in itertools.pairwise(sizes)]
    state = gd.TrainState(params, optimizer.init(params))

    def fill(leaf):
        leaf = np.asarray(leaf)
        if np.issubdtype(leaf.dtype, np.integer):
            return jnp.asarray(rng.integers(1, 1000, leaf.shape).astype(leaf.dtype))
        return jnp.asarray(rng.standard_normal(leaf.shape).astype(leaf.dtype))

    return jax.tree.map(fill, state)


def _history(n):
    return gd.History([{"epoch": e, "train_cost": 1.0 / e, "eval_cost": None, "eval_accuracy": 0.5, "seconds": 0.1}
                       for e in range(1, n + 1)])


def _assert_trees_identical(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("name", OPTIMIZERS)
@pytest.mark.parametrize("key_kind", ["typed", "raw"])
def test_round_trip_restores_every_array_bit_for_bit(tmp_path, name, key_kind):
    state = _trained_state(OPTIMIZERS[name]())
    key = jax.random.key(42) if key_kind == "typed" else jax.random.PRNGKey(42)
    config = {"sizes": SIZES, "learning_rate": 0.5, "momentum": None, "note": "é"}
    path = save_checkpoint(tmp_path, epoch=3, state=state, key=key, history=_history(3), config=config)
    assert path == os.path.join(tmp_path, "epoch-000003.npz")
    like = _trained_state(OPTIMIZERS[name](), seed=9)  # the structure, shapes and dtypes; other values
    ckpt = load_checkpoint(tmp_path, like=like)
    _assert_trees_identical(ckpt.state, state)
    assert ckpt.epoch == 3 and ckpt.config == config and ckpt.path == path
    assert ckpt.history.to_dict() == _history(3).to_dict()
    if key_kind == "typed":
        assert jax.random.key_impl(ckpt.key) == jax.random.key_impl(key)
        np.testing.assert_array_equal(jax.random.key_data(ckpt.key), jax.random.key_data(key))
    else:
        np.testing.assert_array_equal(ckpt.key, key)
    # The restored key draws what the original draws.
    np.testing.assert_array_equal(jax.random.uniform(ckpt.key, (4,)), jax.random.uniform(key, (4,)))


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16, "float64"])
def test_round_trip_keeps_every_dtype(tmp_path, x64, dtype):
    state = _trained_state(gd.sgd(0.5, momentum=0.9), dtype=dtype)
    save_checkpoint(tmp_path, epoch=0, state=state, key=jax.random.key(0))
    _assert_trees_identical(load_checkpoint(tmp_path, like=state).state, state)


def test_arrays_are_readable_by_numpy_alone(tmp_path):
    state = _trained_state(gd.sgd(0.5, momentum=0.9))
    path = save_checkpoint(tmp_path, epoch=1, state=state, key=jax.random.key(0), history=_history(1))
    with np.load(path) as f:
        np.testing.assert_array_equal(f["state/params/1/w"], state.params[1]["w"])
        # gd.sgd's state is structured like optax.sgd's, (TraceState(trace), EmptyState()): its leaves are named so.
        np.testing.assert_array_equal(f["state/opt_state/0/trace/0/b"], state.opt_state[0].trace[0]["b"])
    manifest = ck.read_checkpoint_manifest(path)
    assert manifest["epoch"] == 1 and manifest["sizes"] == SIZES and len(manifest["history"]["epochs"]) == 1
    # The format's name and version are on disk: every checkpoint written since version 1 must still load,
    # wherever the module that writes them lives.
    assert (manifest["format"], manifest["version"]) == ("gd_jax.checkpoint", 1)


@pytest.mark.parametrize(("keep", "kept"), [(1, [5]), (2, [4, 5]), (3, [3, 4, 5]), (None, [0, 1, 2, 3, 4, 5])])
def test_only_the_newest_checkpoints_are_kept(tmp_path, keep, kept):
    state = _trained_state(gd.sgd(0.5))
    for epoch in range(6):
        save_checkpoint(tmp_path, epoch=epoch, state=state, key=jax.random.key(0), keep=keep)
    assert [e for e, _ in list_checkpoints(tmp_path)] == kept
    assert ck.latest_checkpoint(tmp_path) == ck.checkpoint_path(tmp_path, 5)


def test_saving_an_earlier_epoch_drops_the_later_ones_it_replaces(tmp_path):
    state = _trained_state(gd.sgd(0.5))
    for epoch in (3, 4, 5):
        save_checkpoint(tmp_path, epoch=epoch, state=state, key=jax.random.key(0), keep=None)
    save_checkpoint(tmp_path, epoch=4, state=state, key=jax.random.key(1), keep=None)  # a run resumed from 3
    assert [e for e, _ in list_checkpoints(tmp_path)] == [3, 4]


def test_a_run_folder_means_its_checkpoints_subfolder(tmp_path):
    state = _trained_state(gd.sgd(0.5))
    save_checkpoint(tmp_path / "checkpoints", epoch=2, state=state, key=jax.random.key(0))
    assert load_checkpoint(tmp_path, like=state).epoch == 2
    # Saving into the run folder itself prunes only there, never its checkpoints/.
    (tmp_path / ".tmp-notes.txt").write_text("someone else's")
    for epoch in range(4):
        save_checkpoint(tmp_path, epoch=epoch, state=state, key=jax.random.key(0))
    assert [e for e, _ in ck._list(str(tmp_path / "checkpoints"))] == [2]
    assert (tmp_path / ".tmp-notes.txt").exists()


# --- damage: each kind of bad file raises CheckpointError, never loads ------------------------------------------


def _flip_in_array(data: bytes, array: np.ndarray) -> bytes:
    at = data.find(np.asarray(array).tobytes()[:32])
    assert at > 0
    damaged = bytearray(data)
    damaged[at + 7] ^= 0x10
    return bytes(damaged)


def _flip_in_manifest(data: bytes, _) -> bytes:
    at = data.find(b'"epoch": 2')
    assert at > 0
    return data[:at] + b'"epoch": 3' + data[at + 10:]


def _rezip_with_bad_digest(data: bytes, _) -> bytes:
    """A well-formed zip (CRCs recomputed) whose array no longer matches the manifest's SHA-256."""
    src, out = zipfile.ZipFile(io.BytesIO(data)), io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            member = src.read(info.filename)
            if info.filename == "state/params/0/w.npy":
                member = member[:-4] + bytes(4)
            dst.writestr(info.filename, member)
    return out.getvalue()


def _not_a_checkpoint(data: bytes, _) -> bytes:
    out = io.BytesIO()
    np.savez(out, w=np.zeros(3))
    return out.getvalue()


DAMAGE = {
    "bit flip in an array": (_flip_in_array, "damaged"),
    "bit flip in the manifest": (_flip_in_manifest, "damaged"),
    "array edited, zip rebuilt": (_rezip_with_bad_digest, "SHA-256"),
    "truncated to half": (lambda d, _: d[: len(d) // 2], "damaged or truncated"),
    "truncated to nothing": (lambda d, _: b"", "damaged or truncated"),
    "garbage": (lambda d, _: bytes(range(256)) * 8, "damaged or truncated"),
    "another npz": (_not_a_checkpoint, "not a gd_jax checkpoint"),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_checkpoint_raises_and_names_the_intact_previous_one(tmp_path, damage):
    corrupt, message = DAMAGE[damage]
    state = _trained_state(gd.sgd(0.5, momentum=0.9))
    save_checkpoint(tmp_path, epoch=1, state=state, key=jax.random.key(0))
    newest = save_checkpoint(tmp_path, epoch=2, state=state, key=jax.random.key(0), history=_history(2))
    with open(newest, "rb") as f:
        data = f.read()
    with open(newest, "wb") as f:
        f.write(corrupt(data, state.params[0]["w"]))
    with pytest.raises(CheckpointError, match=message) as error:
        load_checkpoint(tmp_path, like=state)
    assert newest in str(error.value) and "epoch-000001.npz" in str(error.value)  # names the fallback
    assert isinstance(error.value, ValueError)
    # The fix it names works: move the damaged one away and the previous one loads.
    os.unlink(newest)
    assert load_checkpoint(tmp_path, like=state).epoch == 1


def test_a_renamed_checkpoint_is_refused(tmp_path):
    state = _trained_state(gd.sgd(0.5))
    path = save_checkpoint(tmp_path, epoch=2, state=state, key=jax.random.key(0))
    os.replace(path, ck.checkpoint_path(tmp_path, 7))
    with pytest.raises(CheckpointError, match="holds epoch 2, not the epoch its name says"):
        load_checkpoint(tmp_path, like=state)


# --- atomicity: a crash at any moment leaves the previous checkpoint intact ------------------------------------


@pytest.mark.parametrize("crash_in", ["os.replace", "os.fsync", "write"])
def test_a_crash_while_saving_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch, crash_in):
    state = _trained_state(gd.sgd(0.5, momentum=0.9))
    first = save_checkpoint(tmp_path, epoch=1, state=state, key=jax.random.key(0))
    before = open(first, "rb").read()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # as a Ctrl-C (or any crash) would, in the middle of the save

    if crash_in == "write":
        real_fdopen = os.fdopen

        class Crashing:
            def __init__(self, *args, **kwargs):
                self.f = real_fdopen(*args, **kwargs)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.f.close()

            def write(self, data):
                self.f.write(data[: len(data) // 2])  # half of it reached the disk
                crash()

        monkeypatch.setattr(os, "fdopen", Crashing)
    else:
        monkeypatch.setattr(os, crash_in.split(".")[1], crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, epoch=2, state=_trained_state(gd.sgd(0.5, momentum=0.9), seed=5),
                        key=jax.random.key(0))
    monkeypatch.undo()
    assert [e for e, _ in list_checkpoints(tmp_path)] == [1]
    assert open(first, "rb").read() == before
    _assert_trees_identical(load_checkpoint(tmp_path, like=state).state, state)
    assert os.listdir(tmp_path) == ["epoch-000001.npz"]  # the temporary file was cleaned up


def test_a_sigkill_leftover_temporary_file_is_ignored_then_removed(tmp_path):
    state = _trained_state(gd.sgd(0.5))
    save_checkpoint(tmp_path, epoch=1, state=state, key=jax.random.key(0))
    (tmp_path / ".tmp-k2c9epoch-000002.npz").write_bytes(b"PK\x03\x04 half a checkpoint")
    assert ck.latest_checkpoint(tmp_path) == ck.checkpoint_path(tmp_path, 1)
    assert load_checkpoint(tmp_path, like=state).epoch == 1
    save_checkpoint(tmp_path, epoch=2, state=state, key=jax.random.key(0))
    assert sorted(os.listdir(tmp_path)) == ["epoch-000001.npz", "epoch-000002.npz"]


# --- mismatches and bad arguments: clear errors -----------------------------------------------------------------


@pytest.mark.parametrize(("like", "message"), [
    (lambda: _trained_state(gd.sgd(0.5), sizes=[6, 7, 3]), r"sizes \[6, 5, 3\], not \[6, 7, 3\].*--sizes 6,5,3"),
    (lambda: _trained_state(gd.sgd(0.5), sizes=[6, 5, 4, 3]), r"sizes \[6, 5, 3\], not \[6, 5, 4, 3\]"),
    (lambda: _trained_state(gd.sgd(0.5)), "another optimizer state.*momentum"),
    (lambda: _trained_state(optax.adam(1e-2)), "another optimizer state"),
    (lambda: _trained_state(gd.sgd(0.5, momentum=0.9), dtype=jnp.float16), "is float32.*expected float16"),
])
def test_a_checkpoint_of_another_network_or_optimizer_is_refused(tmp_path, like, message):
    save_checkpoint(tmp_path, epoch=1, state=_trained_state(gd.sgd(0.5, momentum=0.9)), key=jax.random.key(0))
    with pytest.raises(ValueError, match=message) as error:
        load_checkpoint(tmp_path, like=like())
    assert not isinstance(error.value, CheckpointError)  # not damaged: mismatched


def test_missing_checkpoints_raise_file_not_found(tmp_path):
    state = _trained_state(gd.sgd(0.5))
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path, like=state)
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nowhere" / "epoch-000001.npz", like=state)


@pytest.mark.parametrize(("kwargs", "exception", "message"), [
    ({"epoch": -1}, ValueError, "epoch must be an integer >= 0"),
    ({"epoch": 1.5}, ValueError, "epoch must be an integer >= 0"),
    ({"keep": 0}, ValueError, "keep must be an integer >= 1"),
    ({"config": {"f": object()}}, ValueError, "cannot be written as JSON"),
])
def test_bad_save_arguments_are_refused_before_writing(tmp_path, kwargs, exception, message):
    args = {"epoch": 1, "state": _trained_state(gd.sgd(0.5)), "key": jax.random.key(0), **kwargs}
    with pytest.raises(exception, match=message):
        save_checkpoint(tmp_path / "ckpt", **args)
    assert not (tmp_path / "ckpt").exists()


def test_an_unwritable_folder_is_refused_and_nothing_is_damaged(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("mine")
    with pytest.raises(NotADirectoryError, match=r"cannot write checkpoint.*choose a writable folder"):
        save_checkpoint(blocker / "ckpt", epoch=0, state=_trained_state(gd.sgd(0.5)), key=jax.random.key(0))
    assert blocker.read_text() == "mine"


# --- with fit: a run resumed from a checkpoint is the run that never stopped ------------------------------------


@pytest.mark.parametrize("name", ["momentum", "optax-adam"])
def test_fit_resumed_from_a_checkpoint_equals_the_uninterrupted_fit(tmp_path, small_train, name):
    params = gd.init_mlp(jax.random.key(0), [784, 16, 10])
    key = jax.random.key(1)
    common = {"batch_size": 25, "cost": gd.quadratic_cost, "key": key, "eval_data": small_train.take(50)}
    if name == "optax-adam":
        common["optimizer"] = optax.adam(1e-2)
    else:
        common["optimizer"] = OPTIMIZERS[name]()
    full, full_history = gd.fit(params, small_train, epochs=3, **common,
                                on_epoch_end=ck.checkpoint_callback(tmp_path, key=key, keep=None))
    # Another process would start from here: the checkpoint after epoch 1 and nothing else.
    like = gd.TrainState(params, common["optimizer"].init(params))
    ckpt = load_checkpoint(ck.checkpoint_path(tmp_path, 1), like=like)
    resumed, resumed_history = gd.fit(ckpt.state.params, small_train, epochs=3, opt_state=ckpt.state.opt_state,
                                      history=ckpt.history, **{**common, "key": ckpt.key})
    _assert_trees_identical(resumed, full)
    assert ckpt.best_params is None  # a run without patience keeps no best params
    strip = [{k: v for k, v in e.items() if k != "seconds"} for e in full_history.epochs]
    assert [{k: v for k, v in e.items() if k != "seconds"} for e in resumed_history.epochs] == strip
    # And the final checkpoint holds the final params.
    _assert_trees_identical(load_checkpoint(tmp_path, like=like).state.params, full)
    assert json.loads(json.dumps(ckpt.history.to_dict())) == ckpt.history.to_dict()


# A Python run with early stopping, killed by SIGKILL after the epoch given on its command line
# (issue 18: checkpoint_callback dropped EpochEnd.best_params, so such a run could not resume).
_PATIENCE_RUN = """
import json, os, signal, sys
import jax
import gd_jax as gd
sys.path.insert(0, {tests!r})
from test_checkpoint import _patience_run

folder, kill_after, rules = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
callback = gd.checkpoint_callback(folder, key=jax.random.key(1))

def on_epoch_end(end):
    callback(end)
    if end.epoch == kill_after:
        os.kill(os.getpid(), signal.SIGKILL)

_patience_run(on_epoch_end=on_epoch_end, **rules)
"""


def _patience_run(**kwargs):
    """Early stopping on a validation split: the best epoch comes a few epochs before the stop.

    With ``patience=3`` the best epoch is 11 of 14; with ``patience=4, eta_halving=2`` it is 17 of
    21, the learning rate halved after epochs 13 and 19 (the scale lives in the optimizer state).
    """
    data, _ = gd.load_mnist("sample")
    train, validation = gd.Dataset(data.x[:600], data.y[:600]), gd.Dataset(data.x[4800:], data.y[4800:])
    params = kwargs.pop("params", gd.init_mlp(jax.random.key(0), [784, 12, 10]))
    optimizer = gd.sgd(8.0, momentum=0.5)
    run = {"epochs": 30, "batch_size": 20, "optimizer": optimizer, "cost": gd.quadratic_cost, "key": jax.random.key(1),
           "eval_data": validation}
    return params, optimizer, gd.fit(params, train, **{**run, **kwargs})


@pytest.mark.slow
@pytest.mark.parametrize("rules", [{"patience": 3}, {"patience": 4, "eta_halving": 2}])
def test_a_python_run_with_patience_killed_resumes_from_its_checkpoints_bit_for_bit(tmp_path, rules):
    import signal
    import subprocess
    import sys

    params, optimizer, (full, history) = _patience_run(**rules)
    assert history.stop_reason == "early_stopping" and history.best_epoch < len(history) - 1
    kill_after = history.best_epoch + 1  # after the best epoch: the checkpoint's params are not the best ones
    child = subprocess.run([sys.executable, "-c", _PATIENCE_RUN.format(tests=os.path.dirname(__file__)),
                            str(tmp_path), str(kill_after), json.dumps(rules)], capture_output=True, text=True,
                           timeout=300)
    assert child.returncode == -signal.SIGKILL, child.stderr[-3000:]

    runs = optimizer if "eta_halving" not in rules else gd.scale_learning_rate(optimizer)  # what fit runs
    ckpt = gd.load_checkpoint(tmp_path, like=gd.TrainState(params, runs.init(params)))
    assert ckpt.epoch == kill_after and ckpt.history.best_epoch == history.best_epoch
    _, _, (resumed, resumed_history) = _patience_run(
        params=ckpt.state.params, opt_state=ckpt.state.opt_state, history=ckpt.history, key=ckpt.key,
        best_params=ckpt.best_params, **rules)
    _assert_trees_identical(resumed, full)
    strip = lambda h: [{k: v for k, v in e.items() if k != "seconds"} for e in h.epochs]  # noqa: E731
    assert strip(resumed_history) == strip(history)
    assert (resumed_history.best_epoch, resumed_history.stop_reason) == (history.best_epoch, "early_stopping")
