"""The experiment and benchmark scripts run end to end (tiny settings) and agree with the API.

Each experiment runs as its README command with ``--quick`` on the embedded sample; the test
checks that results.md, results.json and the figures were written, and that the numbers in
results.json are what ``gd.fit`` (or numpy's backpropagation, or a closed form) computes for
the same seed, not a fixed accuracy.
"""

import json
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import gd_jax as gd

ROOT = Path(__file__).resolve().parents[1]
FULL_MNIST = ROOT.parent / "shared" / "data" / "mnist-full"  # developers and CI only
VMAP_ROUNDING = 3e-4  # 3 of 10,000 test digits: a batched product may round differently from a single one


def _run(*args):
    done = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _experiment(name, tmp_path, *args, figures=()):
    """Runs experiments/<name>.py --quick into a fresh folder; checks its files; returns results.json."""
    out = tmp_path / name
    _run(f"experiments/{name}.py", "--quick", "--out", str(out), *args)
    assert (out / "results.md").read_text().startswith("# Experiment")
    for figure in figures:
        assert (out / figure).read_bytes()[:4] == b"\x89PNG", figure
    return json.loads((out / "results.json").read_text()), (out / "results.md").read_text()


@pytest.fixture(scope="module")
def sample():
    return gd.load_mnist("sample", validation=True)  # (train, validation, test), as the scripts load it


@pytest.fixture(scope="module")
def experiments_on_path():
    sys.path.insert(0, str(ROOT / "experiments"))
    yield
    sys.path.remove(str(ROOT / "experiments"))


def _fit_curve(seed, sizes, train, test, *, epochs, eta, cost=gd.quadratic_cost, init="normal", batch_size=10):
    init_key, shuffle_key = jax.random.split(jax.random.key(seed))  # as the CLI and the scripts derive them
    _, history = gd.fit(gd.init_mlp(init_key, sizes, init), train, eval_data=test, epochs=epochs,
                        batch_size=batch_size, optimizer=gd.sgd(eta), cost=cost, key=shuffle_key)
    return history


@pytest.mark.slow
def test_chapter1_reports_what_fit_computes(tmp_path, sample):
    results, md = _experiment("chapter1", tmp_path, "--only", "textbook", "--seeds", "1", "--epochs", "2",
                              figures=["accuracy.png"])
    run = results["configs"]["textbook"]["runs"][0]
    train, _, test = sample
    history = _fit_curve(0, [784, 30, 10], train, test, epochs=2, eta=3.0)
    np.testing.assert_allclose(run["test_accuracy_per_epoch"][1:], history["eval_accuracy"], atol=VMAP_ROUNDING)
    np.testing.assert_allclose(run["train_cost_per_epoch"], history["train_cost"], rtol=1e-3)
    assert run["peak_accuracy"] == max(run["test_accuracy_per_epoch"][1:])
    # The stall diagnosis: a digit is dead exactly when its neuron's largest test activation is below 0.5.
    final = run["output_neurons_per_epoch"][-1]
    assert run["dead_digits"] == [j for j, a in enumerate(final["max_activation"]) if a < 0.5]
    assert sum(final["predicted"]) == test.size
    assert "| textbook | 95.42% |" in md


@pytest.mark.slow
def test_chapter3_l2_members_equal_fit_with_l2(tmp_path, sample):
    results, md = _experiment("chapter3", tmp_path, "--only", "l2-30", "--seeds", "1",
                              figures=["curves.png", "overfitting.png", "initialisation.png", "schedule.png"])
    block = results["configs"]["l2-30"]
    train, _, test = sample
    history = _fit_curve(0, [784, 30, 10], train, test, epochs=2, eta=0.5,
                         cost=gd.with_l2(gd.cross_entropy_cost, 5.0, train.size))
    np.testing.assert_allclose(block["curves"]["test_accuracy"][0], history["eval_accuracy"], atol=VMAP_ROUNDING)
    np.testing.assert_allclose(block["curves"]["train_cost"][0], history["train_cost"], rtol=1e-3)
    assert "| l2-30 | 96.49% |" in md


def test_early_stopping_read_off_the_curves_is_what_fit_patience_returns(sample, experiments_on_path):
    import chapter3

    train, validation, test = sample
    init_key, shuffle_key = jax.random.split(jax.random.key(3))
    test_accuracy = []
    params, history = gd.fit(gd.init_mlp(init_key, [784, 10, 10]), train.take(500), eval_data=validation, epochs=15,
                             batch_size=10, optimizer=gd.sgd(3.0), cost=gd.quadratic_cost, key=shuffle_key,
                             patience=1, on_epoch_end=lambda end: test_accuracy.append(gd.accuracy(end.state.params,
                                                                                                   test)))
    assert history.stop_reason == "early_stopping"  # the case under test: it did stop
    ours = chapter3.early_stopping(np.array(history["eval_accuracy"]), np.array(test_accuracy), 1)
    assert ours["best_epoch"] == history.best_epoch
    assert ours["stopped_after"] == len(history)
    assert ours["test_accuracy"] == pytest.approx(gd.accuracy(params, test), abs=1e-7)


def test_eta_halving_of_the_group_trainer_matches_fit(sample, experiments_on_path):
    if not hasattr(gd, "scale_learning_rate"):
        pytest.skip("fit's eta_halving needs gd.scale_learning_rate, not in this gd_jax yet")
    import common

    train, validation, _ = sample
    train = train.take(500)
    run = common.train_models((784, 10, 10), [common.Member(4, 3.0)], cost=gd.quadratic_cost, init="normal",
                              batch_size=10, epochs=12, train=train, evals={"validation": validation},
                              eta_halving=1, log=None)
    init_key, shuffle_key = jax.random.split(jax.random.key(4))
    _, history = gd.fit(gd.init_mlp(init_key, [784, 10, 10]), train, eval_data=validation, epochs=12, batch_size=10,
                        optimizer=gd.sgd(3.0), cost=gd.quadratic_cost, key=shuffle_key, eta_halving=1)
    n = len(history)
    np.testing.assert_allclose(run.curves["learning_rate_scale"][:n, 0], history["learning_rate_scale"])
    np.testing.assert_allclose(run.curves["validation_accuracy"][:n, 0], history["eval_accuracy"],
                               atol=VMAP_ROUNDING * 12)


@pytest.mark.slow
def test_modes_report_fit_histories(tmp_path, sample):
    results, _ = _experiment("modes", tmp_path, figures=["modes.png"])
    train, _, test = sample
    by_mode = {r["mode"]: r for r in results["modes"]}
    history = _fit_curve(0, [784, 30, 10], train.take(2000), test, epochs=2, eta=3.0)
    assert by_mode["mini-batch 10"]["test_accuracy"] == pytest.approx(history["eval_accuracy"], abs=1e-7)
    full = by_mode["full batch"]
    assert full["batch_size"] == 2000 and full["steps_per_epoch"] == 1
    assert all(np.diff(full["cumulative_seconds"]) > 0)


@pytest.mark.slow
def test_minibatch_noise_statistics_match_numpy_backprop(tmp_path, sample):
    results, _ = _experiment("minibatch_noise", tmp_path, "--epochs", "1", "--samples", "8",
                             figures=["error_vs_batch.png", "noise_scale.png"])
    start = results["snapshots"][0]
    assert start["epoch"] == 0
    train = sample[0].take(2000)
    init_key, _ = jax.random.split(jax.random.key(0))
    params = gd.init_mlp(init_key, [784, 30, 10])
    y = np.eye(10)[np.asarray(train.y)]
    flat = lambda grads: np.concatenate([np.ravel(v) for layer in grads for v in (layer["w"], layer["b"])])  # noqa: E731
    per_example = np.stack([flat(gd.backprop(params, train.x[i:i + 1], y[i:i + 1])) for i in range(train.size)])
    g = per_example.mean(axis=0)
    trace = np.mean(np.sum((per_example - g) ** 2, axis=1))
    assert start["grad_norm_sq"] == pytest.approx(np.sum(g**2), rel=1e-3)
    assert start["trace_sigma"] == pytest.approx(trace, rel=1e-3)
    assert start["noise_scale"] == pytest.approx(trace / np.sum(g**2), rel=2e-3)
    for e in start["errors"]:
        assert e["theory"] == pytest.approx(trace / e["m"] * (train.size - e["m"]) / (train.size - 1), rel=1e-3)


@pytest.mark.slow
def test_landscape_matches_closed_forms_and_fit(tmp_path, sample):
    results, _ = _experiment("landscape", tmp_path, "--grid", "5", figures=["bowl.png", "rosenbrock.png",
                                                                            "network_slice.png"])
    bowl = results["bowl"]
    for run in bowl["runs"]:
        assert run["max_error_vs_closed_form"] < 1e-5
    start = np.linalg.norm(bowl["start"])
    by_eta = {run["learning_rate"]: run for run in bowl["runs"]}
    assert by_eta[0.5]["final_distance"] < 0.01 * start and by_eta[2.05]["final_distance"] > start  # 2/L = 2
    s = results["network_slice"]
    train, _, test = sample
    init_key, shuffle_key = jax.random.split(jax.random.key(0))
    params, history = gd.fit(gd.init_mlp(init_key, [784, 30, 10]), train.take(2000), eval_data=test, epochs=2,
                             batch_size=10, optimizer=gd.sgd(3.0), cost=gd.quadratic_cost, key=shuffle_key)
    rows = train.take(2000)
    center = gd.quadratic_cost(params, rows.x, jax.nn.one_hot(rows.y, 10))
    assert s["center_cost"] == pytest.approx(float(center), rel=1e-5)
    assert s["test_accuracy"] == history["eval_accuracy"][-1]
    assert s["surface"][2][2] == pytest.approx(s["center_cost"], rel=1e-4)  # grid 5 over [-1, 1]: (0, 0) in the middle


@pytest.mark.slow
def test_learning_rate_sweep_reports_what_fit_computes(tmp_path, sample):
    results, _ = _experiment("learning_rate", tmp_path, figures=["accuracy_vs_eta.png", "curves.png"])
    train, _, test = sample
    row = {r["learning_rate"]: r for r in results["rates"]}[3.0]
    history = _fit_curve(0, [784, 30, 10], train, test, epochs=2, eta=3.0)
    np.testing.assert_allclose(row["test_accuracy_per_epoch"][0][1:], history["eval_accuracy"], atol=VMAP_ROUNDING)
    assert {r["regime"] for r in results["rates"]} <= {"too slow", "good", "too large"}
    assert row["final"]["mean"] == row["test_accuracy_per_epoch"][0][-1]


@pytest.mark.slow
def test_chapter1_quick_on_full_mnist(tmp_path):
    if not (FULL_MNIST / "t10k-labels-idx1-ubyte.gz").exists():
        pytest.skip(f"full MNIST is not at {FULL_MNIST} (developers and CI only)")
    results, _ = _experiment("chapter1", tmp_path, "--only", "textbook", "--seeds", "1", "--epochs", "1",
                             "--idx-dir", str(FULL_MNIST))
    setup = results["setup"]
    assert (setup["data"], setup["n_validation"], setup["n_test"]) == ("full MNIST", 10000, 10000)


@pytest.mark.parametrize("args, says", [
    (["--idx-dir", "no/such/folder"], "--idx-dir 'no/such/folder' is not a folder"),
    (["--seeds", "0"], "--seeds must be at least 1, got 0"),
    (["--only", "nope"], "--only 'nope' is not a configuration"),
])
def test_bad_input_is_one_line_and_status_2(tmp_path, args, says):
    done = subprocess.run([sys.executable, "experiments/chapter1.py", "--out", str(tmp_path / "o"), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and says in done.stderr.splitlines()[-1], done.stderr
    assert not (tmp_path / "o").exists()


def test_an_existing_result_is_never_overwritten_unless_told(tmp_path):
    out = tmp_path / "done"
    out.mkdir()
    (out / "results.md").write_text("earlier results")
    done = subprocess.run([sys.executable, "experiments/landscape.py", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "already exists and is not empty; pass --overwrite" in done.stderr
    assert (out / "results.md").read_text() == "earlier results"
