"""Checkpoints: everything a run needs to continue exactly where it stopped.

A checkpoint is one ``.npz`` file, ``epoch-000005.npz`` for the state after epoch 5
(``epoch-000000.npz`` is the initial state), holding

- every array of the ``TrainState``: the parameters and the optimizer state (gd_jax's own
  ``sgd`` state, laid out as optax's, or any optax state), named by their place in the tree, e.g.
  ``state/params/0/w`` or ``state/opt_state/0/trace/1/b``, readable by numpy alone (a PRNG key
  leaf as its raw key data); a model's static leaves (an Equinox module's activation
  functions) are not stored: ``load_checkpoint`` takes them from ``like``;
- with ``patience``, the parameters of the best epoch so far (``best_params/...``), which
  ``fit`` returns at the end and needs to resume;
- the PRNG key that every shuffle derives from (its raw data and its implementation);
- a JSON manifest: the epoch, the history, the run's config, the network's layer sizes and,
  for every array, its shape, dtype and SHA-256.

**Atomic.** The file is written under a temporary name in the same folder, flushed to disk
and renamed into place (``os.replace``), then the folder itself is synced: at any moment,
a crash or a SIGKILL leaves the previous checkpoints whole, and at worst a ``.tmp-*`` file
that ``latest_checkpoint`` ignores and the next save removes.

**Verified.** ``load_checkpoint`` reads every member through ``zipfile``, which checks each
one's CRC-32, then compares every array with the SHA-256 in the manifest, and checks the
arrays against the tree they are loaded into (``like``): a damaged file raises
``CheckpointError``, a checkpoint of another network or optimizer a ``ValueError`` that
says which, never a silent load.

**Bounded.** ``save_checkpoint`` keeps the ``keep`` most recent checkpoints (2 by default:
the newest and one to fall back on if the newest is ever damaged) and removes older ones.

Example::

    opt = gd.sgd(3.0, momentum=0.9)
    params, history = gd.fit(params, train, epochs=30, batch_size=10, optimizer=opt,
                             cost=gd.quadratic_cost, key=key,
                             on_epoch_end=gd.checkpoint_callback("ckpts", key=key))
    # ... later, maybe in another process:
    ckpt = gd.load_checkpoint("ckpts", like=gd.TrainState(params, opt.init(params)))
    params, history = gd.fit(ckpt.state.params, train, epochs=30, batch_size=10, optimizer=opt,
                             cost=gd.quadratic_cost, key=ckpt.key, opt_state=ckpt.state.opt_state,
                             history=ckpt.history, best_params=ckpt.best_params)

For a model that is not all float arrays (an Equinox module), the optimizer state is that of
its parameters: ``like=gd.TrainState(model, opt.init(gd.partition_params(model)[0]))``; with
``eta_halving`` the optimizer ``fit`` runs is ``gd.scale_learning_rate(opt)``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import zipfile
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gd_jax._src.epoch import TrainState
from gd_jax._src.model import is_array
from gd_jax._src.network import layer_sizes
from gd_jax._src.serialization import atomic_write_bytes, describe_load_error
from gd_jax._src.train import EpochEnd, History

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "checkpoint_callback",
    "checkpoint_path",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "read_checkpoint_manifest",
    "save_checkpoint",
]

FORMAT = "gd_jax.checkpoint"  # the manifest's format name (unchanged since version 1: old checkpoints load)
VERSION = 1
MANIFEST = "manifest.json"  # the zip member holding the manifest
KEY = "key"  # the npz array holding the PRNG key's data
_NAME = re.compile(r"^epoch-(\d{6,})\.npz$")
_TMP = re.compile(r"^\.tmp-.*epoch-\d{6,}\.npz$")  # what atomic_write_bytes leaves if killed mid-write


class CheckpointError(ValueError):
    """A checkpoint file is damaged or is not a gd_jax checkpoint (never loaded silently)."""


class Checkpoint(NamedTuple):
    """A loaded checkpoint.

    Attributes:
      epoch: the number of epochs done (0: the initial state).
      state: the ``TrainState`` (params, optimizer state) after that epoch.
      key: the PRNG key the run shuffles with (pass it to ``fit`` again).
      history: the ``History`` of the epochs done.
      config: the JSON config saved with it (``{}`` if none).
      path: the file it was read from.
      best_params: with ``patience``, the parameters of ``history.best_epoch`` (pass them to
        ``fit(..., best_params=)``); None when the run saved none.
    """

    epoch: int
    state: TrainState
    key: jax.Array
    history: History
    config: dict[str, Any]
    path: str
    best_params: Any = None


def checkpoint_path(directory: str | os.PathLike, epoch: int) -> str:
    """The file name of the checkpoint after ``epoch`` epochs in ``directory``."""
    return os.path.join(os.fspath(directory), f"epoch-{epoch:06d}.npz")


def _resolve_directory(directory: str | os.PathLike) -> str:
    """A run folder means its ``checkpoints/`` subfolder."""
    directory = os.fspath(directory)
    sub = os.path.join(directory, "checkpoints")
    return sub if os.path.isdir(sub) else directory


def list_checkpoints(directory: str | os.PathLike) -> list[tuple[int, str]]:
    """``(epoch, path)`` of every checkpoint in ``directory`` (or a run folder's ``checkpoints/``), oldest first.

    Temporary files of an interrupted save are not listed. A missing folder lists nothing.
    """
    return _list(_resolve_directory(directory))


def _list(directory: str) -> list[tuple[int, str]]:
    """``(epoch, path)`` of the checkpoints in exactly ``directory``, oldest first."""
    if not os.path.isdir(directory):
        return []
    found = []
    for name in os.listdir(directory):
        match = _NAME.match(name)
        if match:
            found.append((int(match.group(1)), os.path.join(directory, name)))
    return sorted(found)


def latest_checkpoint(directory: str | os.PathLike) -> str | None:
    """The path of the most recent checkpoint in ``directory``, or None if it holds none."""
    found = list_checkpoints(directory)
    return found[-1][1] if found else None


def _stored(leaf: Any) -> bool:
    """An array leaf, stored in the file (static leaves are not: ``like`` supplies them)."""
    return is_array(leaf) or isinstance(leaf, jax.ShapeDtypeStruct)


def _leaves_with_names(tree: Any) -> list[tuple[str, Any]]:
    """``(name, leaf)`` of every array leaf of ``tree``, named by its path, e.g. ``state/params/0/w``."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [(jax.tree_util.keystr(path, simple=True, separator="/"), leaf) for path, leaf in flat if _stored(leaf)]


def _is_key(leaf: Any) -> bool:
    return jax.dtypes.issubdtype(getattr(leaf, "dtype", None), jax.dtypes.prng_key)


def _dtype_name(leaf: Any) -> str:
    """The dtype as the manifest names it: ``float32``, ``bfloat16``, ``key<fry>``."""
    return str(leaf.dtype) if _is_key(leaf) else jnp.dtype(leaf.dtype).name


def _to_numpy(leaf: Any) -> np.ndarray:
    """The leaf's bytes as numpy holds them (a PRNG key array as its key data)."""
    return np.asarray(jax.random.key_data(leaf)) if _is_key(leaf) else np.asarray(leaf)


def _digest(array: np.ndarray, dtype: str) -> str:
    """SHA-256 of an array's dtype name, shape and bytes."""
    h = hashlib.sha256(f"{dtype}{array.shape}".encode())
    h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()


def _storable(array: np.ndarray) -> np.ndarray:
    """The array as .npy can hold it: dtypes numpy lacks (bfloat16, float8: ml_dtypes) as same-size uints."""
    return array.view(f"u{array.dtype.itemsize}") if array.dtype.kind == "V" else array


def _sizes(params: Any) -> list[int] | None:
    """Layer sizes of a gd_jax network (list of {"w", "b"}), or None for any other tree."""
    try:
        return layer_sizes(params)
    except (TypeError, KeyError, IndexError, AttributeError):
        return None


def _fsync_directory(directory: str) -> None:
    # Makes the rename itself durable on power loss; not possible (nor needed) everywhere.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(
    directory: str | os.PathLike,
    *,
    epoch: int,
    state: TrainState,
    key: jax.Array,
    history: History | None = None,
    config: dict[str, Any] | None = None,
    keep: int | None = 2,
    best_params: Any = None,
) -> str:
    """Writes the checkpoint after ``epoch`` epochs to ``directory``, atomically.

    Args:
      directory: the checkpoint folder (created if needed).
      epoch: epochs done, >= 0 (0 for the initial state).
      state: the ``TrainState`` (params and optimizer state; any model: its arrays are
        stored, its static leaves are restored from ``load_checkpoint``'s ``like``).
      key: the run's PRNG key, typed (``jax.random.key``) or raw (``jax.random.PRNGKey``).
      history: the history of the epochs done (default: empty).
      config: any JSON-serialisable description of the run, returned by ``load_checkpoint``.
      keep: how many of the most recent checkpoints to keep (this one included); None keeps
        all. Checkpoints of later epochs than ``epoch`` (from a timeline this run replaces)
        are removed too.
      best_params: with ``patience``, the parameters of the best epoch so far
        (``EpochEnd.best_params``), returned as ``Checkpoint.best_params``.

    Returns:
      The path written.

    Raises:
      ValueError: a bad ``epoch`` or ``keep``, or a config that JSON cannot hold.
      PermissionError, OSError: the folder cannot be written (nothing already there is damaged).
    """
    if not isinstance(epoch, (int, np.integer)) or isinstance(epoch, bool) or epoch < 0:
        raise ValueError(f"epoch must be an integer >= 0, got {epoch!r}; pass the number of epochs done")
    if keep is not None and (not isinstance(keep, (int, np.integer)) or isinstance(keep, bool) or keep < 1):
        raise ValueError(f"keep must be an integer >= 1 or None, got {keep!r}; 2 keeps one to fall back on")
    history = History() if history is None else history
    arrays, infos = _arrays_of(state, best_params, key)
    typed = _is_key(key)
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "epoch": int(epoch),
        "sizes": _sizes(state.params) if isinstance(state, TrainState) else None,
        "key": {"typed": bool(typed), "impl": str(jax.random.key_impl(key)) if typed else None},
        "best_params": best_params is not None,
        "arrays": infos,
        "history": history.to_dict(),
        "config": config or {},
    }
    directory = os.fspath(directory)
    path = checkpoint_path(directory, int(epoch))
    _write(directory, path, _zipped(manifest, arrays))
    _prune(directory, int(epoch), keep)
    return path


def _arrays_of(state: TrainState, best_params: Any, key: jax.Array) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The arrays to store by name, and their manifest entries (shape, dtype, SHA-256, key implementation)."""
    arrays: dict[str, np.ndarray] = {}
    infos: dict[str, Any] = {}
    tree = {"state": state} if best_params is None else {"state": state, "best_params": best_params}
    for name, leaf in [*_leaves_with_names(tree), (KEY, key)]:
        if name in arrays:
            raise ValueError(f"two arrays of the state are both named {name!r}; use unique dict keys")
        arrays[name] = _to_numpy(leaf)
        if name == KEY:
            dtype, shape = arrays[name].dtype.name, arrays[name].shape  # the key's raw data
        else:
            dtype, shape = _dtype_name(leaf), np.shape(leaf)
        infos[name] = {"shape": list(shape), "dtype": dtype, "sha256": _digest(_storable(arrays[name]), dtype)}
        if _is_key(leaf) and name != KEY:
            infos[name]["key_impl"] = str(jax.random.key_impl(leaf))
    return arrays, infos


def _zipped(manifest: dict[str, Any], arrays: dict[str, np.ndarray]) -> bytes:
    """The checkpoint file's bytes: the manifest and one ``.npy`` member per array, uncompressed."""
    try:
        manifest_bytes = json.dumps(manifest, indent=1).encode()
    except (TypeError, ValueError) as e:
        raise ValueError(f"the checkpoint's config or history cannot be written as JSON ({e}); "
                         "pass plain numbers, strings, lists and dicts") from None
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr(MANIFEST, manifest_bytes)
        for name, a in arrays.items():
            member = io.BytesIO()
            np.save(member, _storable(a), allow_pickle=False)
            zf.writestr(name + ".npy", member.getvalue())
    return buffer.getvalue()


def _write(directory: str, path: str, data: bytes) -> None:
    """Publishes ``data`` as ``path`` atomically, then makes the rename durable."""
    try:
        os.makedirs(directory, exist_ok=True)
        atomic_write_bytes(path, data)
    except OSError as e:
        kind = (PermissionError if isinstance(e, PermissionError) else
                NotADirectoryError if isinstance(e, (FileExistsError, NotADirectoryError)) else OSError)
        raise kind(f"cannot write checkpoint {path!r} ({e.strerror or e}); choose a writable folder "
                   "(checkpoints already there are untouched)") from None
    _fsync_directory(directory)


def _prune(directory: str, epoch: int, keep: int | None) -> None:
    """Removes checkpoints beyond the ``keep`` newest up to ``epoch``, later ones, and stale temporary files."""
    found = _list(directory)
    later = [p for e, p in found if e > epoch]
    kept = [p for e, p in found if e <= epoch]
    old = kept[:-keep] if keep is not None else []
    stale = [os.path.join(directory, n) for n in os.listdir(directory) if _TMP.match(n)]
    for path in later + old + stale:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def _fix_hint(path: str) -> str:
    earlier = [p for e, p in _list(os.path.dirname(path) or ".") if e < _epoch_of(path)]
    if earlier:
        return (f"the previous checkpoint {earlier[-1]!r} may be intact: delete (or move away) {path!r} "
                "to resume from it")
    return "start the run again"


def _epoch_of(path: str) -> int:
    match = _NAME.match(os.path.basename(path))
    return int(match.group(1)) if match else 1 << 62


def _find(path: str | os.PathLike) -> str:
    path = os.fspath(path)
    if os.path.isdir(path):
        found = latest_checkpoint(path)
        if found is None:
            raise FileNotFoundError(f"no checkpoint (epoch-*.npz) in {path!r}; pass a run folder or checkpoint "
                                    "folder written by gd-jax train / save_checkpoint")
        return found
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path!r}; pass a run folder, its checkpoints/ folder or "
                                "an epoch-*.npz file")
    return path


def _read_manifest(zf: zipfile.ZipFile, path: str) -> dict[str, Any]:
    try:
        manifest = json.loads(zf.read(MANIFEST))
    except KeyError:
        raise CheckpointError(f"{path!r} has no {MANIFEST}: it is not a gd_jax checkpoint; "
                              "pass a file written by save_checkpoint") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CheckpointError(f"{path!r} is not a gd_jax checkpoint (its manifest has no format {FORMAT!r})")
    if manifest.get("version") != VERSION:
        raise CheckpointError(f"{path!r} is a version {manifest.get('version')!r} checkpoint; this gd_jax reads "
                              f"version {VERSION}: use the gd_jax that wrote it")
    match = _NAME.match(os.path.basename(path))
    if match and int(match.group(1)) != manifest.get("epoch"):
        raise CheckpointError(f"{path!r} holds epoch {manifest.get('epoch')!r}, not the epoch its name says; "
                              "it was renamed or damaged: restore the original name or start again")
    return manifest


def _open(path: str) -> tuple[zipfile.ZipFile, dict[str, Any]]:
    try:
        with open(path, "rb") as f:
            data = f.read()
        zf = zipfile.ZipFile(io.BytesIO(data))
        return zf, _read_manifest(zf, path)
    except CheckpointError as e:
        raise CheckpointError(f"{e}; {_fix_hint(path)}") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, UnicodeDecodeError, OSError) as e:
        if isinstance(e, (FileNotFoundError, PermissionError, IsADirectoryError)):
            raise
        raise CheckpointError(f"checkpoint {path!r} is damaged or truncated ({describe_load_error(e)}); "
                              f"{_fix_hint(path)}") from None


def read_checkpoint_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """The manifest of a checkpoint (epoch, sizes, history, config, arrays), without loading its arrays.

    ``path`` is a checkpoint file, or a folder (its latest checkpoint). The manifest itself
    is checked (CRC-32); the arrays are verified by ``load_checkpoint``.
    """
    path = _find(path)
    zf, manifest = _open(path)
    zf.close()
    return dict(manifest, path=path)


def load_checkpoint(path: str | os.PathLike, *, like: TrainState) -> Checkpoint:
    """Loads and verifies a checkpoint into the structure of ``like``.

    Args:
      path: a checkpoint file, a checkpoint folder or a run folder (its latest checkpoint).
      like: a ``TrainState`` with the structure, shapes and dtypes to restore into, e.g.
        ``TrainState(params, optimizer.init(params))`` for a freshly initialised network
        (its values are not used; ``jax.ShapeDtypeStruct`` leaves work too).

    Returns:
      A ``Checkpoint``.

    Raises:
      FileNotFoundError: no such file, or no checkpoint in the folder.
      CheckpointError: (a ``ValueError``) the file is damaged, truncated or not a checkpoint.
      ValueError: the checkpoint holds another network shape or optimizer state than ``like``.
    """
    path = _find(path)
    like = TrainState(*like)
    zf, manifest = _open(path)
    tree = {"state": like, "best_params": like.params} if manifest.get("best_params") else {"state": like}
    with zf:
        expected = dict(_leaves_with_names(tree))
        saved = {name: info for name, info in manifest["arrays"].items() if name != KEY}
        _check_compatible(path, manifest, saved, expected, like)
        arrays = _read_arrays(zf, path, manifest, [*expected, KEY])
    key_data = arrays.pop(KEY)
    key_info = manifest["key"]
    key = jax.random.wrap_key_data(key_data, impl=key_info["impl"]) if key_info["typed"] else key_data
    restored = _restore(tree, arrays)
    return Checkpoint(int(manifest["epoch"]), TrainState(*restored["state"]), key,
                      History.from_dict(manifest["history"]), manifest.get("config") or {}, path,
                      restored.get("best_params"))


def _read_arrays(zf: zipfile.ZipFile, path: str, manifest: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """The named arrays of the file as JAX arrays, each verified against its SHA-256."""
    arrays = {}
    try:
        for name in names:
            array = np.load(io.BytesIO(zf.read(name + ".npy")), allow_pickle=False)
            info = manifest["arrays"][name]
            if _digest(array, info["dtype"]) != info["sha256"]:
                raise CheckpointError(f"checkpoint {path!r} is damaged: array {name!r} does not match its "
                                      f"SHA-256; {_fix_hint(path)}")
            if "key_impl" in info:  # a PRNG key leaf, stored as its key data
                arrays[name] = jax.random.wrap_key_data(jnp.asarray(array), impl=info["key_impl"])
                continue
            arrays[name] = jnp.asarray(array if array.dtype.name == info["dtype"]
                                       else array.view(jnp.dtype(info["dtype"])))
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, KeyError, EOFError, ValueError, OSError) as e:
        raise CheckpointError(f"checkpoint {path!r} is damaged or truncated ({describe_load_error(e)}); "
                              f"{_fix_hint(path)}") from None
    return arrays


def _restore(tree: dict[str, Any], arrays: dict[str, Any]) -> dict[str, Any]:
    """``tree`` with its array leaves replaced by the loaded ``arrays`` (its static leaves kept)."""
    flat, treedef = jax.tree_util.tree_flatten_with_path(tree)
    names = [jax.tree_util.keystr(p, simple=True, separator="/") for p, _ in flat]
    return jax.tree.unflatten(treedef, [arrays[n] if _stored(leaf) else leaf for n, (_, leaf) in zip(names, flat)])


def _check_compatible(path: str, manifest: dict[str, Any], saved: dict[str, Any], expected: dict[str, Any],
                      like: TrainState) -> None:
    sizes = _sizes(like.params)
    if manifest.get("sizes") is not None and sizes is not None and manifest["sizes"] != sizes:
        raise ValueError(f"checkpoint {path!r} holds a network of sizes {manifest['sizes']}, not {sizes}; "
                         f"resume with the sizes that wrote it (--sizes {','.join(map(str, manifest['sizes']))}) "
                         "or start a new run")
    missing = [n for n in expected if n not in saved]
    extra = [n for n in saved if n not in expected]
    if missing or extra:
        what = "optimizer state" if all(n.startswith("state/opt_state") for n in missing + extra) else "state"
        raise ValueError(f"checkpoint {path!r} holds another {what} than the one to restore: it has "
                         f"{extra[:3] or 'none'} where {missing[:3] or 'none'} are expected; resume with the "
                         "network and optimizer (momentum, optax transformation) that wrote it")
    for name, leaf in expected.items():
        shape, dtype = list(np.shape(leaf)), _dtype_name(leaf)
        info = saved[name]
        if info["shape"] != shape or info["dtype"] != dtype:
            raise ValueError(f"checkpoint {path!r}: array {name!r} is {info['dtype']} {tuple(info['shape'])}, "
                             f"expected {dtype} {tuple(shape)}; resume with the network, optimizer and dtype that "
                             "wrote it")


def checkpoint_callback(directory: str | os.PathLike, *, key: jax.Array, config: dict[str, Any] | None = None,
                        keep: int | None = 2) -> Callable[[EpochEnd], None]:
    """An ``on_epoch_end`` for ``fit`` that saves a checkpoint after every epoch.

    Each checkpoint holds all that ``fit`` needs to resume the run: the state, the history,
    the key and, with ``patience``, the best epoch's parameters (``Checkpoint.best_params``).
    ``key`` must be the key passed to ``fit``, so that a resumed run shuffles as the
    uninterrupted one does.

    Example:
      >>> import jax, gd_jax as gd
      >>> data, _ = gd.load_mnist("sample")
      >>> train, validation = gd.Dataset(data.x[:4000], data.y[:4000]), gd.Dataset(data.x[4000:], data.y[4000:])
      >>> params, key, opt = gd.init_mlp(jax.random.key(0), [784, 10, 10]), jax.random.key(1), gd.sgd(3.0)
      >>> run = dict(epochs=2, batch_size=50, optimizer=opt, cost=gd.quadratic_cost, key=key,
      ...            eval_data=validation, patience=5)
      >>> import tempfile; folder = tempfile.mkdtemp()
      >>> _ = gd.fit(params, train, on_epoch_end=gd.checkpoint_callback(folder, key=key), **run)
      >>> ckpt = gd.load_checkpoint(folder, like=gd.TrainState(params, opt.init(params)))
      >>> ckpt.epoch, ckpt.best_params is not None
      (2, True)
    """

    def on_epoch_end(end: EpochEnd) -> None:
        save_checkpoint(directory, epoch=end.epoch, state=end.state, key=key, history=end.history,
                        config=config, keep=keep, best_params=end.best_params)

    return on_epoch_end
