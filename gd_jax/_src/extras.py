"""Optional dependencies: imported where used, and named by the extra that installs them.

The core of gd_jax needs only jax, numpy and optax. The rest (full MNIST through
tensorflow-datasets, figures through matplotlib, image files through pillow, event files
through tensorboard, the progress bar through tqdm) is installed by an extra of the
``gd-jax`` distribution, and a missing one says which extra in one line.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

# What each extra installs (pyproject.toml's [project.optional-dependencies]), by import name.
EXTRA_OF = {
    "tensorflow_datasets": "mnist",
    "array_record": "mnist",
    "matplotlib": "viz",
    "PIL": "viz",
    "tensorboard": "viz",
    "tqdm": "cli",
}


class MissingExtraError(ModuleNotFoundError):
    """An optional dependency is not installed; the message names the extra that installs it."""


def _missing(top: str, purpose: str, instead: str | None = None) -> MissingExtraError:
    extra = EXTRA_OF.get(top, "all")
    return MissingExtraError(f"{purpose} need {top}, which is not installed: pip install 'gd-jax[{extra}]'"
                             + (f", or {instead}" if instead else ""), name=top)


def ensure_installed(module: str, *, purpose: str, instead: str | None = None) -> None:
    """Raises ``MissingExtraError`` unless ``module`` can be imported, without importing it (quick).

    ``instead``: the other way out the message offers, e.g. ``"pass --no-figures"``.
    """
    top = module.split(".")[0]
    try:
        found = importlib.util.find_spec(top) is not None
    except (ModuleNotFoundError, ValueError):
        found = False
    if not found:
        raise _missing(top, purpose, instead)


def require(module: str, *, purpose: str) -> ModuleType:
    """Imports ``module``, or raises ``MissingExtraError`` naming the extra that installs it.

    Args:
      module: the import name, e.g. ``"matplotlib.pyplot"``.
      purpose: what needs it, e.g. ``"the run figures"``, for the message.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        top = module.split(".")[0]
        if e.name is None or e.name.split(".")[0] != top:
            raise  # the module is there, but something it imports is not: not ours to rename
        raise _missing(top, purpose) from None
