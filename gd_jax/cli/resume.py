"""How a run continues: ``--resume`` takes the saved settings, checks the data, records a segment.

A resumed run is the same run: its settings come from the folder's ``config.json`` (only
those in ``may_change`` may be given again with another value), its data must hash to the
same SHA-256, and each process that trains it adds one *segment* to the record (the epochs
it covered, its command, versions, device, XLA settings and git commit).
"""

from __future__ import annotations

import datetime
import hashlib
import os
import platform
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jaxlib
import numpy as np

import gd_jax
from gd_jax._src import xla_config
from gd_jax._src.checkpoint import latest_checkpoint, read_checkpoint_manifest
from gd_jax.cli.errors import BadInput, bad_input
from gd_jax.cli.run_folder import CHECKPOINTS, CONFIG, read_json


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _show(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def command_settings(args: Any, given: set[str], *, settings: Sequence[str], may_change: Sequence[str],
                     defaults: Mapping[str, Any] | None = None,
                     what: str = "run") -> tuple[str | None, dict[str, Any], dict[str, Any], str | None]:
    """The folder and settings a ``train`` or ``sweep`` command works with, new or resumed.

    A new one takes its settings from the flags (``args``); ``--resume DIR`` takes the saved
    ones, with the flags written on the command line (``given``) that ``may_change``
    (``resume_settings``).

    Returns:
      ``(folder, settings, saved_config, checkpoint)``: ``saved_config`` is empty and
      ``checkpoint`` None for a new one.

    Raises:
      BadInput: ``--out`` or ``--overwrite`` with ``--resume``, and what ``resume_settings`` raises.
    """
    if args.resume is None:
        return args.out, {k: getattr(args, k) for k in settings}, {}, None
    for flag in ("out", "overwrite"):
        if flag in given:
            raise BadInput(f"--{flag} cannot be combined with --resume: --resume {args.resume} continues the "
                           f"{what} in {args.resume} itself; drop --{flag}")
    if what == "run" and os.path.isfile(os.path.join(args.resume, "sweep.json")):
        raise BadInput(f"{args.resume!r} is a sweep folder, not a run folder; continue it with: gd-jax sweep --resume "
                       f"{args.resume}")
    written = {k: getattr(args, k) for k in given if k in settings}
    resumed, saved, checkpoint = resume_settings(args.resume, written, settings=settings, may_change=may_change,
                                                 defaults=defaults)
    return args.resume, resumed, saved, checkpoint


def resume_settings(out: str, given: Mapping[str, Any], *, settings: Sequence[str], may_change: Sequence[str],
                    defaults: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any], str | None]:
    """The settings to continue the run in ``out`` with, its saved config and the checkpoint to start from.

    The newest checkpoint's config rules (``config.json`` must describe the same run); a
    run stopped before its first checkpoint continues from ``config.json`` at epoch 0.

    Args:
      out: the run folder.
      given: the settings written on this command line, by name.
      settings: the names that define a run.
      may_change: the names a resumed run may take new values of (the rest must equal
        the saved ones).
      defaults: values for settings introduced after older run folders were written.

    Returns:
      ``(settings, saved_config, checkpoint)``; ``checkpoint`` is None to start at epoch 0.

    Raises:
      BadInput: not a run folder, a damaged config, a foreign checkpoint, or a setting
        that conflicts with the saved one.
      FileNotFoundError: ``out`` does not exist.
    """
    if not os.path.isdir(out):
        raise BadInput(f"run folder not found: {out!r}; pass the --out folder of an earlier gd-jax train")
    config_path = os.path.join(out, CONFIG)
    checkpoint = latest_checkpoint(os.path.join(out, CHECKPOINTS))
    if checkpoint is not None:
        with bad_input():
            saved = read_checkpoint_manifest(checkpoint)["config"]
        if os.path.isfile(config_path):
            described = read_json(config_path)
            differ = [k for k in settings if k not in may_change and described.get(k) != saved.get(k)]
            if differ:
                k = differ[0]
                raise BadInput(
                    f"checkpoint {checkpoint!r} was written by another run than {config_path!r} describes "
                    f"({k} {saved.get(k)!r} there, {described.get(k)!r} here); move the foreign checkpoint away or "
                    "start a new run")
            saved = {**saved, "segments": described.get("segments", saved.get("segments", []))}
    elif os.path.isfile(config_path):
        saved = read_json(config_path)  # stopped before its first checkpoint: start at epoch 0
    else:
        raise BadInput(f"{out!r} is not a gd-jax run folder (no {CONFIG}, no {CHECKPOINTS}/); "
                       "pass the --out folder of an earlier gd-jax train")
    saved = {**(defaults or {}), **saved}
    missing = [k for k in settings if k not in saved]
    if missing:
        raise BadInput(f"the saved config of {out!r} lacks {', '.join(missing)}; start a new run")
    chosen = {k: saved[k] for k in settings}
    for k in sorted(given):
        value = given[k]
        if k in may_change:
            chosen[k] = value
        elif value != chosen.get(k):
            raise BadInput(
                f"{_flag(k)} {_show(value)} conflicts with the run's saved {k} {_show(chosen.get(k))}; a resumed run "
                f"keeps its settings (only {', '.join(_flag(m) for m in may_change)} may change): drop {_flag(k)}, "
                "or start a new run with --out")
    return chosen, saved, checkpoint


def data_fingerprint(datasets: Mapping[str, Any]) -> dict[str, str]:
    """SHA-256 of each dataset's ``x`` and ``y`` (dtype, shape and bytes), by name: what a resumed run must match."""
    fingerprint = {}
    for name, data in datasets.items():
        h = hashlib.sha256()
        for array in (np.asarray(data.x), np.asarray(data.y)):
            h.update(f"{array.dtype.str}{array.shape}".encode())
            h.update(np.ascontiguousarray(array).data)
        fingerprint[name] = h.hexdigest()
    return fingerprint


def check_same_data(saved: Mapping[str, str] | None, now: Mapping[str, str], *, out: str) -> None:
    """Refuses to continue a run on other data than it was trained on.

    Raises:
      BadInput: a split's SHA-256 differs from the recorded one.
    """
    if not saved:  # a run folder from before fingerprints were recorded
        return
    for name, digest in now.items():
        if name in saved and saved[name] != digest:
            raise BadInput(
                f"the {name} data differ from those run {out!r} was trained on (SHA-256 {digest[:12]}... now, "
                f"{saved[name][:12]}... recorded); resume with the same --dataset and files, or start a new run")


def _git_commit() -> str | None:
    """The commit of the gd_jax checkout this package runs from, or None (an installed copy, no git)."""
    source = os.path.dirname(os.path.dirname(os.path.abspath(gd_jax.__file__)))
    if not os.path.exists(os.path.join(source, ".git")):
        return None
    try:
        done = subprocess.run(["git", "-C", source, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def environment(command: Sequence[str], *, first_epoch: int) -> dict[str, Any]:
    """The record of one segment of a run: who trained epochs ``first_epoch``.. and with what.

    ``last_epoch`` is filled in when the segment ends (or, after a crash, by the segment
    that resumes it: the epochs it saved).
    """

    return {
        "first_epoch": first_epoch,
        "last_epoch": None,
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": list(command),
        "gd_jax": gd_jax.__version__,
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "python": platform.python_version(),
        "device": str(jax.devices()[0]),
        "xla": xla_config.describe(),  # the CPU runtime settings in force, and who chose them
        "git_commit": _git_commit(),
    }
