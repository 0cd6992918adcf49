import bz2
import gzip
import hashlib
import lzma
import os
from importlib import resources

import numpy as np
import pytest

import gd_jax as gd

SAMPLE = resources.files("gd_jax._src.data") / "sample"
# From the sample's provenance notes: the files must ship unchanged.
SHA256 = {
    "train-images-idx3-ubyte.gz": "2c9c1df9c96791cbe2db901ec6fa96714107f0c7f3b861c7fc7a635ac38b37b6",
    "train-labels-idx1-ubyte.gz": "c5d05298659f6a5aab997bfcb12d64f2317fa4210820002feb1a2f0a66139f3a",
    "t10k-images-idx3-ubyte.gz": "167310007f03058885c7e95e6c0b19c20de5c7fd3031f4cbdadc9014a523d80b",
    "t10k-labels-idx1-ubyte.gz": "fc607395669ec21321ea83e4b82c0544b7e8e63ff5b34337c06bc0a17cc0da3c",
}


@pytest.mark.parametrize("name", sorted(SHA256))
def test_embedded_sample_is_the_documented_real_mnist(name):
    assert hashlib.sha256((SAMPLE / name).read_bytes()).hexdigest() == SHA256[name]


def test_embedded_sample_carries_its_licence():
    text = (SAMPLE / "README.md").read_text()
    assert "CC BY-SA 3.0" in text and "LeCun" in text


def test_load_mnist_sample_is_the_official_test_set(mnist_sample):
    train, test = mnist_sample
    assert train.x.shape == (5000, 784) and test.x.shape == (10000, 784)
    assert train.x.dtype == np.float32 and train.y.dtype == np.int32
    assert 0.0 <= train.x.min() and train.x.max() == 1.0
    # The genuine MNIST test set: its label counts and first labels are well known.
    assert np.bincount(test.y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert test.y[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert np.bincount(train.y).tolist() == [500] * 10


def test_sample_validation_split(mnist_sample):
    train, val, test = gd.load_mnist("sample", validation=True)
    assert (train.size, val.size, test.size) == (4167, 833, 10000)
    np.testing.assert_array_equal(np.concatenate([train.x, val.x]), mnist_sample[0].x)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("name", ["a.idx", "a.idx.gz"])
def test_write_then_read_roundtrips(tmp_path, dtype, name):
    array = (np.arange(2 * 3 * 4) - 5).astype(dtype).reshape(2, 3, 4)
    gd.write_idx(tmp_path / name, array)
    got = gd.read_idx(tmp_path / name)
    assert got.dtype == array.dtype and got.shape == (2, 3, 4)
    np.testing.assert_array_equal(got, array)


@pytest.mark.parametrize(("compress", "name"), [(bz2.compress, "bzip2"), (lzma.compress, "xz")])
def test_bzip2_and_xz_are_recognised_by_their_magic_bytes(tmp_path, compress, name):
    array = np.arange(60, dtype=np.uint8).reshape(3, 4, 5)
    gd.write_idx(tmp_path / "plain", array)
    (tmp_path / "packed.idx").write_bytes(compress((tmp_path / "plain").read_bytes()))  # the name says nothing
    np.testing.assert_array_equal(gd.read_idx(tmp_path / "packed.idx"), array)
    (tmp_path / "broken").write_bytes(compress((tmp_path / "plain").read_bytes())[:20])
    with pytest.raises(ValueError, match=rf"'.*broken' is not a valid {name} file \(.*\); re-download"):
        gd.read_idx(tmp_path / "broken")


def test_idx_header_is_the_standard_layout(tmp_path):
    gd.write_idx(tmp_path / "l", np.array([3, 1, 4], np.uint8))
    assert (tmp_path / "l").read_bytes() == bytes([0, 0, 8, 1, 0, 0, 0, 3, 3, 1, 4])


def _images(tmp_path):
    path = tmp_path / "images"
    gd.write_idx(path, np.zeros((4, 28, 28), np.uint8))
    return path


@pytest.mark.parametrize(("damage", "match"), [
    (lambda raw: raw[:-10], "is truncated: header says shape"),
    (lambda raw: raw + b"\0", "longer than its header declares"),
    (lambda raw: raw[:2], "too short for an IDX header"),
    (lambda raw: raw[:9], "truncated inside its header"),
    (lambda raw: b"\x00\x01" + raw[2:], "bad IDX magic number"),
    (lambda raw: raw[:2] + b"\x07" + raw[3:], "bad IDX magic number"),
    (lambda raw: gzip.compress(raw)[:-12], "not a valid gzip file"),
])
def test_read_idx_names_each_kind_of_bad_file(tmp_path, damage, match):
    path = _images(tmp_path)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(ValueError, match=match):
        gd.read_idx(path)


def test_read_idx_checks_dimensions_and_existence(tmp_path):
    with pytest.raises(ValueError, match="has 3 dimensions where 1 are expected"):
        gd.read_idx(_images(tmp_path), ndim=1)
    with pytest.raises(FileNotFoundError, match="IDX file not found"):
        gd.read_idx(tmp_path / "nope.gz")


def test_load_mnist_idx_reads_a_users_folder(tmp_path, mnist_sample):
    rng = np.random.default_rng(0)
    images = {s: rng.integers(0, 256, (n, 28, 28), np.uint8) for s, n in (("train", 60), ("t10k", 20))}
    labels = {s: rng.integers(0, 10, n, np.uint8) for s, n in (("train", 60), ("t10k", 20))}
    for s in images:  # one split compressed, the other plain: both are accepted
        suffix = ".gz" if s == "train" else ""
        gd.write_idx(tmp_path / f"{s}-images-idx3-ubyte{suffix}", images[s])
        gd.write_idx(tmp_path / f"{s}-labels-idx1-ubyte{suffix}", labels[s])
    train, test = gd.load_mnist("idx", idx_dir=tmp_path)
    np.testing.assert_allclose(train.x, images["train"].reshape(60, 784) / 255.0, rtol=1e-7)
    np.testing.assert_array_equal(test.y, labels["t10k"])
    os.remove(tmp_path / "t10k-labels-idx1-ubyte")
    with pytest.raises(FileNotFoundError, match=r"t10k-labels-idx1-ubyte\[.gz\] not found"):
        gd.load_mnist("idx", idx_dir=tmp_path)


def test_load_mnist_rejects_unknown_sources_and_missing_folders(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset source 'cifar'"):
        gd.load_mnist("cifar")
    with pytest.raises(ValueError, match="needs idx_dir"):
        gd.load_mnist("idx")
    with pytest.raises(FileNotFoundError, match="IDX folder not found"):
        gd.load_mnist("idx", idx_dir=tmp_path / "missing")
