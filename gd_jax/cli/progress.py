"""What a person reads while a run trains: a bar on a terminal, one plain line an epoch elsewhere."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import Any

from gd_jax._src.extras import require


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
