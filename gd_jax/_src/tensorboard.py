"""TensorBoard event files for a run folder: per-epoch scalars, hyperparameters, figures.

``write_run_events(run_dir, history, config, figures=...)`` writes one event file into the run
folder, so that ``tensorboard --logdir runs/`` lists every run (the folder's name) with

* **scalars** per epoch, from whatever the History records hold (absent or None values are
  skipped): ``cost/train``, ``cost/eval``, ``accuracy/train``, ``accuracy/eval``,
  ``time/epoch_seconds``, ``learning_rate`` (the config's rate times any
  ``learning_rate_scale`` recorded), ``norm/params``, ``norm/gradient``, and any other number
  a record holds as ``other/<name>``; ``test/cost`` and ``test/accuracy`` at the last epoch;
* **hyperparameters** through the HParams plugin (the run's config, with the final cost and
  accuracy as its metrics), so that runs and sweeps compare in one table;
* **images**: the run's figures (PNG files, embedded as they are).

The writer is the ``tensorboard`` package's own event file writer and protocol buffers
(``tensorboard.summary.writer.event_file_writer``, ``tensorboard.compat.proto``, the HParams
plugin's ``summary_v2.hparams_pb``), which work without TensorFlow; the same package is
what shows the files (``tensorboard --logdir``) and what the tests read them back with.
tensorboardX was measured and not chosen: it imports PyTorch whenever PyTorch is installed
(5.8-7.4 s in a process on the loaded 2-core development machine, against 1.0-1.1 s for
these tensorboard modules measured in the same minutes; 0.09 s against 0.15 s for each
alone before PyTorch was installed). It is imported only inside ``write_run_events``.

While a run trains, ``LiveEvents`` appends each epoch's scalars to the folder's event stream
and flushes them, so that ``tensorboard --logdir runs`` follows the run; a resumed run's
stream starts again from the epochs its history holds (one file, no duplicate steps).

At the end, the event file is written whole into a temporary folder and then renamed into place, and
only then are the event files an earlier call wrote removed: a crash leaves the old events or
the new ones, never a torn file, and writing again (a resumed run) replaces rather than
duplicates the curves.
"""

from __future__ import annotations

import glob
import math
import os
import shutil
import socket
import struct
import tempfile
import time
from collections.abc import Mapping, Sequence
from typing import Any

from gd_jax._src.extras import require
from gd_jax._src.train import History

__all__ = ["EVENT_SUFFIX", "SCALAR_TAGS", "LiveEvents", "hparams_of", "scalars_of", "write_run_events"]

# Marks the event files gd_jax writes, so that a rewrite replaces exactly those.
EVENT_SUFFIX = ".gd_jax"
# History record fields and the TensorBoard tags they are shown under.
SCALAR_TAGS = {
    "train_cost": "cost/train",
    "eval_cost": "cost/eval",
    "train_accuracy": "accuracy/train",
    "eval_accuracy": "accuracy/eval",
    "seconds": "time/epoch_seconds",
    "param_norm": "norm/params",
    "grad_norm": "norm/gradient",
    "learning_rate_scale": "learning_rate/scale",
}
# PNG colour types and TensorBoard's colour spaces (channels).
_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def scalars_of(history: History | Mapping[str, Any], config: Mapping[str, Any] | None = None,
               ) -> dict[str, list[tuple[int, float]]]:
    """The per-epoch scalars ``write_run_events`` writes: ``{tag: [(epoch, value), ...]}``.

    Every finite number a record holds is kept (``epoch`` is the step); None, NaN and
    infinite values are skipped. ``learning_rate`` is the config's ``learning_rate`` times
    the record's ``learning_rate_scale`` (1 when not recorded).
    """
    if not isinstance(history, History):
        history = History.from_dict(dict(history))
    config = config or {}
    scalars: dict[str, list[tuple[int, float]]] = {}
    for record in history.epochs:
        step = int(record["epoch"])
        for name, value in record.items():
            if name != "epoch" and _is_number(value):
                scalars.setdefault(SCALAR_TAGS.get(name, f"other/{name}"), []).append((step, float(value)))
        if _is_number(config.get("learning_rate")):
            scale = record.get("learning_rate_scale")
            rate = config["learning_rate"] * (scale if _is_number(scale) else 1.0)
            scalars.setdefault("learning_rate", []).append((step, float(rate)))
    return scalars


def hparams_of(config: Mapping[str, Any]) -> dict[str, bool | float | str]:
    """The run's settings as HParams values: numbers, booleans and strings as they are;
    None as ``"none"``; lists as comma-separated text (``sizes`` 784,30,10); others as text."""
    values: dict[str, bool | float | str] = {}
    for name, value in config.items():
        if isinstance(value, bool | str) or _is_number(value):
            values[name] = value
        elif value is None:
            values[name] = "none"
        elif isinstance(value, list | tuple):
            values[name] = ",".join(str(v) for v in value)
        else:
            values[name] = str(value)
    return values


def _png_image(path: str):
    """A TensorBoard image summary value holding the PNG file's bytes as they are."""
    from tensorboard.compat.proto.summary_pb2 import Summary

    with open(path, "rb") as f:
        data = f.read()
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise ValueError(f"{path!r} is not a PNG file; pass the run's figures (PNG)")
    width, height = struct.unpack(">II", data[16:24])
    channels = _PNG_CHANNELS.get(data[25], 4)
    return Summary.Image(height=height, width=width, colorspace=channels, encoded_image_string=data)


def write_run_events(
    run_dir: str | os.PathLike,
    history: History | Mapping[str, Any],
    config: Mapping[str, Any] | None = None,
    *,
    figures: Sequence[str | os.PathLike] | Mapping[str, str | os.PathLike] = (),
    test_cost: float | None = None,
    test_accuracy: float | None = None,
) -> str:
    """Writes a run's TensorBoard event file into ``run_dir``, replacing any gd_jax wrote before.

    Args:
      run_dir: the run folder (must exist).
      history: the run's ``History`` (or ``history.json``'s content).
      config: the run's settings (``config.json``): the hyperparameters, and the learning rate.
      figures: PNG files to show under Images: paths (tagged ``figures/<name>``) or
        ``{tag: path}``.
      test_cost, test_accuracy: the final test results, written at the last epoch and
        used as HParams metrics.

    Returns:
      The event file's path.

    Raises:
      FileNotFoundError: no run folder, or a figure is missing.
      ValueError: a figure is not a PNG.
    """
    require("tensorboard", purpose="TensorBoard event files")
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.plugins.hparams import summary_v2 as hp
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    run_dir = os.fspath(run_dir)
    if not os.path.isdir(run_dir):
        raise FileNotFoundError(f"run folder not found: {run_dir!r}; TensorBoard events go into an existing run folder")
    if not isinstance(figures, Mapping):
        figures = {f"figures/{os.path.splitext(os.path.basename(os.fspath(p)))[0]}": p for p in figures}
    for path in figures.values():
        if not os.path.isfile(path):
            raise FileNotFoundError(f"figure not found: {os.fspath(path)!r}; write the figures before the events")
    images = {tag: _png_image(os.fspath(path)) for tag, path in figures.items()}
    config = dict(config or {})
    scalars = scalars_of(history, config)
    last = max((step for series in scalars.values() for step, _ in series), default=0)
    for tag, value in (("test/cost", test_cost), ("test/accuracy", test_accuracy)):
        if value is not None and _is_number(value):
            scalars[tag] = [(last, float(value))]
    # HParams' metrics: the final value of each cost and accuracy series.
    metrics = {tag: series[-1][1] for tag, series in scalars.items() if tag.startswith(("cost/", "accuracy/", "test/"))}

    old = glob.glob(os.path.join(glob.escape(run_dir), f"events.out.tfevents.*{EVENT_SUFFIX}"))
    staging = tempfile.mkdtemp(prefix=".tmp-tensorboard-", dir=run_dir)
    try:
        writer = EventFileWriter(staging, max_queue_size=1 << 20, flush_secs=3600, filename_suffix=EVENT_SUFFIX)
        try:
            def add(summary, step: int = 0) -> None:
                writer.add_event(Event(wall_time=time.time(), step=step, summary=summary))

            if config:
                values = hparams_of(config)
                # One row per run folder in the HParams table, even for runs with equal settings.
                trial = os.path.basename(os.path.abspath(run_dir))
                add(hp.hparams_config_pb([hp.HParam(name) for name in values], [hp.Metric(tag) for tag in metrics]))
                add(hp.hparams_pb(values, trial_id=trial))
            for tag, series in scalars.items():
                for step, value in series:
                    add(Summary(value=[Summary.Value(tag=tag, simple_value=value)]), step)
            for tag, image in images.items():
                add(Summary(value=[Summary.Value(tag=tag, image=image)]), last)
        finally:
            writer.close()
        (written,) = os.listdir(staging)
        final = os.path.join(run_dir, written)
        os.replace(os.path.join(staging, written), final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for path in old:
        if os.path.abspath(path) != os.path.abspath(final):
            os.remove(path)
    return final


def _own_event_files(run_dir: str) -> list[str]:
    return glob.glob(os.path.join(glob.escape(run_dir), f"events.out.tfevents.*{EVENT_SUFFIX}"))


class LiveEvents:
    """A run's TensorBoard scalars, appended and flushed as each epoch ends.

    The first epoch opens a new event file holding the epochs ``history`` already has (a
    resumed run's) and removes the event files gd_jax wrote there before: the stream
    continues without duplicate or missing steps (and a run that trains no epoch gets no
    file). ``write_run_events`` at the end of the run replaces it with the complete file
    (hyperparameters, figures, test results). Writes are synchronous (no thread per file),
    so a sweep may hold one stream per model.

    Args:
      run_dir: the run folder (created if missing).
      config: the run's settings (for the learning rate scalar).
      history: the epochs done so far (``History``, its dict, or None for none).
      enabled: False writes nothing (``--no-tensorboard``).

    Used as ``events = LiveEvents("runs/a", config)``, then ``events.epoch(record)`` for each
    epoch's history record (``tensorboard --logdir runs`` shows it at once) and ``events.close()``.
    """

    def __init__(self, run_dir: str | os.PathLike, config: Mapping[str, Any] | None = None, *,
                 history: History | Mapping[str, Any] | None = None, enabled: bool = True):
        self.run_dir, self.config, self.enabled = os.fspath(run_dir), dict(config or {}), enabled
        self._history = history or {"epochs": []}
        self._file: Any = None
        if enabled:
            require("tensorboard", purpose="TensorBoard event files")

    def _open(self) -> None:
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.summary.writer.record_writer import RecordWriter

        os.makedirs(self.run_dir, exist_ok=True)
        old = _own_event_files(self.run_dir)
        name = f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}.live{EVENT_SUFFIX}"
        path = os.path.join(self.run_dir, name)
        self._file = RecordWriter(open(path, "wb"))
        self._write(Event(wall_time=time.time(), file_version="brain.Event:2"))
        self._scalars(scalars_of(self._history, self.config))
        for other in old:
            if os.path.abspath(other) != os.path.abspath(path):
                os.remove(other)

    def _write(self, event: Any) -> None:
        self._file.write(event.SerializeToString())

    def _scalars(self, scalars: Mapping[str, list[tuple[int, float]]]) -> None:
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary

        for tag, series in scalars.items():
            for step, value in series:
                self._write(Event(wall_time=time.time(), step=step,
                                  summary=Summary(value=[Summary.Value(tag=tag, simple_value=value)])))
        self._file.flush()

    def epoch(self, record: Mapping[str, Any]) -> None:
        """Appends one epoch's record (``History.epochs[-1]``) and flushes it to disk."""
        if not self.enabled:
            return
        if self._file is None:
            self._open()
        if not self._file.closed:
            self._scalars(scalars_of({"epochs": [dict(record)]}, self.config))

    def close(self) -> None:
        if self._file is not None and not self._file.closed:
            self._file.close()
