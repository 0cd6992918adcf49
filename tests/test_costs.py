import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gd_jax as gd


def _onehot(y, n=10):
    return np.eye(n, dtype=np.float32)[np.asarray(y)]


def _numpy_output(params, x):
    a = np.asarray(x, np.float64)
    zs = []
    for layer in params:
        z = a @ np.asarray(layer["w"], np.float64) + np.asarray(layer["b"], np.float64)
        a = 1 / (1 + np.exp(-z))
        zs.append(z)
    return zs[-1], a


def _numpy_costs(params, x, y):
    z, a = _numpy_output(params, x)
    n = len(x)
    return {
        "quadratic": np.sum((y - a) ** 2) / (2 * n),
        "cross-entropy": -np.sum(y * np.log(a) + (1 - y) * np.log(1 - a)) / n,
        "log-likelihood": -np.sum(y * (z - np.log(np.sum(np.exp(z), axis=1, keepdims=True)))) / n,
    }


@pytest.mark.parametrize("name", ["quadratic", "cross-entropy", "log-likelihood"])
def test_costs_match_numpy_formulas(mnist_sample, name):
    train = mnist_sample[0]
    params = gd.init_mlp(jax.random.key(0), [784, 30, 10], "scaled")
    x, y = train.x[:200], _onehot(train.y[:200])
    want = _numpy_costs(params, x, y)[name]
    np.testing.assert_allclose(gd.COSTS[name](params, x, y), want, rtol=1e-5)


def test_cross_entropy_stays_finite_when_sigmoids_saturate():
    # One output neuron at z = +-200: sigma(z) rounds to exactly 1 or 0 in float32, so the
    # naive formula takes log(0) = -inf.
    params = [{"w": jnp.array([[200.0, -200.0]]), "b": jnp.zeros(2)}]
    x, y = jnp.ones((1, 1)), jnp.array([[0.0, 1.0]])  # both outputs maximally wrong
    a = gd.predict(params, x)
    naive = -jnp.sum(y * jnp.log(a) + (1 - y) * jnp.log(1 - a))
    assert not jnp.isfinite(naive)
    cost = gd.cross_entropy_cost(params, x, y)
    grads = jax.grad(gd.cross_entropy_cost)(params, x, y)
    # Exact value: each wrong term is softplus(200) - 0 = 200 (or softplus(-200) + 200 = 200).
    np.testing.assert_allclose(cost, 400.0, rtol=1e-6)
    # dC/dz = sigma(z) - y = [1, -1], so dC/dw = x^T (a - y) = [1, -1].
    np.testing.assert_allclose(grads[0]["w"], [[1.0, -1.0]], rtol=1e-6)


@pytest.mark.slow
def test_naive_cross_entropy_goes_nan_where_the_stable_one_trains(mnist_sample):
    """The issue's measured fact: log(a) cross-entropy goes NaN within 30 epochs at eta 0.5."""
    train, test = mnist_sample

    def naive_cross_entropy(params, x, y):
        a = gd.predict(params, x)
        return -jnp.mean(jnp.sum(y * jnp.log(a) + (1 - y) * jnp.log(1 - a), axis=-1))

    init_key, shuffle_key = jax.random.split(jax.random.key(0))  # measured: NaN in epoch 12
    params = gd.init_mlp(init_key, [784, 30, 10])
    run = functools.partial(gd.fit, params, train, epochs=30, batch_size=10, optimizer=gd.sgd(0.5),
                            key=shuffle_key, eval_data=test)
    with pytest.raises(gd.DivergenceError, match="NaN or infinite"):
        run(cost=naive_cross_entropy)
    _, history = run(cost=gd.cross_entropy_cost)
    assert len(history) == 30 and all(np.isfinite(history["train_cost"]))
    assert history["eval_accuracy"][-1] > 0.85


def test_with_l2_adds_the_textbook_penalty(small_train):
    params = gd.init_mlp(jax.random.key(0), [784, 30, 10])
    x, y = small_train.x, _onehot(small_train.y)
    lmbda, n = 5.0, 50_000
    squares = sum(np.sum(np.asarray(layer["w"], np.float64) ** 2) for layer in params)
    want = _numpy_costs(params, x, y)["cross-entropy"] + lmbda / (2 * n) * squares
    got = gd.with_l2(gd.cross_entropy_cost, lmbda, n)(params, x, y)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    # Its gradient decays each weight by (lambda / n) w on top of the unregularised gradient.
    g0 = jax.grad(gd.cross_entropy_cost)(params, x, y)
    g = jax.grad(gd.with_l2(gd.cross_entropy_cost, lmbda, n))(params, x, y)
    np.testing.assert_allclose(g[0]["w"] - g0[0]["w"], lmbda / n * params[0]["w"], atol=1e-7)
    np.testing.assert_array_equal(g[0]["b"], g0[0]["b"])
