"""Files that are not what a command wants (issue 21): each is named for what it is, with the fix.

``gd-jax evaluate`` (and ``gd.load_params``) given an image, text, JSON, a lone ``.npy``, a
sweep's stacked parameters or a folder says what it was given, in one line, instead of the
reader's own words about pickled data.
"""

from __future__ import annotations

import gzip
import json
import pickle

import jax
import numpy as np
import pytest
from PIL import Image

import gd_jax as gd
from gd_jax._src.serialization import describe_file
from gd_jax.cli import main


@pytest.fixture
def run(tmp_path):
    """A run folder's files, as far as reading parameters goes (no training needed)."""
    folder = tmp_path / "run"
    folder.mkdir()
    gd.save_params(folder / "params.npz", gd.init_mlp(jax.random.key(0), [784, 5, 10]))
    (folder / "config.json").write_text(json.dumps({"sizes": [784, 5, 10], "segments": []}))
    (folder / "history.json").write_text(json.dumps({"config": {}, "epochs": []}))
    Image.new("RGB", (40, 30), "white").save(folder / "history.png")
    return folder


def _write(folder, name, data) -> str:
    path = folder / name
    path.write_bytes(data)
    return str(path)


def _png(tmp_path):
    Image.new("L", (4, 4)).save(tmp_path / "x.png")
    return (tmp_path / "x.png").read_bytes()


def _jpeg(tmp_path):
    Image.new("L", (4, 4)).save(tmp_path / "x.jpg")
    return (tmp_path / "x.jpg").read_bytes()


def _npy(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros(3))
    return (tmp_path / "x.npy").read_bytes()


FILES = {
    "text": (lambda t: b"hello\n", "is not a params file: it is text"),
    "unicode text": (lambda t: "h\u00e9llo \u2713\n".encode(), "it is text"),
    "empty": (lambda t: b"", "it is an empty file (0 bytes)"),
    "JSON": (lambda t: b'{"a": [1, 2]}', "it is JSON;"),
    "a config.json": (lambda t: b'{"sizes": [1], "epochs": 30, "segments": []}', "it is JSON (a run's config.json)"),
    "a history.json": (lambda t: b'{"config": {"epochs": 2}, "epochs": []}', "it is JSON (a run's history.json)"),
    "a sweep.json": (lambda t: b'{"config": {}, "records": []}', "it is JSON (a sweep's sweep.json)"),
    "PNG": (_png, "it is an image (PNG)"),
    "JPEG": (_jpeg, "it is an image (JPEG)"),
    "gzip": (lambda t: gzip.compress(b"\x00\x00\x08\x01"), "gzip-compressed data"),
    "a lone .npy": (_npy, "a single numpy array (.npy)"),
    "Python objects": (lambda t: pickle.dumps({"w": 1}), "a file of Python objects, which are never loaded"),
    "binary": (lambda t: bytes(range(256)) * 8, "binary data of an unknown kind"),
    "IDX": (lambda t: b"\x00\x00\x08\x03" + bytes(12), "an IDX file (MNIST's images or labels)"),
}


@pytest.mark.parametrize("case", FILES)
def test_a_file_that_is_not_params_says_what_it_is(tmp_path, capsys, case):
    make, message = FILES[case]
    path = _write(tmp_path, "given", make(tmp_path))
    with pytest.raises(ValueError, match=r"pass the params\.npz of a run folder") as error:
        gd.load_params(path)
    assert message in str(error.value) and "Python objects instead of plain arrays" not in str(error.value)
    assert "pickle" not in str(error.value)
    assert main(["evaluate", path]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and path in err


def test_a_run_folders_figure_names_the_params_file_beside_it(run, capsys):
    """The issue's case: ``gd-jax evaluate RUN/history.png``."""
    assert main(["evaluate", str(run / "history.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "is not a params file: it is an image (PNG)" in err and f"pass '{run / 'params.npz'}'" in err
    assert main(["evaluate", str(run / "history.json")]) == 2
    assert "it is JSON (a run's history.json)" in capsys.readouterr().err


def test_a_sweeps_stacked_params_name_the_model_flag(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    np.savez(sweep / "params.npz", **{"layer0/w": np.zeros((3, 784, 5)), "layer0/b": np.zeros((3, 5)),
                                      "layer1/w": np.zeros((3, 5, 10)), "layer1/b": np.zeros((3, 10))})
    (sweep / "sweep.json").write_text(json.dumps({"config": {}, "records": []}))
    with pytest.raises(ValueError, match=r"stacked parameters of 3 models .* --model"):
        gd.load_params(sweep / "params.npz")
    assert "sweep folder (it has sweep.json): choose one of its models with --model" in describe_file(sweep)
    with pytest.raises(ValueError, match=r"sweep folder .* --model"):
        gd.load_params(sweep)
    assert main(["evaluate", str(sweep / "params.npz")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--model" in err


def test_an_npz_of_other_arrays_and_folders(tmp_path, run):
    np.savez(tmp_path / "other.npz", x=np.zeros(3), y=np.ones(2))
    with pytest.raises(ValueError, match=r"without a network's layers \(it holds x, y\)"):
        gd.load_params(tmp_path / "other.npz")
    with pytest.raises(ValueError, match="is a run folder: pass its params file"):
        gd.load_params(run)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="is a folder, not a file"):
        gd.load_params(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="params file not found"):
        gd.load_params(tmp_path / "missing.npz")


def test_real_params_files_are_described_as_none_and_load(run):
    assert describe_file(run / "params.npz") is None
    assert [layer["w"].shape for layer in gd.load_params(run / "params.npz")] == [(784, 5), (5, 10)]


def test_a_checkpoint_given_as_params_is_named(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--sizes", "784,5,10", "--epochs", "1", "--no-progress", "--no-tensorboard",
                 "--no-figures", "--out", str(out)]) == 0
    capsys.readouterr()
    checkpoint = out / "checkpoints" / "epoch-000001.npz"
    with pytest.raises(ValueError, match=r"is a gd-jax checkpoint, not a params file; pass the run folder"):
        gd.load_params(checkpoint)
    assert main(["evaluate", str(checkpoint)]) == 2
    assert "gd-jax checkpoint" in capsys.readouterr().err


def test_a_reader_that_quits_early_is_no_error(tmp_path):
    """`gd-jax ... | head -1`: stdout's reader is gone before the output is written: exit 141, no traceback."""
    import subprocess
    import sys

    run = tmp_path / "run"
    run.mkdir()
    gd.save_params(run / "params.npz", gd.init_mlp(jax.random.key(0), [784, 5, 10]))
    Image.fromarray((np.eye(28) * 255).astype(np.uint8)).save(tmp_path / "digit.png")
    process = subprocess.Popen([sys.executable, "-m", "gd_jax", "predict", str(run), str(tmp_path / "digit.png")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()  # long before the process prints (it is still importing JAX)
    err = process.stderr.read().decode()
    assert process.wait(timeout=120) == 141 and err == "", err
