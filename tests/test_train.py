import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gd_jax as gd


def _leaves_equal(a, b):
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _batches(key, epoch, n, batch_size):
    """The documented shuffling rule: epoch e visits shuffled_order(fold_in(key, e), n); a smaller last batch."""
    seed = np.asarray(jax.random.key_data(jax.random.fold_in(key, epoch)), np.uint32).tolist()
    order = np.random.default_rng(seed).permutation(n)
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


def _numpy_textbook_sgd(params, data, *, key, epochs, batch_size, eta):
    """network.py's update_mini_batch in float64 numpy, gradients by textbook backprop."""
    params = [{k: np.asarray(v, np.float64) for k, v in layer.items()} for layer in params]
    x, y = np.asarray(data.x, np.float64), np.eye(10)[np.asarray(data.y)]
    for epoch in range(epochs):
        for rows in _batches(key, epoch, len(x), batch_size):
            grads = gd.backprop(params, x[rows], y[rows], cost="quadratic")
            params = [{k: layer[k] - eta * g[k] for k in layer} for layer, g in zip(params, grads)]
    return params


# Batches that divide n, leave a tail, stochastic (a smaller eta: 600 single-example steps at
# eta 3 are chaotic enough to amplify float32 rounding past any fixed tolerance), full batch.
@pytest.mark.parametrize(("batch_size", "eta"), [(10, 3.0), (7, 3.0), (1, 0.1), (300, 3.0)])
def test_fit_matches_numpy_textbook_sgd(small_train, batch_size, eta):
    key = jax.random.key(7)
    params = gd.init_mlp(jax.random.key(0), [784, 30, 10])
    got, history = gd.fit(params, small_train, epochs=2, batch_size=batch_size, optimizer=gd.sgd(eta),
                          cost=gd.quadratic_cost, key=key)
    want = _numpy_textbook_sgd(params, small_train, key=key, epochs=2, batch_size=batch_size, eta=eta)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        # float32 training against a float64 reference over up to 600 steps.
        np.testing.assert_allclose(g, w, rtol=1e-3, atol=2e-4)
    assert len(history) == 2


def test_full_batch_fit_is_gradient_descent(small_train):
    """batch_size = n: one step per epoch on the gradient of the whole training cost."""
    params = gd.init_mlp(jax.random.key(0), [784, 30, 10], "scaled")
    got, _ = gd.fit(params, small_train, epochs=5, batch_size=small_train.size, optimizer=gd.sgd(1.0),
                    cost=gd.cross_entropy_cost, key=jax.random.key(0))
    x, y = jnp.asarray(small_train.x), jax.nn.one_hot(small_train.y, 10)
    want = params
    for _ in range(5):
        want = gd.sgd_update(want, jax.grad(gd.cross_entropy_cost)(want, x, y), 1.0)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def test_fit_is_deterministic_under_a_key_and_never_mutates_its_inputs(small_train):
    params = gd.init_mlp(jax.random.key(0), [784, 30, 10])
    before = jax.tree.map(np.array, params)
    run = functools.partial(gd.fit, params, small_train, epochs=3, batch_size=10, optimizer=gd.sgd(3.0, momentum=0.5),
                            cost=gd.quadratic_cost)
    a, history_a = run(key=jax.random.key(1))
    b, history_b = run(key=jax.random.key(1))
    c, _ = run(key=jax.random.key(2))
    assert _leaves_equal(a, b)
    assert history_a["train_cost"] == history_b["train_cost"]
    assert not _leaves_equal(a, c)
    assert _leaves_equal(params, before)


def test_fit_accepts_optax_optimizers_and_matches_its_own_sgd(small_train):
    params = gd.init_mlp(jax.random.key(0), [784, 30, 10])
    run = functools.partial(gd.fit, params, small_train, epochs=2, batch_size=10, cost=gd.quadratic_cost,
                            key=jax.random.key(3))
    ours, _ = run(optimizer=gd.sgd(3.0, momentum=0.9, nesterov=True))
    theirs, _ = run(optimizer=optax.sgd(3.0, momentum=0.9, nesterov=True))
    assert _leaves_equal(ours, theirs)
    _, history = run(optimizer=optax.adam(1e-3))
    assert history["train_cost"][-1] < history["train_cost"][0]


def test_resuming_at_an_epoch_boundary_reproduces_the_run(small_train):
    params = gd.init_mlp(jax.random.key(0), [784, 30, 10])
    opt = gd.sgd(3.0, momentum=0.9)
    def run(params, **kwargs):
        return gd.fit(params, small_train, batch_size=10, optimizer=opt, cost=gd.quadratic_cost,
                      key=jax.random.key(4), **kwargs)

    straight, straight_history = run(params, epochs=4)
    saved = []
    run(params, epochs=2, on_epoch_end=saved.append)
    last = saved[-1]
    resumed, resumed_history = run(last.state.params, epochs=4, opt_state=last.state.opt_state,
                                   history=last.history)
    assert _leaves_equal(straight, resumed)
    assert resumed_history["train_cost"] == straight_history["train_cost"]
    assert [e.epoch for e in saved] == [1, 2]


def test_history_records_each_epoch_and_serialises(mnist_sample):
    train, test = mnist_sample
    params = gd.init_mlp(jax.random.key(0), [784, 30, 10])
    params, history = gd.fit(params, train.take(1000), eval_data=test.take(500), epochs=3, batch_size=10,
                             optimizer=gd.sgd(3.0), cost=gd.quadratic_cost, key=jax.random.key(0))
    assert history["epoch"] == [1, 2, 3] and history.stop_reason == "epochs"
    cost, acc = gd.evaluate(params, test.take(500), cost=gd.quadratic_cost)
    assert history["eval_accuracy"][-1] == acc and history["eval_cost"][-1] == cost
    # accuracy by numpy argmax over the network's output.
    want = np.mean(np.argmax(np.asarray(gd.predict(params, test.x[:500])), axis=1) == test.y[:500])
    assert gd.accuracy(params, test.take(500)) == pytest.approx(want, abs=1e-7)
    assert gd.History.from_dict(history.to_dict()) == history
    assert all(s > 0 for s in history["seconds"])


def test_target_cost_stops_early(small_train):
    params = gd.init_mlp(jax.random.key(0), [784, 30, 10], "scaled")
    _, full = gd.fit(params, small_train, epochs=6, batch_size=10, optimizer=gd.sgd(3.0),
                     cost=gd.quadratic_cost, key=jax.random.key(0))
    target = full["train_cost"][2]  # reached after the third epoch
    _, stopped = gd.fit(params, small_train, epochs=6, batch_size=10, optimizer=gd.sgd(3.0),
                        cost=gd.quadratic_cost, key=jax.random.key(0), target_cost=target)
    assert stopped.stop_reason == "target_cost"
    assert stopped["train_cost"] == full["train_cost"][:len(stopped)]
    assert stopped["train_cost"][-1] <= target < min(stopped["train_cost"][:-1], default=np.inf)


@pytest.mark.parametrize(("activation", "match"), [("identity", "NaN or infinite"), ("sigmoid", "parameters grew")])
def test_divergence_stops_the_run_and_keeps_the_last_good_state(small_train, activation, match):
    params = gd.init_mlp(jax.random.key(0), [784, 30, 10])
    cost = functools.partial(gd.quadratic_cost, activation=activation)
    seen = []
    with pytest.raises(gd.DivergenceError, match=match) as info:
        gd.fit(params, small_train, epochs=5, batch_size=10, optimizer=gd.sgd(1e4), cost=cost,
               key=jax.random.key(0), activation=activation, on_epoch_end=seen.append)
    assert info.value.epoch == 1 and seen == [] and len(info.value.history) == 0
    assert "smaller" in str(info.value)
    assert _leaves_equal(info.value.last_finite.params, params)


@pytest.mark.slow
def test_textbook_run_on_the_sample_reaches_the_known_accuracy(mnist_sample, check_recorded_accuracy):
    """[784, 30, 10], quadratic cost, eta 3, batch 10, 30 epochs, seed 2: the CLI's default run."""
    train, test = mnist_sample
    init_key, shuffle_key = jax.random.split(jax.random.key(2))
    params = gd.init_mlp(init_key, [784, 30, 10])
    params, history = gd.fit(params, train, eval_data=test, epochs=30, batch_size=10, optimizer=gd.sgd(3.0),
                             cost=gd.quadratic_cost, key=shuffle_key)
    check_recorded_accuracy(history["eval_accuracy"][-1], "gd-jax train")
    assert history["train_cost"][-1] < history["train_cost"][0]


def test_make_epoch_vmaps_over_models_and_learning_rates(small_train):
    """One compile trains several models at once; each equals its own separate run."""
    x, y = jnp.asarray(small_train.x), jnp.asarray(small_train.y)
    keys = jax.random.split(jax.random.key(0), 3)
    rates = jnp.array([0.5, 1.0, 3.0])

    def one_model(key, rate, order):
        init_key, _ = jax.random.split(key)
        params = gd.init_mlp(init_key, [784, 20, 10])
        opt = gd.sgd(rate)  # the learning rate as an array: a hyperparameter vmap can batch
        epoch = gd.make_epoch(gd.quadratic_cost, opt, batch_size=16, n_classes=10)
        state, finite = epoch(gd.TrainState(params, opt.init(params)), x, y, order)
        return state.params, finite

    def order_of(key):
        return gd.shuffled_order(jax.random.split(key)[1], small_train.size)

    orders = np.stack([order_of(k) for k in keys])
    batched, finite = jax.jit(jax.vmap(one_model))(keys, rates, orders)
    assert bool(jnp.all(finite))
    for i in range(3):
        single, _ = jax.jit(one_model)(keys[i], rates[i], orders[i])
        for b, s in zip(jax.tree.leaves(batched), jax.tree.leaves(single)):
            np.testing.assert_allclose(b[i], s, rtol=1e-5, atol=1e-6)
