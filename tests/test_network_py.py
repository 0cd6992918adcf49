"""experiments/network_py.py: the textbook's network.py in float64 numpy, checked against network.py and gd_jax.

Three references, none of them the script's own code: the textbook's per-example ``backprop`` /
``update_mini_batch`` written out below as ``network.py`` writes it (column vectors, one example
at a time), ``gd.fit`` (float32, and float64 under ``jax.enable_x64``) for the gd_jax start, and
numpy's and Python's global generators seeded and drawn exactly as ``network.py`` draws them for
the numpy start.
"""

import itertools
import json
import random
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gd_jax as gd

ROOT = Path(__file__).resolve().parents[1]
SIZES = [[784, 30, 10], [784, 100, 10]]
# gd.fit in float32 against the float64 trainer after one epoch of 30 steps on 300 digits: each
# step rounds z (sums of 784 products of size ~1) and the update to float32's 6e-8 relative
# precision, and the errors accumulate over the steps; measured, the largest parameter difference
# is 1e-6 to 5e-6 (seeds 0-2, both shapes, 300 and 500 digits) while the parameters move by
# 0.4-0.9 in that epoch. 2e-5 leaves a margin of 4x over the worst seen and is still 10^4 times
# smaller than what one wrong gradient term (a missing sigma', a sum where a mean belongs) changes.
FLOAT32_TOLERANCE = 2e-5
FLOAT64_TOLERANCE = 1e-12  # two float64 implementations of one algorithm: only summation order differs


@pytest.fixture(scope="module")
def network_py():
    sys.path.insert(0, str(ROOT / "experiments"))
    import network_py

    yield network_py
    sys.path.remove(str(ROOT / "experiments"))


@pytest.fixture(scope="module")
def digits():
    """300 real training digits of the embedded sample, the script's inputs (float32 pixels, one-hot targets)."""
    train, _ = gd.load_mnist("sample")
    train = train.take(300)
    return train, np.asarray(train.x), np.eye(10)[np.asarray(train.y)]


# --- network.py, as the textbook writes it (column vectors, one example at a time) --------------------------

def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _sigmoid_prime(z):
    return _sigmoid(z) * (1 - _sigmoid(z))


def _backprop(biases, weights, x, y):
    nabla_b = [np.zeros(b.shape) for b in biases]
    nabla_w = [np.zeros(w.shape) for w in weights]
    activation, activations, zs = x, [x], []
    for b, w in zip(biases, weights):
        z = np.dot(w, activation) + b
        zs.append(z)
        activation = _sigmoid(z)
        activations.append(activation)
    delta = (activations[-1] - y) * _sigmoid_prime(zs[-1])
    nabla_b[-1] = delta
    nabla_w[-1] = np.dot(delta, activations[-2].transpose())
    for layer in range(2, len(weights) + 1):
        delta = np.dot(weights[-layer + 1].transpose(), delta) * _sigmoid_prime(zs[-layer])
        nabla_b[-layer] = delta
        nabla_w[-layer] = np.dot(delta, activations[-layer - 1].transpose())
    return nabla_b, nabla_w


def _update_mini_batch(biases, weights, mini_batch, eta):
    nabla_b = [np.zeros(b.shape) for b in biases]
    nabla_w = [np.zeros(w.shape) for w in weights]
    for x, y in mini_batch:
        delta_nabla_b, delta_nabla_w = _backprop(biases, weights, x, y)
        nabla_b = [nb + dnb for nb, dnb in zip(nabla_b, delta_nabla_b)]
        nabla_w = [nw + dnw for nw, dnw in zip(nabla_w, delta_nabla_w)]
    weights = [w - (eta / len(mini_batch)) * nw for w, nw in zip(weights, nabla_w)]
    biases = [b - (eta / len(mini_batch)) * nb for b, nb in zip(biases, nabla_b)]
    return biases, weights


def _textbook_steps(params, x, y_onehot, order, batch_size=10, eta=3.0):
    """network.py's update_mini_batch over ``order``, from batch-first params, back to batch-first."""
    biases = [b.reshape(-1, 1) for _, b in params]
    weights = [w.T.copy() for w, _ in params]
    examples = [(x[i].astype(np.float64).reshape(-1, 1), y_onehot[i].reshape(-1, 1)) for i in order]
    for k in range(0, len(examples), batch_size):
        biases, weights = _update_mini_batch(biases, weights, examples[k:k + batch_size], eta)
    return [(w.T, b[:, 0]) for w, b in zip(weights, biases)]


def _largest_difference(a, b):
    return max(float(np.max(np.abs(np.asarray(p, np.float64) - np.asarray(q, np.float64))))
               for la, lb in zip(a, b) for p, q in zip(la, lb))


# --- (b) the trainer is network.py's algorithm, and gd_jax's trajectory ------------------------------------

@pytest.mark.parametrize("sizes", SIZES)
@pytest.mark.parametrize("start", ["numpy", "gd_jax"])
def test_first_step_is_network_py_backprop(network_py, digits, sizes, start):
    _, x, y_onehot = digits
    init, orders = network_py.START_FUNCTIONS[start]
    params = init(1, sizes)
    rows = next(orders(1, len(x)))[:10]
    ours = network_py.train_epoch(params, x, y_onehot, rows, learning_rate=3.0, batch_size=10)
    textbook = _textbook_steps(params, x, y_onehot, rows)
    assert _largest_difference(ours, textbook) < FLOAT64_TOLERANCE
    assert _largest_difference(ours, params) > 1e-3  # the step moved the parameters: the check is not vacuous
    assert all(w.dtype == np.float64 and b.dtype == np.float64 for w, b in ours)


def test_epoch_with_a_smaller_last_batch_is_network_py(network_py, digits):
    """A 95-digit epoch: nine steps of 10 and network.py's final step of 5 (eta / 5, not eta / 10)."""
    _, x, y_onehot = digits
    params = network_py.network_py_init(0, [784, 30, 10])
    order = next(network_py.network_py_orders(0, 95))
    ours = network_py.train_epoch(params, x, y_onehot, order, learning_rate=3.0, batch_size=10)
    assert _largest_difference(ours, _textbook_steps(params, x, y_onehot, order)) < 1e-10  # 10 steps of rounding


@pytest.mark.parametrize("sizes", SIZES)
@pytest.mark.parametrize("seed", [0, 2])
def test_gd_jax_start_epoch_equals_fit(network_py, digits, sizes, seed):
    """One epoch from the gd_jax start is gd.fit's for the seed: float32 within rounding, float64 exactly."""
    train, x, y_onehot = digits
    init_key, shuffle_key = jax.random.split(jax.random.key(seed))  # as chapter1.py and gd-jax train --seed
    ours = network_py.train_epoch(network_py.gd_jax_init(seed, sizes), x, y_onehot,
                                  next(network_py.gd_jax_orders(seed, train.size)), learning_rate=3.0, batch_size=10)
    fit32, _ = gd.fit(gd.init_mlp(init_key, sizes, "normal"), train, epochs=1, batch_size=10, optimizer=gd.sgd(3.0),
                      cost=gd.quadratic_cost, key=shuffle_key)
    fit32 = [(layer["w"], layer["b"]) for layer in fit32]
    assert _largest_difference(ours, fit32) < FLOAT32_TOLERANCE
    with jax.enable_x64(True):
        init64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), gd.init_mlp(init_key, sizes, "normal"))
        fit64, _ = gd.fit(init64, gd.Dataset(jnp.asarray(train.x, jnp.float64), train.y), epochs=1, batch_size=10,
                          optimizer=gd.sgd(3.0), cost=gd.quadratic_cost, key=shuffle_key)
        fit64 = [(np.asarray(layer["w"]), np.asarray(layer["b"])) for layer in fit64]
    assert fit64[0][0].dtype == np.float64
    assert _largest_difference(ours, fit64) < FLOAT64_TOLERANCE


def test_gd_jax_start_is_gd_jax_init_and_order(network_py):
    init_key, shuffle_key = jax.random.split(jax.random.key(4))
    expected = gd.init_mlp(init_key, [784, 30, 10], "normal")
    params = network_py.gd_jax_init(4, [784, 30, 10])
    for (w, b), layer in zip(params, expected):
        np.testing.assert_array_equal(w, np.asarray(layer["w"]))  # float32 values, exactly, in float64
        np.testing.assert_array_equal(b, np.asarray(layer["b"]))
    orders = network_py.gd_jax_orders(4, 1000)
    for epoch in range(3):
        np.testing.assert_array_equal(next(orders), gd.shuffled_order(jax.random.fold_in(shuffle_key, epoch), 1000))


def test_output_neurons_mirror_chapter1(network_py, digits):
    """The float64 measurements the stall verdict reads are chapter1.output_neurons' (float32) ones."""
    import chapter1

    train, _, _ = digits
    params = network_py.gd_jax_init(3, [784, 30, 10])
    ours = network_py.output_neurons(params, np.asarray(train.x, np.float64), np.asarray(train.y), 10)
    theirs = chapter1.output_neurons([{"w": jnp.asarray(w, jnp.float32), "b": jnp.asarray(b, jnp.float32)}
                                      for w, b in params], train.x, train.y)
    for key in ("max_activation", "mean_z_own", "mean_sigma_prime_own"):
        np.testing.assert_allclose(ours[key], np.asarray(theirs[key]), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(ours["predicted"], np.asarray(theirs["predicted"]))
    assert ours["accuracy"] == pytest.approx(float(gd.accuracy(gd.init_mlp(jax.random.split(jax.random.key(3))[0],
                                                                           [784, 30, 10], "normal"), train)))


# --- (c) the numpy start is network.py's own randomness ----------------------------------------------------

@pytest.fixture
def restore_global_generators():
    """The tests below seed numpy's and Python's global generators, as network.py uses them; put them back."""
    # The legacy global generator on purpose (here and below): it is the one network.py draws from.
    numpy_state, python_state = np.random.get_state(), random.getstate()  # noqa: NPY002
    yield
    np.random.set_state(numpy_state)  # noqa: NPY002
    random.setstate(python_state)


@pytest.mark.parametrize("sizes", [*SIZES, [784, 16, 12, 10]])
@pytest.mark.parametrize("seed", [0, 7])
def test_numpy_start_draws_as_network_py(network_py, restore_global_generators, sizes, seed):
    np.random.seed(seed)  # noqa: NPY002  network.py's Network.__init__ after np.random.seed(seed), line for line:
    biases = [np.random.randn(y, 1) for y in sizes[1:]]  # noqa: NPY002
    weights = [np.random.randn(y, x) for x, y in zip(sizes[:-1], sizes[1:])]  # noqa: NPY002, RUF007
    params = network_py.network_py_init(seed, sizes)
    assert [(w.shape, b.shape) for w, b in params] == [((x, y), (y,)) for x, y in itertools.pairwise(sizes)]
    for (w, b), textbook_w, textbook_b in zip(params, weights, biases):
        np.testing.assert_array_equal(w, textbook_w.T)  # batch-first: (n_in, n_out)
        np.testing.assert_array_equal(b, textbook_b[:, 0])
    values = np.concatenate([np.concatenate([w.ravel(), b]) for w, b in params])
    assert abs(values.mean()) < 5 / np.sqrt(values.size) and abs(values.std() - 1) < 5 / np.sqrt(values.size)


@pytest.mark.parametrize("seed", [0, 5])
def test_numpy_start_orders_are_network_py_shuffles(network_py, restore_global_generators, seed):
    """network.py shuffles its list of (x, y) pairs in place every epoch: orders compose, epoch after epoch."""
    training_data = [(f"x{i}", i % 10) for i in range(257)]
    orders = network_py.network_py_orders(seed, len(training_data))
    random.seed(seed)
    for _ in range(4):
        random.shuffle(training_data)
        ours = next(orders)
        assert [int(x[1:]) for x, _ in training_data] == ours.tolist()


# --- (a) the script end to end, and beside chapter1.py -----------------------------------------------------

def _run(*args):
    done = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def test_quick_end_to_end(tmp_path):
    out = tmp_path / "network_py"
    _run("experiments/network_py.py", "--quick", "--out", str(out))
    markdown = (out / "results.md").read_text()
    assert markdown.startswith("# Experiment")
    assert (out / "peaks.png").read_bytes()[:4] == b"\x89PNG"
    results = json.loads((out / "results.json").read_text())
    assert list(results["configs"]) == ["textbook", "textbook-100"]
    for block in results["configs"].values():
        assert list(block["starts"]) == ["numpy", "gd_jax"]
        for part in block["starts"].values():
            assert [r["seed"] for r in part["runs"]] == [0, 1]
            for r in part["runs"]:
                curve = r["test_accuracy_per_epoch"]
                assert len(curve) == 3  # untrained + 2 epochs
                assert r["peak_accuracy"] == max(curve[1:]) and r["final_accuracy"] == curve[-1]
                assert r["stalled"] == (min(r["output_neurons_per_epoch"][-1]["max_activation"]) < 0.5)
            assert part["summary"]["stalled"] == sum(r["stalled"] for r in part["runs"])
    # The default gd_jax results (the committed full-MNIST ones, if present) are another setup: not compared.
    assert "not compared" in markdown and "agreement" not in json.dumps(results)


def test_quick_curve_is_an_independent_recomputation(tmp_path, network_py):
    """A seed's curve in results.json is what the numpy trainer computes for it, here re-run step by step."""
    out = tmp_path / "o"
    _run("experiments/network_py.py", "--quick", "--only", "textbook", "--seeds", "1", "--gd-jax-seeds", "0",
         "--epochs", "1", "--out", str(out))
    run = json.loads((out / "results.json").read_text())["configs"]["textbook"]["starts"]["numpy"]["runs"][0]
    train, _, test = gd.load_mnist("sample", validation=True)
    x, y_onehot = np.asarray(train.x), np.eye(10)[np.asarray(train.y)]
    params = _textbook_steps(network_py.network_py_init(0, [784, 30, 10]), x, y_onehot,
                             next(network_py.network_py_orders(0, train.size)))
    predicted = np.argmax(_sigmoid(np.asarray(test.x, np.float64) @ params[0][0] + params[0][1]) @ params[1][0]
                          + params[1][1], axis=-1)
    assert run["test_accuracy_per_epoch"][1] == pytest.approx(float(np.mean(predicted == np.asarray(test.y))),
                                                              abs=1e-12)


def test_quick_beside_chapter1(tmp_path):
    """With chapter1.py's own --quick results, the gd_jax start is compared seed by seed with gd_jax in float32."""
    gd_jax_out, out = tmp_path / "chapter1", tmp_path / "network_py"
    _run("experiments/chapter1.py", "--quick", "--only", "textbook", "--out", str(gd_jax_out))
    _run("experiments/network_py.py", "--quick", "--only", "textbook", "--seeds", "0",
         "--gd-jax-results", str(gd_jax_out / "results.json"), "--out", str(out))
    theirs = json.loads((gd_jax_out / "results.json").read_text())["configs"]["textbook"]["runs"]
    results = json.loads((out / "results.json").read_text())["configs"]["textbook"]
    assert list(results["starts"]) == ["gd_jax"]
    agreement = results["starts"]["gd_jax"]["agreement"]
    assert [row["seed"] for row in agreement["rows"]] == [r["seed"] for r in theirs] == [0, 1]
    for row, r, ours in zip(agreement["rows"], theirs, results["starts"]["gd_jax"]["runs"]):
        assert row["peak_float32"] == r["peak_accuracy"] and row["stalled_float32"] == r["stalled"]
        # 2 epochs of 417 steps: float32 and float64 trajectories stay within a few test digits
        assert abs(ours["peak_accuracy"] - r["peak_accuracy"]) <= 0.003
    assert agreement["same_stall"] == sum(row["stalled_float64"] == row["stalled_float32"]
                                          for row in agreement["rows"])
    markdown = (out / "results.md").read_text()
    assert "gd_jax float32: peak" in markdown and f"same stall verdict for {agreement['same_stall']} of 2" in markdown


@pytest.mark.parametrize("args, message", [
    (["--seeds", "-1"], "--seeds must be at least 0"),
    (["--seeds", "0", "--gd-jax-seeds", "0"], "nothing to train"),
    (["--only", "textbook-30"], "--only 'textbook-30' is not a configuration"),
    (["--gd-jax-results", "no/such.json"], "--gd-jax-results 'no/such.json' is not a file"),
    (["--gd-jax-results", "bad.json"], "bad.json' is not JSON"),
])
def test_bad_options_are_one_line(tmp_path, args, message):
    (tmp_path / "bad.json").write_text("not json")
    args = [str(tmp_path / a) if a == "bad.json" else a for a in args]
    done = subprocess.run([sys.executable, "experiments/network_py.py", "--out", str(tmp_path / "o"), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()
