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
``vectorized_numpy`` float32 numpy, the mini-batch as one matrix, in its own process with its own
                     BLAS kernel and the faster of 1 thread and all cores (``numpy_worker``)
``textbook_numpy``   ``network.py``: one float64 backprop per example, extrapolated from a
                     fixed number of mini-batches
``torch``            PyTorch eager: ``nn.Linear`` + sigmoid + ``torch.optim.SGD``, the faster of 1
                     thread and all cores (skipped
                     when torch is not installed: ``pip install -e ".[bench]"``)
``matmul_floor``     the epoch's matrix products alone (rows gathered, no activation, no
                     update) in a compiled scan: what the step cannot go below
``peak``             a large square matmul: the machine's FLOP/s
==================== ======================================================================

For each: seconds per epoch (median and range of the timed epochs, after warm-up; epochs
of all variants are timed round-robin so that a shared machine's drift hits them alike),
the load average, compile seconds, examples/s, achieved GFLOP/s and its fraction of the measured peak, the
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
the transfer), and the whole command: wall seconds of ``gd-jax train`` with its defaults, start
to exit, with a warm compilation cache of its own.

A run on a busy machine carries a warning in its table, its markdown and its JSON
(``load_warning``): such figures are not quoted. Busy means other processes kept more than half
the cores busy on average during the run (``other_processes_cores``: the machine's busy CPU
time from ``/proc/stat`` less this run's own), or the 1-minute load average was above half of
them before it started; the load averages read during the run are recorded but do not decide,
since they count the run's own threads. Where ``/proc/stat`` is missing, any load average
above half the cores decides.
XLA's CPU configuration is recorded (``machine.xla``); ``--xla auto`` lets gd_jax choose it for
the workload (``gd_jax/_src/xla_config.py``) before the backend starts.

The package's parts: ``config`` (what a run measures), ``variants`` (the baselines, each in its
best configuration), ``numpy_worker`` (numpy in its own process), ``timing`` (interleaved
timing, memory, load, the machine), ``measures`` (one batch size, peak, per-example
gradients), ``time_to_accuracy``, ``train_command`` (the whole command), ``report`` (targets,
table, chart, markdown, comparison).

From Python::

    import gd_jax.cli.bench as bench
    result = bench.run(bench.BenchConfig(batch_sizes=(10, 128)))
    print(bench.format_table(result))
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax

from gd_jax._src import xla_config
from gd_jax._src.costs import COSTS
from gd_jax._src.serialization import atomic_write_bytes
from gd_jax.cli.bench import measures
from gd_jax.cli.bench.config import (
    DEVICES,
    QUICK,
    SCHEMA_VERSION,
    TOLERANCE,
    VARIANTS,
    BenchConfig,
    check_config,
    mlp_flops_per_example,
)
from gd_jax.cli.bench.numpy_worker import NumpyWorker
from gd_jax.cli.bench.report import compare_results, format_markdown, format_table, plot_results, targets
from gd_jax.cli.bench.time_to_accuracy import measure_time_to_accuracy
from gd_jax.cli.bench.timing import CpuSnapshot, Timing, describe_machine, git_commit, load_note, other_cores
from gd_jax.cli.bench.train_command import measure_train_command
from gd_jax.cli.bench.variants import step_kernels
from gd_jax.cli.errors import BadInput, bad_input
from gd_jax.cli.flags import compile_cache_folder, use_compile_cache

__all__ = [
    "SCHEMA_VERSION",
    "TOLERANCE",
    "VARIANTS",
    "BenchConfig",
    "Timing",
    "add_bench_arguments",
    "compare_results",
    "config_from_args",
    "format_markdown",
    "format_table",
    "main",
    "mlp_flops_per_example",
    "plot_results",
    "run",
    "run_bench",
    "step_kernels",
]


def _device(name: str | None) -> jax.Device:
    if name is None:
        return jax.devices()[0]
    try:
        return jax.devices(name)[0]
    except RuntimeError:
        raise ValueError(f"--device {name}: JAX has no {name} backend here (it has {jax.default_backend()}); "
                         f"install the jax build for it, or choose --device {jax.default_backend()}") from None


def _measure_all(config: BenchConfig, result: dict[str, Any], x, y, device: jax.Device, worker: NumpyWorker,
                 log: Callable[[str], None]) -> None:
    log(f"peak: {config.peak_size}^3 matmul")
    result["peak"] = measures.measure_peak(config.peak_size, config.repeats, device)
    result["permutation"] = measures.measure_permutation(config.rows, config.repeats, device)
    result["batch_sizes"] = []
    for batch_size in config.batch_sizes:
        log(f"batch size {batch_size}:")
        result["batch_sizes"].append(measures.bench_batch_size(config, batch_size, x, y, device,
                                                               result["peak"]["gflops"], log, worker))
    if config.per_example_batch:
        log(f"per-example gradients, batch {config.per_example_batch}")
        result["per_example_gradients"] = measures.measure_per_example(config, x, y, device)
    if config.time_to_accuracy:
        log("time to accuracy:")
        result["time_to_accuracy"] = measure_time_to_accuracy(config, device, measures.load, worker, log)
    if config.train_command_runs:
        log(f"the whole command: {config.train_command_runs} warm runs of gd-jax train")
        result["train_command"] = measure_train_command(config.train_command_runs, also=("--no-figures",))


def run(config: BenchConfig, *, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Runs the benchmark; returns the JSON-ready result (see ``format_table``, ``plot_results``).

    Raises:
      ValueError: a configuration that cannot run (the message names the fix).
      FileNotFoundError: ``dataset`` files that are not there.
    """
    check_config(config)
    log = log or (lambda _: None)
    device = _device(config.device)
    started, cpu_started, cpu_snapshot = time.time(), time.process_time(), CpuSnapshot.now()
    x, y = measures.epoch_data(config)
    result: dict[str, Any] = {
        "schema": SCHEMA_VERSION, "config": dataclasses.asdict(config), "variants": list(VARIANTS),
        "machine": describe_machine(device), "source": git_commit(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "load_average_start": list(os.getloadavg()),
        "flops_per_example": mlp_flops_per_example(config.sizes),
    }
    with jax.default_device(device), NumpyWorker() as worker:
        _measure_all(config, result, x, y, device, worker, log)
    result["targets"] = targets(result)
    result["load_average_end"] = list(os.getloadavg())
    loads = [result["load_average_start"][0], result["load_average_end"][0]]
    loads += [v for t in result["batch_sizes"] for v in (t["load_average"][0], t["load_average_before"][0])]
    result["load_averages"] = loads  # every 1-minute load average the run read
    result["other_processes_cores"] = other_cores(cpu_snapshot)  # the numpy worker has exited: it is ours
    result["load_warning"] = load_note(loads, os.cpu_count(), others=result["other_processes_cores"])
    result["wall_seconds"] = time.time() - started
    result["process_cpu_seconds"] = time.process_time() - cpu_started  # what the run cost, whatever the load
    return result


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
    parser.add_argument("--train-command-runs", type=int,
                        help="warm timed runs of the whole gd-jax train command (default 3, --quick 1; 0 skips)")
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--baseline-threads", type=int, default=0,
                        help="threads of numpy's BLAS and PyTorch in their variants (default 0: the faster of 1 and "
                             "all cores, timed)")
    parser.add_argument("--xla", choices=("environment", "auto"), default="environment",
                        help="XLA's CPU settings: as the environment sets them (default), or gd_jax's choice for the "
                             "smallest batch size (set before the backend starts; recorded either way)")
    parser.add_argument("--json", metavar="PATH", help="write the full result as JSON")
    parser.add_argument("--hlo-dir", metavar="DIR", help="write each JAX variant's optimised HLO into DIR")
    parser.add_argument("--chart", metavar="PATH", help="bar chart PNG (default: the --json path with .png)")
    parser.add_argument("--report-md", metavar="JSON", help="measure nothing: print the markdown of a saved result")


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    """The ``BenchConfig`` that parsed ``gd-jax bench`` options describe (``--quick`` first, options over it)."""
    base = dataclasses.replace(BenchConfig(), **QUICK, quick=True) if args.quick else BenchConfig()
    given: dict[str, Any] = {"sizes": args.sizes, "batch_sizes": args.batch_sizes, "rows": args.rows,
                             "repeats": args.repeats, "variants": args.variants, "max_epochs": args.max_epochs,
                             "target_accuracy": args.target_accuracy, "data_dir": args.data_dir,
                             "idx_dir": args.idx_dir, "device": args.device, "hlo_dir": args.hlo_dir,
                             "train_command_runs": args.train_command_runs}
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


def _checked_config(args: argparse.Namespace) -> tuple[BenchConfig, str | None]:
    """The configuration and chart path, every input checked before anything is measured."""
    config = config_from_args(args)
    check_config(config)
    chart = args.chart or (os.path.splitext(args.json)[0] + ".png" if args.json else None)
    _check_writable(args.json, "--json")
    _check_writable(chart, "--chart")
    if args.hlo_dir and not os.path.isdir(args.hlo_dir):
        raise FileNotFoundError(f"--hlo-dir {args.hlo_dir!r} is not a folder; create it first")
    return config, chart


def _report_md(path: str) -> int:
    with bad_input():
        try:
            with open(path) as f:
                result = json.load(f)
        except FileNotFoundError:
            raise FileNotFoundError(f"--report-md {path!r}: no such file; give a JSON written by --json") from None
    print(format_markdown(result), end="")
    return 0


def run_bench(args: argparse.Namespace, command_line: str | None = None) -> int:
    """``gd-jax bench``: runs the benchmark, prints the table, writes ``--json`` and the chart; returns 0.

    Raises:
      BadInput: (a ``ValueError``) bad options, a missing backend, missing data or an
        unwritable output, all found before anything is measured; the CLI prints it as one
        line and exits 2. Errors while measuring are bugs and keep their tracebacks.
    """
    if getattr(args, "report_md", None):
        return _report_md(args.report_md)
    with bad_input():
        config, chart = _checked_config(args)
        if getattr(args, "xla", "environment") == "auto":
            xla_config.configure_cpu(min(config.batch_sizes))  # a no-op, recorded, once the backend has started
        _device(config.device)
        measures.epoch_data(config)  # the data loads and fits the network (loaded again, cached, by run)
        if config.time_to_accuracy:
            measures.load(config, validation=True)
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
    parser = argparse.ArgumentParser(prog="gd-jax bench", description=(__doc__ or "").splitlines()[0])
    add_bench_arguments(parser)
    args = parser.parse_args(argv)
    use_compile_cache(compile_cache_folder())  # as ``gd-jax bench``: time to accuracy with the persistent cache
    try:
        return run_bench(args, "python -m gd_jax.cli.bench " + " ".join(sys.argv[1:] if argv is None else argv))
    except BadInput as e:
        print(f"gd-jax bench: error: {e}", file=sys.stderr)
        return 2
