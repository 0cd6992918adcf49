"""Framework models as they are (issue 21): Equinox, Flax linen, Flax nnx (module and state), a dict of tuples.

Each framework's model is trained by ``gd.fit`` and by the same training written by hand with
that framework's own tools (Equinox: ``eqx.filter_value_and_grad`` + optax; linen:
``model.apply`` + optax; nnx: ``nnx.split``/``nnx.merge`` + optax), over the same batch orders
(``gd.shuffled_order(fold_in(key, epoch), n)``): the parameters agree to float tolerance and
both reach the same accuracy on the embedded sample's test digits. Flax and Equinox are
test-only dependencies (the ``frameworks`` line of the test extra); gd_jax imports neither.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gd_jax as gd

eqx = pytest.importorskip("equinox")
flax = pytest.importorskip("flax")
from flax import linen as nn  # noqa: E402
from flax import nnx  # noqa: E402

KEY = jax.random.key(1)
EPOCHS, BATCH, ETA = 2, 10, 3.0
ACCURACY_FLOOR = 0.85  # [784, 30, 10] sigmoid nets after 2 epochs of the sample reach about 0.89


@pytest.fixture(scope="module")
def sample():
    return gd.load_mnist("sample")


def _quadratic(a, y):
    return 0.5 * jnp.mean(jnp.sum((y - a) ** 2, axis=-1))


def _by_hand(step, carry, train, epochs=EPOCHS, batch=BATCH):
    """Mini-batch training written out: ``carry = step(carry, x_batch, y_onehot_batch)`` in fit's batch orders."""
    x, y = jnp.asarray(train.x), jax.nn.one_hot(train.y, 10)
    for epoch in range(epochs):
        order = gd.shuffled_order(jax.random.fold_in(KEY, epoch), train.size)
        for start in range(0, train.size, batch):
            rows = order[start:start + batch]
            carry = step(carry, x[rows], y[rows])
    return carry


def _fit(model, train, cost, predict_fn, **kwargs):
    return gd.fit(model, train, epochs=EPOCHS, batch_size=BATCH, optimizer=optax.sgd(ETA), cost=cost, key=KEY,
                  predict_fn=predict_fn, **kwargs)


def _assert_close(a, b, rtol=1e-5, atol=1e-6):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb) > 0
    for x, y in zip(la, lb):
        assert x.shape == y.shape and x.dtype == y.dtype
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


# Equinox: a module whose activation functions are leaves ---------------------------------------


def _eqx_model():
    return eqx.nn.MLP(784, 10, 30, 1, activation=jax.nn.sigmoid, final_activation=jax.nn.sigmoid,
                      key=jax.random.key(0))


def _eqx_cost(model, x, y):
    return _quadratic(jax.vmap(model)(x), y)


def _eqx_predict(model, x):
    return jax.vmap(model)(x)


@pytest.mark.slow
def test_equinox_module_trains_as_eqx_filter_value_and_grad_with_optax_does(sample):
    train, test = sample
    model = _eqx_model()
    trained, history = _fit(model, train, _eqx_cost, _eqx_predict)

    opt = optax.sgd(ETA)

    @eqx.filter_jit
    def step(carry, xb, yb):
        m, state = carry
        _, grads = eqx.filter_value_and_grad(_eqx_cost)(m, xb, yb)
        updates, state = opt.update(grads, state, eqx.filter(m, eqx.is_inexact_array))
        return eqx.apply_updates(m, updates), state

    twin, _ = _by_hand(step, (model, opt.init(eqx.filter(model, eqx.is_inexact_array))), train)
    assert type(trained) is eqx.nn.MLP
    assert trained.activation is model.activation and trained.final_activation is model.final_activation
    _assert_close(eqx.filter(trained, eqx.is_inexact_array), eqx.filter(twin, eqx.is_inexact_array))
    ours, theirs = (gd.accuracy(m, test, predict_fn=_eqx_predict) for m in (trained, twin))
    assert ours == pytest.approx(theirs, abs=1e-3) and ours > ACCURACY_FLOOR
    assert history["train_accuracy"][-1] > ACCURACY_FLOOR


# Flax linen: a variables dict and model.apply ---------------------------------------------------


class _LinenMLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(10)(jax.nn.sigmoid(nn.Dense(30)(x)))


def _linen_cost(variables, x, y):
    return _quadratic(jax.nn.sigmoid(_LinenMLP().apply(variables, x)), y)


@pytest.mark.slow
def test_flax_linen_variables_train_as_model_apply_with_optax_does(sample):
    train, test = sample
    variables = _LinenMLP().init(jax.random.key(0), jnp.zeros((1, 784)))
    predict = _LinenMLP().apply
    trained, _ = _fit(variables, train, _linen_cost, predict)

    opt = optax.sgd(ETA)

    @jax.jit
    def step(carry, xb, yb):
        v, state = carry
        grads = jax.grad(_linen_cost)(v, xb, yb)
        updates, state = opt.update(grads, state, v)
        return optax.apply_updates(v, updates), state

    twin, _ = _by_hand(step, (variables, opt.init(variables)), train)
    assert jax.tree.structure(trained) == jax.tree.structure(variables)
    _assert_close(trained, twin)
    ours, theirs = (gd.accuracy(v, test, predict_fn=predict) for v in (trained, twin))
    assert ours == pytest.approx(theirs, abs=1e-3) and ours > ACCURACY_FLOOR


# Flax nnx: the module itself (a pytree in Flax 0.12), and its state with nnx.merge ---------------


class _NnxMLP(nnx.Module):
    def __init__(self, rngs):
        self.hidden = nnx.Linear(784, 30, rngs=rngs)
        self.out = nnx.Linear(30, 10, rngs=rngs)
        self.dropout = nnx.Dropout(0.5, rngs=rngs)  # unused here: its PRNG key and count must come back unchanged

    def __call__(self, x):
        return self.out(jax.nn.sigmoid(self.hidden(x)))


def _nnx_cost(model, x, y):
    return _quadratic(jax.nn.sigmoid(model(x)), y)


def _nnx_twin(model, train):
    """nnx's own way: split the module, differentiate the Param state through nnx.merge, optax on that state."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    opt = optax.sgd(ETA)

    @jax.jit
    def step(carry, xb, yb):
        p, state = carry
        grads = jax.grad(lambda p: _nnx_cost(nnx.merge(graphdef, p, rest), xb, yb))(p)
        updates, state = opt.update(grads, state, p)
        return optax.apply_updates(p, updates), state

    params, _ = _by_hand(step, (params, opt.init(params)), train)
    return nnx.merge(graphdef, params, rest)


def _nnx_predict(model, x):
    return model(x)


@pytest.mark.slow
def test_flax_nnx_module_and_state_train_as_nnx_split_merge_with_optax_does(sample):
    train, test = sample
    model = _NnxMLP(nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    trained, _ = _fit(model, train, _nnx_cost, _nnx_predict)
    trained_state, _ = _fit(state, train, lambda s, x, y: _nnx_cost(nnx.merge(graphdef, s), x, y),
                            lambda s, x: nnx.merge(graphdef, s)(x))
    twin = _nnx_twin(model, train)

    assert type(trained) is _NnxMLP and type(trained_state) is type(state)
    _assert_close(nnx.state(trained, nnx.Param), nnx.state(twin, nnx.Param))
    _assert_close(nnx.state(nnx.merge(graphdef, trained_state), nnx.Param), nnx.state(twin, nnx.Param))
    key_data = lambda m: jax.random.key_data(m.dropout.rngs.key[...])  # noqa: E731
    np.testing.assert_array_equal(key_data(trained), key_data(model))
    assert int(trained.dropout.rngs.count[...]) == int(model.dropout.rngs.count[...])
    ours, theirs = (gd.accuracy(m, test, predict_fn=_nnx_predict) for m in (trained, twin))
    assert ours == pytest.approx(theirs, abs=1e-3) and ours > ACCURACY_FLOOR


# A user's dict of tuples, with a function and a step counter among its leaves -------------------


def _tuples_model():
    rng = np.random.default_rng(0)
    layers = tuple((jnp.asarray(rng.standard_normal((m, n)), jnp.float32), jnp.asarray(rng.standard_normal(n),
                                                                                      jnp.float32))
                   for m, n in ((784, 16), (16, 10)))
    return {"layers": layers, "activation": jax.nn.sigmoid, "seen": jnp.array(7, jnp.int32)}


def _tuples_scores(model, x):
    (w1, b1), (w2, b2) = model["layers"]
    return model["activation"](model["activation"](x @ w1 + b1) @ w2 + b2)


def _tuples_cost(model, x, y):
    return _quadratic(_tuples_scores(model, x), y)


def test_a_dict_of_tuples_trains_its_float_arrays_and_carries_the_rest(sample):
    train = sample[0].take(500)
    model = _tuples_model()
    trained, history = gd.fit(model, train, epochs=2, batch_size=BATCH, optimizer=gd.sgd(ETA), cost=_tuples_cost,
                              key=KEY, predict_fn=_tuples_scores)
    assert trained["activation"] is jax.nn.sigmoid and trained["seen"].dtype == jnp.int32 and trained["seen"] == 7

    opt = optax.sgd(ETA)

    @jax.jit
    def step(carry, xb, yb):
        layers, state = carry
        grads = jax.grad(lambda layers: _tuples_cost({**model, "layers": layers}, xb, yb))(layers)
        updates, state = opt.update(grads, state, layers)
        return optax.apply_updates(layers, updates), state

    layers, _ = _by_hand(step, (model["layers"], opt.init(model["layers"])), train, epochs=2)
    _assert_close(trained["layers"], layers)
    assert history["train_accuracy"][-1] is not None


# The other doors: make_epoch, evaluate, accuracy, checkpoints, partition_params ----------------


def test_make_epoch_evaluate_and_accuracy_take_an_equinox_module(sample):
    train = sample[0].take(200)
    model = _eqx_model()
    opt = optax.sgd(ETA)
    params, _ = gd.partition_params(model)
    epoch = eqx.filter_jit(gd.make_epoch(_eqx_cost, opt, batch_size=BATCH, n_classes=10))
    state, finite = epoch(gd.TrainState(model, opt.init(params)), jnp.asarray(train.x), jnp.asarray(train.y),
                          gd.shuffled_order(jax.random.fold_in(KEY, 0), train.size))
    fitted, _ = gd.fit(model, train, epochs=1, batch_size=BATCH, optimizer=opt, cost=_eqx_cost, key=KEY)
    assert bool(finite) and type(state.params) is eqx.nn.MLP
    _assert_close(eqx.filter(state.params, eqx.is_inexact_array), eqx.filter(fitted, eqx.is_inexact_array))
    cost, accuracy = gd.evaluate(fitted, train, cost=_eqx_cost, predict_fn=_eqx_predict, n_classes=10)
    assert np.isfinite(cost) and accuracy == pytest.approx(gd.accuracy(fitted, train, predict_fn=_eqx_predict))


@pytest.mark.parametrize("kind", ["equinox", "nnx"])
def test_a_checkpoint_of_a_framework_model_restores_it_with_its_static_leaves(tmp_path, kind):
    model = _eqx_model() if kind == "equinox" else _NnxMLP(nnx.Rngs(0))
    opt = optax.adam(1e-3)
    params, _ = gd.partition_params(model)
    state = gd.TrainState(model, opt.init(params))
    gd.save_checkpoint(tmp_path, epoch=3, state=state, key=KEY, best_params=model)
    like = gd.TrainState(_eqx_model() if kind == "equinox" else _NnxMLP(nnx.Rngs(5)), opt.init(params))
    ckpt = gd.load_checkpoint(tmp_path, like=like)
    assert type(ckpt.state.params) is type(model) and type(ckpt.best_params) is type(model)
    assert jax.tree.structure(ckpt.state) == jax.tree.structure(state)
    for restored in (ckpt.state, ckpt.best_params):
        original = state if restored is ckpt.state else model
        for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(original)):
            if jax.dtypes.issubdtype(getattr(a, "dtype", None), jax.dtypes.prng_key):
                a, b = jax.random.key_data(a), jax.random.key_data(b)
            if isinstance(a, jax.Array):
                np.testing.assert_array_equal(np.asarray(a), np.asarray(b), strict=True)
            else:
                assert a is b or a == b


def test_partition_and_combine_round_trip_and_keep_a_plain_model_whole():
    model = _tuples_model()
    params, static = gd.partition_params(model)
    assert [leaf.dtype for leaf in jax.tree.leaves(params)] == [jnp.float32] * 4
    assert params["activation"] is None and params["seen"] is None
    assert jax.tree.leaves(static) == [model["seen"]]  # the other arrays: what jit and vmap see
    again = gd.combine_params(params, static)
    assert jax.tree.structure(again) == jax.tree.structure(model) and again["activation"] is jax.nn.sigmoid
    mlp = gd.init_mlp(jax.random.key(0), [3, 2])
    assert gd.partition_params(mlp) == (mlp, None) and gd.combine_params(mlp, None) is mlp
    # (params, static) cross jax.jit as they are
    out = jax.jit(functools.partial(lambda p, s, x: _tuples_scores(gd.combine_params(p, s), x)))(
        params, static, jnp.ones((2, 784)))
    assert out.shape == (2, 10)
