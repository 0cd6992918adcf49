"""Genuine MNIST recognised by content in any packaging (gd_jax._src.data.genuine).

Small tests use a few hundred digits of the embedded sample written out in each packaging,
with their content hashes accepted as genuine (the sample's test files are the genuine ones,
checked against the real hashes on their own). Tests on the real full MNIST
files run where the project's ``shared/data/mnist-full`` folder is found (developers and CI),
and skip, saying so, elsewhere.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import lzma
import os
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

import gd_jax as gd
from gd_jax._src.data import genuine
from gd_jax._src.data.genuine import MnistChecksumError, MnistNotFoundError, read_genuine_mnist
from gd_jax._src.data.idx import IDX_FILES, idx_bytes, read_idx_bytes
from gd_jax._src.data.mnist import read_mnist_idx_dir

SAMPLE_DIR = str(resources.files("gd_jax._src.data") / "sample")
STEMS = list(IDX_FILES.values())
REPO = Path(__file__).resolve().parent.parent


def find_mnist_full() -> Path | None:
    """``shared/data/mnist-full`` beside the repository or beside any folder above it (CI clones the repo beside it)."""
    for folder in (REPO, *REPO.parents):
        candidate = folder / "shared" / "data" / "mnist-full"
        if (candidate / "train-images-idx3-ubyte.gz").is_file():
            return candidate
    return None


MNIST_FULL = find_mnist_full()
needs_full = pytest.mark.skipif(
    MNIST_FULL is None, reason="full MNIST (shared/data/mnist-full beside the repository) is absent on this machine"
)


@pytest.fixture(scope="module")
def sample() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return read_mnist_idx_dir(SAMPLE_DIR)


@pytest.fixture(scope="module")
def small(sample) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """300 training and 200 test digits of the sample: quick to compress in every format."""
    return {"train": tuple(a[:300] for a in sample["train"]), "test": tuple(a[:200] for a in sample["test"])}


@pytest.fixture
def accept_small(monkeypatch: pytest.MonkeyPatch, small) -> None:
    """Makes the content of ``small`` count as genuine MNIST."""
    for (split, kind), stem in IDX_FILES.items():
        array = small[split][0 if kind == "images" else 1]
        monkeypatch.setitem(genuine.GENUINE_SHA256, stem, hashlib.sha256(idx_bytes(array)).hexdigest())


def assert_same(got: dict, want: dict) -> None:
    for split in ("train", "test"):
        for g, w in zip(got[split], want[split]):
            assert g.dtype == np.uint8 and g.shape == w.shape
            np.testing.assert_array_equal(g, w)


def _write_all(arrays: dict, folder: Path, compress) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for (split, kind), stem in IDX_FILES.items():
        array = arrays[split][0 if kind == "images" else 1]
        name, data = compress(stem, idx_bytes(array))
        (folder / name).write_bytes(data)
    return folder


def _keras_npz(arrays: dict, path: Path, **extra) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, x_train=arrays["train"][0], y_train=arrays["train"][1], x_test=arrays["test"][0],
                        y_test=arrays["test"][1], **extra)
    return path


PACKAGINGS = {
    # The same content in each wrapping people hold it in; the compressed bytes all differ.
    "gz as distributed": lambda a, d: _write_all(a, d, lambda s, b: (s + ".gz", gzip.compress(b, mtime=0))),
    "gz re-compressed by a mirror": lambda a, d: _write_all(
        a, d, lambda s, b: (s + ".gz", gzip.compress(b, compresslevel=1, mtime=12345))),
    "uncompressed": lambda a, d: _write_all(a, d, lambda s, b: (s, b)),
    "bzip2": lambda a, d: _write_all(a, d, lambda s, b: (s + ".bz2", bz2.compress(b))),
    "xz": lambda a, d: _write_all(a, d, lambda s, b: (s + ".xz", lzma.compress(b))),
    "torchvision root (MNIST/raw, plain and .gz)": lambda a, d: (
        _write_all(a, d / "MNIST" / "raw", lambda s, b: (s, b)),
        _write_all(a, d / "MNIST" / "raw", lambda s, b: (s + ".gz", gzip.compress(b))),
    ) and d,
    "torchvision raw folder": lambda a, d: _write_all(a, d / "raw", lambda s, b: (s + ".gz", gzip.compress(b))) and d,
    "keras mnist.npz in a folder": lambda a, d: _keras_npz(a, d / "mnist.npz").parent,
    "keras mnist.npz itself": lambda a, d: _keras_npz(a, d / "mnist.npz"),
    "keras npz with int64 labels": lambda a, d: _keras_npz(
        {k: (x, y.astype(np.int64)) for k, (x, y) in a.items()}, d / "mnist.npz"),
}


@pytest.mark.parametrize("packaging", list(PACKAGINGS))
def test_every_packaging_is_recognised(tmp_path, small, accept_small, packaging):
    path = PACKAGINGS[packaging](small, tmp_path / "held")
    assert_same(read_genuine_mnist(path), small)


@pytest.mark.parametrize("packaging", ["gz re-compressed by a mirror", "uncompressed", "keras mnist.npz itself"])
def test_one_changed_label_is_refused_in_every_packaging(tmp_path, small, accept_small, packaging):
    labels = small["test"][1].copy()
    labels[123] = (labels[123] + 1) % 10  # still valid MNIST-shaped data, no longer the genuine
    changed = {"train": small["train"], "test": (small["test"][0], labels)}
    path = PACKAGINGS[packaging](changed, tmp_path / "held")
    with pytest.raises(MnistChecksumError, match=r"is not the genuine MNIST t10k-labels-idx1-ubyte") as e:
        read_genuine_mnist(path)
    message = str(e.value)
    assert "\n" not in message and "--dataset idx" in message
    assert ("y_test in" in message) if "keras" in packaging else ("t10k-labels-idx1-ubyte" in message)
    assert str(tmp_path / "held") in message


def test_sample_test_files_are_genuine_by_the_real_hashes(sample):
    # No patching: the embedded sample ships the official test files, whose content hashes are published.
    for kind, array in zip(("images", "labels"), sample["test"]):
        stem = IDX_FILES[("test", kind)]
        assert hashlib.sha256(idx_bytes(array)).hexdigest() == genuine.GENUINE_SHA256[stem]
        assert hashlib.sha256(read_idx_bytes(os.path.join(SAMPLE_DIR, stem + ".gz"))).hexdigest() == \
            genuine.GENUINE_SHA256[stem]
    with pytest.raises(MnistChecksumError, match=r"train-images-idx3-ubyte\.gz' is not the genuine MNIST"):
        read_genuine_mnist(SAMPLE_DIR)


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda p: p / "nowhere", MnistNotFoundError, r"--idx-dir folder not found: .*nowhere"),
        (lambda p: (p / "empty").mkdir() or p / "empty", MnistNotFoundError, r"holds no MNIST files; it must hold"),
        (lambda p: (p / "f.txt").write_text("x") and p / "f.txt", MnistNotFoundError, r"is a file, not a folder"),
        (lambda p: (p / "mnist.npz").write_bytes(b"PK\x03\x04junk") and p / "mnist.npz", ValueError,
         r"mnist.npz' is not a readable .npz file"),
        (lambda p: _npz_without_y_test(p), MnistChecksumError, r"lacks the array 'y_test'"),
        (lambda p: _three_files(p), MnistNotFoundError, r"t10k-labels-idx1-ubyte not found in .* must hold all four"),
        (lambda p: _broken_xz(p), ValueError, r"train-images-idx3-ubyte.xz' is not a valid xz file"),
    ],
    ids=["missing folder", "empty folder", "a non-npz file", "garbage npz", "npz lacking an array", "three files",
         "broken xz"],
)
def test_bad_packagings_get_one_clear_line(tmp_path, make, error, message):
    with pytest.raises(error, match=message) as e:
        read_genuine_mnist(make(tmp_path))
    assert "\n" not in str(e.value)


def _npz_without_y_test(folder: Path) -> Path:
    np.savez(folder / "mnist.npz", x_train=np.zeros((1, 28, 28), np.uint8), y_train=np.zeros(1, np.uint8),
             x_test=np.zeros((1, 28, 28), np.uint8))
    return folder / "mnist.npz"


def _three_files(folder: Path) -> Path:
    for stem in STEMS[:3]:
        shutil.copy(os.path.join(SAMPLE_DIR, stem + ".gz"), folder)
    return folder


def _broken_xz(folder: Path) -> Path:
    _three_files(folder)
    (folder / "t10k-labels-idx1-ubyte").write_bytes(b"\0\0\x08\x01\0\0\0\0")
    os.remove(folder / "train-images-idx3-ubyte.gz")  # the first file read
    (folder / "train-images-idx3-ubyte.xz").write_bytes(b"\xfd7zXZ\x00broken")
    return folder


def test_refusal_comes_before_tensorflow_datasets_and_creates_nothing(tmp_path):
    # The reported defect: not-genuine files printed tfds' download progress, then left empty
    # ~/tensorflow_datasets/downloads/extracted and gd_jax_mnist folders. Now the content is
    # checked before tensorflow-datasets is even imported.
    home = tmp_path / "home"
    home.mkdir()
    script = (
        "import sys, gd_jax as gd\n"
        "try:\n"
        f"    gd.load_mnist('mnist', idx_dir={SAMPLE_DIR!r})\n"
        "except ValueError as e:\n"
        "    print(type(e).__name__, 'tensorflow_datasets' in sys.modules, file=sys.stderr)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TFDS_DATA_DIR"} | {"HOME": str(home)}
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout == "" and run.stderr == "MnistChecksumError False\n"
    assert os.listdir(home) == []  # no ~/tensorflow_datasets at all


# --- the real files -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def full() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return read_genuine_mnist(MNIST_FULL)


@needs_full
def test_real_files_recompressed_are_recognised(full, sample):
    # The shared folder's .gz were made with `gzip -9 -n`: their bytes are not the distributed
    # ones (tfds' registered checksums refuse them), their content is genuine.
    train_images, train_labels = full["train"]
    assert train_images.shape == (60000, 28, 28) and full["test"][0].shape == (10000, 28, 28)
    assert np.bincount(train_labels).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    for got, want in zip(full["test"], sample["test"]):
        np.testing.assert_array_equal(got, want)


@needs_full
@pytest.mark.parametrize("packaging", ["torchvision", "keras"])
def test_real_data_in_other_packagings_is_recognised(tmp_path, full, packaging):
    if packaging == "keras":  # uncompressed here: the packaging of the arrays is not what is checked
        path = tmp_path / "mnist.npz"
        np.savez(path, x_train=full["train"][0], y_train=full["train"][1], x_test=full["test"][0],
                 y_test=full["test"][1])
    else:  # torchvision's root: MNIST/raw holds each file uncompressed and as .gz
        path = tmp_path / "torchvision"
        _write_all(full, path / "MNIST" / "raw", lambda stem, data: (stem, data))
        for stem in STEMS:
            os.symlink(MNIST_FULL / (stem + ".gz"), path / "MNIST" / "raw" / (stem + ".gz"))
    assert_same(read_genuine_mnist(path), full)


@needs_full
def test_real_files_with_one_pixel_changed_are_refused(tmp_path, full):
    folder = tmp_path / "mirror"
    folder.mkdir()
    for stem in STEMS:
        os.symlink(MNIST_FULL / (stem + ".gz"), folder / (stem + ".gz"))
    images = full["test"][0].copy()
    images[9999, 14, 14] ^= 1
    os.remove(folder / "t10k-images-idx3-ubyte.gz")
    gd.write_idx(folder / "t10k-images-idx3-ubyte", images)
    with pytest.raises(MnistChecksumError, match=r"t10k-images-idx3-ubyte' is not the genuine MNIST"):
        read_genuine_mnist(folder)


@needs_full
@pytest.mark.slow
def test_full_mnist_is_prepared_from_real_files_offline(tmp_path, full):
    train, validation, test = gd.load_mnist("mnist", idx_dir=MNIST_FULL, data_dir=tmp_path, validation=True)
    assert (train.size, validation.size, test.size) == (50000, 10000, 10000)
    np.testing.assert_array_equal(validation.y, full["train"][1][50000:])
    # Prepared once: later loads need no files.
    again = gd.load_mnist("mnist", data_dir=tmp_path)
    np.testing.assert_array_equal(again[0].x, train.x)
    np.testing.assert_array_equal(again[1].y, test.y)
    assert sorted(os.listdir(tmp_path)) == ["gd_jax_mnist"]
