import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gd_jax as gd
from gd_jax._src.network import layer_sizes


@pytest.mark.parametrize("sizes", [[784, 30, 10], [2, 3], [5, 4, 3, 2]])
def test_init_mlp_shapes_are_batch_first(sizes):
    params = gd.init_mlp(jax.random.key(0), sizes)
    assert len(params) == len(sizes) - 1
    for layer, n_in, n_out in zip(params, sizes[:-1], sizes[1:]):
        assert layer["w"].shape == (n_in, n_out) and layer["b"].shape == (n_out,)
        assert layer["w"].dtype == jnp.float32
    assert layer_sizes(params) == sizes


@pytest.mark.parametrize(("init", "w_std"), [("normal", 1.0), ("scaled", 1.0 / np.sqrt(400))])
def test_init_mlp_distributions(init, w_std):
    params = gd.init_mlp(jax.random.key(1), [400, 300, 10], init)
    w, b = np.asarray(params[0]["w"]), np.asarray(params[0]["b"])
    # 120,000 draws: the sample std is within 1% of the true one with overwhelming probability.
    assert abs(w.std() / w_std - 1) < 0.01 and abs(w.mean()) < 0.01 * w_std
    assert abs(b.std() - 1) < 0.2  # biases are N(0, 1) in both schemes (300 draws)


def test_init_mlp_is_a_function_of_the_key():
    a = gd.init_mlp(jax.random.key(3), [6, 5, 4])
    b = gd.init_mlp(jax.random.key(3), [6, 5, 4])
    c = gd.init_mlp(jax.random.key(4), [6, 5, 4])
    assert all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    assert not np.array_equal(a[0]["w"], c[0]["w"])


def _numpy_feedforward(params, x, sigma):
    a = np.asarray(x, np.float64)
    for layer in params:
        a = sigma(a @ np.asarray(layer["w"], np.float64) + np.asarray(layer["b"], np.float64))
    return a


@pytest.mark.parametrize(("activation", "sigma"), [
    ("sigmoid", lambda z: 1 / (1 + np.exp(-z))),
    ("tanh", np.tanh),
    ("relu", lambda z: np.maximum(z, 0)),
    ("identity", lambda z: z),
])
def test_predict_matches_numpy_feedforward(mnist_sample, activation, sigma):
    params = gd.init_mlp(jax.random.key(0), [784, 30, 10], "scaled")
    x = mnist_sample[0].x[:64]
    got = gd.predict(params, x, activation=activation)
    assert got.shape == (64, 10)
    np.testing.assert_allclose(got, _numpy_feedforward(params, x, sigma), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("sizes", [[], [784], [784, 0, 10], [784, -3, 10], [784, 2.5, 10], ["a", 10]])
def test_init_mlp_rejects_bad_sizes(sizes):
    with pytest.raises(ValueError, match="sizes must be two or more positive integers"):
        gd.init_mlp(jax.random.key(0), sizes)


def test_bad_init_and_activation_names():
    with pytest.raises(ValueError, match="unknown init 'xavier'"):
        gd.init_mlp(jax.random.key(0), [2, 2], "xavier")
    params = gd.init_mlp(jax.random.key(0), [2, 2])
    with pytest.raises(ValueError, match="unknown activation 'softsign'"):
        gd.predict(params, jnp.ones((1, 2)), activation="softsign")
