"""Every bad input of issue 4, at the Python API and at the CLI.

The API raises ``ValueError`` (or ``FileNotFoundError`` / an ``OSError`` for files and folders)
with a message that names the bad value and the fix. The CLI prints that message as one line on
stderr and exits with status 2, with no traceback (unless ``--debug``), and writes nothing:
no new run folder, and an existing run folder's files unchanged byte for byte.
"""

import gzip
import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

import gd_jax as gd
from gd_jax._src.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from gd_jax._src.data.idx import IDX_FILES
from gd_jax.cli import main

# --- the Python API ----------------------------------------------------------------------------------------------

KEY = jax.random.key(0)


def _fit(data, *, sizes=(784, 10, 10), **overrides):
    """fit with one argument changed; every case here must raise before a single step."""
    kwargs = {"epochs": 1, "batch_size": 10, "optimizer": gd.sgd(3.0), "cost": gd.quadratic_cost, "key": KEY,
              **overrides}
    return gd.fit(gd.init_mlp(KEY, list(sizes)), data, **kwargs)


def _with(data, x=None, y=None):
    return gd.Dataset(data.x if x is None else x, data.y if y is None else y)


def _set(a, index, value, dtype=None):
    a = np.array(a, dtype=dtype)
    a[index] = value
    return a


API_CASES = {
    # sizes: empty, zero, negative, not matching the data (inputs, then classes)
    "sizes empty": (lambda d: gd.init_mlp(KEY, []), ValueError, r"sizes must be two or more positive .*got \[\]"),
    "sizes zero": (lambda d: gd.init_mlp(KEY, [784, 0, 10]), ValueError, r"positive .*got \[784, 0, 10\]"),
    "sizes negative": (lambda d: gd.init_mlp(KEY, [784, -3, 10]), ValueError, r"got \[784, -3, 10\]; e.g."),
    "sizes: input width not the data's": (lambda d: _fit(d, sizes=(100, 10, 10)), ValueError,
                                          r"784 features but the network's input layer has 100.*--sizes 784"),
    "sizes: fewer outputs than classes": (lambda d: _fit(d, sizes=(784, 10, 5)), ValueError,
                                          r"labels from 0 to 9, outside \[0, 5\)"),
    # batch size: zero, negative, larger than the data
    "batch size 0": (lambda d: _fit(d, batch_size=0), ValueError,
                     r"batch_size must be an integer between 1 and 300, got 0"),
    "batch size negative": (lambda d: _fit(d, batch_size=-5), ValueError, r"between 1 and 300, got -5"),
    "batch size > n": (lambda d: _fit(d, batch_size=301), ValueError, r"between 1 and 300, got 301"),
    "batch size not an integer": (lambda d: _fit(d, batch_size=2.5), ValueError, r"got 2.5"),
    # epochs negative
    "epochs negative": (lambda d: _fit(d, epochs=-1), ValueError, r"epochs must be an integer >= 0, got -1"),
    # The library optimizer accepts every number optax.sgd accepts (0, negative, NaN: see test_optim);
    # the CLI refuses them in flags (CLI_CASES). What no update could use is refused here too.
    "eta not a number": (lambda d: gd.sgd("fast"), ValueError, r"learning_rate must be a number.*got 'fast'"),
    "momentum an array of several": (lambda d: gd.sgd(3.0, momentum=np.ones(2)), ValueError,
                                     r"momentum must be a scalar, got an array of shape \(2,\)"),
    # labels out of range or not integers
    "label 10 of 10 classes": (lambda d: _fit(_with(d, y=_set(d.y, 3, 10))), ValueError,
                               r"train.y holds labels from 0 to 10, outside \[0, 10\)"),
    "label negative": (lambda d: _fit(_with(d, y=_set(d.y, 3, -1))), ValueError, r"labels from -1 to 9"),
    "labels not integers": (lambda d: _fit(_with(d, y=np.asarray(d.y, np.float32))), ValueError,
                            r"train.y must hold integer class labels, got dtype float32.*astype"),
    "labels one-hot": (lambda d: _fit(_with(d, y=np.eye(10)[d.y].astype(np.int32))), ValueError,
                       r"train.y must be 1-D.*argmax"),
    # x with NaN or the wrong width; x and y of different lengths
    "x with NaN": (lambda d: _fit(_with(d, x=_set(d.x, (4, 100), np.nan))), ValueError, r"train.x holds 1 NaN"),
    "x with inf (eval data)": (lambda d: _fit(d, eval_data=_with(d, x=_set(d.x, (0, 0), np.inf))), ValueError,
                               r"eval_data.x holds 1 NaN or infinite"),
    "x of the wrong width": (lambda d: _fit(_with(d, x=np.asarray(d.x)[:, :783])), ValueError,
                             r"train.x has 783 features but the network's input layer has 784"),
    "x and y of different lengths": (lambda d: _fit(_with(d, y=np.asarray(d.y)[:-1])), ValueError,
                                     r"train.x has 300 examples but train.y has 299"),
    "no examples": (lambda d: _fit(d.take(0)), ValueError, r"train is empty"),
}


@pytest.mark.parametrize("case", API_CASES)
def test_api_rejects_bad_values_naming_the_value_and_the_fix(small_train, case):
    call, exception, message = API_CASES[case]
    with pytest.raises(exception, match=message):
        call(small_train)


def _idx_bytes(array):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return header + array.astype(np.uint8).tobytes()


GOOD_LABELS = np.array([3, 1, 4, 1, 5, 9], np.uint8)
IDX_CASES = {
    "truncated": (_idx_bytes(GOOD_LABELS)[:-2], ValueError, r"is truncated: header says shape \(6,\).*re-download"),
    "header truncated": (_idx_bytes(GOOD_LABELS)[:6], ValueError, r"truncated inside its header"),
    "bad magic number": (b"\x12\x34" + _idx_bytes(GOOD_LABELS)[2:], ValueError, r"bad IDX magic number 0x12340801"),
    "wrong dimensions": (_idx_bytes(GOOD_LABELS.reshape(2, 3)), ValueError, r"has 2 dimensions where 1 are expected"),
    "not gzip (broken stream)": (gzip.compress(_idx_bytes(GOOD_LABELS))[:20], ValueError, r"is not a valid gzip file"),
    "not IDX at all": (b"<html>404 Not Found</html>", ValueError, r"bad IDX magic number"),
    "empty": (b"", ValueError, r"truncated: 0 bytes"),
}


@pytest.mark.parametrize("case", IDX_CASES)
def test_api_rejects_bad_idx_files(tmp_path, case):
    data, exception, message = IDX_CASES[case]
    path = tmp_path / "train-labels-idx1-ubyte"
    path.write_bytes(data)
    with pytest.raises(exception, match=message) as error:
        gd.read_idx(path, ndim=1)
    assert str(path) in str(error.value)  # names the file
    assert path.read_bytes() == data  # and leaves it alone


@pytest.mark.parametrize("call", [
    lambda p: gd.read_idx(p / "missing-idx1-ubyte"),
    lambda p: gd.load_params(p / "params.npz"),
    lambda p: gd.load_mnist("idx", idx_dir=p / "no-such-folder"),
    lambda p: load_checkpoint(p / "checkpoints", like=gd.TrainState([], None)),
], ids=["read_idx", "load_params", "load_mnist", "load_checkpoint"])
def test_api_missing_files_raise_file_not_found_naming_the_path(tmp_path, call):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        call(tmp_path)


def test_api_unwritable_checkpoint_folder_and_foreign_checkpoint(tmp_path):
    params = gd.init_mlp(KEY, [784, 10, 10])
    state = gd.TrainState(params, gd.sgd(3.0).init(params))
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match=r"cannot write checkpoint .*choose a writable folder"):
        save_checkpoint(tmp_path / "file" / "ckpt", epoch=0, state=state, key=KEY)
    save_checkpoint(tmp_path / "ckpt", epoch=0, state=state, key=KEY)
    other = gd.init_mlp(KEY, [784, 20, 10])
    with pytest.raises(ValueError, match=r"holds a network of sizes \[784, 10, 10\], not \[784, 20, 10\]"):
        load_checkpoint(tmp_path / "ckpt", like=gd.TrainState(other, gd.sgd(3.0).init(other)))


# --- the CLI -------------------------------------------------------------------------------------------------------


def _snapshot(folder):
    return {os.path.relpath(os.path.join(root, f), folder): open(os.path.join(root, f), "rb").read()
            for root, _, files in os.walk(folder) for f in files}


def _assert_one_line_exit_2(capsys, argv, message):
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err
    assert err.startswith("gd-jax: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    assert message.lower() in err.lower(), err
    return err


QUICK = ["--sizes", "784,10,10", "--epochs", "1", "--no-progress", "--no-figures"]  # figures: not checked here
CLI_CASES = {
    # sizes
    "sizes empty": (["--sizes", ""], "sizes must be two or more positive integers"),
    "sizes zero": (["--sizes", "784,0,10"], "--sizes must be two or more positive integers, input first, got 784,0,10"),
    "sizes negative": (["--sizes", "784,-3,10"], "got 784,-3,10; e.g. --sizes 784,30,10"),
    "sizes not numbers": (["--sizes", "784,x"], "--sizes wants comma-separated integers"),
    "sizes with an empty entry": (["--sizes", "784,,10"], "--sizes has an empty entry in '784,,10'"),
    "sizes: input width not the data's": (["--sizes", "100,30,10"], "--sizes 784,30,10"),
    "sizes: fewer outputs than classes": (["--sizes", "784,30,5"], "outside [0, 5)"),
    # batch size
    "batch size 0": (["--batch-size", "0"], "--batch-size must be an integer >= 1, got 0"),
    "batch size negative": (["--batch-size", "-1"], "got -1"),
    "batch size > n": (["--batch-size", "5001"], "--batch-size must be between 1 and 5000 (the training examples)"),
    # epochs
    "epochs negative": (["--epochs", "-2"], "epochs must be an integer >= 0, got -2"),
    "epochs not a number": (["--epochs", "many"], "--epochs: invalid int value: 'many'"),
    # learning rate
    "eta 0": (["--eta", "0"], "--eta must be a positive finite number, got 0.0"),
    "eta negative": (["--eta", "-1"], "got -1.0"),
    "eta NaN": (["--learning-rate", "nan"], "got nan"),
    "eta inf": (["--eta", "inf"], "got inf"),
    # momentum
    "momentum 1": (["--momentum", "1"], "--momentum must be in [0, 1), got 1.0"),
    "momentum negative": (["--momentum", "-0.5"], "got -0.5"),
    "nesterov without momentum": (["--nesterov"], "--nesterov needs --momentum; pass e.g. --momentum 0.9"),
    # the data source
    "unknown dataset": (["--dataset", "cifar"], "invalid choice: 'cifar'"),
    "idx without --idx-dir": (["--dataset", "idx"], "needs idx_dir (--idx-dir DIR)"),
    "missing IDX folder": (["--dataset", "idx", "--idx-dir", "/no/such/folder"], "IDX folder not found"),
    "target cost NaN": (["--target-cost", "nan"], "--target-cost must be a finite number >= 0"),
    # rules that choose by the evaluation accuracy must not watch the test set (issue 21)
    "patience without --validation": (["--patience", "5"],
                                      "--patience 5 chooses by the evaluation accuracy, which without --validation is "
                                      "the test set's"),
    "eta schedule without --validation": (["--eta-schedule", "2"], "--eta-schedule 2 chooses by the evaluation "
                                                                   "accuracy"),
}


@pytest.mark.parametrize("case", CLI_CASES)
def test_cli_bad_values_one_line_exit_2_nothing_written(tmp_path, capsys, case):
    args, message = CLI_CASES[case]
    out = tmp_path / "run"
    _assert_one_line_exit_2(capsys, ["train", *QUICK, "--out", str(out), *args], message)
    assert not out.exists()


@pytest.fixture(scope="module")
def idx_arrays(mnist_sample):
    """Real digits as uint8 IDX arrays: 200 training and 100 test images (a small --dataset idx)."""
    train, test = mnist_sample
    as_images = lambda d, n: np.rint(np.asarray(d.x[:n]) * 255).astype(np.uint8).reshape(n, 28, 28)  # noqa: E731
    return {"train": (as_images(train, 200), np.asarray(train.y[:200], np.uint8)),
            "test": (as_images(test, 100), np.asarray(test.y[:100], np.uint8))}


def _write_idx_dir(folder, arrays, broken=None):
    """Writes the four files; ``broken`` = (split, kind, bytes or None) replaces or removes one of them."""
    folder.mkdir()
    for split, (images, labels) in arrays.items():
        for kind, array in (("images", images), ("labels", labels)):
            gd.write_idx(folder / IDX_FILES[(split, kind)], array)
    if broken is not None:
        split, kind, data = broken
        path = folder / IDX_FILES[(split, kind)]
        path.unlink()
        if data is not None:
            path.write_bytes(data)


def _float_idx(array):
    header = bytes([0, 0, 0x0D, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return header + np.asarray(array, ">f4").tobytes()


CLI_IDX_CASES = {
    "IDX truncated": (lambda a: ("train", "images", _idx_bytes(a["train"][0])[:-1000]), "is truncated"),
    "IDX bad magic number": (lambda a: ("train", "images", b"\x00\x01" + _idx_bytes(a["train"][0])[2:]),
                             "bad IDX magic number"),
    "IDX wrong dimensions": (lambda a: ("train", "images", _idx_bytes(a["train"][0].reshape(200, 784))),
                             "has 2 dimensions where 3 are expected"),
    "IDX not gzip": (lambda a: ("test", "labels", b"\x1f\x8b" + b"not really gzip"), "is not a valid gzip file"),
    "IDX missing file": (lambda a: ("test", "labels", None), "t10k-labels-idx1-ubyte[.gz] not found"),
    "labels out of range": (lambda a: ("train", "labels", _idx_bytes(_set(a["train"][1], 5, 12))),
                            "labels from 0 to 12, outside [0, 10)"),
    "labels not integers": (lambda a: ("train", "labels", _float_idx(a["train"][1].astype(np.float32))),
                            "MNIST IDX files hold uint8 data"),
    "x with NaN (float images)": (lambda a: ("train", "images", _float_idx(_set(a["train"][0], (0, 0, 0), np.nan,
                                                                                np.float32))),
                                  "MNIST IDX files hold uint8 data"),
    "x of the wrong width": (lambda a: ("train", "images", _idx_bytes(a["train"][0][:, :27, :])),
                             "x has 756 features but the network's input layer has 784"),
    "x and y of different lengths": (lambda a: ("train", "labels", _idx_bytes(a["train"][1][:199])),
                                     "holds 200 images but"),
}


@pytest.mark.parametrize("case", CLI_IDX_CASES)
def test_cli_bad_idx_files_one_line_exit_2_nothing_written(tmp_path, capsys, idx_arrays, case):
    broken, message = CLI_IDX_CASES[case]
    folder, out = tmp_path / "idx", tmp_path / "run"
    _write_idx_dir(folder, idx_arrays, broken(idx_arrays))
    before = _snapshot(folder)
    _assert_one_line_exit_2(capsys, ["train", *QUICK, "--dataset", "idx", "--idx-dir", str(folder), "--out",
                                     str(out)], message)
    assert not out.exists() and _snapshot(folder) == before


def test_cli_good_idx_files_train(tmp_path, idx_arrays):
    """The reference for the cases above: the same folder unbroken trains."""
    folder = tmp_path / "idx"
    _write_idx_dir(folder, idx_arrays)
    assert main(["train", *QUICK, "--dataset", "idx", "--idx-dir", str(folder), "--out", str(tmp_path / "r")]) == 0


# --- the run folder: unwritable or existing --out, --resume mistakes; nothing already written changes -----------


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    """A finished two-epoch run (momentum 0.5); tests copy it or check that it stays byte-for-byte the same."""
    out = tmp_path_factory.mktemp("existing") / "run"
    assert main(["train", "--sizes", "784,10,10", "--epochs", "2", "--momentum", "0.5", "--no-progress",
                 "--no-figures", "--out", str(out)]) == 0
    return out


RUN_CASES = {
    "existing --out": (lambda r: ["train", *QUICK, "--out", r], "already exists and is not empty; pass --overwrite"),
    "existing --out, --overwrite but bad eta": (lambda r: ["train", *QUICK, "--out", r, "--overwrite", "--eta", "0"],
                                                "--eta must be a positive finite number"),
    "existing --out, --overwrite but bad batch": (
        lambda r: ["train", *QUICK, "--out", r, "--overwrite", "--batch-size", "0"], "--batch-size must be"),
    "resume: another network shape": (lambda r: ["train", "--resume", r, "--sizes", "784,20,10"],
                                      "--sizes 784,20,10 conflicts with the run's saved sizes 784,10,10"),
    "resume: another learning rate": (lambda r: ["train", "--resume", r, "--eta", "0.1"],
                                      "--learning-rate 0.1 conflicts with the run's saved learning_rate 3.0"),
    "resume: another momentum": (lambda r: ["train", "--resume", r, "--momentum", "0.9"],
                                 "only --epochs, --idx-dir, --data-dir, --max-growth may change"),
    "resume: fewer epochs than done": (lambda r: ["train", "--resume", r, "--epochs", "1"],
                                       "--epochs 1 is fewer than the 2 epochs"),
    "resume: bad epochs": (lambda r: ["train", "--resume", r, "--epochs", "-1"], "epochs must be an integer >= 0"),
    "resume with --out": (lambda r: ["train", "--resume", r, "--out", r + "2"],
                          "--out cannot be combined with --resume"),
    "resume with --overwrite": (lambda r: ["train", "--resume", r, "--overwrite"], "drop --overwrite"),
    "evaluate: missing data": (lambda r: ["evaluate", r, "--dataset", "idx", "--idx-dir", r + "/none"],
                               "IDX folder not found"),
}


@pytest.mark.parametrize("case", RUN_CASES)
def test_cli_mistakes_leave_an_existing_run_folder_byte_for_byte(run_folder, capsys, case):
    argv, message = RUN_CASES[case]
    before = _snapshot(run_folder)
    assert len(before) >= 6  # config, history, params, plot, two checkpoints
    _assert_one_line_exit_2(capsys, argv(str(run_folder)), message)
    assert _snapshot(run_folder) == before


def _copy(run_folder, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run_folder, copy)
    return copy


def test_cli_damaged_checkpoint_is_refused_naming_the_previous_one(run_folder, tmp_path, capsys):
    run = _copy(run_folder, tmp_path)
    newest = latest_checkpoint(run)
    data = bytearray(open(newest, "rb").read())
    data[len(data) // 2] ^= 0x01
    open(newest, "wb").write(bytes(data))
    before = _snapshot(run)
    err = _assert_one_line_exit_2(capsys, ["train", "--resume", str(run), "--epochs", "3"], "is damaged")
    assert "epoch-000001.npz" in err and "to resume from it" in err
    assert _snapshot(run) == before


def test_cli_checkpoint_of_another_network_is_refused(run_folder, tmp_path, capsys):
    run, other = _copy(run_folder, tmp_path), tmp_path / "other"
    assert main(["train", "--sizes", "784,20,10", "--epochs", "3", "--no-progress", "--no-figures",
                 "--out", str(other)]) == 0
    shutil.copy(latest_checkpoint(other), run / "checkpoints")  # a foreign epoch-000003.npz, now the newest
    before = _snapshot(run)
    _assert_one_line_exit_2(capsys, ["train", "--resume", str(run), "--epochs", "4"],
                            "was written by another run than")
    assert _snapshot(run) == before


@pytest.mark.parametrize("what", ["missing", "empty folder", "a file"])
def test_cli_resume_of_something_that_is_not_a_run_folder(tmp_path, capsys, what):
    target = tmp_path / "x"
    if what == "empty folder":
        target.mkdir()
    elif what == "a file":
        target.write_text("hello")
    message = {"missing": "run folder not found", "empty folder": "is not a gd-jax run folder",
               "a file": "run folder not found"}[what]
    _assert_one_line_exit_2(capsys, ["train", "--resume", str(target)], message)


@pytest.mark.parametrize("where", ["under a file", "is a file"])
def test_cli_unwritable_out_is_refused_before_anything_is_written(tmp_path, capsys, where):
    blocker = tmp_path / "blocker"
    blocker.write_text("keep me")
    out = blocker / "run" if where == "under a file" else blocker
    _assert_one_line_exit_2(capsys, ["train", *QUICK, "--out", str(out)], "is a file, not a folder; choose another")
    assert blocker.read_text() == "keep me"


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc")
def test_cli_out_where_no_one_can_create_a_folder(capsys):
    """/proc takes no new folders, root's neither: refused by the access check or when creating it."""
    err = _assert_one_line_exit_2(capsys, ["train", *QUICK, "--out", "/proc/gd-jax-test-run"], "choose another --out")
    assert "/proc/gd-jax-test-run" in err and not os.path.exists("/proc/gd-jax-test-run")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can write into a read-only folder")
def test_cli_read_only_parent_is_refused(tmp_path, capsys):
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        _assert_one_line_exit_2(capsys, ["train", *QUICK, "--out", str(parent / "run")], "(Permission denied)")
    finally:
        parent.chmod(0o755)


def test_debug_shows_the_traceback_and_keeps_the_status(tmp_path, capsys):
    assert main(["--debug", "train", *QUICK, "--eta", "0", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.rstrip().endswith("the textbook uses 3.0")


def test_a_real_process_prints_one_line_and_exits_2(tmp_path):
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "gd_jax", "train", "--eta", "nan", "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "--eta must be a positive finite number, got nan" in done.stderr
    assert not out.exists()


def test_checkpoint_state_restores_through_the_cli_config(run_folder):
    """The reference state for the byte-for-byte cases: the run folder's newest checkpoint loads."""
    params = gd.init_mlp(KEY, [784, 10, 10])
    ckpt = load_checkpoint(run_folder, like=gd.TrainState(params, gd.sgd(3.0, momentum=0.5).init(params)))
    assert ckpt.epoch == 2 and ckpt.config["momentum"] == 0.5


def test_an_empty_out_is_refused_by_name(capsys):
    _assert_one_line_exit_2(capsys, ["train", *QUICK, "--out", ""], "--out is empty; pass a folder name")


def test_a_run_that_chose_on_the_test_set_before_the_rule_still_resumes(tmp_path, capsys, monkeypatch):
    """Runs written before --patience needed --validation keep resuming as they started."""
    import gd_jax.cli.train as train_command

    out = tmp_path / "old"
    with monkeypatch.context() as m:
        m.setattr(train_command, "_check_selection", lambda settings: None)  # the CLI before the rule
        assert main(["train", *QUICK, "--patience", "3", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(out), "--epochs", "2", "--no-progress", "--no-figures"]) == 0
    history = gd.History.from_dict(json.loads((out / "history.json").read_text()))
    assert len(history) == 2 and history.best_epoch is not None


def test_devices_that_do_not_divide_the_batch_name_the_batch_size_flag(tmp_path):
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "gd_jax", "train", *QUICK, "--devices", "3", "--device", "cpu",
                           "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == "", done.stderr
    assert done.stderr.count("\n") == 1
    assert "--batch-size 10 does not divide evenly over 3 devices; use 9 or 12" in done.stderr, done.stderr
    assert not out.exists()
