"""Sweeps against their reference: the same models trained one by one with ``fit``.

Every model of a sweep is compared with ``fit`` run alone from the same initial parameters
(``init(seed_keys(seed)[0])``), the same shuffle key and the same optimizer and cost built by
the same factories from that model's hyperparameters as concrete scalars.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gd_jax as gd
from gd_jax._src.sweep import grid_points, seed_keys, sweep

SIZES = [784, 12, 10]
init = functools.partial(gd.init_mlp, sizes=SIZES)
BATCH = 16  # 300 rows: 18 full batches and a tail of 12, so the smaller last step is covered


def sgd_of(h):
    return gd.sgd(h["learning_rate"])


@pytest.fixture(scope="module")
def data(mnist_sample):
    train, test = mnist_sample
    return train.take(300), test.take(200)


def solo(model, *, train, shuffle_seed, epochs, make_optimizer=sgd_of, make_cost=None, eval_data=None,
         init_fn=init, **fit_kwargs):
    """``fit`` of one model of a sweep, alone: its coordinates as concrete float32 scalars."""
    h = {name: jnp.float32(value) for name, value in model.items()
         if name not in ("model", "seed", "stop_reason", "stop_epoch", "message")}
    cost = gd.quadratic_cost if make_cost is None else make_cost(h)
    return gd.fit(init_fn(seed_keys(model["seed"])[0]), train, epochs=epochs, batch_size=BATCH,
                  optimizer=make_optimizer(h), cost=cost, key=seed_keys(shuffle_seed)[1], eval_data=eval_data,
                  **fit_kwargs)


def max_difference(a, b) -> float:
    return max(float(jnp.max(jnp.abs(u - v))) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.mark.parametrize("shuffle", ["per_model", "shared"])
def test_each_model_equals_its_solo_fit(data, shuffle):
    """Per-model order: bit-identical (XLA runs the same per-model dots as a batch). Shared order:
    the first layer of all models is one wide matrix product, whose blocked sums round
    differently from the thin one, so equal within a few float32 ulps of the unit-scale weights."""
    train, test = data
    result = sweep(init, train, grid={"learning_rate": [0.5, 3.0]}, seeds=[0, 3], make_optimizer=sgd_of,
                   cost=gd.quadratic_cost, epochs=3, batch_size=BATCH, eval_data=test, shuffle=shuffle)
    assert [result.coords(i) for i in range(4)] == [
        {"learning_rate": 0.5, "seed": 0}, {"learning_rate": 0.5, "seed": 3},
        {"learning_rate": 3.0, "seed": 0}, {"learning_rate": 3.0, "seed": 3}]
    for i, model in enumerate(result.models):
        params, history = solo(model, train=train, shuffle_seed=model["seed"] if shuffle == "per_model" else 0,
                               epochs=3, eval_data=test)
        mine = [r for r in result.records if r["model"] == i]
        assert [r["epoch"] for r in mine] == [1, 2, 3]
        for name in ("train_cost", "eval_cost", "eval_accuracy"):
            np.testing.assert_allclose([r[name] for r in mine], history[name], rtol=2e-5, atol=1e-6)
        assert mine[-1]["train_accuracy"] == pytest.approx(gd.accuracy(params, train), abs=1e-6)
        if shuffle == "per_model":
            for got, want in zip(jax.tree.leaves(result.model_params(i)), jax.tree.leaves(params)):
                np.testing.assert_array_equal(got, want)
        else:
            assert max_difference(result.model_params(i), params) < 5e-6
    assert max_difference(result.model_params(0), result.model_params(2)) > 0.1  # the rate matters
    assert all(m["stop_reason"] == "epochs" for m in result.models)


@pytest.mark.parametrize("shuffle", ["per_model", "shared"])
@pytest.mark.parametrize("optimizer", ["gd.sgd momentum", "optax.adam"])
def test_optimizer_states_stack_and_train_as_solo(data, shuffle, optimizer, x64):
    """Stateful optimizers: gd's momentum trace (shaped like the parameters, so the shared
    mode keeps the first layer's in the wide layout too) and optax's Adam (moments and a
    step count).

    Adam divides each gradient by its running RMS: with optax's default eps = 1e-8, last-bit
    differences of nearly zero gradients (pixels that are almost always 0) become differences
    of the order of the learning rate; eps = 1e-3 bounds that amplification, so the test
    checks the stacking of Adam's state rather than its conditioning. In float64, so that the
    last bits the batched maths moves are far below the tolerance on every CPU (in float32 the
    amplified differences reached 4.5e-5 on one CPU with jax 0.8.1, under 2e-5 on another).
    """
    import optax

    train, _ = data
    init64 = functools.partial(gd.init_mlp, sizes=SIZES, dtype=jnp.float64)
    if optimizer == "optax.adam":
        def make_optimizer(h):
            return optax.adam(h["learning_rate"], eps=1e-3)
    else:
        def make_optimizer(h):
            return gd.sgd(h["learning_rate"], momentum=0.9)
    result = sweep(init64, train, grid={"learning_rate": [0.01, 0.3]}, seeds=[1], make_optimizer=make_optimizer,
                   cost=gd.quadratic_cost, epochs=2, batch_size=BATCH, shuffle=shuffle)
    assert all(leaf.dtype == jnp.float64 for leaf in jax.tree.leaves(result.params))
    for i, model in enumerate(result.models):
        params, _ = solo(model, train=train, shuffle_seed=1, epochs=2, make_optimizer=make_optimizer, init_fn=init64)
        # gd.sgd with its own orders is bit-identical; Adam's elementwise maths (bias
        # corrections from a step count that becomes a vector of K, sqrt, division) fuses
        # differently batched and moves the last bit; the shared wide product rounds its
        # blocked sums differently (see test_each_model_equals_its_solo_fit).
        if shuffle == "per_model" and optimizer == "gd.sgd momentum":
            for got, want in zip(jax.tree.leaves(result.model_params(i)), jax.tree.leaves(params)):
                np.testing.assert_array_equal(got, want)
        else:
            assert max_difference(result.model_params(i), params) < 1e-9
    state_leaves = jax.tree.leaves(result.opt_state)
    assert state_leaves and all(leaf.shape[0] == 2 for leaf in state_leaves)


@pytest.mark.slow
def test_grid_of_2_by_3_by_2_equals_solo_fits_and_compiles_once(data):
    """Learning rate x L2 lambda (through make_cost) x 2 seeds: 12 models, one compiled epoch."""
    train, _ = data
    n = train.size

    def l2_cost(h):
        return lambda p, x, y: gd.quadratic_cost(p, x, y) + (h["lmbda"] / n) * gd.l2_penalty(p)

    compiles = []

    def listen(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(kwargs.get("fun_name"))

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        result = sweep(init, train, grid={"learning_rate": [1.0, 3.0], "lmbda": [0.0, 5.0, 50.0]}, seeds=2,
                       make_optimizer=sgd_of, make_cost=l2_cost, epochs=2, batch_size=BATCH)
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
    assert compiles.count("jit(sweep_epoch)") == 1
    assert result.compile_seconds > 0 and len(result.epoch_seconds) == 2
    assert len(result) == 12 and jax.tree.leaves(result.params)[0].shape[0] == 12
    expected = [{**point, "seed": s} for point in grid_points(result.grid) for s in (0, 1)]
    assert [result.coords(i) for i in range(12)] == expected
    for i, model in enumerate(result.models):
        params, _ = solo(model, train=train, shuffle_seed=model["seed"], epochs=2, make_cost=l2_cost)
        for got, want in zip(jax.tree.leaves(result.model_params(i)), jax.tree.leaves(params)):
            np.testing.assert_array_equal(got, want)


def test_diverging_models_freeze_and_leave_the_others_as_solo(data):
    """eta = 1e4 saturates (parameters grow > 10x), eta = 1e30 overflows to NaN: both freeze at
    their last good state, which is fit's DivergenceError.last_finite; eta = 3 trains on."""
    train, _ = data
    result = sweep(init, train, grid={"learning_rate": [3.0, 1e4, 1e30]}, seeds=1, make_optimizer=sgd_of,
                   cost=gd.quadratic_cost, epochs=2, batch_size=BATCH)
    healthy, saturated, overflowed = result.models
    params, _ = solo(healthy, train=train, shuffle_seed=0, epochs=2)
    for got, want in zip(jax.tree.leaves(result.model_params(0)), jax.tree.leaves(params)):
        np.testing.assert_array_equal(got, want)
    assert healthy["stop_reason"] == "epochs"
    for i, model in ((1, saturated), (2, overflowed)):
        with pytest.raises(gd.DivergenceError) as raised:
            solo(model, train=train, shuffle_seed=0, epochs=2)
        assert model["stop_reason"] == "diverged" and model["stop_epoch"] == raised.value.epoch
        for got, want in zip(jax.tree.leaves(result.model_params(i)), jax.tree.leaves(raised.value.last_finite.params)):
            np.testing.assert_array_equal(got, want)
        records = [r for r in result.records if r["model"] == i]
        assert [r["status"] for r in records] == ["ok"] * (model["stop_epoch"] - 1) + ["diverged"]
    # eta = 1e30 leaves finite weights of about 1e29 whose sum of squares overflows.
    assert "more than max_growth=10.0" in saturated["message"] and "past float32's range" in overflowed["message"]
    assert result.final("train_cost")[2] is None  # no good epoch
    document = json.loads(result.to_json())  # strict JSON: NaN became null
    assert all(r["train_cost"] is None or np.isfinite(r["train_cost"]) for r in document["records"])


def test_target_cost_stops_a_model_as_fit_does(data):
    train, _ = data
    result = sweep(init, train, grid={"learning_rate": [0.05, 3.0]}, seeds=1, make_optimizer=sgd_of,
                   cost=gd.quadratic_cost, epochs=4, batch_size=BATCH, target_cost=0.45)
    for i, model in enumerate(result.models):
        params, history = solo(model, train=train, shuffle_seed=0, epochs=4, target_cost=0.45)
        assert model["stop_reason"] == history.stop_reason
        assert len([r for r in result.records if r["model"] == i]) == len(history)
        for got, want in zip(jax.tree.leaves(result.model_params(i)), jax.tree.leaves(params)):
            np.testing.assert_array_equal(got, want)
    assert [m["stop_reason"] for m in result.models] == ["epochs", "target_cost"]


def test_resumed_sweep_equals_uninterrupted(data):
    train, _ = data
    kwargs = dict(grid={"learning_rate": [1.0, 3.0]}, seeds=2, make_optimizer=sgd_of, cost=gd.quadratic_cost,
                  batch_size=BATCH)
    whole = sweep(init, train, epochs=3, **kwargs)
    part = sweep(init, train, epochs=1, **kwargs)
    resumed = sweep(init, train, epochs=3, resume=part, **kwargs)
    for got, want in zip(jax.tree.leaves(resumed.params), jax.tree.leaves(whole.params)):
        np.testing.assert_array_equal(got, want)
    assert [r["train_cost"] for r in resumed.records] == [r["train_cost"] for r in whole.records]
    assert len(part.records) == 4  # the resumed sweep did not change the result it continued


def test_tables_and_helpers_on_real_values(data):
    train, test = data
    result = sweep(init, train, grid={"learning_rate": [0.1, 3.0], "lmbda": [0.0]}, seeds=3,
                   make_optimizer=sgd_of, cost=gd.quadratic_cost, epochs=2, batch_size=BATCH, eval_data=test)
    rows = list(csv.DictReader(io.StringIO(result.to_csv())))
    assert len(rows) == len(result.records) == 12
    for row, record in zip(rows, result.records):
        assert int(row["model"]) == record["model"] and float(row["learning_rate"]) == record["learning_rate"]
        assert float(row["eval_accuracy"]) == pytest.approx(record["eval_accuracy"], rel=1e-12)
    assert json.loads(result.to_json())["records"] == result.records
    assert result.select(learning_rate=3.0) == [3, 4, 5]
    assert result.select(learning_rate=3.0, seed=[0, 2]) == [3, 5]
    finals = np.array([r["eval_accuracy"] for r in result.records if r["epoch"] == 2])
    summary = result.summary("eval_accuracy")
    assert [s["learning_rate"] for s in summary] == [0.1, 3.0]
    np.testing.assert_allclose([s["mean"] for s in summary], [finals[:3].mean(), finals[3:].mean()], rtol=1e-6)
    np.testing.assert_allclose([s["std"] for s in summary], [finals[:3].std(), finals[3:].std()], rtol=1e-5)
    best = result.best("eval_accuracy")
    assert best["learning_rate"] == (3.0 if finals[3:].mean() > finals[:3].mean() else 0.1)
    lowest = result.best("train_cost")
    costs = np.array([r["train_cost"] for r in result.records if r["epoch"] == 2])
    assert lowest["learning_rate"] == (3.0 if costs[3:].mean() < costs[:3].mean() else 0.1)


@pytest.mark.parametrize("kwargs, message", [
    (dict(grid={"learning_rate": []}), "non-empty list"),
    (dict(grid={"learning_rate": [1.0, float("nan")]}), "not a finite number"),
    (dict(grid={"learning_rate": [1.0, 1.0]}), "repeats a value"),
    (dict(grid={"seed": [1.0]}), "is not allowed"),
    (dict(grid=[0.1, 1.0]), "must be a dict"),
    (dict(seeds=0), "seeds must be >= 1"),
    (dict(seeds=[1, 1]), "repeats a seed"),
    (dict(seeds=[1.5]), "list of distinct integers"),
    (dict(seeds=[2**64]), "list of distinct integers from 0 to 2**64 - 1"),
    (dict(shuffle="random"), "shuffle must be one of per_model, shared"),
    (dict(make_cost=lambda h: gd.quadratic_cost), "exactly one of cost="),
    (dict(epochs=-1), "epochs must be an integer >= 0"),
    (dict(batch_size=0), "batch_size must be an integer between 1 and 300"),
    (dict(max_growth=1.0), "max_growth must be a number > 1"),
    (dict(target_cost=-1.0), "target_cost must be a finite number"),
])
def test_bad_arguments_raise_one_clear_line(data, kwargs, message):
    train, _ = data
    arguments = dict(grid={"learning_rate": [1.0]}, seeds=1, make_optimizer=sgd_of, cost=gd.quadratic_cost,
                     epochs=1, batch_size=BATCH) | kwargs
    with pytest.raises(ValueError, match=re.escape(message)):
        sweep(init, train, **arguments)


def test_resume_of_another_sweep_is_refused(data):
    train, _ = data
    kwargs = dict(make_optimizer=sgd_of, cost=gd.quadratic_cost, batch_size=BATCH, seeds=1)
    done = sweep(init, train, grid={"learning_rate": [1.0]}, epochs=0, **kwargs)
    with pytest.raises(ValueError, match="resume holds a sweep of grid"):
        sweep(init, train, grid={"learning_rate": [2.0]}, epochs=1, resume=done, **kwargs)


@pytest.mark.parametrize("seed", [2, 2**32 + 2, 2**63])
def test_a_seed_starts_from_the_parameters_gd_jax_train_starts_from(tmp_path, seed):
    """Seeds above 2**32 too: jax.random.key(2**32 + 2) would be the key of seed 2."""
    from gd_jax.cli import main

    out = tmp_path / "run"
    assert main(["train", "--sizes", "784,16,10", "--epochs", "0", "--no-progress", "--seed", str(seed),
                 "--out", str(out)]) == 0
    saved = gd.load_params(out / "params.npz")
    mine = gd.init_mlp(seed_keys(seed)[0], [784, 16, 10])
    for a, b in zip(jax.tree.leaves(saved), jax.tree.leaves(mine)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    if seed != 2:
        assert not np.array_equal(np.asarray(mine[0]["w"]),
                                  np.asarray(gd.init_mlp(seed_keys(2)[0], [784, 16, 10])[0]["w"]))



def test_a_mesh_places_the_models_as_devices_do_and_not_both(data):
    """``mesh=``: the model axis over the mesh's devices (flattened), the same models as the default."""
    from jax.sharding import Mesh

    train, test = data
    kwargs = dict(grid={"learning_rate": [0.5, 3.0]}, seeds=2, make_optimizer=lambda h: gd.sgd(h["learning_rate"]),
                  cost=gd.quadratic_cost, epochs=1, batch_size=BATCH, eval_data=test)
    init = functools.partial(gd.init_mlp, sizes=SIZES)
    mesh = Mesh(np.array(jax.devices()).reshape(-1, 1), ("a", "b"))
    on_mesh, default = sweep(init, train, mesh=mesh, **kwargs), sweep(init, train, **kwargs)
    for a, b in zip(jax.tree.leaves(on_mesh.params), jax.tree.leaves(default.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(ValueError, match="pass mesh= or devices=, not both"):
        sweep(init, train, mesh=mesh, devices=jax.devices(), **kwargs)


def test_sweep_reads_in_a_minute():
    """Issue 18: ``sweep`` is about 60 lines with its signature and docstring, its helpers beside it; none over 80."""
    import ast
    import inspect

    from gd_jax._src import sweep as module

    assert len(inspect.getsource(sweep).splitlines()) <= 70
    tree = ast.parse(inspect.getsource(module))
    long = {f.name: f.end_lineno - f.lineno + 1 for f in ast.walk(tree) if isinstance(f, ast.FunctionDef)
            and f.end_lineno - f.lineno + 1 > 80}
    assert long == {}


def test_a_framework_model_sweeps_as_fit_trains_it(data):
    """An Equinox MLP (its activations static leaves): each model of the sweep is fit's model."""
    eqx = pytest.importorskip("equinox")
    train, test = data

    def init(key):
        return eqx.nn.MLP(784, 10, 12, depth=1, activation=jax.nn.sigmoid, final_activation=jax.nn.sigmoid, key=key)

    def cost(model, x, y):
        return jnp.mean(0.5 * jnp.sum((y - jax.vmap(model)(x)) ** 2, axis=-1))

    def predict_fn(model, x):
        return jax.vmap(model)(x)

    result = sweep(init, train, grid={"learning_rate": [0.5, 3.0]}, seeds=[0, 1],
                   make_optimizer=lambda h: gd.sgd(h["learning_rate"]), cost=cost, predict_fn=predict_fn, epochs=2,
                   batch_size=BATCH, eval_data=test)
    i = result.select(learning_rate=3.0, seed=1)[0]
    init_key, shuffle_key = seed_keys(1)
    solo, history = gd.fit(init(init_key), train, eval_data=test, epochs=2, batch_size=BATCH, optimizer=gd.sgd(3.0),
                           cost=cost, key=shuffle_key, predict_fn=predict_fn)
    model = result.model_params(i)
    assert isinstance(model, eqx.nn.MLP) and model.activation is jax.nn.sigmoid
    for a, b in zip(jax.tree.leaves(eqx.filter(model, eqx.is_array)), jax.tree.leaves(eqx.filter(solo, eqx.is_array))):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-6)
    records = [r for r in result.records if r["model"] == i]
    np.testing.assert_allclose([r["eval_accuracy"] for r in records], history["eval_accuracy"], atol=1e-6)
