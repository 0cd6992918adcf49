"""Parameters to and from ``.npz`` files, readable by numpy alone.

A network ``[{"w", "b"}, ...]`` is stored as arrays named ``layer0/w``, ``layer0/b``,
``layer1/w`` ... Files are written to a temporary name and renamed into place, so a
crash never leaves a half-written file under the final name.
"""

from __future__ import annotations

import io
import os
import tempfile
import zipfile

import jax.numpy as jnp
import numpy as np

from gd_jax.network import Params

__all__ = ["atomic_write_bytes", "load_params", "save_params"]


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Writes ``data`` to ``path`` via a temporary file in the same folder and ``os.replace``."""
    path = os.fspath(path)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=".tmp-", suffix=os.path.basename(path))
    try:
        # mkstemp makes the file private (0600); give it the mode open() would have, 0666 less the umask.
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_params(path: str | os.PathLike, params: Params) -> None:
    """Saves a network's parameters as an ``.npz`` file, atomically."""
    arrays = {}
    for i, layer in enumerate(params):
        for name, value in layer.items():
            arrays[f"layer{i}/{name}"] = np.asarray(value)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())


def load_params(path: str | os.PathLike) -> Params:
    """Loads parameters saved by ``save_params`` (or ``gd-jax train``'s ``params.npz``).

    Raises:
      FileNotFoundError: no such file.
      ValueError: the file is not a readable ``.npz`` of layers.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"params file not found: {path!r}; pass the params.npz of a run folder")
    try:
        with np.load(path) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise ValueError(f"{path!r} is not a readable params file ({e}); it may be damaged, re-create it") from None
    n_layers = len({name.split("/")[0] for name in arrays})
    try:
        params = [{k: jnp.asarray(arrays[f"layer{i}/{k}"]) for k in ("w", "b")} for i in range(n_layers)]
    except KeyError as e:
        raise ValueError(f"{path!r} lacks the array {e.args[0]}; it was not written by save_params") from None
    for i, layer in enumerate(params):
        w, b = layer["w"], layer["b"]
        if w.ndim != 2 or b.shape != (w.shape[1],) or (i and w.shape[0] != params[i - 1]["w"].shape[1]):
            raise ValueError(f"{path!r}: layer {i} has inconsistent shapes w {w.shape}, b {b.shape}")
    return params
