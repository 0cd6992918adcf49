"""Full MNIST through tensorflow-datasets, without TensorFlow and without ever hanging offline.

The stock tfds ``mnist`` builder cannot prepare the data without TensorFlow: it extracts the
``.gz`` files with ``tf.io.gfile`` and re-encodes every digit as a PNG with ``tf.image``.
``GdJaxMnist`` is a subclass that keeps what makes the stock builder trustworthy - its URLs,
the SHA-256 checksums tfds registers for them and tfds' download manager, which verifies them -
and replaces only the TensorFlow parts: the IDX files are read with Python's gzip
(``gd_jax._src.data.idx.read_idx``) and each digit is stored as its raw 784 ``uint8`` bytes in
``array_record`` files, which ``tfds.data_source`` reads back without TensorFlow.

``load_full_mnist`` finds the data in this order, and never touches the network unless asked:

1. prepared already in the tfds data dir (``data_dir``, else ``$TFDS_DATA_DIR``, else
   ``~/tensorflow_datasets``): read it, from an array cache after the first read;
2. ``idx_dir`` holds genuine MNIST in any packaging (the four IDX files plain or compressed,
   torchvision's ``MNIST/raw``, Keras' ``mnist.npz``): recognised by the SHA-256 of the
   decompressed content (``gd_jax._src.data.genuine``) *before* tensorflow-datasets starts, then
   prepared from those arrays, offline;
3. ``download=True``: download, verify and prepare (fails in seconds when the host is
   unreachable, rather than sitting minutes in HTTP retries);
4. otherwise: one clear error that names the three ways to get the data.

The prepared folder (``<data_dir>/gd_jax_mnist``) is self-contained: prepare it once on a
machine with network, copy it to one without, and point ``data_dir`` at its parent.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import tempfile
import threading
import urllib.parse
import zipfile
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.core.download.download_manager import NonMatchingChecksumError
from tensorflow_datasets.image_classification import mnist as tfds_stock_mnist

from gd_jax._src.data.genuine import MnistChecksumError, MnistNotFoundError, read_genuine_mnist
from gd_jax._src.data.idx import IDX_FILES, read_idx

__all__ = ["GdJaxMnist", "MnistChecksumError", "MnistNotFoundError", "load_full_mnist"]

log = logging.getLogger(__name__)

SPLITS = ("train", "test")
IMAGE_SHAPE = (28, 28)
# The genuine files' names, as tfds registers them (the 4th column of its checksums file).
GZ_FILES = {key: stem + ".gz" for key, stem in IDX_FILES.items()}
CACHE_NAME = "gd_jax_arrays.npz"
# The probe of the download host must answer well inside the 10 s an offline failure may take.
PROBE_TIMEOUT_S = 5.0

_WAYS = (
    "get it one of three ways: (a) --data-dir DIR (data_dir=, or $TFDS_DATA_DIR) pointing at a "
    "tensorflow-datasets folder where it is already prepared; (b) --idx-dir DIR (idx_dir=) holding "
    "genuine MNIST in any packaging (the four IDX files plain or compressed, torchvision's MNIST/raw, "
    "Keras' mnist.npz), recognised by content, offline; "
    "(c) --download (download=True) on a machine with network access"
)


class GdJaxMnist(tfds_stock_mnist.MNIST):
    """tfds' MNIST builder, prepared without TensorFlow: raw ``uint8`` digits, file order kept."""

    # A name of its own: its records (raw bytes) differ from the stock builder's (PNG), so the
    # two must never share a folder. The name is also what `tfds.data_source` knows it by.
    name = "gd_jax_mnist"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "MNIST as raw uint8 28x28 images, in the order of the original files."}

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="The MNIST database of handwritten digits, stored as raw uint8 pixels.",
            features=tfds.features.FeaturesDict(
                {
                    # BYTES: 784 raw bytes a digit; the default would widen each pixel to int64.
                    "image": tfds.features.Tensor(
                        shape=IMAGE_SHAPE, dtype=np.uint8, encoding=tfds.features.Encoding.BYTES
                    ),
                    "label": tfds.features.ClassLabel(num_classes=10),
                }
            ),
            supervised_keys=("image", "label"),
            # Keep the files' order: the textbook's validation set is the last 10,000 training digits.
            disable_shuffling=True,
            homepage="http://yann.lecun.com/exdb/mnist/",
            citation=(
                "@article{lecun2010mnist, title={MNIST handwritten digit database}, "
                "author={LeCun, Yann and Cortes, Corinna and Burges, CJ}, year={2010}}"
            ),
        )

    def __init__(self, *args, genuine: dict[str, tuple[np.ndarray, np.ndarray]] | None = None, **kwargs):
        """As tfds' builder; ``genuine``: arrays already verified, to prepare from instead of downloading."""
        super().__init__(*args, **kwargs)
        self._genuine = genuine

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Iterator]:
        if self._genuine is not None:
            return {split: self._examples(*self._genuine[split], split) for split in SPLITS}
        # `download`, not the stock `download_and_extract`: tfds' gzip extractor needs TensorFlow.
        urls = {key: urllib.parse.urljoin(self.URL, name) for key, name in GZ_FILES.items()}
        paths = dl_manager.download(urls)
        return {split: self._generate_examples(paths[(split, "images")], paths[(split, "labels")]) for split in SPLITS}

    def _generate_examples(self, images_path: os.PathLike, labels_path: os.PathLike) -> Iterator:
        images = read_idx(images_path, ndim=3)
        labels = read_idx(labels_path, ndim=1)
        return self._examples(images, labels, f"{os.fspath(images_path)!r} and {os.fspath(labels_path)!r}")

    @staticmethod
    def _examples(images: np.ndarray, labels: np.ndarray, where: str) -> Iterator:
        if images.shape[1:] != IMAGE_SHAPE or len(images) != len(labels):
            raise ValueError(
                f"{where} hold {images.shape} images and {len(labels)} labels, not n 28x28 digits with "
                "n labels; they are not MNIST files"
            )
        for index, (image, label) in enumerate(zip(images, labels)):
            yield index, {"image": image, "label": int(label)}


def load_full_mnist(
    *,
    idx_dir: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    download: bool = False,
    genuine: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Loads full MNIST (60,000 training and 10,000 test digits) through tensorflow-datasets.

    Args:
      idx_dir: genuine MNIST in any packaging (see ``gd_jax._src.data.genuine.read_genuine_mnist``:
        the four IDX files plain or compressed, torchvision's ``MNIST/raw``, Keras'
        ``mnist.npz``). Its content is verified first, before tensorflow-datasets starts;
        the data is then prepared from it (offline) when it is not prepared yet.
      data_dir: the tfds data folder; default ``$TFDS_DATA_DIR``, else ``~/tensorflow_datasets``.
      download: allow downloading the four files when the data is not prepared and
        ``idx_dir`` is not given.
      genuine: instead of ``idx_dir``, the arrays ``read_genuine_mnist`` already returned
        (``load_mnist`` verifies before it imports tensorflow-datasets).

    Returns:
      ``{"train": (images, labels), "test": (images, labels)}`` with uint8 images
      ``(n, 28, 28)`` and uint8 labels ``(n,)``, in the order of the original files.

    Raises:
      MnistNotFoundError: (a ``FileNotFoundError``) the data is not prepared and there is no
        way to get it: no ``idx_dir``, no ``download``, the download host is unreachable or the
        download fails, ``idx_dir`` lacks a file, or the prepared folder is incomplete. Raised
        without any network access unless ``download``.
      MnistChecksumError: (a ``ValueError``) the data in ``idx_dir``, or a downloaded file, is
        not genuine MNIST. Nothing is created then.
      ValueError: a damaged file in ``idx_dir``.

    Example::

      arrays = load_full_mnist(data_dir="~/tensorflow_datasets", download=True)
      train_images, train_labels = arrays["train"]
    """
    if genuine is None and idx_dir is not None:
        genuine = read_genuine_mnist(idx_dir)  # first: a refusal must come before tfds creates anything
    data_dir = data_dir or os.environ.get("TFDS_DATA_DIR") or None
    builder = GdJaxMnist(
        data_dir=os.path.expanduser(os.fspath(data_dir)) if data_dir else None,
        file_format="array_record",
        genuine=genuine,
    )
    # The existence test first: tfds' `is_prepared` logs a warning about a missing folder.
    if not (builder.data_path.exists() and builder.is_prepared()):
        _prepare(builder, download=download)
    # Verified arrays are the prepared data already: no need to read them back.
    return genuine if genuine is not None else _read_prepared(builder)


def _prepare(builder: GdJaxMnist, *, download: bool) -> None:
    """Prepares the data from the builder's verified arrays or a download; refuses before any network access otherwise.

    Folders tfds creates on the way (the data dir, ``downloads/extracted``, the dataset's
    own) are removed again when they are left empty: a failure leaves nothing behind, and
    a preparation from arrays leaves only the prepared data.
    """
    import requests  # a tensorflow-datasets dependency; only its download errors are needed, only here

    where = f"full MNIST is not prepared in {os.fspath(builder.data_dir_root)!r}"
    if builder.data_path.exists():
        # tfds would "reuse" such a folder without preparing anything.
        raise MnistNotFoundError(
            f"{os.fspath(builder.data_path)!r} is not a complete prepared dataset (an interrupted copy or "
            "preparation?); delete it and load again"
        )
    if builder._genuine is None:
        if not download:
            raise MnistNotFoundError(f"{where}; {_WAYS}")
        host = urllib.parse.urlparse(builder.URL).hostname or ""
        if (error := _unreachable(host)) is not None:
            raise MnistNotFoundError(f"{where} and cannot be downloaded: {host} is unreachable ({error}); {_WAYS}")
    config = tfds.download.DownloadConfig(
        # Every file must have a registered checksum, and the prepared data never comes from GCS.
        force_checksums_validation=True,
        try_download_gcs=False,
    )
    root = os.fspath(builder.data_dir_root)
    made_by_tfds = [root, os.path.join(root, "downloads"), os.path.join(root, "downloads", "extracted"),
                    os.path.dirname(os.fspath(builder.data_path))]
    existed = {folder for folder in made_by_tfds if os.path.exists(folder)}
    try:
        builder.download_and_prepare(download_config=config)
    except NonMatchingChecksumError as e:
        name = next((n for n in GZ_FILES.values() if n in str(e)), "a file")
        raise MnistChecksumError(
            f"the downloaded {name} does not match its registered SHA-256 (a corrupted download); "
            f"delete {os.fspath(builder.data_dir_root / 'downloads')!r} and download again"
        ) from None
    except (tfds.download.DownloadError, requests.exceptions.RequestException) as e:
        reason = " ".join(str(e).split())  # one line, whatever the HTTP library wrote
        raise MnistNotFoundError(f"{where} and the download failed ({reason}); {_WAYS}") from None
    finally:
        for folder in reversed(made_by_tfds):  # deepest first
            if folder not in existed:
                with contextlib.suppress(OSError):  # not empty (it holds data now) or already gone
                    os.rmdir(folder)


def _unreachable(host: str, port: int = 443, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Returns why ``host`` cannot be reached, or None; never takes much longer than ``timeout``.

    tfds' own downloader retries a failed connection 10 times with exponential back-off, about
    205 s offline. A daemon thread bounds the probe even where name resolution itself hangs.
    """
    outcome: list[str | None] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append(None)
        except OSError as e:
            outcome.append(str(e) or type(e).__name__)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return outcome[0] if outcome else f"no answer within {timeout:g} s"


def _read_prepared(builder: GdJaxMnist) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Reads the prepared splits, from the array cache when it is valid, else through ``data_source``."""
    cache = os.path.join(os.fspath(builder.data_path), CACHE_NAME)
    counts = {split: builder.info.splits[split].num_examples for split in SPLITS}
    if os.path.isfile(cache):
        arrays = _load_cache(cache, counts)
        if arrays is not None:
            return arrays
        log.warning("MNIST array cache %s is corrupt or stale; rebuilding it from the prepared data", cache)
    arrays = _read_records(builder, counts)
    _save_cache(cache, arrays)
    return arrays


def _read_records(builder: GdJaxMnist, counts: dict[str, int]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Reads every example of the prepared splits through ``tfds`` data sources (no TensorFlow)."""
    sources = builder.as_data_source()
    arrays = {}
    for split in SPLITS:
        examples = sources[split].__getitems__(range(counts[split]))
        images = np.stack([ex["image"] for ex in examples]).astype(np.uint8, copy=False)
        labels = np.array([ex["label"] for ex in examples], dtype=np.uint8)
        arrays[split] = (images, labels)
    return arrays


def _digest(arrays: dict[str, tuple[np.ndarray, np.ndarray]]) -> str:
    h = hashlib.blake2b(digest_size=32)
    for split in SPLITS:
        for a in arrays[split]:
            h.update(f"{split}{a.dtype.str}{a.shape}".encode())
            h.update(np.ascontiguousarray(a).data)
    return h.hexdigest()


def _save_cache(path: str, arrays: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """Writes the arrays and their digest atomically; a read-only data dir just goes without a cache."""
    flat = {f"{split}_{kind}": a for split in SPLITS for kind, a in zip(("images", "labels"), arrays[split])}
    folder = os.path.dirname(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=CACHE_NAME + ".", suffix=".tmp", dir=folder)
    except OSError as e:
        log.warning("cannot write the MNIST array cache in %s (%s); every load will read the records", folder, e)
        return
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, digest=np.array(_digest(arrays)), **flat)  # type: ignore[arg-type]  # numpy stubs: **kwds
            f.flush()
            os.fsync(f.fileno())
        # Readers see the old cache or the whole new one, never a half-written file.
        os.replace(tmp, path)
    except OSError as e:
        log.warning("cannot write the MNIST array cache %s (%s)", path, e)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _load_cache(path: str, counts: dict[str, int]) -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
    """Returns the cached arrays, or None when the file is unreadable, mis-shaped or fails its digest."""
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {split: (f[f"{split}_images"], f[f"{split}_labels"]) for split in SPLITS}
            digest = str(f["digest"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    for split, (images, labels) in arrays.items():
        n = counts[split]
        if (
            images.shape != (n, *IMAGE_SHAPE)
            or labels.shape != (n,)
            or images.dtype != np.uint8
            or labels.dtype != np.uint8
        ):
            return None
    return arrays if digest == _digest(arrays) else None
