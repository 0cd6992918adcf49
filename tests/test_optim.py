import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gd_jax as gd


def _run(optimizer, apply, params, data, steps, batch=10):
    """``steps`` jitted mini-batch steps over consecutive batches of real digits."""
    x, y = jnp.asarray(data.x), jax.nn.one_hot(jnp.asarray(data.y), 10)

    @jax.jit
    def step(params, state, i):
        xb = jax.lax.dynamic_slice_in_dim(x, i * batch, batch)
        yb = jax.lax.dynamic_slice_in_dim(y, i * batch, batch)
        grads = jax.grad(gd.quadratic_cost)(params, xb, yb)
        updates, state = optimizer.update(grads, state, params)
        return apply(params, updates), state

    state = optimizer.init(params)
    for i in range(steps):
        params, state = step(params, state, i)
    return params


@pytest.mark.parametrize(("momentum", "nesterov"), [(None, False), (0.9, False), (0.9, True), (0.0, False)])
def test_sgd_equals_optax_sgd_over_120_jitted_steps(small_train, momentum, nesterov):
    params = gd.init_mlp(jax.random.key(0), [784, 30, 10])
    ours = _run(gd.sgd(3.0, momentum=momentum, nesterov=nesterov), gd.apply_updates, params, small_train, 120)
    theirs = _run(optax.sgd(3.0, momentum=momentum, nesterov=nesterov), optax.apply_updates, params,
                  small_train, 120)
    # The same arithmetic in the same order: bit-identical, not merely close.
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
        np.testing.assert_array_equal(a, b)


def test_sgd_update_is_the_textbook_rule_and_equals_optax(small_train):
    params = gd.init_mlp(jax.random.key(1), [784, 30, 10])
    x, y = jnp.asarray(small_train.x), jax.nn.one_hot(jnp.asarray(small_train.y), 10)
    opt = optax.sgd(3.0)

    def grad(p, i):
        batch = [jax.lax.dynamic_slice_in_dim(a, i * 10, 10) for a in (x, y)]
        return jax.grad(gd.quadratic_cost)(p, *batch)

    @jax.jit
    def ours(p, i):
        return gd.sgd_update(p, grad(p, i), 3.0)

    @jax.jit
    def theirs(p, i):
        g = grad(p, i)
        updates, _ = opt.update(g, opt.init(p), p)
        return optax.apply_updates(p, updates)

    p_ours, p_theirs = params, params
    for i in range(30):
        p_ours, p_theirs = ours(p_ours, i), theirs(p_theirs, i)
    for a, b in zip(jax.tree.leaves(p_ours), jax.tree.leaves(p_theirs)):
        np.testing.assert_array_equal(a, b)
    # And one step by hand: w - eta * g.
    g = jax.grad(gd.quadratic_cost)(params, x[:10], y[:10])
    stepped = gd.sgd_update(params, g, 3.0)
    np.testing.assert_allclose(stepped[0]["w"], np.asarray(params[0]["w"]) - 3.0 * np.asarray(g[0]["w"]), rtol=1e-6)


def test_momentum_is_the_textbook_velocity_rule():
    """v -> mu v - eta g; w -> w + v, written out for three steps of a fixed gradient sequence."""
    eta, mu = 0.5, 0.9
    grads = [np.array([1.0, -2.0]), np.array([0.5, 0.5]), np.array([-1.0, 3.0])]
    opt = gd.sgd(eta, momentum=mu)
    w = {"w": jnp.array([0.3, -0.7])}
    state = opt.init(w)
    w_ref, v = np.array([0.3, -0.7]), np.zeros(2)
    for g in grads:
        updates, state = opt.update({"w": jnp.asarray(g, jnp.float32)}, state, w)
        w = gd.apply_updates(w, updates)
        v = mu * v - eta * g
        w_ref = w_ref + v
    np.testing.assert_allclose(w["w"], w_ref, rtol=1e-6)


@pytest.mark.parametrize("kwargs", [
    {"learning_rate": 0.0}, {"learning_rate": -1.0}, {"learning_rate": float("nan")}, {"learning_rate": float("inf")},
    {"learning_rate": 1.0, "momentum": 1.0}, {"learning_rate": 1.0, "momentum": -0.1},
    {"learning_rate": 1.0, "nesterov": True},
])
def test_sgd_rejects_bad_hyperparameters(kwargs):
    with pytest.raises(ValueError, match=r"learning_rate|momentum"):
        gd.sgd(**kwargs)


def test_optimizer_state_is_a_namedtuple_pytree():
    opt = gd.sgd(0.1, momentum=0.5)
    state = opt.init([{"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}])
    assert isinstance(state, gd.SgdState)
    assert [leaf.shape for leaf in jax.tree.leaves(state)] == [(3,), (2, 3)]
    assert jax.tree.leaves(gd.sgd(0.1).init({"w": jnp.ones(2)})) == []
