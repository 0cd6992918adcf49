"""Parameters to and from ``.npz`` files, readable by numpy alone.

A network ``[{"w", "b"}, ...]`` is stored as arrays named ``layer0/w``, ``layer0/b``,
``layer1/w`` ... Files are written to a temporary name and renamed into place, so a
crash never leaves a half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import stat
import tempfile
import zipfile
from typing import Any

import jax.numpy as jnp
import numpy as np

from gd_jax._src.network import Params

__all__ = ["atomic_write_bytes", "describe_file", "describe_load_error", "file_mode", "load_params", "read_json_object",
           "save_params"]



def read_json_object(path: str | os.PathLike, *, fix: str) -> dict[str, Any]:
    """Reads a JSON file that must hold one object (a run's config, its history).

    Args:
      path: the file.
      fix: what is wrong and what to do, for the message (e.g. ``"it is damaged: start a new run"``).

    Raises:
      FileNotFoundError: there is no such file.
      ValueError: it cannot be read, is not JSON, or holds something other than an object.
    """
    path = os.fspath(path)
    try:
        with open(path) as f:
            value = json.load(f)
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as e:
        raise ValueError(f"{path!r} is not readable JSON ({e}); {fix}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path!r} does not hold a JSON object of settings; {fix}")
    return value

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


# The first bytes of the files people hand over by mistake, and what they are.
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "an image (PNG)"),
    (b"\xff\xd8\xff", "an image (JPEG)"),
    (b"GIF87a", "an image (GIF)"),
    (b"GIF89a", "an image (GIF)"),
    (b"BM", "an image (BMP)"),
    (b"II*\x00", "an image (TIFF)"),
    (b"MM\x00*", "an image (TIFF)"),
    (b"\x1f\x8b", "gzip-compressed data (e.g. an MNIST .gz file)"),
    (b"\x93NUMPY", "a single numpy array (.npy), not an .npz of a network's layers"),
    (b"%PDF", "a PDF document"),
    (b"\x7fELF", "a program (ELF binary)"),
    (b"SQLite format 3\x00", "an SQLite database"),
    (b"\x89HDF", "an HDF5 file"),
)
_ZIP = (b"PK\x03\x04", b"PK\x05\x06")  # an .npz is a zip archive (the second: an empty one)
# What a run or sweep folder's JSON files hold, by the keys only they have (a value's type, where given).
_JSON_KINDS = (("records", None, "a sweep's sweep.json"), ("epochs", list, "a run's history.json"),
               ("segments", None, "a run's config.json"), ("sizes", None, "a run's config.json"),
               ("predictions", None, "the output of gd-jax predict --json"))


def describe_file(path: str | os.PathLike) -> str | None:
    """What a file that is not a params ``.npz`` is, in a few words; None when it may be one.

    Read from its first bytes (images, gzip, a lone ``.npy``, Python objects, ...) and, for
    text, whether it is JSON (a run's ``config.json`` or ``history.json``, a sweep's
    ``sweep.json``) or plain text. A folder is described by what it holds (a run folder, a
    sweep folder). Nothing but the first 64 KiB is read, and nothing is unpickled.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "sweep.json")):
            return "a sweep folder (it has sweep.json): choose one of its models with --model, e.g. --model 0"
        if os.path.isfile(os.path.join(path, "params.npz")):
            return f"a run folder: pass its params file, {os.path.join(path, 'params.npz')!r}, or the folder itself"
        return "a folder, not a file"
    try:
        with open(path, "rb") as f:
            head = f.read(65536)
    except OSError:
        return None  # the caller's own open reports it
    if not head:
        return "an empty file (0 bytes)"
    if head.startswith(_ZIP):
        return None
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "an image (WebP)"
    if head[:2] == b"\x00\x00" and head[2] in (0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E) and 1 <= head[3] <= 4:
        return "an IDX file (MNIST's images or labels)"
    if len(head) > 1 and head[0] == 0x80 and 2 <= head[1] <= 5:  # a pickle's PROTO opcode
        return "a file of Python objects, which are never loaded (unsafe for untrusted files), not plain arrays"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 4:  # more than a character cut off at the end of what was read
            return "binary data of an unknown kind (neither a zip archive nor text)"
        text = head[:e.start].decode("utf-8")
    if len(head) == 65536:  # only the start was read: a long text
        return "JSON or other text" if text.lstrip()[:1] in ("{", "[") else "text"
    try:
        value = json.loads(text)
    except ValueError:
        return "text"
    if isinstance(value, dict):
        kinds = [kind for key, type_, kind in _JSON_KINDS if key in value and (type_ is None
                                                                              or isinstance(value[key], type_))]
        return f"JSON ({kinds[0]})" if kinds else "JSON"
    return "JSON"


def save_params(path: str | os.PathLike, params: Params) -> None:
    """Saves a network's parameters as an ``.npz`` file, atomically."""
    arrays: dict[str, Any] = {}
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
    if os.path.isdir(path):
        raise ValueError(f"{path!r} is {describe_file(path)}; pass the params.npz of a run folder")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"params file not found: {path!r}; pass the params.npz of a run folder")
    kind = describe_file(path)
    if kind is not None:
        beside = os.path.join(os.path.dirname(path), "params.npz")
        fix = (f"pass {beside!r}, the params file beside it, or its run folder" if os.path.isfile(beside)
               else "pass the params.npz of a run folder (what gd-jax train writes, or gd.save_params)")
        raise ValueError(f"{path!r} is not a params file: it is {kind}; {fix}")
    try:
        with np.load(path) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise ValueError(f"{path!r} is not a readable params file ({describe_load_error(e)}); it may be damaged or "
                         "not a params file: pass the params.npz of a run folder, or train again") from None
    layers = sorted({name.split("/")[0] for name in arrays})
    if "manifest.json" in arrays and any(name.startswith("state/") for name in arrays):
        raise ValueError(f"{path!r} is a gd-jax checkpoint, not a params file; pass the run folder it belongs to "
                         "or its params.npz (a checkpoint is read by gd-jax train --resume)")
    if not any(name.startswith("layer") for name in layers):
        listed = ", ".join(sorted(arrays)[:5]) + (", ..." if len(arrays) > 5 else "") or "nothing"
        raise ValueError(f"{path!r} is an .npz (zip) archive without a network's layers (it holds {listed}); pass the "
                         "params.npz of a run folder")
    n_layers = len(layers)
    try:
        params = [{k: jnp.asarray(arrays[f"layer{i}/{k}"]) for k in ("w", "b")} for i in range(n_layers)]
    except KeyError as e:
        raise ValueError(f"{path!r} lacks the array {e.args[0]}; it was not written by save_params") from None
    stacked = [layer["w"].shape[0] for layer in params if layer["w"].ndim == 3 and layer["b"].ndim == 2]
    if len(stacked) == n_layers and len(set(stacked)) == 1:
        raise ValueError(f"{path!r} holds the stacked parameters of {stacked[0]} models (a gd-jax sweep's params.npz), "
                         "not one network; pass the sweep folder and choose one model with --model, e.g. --model 0")
    for i, layer in enumerate(params):
        w, b = layer["w"], layer["b"]
        if w.ndim != 2 or b.shape != (w.shape[1],) or (i and w.shape[0] != params[i - 1]["w"].shape[1]):
            raise ValueError(f"{path!r}: layer {i} has inconsistent shapes w {w.shape}, b {b.shape}")
    return params
