"""gd_jax's hand-rolled optimizers against optax, bit for bit, on real gradients of real digits.

Every comparison trains the textbook network [784, 30, 10] on consecutive mini-batches of the
embedded MNIST sample with jitted steps, once with gd_jax's transformation and once with optax's,
and asserts identical parameters and optimizer states (structure, dtypes and every bit).
"""

import functools
import math
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gd_jax as gd

SIZES = [784, 30, 10]


def _assert_same(a, b):
    """Same pytree structure, and leaf for leaf the same dtype, shape and bits (NaN equal to NaN)."""
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert jnp.result_type(x) == jnp.result_type(y) and jnp.shape(x) == jnp.shape(y)
        np.testing.assert_array_equal(x, y)


BATCH = 10


def _batches(data):
    return jnp.asarray(data.x), jax.nn.one_hot(jnp.asarray(data.y), 10), BATCH


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _step(optimizer, apply, extra_args, params, state, x, y, i):
    """One mini-batch step; compiled once per optimizer (gd_jax's compare by value) and state structure."""
    xb = jax.lax.dynamic_slice_in_dim(x, i * BATCH, BATCH)
    yb = jax.lax.dynamic_slice_in_dim(y, i * BATCH, BATCH)
    grads = jax.grad(gd.quadratic_cost)(params, xb, yb)
    updates, state = optimizer.update(grads, state, params, **dict(extra_args))
    return apply(params, updates), state


def _run(optimizer, params, data, steps, *, state=None, start=0, apply=gd.apply_updates, **extra_args):
    """``steps`` jitted mini-batch steps over consecutive batches of real digits; (params, state)."""
    x, y, _ = _batches(data)
    state = optimizer.init(params) if state is None else state
    for i in range(start, start + steps):
        params, state = _step(optimizer, apply, tuple(extra_args.items()), params, state, x, y, i % (len(x) // BATCH))
    return params, state


@pytest.fixture(scope="module")
def params():
    return gd.init_mlp(jax.random.key(0), SIZES)


def _first_grads(params, data, n=10):
    x, y, _ = _batches(data)
    return jax.grad(gd.quadratic_cost)(params, x[:n], y[:n])


# --- sgd: constant learning rates, momentum, Nesterov, accumulator dtype ----------------------


@pytest.mark.parametrize(("momentum", "nesterov", "accumulator_dtype"), [
    (None, False, None), (0.9, False, None), (0.9, True, None), (0.0, False, None),
    (0.9, False, jnp.bfloat16), (0.9, True, jnp.bfloat16),
])
def test_sgd_equals_optax_sgd_over_120_jitted_steps(small_train, params, momentum, nesterov, accumulator_dtype):
    kwargs = {"momentum": momentum, "nesterov": nesterov, "accumulator_dtype": accumulator_dtype}
    ours = _run(gd.sgd(3.0, **kwargs), params, small_train, 120)
    theirs = _run(optax.sgd(3.0, **kwargs), params, small_train, 120, apply=optax.apply_updates)
    # The same arithmetic in the same order: bit-identical params and states, not merely close.
    _assert_same(ours, theirs)
    if accumulator_dtype is not None:  # the trace is kept in bfloat16, the params stay float32
        assert {t.dtype for t in jax.tree.leaves(ours[1][0].trace)} == {jnp.dtype(jnp.bfloat16)}
        assert {p.dtype for p in jax.tree.leaves(ours[0])} == {jnp.dtype(jnp.float32)}


def test_sgd_update_is_the_textbook_rule_and_equals_optax(small_train):
    params = gd.init_mlp(jax.random.key(1), SIZES)
    x, y, _ = _batches(small_train)
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
    _assert_same(p_ours, p_theirs)
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


# --- 1. schedules as the learning rate ---------------------------------------------------------

SCHEDULES = {
    "exponential_decay": optax.exponential_decay(3.0, transition_steps=20, decay_rate=0.5),
    "piecewise_constant": optax.piecewise_constant_schedule(3.0, {30: 0.5, 60: 0.2}),
    "cosine_decay": optax.cosine_decay_schedule(3.0, decay_steps=70),
    "a plain function": lambda step: 3.0 / (1.0 + 0.05 * step),
}


@pytest.mark.parametrize("schedule", list(SCHEDULES))
@pytest.mark.parametrize(("momentum", "nesterov"), [(None, False), (0.9, True)])
def test_schedule_as_learning_rate_equals_optax_sgd(small_train, params, schedule, momentum, nesterov):
    ours = _run(gd.sgd(SCHEDULES[schedule], momentum, nesterov), params, small_train, 80)
    theirs = _run(optax.sgd(SCHEDULES[schedule], momentum, nesterov), params, small_train, 80,
                  apply=optax.apply_updates)
    _assert_same(ours, theirs)
    count = ours[1][1].count  # the step count lives in the state, as optax keeps it
    assert count.dtype == jnp.int32 and int(count) == 80


def test_schedule_is_evaluated_at_each_step_count(params, small_train):
    """Step k moves by -eta(k) g: checked against sgd_update with the schedule's value, step by step."""
    schedule = optax.exponential_decay(3.0, transition_steps=1, decay_rate=0.5)
    opt = gd.sgd(schedule)
    state, p, p_ref = opt.init(params), params, params
    for k in range(4):
        g = _first_grads(p, small_train)
        updates, state = opt.update(g, state, p)
        p = gd.apply_updates(p, updates)
        p_ref = gd.sgd_update(p_ref, g, jnp.float32(3.0 * 0.5**k))
        _assert_same(p, p_ref)


# --- 2. hyperparameters as numpy scalars and arrays, traced too ------------------------------


@pytest.mark.parametrize(("learning_rate", "momentum"), [
    (np.float32(0.5), np.float32(0.9)),
    (jnp.asarray(0.5), jnp.asarray(0.9)),
    (np.asarray(0.5), np.float64(0.9)),
    (1, 0),
    (np.float16(0.5), None),
], ids=["numpy float32", "jax arrays", "numpy 0-d array and float64", "ints", "numpy float16"])
def test_numpy_scalars_and_arrays_as_hyperparameters_equal_optax(small_train, params, learning_rate, momentum):
    ours = _run(gd.sgd(learning_rate, momentum), params, small_train, 20)
    theirs = _run(optax.sgd(learning_rate, momentum), params, small_train, 20, apply=optax.apply_updates)
    _assert_same(ours, theirs)


def test_inject_hyperparams_equals_optax_and_follows_changed_hyperparameters(small_train, params):
    ours_opt = optax.inject_hyperparams(gd.sgd)(learning_rate=0.5, momentum=0.9)
    theirs_opt = optax.inject_hyperparams(optax.sgd)(learning_rate=0.5, momentum=0.9)
    ours = _run(ours_opt, params, small_train, 20)
    theirs = _run(theirs_opt, params, small_train, 20, apply=optax.apply_updates)
    _assert_same(ours, theirs)
    # Change both hyperparameters in the state, as optax users do, and go on.
    for run in (ours, theirs):
        run[1].hyperparams["learning_rate"] = jnp.asarray(2.0)
        run[1].hyperparams["momentum"] = jnp.asarray(0.5)
    ours = _run(ours_opt, ours[0], small_train, 20, state=ours[1], start=20)
    theirs = _run(theirs_opt, theirs[0], small_train, 20, state=theirs[1], start=20, apply=optax.apply_updates)
    _assert_same(ours, theirs)
    # A schedule through inject_hyperparams too.
    sched = SCHEDULES["exponential_decay"]
    _assert_same(_run(optax.inject_hyperparams(gd.sgd)(learning_rate=sched), params, small_train, 30),
                 _run(optax.inject_hyperparams(optax.sgd)(learning_rate=sched), params, small_train, 30))


def test_vmap_over_learning_rates_and_momenta_equals_optax(small_train, params):
    x, y, batch = _batches(small_train)

    def train(learning_rate, momentum, make):
        opt = make(learning_rate, momentum=momentum)

        def step(carry, i):
            p, state = carry
            xb, yb = (jax.lax.dynamic_slice_in_dim(a, i * batch, batch) for a in (x, y))
            updates, state = opt.update(jax.grad(gd.quadratic_cost)(p, xb, yb), state, p)
            return (gd.apply_updates(p, updates), state), None

        return jax.lax.scan(step, (params, opt.init(params)), jnp.arange(15))[0]

    rates, momenta = jnp.array([0.1, 1.0, 3.0]), jnp.array([0.0, 0.5, 0.9])
    ours = jax.jit(jax.vmap(functools.partial(train, make=gd.sgd)))(rates, momenta)
    theirs = jax.jit(jax.vmap(functools.partial(train, make=optax.sgd)))(rates, momenta)
    _assert_same(ours, theirs)
    # Each model got its own hyperparameters: model i is the model trained alone with (eta_i, mu_i),
    # to the rounding that batched products change (the three models differ by far more).
    for i in range(3):
        alone = jax.jit(functools.partial(train, make=gd.sgd))(float(rates[i]), float(momenta[i]))
        for a, b in zip(jax.tree.leaves(alone), jax.tree.leaves(ours)):
            np.testing.assert_allclose(a, b[i], rtol=1e-4, atol=1e-4)
            assert np.max(np.abs(b[i] - b[(i + 1) % 3])) > 1e-2


# --- 3. extra keyword arguments ---------------------------------------------------------------


@pytest.mark.parametrize("momentum", [None, 0.9])
def test_update_accepts_and_ignores_extra_keyword_arguments(small_train, params, momentum):
    ours = _run(gd.sgd(3.0, momentum), params, small_train, 5, value=1.0, loss="anything")
    theirs = _run(optax.sgd(3.0, momentum), params, small_train, 5, value=1.0, loss="anything")
    _assert_same(ours, theirs)
    _assert_same(ours, _run(gd.sgd(3.0, momentum), params, small_train, 5))


# --- 4. the state is optax.sgd's ------------------------------------------------------------

CONFIGS = {
    "plain": (3.0, None, False, None),
    "momentum": (3.0, 0.9, False, None),
    "nesterov": (3.0, 0.9, True, None),
    "schedule": (SCHEDULES["exponential_decay"], None, False, None),
    "schedule and momentum": (SCHEDULES["exponential_decay"], 0.9, False, None),
    "bfloat16 trace": (3.0, 0.9, False, jnp.bfloat16),
}


@pytest.mark.parametrize("config", list(CONFIGS))
def test_state_is_interchangeable_with_optax_sgd(small_train, params, config):
    ours_opt, theirs_opt = gd.sgd(*CONFIGS[config]), optax.sgd(*CONFIGS[config])
    _assert_same(ours_opt.init(params), theirs_opt.init(params))
    # 20 steps with one library, 20 more with the other from its state: the same as 40 with either.
    whole = _run(theirs_opt, params, small_train, 40, apply=optax.apply_updates)
    p, state = _run(ours_opt, params, small_train, 20)
    _assert_same(_run(theirs_opt, p, small_train, 20, state=state, start=20, apply=optax.apply_updates), whole)
    p, state = _run(theirs_opt, params, small_train, 20, apply=optax.apply_updates)
    _assert_same(_run(ours_opt, p, small_train, 20, state=state, start=20), whole)


@pytest.mark.parametrize("direction", ["gd to optax", "optax to gd"])
def test_checkpoint_of_one_restores_into_the_other(tmp_path, small_train, params, direction):
    config = CONFIGS["schedule and momentum"]  # a trace and a step count: every kind of state leaf
    writer, reader = gd.sgd(*config), optax.sgd(*config)
    if direction == "optax to gd":
        writer, reader = reader, writer
    p, state = _run(writer, params, small_train, 20)
    gd.save_checkpoint(tmp_path, epoch=1, state=gd.TrainState(p, state), key=jax.random.key(0))
    restored = gd.load_checkpoint(tmp_path, like=gd.TrainState(params, reader.init(params))).state
    _assert_same(restored, gd.TrainState(p, state))
    _assert_same(_run(reader, restored.params, small_train, 20, state=restored.opt_state, start=20),
                 _run(writer, p, small_train, 20, state=state, start=20))


# --- 5. None gradient leaves with momentum ----------------------------------------------------


@pytest.mark.parametrize("nesterov", [False, True])
def test_none_gradient_leaves_with_momentum_equal_optax(small_train, params, nesterov):
    """A frozen first-layer bias (its gradient None): the trace and update are None there, as in optax."""
    grads = _first_grads(params, small_train)
    grads = [{"w": grads[0]["w"], "b": None}, grads[1]]
    for accumulator_dtype in (None, jnp.bfloat16):
        ours_opt = gd.sgd(0.5, 0.9, nesterov, accumulator_dtype)
        theirs_opt = optax.sgd(0.5, 0.9, nesterov, accumulator_dtype)
        ours, theirs = ours_opt.init(params), theirs_opt.init(params)
        for _ in range(3):
            u_ours, ours = jax.jit(ours_opt.update)(grads, ours, params)
            u_theirs, theirs = jax.jit(theirs_opt.update)(grads, theirs, params)  # both jitted: the same fusion
            _assert_same((u_ours, ours), (u_theirs, theirs))
        assert u_ours[0]["b"] is None and ours[0].trace[0]["b"] is None


# --- 6. what optax.sgd accepts, gd.sgd accepts; what it chokes on, gd.sgd refuses at once -----


@pytest.mark.parametrize(("learning_rate", "momentum", "nesterov"), [
    (0.0, None, False), (-1.0, None, False), (math.nan, None, False), (math.inf, 0.9, False),
    (3.0, 1.0, False), (3.0, -0.1, True), (3.0, 1.5, False), (3.0, math.nan, False),
    (3.0, None, True),  # Nesterov without momentum: plain SGD, as optax makes it
    (jnp.asarray(-2.0), jnp.asarray(1.0), False),
])
def test_sgd_accepts_what_optax_sgd_accepts(small_train, params, learning_rate, momentum, nesterov):
    grads = _first_grads(params, small_train)
    ours_opt, theirs_opt = gd.sgd(learning_rate, momentum, nesterov), optax.sgd(learning_rate, momentum, nesterov)
    ours, theirs = ours_opt.init(params), theirs_opt.init(params)
    for _ in range(2):
        u_ours, ours = ours_opt.update(grads, ours, params)
        u_theirs, theirs = theirs_opt.update(grads, theirs, params)
        _assert_same((u_ours, ours), (u_theirs, theirs))
    # sgd_update takes the same learning rates: p - eta g, as optax.sgd's first step.
    first, _ = theirs_opt.update(grads, theirs_opt.init(params), params)
    if momentum is None:
        _assert_same(gd.sgd_update(params, grads, learning_rate), optax.apply_updates(params, first))


# Each: gd_jax's call, optax's (None where it has no counterpart), gd_jax's message.
REFUSED = {
    "learning rate a string": (lambda: gd.sgd("3.0"), lambda: optax.sgd("3.0"),
                               r"learning_rate must be a number, a scalar array or a schedule .*got '3.0' of type str"),
    "learning rate an array of two": (lambda: gd.sgd(np.array([0.1, 0.2])), lambda: optax.sgd(np.array([0.1, 0.2])),
                                      r"learning_rate must be a scalar, got an array of shape \(2,\); .*jax.vmap"),
    "momentum a string": (lambda: gd.sgd(3.0, momentum="0.9"), lambda: optax.sgd(3.0, momentum="0.9"),
                          r"momentum must be a number or a scalar array, got '0.9' of type str"),
    "momentum an array of three": (lambda: gd.sgd(3.0, momentum=jnp.ones(3)),
                                   lambda: optax.sgd(3.0, momentum=jnp.ones(3)),
                                   r"momentum must be a scalar, got an array of shape \(3,\)"),
    "accumulator dtype unknown": (lambda: gd.sgd(3.0, 0.9, accumulator_dtype="float99"),
                                  lambda: optax.sgd(3.0, 0.9, accumulator_dtype="float99"),
                                  r"accumulator_dtype must be a dtype or None, got 'float99'"),
    "weight decay a string": (lambda: gd.add_decayed_weights("0.1"), lambda: optax.add_decayed_weights("0.1"),
                              r"weight_decay must be a number or a scalar array, got '0.1'"),
    "sgd_update with a schedule": (lambda: gd.sgd_update([{"w": jnp.ones(2)}], [{"w": jnp.ones(2)}], abs), None,
                                   r"learning_rate must be a number or a scalar array here, not a schedule"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_refuses_at_once_what_optax_chokes_on_later(case):
    ours, theirs, message = REFUSED[case]
    with pytest.raises(ValueError, match=message):
        ours()
    if theirs is not None:  # optax takes it or not, but no update goes through
        params = {"w": jnp.ones(5, jnp.float32)}  # shape (5,) broadcasts with neither (2,) nor (3,)
        with pytest.raises((TypeError, ValueError)):
            opt = theirs()
            opt.update(params, opt.init(params), params)


# --- 7. optax's protocol types ---------------------------------------------------------------


def test_every_optimizer_is_an_optax_gradient_transformation_with_extra_args():
    for opt in (gd.sgd(3.0), gd.sgd(3.0, momentum=0.9), gd.add_decayed_weights(1e-4),
                gd.chain(gd.add_decayed_weights(1e-4), gd.sgd(3.0)), gd.scale_learning_rate(gd.sgd(3.0))):
        assert isinstance(opt, optax.GradientTransformationExtraArgs)
        assert isinstance(opt, optax.GradientTransformation) and isinstance(opt, gd.GradientTransformation)
    assert gd.GradientTransformation is optax.GradientTransformation


# --- 8. equal hyperparameters, equal optimizers, one compile ---------------------------------

SHARED_RATE = jnp.asarray(3.0)
EQUAL_PAIRS = {
    "the same array object": lambda: gd.sgd(SHARED_RATE, momentum=0.9),
    "plain": lambda: gd.sgd(3.0),
    "momentum": lambda: gd.sgd(3.0, momentum=0.9, nesterov=True),
    "numpy scalars": lambda: gd.sgd(np.float32(3.0), momentum=np.float64(0.9)),
    "bfloat16 trace": lambda: gd.sgd(3.0, 0.9, accumulator_dtype="bfloat16"),
    "the same schedule object": lambda: gd.sgd(SCHEDULES["exponential_decay"], 0.5),
    "textbook L2": lambda: gd.chain(gd.add_decayed_weights(5.0 / 50_000), gd.sgd(0.5)),
    "mask given as a tuple": lambda: gd.add_decayed_weights(0.1, mask=(True, False)),
    "scaled": lambda: gd.scale_learning_rate(gd.sgd(3.0, momentum=0.9)),
}


@pytest.mark.parametrize("case", list(EQUAL_PAIRS))
def test_optimizers_built_apart_with_equal_hyperparameters_are_equal(case):
    a, b = EQUAL_PAIRS[case](), EQUAL_PAIRS[case]()
    assert a is not b and a == b and hash(a) == hash(b)


@pytest.mark.parametrize(("a", "b"), [
    (lambda: gd.sgd(3.0), lambda: gd.sgd(0.5)),
    (lambda: gd.sgd(3.0), lambda: gd.sgd(3.0, momentum=0.9)),
    (lambda: gd.sgd(3.0, momentum=0.9), lambda: gd.sgd(3.0, momentum=0.9, nesterov=True)),
    (lambda: gd.sgd(3.0), lambda: gd.sgd(np.float32(3.0))),  # promote differently: not interchangeable
    (lambda: gd.sgd(0.0), lambda: gd.sgd(-0.0)),
    (lambda: gd.sgd(3.0, 0.9), lambda: gd.sgd(3.0, 0.9, accumulator_dtype=jnp.bfloat16)),
    (lambda: gd.sgd(jnp.asarray(3.0)), lambda: gd.sgd(jnp.asarray(3.0))),  # arrays: by identity
    (lambda: gd.sgd(lambda k: 3.0), lambda: gd.sgd(lambda k: 3.0)),  # schedules: by identity
    (lambda: gd.add_decayed_weights(0.1), lambda: gd.add_decayed_weights(0.1, mask=True)),
    (lambda: gd.add_decayed_weights(0.1, mask={"w": True}), lambda: gd.add_decayed_weights(0.1, mask={"w": True})),
])
def test_different_hyperparameters_or_objects_are_unequal_and_hashable(a, b):
    a, b = a(), b()
    assert a != b
    hash(a), hash(b)  # never raises, whatever the hyperparameters


def test_jit_compiles_once_for_equal_optimizers_built_apart(small_train, params):
    traces = []

    @functools.partial(jax.jit, static_argnums=0)
    def step(optimizer, params, grads):
        traces.append(optimizer)  # runs only while tracing: counts the compiles
        updates, _ = optimizer.update(grads, optimizer.init(params), params)
        return gd.apply_updates(params, updates)

    grads = _first_grads(params, small_train)
    first = step(gd.sgd(3.0, momentum=0.9), params, grads)
    second = step(gd.sgd(3.0, momentum=0.9), params, grads)
    assert len(traces) == 1
    _assert_same(first, second)
    step(gd.sgd(0.5, momentum=0.9), params, grads)
    assert len(traces) == 2


# --- 9. chapter 3: L2 as add_decayed_weights, chain, and a scale for eta schedules ----------


def _weights_only(params):
    return [{"w": True, "b": False} for _ in params]


@pytest.mark.parametrize("mask", ["textbook", "tree", "callable", "all", "prefix"])
@pytest.mark.parametrize("weight_decay", [0.01, np.float32(0.01), 0.0])
def test_add_decayed_weights_equals_optax(small_train, params, mask, weight_decay):
    ours_mask, theirs_mask = {
        "textbook": (None, _weights_only(params)),
        "tree": (_weights_only(params), _weights_only(params)),
        "callable": (_weights_only, _weights_only),
        "all": (True, True),
        "prefix": ([True, False], [True, False]),  # the whole first layer decays, the second not
    }[mask]
    grads = _first_grads(params, small_train)
    params = [{"w": layer["w"].at[0, 0].set(jnp.inf), "b": layer["b"]} for layer in params]  # 0 * inf: skipped
    ours_opt = gd.add_decayed_weights(weight_decay, ours_mask)
    theirs_opt = optax.add_decayed_weights(weight_decay, theirs_mask)
    ours, theirs = ours_opt.update(grads, ours_opt.init(params), params), theirs_opt.update(
        grads, theirs_opt.init(params), params)
    _assert_same(ours, theirs)
    if mask == "textbook" and weight_decay:  # weights decay, biases never
        np.testing.assert_array_equal(ours[0][1]["b"], grads[1]["b"])
        assert not np.array_equal(ours[0][1]["w"], grads[1]["w"])
    if not weight_decay:  # a decay of 0 leaves the gradient as it is, even where a weight is infinite
        _assert_same(ours[0], grads)


def test_textbook_l2_step_equals_training_the_l2_cost(small_train, params):
    """w -> (1 - eta lambda / n) w - eta dC0/dw; b -> b - eta dC0/db: one step three ways."""
    eta, lmbda, n = 0.5, 5.0, small_train.size
    x, y, _ = _batches(small_train)
    opt = gd.chain(gd.add_decayed_weights(lmbda / n), gd.sgd(eta))
    g0 = jax.grad(gd.quadratic_cost)(params, x[:10], y[:10])
    updates, _ = opt.update(g0, opt.init(params), params)
    stepped = gd.apply_updates(params, updates)
    # The same step as plain SGD on the L2-regularised cost (float32: equal to rounding).
    g_l2 = jax.grad(gd.with_l2(gd.quadratic_cost, lmbda, n))(params, x[:10], y[:10])
    for a, b in zip(jax.tree.leaves(stepped), jax.tree.leaves(gd.sgd_update(params, g_l2, eta))):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    # And the textbook's formula in float64 numpy.
    for layer, g, new in zip(params, g0, stepped):
        w, gw = np.asarray(layer["w"], np.float64), np.asarray(g["w"], np.float64)
        np.testing.assert_allclose(new["w"], (1 - eta * lmbda / n) * w - eta * gw, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(new["b"], np.asarray(layer["b"]) - eta * np.asarray(g["b"]), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("momentum", [None, 0.9])
def test_textbook_l2_chain_equals_optax_chain_over_jitted_steps(small_train, params, momentum):
    lmbda, n = 5.0, small_train.size
    ours = _run(gd.chain(gd.add_decayed_weights(lmbda / n), gd.sgd(0.5, momentum)), params, small_train, 60)
    theirs = _run(optax.chain(optax.add_decayed_weights(lmbda / n, _weights_only(params)), optax.sgd(0.5, momentum)),
                  params, small_train, 60, apply=optax.apply_updates)
    _assert_same(ours, theirs)


def test_chain_mixes_gd_and_optax_transformations_like_optax_chain(small_train, params):
    ours = gd.chain(optax.clip_by_global_norm(1.0), gd.add_decayed_weights(1e-3), gd.sgd(0.5, 0.9, True))
    theirs = optax.chain(optax.clip_by_global_norm(1.0), optax.add_decayed_weights(1e-3, _weights_only),
                         optax.sgd(0.5, 0.9, True))
    _assert_same(_run(ours, params, small_train, 40), _run(theirs, params, small_train, 40))


def test_chain_passes_extra_arguments_only_to_those_that_take_them():
    seen = []

    def needs_value(updates, state, params=None, *, value):
        seen.append(value)
        return jax.tree.map(lambda u: u * value, updates), state

    takes_value = optax.GradientTransformationExtraArgs(optax.init_empty_state, needs_value)
    no_extras = optax.GradientTransformation(optax.init_empty_state, lambda u, s, p=None: (u, s))
    params = {"w": jnp.ones(2)}
    for chain in (gd.chain, optax.chain):
        opt = chain(no_extras, takes_value, gd.sgd(1.0))
        updates, state = opt.update(params, opt.init(params), params, value=3.0)
        np.testing.assert_array_equal(updates["w"], [-3.0, -3.0])
        assert len(state) == 3
    assert seen == [3.0, 3.0]


def test_chain_and_add_decayed_weights_refuse_bad_input_in_one_line(params):
    with pytest.raises(ValueError, match=r"chain's argument 1 must be a gradient transformation .*got 3.0"):
        gd.chain(gd.sgd(1.0), 3.0)
    opt = gd.chain(gd.sgd(1.0), gd.sgd(2.0))
    with pytest.raises(ValueError, match=r"a chain of 2 transformations needs the state its init made"):
        opt.update(params, gd.sgd(1.0).init(params)[:1], params)
    with pytest.raises(ValueError, match=r"mask must be a tree of booleans shaped like the params"):
        gd.add_decayed_weights(0.1, mask={"w": True}).init(params)
    decay = gd.add_decayed_weights(0.1)
    with pytest.raises(ValueError, match=r"add_decayed_weights needs the parameters"):
        decay.update(params, decay.init(params))
    with pytest.raises(ValueError, match=r"scale_learning_rate's optimizer must be a gradient transformation"):
        gd.scale_learning_rate(3.0)


def test_scale_learning_rate_starts_at_one_and_keeps_the_inner_state(params):
    inner = gd.sgd(3.0, momentum=0.9)
    state = gd.scale_learning_rate(inner).init(params)
    assert isinstance(state, gd.ScaleState)
    assert state.scale.dtype == jnp.float32 and state.scale.shape == () and float(state.scale) == 1.0
    _assert_same(state.inner_state, inner.init(params))


@pytest.mark.parametrize("scale", [1.0, 0.5, 0.25, 2.0**-5])
@pytest.mark.parametrize(("momentum", "nesterov"), [(None, False), (0.9, False), (0.9, True)])
def test_scale_power_of_two_equals_the_scaled_learning_rate_exactly(small_train, params, scale, momentum, nesterov):
    """s * (-eta t) equals -(s eta) t exactly when s is a power of two (a halving schedule's values)."""
    opt = gd.scale_learning_rate(gd.sgd(3.0, momentum, nesterov))
    state = opt.init(params)._replace(scale=jnp.float32(scale))
    ours, state = _run(opt, params, small_train, 40, state=state)
    reference, ref_state = _run(optax.sgd(scale * 3.0, momentum, nesterov), params, small_train, 40)
    _assert_same(ours, reference)
    _assert_same(state.inner_state, ref_state)  # the trace does not depend on eta


def test_halving_the_scale_between_epochs_equals_restarting_with_half_eta(small_train, params):
    """What fit's eta schedule does: the same as switching to sgd(eta / 2) with the same trace."""
    opt = gd.scale_learning_rate(gd.sgd(3.0, momentum=0.9))
    p, state = _run(opt, params, small_train, 15)
    p, state = _run(opt, p, small_train, 15, state=state._replace(scale=state.scale * 0.5), start=15)
    p, state = _run(opt, p, small_train, 15, state=state._replace(scale=state.scale * 0.5), start=30)
    ref, ref_state = _run(gd.sgd(3.0, momentum=0.9), params, small_train, 15)
    ref, ref_state = _run(gd.sgd(1.5, momentum=0.9), ref, small_train, 15, state=ref_state, start=15)
    ref, ref_state = _run(gd.sgd(0.75, momentum=0.9), ref, small_train, 15, state=ref_state, start=30)
    _assert_same((p, state.inner_state), (ref, ref_state))
    assert float(state.scale) == 0.25


def test_scale_other_than_a_power_of_two_is_one_rounding_from_the_scaled_rate(small_train, params):
    """s = 0.3: fl(s) fl(eta g) and fl(s eta) g round differently: a few float32 roundings apart."""
    grads = _first_grads(params, small_train)
    opt = gd.scale_learning_rate(gd.sgd(3.0, momentum=0.9))
    updates, _ = opt.update(grads, opt.init(params)._replace(scale=jnp.float32(0.3)), params)
    reference_opt = gd.sgd(0.3 * 3.0, momentum=0.9)
    reference, _ = reference_opt.update(grads, reference_opt.init(params), params)
    for a, b in zip(jax.tree.leaves(updates), jax.tree.leaves(reference)):
        # five roundings of relative size <= 2**-24 at most: rtol 2**-21 (four float32 ulps)
        np.testing.assert_allclose(a, b, rtol=2.0**-21, atol=0)


def test_scale_keeps_low_precision_updates_in_their_dtype():
    params = {"w": jnp.asarray([1.0, -2.0, 3.0], jnp.bfloat16)}
    opt = gd.scale_learning_rate(gd.sgd(3.0))
    updates, _ = opt.update(params, opt.init(params)._replace(scale=jnp.float32(0.5)), params)
    reference, _ = optax.sgd(1.5).update(params, optax.sgd(1.5).init(params), params)
    _assert_same(updates, reference)


def test_the_docs_optimizers_example_runs_and_each_optimizer_trains(small_train):
    """The Optimizers page's block, run as written; each optimizer then takes real steps like optax's."""
    page = (Path(__file__).resolve().parents[1] / "docs/how-to/optimizers.md").read_text()
    block = re.search(r"```python\n(.*?)```", page, re.S).group(1)
    namespace: dict = {}
    exec(compile(block, "docs/how-to/optimizers.md", "exec"), namespace)
    assert float(namespace["state"].scale) == 0.5
    references = [
        optax.sgd(3.0, momentum=0.9, nesterov=True),
        optax.sgd(optax.exponential_decay(3.0, 500, 0.5)),
        optax.inject_hyperparams(optax.sgd)(learning_rate=3.0, momentum=0.9),
        optax.sgd(3.0, momentum=0.9, accumulator_dtype=jnp.bfloat16),
        optax.chain(optax.add_decayed_weights(5.0 / 5000, _weights_only(namespace["params"])), optax.sgd(0.5)),
    ]
    assert len(namespace["optimizers"]) == len(references)
    for ours, theirs in zip(namespace["optimizers"], references):
        _assert_same(_run(ours, namespace["params"], small_train, 3), _run(theirs, namespace["params"], small_train, 3))
