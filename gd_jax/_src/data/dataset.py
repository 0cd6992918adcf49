"""The in-memory dataset type and its validation."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["Dataset", "check_dataset"]


class Dataset(NamedTuple):
    """A supervised dataset held in memory, batch first.

    Attributes:
      x: inputs, float32 of shape ``(n, features)``; for MNIST ``(n, 784)`` in [0, 1].
      y: integer class labels of shape ``(n,)``.
    """

    x: jax.Array | np.ndarray
    y: jax.Array | np.ndarray

    @property
    def size(self) -> int:
        """The number of examples (``len`` stays the tuple's length, 2, as for any NamedTuple)."""
        return int(self.x.shape[0])

    def take(self, n: int) -> Dataset:
        """The first ``n`` examples (handy for quick experiments and tests)."""
        return Dataset(self.x[:n], self.y[:n])


def check_dataset(data: Dataset, *, n_inputs: int | None = None, n_classes: int | None = None,
                  name: str = "data") -> None:
    """Validates a dataset at a public boundary; raises ``ValueError`` naming the fix.

    Checks that ``x`` is 2-D and finite, that ``y`` holds integer labels in
    ``[0, n_classes)``, that both have the same number of examples, and that the
    feature width matches the network's input layer.
    """
    if not isinstance(data, tuple) or len(data) != 2:
        raise ValueError(f"{name} must be a Dataset(x, y), got {type(data).__name__}; build one with gd.Dataset(x, y)")
    x, y = data
    if getattr(x, "ndim", None) != 2:
        raise ValueError(
            f"{name}.x must be 2-D (examples, features), got shape {getattr(x, 'shape', None)}; "
            "flatten images with x.reshape(len(x), -1)"
        )
    if getattr(y, "ndim", None) != 1:
        raise ValueError(
            f"{name}.y must be 1-D integer labels, got shape {getattr(y, 'shape', None)}; "
            "pass class indices, not one-hot rows (use y.argmax(axis=1))"
        )
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"{name}.x has {x.shape[0]} examples but {name}.y has {y.shape[0]}; give one label per example"
        )
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty; pass at least one example")
    if not np.issubdtype(np.dtype(y.dtype), np.integer):
        raise ValueError(
            f"{name}.y must hold integer class labels, got dtype {y.dtype}; convert with y.astype('int32')")
    if not np.issubdtype(np.dtype(x.dtype), np.floating):
        raise ValueError(
            f"{name}.x must be floating point, got dtype {x.dtype}; scale it, e.g. x.astype('float32') / 255")
    if n_inputs is not None and x.shape[1] != n_inputs:
        raise ValueError(
            f"{name}.x has {x.shape[1]} features but the network's input layer has {n_inputs}; "
            f"make the first layer size {x.shape[1]} (e.g. --sizes {x.shape[1]},30,10)"
        )
    # Arrays already on a device are checked there: copying them to the host costs more than the check.
    xp = jnp if isinstance(x, jax.Array) else np
    bad = int(xp.size(x) - xp.isfinite(x).sum())
    if bad:
        raise ValueError(f"{name}.x holds {bad} NaN or infinite values; clean or impute them before training")
    yp = jnp if isinstance(y, jax.Array) else np
    lo, hi = int(yp.min(y)), int(yp.max(y))
    if lo < 0 or (n_classes is not None and hi >= n_classes):
        limit = f"[0, {n_classes})" if n_classes is not None else "non-negative"
        raise ValueError(
            f"{name}.y holds labels from {lo} to {hi}, outside {limit}; "
            "make the last layer as wide as the number of classes or fix the labels"
        )
