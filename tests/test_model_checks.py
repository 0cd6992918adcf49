"""The model checked against the data before anything compiles (issue 21): one ValueError naming the fix.

``fit`` and ``evaluate`` trace the model on one example with ``jax.eval_shape``: a model
narrower than its labels, a cost that is not a scalar, a ``predict_fn`` that does not return
``(batch, classes)``, a leaf that is neither an array nor static. Before, these surfaced as a
broadcasting ``TypeError`` from inside the compiled epoch, JAX's "Gradient only defined for
scalar-output functions", a silently wrong accuracy, or ``jnp.asarray``'s dtype error.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gd_jax as gd


@pytest.fixture(scope="module")
def data():
    train, _ = gd.load_mnist("sample")
    return train.take(100)


def _linear(outputs, seed=0):
    rng = np.random.default_rng(seed)
    return {"w": jnp.asarray(rng.standard_normal((784, outputs)) * 0.01, jnp.float32),
            "b": jnp.zeros(outputs, jnp.float32)}


def _scores(model, x):
    return x @ model["w"] + model["b"]


def _cost(model, x, y):
    return -jnp.mean(jnp.sum(y * jax.nn.log_softmax(_scores(model, x)), axis=-1))


def _fit(model, train, **kwargs):
    return gd.fit(model, train, **{"epochs": 1, "batch_size": 10, "optimizer": optax.sgd(0.1), "cost": _cost,
                                   "key": jax.random.key(0), **kwargs})


def _fifteen_classes(data):
    return gd.Dataset(data.x, (data.y + 5).astype(np.int32))  # labels 5..14


def test_a_model_narrower_than_its_labels_names_the_two_widths(data):
    with pytest.raises(ValueError, match=r"outputs 10 scores per example but the data needs 15 classes.*"
                                         r"give the model 15 outputs") as raised:
        _fit(_linear(10), _fifteen_classes(data), predict_fn=_scores)
    assert "\n" not in str(raised.value)
    with pytest.raises(ValueError, match=r"outputs 10 scores.*15 classes"):
        gd.evaluate(_linear(10), _fifteen_classes(data), cost=_cost, predict_fn=_scores)


def test_without_predict_fn_the_cost_names_the_target_width_and_the_fix(data):
    with pytest.raises(ValueError, match=r"one-hot targets of width 15 fails on one example \(TypeError: .*\(1, 10\)"
                                         r".*give the model 15 outputs, one per class"):
        _fit(_linear(10), _fifteen_classes(data))


def test_a_cost_that_is_not_a_scalar_is_refused_before_compiling(data):
    def per_example(model, x, y):
        return -jnp.sum(y * jax.nn.log_softmax(_scores(model, x)), axis=-1)  # forgot the mean over the batch

    with pytest.raises(ValueError, match=r"must return a scalar, the mean over the batch, but returns shape \(1,\).*"
                                         r"jnp\.mean"):
        _fit(_linear(10), data, cost=per_example)


@pytest.mark.parametrize(("predict_fn", "match"), [
    (lambda m, x: jnp.argmax(_scores(m, x), axis=-1), r"must return \(batch, classes\) = \(1, 10\).*got \(1,\)"),
    (lambda m, x: _scores(m, x)[0], r"must return \(batch, classes\) = \(1, 10\).*got \(10,\).*jax\.vmap"),
    (lambda m, x: jnp.dot(m["w"], x), r"predict_fn\(params, x\) on x \(1, 784\) fails on one example.*jax\.vmap"),
])
def test_a_predict_fn_that_does_not_return_batch_by_classes_is_refused(data, predict_fn, match):
    with pytest.raises(ValueError, match=match):
        _fit(_linear(10), data, predict_fn=predict_fn)


@pytest.mark.parametrize(("leaf", "kind"), [
    ({"a", "b"}, "a set"),
    (np.array([object(), object()]), "a numpy array of dtype object"),
    (np.array(["relu", "tanh"]), "a numpy array of dtype <U4"),
])
def test_a_leaf_neither_array_nor_static_is_named_by_its_path(data, leaf, kind):
    model = {"layers": (_linear(10),), "extra": [leaf]}
    with pytest.raises(ValueError, match=rf"model leaf \['extra'\]\[0\] is {kind}, neither an array nor a hashable "
                                         r"static value; make it a numeric array .* or a static field"):
        _fit(model, data, cost=lambda m, x, y: _cost(m["layers"][0], x, y))


def test_a_static_leaf_that_is_hashable_is_carried(data):
    model = {"layers": (_linear(10),), "name": "linear", "scale": 2.0}
    trained, _ = _fit(model, data, cost=lambda m, x, y: _cost(m["layers"][0], x, y) * m["scale"])
    assert trained["name"] == "linear" and trained["scale"] == 2.0
