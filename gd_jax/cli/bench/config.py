"""What one ``gd-jax bench`` run measures: its configuration, the variants' names, the checks on both."""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence
from typing import Any

from gd_jax._src.costs import COSTS

__all__ = ["BASELINE", "DEVICES", "QUICK", "SCHEMA_VERSION", "SWEEP_MODELS", "TOLERANCE", "VARIANTS", "BenchConfig",
           "check_config", "mlp_flops_per_example"]

SCHEMA_VERSION = 2  # 2: numpy in its own process with its best BLAS configuration, XLA configuration, load warning
VARIANTS = ("gd_jax", "gd_jax_sweep16", "gd_jax_sweep16_own", "optax", "naive_jax", "vectorized_numpy",
            "textbook_numpy", "torch", "matmul_floor", "matmul_floor_sweep16", "matmul_floor_sweep16_own")
"""The epoch variants, in table order; ``peak`` is measured once per run, not per batch size."""
SWEEP_MODELS = 16
DEVICES = ("cpu", "gpu", "tpu")
TOLERANCE = 1e-3  # relative to the parameters' movement; float32 variants measured 1e-6 to 1e-4
BASELINE = "gd_jax"


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """What one benchmark run measures.

    Attributes:
      sizes: the network's layer sizes.
      batch_sizes: mini-batch sizes, one table each.
      cost: a key of ``gd.COSTS``.
      learning_rate: ``eta`` of ``sgd``.
      rows: training rows per epoch (the data tiled or cut to this many).
      repeats: timed epochs per variant (>= 5 for the published figures).
      warmup: untimed epochs per variant before timing.
      variants: which of ``VARIANTS`` to run.
      check_steps: mini-batches each variant is checked on against ``gd_jax``.
      textbook_batches: mini-batches ``textbook_numpy`` times (extrapolated to the epoch).
      peak_size: ``n`` of the ``n x n`` matmul that measures the peak FLOP/s.
      dataset: ``"sample"`` (the embedded digits), ``"mnist"`` or ``"idx"``, as ``gd.load_mnist``.
      data_dir: tensorflow-datasets folder for ``"mnist"``.
      idx_dir: IDX folder for ``"idx"`` (or genuine MNIST files for ``"mnist"``).
      device: ``"cpu"``, ``"gpu"``, ``"tpu"``, or None for JAX's default backend.
      time_to_accuracy: measure time to accuracy.
      target_accuracy: its target (None: 0.95 on full MNIST, 0.85 on the sample).
      max_epochs: time to accuracy gives up after this many epochs.
      tta_batch_size: the mini-batch size of the time-to-accuracy runs.
      per_example_batch: batch size of the per-example gradient comparison (0: skip it).
      seed: initial parameters and batch orders derive from ``jax.random.key(seed)``.
      baseline_threads: threads of numpy's BLAS and of PyTorch in their variants; None (the
        default) gives each its best: both 1 and all cores are timed during warm-up and the
        faster is used (both figures recorded). numpy runs in its own process with the
        machine's OpenBLAS overrides (``OPENBLAS_CORETYPE``, ``OPENBLAS_L2_SIZE``) removed, so
        that OpenBLAS picks its own kernel for this CPU (recorded as ``threadpoolctl`` reports it).
      hlo_dir: a folder to write each JAX variant's optimised HLO to (``bs<B>-<variant>.hlo.txt``).
      train_command_runs: timed runs of the whole ``gd-jax train`` command, warm compilation cache,
        after one that fills it (0: skip; see ``train_command``).
      quick: the reduced run (recorded in the JSON).
    """

    sizes: tuple[int, ...] = (784, 30, 10)
    batch_sizes: tuple[int, ...] = (10, 128, 1000)
    cost: str = "quadratic"
    learning_rate: float = 3.0
    rows: int = 60_000
    repeats: int = 5
    warmup: int = 1
    variants: tuple[str, ...] = VARIANTS
    check_steps: int = 20
    textbook_batches: int = 200
    peak_size: int = 2048
    dataset: str = "sample"
    data_dir: str | None = None
    idx_dir: str | None = None
    device: str | None = None
    time_to_accuracy: bool = True
    target_accuracy: float | None = None
    max_epochs: int = 30
    tta_batch_size: int = 10
    per_example_batch: int = 128
    seed: int = 0
    baseline_threads: int | None = None
    hlo_dir: str | None = None
    train_command_runs: int = 3
    quick: bool = False


QUICK: dict[str, Any] = {"batch_sizes": (10, 128), "rows": 6_000, "repeats": 3, "check_steps": 5,
                         "textbook_batches": 20, "peak_size": 1024, "max_epochs": 3, "target_accuracy": 0.8,
                         "per_example_batch": 32, "train_command_runs": 1}
"""What ``--quick`` changes: a run of well under a minute that still exercises every part."""


def check_config(config: BenchConfig) -> None:
    """Raises ``ValueError`` naming the fix for a configuration that cannot run."""
    if len(config.sizes) < 2 or any(not isinstance(s, int) or s < 1 for s in config.sizes):
        raise ValueError(f"sizes must be two or more positive integers, got {list(config.sizes)}; e.g. 784,30,10")
    if config.cost not in COSTS:
        raise ValueError(f"unknown cost {config.cost!r}; choose one of {', '.join(COSTS)}")
    if not (math.isfinite(config.learning_rate) and config.learning_rate > 0):
        raise ValueError(f"learning_rate must be a positive finite number, got {config.learning_rate}; "
                         "the textbook uses 3.0")
    for name, low in (("rows", 1), ("repeats", 1), ("warmup", 0), ("check_steps", 1), ("textbook_batches", 1),
                      ("peak_size", 1), ("max_epochs", 1), ("tta_batch_size", 1), ("per_example_batch", 0),
                      ("train_command_runs", 0)):
        value = getattr(config, name)
        if not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if not config.batch_sizes or any(not isinstance(b, int) or not 1 <= b <= config.rows
                                     for b in config.batch_sizes):
        raise ValueError(f"batch sizes must be integers between 1 and rows ({config.rows}), "
                         f"got {list(config.batch_sizes)}; e.g. 10,128,1000")
    unknown = [v for v in config.variants if v not in VARIANTS]
    if unknown or not config.variants:
        raise ValueError(f"unknown variants {unknown or '(none given)'}; choose from {', '.join(VARIANTS)}")
    if config.device is not None and config.device not in DEVICES:
        raise ValueError(f"unknown device {config.device!r}; choose one of {', '.join(DEVICES)}")
    if config.baseline_threads is not None and (not isinstance(config.baseline_threads, int)
                                                or config.baseline_threads < 1):
        raise ValueError(f"baseline_threads must be an integer >= 1 or None, got {config.baseline_threads!r}")
    if config.target_accuracy is not None and not 0 < config.target_accuracy <= 1:
        raise ValueError(f"target accuracy must be in (0, 1], got {config.target_accuracy}; e.g. 0.95")


def mlp_flops_per_example(sizes: Sequence[int]) -> int:
    """Matrix-product FLOPs of one training step of one example (see the package docstring)."""
    products = [n_in * n_out for n_in, n_out in itertools.pairwise(sizes)]
    return 4 * sum(products) + 2 * sum(products[1:])
