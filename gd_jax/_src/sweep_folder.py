"""A sweep folder read back: its ``SweepResult``, and one model of it chosen by index or coordinates.

A sweep folder (``gd-jax sweep``) holds ``sweep.json`` (the grid, seeds, models and tidy
records) and ``params.npz`` (the stacked parameters, ``layer0/w`` of shape ``(K, n_0, n_1)``).
``load_sweep`` turns them back into the ``SweepResult`` that ``gd.sweep`` returned (without
optimizer states, which live in the folder's checkpoints), so that ``select``, ``best``,
``summary`` and ``model_params`` work on a finished sweep as on a live one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np

from gd_jax._src.network import Params
from gd_jax._src.sweep import SweepResult

__all__ = ["SWEEP_JSON", "describe_models", "is_sweep_folder", "load_sweep", "pick_model"]

SWEEP_JSON = "sweep.json"


def is_sweep_folder(path: str | os.PathLike) -> bool:
    """True when ``path`` is a folder that ``gd-jax sweep`` wrote (it holds ``sweep.json``)."""
    return os.path.isfile(os.path.join(os.fspath(path), SWEEP_JSON))


def _stacked_params(path: str) -> Params:
    try:
        with np.load(path) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (OSError, ValueError) as e:
        raise ValueError(f"{path!r} is not a readable .npz file ({e}); the sweep folder is damaged") from None
    layers: dict[int, dict[str, Any]] = {}
    for name, value in arrays.items():
        layer, _, leaf = name.partition("/")
        if not layer.startswith("layer") or not layer[5:].isdigit() or not leaf:
            raise ValueError(f"{path!r} holds {name!r}, not a sweep's stacked layer0/w, layer0/b, ...")
        layers.setdefault(int(layer[5:]), {})[leaf] = jnp.asarray(value)
    return [layers[i] for i in sorted(layers)]


def load_sweep(folder: str | os.PathLike) -> SweepResult:
    """The ``SweepResult`` of a sweep folder written by ``gd-jax sweep``.

    Args:
      folder: the sweep folder.

    Returns:
      A ``SweepResult`` with the stacked ``params`` of the newest epoch, the ``models``,
      ``records``, ``grid`` and ``seeds``; ``opt_state`` is None.

    Raises:
      FileNotFoundError: no such folder.
      ValueError: not a sweep folder (e.g. a ``gd-jax train`` run folder), or a damaged one.

    Examples:
      For the folder ``gd-jax sweep --eta 0.5,3 --seeds 2 --out runs/eta`` wrote:
      ``result = gd.load_sweep("runs/eta")``, then ``best = result.best("eval_accuracy")`` and
      ``result.model_params(result.select(learning_rate=best["learning_rate"], seed=0)[0])``.

      >>> gd.load_sweep("no/such/sweep")
      Traceback (most recent call last):
      ...
      FileNotFoundError: sweep folder not found: 'no/such/sweep'; pass the folder `gd-jax sweep` wrote
    """
    path = os.fspath(folder)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"sweep folder not found: {path!r}; pass the folder `gd-jax sweep` wrote")
    if not is_sweep_folder(path):
        raise ValueError(f"{path!r} is not a sweep folder (it has no {SWEEP_JSON}); pass a folder `gd-jax sweep` "
                         "wrote (for a `gd-jax train` run folder, use gd.load_params or gd.load_trained_network)")
    try:
        with open(os.path.join(path, SWEEP_JSON)) as f:
            doc = json.load(f)
        result = SweepResult(params=[], opt_state=None, models=doc["models"], records=doc["records"],
                             grid=doc["grid"], seeds=doc["seeds"], shuffle=doc["shuffle"],
                             epoch_seconds=doc.get("epoch_seconds", []),
                             compile_seconds=doc.get("compile_seconds", 0.0), memory=doc.get("memory", {}))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{os.path.join(path, SWEEP_JSON)!r} is not a sweep's table ({e!r}); the sweep folder is "
                         "damaged") from None
    result.params = _stacked_params(os.path.join(path, "params.npz"))
    return result


def describe_models(result: SweepResult, *, limit: int = 12) -> str:
    """The models of a sweep in one line: ``0 (learning_rate=0.5, seed=0), 1 (...), ...``."""
    shown = [f"{m['model']} ({', '.join(f'{k}={v:g}' for k, v in result.coords(m['model']).items())})"
             for m in result.models[:limit]]
    more = f", ... ({len(result) - limit} more)" if len(result) > limit else ""
    return ", ".join(shown) + more


def _parse_selection(text: str) -> dict[str, float]:
    where: dict[str, float] = {}
    for part in text.replace(" ", "").split(","):
        name, sep, value = part.partition("=")
        try:
            where[name] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name:
            raise ValueError(f"--model wants a model's index (0, 1, ...) or its coordinates like "
                             f"learning_rate=3,seed=1, got {text!r}")
    return where


def pick_model(result: SweepResult, model: int | str | Mapping[str, Any]) -> int:
    """The index of one model of ``result``: an index, its text, or coordinates that match exactly one.

    Args:
      result: the sweep.
      model: ``3``, ``"3"``, ``"learning_rate=3,seed=1"`` or ``{"learning_rate": 3.0, "seed": 1}``.

    Raises:
      ValueError: no such model, or coordinates that match none or several (the message
        lists the models).
    """
    if isinstance(model, str) and model.strip().lstrip("-").isdigit():
        model = int(model)
    if isinstance(model, (int, np.integer)) and not isinstance(model, bool):
        if not 0 <= model < len(result):
            raise ValueError(f"the sweep has {len(result)} models, numbered 0 to {len(result) - 1}, not {model}; "
                             f"the models: {describe_models(result)}")
        return int(model)
    where = _parse_selection(model) if isinstance(model, str) else dict(model)  # type: ignore[arg-type]
    try:
        found = result.select(**where)
    except ValueError as e:
        raise ValueError(f"{e}; the models: {describe_models(result)}") from None
    if len(found) != 1:
        what = "no model" if not found else f"{len(found)} models ({', '.join(map(str, found))})"
        raise ValueError(f"{what} of the sweep match{'es' if not found else ''} "
                         f"{', '.join(f'{k}={v:g}' for k, v in where.items())}; name one model by its coordinates "
                         f"or index: {describe_models(result)}")
    return found[0]
