"""What a trained network gets right and wrong: the numbers behind the run figures.

Each function is plain numpy on the network's outputs, so that a figure and a test read the
same data: ``confusion_matrix`` (whose trace over the total is ``evaluate``'s accuracy),
``misclassified`` (the examples it gets wrong) and ``hidden_weight_images`` (what each hidden
neuron of the first layer looks for); and the norms TensorBoard plots per epoch
(``parameter_norm``, ``gradient_norm``, recorded into a run's History by ``norms_recorder``).

The network's answer for an example is the output neuron with the highest activation,
``argmax_j a^L_j``, as in ``gd.accuracy``. A model that is not gd_jax's own MLP passes its
``predict_fn(params, x) -> scores``, as ``fit`` takes it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gd_jax._src.costs import Cost
from gd_jax._src.data.dataset import Dataset
from gd_jax._src.network import Params, predict

__all__ = [
    "PredictFn",
    "confusion_matrix",
    "gradient_norm",
    "hidden_weight_images",
    "misclassified",
    "norms_recorder",
    "output_activations",
    "parameter_norm",
]

PredictFn = Callable[[Params, "jnp.ndarray"], "jnp.ndarray"]

# The forward pass as one compiled program: run op by op, JAX compiles each primitive for each
# new shape, about 14 small compilations for a run's figures (most of their time, where no
# persistent compilation cache holds them).
_predict = jax.jit(predict, static_argnames="activation")


def output_activations(params: Params, x, *, activation: str = "sigmoid",
                       predict_fn: PredictFn | None = None) -> np.ndarray:
    """The network's outputs for the rows of ``x``, as a host numpy array ``(n, n_classes)``.

    Args:
      params: the network.
      x: inputs ``(n, features)``.
      activation: the neurons' non-linearity (for gd_jax's own MLP).
      predict_fn: ``predict_fn(params, x) -> scores`` for any other model; default ``gd.predict``.
    """
    if predict_fn is None:
        return np.asarray(_predict(params, jnp.asarray(x), activation=activation))
    return np.asarray(predict_fn(params, jnp.asarray(x)))


def confusion_matrix(params: Params, data: Dataset, *, activation: str = "sigmoid",
                     predict_fn: PredictFn | None = None) -> np.ndarray:
    """Counts of (true label, network's answer) pairs on ``data``.

    ``C[i, j]`` is the number of examples of class ``i`` the network calls ``j``; the diagonal
    holds the correct answers, so ``trace(C) / C.sum()`` is the accuracy, and row ``i`` sums to
    the number of examples of class ``i``.

    Returns:
      int64 array ``(n_classes, n_classes)``, ``n_classes`` the network's output width.
    """
    a = output_activations(params, data.x, activation=activation, predict_fn=predict_fn)
    n_classes = a.shape[-1]
    y = np.asarray(data.y).astype(np.int64)
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise ValueError(f"data.y holds labels from {y.min()} to {y.max()}, outside the network's "
                         f"{n_classes} classes; pass data with labels in [0, {n_classes})")
    answers = a.argmax(axis=-1)
    return np.bincount(y * n_classes + answers, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def misclassified(params: Params, data: Dataset, *, activation: str = "sigmoid",
                  predict_fn: PredictFn | None = None) -> np.ndarray:
    """The indices (ascending) of the examples of ``data`` whose answer is not their label."""
    a = output_activations(params, data.x, activation=activation, predict_fn=predict_fn)
    return np.flatnonzero(a.argmax(axis=-1) != np.asarray(data.y))


def hidden_weight_images(params: Params, image_shape: tuple[int, int] | None = None) -> np.ndarray:
    """The first layer's input weights, one image per hidden neuron.

    Hidden neuron ``j`` computes ``sigma(sum_k w[k, j] x_k + b_j)``: its weights ``w[:, j]``,
    laid out like the input pixels, show which ink raises (positive) or lowers (negative) it.

    Args:
      params: the network; ``params[0]["w"]`` is ``(n_inputs, n_hidden)``.
      image_shape: the input images' shape; default square (28x28 for MNIST's 784 inputs).

    Returns:
      float array ``(n_hidden, rows, cols)``.

    Raises:
      ValueError: the inputs are not images of that shape (not a square number without one).
    """
    w = np.asarray(params[0]["w"])
    n_inputs = w.shape[0]
    if image_shape is None:
        side = math.isqrt(n_inputs)
        if side * side != n_inputs:
            raise ValueError(
                f"the first layer has {n_inputs} inputs, not a square image; pass image_shape=(rows, cols)")
        image_shape = (side, side)
    if math.prod(image_shape) != n_inputs:
        raise ValueError(f"image_shape {tuple(image_shape)} has {math.prod(image_shape)} pixels but the first layer "
                         f"has {n_inputs} inputs; pass the shape the inputs were flattened from")
    return w.T.reshape(w.shape[1], *image_shape)


@jax.jit
def _global_norm(tree: Any) -> jax.Array:
    return jnp.sqrt(sum(jnp.sum(jnp.square(leaf)) for leaf in jax.tree.leaves(tree)))


def parameter_norm(params: Any) -> float:
    """The Euclidean norm of all parameters together, ``sqrt(sum_p p^2)`` over every leaf."""
    return float(_global_norm(params))


@functools.partial(jax.jit, static_argnames=("cost", "n_classes"))
def _gradient_norm(params, x, y, cost, n_classes):
    return _global_norm(jax.grad(cost)(params, x, jax.nn.one_hot(y, n_classes, dtype=x.dtype)))


def gradient_norm(params: Any, data: Dataset, *, cost: Cost, n_classes: int) -> float:
    """``||grad C||``: the norm of the full-batch gradient of ``cost`` on ``data``.

    ``cost`` averages over examples, so this is the norm of ``1/n sum_i grad C_i``, the step
    direction full-batch gradient descent would take: it shrinks towards 0 near a minimum.
    """
    return float(_gradient_norm(params, jnp.asarray(data.x), jnp.asarray(data.y), cost, n_classes))


def norms_recorder(train: Dataset | None = None, *, cost: Cost | None = None, n_classes: int | None = None,
                   then: Callable[[Any], None] | None = None) -> Callable[[Any], None]:
    """An ``on_epoch_end`` for ``fit`` that records norms in each epoch's History record.

    Adds ``param_norm`` (``parameter_norm`` of the epoch's parameters) and, given the training
    data, ``cost`` and ``n_classes``, ``grad_norm`` (``gradient_norm`` on it: one extra
    forward and backward pass over the training set per epoch). They go to ``history.json``
    and TensorBoard's ``norm/params`` and ``norm/gradient``.

    Args:
      train, cost, n_classes: for ``grad_norm``; without them only ``param_norm``.
      then: another ``on_epoch_end`` called afterwards (a checkpoint writer, a progress bar),
        which sees the norms already recorded.
    """
    if train is not None and (cost is None or n_classes is None):
        raise ValueError("norms_recorder needs cost= and n_classes= with train= to record the gradient norm")

    def on_epoch_end(end) -> None:
        record = end.history.epochs[-1]
        record["param_norm"] = parameter_norm(end.state.params)
        if train is not None and cost is not None and n_classes is not None:  # all three, or none (checked above)
            record["grad_norm"] = gradient_norm(end.state.params, train, cost=cost, n_classes=n_classes)
        if then is not None:
            then(end)

    return on_epoch_end
