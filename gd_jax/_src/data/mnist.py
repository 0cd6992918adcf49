"""MNIST from three sources: the embedded sample, IDX files, and tensorflow-datasets.

=========  ===========================================================  ======================
source     where the digits come from                                   train / test
=========  ===========================================================  ======================
sample     5,000 real training digits + the official 10,000 test         5,000 / 10,000
           digits, shipped inside the package (offline, no set-up)
idx        any four IDX files in MNIST layout in ``idx_dir``              as the files hold
           (format-checked, no checksums: a user's own digits)
mnist      full MNIST through tensorflow-datasets (see ``tfds_mnist``)   50,000 / 10,000
=========  ===========================================================  ======================

Full MNIST is split as in the textbook: the first 50,000 training images train, the last
10,000 are the validation set, never trained on. The other sources train on all their
training images unless a validation set is asked for, which then holds their last
``validation_size`` training images.
"""

from __future__ import annotations

import os
from importlib import resources

import numpy as np

from gd_jax._src.data import genuine
from gd_jax._src.data.dataset import Dataset
from gd_jax._src.data.idx import IDX_FILES, read_idx
from gd_jax._src.extras import ensure_installed

__all__ = ["SOURCES", "load_mnist", "read_mnist_idx_dir", "to_dataset"]

SOURCES = ("sample", "idx", "mnist")
TEXTBOOK_VALIDATION_SIZE = 10_000


def to_dataset(images: np.ndarray, labels: np.ndarray) -> Dataset:
    """uint8 images ``(n, 28, 28)`` and labels -> ``Dataset`` with x in [0, 1], float32 ``(n, 784)``."""
    images = np.asarray(images)
    x = images.reshape(images.shape[0], -1).astype(np.float32) / np.float32(255.0)
    return Dataset(x, np.asarray(labels).astype(np.int32))


def _find(folder: str, stem: str) -> str:
    for name in (stem, stem + ".gz"):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(
        f"{stem}[.gz] not found in {folder!r}; the folder must hold the four MNIST IDX files "
        f"({', '.join(IDX_FILES.values())}, gzip-compressed or not)"
    )


def read_mnist_idx_dir(folder: str | os.PathLike) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Reads the four MNIST-layout IDX files in ``folder``.

    Returns:
      ``{"train": (images, labels), "test": (images, labels)}`` with uint8 images
      ``(n, rows, cols)`` and integer labels ``(n,)``.
    """
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"IDX folder not found: {folder!r}; pass a folder holding the four MNIST IDX files")
    out = {}
    for split in ("train", "test"):
        images_path = _find(folder, IDX_FILES[(split, "images")])
        labels_path = _find(folder, IDX_FILES[(split, "labels")])
        images = read_idx(images_path, ndim=3)
        labels = read_idx(labels_path, ndim=1)
        if images.dtype != np.uint8 or labels.dtype != np.uint8:
            raise ValueError(
                f"{folder!r}: MNIST IDX files hold uint8 data, got images {images.dtype} and labels "
                f"{labels.dtype}; convert them to uint8"
            )
        if len(images) != len(labels):
            raise ValueError(
                f"{images_path!r} holds {len(images)} images but {labels_path!r} holds {len(labels)} "
                "labels; the two files must come from the same set"
            )
        out[split] = (images, labels)
    return out


def _sample_dir() -> str:
    # The package ships the files as package data; as_file is not needed for a regular install
    # or an editable one, where the resource is a real path on disk.
    return str(resources.files("gd_jax._src.data") / "sample")


def _split_validation(train: Dataset, size: int, source: str) -> tuple[Dataset, Dataset]:
    if not 0 < size < train.size:
        raise ValueError(
            f"validation_size={size} must be between 1 and {train.size - 1} for source {source!r} "
            f"({train.size} training examples); pick a smaller validation set"
        )
    cut = train.size - size
    return Dataset(train.x[:cut], train.y[:cut]), Dataset(train.x[cut:], train.y[cut:])


def load_mnist(
    source: str = "sample",
    *,
    validation: bool = False,
    validation_size: int | None = None,
    idx_dir: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    download: bool = False,
) -> tuple[Dataset, ...]:
    """Loads MNIST as ``Dataset``s: x float32 ``(n, 784)`` in [0, 1], y int32 labels.

    Args:
      source: ``"sample"`` (embedded, offline), ``"idx"`` (four IDX files in ``idx_dir``)
        or ``"mnist"`` (full MNIST through tensorflow-datasets).
      validation: also return a validation set carved from the end of the training set.
      validation_size: its size; by default 10,000 for ``"mnist"`` (the textbook split)
        and one sixth of the training set otherwise.
      idx_dir: for ``"idx"``, the folder of the four files; for ``"mnist"``, genuine MNIST
        in any packaging (the four IDX files plain or compressed, torchvision's ``MNIST/raw``,
        Keras' ``mnist.npz``, or that file itself), recognised by the SHA-256 of its content.
      data_dir: for ``"mnist"``, the tensorflow-datasets data folder (default
        ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``).
      download: for ``"mnist"``, allow downloading when the data is not prepared yet.

    Returns:
      ``(train, test)``, or ``(train, validation, test)`` when ``validation`` is set.

    Examples:
      Full MNIST with the textbook's split is ``gd.load_mnist("mnist", validation=True, idx_dir="~/mnist")``;
      the embedded sample:

      >>> train, test = gd.load_mnist("sample")
      >>> train.x.shape, train.x.dtype, test.y.shape
      ((5000, 784), dtype('float32'), (10000,))
      >>> train, validation, test = gd.load_mnist("sample", validation=True)
      >>> train.size, validation.size
      (4167, 833)
    """
    if source not in SOURCES:
        raise ValueError(f"unknown dataset source {source!r}; choose one of {', '.join(SOURCES)}")
    if source == "sample":
        arrays = read_mnist_idx_dir(_sample_dir())
    elif source == "idx":
        if idx_dir is None:
            raise ValueError("source 'idx' needs idx_dir (--idx-dir DIR), the folder holding four MNIST IDX files")
        arrays = read_mnist_idx_dir(os.path.expanduser(os.fspath(idx_dir)))
    else:
        ensure_installed("tensorflow_datasets", purpose="full MNIST (source 'mnist')")
        # Verified before tensorflow-datasets is even imported: a refusal is quick and creates nothing.
        verified = genuine.read_genuine_mnist(idx_dir) if idx_dir is not None else None
        from gd_jax._src.data import tfds_mnist  # imports tensorflow-datasets: an optional dependency

        arrays = tfds_mnist.load_full_mnist(genuine=verified, data_dir=data_dir, download=download)
    train, test = to_dataset(*arrays["train"]), to_dataset(*arrays["test"])
    if source == "mnist":
        train, val = _split_validation(train, validation_size or TEXTBOOK_VALIDATION_SIZE, source)
    elif validation:
        train, val = _split_validation(train, validation_size or train.size // 6, source)
    return (train, val, test) if validation else (train, test)
