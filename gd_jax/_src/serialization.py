"""Parameters to and from ``.npz`` files, readable by numpy alone.

A network ``[{"w", "b"}, ...]`` is stored as arrays named ``layer0/w``, ``layer0/b``,
``layer1/w`` ... Files are written to a temporary name and renamed into place, so a
crash never leaves a half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
import tempfile
import zipfile

import jax.numpy as jnp
import numpy as np

from gd_jax._src.network import Params

__all__ = ["atomic_write_bytes", "describe_load_error", "file_mode", "load_params", "save_params"]


def file_mode(folder: str | os.PathLike = ".") -> int:
    """The permission bits ``open()`` gives a new file in ``folder``: ``0o666`` less the umask.

    The umask is read from ``/proc/self/status`` where the kernel reports it (Linux 4.7+);
    elsewhere a probe file is created in ``folder`` and its mode read back (which also
    honours default ACLs). The process-wide umask is never changed, not even for a moment:
    other threads may be creating files meanwhile.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    fd, probe = tempfile.mkstemp(dir=os.fspath(folder) or ".", prefix=".tmp-probe-")
    try:
        os.close(fd)
        os.unlink(probe)  # mkstemp forces 0600; a plain O_CREAT file shows what open() gives
        fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        os.close(fd)
        return stat.S_IMODE(os.stat(probe).st_mode)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(probe)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, exclusive: bool = False) -> None:
    """Writes ``data`` to ``path`` via a temporary file in the same folder, so ``path`` is never half-written.

    The temporary file (``.tmp-*<name>``) is flushed to disk, given the mode a plain
    ``open()`` would give (see ``file_mode``), then moved into place.

    Args:
      path: the file to write.
      data: its whole content.
      exclusive: publish only if ``path`` does not exist yet (``os.link``, atomic: of two
        processes writing the same path, exactly one succeeds); otherwise replace it.

    Raises:
      FileExistsError: ``exclusive`` and ``path`` already exists (it is left unchanged).
      OSError: the folder cannot be written.
    """
    path = os.fspath(path)
    folder = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        os.fchmod(fd, file_mode(folder))  # mkstemp makes the file private (0600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if exclusive:
            _publish_exclusively(tmp, path)
        else:
            os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _publish_exclusively(tmp: str, path: str) -> None:
    """Gives the finished ``tmp`` the name ``path`` unless that exists; raises FileExistsError if it does."""
    try:
        os.link(tmp, path)  # atomic and exclusive; the temporary name is removed by the caller
        return
    except FileExistsError:
        raise
    except OSError:  # a file system without hard links: an exclusive create, then the content
        pass
    out = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, file_mode(os.path.dirname(path) or "."))
    with os.fdopen(out, "wb") as f, open(tmp, "rb") as src:
        f.write(src.read())
        f.flush()
        os.fsync(f.fileno())


def describe_load_error(error: BaseException) -> str:
    """A reader's error in words a user can act on; never suggests unpickling (unsafe for untrusted files)."""
    text = str(error)
    if "allow_pickle" in text or "pickle" in text.lower():
        return "it holds Python objects instead of plain arrays"
    return text


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
        raise ValueError(f"{path!r} is not a readable params file ({describe_load_error(e)}); it may be damaged or "
                         "not a params file: pass the params.npz of a run folder, or train again") from None
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
