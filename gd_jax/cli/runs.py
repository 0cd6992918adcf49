"""The run folder: what a training run leaves on disk, and how a run continues.

A run folder is claimed by exactly one process, atomically: a default name
(``runs/<date-time>``) is created with an exclusive ``mkdir`` (on a clash, ``-2``, ``-3``
... is tried), and in any folder the run's ``config.json`` is published with an exclusive
link, so two runs started at once never share a folder. While a process trains in a
folder it holds an advisory lock on it (``flock``), so a second ``--resume`` of the same
folder is refused instead of mixing; the kernel drops the lock when the process dies.

What the folder holds (``RUN_FILES`` and ``checkpoints/``) and how each file is written:

- ``config.json``: the settings of the run, the data it trains on (sizes and SHA-256),
  and one *segment* per process that trained it (the epochs it covered, its command line,
  start time, gd_jax / jax / jaxlib / Python versions, device, git commit), so a resumed
  run keeps the record of what produced its earlier epochs.
- ``history.json``, ``params.npz``, ``checkpoints/``: rewritten after every epoch.
- ``history.png``: drawn for whatever epochs exist whenever the run stops (finished,
  diverged, interrupted); absent only when no epoch was trained (``--epochs 0``, or
  stopped before the first epoch ended).

Every file is written to a temporary name and moved into place (``serialization.
atomic_write_bytes``); temporary files a killed process left (``.tmp-*``) are removed when
the folder is next claimed or resumed.

Shared by the ``train`` command and anything else that writes run folders (sweeps): the
functions here take plain settings dicts and paths, not parsed command lines.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import platform
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import jax
import jaxlib
import numpy as np

import gd_jax
from gd_jax._src import xla_config
from gd_jax._src.checkpoint import latest_checkpoint, list_checkpoints, read_checkpoint_manifest
from gd_jax._src.extras import require
from gd_jax._src.plotting import RUN_FIGURES, plot_history, write_run_figures
from gd_jax._src.serialization import atomic_write_bytes, read_json_object
from gd_jax._src.tensorboard import write_run_events

__all__ = [
    "CHECKPOINTS",
    "CONFIG",
    "RUN_FILES",
    "BadInput",
    "EpochProgress",
    "RunFolder",
    "bad_input",
    "best_params_name",
    "check_out",
    "check_same_data",
    "claim_run_folder",
    "clean_run_files",
    "command_settings",
    "data_fingerprint",
    "default_run_name",
    "environment",
    "interrupts_as_keyboard_interrupt",
    "interrupts_deferred",
    "open_run_folder",
    "plural",
    "read_json",
    "remove_best_params_except",
    "remove_stale_temporaries",
    "resume_settings",
    "write_figures",
    "write_json",
]

# The files a run folder holds; --overwrite removes exactly these (and the checkpoints), nothing else.
RUN_FILES = ("config.json", "history.json", "params.npz", "history.png", "confusion.png", "misclassified.png",
             "hidden_weights.png")
_EVENTS = re.compile(r"^events\.out\.tfevents\..*\.gd_jax$")  # tensorboard.write_run_events' files
# With early stopping: the parameters of the best epoch so far, named by their epoch, so that a
# checkpoint always finds the file of the best epoch it records (the older one is removed after).
_BEST = re.compile(r"^best-epoch-(\d{6,})\.npz$")
CHECKPOINTS = "checkpoints"
CONFIG = "config.json"
_TMP_PREFIX = ".tmp-"  # what serialization.atomic_write_bytes names its temporary files


class BadInput(ValueError):
    """A mistake in what a user asked for: a setting, a data file, a run folder.

    The command line reports it as one line on stderr with exit status 2; any other
    exception is a bug and keeps its traceback.
    """


# Library errors that mean "bad input" when raised by validation or file access.
_INPUT_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError,
                 FileExistsError)


@contextlib.contextmanager
def bad_input() -> Iterator[None]:
    """Turns the validation and file errors raised inside the block into ``BadInput``.

    Wrap only calls whose ``ValueError``/``OSError`` means the user's input is at fault
    (loading data, checking arguments, reading a run's files), so that an error anywhere
    else still surfaces as a bug with its traceback.
    """
    try:
        yield
    except BadInput:
        raise
    except _INPUT_ERRORS as e:
        raise BadInput(str(e)) from e


# --- files ------------------------------------------------------------------------------------------------------


def write_json(path: str | os.PathLike, obj: Any, *, exclusive: bool = False) -> None:
    """Writes ``obj`` as indented JSON, atomically (``exclusive``: only if ``path`` does not exist yet)."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode(), exclusive=exclusive)


def read_json(path: str | os.PathLike) -> dict[str, Any]:
    """Reads a run's JSON file (a dict).

    Raises:
      BadInput: it cannot be read, is not JSON, or holds no dict.
    """
    with bad_input():
        return read_json_object(path, fix="start a new run")


def _stale_temporaries(folder: str) -> list[str]:
    if not os.path.isdir(folder):
        return []
    return [os.path.join(folder, n) for n in os.listdir(folder) if n.startswith(_TMP_PREFIX)]


def remove_stale_temporaries(folder: str | os.PathLike) -> list[str]:
    """Removes the ``.tmp-*`` files a killed writer left in a run folder and its checkpoints; returns them.

    Call it only on a folder this process has claimed: another writer's file would be removed too.
    """
    folder = os.fspath(folder)
    removed = []
    for path in _stale_temporaries(folder) + _stale_temporaries(os.path.join(folder, CHECKPOINTS)):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
            removed.append(path)
    return removed


def clean_run_files(folder: str | os.PathLike) -> None:
    """Removes a run's files (``RUN_FILES``, checkpoints, temporaries) from ``folder``, and nothing else."""
    folder = os.fspath(folder)
    for name in RUN_FILES:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(folder, name))
    for name in os.listdir(folder):
        if _BEST.match(name) or _EVENTS.match(name):
            os.unlink(os.path.join(folder, name))
    checkpoints = os.path.join(folder, CHECKPOINTS)
    for _, path in list_checkpoints(checkpoints):
        os.unlink(path)
    remove_stale_temporaries(folder)
    if os.path.isdir(checkpoints) and not os.listdir(checkpoints):
        os.rmdir(checkpoints)


def best_params_name(epoch: int) -> str:
    """The file holding the parameters of the best epoch so far (early stopping), e.g. ``best-epoch-000012.npz``."""
    return f"best-epoch-{epoch:06d}.npz"


def remove_best_params_except(folder: str | os.PathLike, epoch: int | None) -> None:
    """Removes the best-epoch parameter files of other epochs than ``epoch``."""
    folder = os.fspath(folder)
    for name in os.listdir(folder):
        match = _BEST.match(name)
        if match and int(match.group(1)) != epoch:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(folder, name))


# --- claiming a folder --------------------------------------------------------------------------------------------


def default_run_name(root: str = "runs") -> str:
    """``runs/<date-time>`` in local time, e.g. ``runs/20261129-153000`` (``claim_run_folder`` adds ``-2`` ...)."""
    return os.path.join(root, time.strftime("%Y%m%d-%H%M%S"))


def check_out(out: str | None, *, overwrite: bool) -> None:
    """Refuses an ``--out`` that cannot become this run's folder, before anything is written.

    Raises:
      BadInput: it is a file, lies under a file, or is a non-empty folder without ``overwrite``.
    """
    if out is None:
        return
    if os.path.exists(out) and not os.path.isdir(out):
        raise BadInput(f"--out {out!r} is a file, not a folder; choose another --out")
    if os.path.isdir(out) and os.listdir(out) and not overwrite:
        raise BadInput(f"run folder {out!r} already exists and is not empty; pass --overwrite, --resume {out} to "
                       "continue it, or choose another --out")
    parent = os.path.dirname(os.path.abspath(out))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise BadInput(f"cannot create run folder {out!r}: {parent!r} is a file, not a folder; choose another --out")


class RunFolder:
    """A run folder this process has claimed (or resumed) and holds the lock of.

    Attributes:
      path: the folder.
    """
    def __init__(self, path: str, lock_fd: int | None):
        self.path = path
        self._lock_fd = lock_fd

    def file(self, name: str) -> str:
        """The path of a file in the folder."""
        return os.path.join(self.path, name)

    @property
    def checkpoints(self) -> str:
        return os.path.join(self.path, CHECKPOINTS)

    def write_json(self, name: str, obj: Any) -> None:
        write_json(self.file(name), obj)

    def release(self) -> None:
        """Drops the lock (closing the process does too)."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _lock(path: str) -> int | None:
    """An exclusive advisory lock on the folder itself (no lock file); None where locks are not available."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise BadInput(f"run folder {path!r} is in use by another gd-jax process; wait for it to finish, or choose "
                       "another --out") from None
    except OSError:  # a file system without flock (some network mounts): go on unlocked
        pass
    return fd


def _create_error(out: str, e: OSError) -> BadInput:
    if isinstance(e, NotADirectoryError):
        return BadInput(f"cannot create run folder {out!r}: a part of it is a file, not a folder; choose another --out")
    return BadInput(f"cannot create run folder {out!r} ({e.strerror or e}); choose another --out")


def claim_run_folder(out: str | None, config: Mapping[str, Any], *, overwrite: bool = False,
                     root: str = "runs") -> RunFolder:
    """Creates (or takes over) a run folder for this process alone and writes its ``config.json``.

    Args:
      out: the folder; None for ``default_run_name(root)``, or the next free ``-2``, ``-3``
        ... name when another run took it first.
      config: the run's config, published as ``config.json`` with an exclusive link: the
        claim itself.
      overwrite: an existing folder with a run in it is emptied of its run files first
        (other files stay); without it such a folder is refused.
      root: the parent of default names.

    Returns:
      The claimed, locked ``RunFolder``.

    Raises:
      BadInput: the folder holds files (without ``overwrite``), cannot be created, is in
        use, or another run claimed it between the check and the claim.
    """
    if out is None:
        base = default_run_name(root)
        for attempt in range(1, 10_000):
            path = base if attempt == 1 else f"{base}-{attempt}"
            try:
                os.makedirs(root, exist_ok=True)
                os.mkdir(path)
            except FileExistsError:
                continue
            except OSError as e:
                raise _create_error(path, e) from None
            try:
                return _claim(path, config)
            except _Taken:
                continue
        raise BadInput(f"no free run folder name under {root!r} for {base!r}; pass --out")
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise _create_error(out, e) from None
    if overwrite:
        folder = RunFolder(out, _lock(out))
        clean_run_files(out)
        folder.release()
    elif os.listdir(out):
        raise BadInput(f"run folder {out!r} already exists and is not empty; pass --overwrite, --resume {out} to "
                       "continue it, or choose another --out")
    try:
        return _claim(out, config)
    except _Taken:
        raise BadInput(f"run folder {out!r} was claimed by another run meanwhile; choose another --out") from None


class _Taken(Exception):
    """Another process published the folder's config.json first."""


def _claim(path: str, config: Mapping[str, Any]) -> RunFolder:
    fd = _lock(path)
    try:
        write_json(os.path.join(path, CONFIG), dict(config), exclusive=True)
    except FileExistsError:
        if fd is not None:
            os.close(fd)
        raise _Taken from None
    except OSError as e:
        if fd is not None:
            os.close(fd)
        raise _create_error(path, e) from None
    folder = RunFolder(path, fd)
    remove_stale_temporaries(path)
    return folder


def open_run_folder(path: str) -> RunFolder:
    """Takes an existing run folder to continue it: locks it and removes stale temporary files.

    Raises:
      BadInput: another process is training in it.
    """
    folder = RunFolder(path, _lock(path))
    remove_stale_temporaries(path)
    return folder


# --- resuming -----------------------------------------------------------------------------------------------------


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


# --- the environment of a segment ---------------------------------------------------------------------------------


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


# --- signals ------------------------------------------------------------------------------------------------------

# The signals that interrupt a run: Ctrl-C, and the SIGTERM that `kill` and job schedulers send.
_INTERRUPTS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def interrupts_as_keyboard_interrupt() -> Iterator[None]:
    """Makes SIGTERM raise KeyboardInterrupt, as SIGINT does, so both stop a run the same clean way.

    Only in the main thread (the only one that may set handlers); elsewhere a no-op.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Holds an interrupt back until the block is done, so that the files of one epoch are written together.

    Only in the main thread and for signals handled by Python's default KeyboardInterrupt
    handler; elsewhere a no-op.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    deferred = [s for s in _INTERRUPTS if signal.getsignal(s) is signal.default_int_handler]
    received: list[int] = []
    for s in deferred:
        signal.signal(s, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        for s in deferred:
            signal.signal(s, signal.default_int_handler)
        if received:
            raise KeyboardInterrupt


# --- what a person reads while it trains --------------------------------------------------------------------------


def plural(n: int, word: str) -> str:
    """``1 epoch``, ``2 epochs``."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _clock(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 60:02d}:{seconds % 60:02d}" if seconds < 3600 else time.strftime("%H:%M:%S",
                                                                                       time.gmtime(seconds))


class EpochProgress:
    """Per-epoch progress: a labelled bar on a terminal, one plain line per epoch otherwise.

    The time estimate counts only epochs (training, evaluation, files), never compilation:
    it is the mean wall time between epoch ends in this process, or the first epoch's own
    training time before there are two.

    Args:
      total: the epochs of the whole run.
      done: epochs done before this process started.
      eval_name: what the evaluation data are (``"test"`` or ``"validation"``).
      enabled: False prints nothing.
      stream: where to write (stderr by default).
      bar: force the bar (True) or plain lines (False); default: a bar when ``stream`` is a terminal.
    """
    def __init__(self, total: int, done: int, *, eval_name: str = "test", enabled: bool = True,
                 stream=None, bar: bool | None = None):
        self.total, self.done, self.eval_name, self.enabled = total, done, eval_name, enabled
        self.stream = sys.stderr if stream is None else stream
        self._ends: list[float] = []
        self._bar = None
        if enabled and (self.stream.isatty() if bar is None else bar):
            tqdm = require("tqdm", purpose="the progress bar").tqdm
            self._bar = tqdm(total=total, initial=done, unit="epoch", file=self.stream, dynamic_ncols=True,
                             bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} epochs{postfix}")

    def _eta(self, record: Mapping[str, Any]) -> float:
        left = self.total - self.done
        if len(self._ends) >= 2:
            return left * (self._ends[-1] - self._ends[0]) / (len(self._ends) - 1)
        return left * float(record.get("seconds") or 0.0)

    def describe(self, record: Mapping[str, Any]) -> str:
        """The numbers of one epoch record, labelled."""
        parts = [f"train cost {record['train_cost']:.4f}"]
        if record.get("train_accuracy") is not None:
            parts.append(f"train accuracy {record['train_accuracy']:.4f}")
        if record.get("eval_accuracy") is not None:
            parts.append(f"{self.eval_name} accuracy {record['eval_accuracy']:.4f}")
        return ", ".join(parts)

    def epoch_end(self, record: Mapping[str, Any]) -> None:
        """Reports one finished epoch (its history record)."""
        self._ends.append(time.perf_counter())
        self.done = int(record["epoch"])
        if not self.enabled:
            return
        eta = f"{_clock(self._eta(record))} left"
        if self._bar is not None:
            self._bar.set_postfix_str(f"{self.describe(record)}, {eta}", refresh=False)
            self._bar.update(self.done - self._bar.n)
        else:
            print(f"epoch {self.done}/{self.total}: {self.describe(record)}, {record['seconds']:.2f} s training, "
                  f"{eta}", file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def write_figures(folder: RunFolder, history: Any, config: Mapping[str, Any], *, params: Any = None,
                  test: Any = None, test_cost: float | None = None, test_accuracy: float | None = None,
                  tensorboard: bool = True) -> None:
    """Draws the run's figures for whatever epochs exist, and its TensorBoard event file.

    A finished run (``params`` and ``test`` given) gets all of ``plotting.RUN_FIGURES``: the
    learning curves, the test set's confusion matrix, the misclassified test digits and the
    hidden neurons' weights; a run that stopped early (diverged, interrupted) the learning
    curves of the epochs it finished. Without any epoch there is nothing to draw. With
    ``tensorboard``, the event file holds the same curves, the hyperparameters and the figures.
    """
    if not len(history):
        return

    eval_label = "validation" if config.get("eval_data") == "validation" else "test"
    if params is not None and test is not None:
        write_run_figures(folder.path, params, test, history, config, activation=config.get("activation"),
                          test_accuracy=test_accuracy)
    else:  # the settings are the title's second line (from config), stated once
        plot_history(history, folder.file("history.png"), config=config, eval_label=eval_label)
    if tensorboard:

        figures = [folder.file(name) for name in RUN_FIGURES if os.path.exists(folder.file(name))]
        write_run_events(folder.path, history, config, figures=figures, test_cost=test_cost,
                         test_accuracy=test_accuracy)
