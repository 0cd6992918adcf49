"""Genuine MNIST recognised by its content, whatever its packaging.

People already hold MNIST in many wrappings: the four ``.gz`` files as distributed, the same
files re-compressed by a mirror, torchvision's ``MNIST/raw/`` (uncompressed beside the
``.gz``), Keras' ``mnist.npz``. The compressed bytes differ between all of them, but the
decompressed IDX content is the same, so that is what is checked: the SHA-256 of each
file's uncompressed IDX bytes (for ``mnist.npz``, of the IDX encoding of its arrays) must
equal the genuine file's, listed in ``GENUINE_SHA256``.

Nothing here imports tensorflow-datasets or writes anything: the check runs, and fails with
one line naming the file, before any data set folder exists.
"""

from __future__ import annotations

import hashlib
import os
import zipfile

import numpy as np

from gd_jax._src.data.idx import IDX_FILES, idx_bytes, parse_idx, read_idx_bytes

__all__ = [
    "GENUINE_SHA256",
    "KERAS_ARRAYS",
    "MnistChecksumError",
    "MnistNotFoundError",
    "find_mnist_files",
    "read_genuine_mnist",
]

# SHA-256 of the uncompressed content of each genuine MNIST file (LeCun, Cortes and Burges).
GENUINE_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
# The arrays of Keras' mnist.npz and the IDX file each one holds the content of.
KERAS_ARRAYS = {
    "x_train": IDX_FILES[("train", "images")],
    "y_train": IDX_FILES[("train", "labels")],
    "x_test": IDX_FILES[("test", "images")],
    "y_test": IDX_FILES[("test", "labels")],
}
KERAS_FILE = "mnist.npz"
# Where the files may sit below the folder given: itself, or torchvision's layout under its root.
_SUBFOLDERS = ("", "raw", os.path.join("MNIST", "raw"))
# Plain first: torchvision keeps both, and the plain file needs no decompression.
_SUFFIXES = ("", ".gz", ".bz2", ".xz")
_LAYOUTS = (
    "the four MNIST IDX files (train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
    "t10k-labels-idx1-ubyte; uncompressed or .gz/.bz2/.xz, as distributed or as torchvision's MNIST/raw "
    "holds them) or Keras' mnist.npz"
)


class MnistNotFoundError(FileNotFoundError):
    """Full MNIST is not where it was said to be, or no way to get it was given or works."""


class MnistChecksumError(ValueError):
    """Data that should be genuine MNIST is not: its content's SHA-256 differs from the genuine one."""


def find_mnist_files(path: str | os.PathLike) -> dict[str, str]:
    """Locates genuine-MNIST candidates at ``path``, without reading them.

    Args:
      path: a folder holding the four IDX files (directly, in ``raw/`` or in ``MNIST/raw/``,
        torchvision's layout), or holding ``mnist.npz``; or the ``.npz`` file itself.

    Returns:
      ``{stem: file}`` for the four IDX files, or ``{"mnist.npz": file}``.

    Raises:
      MnistNotFoundError: no such folder, or it holds neither layout (the message says what
        is missing).
    """
    path = os.path.expanduser(os.fspath(path))
    if os.path.isfile(path):
        if path.endswith(".npz"):
            return {KERAS_FILE: path}
        raise MnistNotFoundError(f"--idx-dir {path!r} is a file, not a folder; pass the folder that holds {_LAYOUTS}")
    if not os.path.isdir(path):
        raise MnistNotFoundError(f"--idx-dir folder not found: {path!r}; pass the folder that holds {_LAYOUTS}")
    best: dict[str, str] = {}
    for sub in _SUBFOLDERS:
        folder = os.path.join(path, sub)
        found = {}
        for stem in IDX_FILES.values():
            existing = [f for f in (os.path.join(folder, stem + s) for s in _SUFFIXES) if os.path.isfile(f)]
            if existing:
                found[stem] = existing[0]
        if len(found) == len(IDX_FILES):
            return found
        if len(found) > len(best):
            best = found
        if os.path.isfile(os.path.join(folder, KERAS_FILE)):
            return {KERAS_FILE: os.path.join(folder, KERAS_FILE)}
    if best:
        missing = sorted(set(IDX_FILES.values()) - set(best))
        folder = os.path.dirname(next(iter(best.values())))
        raise MnistNotFoundError(
            f"{missing[0]} not found in {folder!r} (neither plain nor .gz/.bz2/.xz), beside the other MNIST "
            f"files; the folder must hold all four, or {KERAS_FILE}"
        )
    raise MnistNotFoundError(f"{path!r} holds no MNIST files; it must hold {_LAYOUTS}")


def _check(content: bytes, stem: str, where: str) -> None:
    digest = hashlib.sha256(content).hexdigest()
    if digest != GENUINE_SHA256[stem]:
        raise MnistChecksumError(
            f"{where} is not the genuine MNIST {stem} (the SHA-256 of its content is {digest[:16]}..., "
            f"genuine is {GENUINE_SHA256[stem][:16]}...); put the original data there (any compression), "
            "or read your own IDX files without checksums with --dataset idx"
        )


def _read_keras_npz(path: str) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            held = sorted(npz.files)
            arrays = {name: npz[name] for name in KERAS_ARRAYS if name in held}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path!r} is not a readable .npz file ({e}); re-download or re-copy it") from None
    missing = [name for name in KERAS_ARRAYS if name not in arrays]
    if missing:
        raise MnistChecksumError(
            f"{path!r} lacks the array {missing[0]!r} (it holds {held}); Keras' mnist.npz holds "
            f"{', '.join(KERAS_ARRAYS)}"
        )
    for name, array in arrays.items():
        # Keras stores uint8; a re-save with wider integers holds the same digits.
        if np.issubdtype(array.dtype, np.integer) and array.size and 0 <= array.min() and array.max() <= 255:
            arrays[name] = array.astype(np.uint8)
    return arrays


def read_genuine_mnist(path: str | os.PathLike) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Reads full MNIST from any common packaging, refusing anything but the genuine digits.

    Args:
      path: see ``find_mnist_files``: a folder with the four IDX files (plain or compressed,
        torchvision's ``MNIST/raw`` too) or ``mnist.npz``, or the ``.npz`` file itself.

    Returns:
      ``{"train": (images, labels), "test": (images, labels)}``: uint8 images
      ``(n, 28, 28)`` and uint8 labels ``(n,)``, in the order of the original files.

    Raises:
      MnistNotFoundError: (a ``FileNotFoundError``) the folder or a file is missing.
      MnistChecksumError: (a ``ValueError``) a file's content is not the genuine MNIST file's;
        the message names the file.
      ValueError: a file is damaged (a broken compressed stream, an unreadable ``.npz``).

    For example, ``read_genuine_mnist("~/.keras/datasets/mnist.npz")["train"]`` is the pair
    ``(train_images, train_labels)``.
    """
    files = find_mnist_files(path)
    content: dict[str, np.ndarray] = {}
    if KERAS_FILE in files:
        npz = files[KERAS_FILE]
        for name, array in _read_keras_npz(npz).items():
            stem = KERAS_ARRAYS[name]
            try:
                encoded = idx_bytes(array)
            except ValueError:
                encoded = b""  # a dtype IDX cannot hold: certainly not the genuine content
            _check(encoded, stem, f"{name} in {npz!r}")
            content[stem] = array
    else:
        for stem, file in files.items():
            raw = read_idx_bytes(file)
            _check(raw, stem, repr(file))
            content[stem] = parse_idx(raw, name=file)
    return {split: (content[IDX_FILES[(split, "images")]], content[IDX_FILES[(split, "labels")]])
            for split in ("train", "test")}
