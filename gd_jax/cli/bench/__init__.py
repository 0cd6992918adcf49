"""``gd-jax bench``: how fast gradient descent runs on this machine, how close to its limit, and against what.

One invocation measures, side by side on the same data and the same maths (a sigmoid
network, ``sgd(eta)``, host-drawn batch orders as ``fit`` draws them), one training epoch of
each *variant*:

==================== ======================================================================
``gd_jax``           ``jax.jit(gd.make_epoch(...))``: exactly the epoch ``fit`` runs
``gd_jax_sweep16``   16 models as one program (``gd.make_sweep_epoch``, as ``gd.sweep`` runs it),
                     one shared batch order
``gd_jax_sweep16_own`` the same, each model with its own batch order
``optax``            the same scan with ``optax.sgd`` in place of ``gd.sgd``
``naive_jax``        a jitted step called from Python once per mini-batch (no scan)
``vectorized_numpy`` float32 numpy, the mini-batch as one matrix
``textbook_numpy``   ``network.py``: one float64 backprop per example, extrapolated from a
                     fixed number of mini-batches
``torch``            PyTorch eager: ``nn.Linear`` + sigmoid + ``torch.optim.SGD`` (skipped
                     when torch is not installed: ``pip install -e ".[bench]"``)
``matmul_floor``     the epoch's matrix products alone (rows gathered, no activation, no
                     update) in a compiled scan: what the step cannot go below
``peak``             a large square matmul: the machine's FLOP/s
==================== ======================================================================

For each: seconds per epoch (median and range of the timed epochs, after warm-up; epochs
of all variants are timed round-robin so that a shared machine's drift hits them alike),
compile seconds, examples/s, achieved GFLOP/s and its fraction of the measured peak, the
peak host RSS while the variant was built and warmed (``VmHWM``, reset per variant on Linux)
and device memory where the backend reports it.

**No variant is fast because it is wrong.** Before timing, each variant trains
``check_steps`` mini-batches (plus the epoch's smaller last one, when there is one) from
the same parameters and batch order as ``gd_jax``, and its parameters must match:

.. math:: \\text{error} = \\frac{\\max |p_\\text{variant} - p_\\text{gd\\_jax}|}
          {\\max |p_\\text{gd\\_jax} - p_\\text{initial}|} \\le \\text{tolerance}

(the difference relative to how far the steps moved the parameters). A variant that fails
is reported as ``wrong`` and kept out of every ratio.

**FLOPs.** An epoch of an MLP with layer sizes ``n_0 .. n_L`` on ``n`` examples does
``2 n sum_l n_{l-1} n_l`` FLOPs forward, the same again for the weight gradients, and
``2 n sum_{l >= 2} n_{l-1} n_l`` for propagating the error back (the elementwise work is
negligible next to it): 95,880 FLOPs per example for ``[784, 30, 10]``.

Besides the epochs: time to accuracy (wall seconds, compilation included and reported
apart, until the evaluation accuracy first reaches a target; gd_jax's ``fit``, PyTorch and
vectorized numpy with the same initial parameters and batch orders), per-example gradients
(``vmap(grad)`` against the batch gradient and a Python loop of gradients) and the cost of
the batch order (an on-device ``jax.random.permutation`` against ``gd.shuffled_order`` plus
the transfer).

From Python::

    import gd_jax.cli.bench as bench
    result = bench.run(bench.BenchConfig(batch_sizes=(10, 128)))
    print(bench.format_table(result))
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import io
import itertools
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np
import optax

from gd_jax._src.backprop import backprop
from gd_jax._src.costs import COSTS
from gd_jax._src.data import Dataset, load_mnist
from gd_jax._src.epoch import TrainState, make_epoch, shuffled_order
from gd_jax._src.gradients import batch_grad, per_example_grads
from gd_jax._src.network import init_mlp
from gd_jax._src.optim import apply_updates, sgd
from gd_jax._src.serialization import atomic_write_bytes
from gd_jax._src.sweep import make_sweep_epoch, model_axes
from gd_jax._src.train import EpochEnd, fit
from gd_jax.cli.runs import BadInput, bad_input

__all__ = [
    "SCHEMA_VERSION",
    "VARIANTS",
    "BenchConfig",
    "add_bench_arguments",
    "compare_results",
    "config_from_args",
    "format_table",
    "main",
    "mlp_flops_per_example",
    "plot_results",
    "run",
    "run_bench",
    "step_kernels",
]

SCHEMA_VERSION = 1
VARIANTS = ("gd_jax", "gd_jax_sweep16", "gd_jax_sweep16_own", "optax", "naive_jax", "vectorized_numpy",
            "textbook_numpy", "torch", "matmul_floor")
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
      baseline_threads: threads of numpy's BLAS (through ``threadpoolctl``, when installed) and of
        PyTorch for their variants; None keeps the libraries' defaults. One by default: on a
        shared 2-core machine their thread pools made these small products slower and erratic
        (spinning threads competing with other processes), which timed the threading, not the
        algorithm. XLA's own threads are left as they are (``XLA_FLAGS``, recorded).
      hlo_dir: a folder to write each JAX variant's optimised HLO to (``bs<B>-<variant>.hlo.txt``).
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
    baseline_threads: int | None = 1
    hlo_dir: str | None = None
    quick: bool = False


QUICK = {"batch_sizes": (10, 128), "rows": 6_000, "repeats": 3, "check_steps": 5, "textbook_batches": 20,
         "peak_size": 1024, "max_epochs": 3, "target_accuracy": 0.8, "per_example_batch": 32}
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
                      ("peak_size", 1), ("max_epochs", 1), ("tta_batch_size", 1), ("per_example_batch", 0)):
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


# ---------------------------------------------------------------------------------------------
# FLOPs, timing, memory, the machine


def mlp_flops_per_example(sizes: Sequence[int]) -> int:
    """Matrix-product FLOPs of one training step of one example (see the module docstring)."""
    products = [n_in * n_out for n_in, n_out in itertools.pairwise(sizes)]
    return 4 * sum(products) + 2 * sum(products[1:])


class Timing(NamedTuple):
    """Seconds of repeated runs and their summary."""

    seconds: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def spread(self) -> float:
        """Half the range relative to the median: the run's noise, ``(max - min) / (2 median)``."""
        return (max(self.seconds) - min(self.seconds)) / (2 * self.median) if self.median > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"seconds": self.seconds, "median": self.median, "min": min(self.seconds),
                "max": max(self.seconds), "spread": self.spread}


def _time_round_robin(runs: dict[str, Callable[[int], Any]], repeats: int) -> dict[str, Timing]:
    """Seconds of ``run(r)`` for r in 0..repeats-1, interleaved across the runs so that drift hits all alike."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for r in range(repeats):
        for name, fn in runs.items():
            start = time.perf_counter()
            jax.block_until_ready(fn(r))
            times[name].append(time.perf_counter() - start)
    return {name: Timing(t) for name, t in times.items()}


def _reset_peak_rss() -> bool:
    """Resets the kernel's peak-RSS counter of this process (Linux); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss_bytes() -> int | None:
    """This process's peak resident set (since the last reset on Linux, else since it started)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    except ImportError:
        return None


def _device_memory(device: jax.Device) -> dict[str, int] | None:
    """Device memory in use and its peak, where the backend reports it (GPUs, TPUs; not the CPU)."""
    try:
        stats = device.memory_stats()
    except (AttributeError, NotImplementedError, RuntimeError):
        return None
    if not stats:
        return None
    return {k: int(stats[k]) for k in ("bytes_in_use", "peak_bytes_in_use", "bytes_limit") if k in stats}


def _git_commit() -> dict[str, Any] | None:
    """The commit of the gd_jax source being measured, and whether the working tree differs from it."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        commit = subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", here, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": bool(dirty)}


def describe_machine(device: jax.Device) -> dict[str, Any]:
    """The machine and software a run measured: device, cores, load, versions, thread settings."""
    versions = {"python": platform.python_version(), "jax": jax.__version__, "jaxlib": jaxlib.__version__,
                "numpy": np.__version__}
    for name in ("optax", "torch"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            versions[name] = None
    try:
        cpu_model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                          if line.startswith("model name")), platform.processor())
    except OSError:
        cpu_model = platform.processor()
    return {
        "platform": device.platform, "device_kind": device.device_kind, "device": str(device),
        "device_count": jax.device_count(device.platform), "cpu_count": os.cpu_count(), "cpu_model": cpu_model,
        "system": f"{platform.system()} {platform.release()} {platform.machine()}", "node": platform.node(),
        "versions": versions,
        "environment": {k: os.environ.get(k) for k in ("XLA_FLAGS", "NPROC", "OPENBLAS_NUM_THREADS",
                                                        "OMP_NUM_THREADS", "MKL_NUM_THREADS")},
    }


# ---------------------------------------------------------------------------------------------
# The variants


@dataclasses.dataclass
class _Problem:
    """Everything the variants of one batch size share: data, initial parameters, batch orders."""

    config: BenchConfig
    batch_size: int
    device: jax.Device
    x: np.ndarray  # (n, n_0) float32
    y: np.ndarray  # (n,) int32
    params: list[dict[str, np.ndarray]]  # the initial parameters (float32)
    orders: list[np.ndarray]  # one batch order per timed epoch; orders[0] also warms up

    @property
    def n(self) -> int:
        return self.x.shape[0]

    @property
    def n_classes(self) -> int:
        return self.config.sizes[-1]

    @property
    def steps(self) -> int:
        return -(-self.n // self.batch_size)

    def check_problem(self) -> _Problem:
        """The same problem cut to the rows of ``check_steps`` mini-batches of the first order and,
        when the epoch has one, of its smaller last mini-batch, visited in that order."""
        full, rest = divmod(self.n, self.batch_size)
        order = self.orders[0]
        rows = order[: min(self.config.check_steps, full) * self.batch_size]
        if rest:
            rows = np.concatenate([rows, order[full * self.batch_size:]])
        return dataclasses.replace(self, x=self.x[rows], y=self.y[rows], orders=[np.arange(len(rows), dtype=np.int32)])


class _Runner(NamedTuple):
    """A built variant: ``epoch(order)`` trains one epoch from the initial parameters and returns them (numpy)."""

    epoch: Callable[[np.ndarray], Any]
    compile_seconds: float | None = None
    models: int = 1
    timed_epoch: Callable[[np.ndarray], Any] | None = None  # textbook_numpy: a part of the epoch, extrapolated
    compiled: Any = None  # JAX variants: the compiled epoch, for its optimised HLO
    steps_timed: int | None = None  # the mini-batches timed_epoch runs
    checked: bool = True
    note: str = ""


class _Skipped(Exception):
    """A variant that cannot run here (its library is missing): reported as skipped, not failed."""


def _to_numpy(params) -> list[dict[str, np.ndarray]]:
    return [{k: np.asarray(v) for k, v in layer.items()} for layer in jax.device_get(params)]


def _jax_cost(config: BenchConfig) -> Callable:
    return COSTS[config.cost]


def _compile(fn: Callable, *args) -> tuple[Callable, float]:
    """``fn`` jitted and compiled ahead for ``args`` (timed), falling back to plain jit for other shapes."""
    jitted = jax.jit(fn)
    start = time.perf_counter()
    compiled = jitted.lower(*args).compile()
    seconds = time.perf_counter() - start
    shape = [np.shape(a) for a in jax.tree.leaves(args)]

    def call(*a):
        return compiled(*a) if [np.shape(v) for v in jax.tree.leaves(a)] == shape else jitted(*a)

    call.compiled = compiled  # type: ignore[attr-defined]  # its optimised HLO, for the profile
    return call, seconds


def _build_gd_jax(p: _Problem, optimizer=None) -> _Runner:
    opt = optimizer or sgd(p.config.learning_rate)
    epoch = make_epoch(_jax_cost(p.config), opt, batch_size=p.batch_size, n_classes=p.n_classes)
    x, y = jax.device_put(p.x, p.device), jax.device_put(p.y, p.device)
    params = jax.device_put(p.params, p.device)
    state = TrainState(params, opt.init(params))
    call, seconds = _compile(epoch, state, x, y, p.orders[0])
    return _Runner(lambda order: call(state, x, y, order)[0].params, seconds, compiled=call.compiled)


def _build_optax(p: _Problem) -> _Runner:
    return _build_gd_jax(p, optax.sgd(p.config.learning_rate))


def _stacked(trees: list) -> Any:
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def _build_sweep(p: _Problem, *, own_orders: bool) -> _Runner:
    """16 models as one program: ``gd.make_sweep_epoch`` in the layout ``gd.sweep`` uses (model 0 starts as gd_jax)."""
    mode = "per_model" if own_orders else "shared"
    opt = sgd(p.config.learning_rate)
    cost = _jax_cost(p.config)
    keys = jax.random.split(jax.random.key(p.config.seed + 1), SWEEP_MODELS - 1)
    models = [jax.device_put(p.params, p.device)] + [init_mlp(k, list(p.config.sizes)) for k in keys]
    param_axes, state_axes = model_axes(models[0], jax.eval_shape(opt.init, models[0]), shuffle=mode)
    params = jax.device_put(jax.tree.map(lambda leaf, axis: jnp.moveaxis(leaf, 0, axis), _stacked(models),
                                         param_axes), p.device)
    state = TrainState(params, jax.vmap(opt.init, in_axes=(param_axes,), out_axes=state_axes)(params))
    hyper = {"learning_rate": jnp.full((SWEEP_MODELS,), p.config.learning_rate, jnp.float32)}
    epoch = make_sweep_epoch(lambda h: cost, lambda h: sgd(h["learning_rate"]), batch_size=p.batch_size,
                             n_classes=p.n_classes, shuffle=mode, param_axes=param_axes, state_axes=state_axes)
    x, y = jax.device_put(p.x, p.device), jax.device_put(p.y, p.device)

    def orders_of(order: np.ndarray) -> np.ndarray:
        if not own_orders:
            return order
        # Model 0 keeps the order it is checked with; the others shuffle with their own keys (the
        # shuffle of a subset for the check is a permutation of that subset, like the order itself).
        others = [order[shuffled_order(jax.random.key(p.config.seed + 100 + m), len(order))]
                  for m in range(1, SWEEP_MODELS)]
        return np.stack([order, *others])

    def model_0(trained):
        return jax.tree.map(lambda leaf, axis: jnp.take(leaf, 0, axis=axis), trained, param_axes)

    call, seconds = _compile(epoch, state, hyper, x, y, orders_of(p.orders[0]))
    return _Runner(lambda order: model_0(call(state, hyper, x, y, orders_of(order))[0].params),
                   seconds, models=SWEEP_MODELS, compiled=call.compiled,
                   note=f"gd.make_sweep_epoch, shuffle={mode!r}")


def _build_naive_jax(p: _Problem) -> _Runner:
    """A jitted step dispatched from Python per mini-batch, rows picked on the device from the host's order."""
    opt = sgd(p.config.learning_rate)
    cost = _jax_cost(p.config)
    n_classes = p.n_classes

    def step(state: TrainState, x, y, rows):
        yb = jax.nn.one_hot(y[rows], n_classes, dtype=x.dtype)
        c, grads = jax.value_and_grad(cost)(state.params, x[rows], yb)
        updates, opt_state = opt.update(grads, state.opt_state, state.params)
        return TrainState(apply_updates(state.params, updates), opt_state), jnp.isfinite(c)

    x, y = jax.device_put(p.x, p.device), jax.device_put(p.y, p.device)
    params = jax.device_put(p.params, p.device)
    state0 = TrainState(params, opt.init(params))
    call, seconds = _compile(step, state0, x, y, p.orders[0][: p.batch_size])
    bs = p.batch_size

    def epoch(order: np.ndarray):
        state, finite = state0, []
        for start in range(0, len(order), bs):
            state, ok = call(state, x, y, order[start: start + bs])
            finite.append(ok)  # kept on the device: reading each flag would block every step
        return state.params

    return _Runner(epoch, seconds, compiled=call.compiled)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):  # exp overflow gives 1/inf = 0, the right limit
        return 1.0 / (1.0 + np.exp(-z))


def _numpy_step(ws: list[np.ndarray], bs: list[np.ndarray], xb: np.ndarray, yb: np.ndarray, eta: float,
                cost: str) -> None:
    """One mini-batch step of the four backpropagation equations on whole matrices, updating in place."""
    acts = [xb]
    for w, b in zip(ws[:-1], bs[:-1]):
        acts.append(_sigmoid(acts[-1] @ w + b))
    z = acts[-1] @ ws[-1] + bs[-1]
    if cost == "log-likelihood":
        e = np.exp(z - z.max(axis=1, keepdims=True))
        delta = e / e.sum(axis=1, keepdims=True) - yb
    else:
        a = _sigmoid(z)
        delta = (a - yb) * a * (1 - a) if cost == "quadratic" else a - yb
    delta *= np.float32(eta / len(xb))  # eta and the batch mean folded into delta once
    for layer in range(len(ws) - 1, -1, -1):
        gw = acts[layer].T @ delta
        gb = delta.sum(axis=0)
        if layer:  # BP2 with the weights before this step's update
            a = acts[layer]
            delta = (delta @ ws[layer].T) * a * (1 - a)
        ws[layer] -= gw
        bs[layer] -= gb


def _build_vectorized_numpy(p: _Problem) -> _Runner:
    eta, cost, bs = p.config.learning_rate, p.config.cost, p.batch_size
    targets = np.eye(p.n_classes, dtype=np.float32)[p.y]

    def epoch(order: np.ndarray):
        ws = [layer["w"].copy() for layer in p.params]
        bs_ = [layer["b"].copy() for layer in p.params]
        for start in range(0, len(order), bs):
            rows = order[start: start + bs]
            _numpy_step(ws, bs_, p.x[rows], targets[rows], eta, cost)
        return [{"w": w, "b": b} for w, b in zip(ws, bs_)]

    return _Runner(epoch)


def _build_textbook_numpy(p: _Problem) -> _Runner:
    """``network.py``'s ``update_mini_batch``: one float64 backprop per example, summed; a fixed number timed."""
    if p.config.cost not in ("quadratic", "cross-entropy"):
        raise _Skipped(f"the textbook's backprop has no {p.config.cost} cost")
    eta = p.config.learning_rate
    x64, targets = p.x.astype(np.float64), np.eye(p.n_classes)[p.y]
    params64 = [{k: v.astype(np.float64) for k, v in layer.items()} for layer in p.params]
    timed = min(p.config.textbook_batches, p.steps)

    def run(order: np.ndarray, batches: int | None = None):
        params = params64
        starts = list(range(0, len(order), p.batch_size))[:batches]
        for start in starts:
            rows = order[start: start + p.batch_size]
            grads = [backprop(params, x64[r:r + 1], targets[r:r + 1], cost=p.config.cost) for r in rows]
            params = [{k: layer[k] - eta * sum(g[i][k] for g in grads) / len(rows) for k in ("w", "b")}
                      for i, layer in enumerate(params)]
        return params

    return _Runner(run, timed_epoch=lambda order: run(order, timed), steps_timed=timed,
                   note=f"extrapolated from {timed} of {p.steps} mini-batches")


def _build_torch(p: _Problem) -> _Runner:
    try:
        import torch
    except ImportError as e:
        raise _Skipped('torch is not installed (pip install -e ".[bench]")') from e
    if p.device.platform != "cpu" and not torch.cuda.is_available():
        raise _Skipped(f"torch has no {p.device.platform} device here")
    dev = "cpu" if p.device.platform == "cpu" else "cuda"
    layers: list[Any] = []
    for i, layer in enumerate(p.params):
        linear = torch.nn.Linear(*layer["w"].shape)
        layers.append(linear)
        if i < len(p.params) - 1 or p.config.cost == "quadratic":
            layers.append(torch.nn.Sigmoid())
    if p.config.baseline_threads is not None:
        torch.set_num_threads(p.config.baseline_threads)
    model = torch.nn.Sequential(*layers).to(dev)
    linears = [m for m in model if isinstance(m, torch.nn.Linear)]
    x, y = torch.from_numpy(p.x).to(dev), torch.from_numpy(p.y.astype(np.int64)).to(dev)
    targets = torch.nn.functional.one_hot(y, p.n_classes).to(torch.float32)
    optimizer = torch.optim.SGD(model.parameters(), lr=p.config.learning_rate)
    cost, bs = p.config.cost, p.batch_size

    def loss_of(out, yb, labels):
        if cost == "quadratic":
            return 0.5 * ((out - yb) ** 2).sum(dim=1).mean()
        if cost == "cross-entropy":  # softplus(z) - y z, the stable form gd_jax uses
            return (torch.nn.functional.softplus(out) - yb * out).sum(dim=1).mean()
        return torch.nn.functional.cross_entropy(out, labels)

    def epoch(order: np.ndarray):
        with torch.no_grad():  # every epoch starts from the same initial parameters
            for linear, layer in zip(linears, p.params):
                linear.weight.copy_(torch.from_numpy(np.array(layer["w"].T)))  # a writable copy
                linear.bias.copy_(torch.from_numpy(np.array(layer["b"])))
        index = torch.from_numpy(order.astype(np.int64)).to(dev)
        for start in range(0, len(order), bs):
            rows = index[start: start + bs]
            loss = loss_of(model(x[rows]), targets[rows], y[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if dev != "cpu":
            torch.cuda.synchronize()
        return [{"w": linear.weight.detach().cpu().numpy().T.copy(), "b": linear.bias.detach().cpu().numpy().copy()}
                for linear in linears]

    return _Runner(epoch, note=f"{torch.get_num_threads()} threads")


def _build_matmul_floor(p: _Problem) -> _Runner:
    """The epoch's matrix products alone: forward, error back, weight gradients; no activation, no update.

    Each step's weight gradients become the next step's weights (the same shapes), so every
    product depends on the last and none can be hoisted out of the loop; the values are
    meaningless (they overflow), the work is the algorithm's products and row gathers.
    """
    bs = p.batch_size
    full = p.n // bs
    weights = [jax.device_put(layer["w"], p.device) for layer in p.params]
    x = jax.device_put(p.x, p.device)

    def floor(ws, x, order):
        def step(ws, rows):
            acts = [x[rows]]
            for w in ws:
                acts.append(acts[-1] @ w)
            delta, grads = acts[-1], [None] * len(ws)
            for layer in range(len(ws) - 1, -1, -1):
                grads[layer] = acts[layer].T @ delta
                if layer:
                    delta = delta @ ws[layer].T
            return grads, None

        return jax.lax.scan(step, ws, order[: full * bs].reshape(full, bs))[0]

    call, seconds = _compile(floor, weights, x, p.orders[0])
    return _Runner(lambda order: call(weights, x, order), seconds, checked=False, compiled=call.compiled,
                   note="not the algorithm: its matrix products alone")


_BUILDERS: dict[str, Callable[[_Problem], _Runner]] = {
    "gd_jax": _build_gd_jax,
    "gd_jax_sweep16": lambda p: _build_sweep(p, own_orders=False),
    "gd_jax_sweep16_own": lambda p: _build_sweep(p, own_orders=True),
    "optax": _build_optax,
    "naive_jax": _build_naive_jax,
    "vectorized_numpy": _build_vectorized_numpy,
    "textbook_numpy": _build_textbook_numpy,
    "torch": _build_torch,
    "matmul_floor": _build_matmul_floor,
}


# Instructions that launch no kernel: they name, split or join buffers.
_NO_KERNEL = {"parameter", "get-tuple-element", "tuple", "bitcast", "constant"}


def step_kernels(hlo_text: str) -> dict[str, Any] | None:
    """The kernels of one training step: the instructions of the compiled scan's loop body.

    Reads optimised HLO text (``jax.jit(f).lower(...).compile().as_text()``) and counts the
    body's instructions that run code (fusions, dots, copies, ...), by opcode; for a program
    without a loop (one step a dispatch), the entry computation's. On the CPU each is one
    kernel launch per step, the cost that dominates small mini-batches.
    """
    bodies = re.findall(r"body=%([\w.\-]+)", hlo_text)
    computations = []
    for name in bodies or [None]:
        if name is None:
            match = re.search(r"^ENTRY .*?\n}\n", hlo_text, re.S | re.M)
        else:
            match = re.search(r"^%" + re.escape(name) + r" .*?\n}\n", hlo_text, re.S | re.M)
        if match:
            ops = re.findall(r"^\s+(?:ROOT )?%([\w.\-]+) = .*? ([\w\-]+)\(", match.group(0), re.M)
            computations.append([(n, op) for n, op in ops if op not in _NO_KERNEL])
    if not computations:
        return None
    kernels = max(computations, key=len)
    return {"count": len(kernels), "by_opcode": dict(collections.Counter(op for _, op in kernels)),
            "kernels": [n for n, _ in kernels]}


def _relative_error(params, reference, initial) -> float:
    """``max |params - reference| / max |reference - initial|`` over every leaf."""
    leaves = zip(jax.tree.leaves(params), jax.tree.leaves(reference), jax.tree.leaves(initial))
    diff, moved = 0.0, 0.0
    for p, r, i in leaves:
        p, r, i = (np.asarray(a, dtype=np.float64) for a in (p, r, i))
        diff = max(diff, float(np.max(np.abs(p - r))))
        moved = max(moved, float(np.max(np.abs(r - i))))
    return diff / moved if moved > 0 else (0.0 if diff == 0 else math.inf)


# ---------------------------------------------------------------------------------------------
# One batch size


def _bench_batch_size(config: BenchConfig, batch_size: int, x: np.ndarray, y: np.ndarray, device: jax.Device,
                      peak_gflops: float | None, log: Callable[[str], None]) -> dict[str, Any]:
    key = jax.random.key(config.seed)
    init_key, order_key = jax.random.split(key)
    params = _to_numpy(init_mlp(init_key, list(config.sizes)))
    orders = [shuffled_order(jax.random.fold_in(order_key, r), x.shape[0]) for r in range(config.repeats)]
    problem = _Problem(config, batch_size, device, x, y, params, orders)
    flops = mlp_flops_per_example(config.sizes) * problem.n
    check_problem = problem.check_problem()

    results: dict[str, dict[str, Any]] = {}
    runners: dict[str, _Runner] = {}
    reference = None
    names = [BASELINE] + [v for v in config.variants if v != BASELINE]  # the reference is built first
    for name in names:
        can_reset = _reset_peak_rss()
        record: dict[str, Any] = {"status": "ok", "models": SWEEP_MODELS if name.startswith("gd_jax_sweep") else 1}
        try:
            runner = _BUILDERS[name](problem)
            checker = _BUILDERS[name](check_problem) if runner.checked else None
        except _Skipped as e:
            results[name] = {"status": "skipped", "reason": str(e), "models": record["models"]}
            log(f"  {name}: skipped ({e})")
            continue
        record["compile_seconds"] = runner.compile_seconds
        record["note"] = runner.note
        if runner.compiled is not None:
            hlo = runner.compiled.as_text()
            record["kernels_per_step"] = step_kernels(hlo)
            if config.hlo_dir:
                atomic_write_bytes(os.path.join(config.hlo_dir, f"bs{batch_size}-{name}.hlo.txt"), hlo.encode())
        if checker is not None:
            trained = _to_numpy(checker.epoch(check_problem.orders[0]))
            if name == BASELINE:
                reference = trained
            error = _relative_error(trained, reference, params)
            record["check"] = {"steps": check_problem.steps, "error": error, "tolerance": TOLERANCE,
                               "passed": bool(error <= TOLERANCE)}
            if not record["check"]["passed"]:
                record["status"] = "wrong"
                log(f"  {name}: WRONG, differs from gd_jax by {error:.2e} of the parameters' movement")
        else:
            record["check"] = None
        for _ in range(config.warmup):
            jax.block_until_ready((runner.timed_epoch or runner.epoch)(orders[0]))
        record["peak_rss_bytes"] = _peak_rss_bytes()
        record["peak_rss_scope"] = "this variant" if can_reset else "the process so far"
        record["device_memory"] = _device_memory(device)
        runners[name] = runner
        results[name] = record
        log(f"  {name}: built" + (f", compiled in {runner.compile_seconds:.2f} s" if runner.compile_seconds else ""))

    timings = _time_round_robin({name: (lambda r, f=runner.timed_epoch or runner.epoch: f(orders[r]))
                                 for name, runner in runners.items()}, config.repeats)
    for name, timing in timings.items():
        record, runner = results[name], runners[name]
        if runner.steps_timed is not None:  # extrapolate to the whole epoch
            timing = Timing([t * problem.steps / runner.steps_timed for t in timing.seconds])
        record.update(timing.to_dict())
        models = record["models"]
        record["seconds_per_model"] = timing.median / models
        record["examples_per_second"] = models * problem.n / timing.median
        record["gflops"] = models * flops / timing.median / 1e9
        record["fraction_of_peak"] = record["gflops"] / peak_gflops if peak_gflops else None

    base = results.get(BASELINE, {})
    for record in results.values():  # how many times faster gd_jax is than the variant, per model
        ok = record["status"] == "ok" and base.get("status") == "ok"
        record["gd_jax_speedup"] = record["seconds_per_model"] / base["median"] if ok else None
        record["gd_jax_speedup_of_mins"] = record["min"] / record["models"] / base["min"] if ok else None
    return {"batch_size": batch_size, "steps_per_epoch": problem.steps, "rows": problem.n, "flops_per_epoch": flops,
            "check_steps": check_problem.steps, "load_average": list(os.getloadavg()),
            "variants": results}


# ---------------------------------------------------------------------------------------------
# Peak, permutation, per-example gradients, time to accuracy


def _measure_peak(size: int, repeats: int, device: jax.Device) -> dict[str, Any]:
    """FLOP/s of an ``n x n`` float32 matmul: the machine's attainable peak (best of the repeats)."""
    k1, k2 = jax.random.split(jax.random.key(0))
    a = jax.device_put(jax.random.normal(k1, (size, size), jnp.float32), device)
    b = jax.device_put(jax.random.normal(k2, (size, size), jnp.float32), device)
    matmul, compile_seconds = _compile(jnp.matmul, a, b)
    jax.block_until_ready(matmul(a, b))
    timing = _time_round_robin({"peak": lambda r: matmul(a, b)}, max(repeats, 5))["peak"]
    flops = 2 * size**3
    return {"size": size, "flops": flops, **timing.to_dict(), "compile_seconds": compile_seconds,
            "gflops": flops / min(timing.seconds) / 1e9, "gflops_median": flops / timing.median / 1e9}


def _measure_permutation(n: int, repeats: int, device: jax.Device) -> dict[str, Any]:
    """What a batch order costs: on the device (``jax.random.permutation``) and on the host plus transfer."""
    key = jax.random.key(0)
    on_device, compile_seconds = _compile(lambda k: jax.random.permutation(k, n), key)
    jax.block_until_ready(on_device(key))
    timings = _time_round_robin({
        "device_permutation": lambda r: on_device(jax.random.fold_in(key, r)),
        "host_shuffled_order_and_transfer": lambda r: jax.device_put(shuffled_order(jax.random.fold_in(key, r), n),
                                                                     device),
    }, max(repeats, 3))
    return {"rows": n, **{name: t.to_dict() for name, t in timings.items()},
            "device_compile_seconds": compile_seconds}


def _measure_per_example(config: BenchConfig, x: np.ndarray, y: np.ndarray, device: jax.Device) -> dict[str, Any]:
    """``vmap(grad)`` against one batch gradient and a Python loop of one-example gradients."""
    batch = min(config.per_example_batch, x.shape[0])
    cost = _jax_cost(config)
    params = jax.device_put(init_mlp(jax.random.key(config.seed), list(config.sizes)), device)
    xb = jax.device_put(x[:batch], device)
    yb = jax.device_put(np.eye(config.sizes[-1], dtype=np.float32)[y[:batch]], device)
    vmapped, vmap_compile = _compile(lambda p, a, b: per_example_grads(cost, p, a, b), params, xb, yb)
    whole, batch_compile = _compile(lambda p, a, b: batch_grad(cost, p, a, b), params, xb, yb)
    one, _ = _compile(jax.grad(cost), params, xb[:1], yb[:1])

    def loop(p, a, b):
        return [one(p, a[i:i + 1], b[i:i + 1]) for i in range(batch)]

    # The same numbers three ways: checked before anything is timed.
    per_ex, looped, mean = vmapped(params, xb, yb), loop(params, xb, yb), whole(params, xb, yb)
    error = max(float(jnp.max(jnp.abs(jnp.mean(g, axis=0) - m))) for g, m in
                zip(jax.tree.leaves(per_ex), jax.tree.leaves(mean)))
    loop_error = max(float(jnp.max(jnp.abs(g[i] - jax.tree.leaves(looped[i])[j])))
                     for j, g in enumerate(jax.tree.leaves(per_ex)) for i in range(batch))
    timings = _time_round_robin({"vmap_grad": lambda r: vmapped(params, xb, yb),
                                 "batch_grad": lambda r: whole(params, xb, yb),
                                 "python_loop": lambda r: loop(params, xb, yb)}, config.repeats)
    return {"batch": batch, **{name: t.to_dict() for name, t in timings.items()},
            "compile_seconds": {"vmap_grad": vmap_compile, "batch_grad": batch_compile},
            "vmap_over_batch": timings["vmap_grad"].median / timings["batch_grad"].median,
            "vmap_over_batch_of_mins": min(timings["vmap_grad"].seconds) / min(timings["batch_grad"].seconds),
            "loop_over_vmap": timings["python_loop"].median / timings["vmap_grad"].median,
            "check": {"mean_vs_batch_grad": error, "vmap_vs_loop": loop_error,
                      "passed": bool(error < 1e-5 and loop_error < 1e-5)}}


class _Reached(Exception):
    """Stops ``fit`` from its epoch callback once the target accuracy is reached."""


def _accuracy_np(ws, bs, x, y, cost: str) -> float:
    a = x
    for w, b in zip(ws[:-1], bs[:-1]):
        a = _sigmoid(a @ w + b)
    z = a @ ws[-1] + bs[-1]
    return float(np.mean(np.argmax(z, axis=1) == y))  # sigmoid and softmax keep the order of z


def _tta_record(curve: list[tuple[float, float]], target: float, compile_seconds: float | None) -> dict[str, Any]:
    reached = next((i for i, (_, acc) in enumerate(curve) if acc >= target), None)
    return {"status": "ok", "reached": reached is not None,
            "epochs": None if reached is None else reached + 1,
            "seconds": None if reached is None else curve[reached][0],
            "compile_seconds": compile_seconds,
            "accuracy": [acc for _, acc in curve], "wall_seconds": [t for t, _ in curve]}


def _measure_time_to_accuracy(config: BenchConfig, device: jax.Device, log: Callable[[str], None]) -> dict[str, Any]:
    """Wall seconds from start until the evaluation accuracy first reaches the target, per library."""
    train, val, _ = _load(config, validation=True)
    target = config.target_accuracy or (0.95 if config.dataset == "mnist" else 0.85)
    bs, eta, cost_name = config.tta_batch_size, config.learning_rate, config.cost
    init_key, order_key = jax.random.split(jax.random.key(config.seed))
    params = _to_numpy(init_mlp(init_key, list(config.sizes)))
    n, epochs = train.size, config.max_epochs
    x, y = np.asarray(train.x), np.asarray(train.y)
    vx, vy = np.asarray(val.x), np.asarray(val.y)
    out: dict[str, Any] = {"target": target, "dataset": config.dataset, "train_rows": n, "eval_rows": val.size,
                           "batch_size": bs, "max_epochs": epochs, "eval": "validation set, after every epoch"}

    # gd_jax: fit itself, stopped from its callback once the target is reached.
    curve: list[tuple[float, float]] = []
    compile_seconds: list[float] = []
    start = time.perf_counter()

    def on_epoch_end(end: EpochEnd) -> None:
        curve.append((time.perf_counter() - start, end.history.epochs[-1]["eval_accuracy"]))
        compile_seconds[:] = [end.history.compile_seconds]  # fit compiled ahead of its first epoch
        if curve[-1][1] >= target:
            raise _Reached

    with contextlib.suppress(_Reached), jax.default_device(device):
        fit(params, train, eval_data=val, epochs=epochs, batch_size=bs, optimizer=sgd(eta), cost=_jax_cost(config),
            key=order_key, on_epoch_end=on_epoch_end)
    out["gd_jax"] = _tta_record(curve, target, compile_seconds[0] if compile_seconds else None)
    log(f"  time to accuracy, gd_jax: {out['gd_jax']['seconds']} s")

    orders = [shuffled_order(jax.random.fold_in(order_key, e), n) for e in range(epochs)]
    # vectorized numpy
    targets = np.eye(config.sizes[-1], dtype=np.float32)[y]
    ws, bs_ = [p["w"].copy() for p in params], [p["b"].copy() for p in params]
    curve, start = [], time.perf_counter()
    for order in orders:
        for s in range(0, n, bs):
            rows = order[s: s + bs]
            _numpy_step(ws, bs_, x[rows], targets[rows], eta, cost_name)
        curve.append((time.perf_counter() - start, _accuracy_np(ws, bs_, vx, vy, cost_name)))
        if curve[-1][1] >= target:
            break
    out["vectorized_numpy"] = _tta_record(curve, target, None)
    log(f"  time to accuracy, vectorized_numpy: {out['vectorized_numpy']['seconds']} s")

    # torch, through the same builder as the epoch benchmark
    try:
        problem = _Problem(config, bs, device, x, y, params, orders)
        torch_runner = _build_torch(problem)
    except _Skipped as e:
        out["torch"] = {"status": "skipped", "reason": str(e)}
        return out
    import torch

    model_params = None
    curve, start = [], time.perf_counter()
    for e, order in enumerate(orders):
        if e:  # continue from the last epoch: the runner starts from problem.params
            problem.params[:] = model_params
        model_params = torch_runner.epoch(order)
        curve.append((time.perf_counter() - start, _accuracy_np([p["w"] for p in model_params],
                                                                [p["b"] for p in model_params], vx, vy, cost_name)))
        if curve[-1][1] >= target:
            break
    out["torch"] = _tta_record(curve, target, None)
    out["torch"]["threads"] = torch.get_num_threads()
    log(f"  time to accuracy, torch: {out['torch']['seconds']} s")
    return out


# ---------------------------------------------------------------------------------------------
# The run


def _load(config: BenchConfig, *, validation: bool = False) -> tuple[Dataset, ...]:
    return load_mnist(config.dataset, validation=validation, idx_dir=config.idx_dir, data_dir=config.data_dir)


def _epoch_data(config: BenchConfig) -> tuple[np.ndarray, np.ndarray]:
    """The training digits tiled (or cut) to ``rows`` rows."""
    train = _load(config)[0]
    x, y = np.asarray(train.x, dtype=np.float32), np.asarray(train.y, dtype=np.int32)
    if x.shape[1] != config.sizes[0]:
        raise ValueError(f"the data has {x.shape[1]} features but the network's input layer has {config.sizes[0]}; "
                         f"make the first size {x.shape[1]}")
    if int(y.max()) >= config.sizes[-1]:
        raise ValueError(f"the labels go up to {int(y.max())} but the output layer has {config.sizes[-1]} neurons; "
                         f"make the last size at least {int(y.max()) + 1}")
    reps = -(-config.rows // len(x))
    return np.ascontiguousarray(np.tile(x, (reps, 1))[: config.rows]), np.tile(y, reps)[: config.rows]


@contextlib.contextmanager
def _baseline_threads(n: int | None) -> Iterator[dict[str, Any]]:
    """Limits numpy's BLAS to ``n`` threads for the run (``threadpoolctl``); says what was controlled."""
    if n is None:
        yield {"requested": None, "numpy_blas": "library default", "torch": "library default"}
        return
    torch_threads = None
    with contextlib.suppress(ImportError):
        import torch

        torch_threads = torch.get_num_threads()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        limits, blas = contextlib.nullcontext(), "not controlled (pip install threadpoolctl)"
    else:
        limits, blas = threadpool_limits(limits=n, user_api="blas"), n
    try:
        with limits:
            yield {"requested": n, "numpy_blas": blas, "torch": n if torch_threads is not None else None}
    finally:
        if torch_threads is not None:  # the torch variant set its own count; give the old one back
            torch.set_num_threads(torch_threads)


def _device(name: str | None) -> jax.Device:
    if name is None:
        return jax.devices()[0]
    try:
        return jax.devices(name)[0]
    except RuntimeError:
        raise ValueError(f"--device {name}: JAX has no {name} backend here (it has {jax.default_backend()}); "
                         f"install the jax build for it, or choose --device {jax.default_backend()}") from None


def _targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each as a measured ratio (of the medians, and of the minimums), its goal and
    whether the median's ratio met it. On a loaded machine the minimums are the less disturbed figure."""
    rows = []

    def add(name: str, ratio: Callable[[str], float | None], goal: float, at_least: bool) -> None:
        value, of_mins = ratio("gd_jax_speedup"), ratio("gd_jax_speedup_of_mins")
        if value is not None:
            rows.append({"target": name, "value": value, "value_of_mins": of_mins, "goal": goal,
                         "met": bool(value >= goal if at_least else value <= goal)})

    for table in result["batch_sizes"]:
        bs, v = table["batch_size"], table["variants"]
        small = bs < 100  # the textbook's batch 10 has its own targets; larger batches share theirs

        def speedup(name: str, key: str, v: dict = v) -> float | None:
            return v[name].get(key) if name in v else None

        def inverse(name: str) -> Callable[[str], float | None]:
            return lambda key: 1 / s if (s := speedup(name, key)) else None

        add(f"bs {bs}: gd_jax speed-up over vectorized_numpy", lambda k: speedup("vectorized_numpy", k), 1.5, True)
        add(f"bs {bs}: gd_jax speed-up over torch", lambda k: speedup("torch", k), 7.0 if small else 2.0, True)
        if small:
            add(f"bs {bs}: gd_jax speed-up over textbook_numpy", lambda k: speedup("textbook_numpy", k), 25.0, True)
        add(f"bs {bs}: gd_jax time over matmul_floor", inverse("matmul_floor"), 1.5 if small else 1.3, False)
        add(f"bs {bs}: |optax / gd_jax - 1|", lambda k: abs(s - 1) if (s := speedup("optax", k)) else None, 0.03,
            False)
        if small:
            for name, goal in (("gd_jax_sweep16", 6.0), ("gd_jax_sweep16_own", 3.0)):
                add(f"bs {bs}: {name} throughput over 16 sequential gd_jax epochs", inverse(name), goal, True)
    pe = result.get("per_example_gradients")
    if pe:
        add(f"per-example gradients (batch {pe['batch']}): vmap(grad) time over batch grad",
            lambda k: pe["vmap_over_batch"] if k == "gd_jax_speedup" else pe["vmap_over_batch_of_mins"], 2.0, False)
    return rows


def run(config: BenchConfig, *, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Runs the benchmark; returns the JSON-ready result (see ``format_table``, ``plot_results``).

    Raises:
      ValueError: a configuration that cannot run (the message names the fix).
      FileNotFoundError: ``dataset`` files that are not there.
    """
    check_config(config)
    log = log or (lambda _: None)
    device = _device(config.device)
    started, cpu_started = time.time(), time.process_time()
    x, y = _epoch_data(config)
    result: dict[str, Any] = {
        "schema": SCHEMA_VERSION, "config": dataclasses.asdict(config), "variants": list(VARIANTS),
        "machine": describe_machine(device), "source": _git_commit(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "load_average_start": list(os.getloadavg()),
        "flops_per_example": mlp_flops_per_example(config.sizes),
    }
    with jax.default_device(device), _baseline_threads(config.baseline_threads) as threads:
        result["baseline_threads"] = threads
        log(f"peak: {config.peak_size}^3 matmul")
        result["peak"] = _measure_peak(config.peak_size, config.repeats, device)
        peak = result["peak"]["gflops"]
        result["permutation"] = _measure_permutation(config.rows, config.repeats, device)
        result["batch_sizes"] = []
        for batch_size in config.batch_sizes:
            log(f"batch size {batch_size}:")
            result["batch_sizes"].append(_bench_batch_size(config, batch_size, x, y, device, peak, log))
        if config.per_example_batch:
            log(f"per-example gradients, batch {config.per_example_batch}")
            result["per_example_gradients"] = _measure_per_example(config, x, y, device)
        if config.time_to_accuracy:
            log("time to accuracy:")
            result["time_to_accuracy"] = _measure_time_to_accuracy(config, device, log)
    result["targets"] = _targets(result)
    result["load_average_end"] = list(os.getloadavg())
    result["wall_seconds"] = time.time() - started
    result["process_cpu_seconds"] = time.process_time() - cpu_started  # what the run cost, whatever the load
    return result


# ---------------------------------------------------------------------------------------------
# Output: table, chart, comparison


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_table(result: dict[str, Any]) -> str:
    """The result as plain-text tables, one per batch size, then the other measurements."""
    m, c = result["machine"], result["config"]
    out = io.StringIO()
    p = result["peak"]
    print(f"gd-jax bench: {m['device_kind']} ({m['platform']}), {m['cpu_count']} CPUs, jax {m['versions']['jax']}; "
          f"sizes {c['sizes']}, {c['cost']} cost, eta {c['learning_rate']}, {c['rows']:,} rows ({c['dataset']}); "
          f"load average {result['load_average_start'][0]:.2f} at start", file=out)
    print(f"peak: {p['gflops']:.1f} GFLOP/s ({p['size']}^3 float32 matmul, best of {len(p['seconds'])})", file=out)
    for table in result["batch_sizes"]:
        print(f"\nbatch size {table['batch_size']}: {table['steps_per_epoch']} steps an epoch, median of "
              f"{c['repeats']} epochs [min-max]; gd_jax x: how many times faster gd_jax is, per model "
              f"(load {table['load_average'][0]:.2f})", file=out)
        print(f"  {'variant':<19s} {'s/epoch':>9s} {'[min-max]':>17s} {'per model':>9s} {'gd_jax x':>8s} "
              f"{'compile s':>9s} {'examples/s':>11s} {'GFLOP/s':>8s} {'of peak':>7s} {'RSS MB':>7s} "
              f"{'kernels':>7s}  check", file=out)
        for name, r in table["variants"].items():
            if r["status"] == "skipped":
                print(f"  {name:<19s} skipped: {r['reason']}", file=out)
                continue
            check = r.get("check")
            check_text = "n/a" if check is None else f"{'ok' if check['passed'] else 'WRONG'} {check['error']:.0e}"
            times = r["gd_jax_speedup"]
            rss = r["peak_rss_bytes"] / 2**20 if r.get("peak_rss_bytes") else None
            spread = f"[{r['min']:.4f}-{r['max']:.4f}]"
            kernels = str(r["kernels_per_step"]["count"]) if r.get("kernels_per_step") else "-"
            print(f"  {name:<19s} {r['median']:9.4f} {spread:>17s} {r['seconds_per_model']:9.4f}"
                  f" {_fmt(times, '8.2f'):>8s} {_fmt(r['compile_seconds'], '9.2f'):>9s}"
                  f" {r['examples_per_second']:11.3g} {r['gflops']:8.2f} {_fmt(r['fraction_of_peak'], '7.1%'):>7s}"
                  f" {_fmt(rss, '7.0f'):>7s} {kernels:>7s}  {check_text}{'  ' + r['note'] if r.get('note') else ''}",
                  file=out)
    perm = result["permutation"]
    print(f"\nbatch order of {perm['rows']:,} rows: jax.random.permutation on the device "
          f"{perm['device_permutation']['median'] * 1e3:.2f} ms, gd.shuffled_order + transfer "
          f"{perm['host_shuffled_order_and_transfer']['median'] * 1e3:.2f} ms", file=out)
    pe = result.get("per_example_gradients")
    if pe:
        print(f"per-example gradients, batch {pe['batch']}: vmap(grad) {pe['vmap_grad']['median'] * 1e3:.3f} ms, "
              f"batch grad {pe['batch_grad']['median'] * 1e3:.3f} ms ({pe['vmap_over_batch']:.2f}x), Python loop "
              f"{pe['python_loop']['median'] * 1e3:.2f} ms ({pe['loop_over_vmap']:.1f}x vmap); "
              f"check {'ok' if pe['check']['passed'] else 'WRONG'}", file=out)
    tta = result.get("time_to_accuracy")
    if tta:
        print(f"time to {tta['target']:.0%} accuracy ({tta['dataset']}, batch {tta['batch_size']}, "
              f"at most {tta['max_epochs']} epochs):", file=out)
        for name in ("gd_jax", "torch", "vectorized_numpy"):
            r = tta.get(name)
            if r is None:
                continue
            if r["status"] == "skipped":
                print(f"  {name:<17s} skipped: {r['reason']}", file=out)
            elif r["reached"]:
                extra = f" (compile {r['compile_seconds']:.2f} s of it)" if r.get("compile_seconds") else ""
                print(f"  {name:<17s} {r['seconds']:.2f} s, {r['epochs']} epochs{extra}", file=out)
            else:
                print(f"  {name:<17s} not reached in {len(r['accuracy'])} epochs (best "
                      f"{max(r['accuracy'], default=0):.4f})", file=out)
    if result.get("targets"):
        print("targets:", file=out)
        for t in result["targets"]:
            print(f"  {'met   ' if t['met'] else 'MISSED'} {t['target']}: {t['value']:.3g} "
                  f"(of the minimums {_fmt(t['value_of_mins'], '.3g')}; goal {t['goal']:g})", file=out)
    print(f"load average {result['load_average_end'][0]:.2f} at the end; {result['wall_seconds']:.0f} s in all, "
          f"{result['process_cpu_seconds']:.0f} s of this process's CPU time", file=out)
    return out.getvalue()


def plot_results(result: dict[str, Any], path: str | os.PathLike) -> None:
    """A bar chart of seconds per epoch (per model for sweeps), one group per batch size, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tables = result["batch_sizes"]
    names = [v for v in VARIANTS if any(t["variants"].get(v, {}).get("status") == "ok" for t in tables)]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(tables) * max(len(names), 1) / 4), 4.5), constrained_layout=True)
    width = 0.8 / max(len(names), 1)
    for i, name in enumerate(names):
        xs, ys, lo, hi = [], [], [], []
        for j, t in enumerate(tables):
            r = t["variants"].get(name)
            if r and r["status"] == "ok":
                per = r["models"]
                xs.append(j + (i - (len(names) - 1) / 2) * width)
                ys.append(r["median"] / per)
                lo.append((r["median"] - r["min"]) / per)
                hi.append((r["max"] - r["median"]) / per)
        ax.bar(xs, ys, width, yerr=[lo, hi], label=name, color=f"C{i % 10}")
    ax.set_xticks(range(len(tables)), [f"batch {t['batch_size']}" for t in tables])
    ax.set_yscale("log")
    ax.set_ylabel("seconds per epoch (per model)")
    m = result["machine"]
    ax.set_title(f"{m['device_kind']}, {m['cpu_count']} CPUs: {result['config']['rows']:,} rows, "
                 f"{result['config']['sizes']}")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(axis="y", alpha=0.3)
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, png.getvalue())


def compare_results(old: dict[str, Any], new: dict[str, Any]) -> list[dict[str, Any]]:
    """Every (batch size, variant) timed in both runs, with its change and whether it slowed beyond noise.

    A variant *slowed* when its median grew by more than the two runs' noise together,
    ``(new - old) / old > spread_old + spread_new`` (``Timing.spread``: half the range over
    the median), and by at least 5% (shared machines drift by that much between runs).
    """
    rows = []
    old_tables = {t["batch_size"]: t for t in old["batch_sizes"]}
    for table in new["batch_sizes"]:
        before = old_tables.get(table["batch_size"])
        if before is None:
            continue
        for name, r in table["variants"].items():
            o = before["variants"].get(name)
            if not o or o["status"] != "ok" or r["status"] != "ok":
                continue
            change = (r["median"] - o["median"]) / o["median"]
            noise = o["spread"] + r["spread"]
            rows.append({"batch_size": table["batch_size"], "variant": name, "old": o["median"], "new": r["median"],
                         "change": change, "noise": noise, "slowed": bool(change > max(noise, 0.05))})
    return rows


# ---------------------------------------------------------------------------------------------
# Command line


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(s) for s in text.replace(" ", "").split(",") if s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"wants comma-separated integers like 10,128,1000, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError(f"wants comma-separated integers like 10,128,1000, got {text!r}")
    return values


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds ``gd-jax bench``'s options to ``parser`` (the ``bench`` subcommand's parser)."""
    d = BenchConfig()
    parser.add_argument("--quick", action="store_true",
                        help=f"the reduced run (under a minute): {', '.join(f'{k}={v}' for k, v in QUICK.items())}")
    parser.add_argument("--device", choices=DEVICES, help="default: JAX's default backend")
    parser.add_argument("--sizes", type=_int_list, help="layer sizes, default 784,30,10")
    parser.add_argument("--batch-sizes", type=_int_list, help="default 10,128,1000 (--quick 10,128)")
    parser.add_argument("--cost", choices=list(COSTS), default=d.cost)
    parser.add_argument("--learning-rate", "--eta", type=float, default=d.learning_rate, dest="learning_rate")
    parser.add_argument("--rows", type=int, help="training rows per epoch, the data tiled (default 60000)")
    parser.add_argument("--repeats", type=int, help="timed epochs per variant (default 5, --quick 3)")
    parser.add_argument("--warmup", type=int, default=d.warmup, help="untimed epochs per variant (default 1)")
    parser.add_argument("--variants", type=lambda s: tuple(v for v in s.split(",") if v),
                        help=f"comma-separated subset of {','.join(VARIANTS)}")
    parser.add_argument("--dataset", choices=("sample", "mnist", "idx"), default=d.dataset)
    parser.add_argument("--data-dir", help="tensorflow-datasets folder for --dataset mnist")
    parser.add_argument("--idx-dir", help="IDX folder for --dataset idx (or genuine MNIST files for mnist)")
    parser.add_argument("--target-accuracy", type=float,
                        help="time-to-accuracy target (default 0.95 on mnist, 0.85 on the sample)")
    parser.add_argument("--max-epochs", type=int, help="time to accuracy gives up after this many (default 30)")
    parser.add_argument("--no-time-to-accuracy", action="store_true", help="skip time to accuracy")
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--baseline-threads", type=int, default=d.baseline_threads,
                        help="threads of numpy's BLAS and PyTorch in their variants (default 1; 0: their defaults)")
    parser.add_argument("--json", metavar="PATH", help="write the full result as JSON")
    parser.add_argument("--hlo-dir", metavar="DIR", help="write each JAX variant's optimised HLO into DIR")
    parser.add_argument("--chart", metavar="PATH", help="bar chart PNG (default: the --json path with .png)")


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    """The ``BenchConfig`` that parsed ``gd-jax bench`` options describe (``--quick`` first, options over it)."""
    base = dataclasses.replace(BenchConfig(), **QUICK, quick=True) if args.quick else BenchConfig()
    given = {"sizes": args.sizes, "batch_sizes": args.batch_sizes, "rows": args.rows, "repeats": args.repeats,
             "variants": args.variants, "max_epochs": args.max_epochs, "target_accuracy": args.target_accuracy,
             "data_dir": args.data_dir, "idx_dir": args.idx_dir, "device": args.device, "hlo_dir": args.hlo_dir}
    given = {k: v for k, v in given.items() if v is not None}
    return dataclasses.replace(base, cost=args.cost, learning_rate=args.learning_rate, warmup=args.warmup,
                               dataset=args.dataset, seed=args.seed, time_to_accuracy=not args.no_time_to_accuracy,
                               baseline_threads=args.baseline_threads or None,
                               **given)


def _check_writable(path: str | None, what: str) -> None:
    if path is None:
        return
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{what} folder {folder!r} does not exist; create it or choose another path")
    if not os.access(folder, os.W_OK):
        raise ValueError(f"{what} folder {folder!r} is not writable; choose another path")


def run_bench(args: argparse.Namespace, command_line: str | None = None) -> int:
    """``gd-jax bench``: runs the benchmark, prints the table, writes ``--json`` and the chart; returns 0.

    Raises:
      BadInput: (a ``ValueError``) bad options, a missing backend, missing data or an
        unwritable output, all found before anything is measured; the CLI prints it as one
        line and exits 2. Errors while measuring are bugs and keep their tracebacks.
    """
    with bad_input():
        config = config_from_args(args)
        check_config(config)
        chart = args.chart or (os.path.splitext(args.json)[0] + ".png" if args.json else None)
        _check_writable(args.json, "--json")
        _check_writable(chart, "--chart")
        if args.hlo_dir and not os.path.isdir(args.hlo_dir):
            raise FileNotFoundError(f"--hlo-dir {args.hlo_dir!r} is not a folder; create it first")
        _device(config.device)
        _epoch_data(config)  # the data loads and fits the network (loaded again, cached, by run)
        if config.time_to_accuracy:
            _load(config, validation=True)
    result = run(config, log=lambda line: print(line, file=sys.stderr, flush=True))
    result["command"] = command_line or " ".join(sys.argv)
    print(format_table(result), end="")
    if args.json:
        atomic_write_bytes(args.json, (json.dumps(result, indent=1) + "\n").encode())
        print(f"wrote {args.json}")
    if chart:
        plot_results(result, chart)
        print(f"wrote {chart}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m gd_jax.cli.bench [options]``: the same command as ``gd-jax bench``; returns the exit status.

    Bad options print one line on stderr and return 2, before anything is measured or written.
    """
    parser = argparse.ArgumentParser(prog="gd-jax bench", description=__doc__.splitlines()[0])
    add_bench_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run_bench(args, "python -m gd_jax.cli.bench " + " ".join(sys.argv[1:] if argv is None else argv))
    except BadInput as e:
        print(f"gd-jax bench: error: {e}", file=sys.stderr)
        return 2

