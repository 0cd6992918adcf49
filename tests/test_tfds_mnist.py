"""Full MNIST through tensorflow-datasets (gd_jax._src.data.tfds_mnist), offline.

The real builder, download manager, checksum verification and ``data_source`` code run on the
embedded sample and on IDX files made here; only three things are replaced: the builder's
registry of expected download checksums and gd_jax's table of genuine content hashes (both
pointed at those files, since the sample's training files are a subset of MNIST's; the
tests on the real files are in test_genuine_mnist.py), and the network itself - every test
runs with HTTP fetching and socket connections patched to record the attempt and fail, and
the download tests swap in a fetcher that copies local files.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import logging
import os
import shutil
import socket
import sys
import time
import urllib.parse
from collections.abc import Iterator
from importlib import resources

import numpy as np
import pytest
import requests
import tensorflow_datasets as tfds
from tensorflow_datasets.core.download import checksums, downloader

from gd_jax._src.data import genuine, tfds_mnist
from gd_jax._src.data.idx import read_idx_bytes, write_idx
from gd_jax._src.data.mnist import load_mnist, read_mnist_idx_dir
from gd_jax._src.data.tfds_mnist import GZ_FILES, GdJaxMnist, MnistChecksumError, MnistNotFoundError, load_full_mnist

SAMPLE_DIR = str(resources.files("gd_jax._src.data") / "sample")
URLS = {name: urllib.parse.urljoin(GdJaxMnist.URL, name) for name in GZ_FILES.values()}


def url_infos(folder: str) -> dict[str, checksums.UrlInfo]:
    """The checksums of the four files in ``folder``, keyed by the genuine files' URLs."""
    return {url: checksums.compute_url_info(os.path.join(folder, name)) for name, url in URLS.items()}


def block_network(mp: pytest.MonkeyPatch, attempts: list[str]) -> None:
    """Makes every attempt to reach the network fail, after recording it in ``attempts``."""

    def no_fetch(self, url, destination_path, verify=True):
        attempts.append(f"fetch {url}")
        raise ConnectionError(f"network disabled in tests: {url}")

    def no_connect(address, *args, **kwargs):
        attempts.append(f"connect {address}")
        raise OSError("network disabled in tests")

    mp.setattr(downloader._Downloader, "_sync_download", no_fetch)
    mp.setattr(socket, "create_connection", no_connect)


@pytest.fixture(autouse=True)
def network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The network attempts of a test (each one failed)."""
    attempts: list[str] = []
    block_network(monkeypatch, attempts)
    return attempts


@contextlib.contextmanager
def restored_registry() -> Iterator[None]:
    """Restores tfds' global checksum registry on exit.

    tfds' DownloadManager updates the memoized dict that ``get_all_url_infos`` returns with the
    builder's ``url_infos``, in place: without this, checksums registered for one test would
    still be expected in the next.
    """
    infos = checksums.get_all_url_infos()
    saved = dict(infos)
    try:
        yield
    finally:
        infos.clear()
        infos.update(saved)


@pytest.fixture(autouse=True)
def registry() -> Iterator[None]:
    with restored_registry():
        yield


@pytest.fixture
def register(monkeypatch: pytest.MonkeyPatch):
    """``register(folder)`` makes the builder expect the download checksums of ``folder``'s four files."""
    return lambda folder: monkeypatch.setattr(GdJaxMnist, "url_infos", url_infos(folder))


@pytest.fixture
def accept(monkeypatch: pytest.MonkeyPatch):
    """``accept(folder)`` makes the content of ``folder``'s four files count as genuine MNIST."""

    def accept_folder(folder: str) -> None:
        for name in GZ_FILES.values():
            with contextlib.suppress(ValueError):  # a broken stream: the reader must refuse it anyway
                digest = hashlib.sha256(read_idx_bytes(os.path.join(folder, name))).hexdigest()
                monkeypatch.setitem(genuine.GENUINE_SHA256, name[: -len(".gz")], digest)

    return accept_folder


@pytest.fixture(scope="module")
def reference() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return read_mnist_idx_dir(SAMPLE_DIR)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tfds data dir with the sample prepared (and no array cache yet); copy it before changing it."""
    data_dir = str(tmp_path_factory.mktemp("prepared"))
    attempts: list[str] = []
    with restored_registry(), pytest.MonkeyPatch.context() as mp:
        block_network(mp, attempts)
        arrays = read_mnist_idx_dir(SAMPLE_DIR)
        builder = GdJaxMnist(data_dir=data_dir, file_format="array_record", genuine=arrays)
        tfds_mnist._prepare(builder, download=False)
    assert attempts == []
    return data_dir


@pytest.fixture
def data_dir(prepared: str, tmp_path) -> str:
    """A private copy of the prepared data dir, without the downloads folder."""
    copy = str(tmp_path / "tfds")
    shutil.copytree(os.path.join(prepared, "gd_jax_mnist"), os.path.join(copy, "gd_jax_mnist"))
    return copy


def cache_path(data_dir: str) -> str:
    return os.path.join(data_dir, "gd_jax_mnist", str(GdJaxMnist.VERSION), tfds_mnist.CACHE_NAME)


def assert_same(got: dict, want: dict) -> None:
    assert set(got) == {"train", "test"}
    for split in ("train", "test"):
        for g, w in zip(got[split], want[split]):
            assert g.dtype == w.dtype == np.uint8
            np.testing.assert_array_equal(g, w)


def copy_sample(folder) -> str:
    folder = str(folder)
    os.makedirs(folder, exist_ok=True)
    for name in GZ_FILES.values():
        shutil.copy(os.path.join(SAMPLE_DIR, name), folder)
    return folder


def test_builder_path_equals_plain_idx_reader(tmp_path, accept, reference, network):
    accept(SAMPLE_DIR)
    arrays = load_full_mnist(idx_dir=SAMPLE_DIR, data_dir=tmp_path)
    assert_same(arrays, reference)
    assert arrays["train"][0].shape == (5000, 28, 28) and arrays["test"][0].shape == (10000, 28, 28)
    # The prepared folder is an ordinary tfds dataset, in the files' order.
    source = tfds.data_source("gd_jax_mnist", split="train", data_dir=str(tmp_path))
    np.testing.assert_array_equal(source[4999]["image"], reference["train"][0][4999])
    assert source[4999]["label"] == reference["train"][1][4999]
    # Read back through tfds, without the idx folder: the same digits.
    assert_same(load_full_mnist(data_dir=tmp_path), reference)
    assert network == []
    assert not any(m == "tensorflow" or m.startswith("tensorflow.") for m in sys.modules)
    # Nothing but the prepared data: the empty download folders tfds makes on the way are gone.
    assert sorted(os.listdir(tmp_path)) == ["gd_jax_mnist"]


def test_load_mnist_source_mnist_equals_source_sample(data_dir):
    # gd_jax._src.data.mnist's own split and scaling on top: the same Datasets from both sources.
    got = load_mnist("mnist", validation=True, validation_size=1000, data_dir=data_dir)
    want = load_mnist("sample", validation=True, validation_size=1000)
    assert [d.size for d in got] == [4000, 1000, 10000]
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g.x, w.x)
        np.testing.assert_array_equal(g.y, w.y)


def test_sample_training_files_are_refused_by_the_genuine_hashes(tmp_path, network, capfd):
    # No override: the genuine content hashes; the sample's 5,000 training digits are not MNIST's 60,000.
    with pytest.raises(MnistChecksumError, match=r"is not the genuine MNIST train-images-idx3-ubyte") as e:
        load_full_mnist(idx_dir=SAMPLE_DIR, data_dir=tmp_path / "tfds")
    message = str(e.value)
    assert "\n" not in message and "--dataset idx" in message
    assert message.startswith(repr(os.path.join(SAMPLE_DIR, "train-images-idx3-ubyte.gz")))
    assert os.listdir(tmp_path) == []  # not even the data dir
    assert capfd.readouterr() == ("", "")  # no tensorflow-datasets progress
    assert network == []


@pytest.mark.parametrize("name", list(GZ_FILES.values()))
def test_non_genuine_file_is_named(tmp_path, accept, name, network):
    folder = copy_sample(tmp_path / "idx")
    accept(folder)
    path = os.path.join(folder, name)
    raw = bytearray(gzip.decompress(open(path, "rb").read()))
    raw[-1] ^= 1  # one pixel or one label off: still a valid IDX file, no longer the genuine one
    with open(path, "wb") as f:
        f.write(gzip.compress(bytes(raw), compresslevel=1))
    with pytest.raises(MnistChecksumError) as e:
        load_full_mnist(idx_dir=folder, data_dir=tmp_path / "tfds")
    assert str(e.value).startswith(f"{path!r} is not the genuine MNIST {name[:-3]}") and "\n" not in str(e.value)
    assert network == []
    assert os.listdir(tmp_path) == ["idx"]


def _truncated(raw: bytes) -> bytes:
    return raw[:-7]


def _wrong_magic(raw: bytes) -> bytes:
    return b"\x00\x00\x07\x01" + raw[4:]


def _not_gzip(raw: bytes) -> bytes:
    return b"\x1f\x8b" + raw[:100]  # gzip's magic, then no valid stream


@pytest.mark.parametrize(
    ("name", "spoil", "message"),
    [
        ("t10k-labels-idx1-ubyte.gz", _truncated, r"is truncated: header says shape \(10000,\)"),
        ("train-images-idx3-ubyte.gz", _truncated, r"is truncated"),
        ("t10k-images-idx3-ubyte.gz", _wrong_magic, r"bad IDX magic number 0x00000701"),
        ("train-labels-idx1-ubyte.gz", _not_gzip, r"is not a valid gzip file"),
    ],
)
def test_bad_idx_file_gets_a_clear_error(tmp_path, accept, name, spoil, message):
    folder = copy_sample(tmp_path / "idx")
    path = os.path.join(folder, name)
    raw = gzip.decompress(open(path, "rb").read())
    spoiled = spoil(raw)
    with open(path, "wb") as f:
        f.write(spoiled if spoiled[:2] == b"\x1f\x8b" else gzip.compress(spoiled, compresslevel=1))
    accept(folder)  # its content counts as genuine: the format checks must catch it
    with pytest.raises(ValueError, match=message) as e:
        load_full_mnist(idx_dir=folder, data_dir=tmp_path / "tfds")
    assert path in str(e.value) and "\n" not in str(e.value)
    # Nothing half-prepared is left behind to be read next time.
    assert os.listdir(tmp_path) == ["idx"]


def test_images_and_labels_of_different_lengths_are_rejected(tmp_path, accept):
    folder = copy_sample(tmp_path / "idx")
    write_idx(os.path.join(folder, "t10k-labels-idx1-ubyte.gz"), np.zeros(9999, np.uint8))
    accept(folder)
    with pytest.raises(ValueError, match=r"10000, 28, 28\) images and 9999 labels"):
        load_full_mnist(idx_dir=folder, data_dir=tmp_path / "tfds")
    # tfds failed inside its preparation: the folders it made on the way are removed.
    assert os.listdir(tmp_path) == ["idx"]


def test_offline_without_data_fails_at_once_without_network(tmp_path, network):
    with pytest.raises(MnistNotFoundError) as e:
        load_full_mnist(data_dir=tmp_path)
    message = str(e.value)
    assert isinstance(e.value, FileNotFoundError) and "\n" not in message
    assert str(tmp_path) in message
    for way in ("--data-dir", "TFDS_DATA_DIR", "--idx-dir", "recognised by content", "mnist.npz", "--download"):
        assert way in message
    # No probe, no fetch, nothing written: there is nothing that could retry.
    assert network == []
    assert os.listdir(tmp_path) == []


def test_download_with_unreachable_host_fails_without_fetching(tmp_path, network):
    with pytest.raises(MnistNotFoundError, match=r"storage\.googleapis\.com is unreachable") as e:
        load_full_mnist(data_dir=tmp_path, download=True)
    assert "--idx-dir" in str(e.value) and "--data-dir" in str(e.value) and "\n" not in str(e.value)
    assert network == ["connect ('storage.googleapis.com', 443)"]  # one probe, no HTTP retries


def test_probe_is_bounded_when_name_resolution_hangs(monkeypatch):
    def hang(*args, **kwargs):
        time.sleep(0.5)
        raise OSError("gave up")

    monkeypatch.setattr(socket, "create_connection", hang)
    assert tfds_mnist._unreachable("example.invalid", timeout=0.05) == "no answer within 0.05 s"


def test_idx_dir_missing_a_file_never_falls_back_to_download(tmp_path, accept, network):
    folder = copy_sample(tmp_path / "idx")
    accept(folder)
    os.remove(os.path.join(folder, "t10k-labels-idx1-ubyte.gz"))
    with pytest.raises(MnistNotFoundError, match=r"t10k-labels-idx1-ubyte not found in .* must hold all four"):
        load_full_mnist(idx_dir=folder, data_dir=tmp_path / "tfds", download=True)
    assert network == []
    assert os.listdir(tmp_path) == ["idx"]


def test_missing_idx_dir(tmp_path):
    with pytest.raises(MnistNotFoundError, match=r"--idx-dir folder not found"):
        load_full_mnist(idx_dir=tmp_path / "nowhere", data_dir=tmp_path)


@pytest.fixture
def local_fetch(monkeypatch: pytest.MonkeyPatch):
    """Replaces HTTP fetching by a copy from a local folder; returns the fetched URLs."""
    fetched: list[str] = []
    state = {"folder": SAMPLE_DIR}

    def fetch(self, url, destination_path, verify=True):
        fetched.append(url)
        path = destination_path / os.path.basename(urllib.parse.urlparse(url).path)
        shutil.copy(os.path.join(state["folder"], path.name), path)
        return downloader.DownloadResult(path=path, url_info=checksums.compute_url_info(path))

    class Connection:
        def close(self) -> None:
            pass

    monkeypatch.setattr(downloader._Downloader, "_sync_download", fetch)
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: Connection())
    return fetched, state


def test_simulated_download_is_verified_and_prepared(tmp_path, register, reference, local_fetch):
    fetched, _ = local_fetch
    register(SAMPLE_DIR)
    assert_same(load_full_mnist(data_dir=tmp_path, download=True), reference)
    assert sorted(fetched) == sorted(URLS.values())  # the stock builder's URLs, each fetched once
    downloaded = os.listdir(tmp_path / "downloads" / "gd_jax_mnist")
    assert sum(name.endswith(".gz") for name in downloaded) == 4
    # Prepared now: no more downloading.
    assert_same(load_full_mnist(data_dir=tmp_path, download=True), reference)
    assert len(fetched) == 4


def test_corrupted_download_is_rejected(tmp_path, register, local_fetch):
    _, state = local_fetch
    register(SAMPLE_DIR)
    state["folder"] = folder = copy_sample(tmp_path / "served")
    with open(os.path.join(folder, "train-labels-idx1-ubyte.gz"), "ab") as f:
        f.write(b"\0")
    with pytest.raises(
        MnistChecksumError, match=r"downloaded train-labels-idx1-ubyte\.gz does not match .* download again"
    ):
        load_full_mnist(data_dir=tmp_path / "tfds", download=True)


def test_failed_download_is_one_clear_line(tmp_path, register, local_fetch, monkeypatch):
    register(SAMPLE_DIR)

    def refused(self, url, destination_path, verify=True):
        raise requests.exceptions.ConnectionError(f"HTTPSConnectionPool: Max retries exceeded\n with url: {url}")

    monkeypatch.setattr(downloader._Downloader, "_sync_download", refused)
    with pytest.raises(MnistNotFoundError, match=r"the download failed \(HTTPSConnectionPool: Max retries") as e:
        load_full_mnist(data_dir=tmp_path / "tfds", download=True)
    assert "\n" not in str(e.value) and "--idx-dir" in str(e.value)
    assert not GdJaxMnist(data_dir=str(tmp_path / "tfds")).data_path.exists()


def test_incomplete_prepared_folder_is_reported(tmp_path, accept, network):
    accept(SAMPLE_DIR)
    GdJaxMnist(data_dir=str(tmp_path)).data_path.mkdir(parents=True)
    with pytest.raises(MnistNotFoundError, match=r"is not a complete prepared dataset .* delete it"):
        load_full_mnist(data_dir=tmp_path, idx_dir=SAMPLE_DIR, download=True)
    assert network == []


def test_tfds_data_dir_environment_variable(data_dir, reference, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", data_dir)
    assert_same(load_full_mnist(), reference)


def test_prepared_folder_can_be_carried_elsewhere(data_dir, reference, tmp_path):
    carried = tmp_path / "elsewhere"
    shutil.move(data_dir, carried)
    assert_same(load_full_mnist(data_dir=carried), reference)


def test_cache_is_written_then_used(data_dir, reference, monkeypatch):
    assert not os.path.exists(cache_path(data_dir))
    assert_same(load_full_mnist(data_dir=data_dir), reference)
    assert os.path.isfile(cache_path(data_dir))

    def no_records(*args, **kwargs):
        raise AssertionError("the records were read although the cache is valid")

    monkeypatch.setattr(GdJaxMnist, "as_data_source", no_records)
    assert_same(load_full_mnist(data_dir=data_dir), reference)


def _flip_byte(path: str) -> None:
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))


def _truncate(path: str) -> None:
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) - 1000)


def _alter_one_pixel(path: str) -> None:
    # A well-formed file whose arrays no longer match the digest stored with them.
    with np.load(path) as f:
        contents = dict(f)
    contents["test_images"] = contents["test_images"].copy()
    contents["test_images"][0, 0, 0] ^= 1
    np.savez(path, **contents)


def _other_counts(path: str) -> None:
    # Consistent in itself (its digest matches) but not the prepared splits' sizes.
    with np.load(path) as f:
        arrays = {s: (f[f"{s}_images"][:100], f[f"{s}_labels"][:100]) for s in ("train", "test")}
    tfds_mnist._save_cache(path, arrays)


def _garbage(path: str) -> None:
    with open(path, "wb") as f:
        f.write(b"not a cache")


@pytest.mark.parametrize("corrupt", [_flip_byte, _truncate, _alter_one_pixel, _other_counts, _garbage])
def test_corrupt_cache_is_detected_and_rebuilt(data_dir, reference, corrupt, caplog):
    load_full_mnist(data_dir=data_dir)
    path = cache_path(data_dir)
    corrupt(path)
    with caplog.at_level(logging.WARNING, logger="gd_jax._src.data.tfds_mnist"):
        assert_same(load_full_mnist(data_dir=data_dir), reference)
    assert "corrupt or stale; rebuilding" in caplog.text
    counts = {"train": 5000, "test": 10000}
    assert_same(tfds_mnist._load_cache(path, counts), reference)  # rewritten, valid again
    assert [n for n in os.listdir(os.path.dirname(path)) if n.endswith(".tmp")] == []
