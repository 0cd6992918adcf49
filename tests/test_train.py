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


def test_shuffled_order_is_a_permutation_fixed_by_the_key():
    a = gd.shuffled_order(jax.random.key(3), 1000)
    assert a.dtype == np.int32 and sorted(a.tolist()) == list(range(1000))
    np.testing.assert_array_equal(a, gd.shuffled_order(jax.random.key(3), 1000))
    np.testing.assert_array_equal(a, gd.shuffled_order(jax.random.PRNGKey(3), 1000))  # raw keys: the same bits
    assert not np.array_equal(a, gd.shuffled_order(jax.random.key(4), 1000))


def _custom_model(key, sizes):
    """A model that is not gd_jax's layout: a dict of (w, b) tuples with its own forward pass."""
    keys = jax.random.split(key, len(sizes) - 1)
    return {f"dense{i}": (jax.random.normal(k, (m, n)) / np.sqrt(m), jnp.zeros(n))
            for i, (k, m, n) in enumerate(zip(keys, sizes[:-1], sizes[1:]))}


def _custom_forward(params, x):
    for i in range(len(params)):
        w, b = params[f"dense{i}"]
        x = x @ w + b
        if i < len(params) - 1:
            x = jnp.tanh(x)
    return x  # logits


def _custom_cost(params, x, y):
    return jnp.mean(optax.softmax_cross_entropy(_custom_forward(params, x), y))


def test_fit_trains_any_pytree_model_with_its_own_cost_and_predict_fn(small_train, mnist_sample):
    params = _custom_model(jax.random.key(0), [784, 32, 10])
    test = mnist_sample[1].take(500)
    trained, history = gd.fit(params, small_train, eval_data=test, epochs=3, batch_size=10,
                              optimizer=optax.sgd(0.1), cost=_custom_cost, key=jax.random.key(1),
                              predict_fn=_custom_forward)
    assert jax.tree.structure(trained) == jax.tree.structure(params)
    # The same steps written out with optax: shuffles by the documented rule, one-hot targets.
    x, y = jnp.asarray(small_train.x), jax.nn.one_hot(small_train.y, 10)
    opt = optax.sgd(0.1)
    want, state = params, opt.init(params)
    step = jax.jit(lambda p, s, xb, yb: _optax_step(opt, p, s, xb, yb))
    for epoch in range(3):
        order = gd.shuffled_order(jax.random.fold_in(jax.random.key(1), epoch), small_train.size)
        for i in range(0, small_train.size, 10):
            want, state = step(want, state, x[order[i:i + 10]], y[order[i:i + 10]])
    for g, w in zip(jax.tree.leaves(trained), jax.tree.leaves(want)):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    scores = np.asarray(_custom_forward(trained, jnp.asarray(test.x)))
    assert history["eval_accuracy"][-1] == pytest.approx(np.mean(scores.argmax(1) == np.asarray(test.y)), abs=1e-7)
    assert history["eval_accuracy"][-1] > 0.5  # it learned from 300 digits
    # Without a predict_fn a custom model still trains; accuracy is simply not measured.
    _, blind = gd.fit(params, small_train, epochs=1, batch_size=10, optimizer=optax.sgd(0.1), cost=_custom_cost,
                      key=jax.random.key(1))
    assert blind["train_accuracy"] == [None] and blind["train_cost"][0] == pytest.approx(history["train_cost"][0])


def _optax_step(opt, params, state, xb, yb):
    grads = jax.grad(_custom_cost)(params, xb, yb)
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state


def test_fit_takes_the_number_of_classes_from_an_argument_or_the_labels(small_train):
    params = _custom_model(jax.random.key(0), [784, 16, 12])  # 12 outputs for labels 0..9
    run = functools.partial(gd.fit, params, small_train, epochs=1, batch_size=30, optimizer=optax.sgd(0.1),
                            cost=_custom_cost, key=jax.random.key(0))
    # The labels say 10 classes: one-hot rows of 10 against 12 logits, told before compiling (issue 21).
    with pytest.raises(ValueError, match=r"width 10 fails.*\(1, 12\)"):
        run()
    _, history = run(n_classes=12)
    assert np.isfinite(history["train_cost"][0])


def test_a_second_fit_with_equal_settings_compiles_nothing(small_train):
    params = gd.init_mlp(jax.random.key(0), [784, 24, 10])
    opt = gd.sgd(3.0)
    run = functools.partial(gd.fit, params, small_train, eval_data=small_train.take(100), epochs=2, batch_size=10,
                            optimizer=opt, cost=gd.quadratic_cost)
    compiles = []

    def listener(name, seconds, **_):
        if name == "/jax/core/compile/backend_compile_duration":
            compiles.append(seconds)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        run(key=jax.random.key(1))
        first = len(compiles)
        seen_at_epoch_end = []
        _, history = run(key=jax.random.key(2), on_epoch_end=lambda end: seen_at_epoch_end.append(len(compiles)))
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert first >= 2  # the epoch and the end-of-epoch measurements
    assert len(compiles) == first  # the second fit: another key, the same settings, nothing compiled
    assert seen_at_epoch_end == [first, first]
    assert history.compile_seconds >= 0 and "compile_seconds" in history.to_dict()


def test_compilation_happens_before_the_first_epoch_is_timed(small_train, monkeypatch):
    """Every compile of a fit happens in its ahead-of-time phase, none inside the timed epochs."""
    import gd_jax._src.train

    params = gd.init_mlp(jax.random.key(0), [784, 26, 10])  # a shape no other test compiles
    events = []
    ahead_of_time = gd_jax._src.train.compile_cached

    def marked(*args, **kwargs):
        compiled = ahead_of_time(*args, **kwargs)
        events.append("ahead-of-time compile done")
        return compiled

    def listener(name, seconds, **_):
        if name == "/jax/core/compile/backend_compile_duration":
            events.append("backend compile")

    monkeypatch.setattr(gd_jax._src.train, "compile_cached", marked)
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        _, history = gd.fit(params, small_train, epochs=3, batch_size=10, optimizer=gd.sgd(3.0),
                            cost=gd.quadratic_cost, key=jax.random.key(0))
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert "backend compile" in events and history.compile_seconds > 0
    assert events[-1] == "ahead-of-time compile done"  # nothing compiled once the epochs began


def test_train_accuracy_is_the_accuracy_on_the_training_set(small_train):
    params, history = gd.fit(gd.init_mlp(jax.random.key(0), [784, 30, 10]), small_train, epochs=2, batch_size=10,
                             optimizer=gd.sgd(3.0), cost=gd.quadratic_cost, key=jax.random.key(0))
    assert history["train_accuracy"][-1] == pytest.approx(gd.accuracy(params, small_train), abs=1e-7)
    assert history["train_cost"][-1] == pytest.approx(gd.evaluate(params, small_train, cost=gd.quadratic_cost)[0],
                                                      rel=1e-6)


def test_a_resumed_run_that_already_met_its_target_returns_at_once(small_train):
    params = gd.init_mlp(jax.random.key(0), [784, 30, 10], "scaled")
    run = functools.partial(gd.fit, train=small_train, epochs=5, batch_size=10, optimizer=gd.sgd(3.0),
                            cost=gd.quadratic_cost, key=jax.random.key(0))
    ends = []
    trained, history = run(params, epochs=2, on_epoch_end=ends.append)
    target = history["train_cost"][-1]
    called = []
    again, resumed = run(trained, history=history, target_cost=target, on_epoch_end=called.append)
    assert called == [] and len(resumed) == 2 and resumed.stop_reason == "target_cost"
    assert _leaves_equal(again, trained)


def _textbook_stop(accuracies, patience):
    """Chapter 3's no-improvement-in-N rule, written out: (epochs run, best epoch)."""
    best, best_epoch = -1.0, 0
    for epoch, a in enumerate(accuracies, 1):
        if a > best:
            best, best_epoch = a, epoch
        elif epoch - best_epoch >= patience:
            return epoch, best_epoch
    return len(accuracies), best_epoch


def test_early_stopping_returns_the_best_epoch_by_the_textbook_rule(small_train, mnist_sample):
    params = gd.init_mlp(jax.random.key(0), [784, 30, 10])
    validation = mnist_sample[1].take(300)
    run = functools.partial(gd.fit, params, small_train, eval_data=validation, batch_size=10,
                            optimizer=gd.sgd(3.0), cost=gd.quadratic_cost, key=jax.random.key(5))
    states = []
    _, full = run(epochs=25, on_epoch_end=lambda end: states.append(end.state.params))
    stop, best = _textbook_stop(full["eval_accuracy"], patience=2)
    assert stop < 25  # the reference run does stall in the window, so the rule has something to do
    params_best, stopped = run(epochs=25, patience=2)
    assert len(stopped) == stop and stopped.stop_reason == "early_stopping" and stopped.best_epoch == best
    assert stopped["eval_accuracy"] == full["eval_accuracy"][:stop]
    assert _leaves_equal(params_best, states[best - 1])


def test_early_stopping_resumes_exactly(small_train, mnist_sample):
    params = gd.init_mlp(jax.random.key(0), [784, 30, 10])
    run = functools.partial(gd.fit, train=small_train, eval_data=mnist_sample[1].take(300), batch_size=10,
                            optimizer=gd.sgd(3.0), cost=gd.quadratic_cost, key=jax.random.key(5), patience=2)
    straight, straight_history = run(params, epochs=25)
    ends = []
    run(params, epochs=4, on_epoch_end=ends.append)
    last = ends[-1]
    with pytest.raises(ValueError, match="best_params"):
        run(last.state.params, epochs=25, opt_state=last.state.opt_state, history=last.history)
    resumed, resumed_history = run(last.state.params, epochs=25, opt_state=last.state.opt_state,
                                   history=last.history, best_params=last.best_params)
    assert _leaves_equal(resumed, straight) and resumed_history.best_epoch == straight_history.best_epoch


def _textbook_halvings(accuracies, n):
    """Chapter 3's schedule, written out: the learning-rate scale each epoch trains with, and where it stops."""
    scales, scale, best, since = [], 1.0, -1.0, 0
    for a in accuracies:
        scales.append(scale)
        if a > best:
            best, since = a, 0
        else:
            since += 1
            if since == n:
                scale, since = scale / 2, 0
        if scale <= 1 / 128:
            break
    return scales


def test_eta_halving_trains_as_the_textbook_schedule_with_plain_sgd_at_each_rate(small_train, mnist_sample):
    params = gd.init_mlp(jax.random.key(0), [784, 30, 10])
    common = dict(train=small_train, eval_data=mnist_sample[1].take(300), batch_size=10, cost=gd.quadratic_cost,
                  key=jax.random.key(5))
    got, history = gd.fit(params, epochs=60, optimizer=gd.sgd(3.0), eta_halving=1, **common)
    scales = _textbook_halvings(history["eval_accuracy"], 1)
    assert history.stop_reason == "eta_schedule" and len(history) == len(scales) < 60
    assert history["learning_rate_scale"] == scales and min(scales) == 1 / 64  # the last epoch ran at 1/64
    # The reference: one epoch at a time with plain sgd at eta * scale (powers of two: exact).
    want, done = params, gd.History()
    for scale in scales:
        want, done = gd.fit(want, epochs=len(done) + 1, optimizer=gd.sgd(3.0 * scale), history=done, **common)
    assert _leaves_equal(got, want)
    assert done["eval_accuracy"] == history["eval_accuracy"]
