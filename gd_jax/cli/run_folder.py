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

How a run continues (``--resume``) is ``resume.py``; the progress a person reads, ``progress.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
import time
from collections.abc import Mapping
from typing import Any

from gd_jax._src import plotting
from gd_jax._src.checkpoint import list_checkpoints
from gd_jax._src.plotting import RUN_FIGURES, plot_history, write_run_figures
from gd_jax._src.serialization import atomic_write_bytes, read_json_object
from gd_jax._src.tensorboard import write_run_events
from gd_jax.cli.errors import BadInput, bad_input

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


def write_json(path: str | os.PathLike, obj: Any, *, exclusive: bool = False) -> None:
    """Writes ``obj`` as indented JSON, atomically (``exclusive``: only if ``path`` does not exist yet)."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode(), exclusive=exclusive)


def read_json(path: str | os.PathLike) -> dict[str, Any]:
    """Reads a run's JSON file (a dict).

    Raises:
      BadInput: it cannot be read, is not JSON, or holds no dict.
    """
    with bad_input():
        return read_json_object(path, fix="it is damaged: start a new run")


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


def remove_figures(folder: str | os.PathLike, names: Any) -> None:
    """Removes the figure files ``names`` from ``folder``, those that exist."""
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(folder, name))


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


def start_figure_warm_up() -> threading.Thread:
    """Starts ``plotting.warm_up`` in a daemon thread; pass it to ``write_figures`` as ``warm_up``.

    Training runs in XLA with the GIL released, so the warm-up takes the other core meanwhile.
    A failure there is left for the real figures to report, in the main thread, with its fix.
    """

    def warm_up() -> None:
        with contextlib.suppress(Exception):
            plotting.warm_up()

    thread = threading.Thread(target=warm_up, name="gd-jax figure warm-up", daemon=True)
    thread.start()
    return thread


def write_figures(folder: RunFolder, history: Any, config: Mapping[str, Any], *, params: Any = None,
                  test: Any = None, test_cost: float | None = None, test_accuracy: float | None = None,
                  tensorboard: bool = True, figures: bool = True, warm_up: threading.Thread | None = None) -> None:
    """Draws the run's figures for whatever epochs exist, and its TensorBoard event file.

    A finished run (``params`` and ``test`` given) gets all of ``plotting.RUN_FIGURES``: the
    learning curves, the test set's confusion matrix, the misclassified test digits and the
    hidden neurons' weights; a run that stopped early (diverged, interrupted) the learning
    curves of the epochs it finished. Without any epoch there is nothing to draw. With
    ``tensorboard``, the event file holds the same curves, the hyperparameters and the figures.
    Without ``figures`` (``--no-figures``) nothing is drawn, and the figures an earlier
    segment drew are removed: they would describe the run as it was, not as it is.
    ``warm_up``: the thread of ``start_figure_warm_up``, joined before drawing.
    """
    if not figures:  # those an earlier segment drew would describe the run as it was
        remove_figures(folder.path, RUN_FIGURES)
    if not len(history):
        return
    if figures:
        if warm_up is not None:  # matplotlib is not thread-safe: the warm-up ends before the figures start
            warm_up.join()
        if params is not None and test is not None:
            write_run_figures(folder.path, params, test, history, config, activation=config.get("activation"),
                              test_accuracy=test_accuracy)
        else:  # the settings are the title's second line (from config), stated once
            eval_label = "validation" if config.get("eval_data") == "validation" else "test"
            plot_history(history, folder.file("history.png"), config=config, eval_label=eval_label)
    if tensorboard:
        drawn = [folder.file(name) for name in RUN_FIGURES if os.path.exists(folder.file(name))]
        write_run_events(folder.path, history, config, figures=drawn, test_cost=test_cost,
                         test_accuracy=test_accuracy)
