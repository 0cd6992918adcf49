import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gd_jax as gd


def _onehot(y, n=10):
    return jax.nn.one_hot(jnp.asarray(y), n)


@pytest.mark.parametrize(("cost", "name"), [
    (gd.quadratic_cost, "quadratic"),
    (gd.cross_entropy_cost, "cross-entropy"),
])
@pytest.mark.parametrize("sizes", [[784, 30, 10], [784, 16, 12, 10]])
def test_jax_grad_matches_textbook_backprop(mnist_sample, cost, name, sizes):
    """jax.grad against the four backpropagation equations, written in numpy."""
    train = mnist_sample[0]
    params = gd.init_mlp(jax.random.key(0), sizes, "scaled")
    x, y = train.x[:100], _onehot(train.y[:100])
    got = jax.grad(cost)(params, x, y)
    want = gd.backprop(params, x, y, cost=name)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        # float32 autodiff against a float64 reference: the error is float32 rounding.
        np.testing.assert_allclose(g, w, rtol=2e-4, atol=1e-6)


def _small_float64_problem(train, *, seed: int, rows: int):
    """A [12, 5, 4] float64 network on 12 real pixels of ``rows`` digits, labels folded into 4 classes.

    Small, so that finite differences (one parameter at a time) stay quick.
    """
    params = gd.init_mlp(jax.random.key(seed), [12, 5, 4], "scaled", dtype=jnp.float64)
    x = jnp.asarray(train.x[:rows, 400:412], jnp.float64)
    y = jax.nn.one_hot(jnp.asarray(train.y[:rows]) % 4, 4, dtype=jnp.float64)
    return params, x, y


@pytest.mark.parametrize("cost", [gd.quadratic_cost, gd.cross_entropy_cost, gd.log_likelihood_cost])
def test_jax_grad_matches_finite_differences_in_float64(x64, mnist_sample, cost):
    params, x, y = _small_float64_problem(mnist_sample[0], seed=2, rows=8)
    got = jax.grad(cost)(params, x, y)
    want = gd.finite_difference_grad(cost, params, x, y, eps=1e-6)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        assert g.dtype == jnp.float64
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("cost", [gd.quadratic_cost, gd.cross_entropy_cost, gd.log_likelihood_cost])
def test_mean_of_per_example_grads_is_the_batch_grad(mnist_sample, cost):
    train = mnist_sample[0]
    params = gd.init_mlp(jax.random.key(0), [784, 30, 10])
    x, y = train.x[:50], _onehot(train.y[:50])
    per_example = gd.per_example_grads(cost, params, x, y)
    batch = jax.grad(cost)(params, x, y)
    for pe, b, p in zip(jax.tree.leaves(per_example), jax.tree.leaves(batch), jax.tree.leaves(params)):
        assert pe.shape == (50, *p.shape)
        np.testing.assert_allclose(pe.mean(axis=0), b, rtol=1e-4, atol=1e-6)
    assert jax.tree.structure(gd.batch_grad(cost, params, x, y)) == jax.tree.structure(params)


def test_per_example_grads_are_the_single_example_gradients(small_train):
    params = gd.init_mlp(jax.random.key(5), [784, 8, 10])
    x, y = small_train.x[:4], _onehot(small_train.y[:4])
    per_example = gd.per_example_grads(gd.quadratic_cost, params, x, y)
    grad = jax.jit(jax.grad(gd.quadratic_cost))
    for i in range(4):
        single = grad(params, x[i:i + 1], y[i:i + 1])
        for pe, s in zip(jax.tree.leaves(per_example), jax.tree.leaves(single)):
            np.testing.assert_allclose(pe[i], s, rtol=1e-5, atol=1e-7)


def test_grad_of_a_bound_activation_cost(small_train):
    """Costs take the hidden activation as a keyword; partial-binding keeps cost(params, x, y)."""
    params = gd.init_mlp(jax.random.key(0), [784, 20, 10], "scaled")
    x, y = small_train.x[:30], _onehot(small_train.y[:30])
    cost = functools.partial(gd.cross_entropy_cost, activation="tanh")

    def by_hand(p):
        hidden = jnp.tanh(x @ p[0]["w"] + p[0]["b"])
        z = hidden @ p[1]["w"] + p[1]["b"]
        return jnp.mean(jnp.sum(-y * jnp.log(jax.nn.sigmoid(z)) - (1 - y) * jnp.log(1 - jax.nn.sigmoid(z)), -1))

    for g, w in zip(jax.tree.leaves(jax.grad(cost)(params, x, y)), jax.tree.leaves(jax.grad(by_hand)(params))):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-6)


# --- the closed form of per-example gradients for gd_jax's dense layout --------------------------------------

from gd_jax._src.gradients import dense_per_example_grads, vmap_per_example_grads  # noqa: E402


@pytest.mark.parametrize("cost", [
    gd.quadratic_cost, gd.cross_entropy_cost, gd.log_likelihood_cost,
    functools.partial(gd.cross_entropy_cost, activation="tanh"),
])
@pytest.mark.parametrize(("sizes", "batch"), [([784, 30, 10], 128), ([784, 16, 12, 10], 7)])
def test_closed_form_per_example_grads_equal_vmap_grad(mnist_sample, cost, sizes, batch):
    """Outer products of each layer's input and error: vmap(grad)'s numbers, to float32 rounding."""
    train = mnist_sample[0]
    params = gd.init_mlp(jax.random.key(3), sizes)
    x, y = train.x[:batch], _onehot(train.y[:batch])
    closed = jax.jit(lambda p, a, b: dense_per_example_grads(cost, p, a, b))(params, x, y)
    vmapped = jax.jit(lambda p, a, b: vmap_per_example_grads(cost, p, a, b))(params, x, y)
    assert jax.tree.structure(closed) == jax.tree.structure(params)
    for c, v in zip(jax.tree.leaves(closed), jax.tree.leaves(vmapped)):
        assert c.shape == v.shape and c.dtype == v.dtype
        # float32 rounding: the output error sigma(z) - y is a difference of O(1) terms (ulp 6e-8), whose
        # rounding the two programs may place differently before the weights carry it back
        np.testing.assert_allclose(c, v, rtol=1e-5, atol=2e-6)
    dispatched = jax.jit(lambda p, a, b: gd.per_example_grads(cost, p, a, b))(params, x, y)
    for c, v in zip(jax.tree.leaves(dispatched), jax.tree.leaves(closed)):
        np.testing.assert_array_equal(c, v)  # per_example_grads takes the closed form here


@pytest.mark.parametrize("cost", [gd.quadratic_cost, gd.cross_entropy_cost, gd.log_likelihood_cost])
def test_closed_form_per_example_grads_match_finite_differences_in_float64(x64, mnist_sample, cost):
    params, x, y = _small_float64_problem(mnist_sample[0], seed=4, rows=3)
    closed = dense_per_example_grads(cost, params, x, y)
    for i in range(3):
        want = gd.finite_difference_grad(cost, params, x[i:i + 1], y[i:i + 1], eps=1e-6)
        for g, w in zip(jax.tree.leaves(closed), jax.tree.leaves(want)):
            assert g.dtype == jnp.float64
            np.testing.assert_allclose(g[i], w, rtol=1e-6, atol=1e-9)


def test_other_models_and_costs_keep_vmap_grad(small_train):
    """An L2 term is not a per-example cost and a dict of matrices is not gd_jax's layout: both take vmap(grad)."""
    params = gd.init_mlp(jax.random.key(5), [784, 8, 10])
    x, y = small_train.x[:4], _onehot(small_train.y[:4])
    regularised = gd.with_l2(gd.quadratic_cost, 5.0, 100)
    with pytest.raises(ValueError, match="use per_example_grads for any other model or cost"):
        dense_per_example_grads(regularised, params, x, y)
    got = gd.per_example_grads(regularised, params, x, y)
    want = vmap_per_example_grads(regularised, params, x, y)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_array_equal(g, w)

    def linear_cost(p, a, b):
        return 0.5 * jnp.mean(jnp.sum((a @ p["m"] - b) ** 2, axis=-1))

    other = {"m": jnp.full((784, 10), 0.01)}
    with pytest.raises(ValueError, match="gd_jax's dense layout"):
        dense_per_example_grads(linear_cost, other, x, y)
    assert gd.per_example_grads(linear_cost, other, x, y)["m"].shape == (4, 784, 10)
