"""The textbook's backpropagation, in numpy: an autodiff-free reference for ``jax.grad``.

For a sigmoid network with weighted inputs ``z^l = a^{l-1} w^l + b^l`` and activations
``a^l = sigma(z^l)``, the four equations of chapter 2 give, per example,

.. math::

   \\delta^L = \\nabla_a C \\odot \\sigma'(z^L)             \\quad (BP1)

   \\delta^l = (\\delta^{l+1} (w^{l+1})^T) \\odot \\sigma'(z^l)  \\quad (BP2)

   \\partial C / \\partial b^l = \\delta^l                    \\quad (BP3)

   \\partial C / \\partial w^l = (a^{l-1})^T \\delta^l         \\quad (BP4)

Rows are examples, so BP4's outer product summed over the batch is one matrix product;
dividing by the batch size gives the gradient of the mean cost. The cross-entropy cost's
``delta^L`` is ``a^L - y``: the ``sigma'`` factor cancels (chapter 3).
"""

from __future__ import annotations

import numpy as np

__all__ = ["backprop"]


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def backprop(params, x, y, *, cost: str = "quadratic") -> list[dict[str, np.ndarray]]:
    """The gradient of the mean cost over the batch by the four equations of backpropagation.

    Args:
      params: list of ``{"w": (n_in, n_out), "b": (n_out,)}``; any arrays numpy can read.
      x: inputs ``(batch, n_0)``.
      y: one-hot targets ``(batch, n_L)``.
      cost: ``"quadratic"`` or ``"cross-entropy"`` (sigmoid neurons throughout).

    Returns:
      The gradient, a list of ``{"w", "b"}`` numpy arrays shaped like ``params``.
    """
    ws = [np.asarray(layer["w"], dtype=np.float64) for layer in params]
    bs = [np.asarray(layer["b"], dtype=np.float64) for layer in params]
    a = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    activations, zs = [a], []
    for w, b in zip(ws, bs):  # forward pass, keeping every z and a
        z = a @ w + b
        a = _sigmoid(z)
        zs.append(z)
        activations.append(a)
    if cost == "quadratic":
        delta = (a - y) * a * (1 - a)  # BP1 with grad_a C = a - y and sigma' = a (1 - a)
    elif cost == "cross-entropy":
        delta = a - y
    else:
        raise ValueError(f"backprop knows the 'quadratic' and 'cross-entropy' costs, not {cost!r}")
    n = a.shape[0]
    grads: list[dict[str, np.ndarray]] = [{} for _ in ws]
    for l in range(len(ws) - 1, -1, -1):  # noqa: E741 - l is the textbook's layer index
        grads[l] = {"w": activations[l].T @ delta / n, "b": delta.sum(axis=0) / n}  # BP4, BP3
        if l > 0:
            s = _sigmoid(zs[l - 1])
            delta = (delta @ ws[l].T) * s * (1 - s)  # BP2
    return grads
