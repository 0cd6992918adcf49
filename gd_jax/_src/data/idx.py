"""Reading and writing IDX files, the format MNIST is distributed in.

An IDX file is a big-endian header followed by the raw array::

    magic   4 bytes: 0x00 0x00 <dtype code> <number of dimensions d>
    dims    d unsigned 32-bit integers, the shape
    data    prod(dims) items of the dtype, C order

Files may be compressed with gzip, bzip2 or xz; ``read_idx`` tells them apart by each
format's own magic bytes, not by the file name. Every way a file can be wrong (missing, truncated, bad magic, bad
gzip stream, unexpected shape) raises an error that names the file and what to do.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import struct
import zlib
from collections.abc import Callable

import numpy as np

__all__ = ["idx_bytes", "parse_idx", "read_idx", "read_idx_bytes", "write_idx"]

# The IDX dtype codes and the big-endian numpy dtypes they denote.
_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {dtype.newbyteorder("="): code for code, dtype in _DTYPES.items()}
# Compressed formats by their magic bytes (what a file *is*, whatever its name says).
_COMPRESSIONS: dict[bytes, tuple[str, Callable[[bytes], bytes]]] = {
    b"\x1f\x8b": ("gzip", gzip.decompress),
    b"BZh": ("bzip2", bz2.decompress),
    b"\xfd7zXZ\x00": ("xz", lzma.decompress),
}

# The four files of the MNIST IDX layout, by split and kind (gzip-compressed or not).
IDX_FILES = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}


def read_idx_bytes(path: str | os.PathLike) -> bytes:
    """The IDX bytes of ``path``: the file's content, decompressed if it is gzip, bzip2 or xz.

    Raises:
      FileNotFoundError: the file does not exist.
      ValueError: the file starts like a compressed stream that does not decompress.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"IDX file not found: {path!r}; check the path or the --idx-dir folder")
    with open(path, "rb") as f:
        raw = f.read()
    for magic, (name, decompress) in _COMPRESSIONS.items():
        if raw.startswith(magic):
            try:
                return decompress(raw)
            except (OSError, EOFError, ValueError, zlib.error, lzma.LZMAError) as e:
                raise ValueError(f"{path!r} is not a valid {name} file ({e}); re-download or re-copy it") from None
    return raw


def parse_idx(raw: bytes, *, name: str = "<bytes>", ndim: int | None = None) -> np.ndarray:
    """Decodes uncompressed IDX bytes into a numpy array (native byte order, a copy).

    Args:
      raw: the bytes of an IDX file, header included.
      name: what to call them in error messages (the file name).
      ndim: if given, the number of dimensions the data must have.

    Raises:
      ValueError: as ``read_idx``.
    """
    if len(raw) < 4:
        raise ValueError(f"{name!r} is truncated: {len(raw)} bytes, too short for an IDX header; re-download it")
    zero, code, d = struct.unpack(">HBB", raw[:4])
    if zero != 0 or code not in _DTYPES or d == 0:
        raise ValueError(
            f"{name!r} has a bad IDX magic number 0x{raw[:4].hex()} (expected 0x0000 then a "
            "dtype code and a dimension count); it is not an IDX file, pass the right file"
        )
    if ndim is not None and d != ndim:
        raise ValueError(
            f"{name!r} has {d} dimensions where {ndim} are expected "
            f"({'images' if ndim == 3 else 'labels'}); check which file goes where"
        )
    header = 4 + 4 * d
    if len(raw) < header:
        raise ValueError(f"{name!r} is truncated inside its header; re-download it")
    shape = struct.unpack(f">{d}I", raw[4:header])
    dtype = _DTYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    got = len(raw) - header
    if got != expected:
        what = "truncated" if got < expected else "longer than its header declares"
        raise ValueError(
            f"{name!r} is {what}: header says shape {shape} ({expected} bytes of data), "
            f"file holds {got}; re-download it"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="), copy=True)


def read_idx(path: str | os.PathLike, *, ndim: int | None = None) -> np.ndarray:
    """Reads an IDX file, compressed (gzip, bzip2, xz) or not, into a numpy array.

    Args:
      path: the file.
      ndim: if given, the number of dimensions the file must have (3 for images,
        1 for labels).

    Returns:
      The array in native byte order, with the shape and dtype the header declares.

    Raises:
      FileNotFoundError: the file does not exist.
      ValueError: the file is not a valid compressed stream although it starts like one,
        is shorter or longer than its header declares, has a bad magic number or unknown
        dtype, or has the wrong number of dimensions.
    """
    return parse_idx(read_idx_bytes(path), name=os.fspath(path), ndim=ndim)


def idx_bytes(array: np.ndarray) -> bytes:
    """The uncompressed IDX encoding of ``array``: header, then the data big-endian in C order.

    Raises:
      ValueError: a dtype IDX cannot hold, or a 0-d array.
    """
    array = np.asarray(array)
    code = _CODES.get(array.dtype.newbyteorder("="))
    if code is None or array.ndim == 0:
        raise ValueError(
            f"cannot write a {array.dtype} array of {array.ndim} dimensions as IDX; "
            "use uint8/int8/int16/int32/float32/float64 with at least one dimension"
        )
    header = struct.pack(">HBB", 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=_DTYPES[code]).tobytes()


def write_idx(path: str | os.PathLike, array: np.ndarray, *, compress: bool | None = None) -> None:
    """Writes ``array`` as an IDX file (gzip-compressed if ``compress`` or the name ends in .gz).

    Args:
      path: where to write.
      array: uint8, int8, int16, int32, float32 or float64 data with at least one dimension.
      compress: gzip the file; by default, when ``path`` ends in ``.gz``.
    """
    body = idx_bytes(array)
    if compress is None:
        compress = os.fspath(path).endswith(".gz")
    with open(path, "wb") as f:
        f.write(gzip.compress(body, mtime=0) if compress else body)
