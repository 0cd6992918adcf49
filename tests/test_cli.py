import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

import gd_jax as gd
from gd_jax.cli import main

DRAWN = ["--sizes", "784,16,10", "--epochs", "2", "--no-progress"]
QUICK = [*DRAWN, "--no-figures"]  # where the figures are not what is tested: about 2 s less a run


def test_train_writes_a_complete_run_folder(tmp_path, capsys, mnist_sample):
    out = tmp_path / "run"
    assert main(["train", *DRAWN, "--out", str(out), "--momentum", "0.5", "--cost", "cross-entropy",
                 "--eta", "0.5", "--init", "scaled"]) == 0
    files = sorted(p for p in os.listdir(out) if not p.startswith("checkpoint"))
    events = [p for p in files if p.startswith("events.out.tfevents.")]
    assert len(events) == 1 and [p for p in files if p not in events] == [
        "config.json", "confusion.png", "hidden_weights.png", "history.json", "history.png", "misclassified.png",
        "params.npz"]
    history = json.loads((out / "history.json").read_text())
    config = json.loads((out / "config.json").read_text())
    assert config["sizes"] == [784, 16, 10] and config["learning_rate"] == 0.5 and config["momentum"] == 0.5
    assert history["config"] == config
    assert [e["epoch"] for e in history["epochs"]] == [1, 2]
    assert set(history["epochs"][0]) >= {"epoch", "train_cost", "eval_cost", "eval_accuracy", "seconds"}
    # The saved params give exactly the accuracy the run reported, through the public loader.
    params = gd.load_params(out / "params.npz")
    assert gd.accuracy(params, mnist_sample[1]) == pytest.approx(history["test_accuracy"], abs=1e-7)
    assert history["epochs"][-1]["eval_accuracy"] == pytest.approx(history["test_accuracy"], abs=1e-7)
    assert f"run folder {out}" in capsys.readouterr().out
    # The PNG is a real image: its signature and a plausible size.
    png = (out / "history.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_cli_run_equals_the_python_api(tmp_path):
    out = tmp_path / "run"
    assert main(["train", *QUICK, "--seed", "5", "--out", str(out)]) == 0
    init_key, shuffle_key = jax.random.split(jax.random.key(5))
    train, test = gd.load_mnist("sample")
    params, _ = gd.fit(gd.init_mlp(init_key, [784, 16, 10]), train, eval_data=test, epochs=2, batch_size=10,
                       optimizer=gd.sgd(3.0), cost=gd.quadratic_cost, key=shuffle_key)
    saved = gd.load_params(out / "params.npz")
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(saved)):
        np.testing.assert_array_equal(a, b)


def test_evaluate_reads_a_run_folder(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *QUICK, "--out", str(out)]) == 0
    trained = json.loads((out / "history.json").read_text())["test_accuracy"]
    capsys.readouterr()
    assert main(["evaluate", str(out)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["test_accuracy"] == pytest.approx(trained, abs=1e-7) and report["n"] == 10_000


def test_refuses_to_overwrite_a_run_folder_unless_told(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *QUICK, "--out", str(out)]) == 0
    before = {p: (out / p).read_bytes() for p in os.listdir(out) if (out / p).is_file()}
    capsys.readouterr()
    assert main(["train", *QUICK, "--out", str(out), "--seed", "9"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already exists" in err and "--overwrite" in err
    assert {p: (out / p).read_bytes() for p in before} == before
    assert main(["train", *QUICK, "--out", str(out), "--seed", "9", "--overwrite"]) == 0
    assert (out / "params.npz").read_bytes() != before["params.npz"]


@pytest.mark.parametrize("args", [["--sizes", "100,30,10"], ["--sizes", "784,30,5"], ["--eta", "-1"],
                                  ["--batch-size", "0"], ["--sizes", "784,x"], ["--cost", "hinge"]])
def test_bad_arguments_give_one_line_and_exit_2(tmp_path, capsys, args):
    out = tmp_path / "run"
    assert main(["train", "--no-progress", "--out", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gd-jax") and err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()  # validated before anything is written


@pytest.mark.slow
def test_default_command_reaches_the_textbook_accuracy(tmp_path, check_recorded_accuracy):
    """`gd-jax train` as the README runs it: all defaults, as a subprocess, via python -m."""
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "gd_jax", "train", "--out", str(out)], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    history = json.loads((out / "history.json").read_text())
    assert history["config"]["sizes"] == [784, 30, 10] and len(history["epochs"]) == 30
    assert history["config"]["learning_rate"] == 3.0 and history["config"]["batch_size"] == 10
    check_recorded_accuracy(history["test_accuracy"], "gd-jax train")


def test_full_mnist_offline_without_data_fails_at_once_with_the_three_ways(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--no-progress", "--dataset", "mnist", "--data-dir", str(tmp_path / "tfds"),
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "--data-dir" in err and "--idx-dir" in err and "--download" in err
    assert not out.exists()


def test_run_files_get_the_usual_permissions(tmp_path):
    out = tmp_path / "run"
    old = os.umask(0o022)
    try:
        assert main(["train", *DRAWN, "--epochs", "1", "--out", str(out)]) == 0
    finally:
        os.umask(old)
    for name in ("config.json", "history.json", "params.npz", "history.png"):
        assert (out / name).stat().st_mode & 0o777 == 0o644, name


# --- issue 8: inputs and messages -------------------------------------------------------------------------------


def test_any_seed_in_range_trains_with_its_own_key_and_others_are_refused(tmp_path, capsys):
    """--seed 2**32 + 2 was --seed 2 (32-bit truncation), 2**63 a traceback, -1 accepted."""
    big = tmp_path / "big"
    assert main(["train", *QUICK, "--epochs", "1", "--seed", str(2**32 + 2), "--out", str(big)]) == 0
    assert main(["train", *QUICK, "--epochs", "1", "--seed", "2", "--out", str(tmp_path / "two")]) == 0
    a, b = gd.load_params(big / "params.npz"), gd.load_params(tmp_path / "two" / "params.npz")
    assert not np.array_equal(a[0]["w"], b[0]["w"])
    assert main(["train", *QUICK, "--epochs", "0", "--seed", str(2**63), "--out", str(tmp_path / "huge")]) == 0
    capsys.readouterr()
    for seed in ("-1", str(2**64)):
        assert main(["train", *QUICK, "--seed", seed, "--out", str(tmp_path / "bad")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "--seed must be an integer from 0 to 2**64 - 1" in err and seed in err
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("args", [["--idx-dir", "somewhere"], ["--data-dir", "tfds"], ["--download"]])
def test_data_folders_without_a_dataset_that_reads_them_are_refused(tmp_path, capsys, args):
    assert main(["train", *QUICK, "--out", str(tmp_path / "run"), *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{args[0]} is " in err and "--dataset" in err
    assert not (tmp_path / "run").exists()


def test_evaluate_uses_the_runs_own_data_by_default(tmp_path, capsys, mnist_sample):
    train, test = mnist_sample
    idx = tmp_path / "idx"
    idx.mkdir()
    images = lambda d, n: np.rint(np.asarray(d.x[:n]) * 255).astype(np.uint8).reshape(n, 28, 28)  # noqa: E731
    gd.write_idx(idx / "train-images-idx3-ubyte", images(train, 300))
    gd.write_idx(idx / "train-labels-idx1-ubyte", np.asarray(train.y[:300], np.uint8))
    gd.write_idx(idx / "t10k-images-idx3-ubyte", images(test, 120))
    gd.write_idx(idx / "t10k-labels-idx1-ubyte", np.asarray(test.y[:120], np.uint8))
    out = tmp_path / "run"
    assert main(["train", *QUICK, "--epochs", "1", "--dataset", "idx", "--idx-dir", str(idx), "--out", str(out)]) == 0
    trained = json.loads((out / "history.json").read_text())["test_accuracy"]
    capsys.readouterr()
    assert main(["evaluate", str(out)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["dataset"] == "idx" and report["n"] == 120
    assert report["test_accuracy"] == pytest.approx(trained, abs=1e-7)
    assert main(["evaluate", str(out), "--dataset", "sample"]) == 0  # told otherwise: the sample's 10,000
    assert json.loads(capsys.readouterr().out)["n"] == 10_000


@pytest.mark.parametrize("how", ["JAX_PLATFORMS=cuda", "--device gpu", "--device tpu"])
def test_a_platform_jax_cannot_use_gives_one_line_naming_it_and_the_install(tmp_path, how):
    env = dict(os.environ)
    args = ["train", "--epochs", "0", "--out", str(tmp_path / "run")]
    if how.startswith("JAX_PLATFORMS"):
        env["JAX_PLATFORMS"] = "cuda"
    else:
        args += how.split()
    if jax.default_backend() != "cpu":  # JAX picks an accelerator by default when it has one
        pytest.skip(f"this machine has an accelerator ({jax.default_backend()})")
    done = subprocess.run([sys.executable, "-m", "gd_jax", *args], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    platform = "tpu" if "tpu" in how else "cuda"
    assert f"cannot use the '{platform}' platform" in done.stderr and "--device cpu" in done.stderr
    assert ('"jax[cuda12]"' if platform == "cuda" else '"jax[tpu]"') in done.stderr
    assert not (tmp_path / "run").exists()


def test_device_cpu_trains_on_the_cpu(tmp_path):
    out = tmp_path / "run"
    assert main(["train", *QUICK, "--epochs", "1", "--device", "cpu", "--out", str(out)]) == 0
    # jax names CPU devices "cpu:0" (0.10) or "TFRT_CPU_0" (0.8): the platform is in the name either way.
    assert "cpu" in json.loads((out / "config.json").read_text())["segments"][0]["device"].lower()


def test_a_params_file_of_python_objects_is_refused_without_pointing_at_pickle(tmp_path, capsys):
    path = tmp_path / "params.npz"
    np.savez(path, **{"layer0/w": np.array([{"a": 1}], dtype=object), "layer0/b": np.zeros(1)})
    with pytest.raises(ValueError, match="holds Python objects") as error:
        gd.load_params(path)
    assert "pickle" not in str(error.value)
    assert main(["evaluate", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pickle" not in err and str(path) in err


def test_an_internal_error_is_a_bug_with_a_traceback_not_bad_input(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise ValueError("an internal inconsistency")

    monkeypatch.setattr(gd, "evaluate", broken)
    with pytest.raises(ValueError, match="an internal inconsistency"):
        main(["train", *QUICK, "--epochs", "1", "--out", str(tmp_path / "run")])


def test_max_growth_overrides_divergence_detection(tmp_path, capsys):
    """eta 1e4 grows the parameters 44x in epoch 1: a divergence by default, trained on with --max-growth off."""
    assert main(["train", *QUICK, "--epochs", "1", "--eta", "1e4", "--out", str(tmp_path / "stop")]) == 3
    assert main(["train", *QUICK, "--epochs", "1", "--eta", "1e4", "--max-growth", "off",
                 "--out", str(tmp_path / "on")]) == 0
    config = json.loads((tmp_path / "on" / "config.json").read_text())
    assert config["max_growth"] is None
    assert main(["train", *QUICK, "--epochs", "1", "--eta", "1e4", "--max-growth", "100",
                 "--out", str(tmp_path / "high")]) == 0
    capsys.readouterr()
    assert main(["train", *QUICK, "--max-growth", "1", "--out", str(tmp_path / "bad")]) == 2
    assert "--max-growth must be a number > 1 or 'off', got 1.0" in capsys.readouterr().err


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"gd-jax {gd.__version__}"
    done = subprocess.run([sys.executable, "-m", "gd_jax", "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == f"gd-jax {gd.__version__}"


@pytest.mark.parametrize(("argv", "status"), [(["--version"], 0), (["train", "--epochs", "-1"], 2)])
def test_the_program_exits_with_mains_status_and_its_collector_frozen(argv, status):
    """``run`` (the console script, ``python -m gd_jax``) freezes what is alive before the
    interpreter's final collection, which it would otherwise spend on JAX's objects."""
    script = ("import atexit, gc, sys\n"
              "atexit.register(lambda: print('frozen:', gc.get_freeze_count() > 0))\n"
              f"sys.argv = ['gd-jax', *{argv!r}]\n"
              "from gd_jax.cli.main import run\n"
              "run()\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == status and done.stdout.strip().splitlines()[-1] == "frozen: True"


# --- issue 8: output a person reads -----------------------------------------------------------------------------


def test_without_a_terminal_one_plain_labelled_line_per_epoch(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--sizes", "784,16,10", "--epochs", "2", "--validation", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert "\r" not in captured.err and len(lines) == 2
    history = json.loads((out / "history.json").read_text())
    for line, record in zip(lines, history["epochs"]):
        assert line.startswith(f"epoch {record['epoch']}/2: train cost {record['train_cost']:.4f}, train accuracy "
                               f"{record['train_accuracy']:.4f}, validation accuracy {record['eval_accuracy']:.4f}, "
                               f"{record['seconds']:.2f} s training, ")
    # --no-progress silences them.
    assert main(["train", *QUICK, "--epochs", "2", "--out", str(tmp_path / "quiet")]) == 0
    assert capsys.readouterr().err == ""


def test_closing_line_counts_epochs_and_separates_training_from_compiling(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *QUICK, "--epochs", "1", "--out", str(out)]) == 0
    line = capsys.readouterr().out
    history = json.loads((out / "history.json").read_text())
    assert "1 epoch trained in " in line and "1 epochs" not in line
    assert f"trained in {history['epochs'][0]['seconds']:.1f} s, compiling " in line
    assert f"compiling {history.get('compile_seconds', 0.0):.1f} s" in line


def test_config_records_the_command_time_versions_and_commit(tmp_path):
    import datetime
    import time

    import jaxlib

    out = tmp_path / "run"
    before = time.time()
    argv = ["train", *QUICK, "--epochs", "1", "--out", str(out)]
    assert main(argv) == 0
    segment, = json.loads((out / "config.json").read_text())["segments"]
    assert segment["command"] == ["gd-jax", *argv]
    assert segment["jaxlib"] == jaxlib.__version__ and segment["jax"] == jax.__version__
    started = datetime.datetime.fromisoformat(segment["started"]).timestamp()
    assert before - 1 <= started <= time.time()
    assert (segment["first_epoch"], segment["last_epoch"]) == (1, 1)
    source = os.path.dirname(os.path.dirname(os.path.abspath(gd.__file__)))
    git = subprocess.run(["git", "-C", source, "rev-parse", "HEAD"], capture_output=True, text=True)
    if os.path.exists(os.path.join(source, ".git")) and git.returncode == 0:
        assert segment["git_commit"] == git.stdout.strip()
    else:
        assert segment["git_commit"] is None


def test_history_png_for_the_epochs_before_a_divergence_and_none_without_epochs(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *QUICK, "--epochs", "2", "--max-growth", "off", "--out", str(out)]) == 0
    assert not (out / "history.png").exists()
    # Resumed with a threshold no epoch meets: it diverges in epoch 3, after two good epochs.
    assert main(["train", "--resume", str(out), "--epochs", "4", "--max-growth", "1.000001", "--no-progress"]) == 3
    png = (out / "history.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    history = json.loads((out / "history.json").read_text())
    assert history["stop_reason"] == "diverged" and len(history["epochs"]) == 2
    # No epoch at all: no figure (the README says so), and everything else is there.
    empty = tmp_path / "empty"
    assert main(["train", *QUICK, "--epochs", "0", "--out", str(empty)]) == 0
    assert sorted(os.listdir(empty)) == ["checkpoints", "config.json", "history.json", "params.npz"]


@pytest.mark.slow
def test_the_persistent_compilation_cache_fills_its_folder_and_can_be_turned_off(tmp_path):
    cache = tmp_path / "cache"
    env = {**os.environ, "GD_JAX_COMPILE_CACHE": str(cache)}
    argv = [sys.executable, "-m", "gd_jax", "train", *QUICK, "--epochs", "1"]
    done = subprocess.run([*argv, "--out", str(tmp_path / "a")], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert len(os.listdir(cache)) >= 3  # the epoch, the evaluation, the initialisation, ...
    off = tmp_path / "off"
    for extra_env, extra_args in (({"GD_JAX_COMPILE_CACHE": "off"}, []),
                                  ({"GD_JAX_COMPILE_CACHE": str(off)}, ["--no-compile-cache"])):
        done = subprocess.run([*argv, *extra_args, "--out", str(tmp_path / f"b{len(extra_args)}")],
                              env={**os.environ, **extra_env}, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
    assert not off.exists()


# --- L2 regularisation and early stopping ----------------------------------------------------------------------


def test_lmbda_is_the_textbooks_weight_decay(tmp_path, mnist_sample):
    """Reference: optax's weight decay on the weights only, lambda / n, chained before plain SGD, unregularised cost."""
    import optax

    out = tmp_path / "run"
    assert main(["train", *QUICK, "--epochs", "2", "--eta", "0.5", "--cost", "cross-entropy", "--lmbda", "5",
                 "--seed", "3", "--out", str(out)]) == 0
    train = mnist_sample[0]
    init_key, shuffle_key = jax.random.split(jax.random.key(3))
    params = gd.init_mlp(init_key, [784, 16, 10])
    weights_only = [{"w": True, "b": False} for _ in params]
    decay = optax.chain(optax.add_decayed_weights(5 / train.size, mask=weights_only), optax.sgd(0.5))
    reference, _ = gd.fit(params, train, epochs=2, batch_size=10, optimizer=decay, cost=gd.cross_entropy_cost,
                          key=shuffle_key)
    saved = gd.load_params(out / "params.npz")
    for a, b in zip(jax.tree.leaves(reference), jax.tree.leaves(saved)):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6)
    plain, _ = gd.fit(params, train, epochs=2, batch_size=10, optimizer=gd.sgd(0.5), cost=gd.cross_entropy_cost,
                      key=shuffle_key)
    assert np.abs(np.asarray(plain[0]["w"]) - np.asarray(saved[0]["w"])).max() > 1e-3  # the decay did something
    assert json.loads((out / "config.json").read_text())["lmbda"] == 5.0


def test_patience_stops_early_and_keeps_the_best_epochs_params(tmp_path, capsys, mnist_sample):
    out = tmp_path / "run"
    assert main(["train", *QUICK, "--epochs", "12", "--validation", "--patience", "2", "--seed", "2",
                 "--out", str(out)]) == 0
    history = json.loads((out / "history.json").read_text())
    accuracies = [e["eval_accuracy"] for e in history["epochs"]]
    best = int(np.argmax(accuracies)) + 1  # numpy's first maximum: the reference for the best epoch
    assert history["best_epoch"] == best
    if history["stop_reason"] == "early_stopping":
        assert len(accuracies) == best + 2
    line = capsys.readouterr().out
    assert f"params.npz holds epoch {best}'s parameters" in line
    # The Python API with the same settings returns the same best parameters.
    train, validation, _ = gd.load_mnist("sample", validation=True)
    init_key, shuffle_key = jax.random.split(jax.random.key(2))
    params, ref_history = gd.fit(gd.init_mlp(init_key, [784, 16, 10]), train, eval_data=validation, epochs=12,
                                 batch_size=10, optimizer=gd.sgd(3.0), cost=gd.quadratic_cost, key=shuffle_key,
                                 patience=2)
    assert ref_history.best_epoch == best
    saved, kept = gd.load_params(out / "params.npz"), gd.load_params(out / f"best-epoch-{best:06d}.npz")
    for a, b, c in zip(jax.tree.leaves(params), jax.tree.leaves(saved), jax.tree.leaves(kept)):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)


def test_patience_resumes_exactly(tmp_path):
    short, long = tmp_path / "short", tmp_path / "long"
    args = [*QUICK, "--validation", "--patience", "3", "--seed", "5"]
    assert main(["train", *args, "--epochs", "3", "--out", str(short)]) == 0
    assert main(["train", "--resume", str(short), "--epochs", "8", "--no-progress"]) == 0
    assert main(["train", *args, "--epochs", "8", "--out", str(long)]) == 0
    ha, hb = (json.loads((d / "history.json").read_text()) for d in (short, long))
    assert [e["eval_accuracy"] for e in ha["epochs"]] == [e["eval_accuracy"] for e in hb["epochs"]]
    assert ha["best_epoch"] == hb["best_epoch"] and ha["stop_reason"] == hb["stop_reason"]
    for a, b in zip(jax.tree.leaves(gd.load_params(short / "params.npz")),
                    jax.tree.leaves(gd.load_params(long / "params.npz"))):
        np.testing.assert_array_equal(a, b)
    assert [n for n in os.listdir(short) if n.startswith("best-epoch-")] == [f"best-epoch-{hb['best_epoch']:06d}.npz"]


@pytest.mark.parametrize("activation, saturating", [("sigmoid", True), ("tanh", True), ("relu", False)])
def test_divergence_message_speaks_in_flags_and_says_saturating_only_for_bounded_neurons(activation, saturating):
    from gd_jax._src.train import DivergenceError
    from gd_jax.cli.train import _divergence

    e = DivergenceError("library words", epoch=2, history=gd.History(), last_finite=None, growth=44.0,
                        max_growth=10.0, cost_finite=True)
    message, fact = _divergence(e, {"learning_rate": 1e4, "activation": activation})
    assert ("saturating" in message) == saturating
    assert "--max-growth 10" in message and "--eta 1000" in message and "max_growth=" not in message
    assert fact == {"epoch": 2, "reason": "growth", "growth": 44.0, "max_growth": 10.0, "cost_finite": True,
                    "message": "library words"}
    nan = DivergenceError("nan", epoch=1, history=gd.History(), last_finite=None, growth=float("nan"),
                          max_growth=10.0, cost_finite=False)
    message, fact = _divergence(nan, {"learning_rate": 3.0, "activation": activation})
    assert fact["reason"] == "nonfinite" and fact["growth"] is None and "NaN or infinite" in message


def test_eta_schedule_halves_as_the_api_does_and_resumes_exactly(tmp_path, capsys):
    short, long = tmp_path / "short", tmp_path / "long"
    args = [*QUICK, "--validation", "--eta-schedule", "1", "--seed", "2"]
    assert main(["train", *args, "--epochs", "25", "--out", str(long)]) == 0
    history = json.loads((long / "history.json").read_text())
    # Each record holds the scale its epoch trained with: the last trained with 1/64, then it fell to 1/128.
    assert history["stop_reason"] == "eta_schedule" and history["epochs"][-1]["learning_rate_scale"] == 1 / 64
    assert "stopped by the schedule: eta fell to 1/128 of 3" in capsys.readouterr().out
    # The reference: fit's own schedule through the Python API.
    train, validation, _ = gd.load_mnist("sample", validation=True)
    init_key, shuffle_key = jax.random.split(jax.random.key(2))
    params, ref = gd.fit(gd.init_mlp(init_key, [784, 16, 10]), train, eval_data=validation, epochs=25,
                         batch_size=10, optimizer=gd.sgd(3.0), cost=gd.quadratic_cost, key=shuffle_key, eta_halving=1)
    assert [e["learning_rate_scale"] for e in history["epochs"]] == ref["learning_rate_scale"]
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(gd.load_params(long / "params.npz"))):
        np.testing.assert_array_equal(a, b)
    # Stopped after 3 epochs and resumed: the schedule's state (the scale) comes back from the checkpoint.
    assert main(["train", *args, "--epochs", "3", "--out", str(short)]) == 0
    assert main(["train", "--resume", str(short), "--epochs", "25", "--no-progress"]) == 0
    resumed = json.loads((short / "history.json").read_text())
    assert [e["learning_rate_scale"] for e in resumed["epochs"]] == ref["learning_rate_scale"]
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(gd.load_params(short / "params.npz"))):
        np.testing.assert_array_equal(a, b)
