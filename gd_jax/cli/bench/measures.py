"""What ``gd-jax bench`` measures: the epoch of every variant at one batch size, the peak, the batch
order, per-example gradients and time to accuracy."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gd_jax._src.costs import COSTS
from gd_jax._src.data import Dataset, load_mnist
from gd_jax._src.epoch import shuffled_order
from gd_jax._src.gradients import batch_grad, dense_per_example_grads, vmap_per_example_grads
from gd_jax._src.network import init_mlp
from gd_jax._src.serialization import atomic_write_bytes
from gd_jax.cli.bench import variants
from gd_jax.cli.bench.config import BASELINE, SWEEP_MODELS, TOLERANCE, BenchConfig, mlp_flops_per_example
from gd_jax.cli.bench.numpy_worker import NumpyWorker
from gd_jax.cli.bench.timing import Timing, device_memory, peak_rss_bytes, reset_peak_rss, time_round_robin
from gd_jax.cli.bench.variants import (
    Problem,
    Runner,
    Skipped,
    compile_timed,
    program_fingerprint,
    relative_error,
    step_kernels,
    to_numpy,
)

__all__ = ["bench_batch_size", "epoch_data", "load", "measure_peak", "measure_per_example", "measure_permutation"]

Log = Callable[[str], None]


def load(config: BenchConfig, *, validation: bool = False) -> tuple[Dataset, ...]:
    return load_mnist(config.dataset, validation=validation, idx_dir=config.idx_dir, data_dir=config.data_dir)


def epoch_data(config: BenchConfig) -> tuple[np.ndarray, np.ndarray]:
    """The training digits tiled (or cut) to ``rows`` rows."""
    train = load(config)[0]
    x, y = np.asarray(train.x, dtype=np.float32), np.asarray(train.y, dtype=np.int32)
    if x.shape[1] != config.sizes[0]:
        raise ValueError(f"the data has {x.shape[1]} features but the network's input layer has {config.sizes[0]}; "
                         f"make the first size {x.shape[1]}")
    if int(y.max()) >= config.sizes[-1]:
        raise ValueError(f"the labels go up to {int(y.max())} but the output layer has {config.sizes[-1]} neurons; "
                         f"make the last size at least {int(y.max()) + 1}")
    reps = -(-config.rows // len(x))
    return np.ascontiguousarray(np.tile(x, (reps, 1))[: config.rows]), np.tile(y, reps)[: config.rows]


# ---------------------------------------------------------------------------------------------
# One batch size


def _build_variant(name: str, problem: Problem, check: Problem, reference: list | None, log: Log
                   ) -> tuple[dict[str, Any], Runner | None, list | None]:
    """Builds, checks and warms one variant: its record, its runner (None: skipped), its checked parameters."""
    config = problem.config
    can_reset = reset_peak_rss()
    record: dict[str, Any] = {"status": "ok", "models": SWEEP_MODELS if "_sweep" in name else 1}
    try:
        runner = variants.BUILDERS[name](problem)
        checker = variants.BUILDERS[name](check) if runner.checked else None
    except Skipped as e:
        log(f"  {name}: skipped ({e})")
        return {"status": "skipped", "reason": str(e), "models": record["models"]}, None, None
    record.update(models=runner.models, compile_seconds=runner.compile_seconds, note=runner.note, check=None)
    if runner.config is not None:
        record["config"] = runner.config
    if runner.compiled is not None:
        hlo = runner.compiled.as_text()
        record["kernels_per_step"] = step_kernels(hlo)
        record["program"] = program_fingerprint(hlo)
        if config.hlo_dir:
            path = os.path.join(config.hlo_dir, f"bs{problem.batch_size}-{name}.hlo.txt")
            atomic_write_bytes(path, hlo.encode())
    trained = None
    if checker is not None:
        trained = to_numpy(checker.epoch(check.orders[0]))
        error = relative_error(trained, trained if reference is None else reference, problem.params)
        record["check"] = {"steps": check.steps, "error": error, "tolerance": TOLERANCE,
                           "passed": bool(error <= TOLERANCE)}
        if not record["check"]["passed"]:
            record["status"] = "wrong"
            log(f"  {name}: WRONG, differs from gd_jax by {error:.2e} of the parameters' movement")
    for _ in range(config.warmup):
        jax.block_until_ready((runner.timed_epoch or runner.epoch)(problem.orders[0]))
    record.update(peak_rss_bytes=peak_rss_bytes(), peak_rss_scope="this variant" if can_reset else "the process so far",
                  device_memory=device_memory(problem.device))
    log(f"  {name}: built" + (f", compiled in {runner.compile_seconds:.2f} s" if runner.compile_seconds else ""))
    return record, runner, trained


def _summarise(record: dict[str, Any], timing: Timing, runner: Runner, problem: Problem, flops: int,
               peak_gflops: float | None) -> None:
    if runner.steps_timed is not None:  # extrapolate to the whole epoch
        timing = Timing([t * problem.steps / runner.steps_timed for t in timing.seconds])
    record.update(timing.to_dict())
    models = record["models"]
    record["seconds_per_model"] = timing.median / models
    record["examples_per_second"] = models * problem.n / timing.median
    record["gflops"] = models * flops / timing.median / 1e9
    record["fraction_of_peak"] = record["gflops"] / peak_gflops if peak_gflops else None


def bench_batch_size(config: BenchConfig, batch_size: int, x: np.ndarray, y: np.ndarray, device: jax.Device,
                     peak_gflops: float | None, log: Log, numpy_worker: NumpyWorker | None = None) -> dict[str, Any]:
    """Every variant's epoch at one batch size: built, checked against gd_jax, warmed, then timed round-robin."""
    init_key, order_key = jax.random.split(jax.random.key(config.seed))
    params = to_numpy(init_mlp(init_key, list(config.sizes)))
    orders = [shuffled_order(jax.random.fold_in(order_key, r), x.shape[0]) for r in range(config.repeats)]
    problem = Problem(config, batch_size, device, x, y, params, orders, numpy_worker=numpy_worker)
    flops = mlp_flops_per_example(config.sizes) * problem.n
    check = problem.check_problem()
    results: dict[str, dict[str, Any]] = {}
    runners: dict[str, Runner] = {}
    reference = None
    for name in [BASELINE] + [v for v in config.variants if v != BASELINE]:  # the reference is built first
        results[name], runner, trained = _build_variant(name, problem, check, reference, log)
        if runner is not None:
            runners[name] = runner
        if name == BASELINE:
            reference = trained
    load_before = list(os.getloadavg())
    def timed(runner: Runner) -> Callable[[int], Any]:
        epoch = runner.timed_epoch or runner.epoch
        return lambda r: epoch(orders[r])

    timings = time_round_robin({name: timed(runner) for name, runner in runners.items()}, config.repeats)
    for name, timing in timings.items():
        _summarise(results[name], timing, runners[name], problem, flops, peak_gflops)
    base = results.get(BASELINE, {})
    for name, record in results.items():  # the same compiled program as gd_jax's: their times differ by noise alone
        if name != BASELINE and "program" in record:
            record["same_program_as_gd_jax"] = record["program"] == base.get("program")
    for record in results.values():  # how many times faster gd_jax is than the variant, per model
        ok = record["status"] == "ok" and base.get("status") == "ok"
        record["gd_jax_speedup"] = record["seconds_per_model"] / base["median"] if ok else None
        record["gd_jax_speedup_of_mins"] = record["min"] / record["models"] / base["min"] if ok else None
    return {"batch_size": batch_size, "steps_per_epoch": problem.steps, "rows": problem.n, "flops_per_epoch": flops,
            "check_steps": check.steps, "load_average": list(os.getloadavg()), "load_average_before": load_before,
            "variants": results}


# ---------------------------------------------------------------------------------------------
# Peak, permutation, per-example gradients


def measure_peak(size: int, repeats: int, device: jax.Device) -> dict[str, Any]:
    """FLOP/s of an ``n x n`` float32 matmul: the machine's attainable peak (best of the repeats)."""
    k1, k2 = jax.random.split(jax.random.key(0))
    a = jax.device_put(jax.random.normal(k1, (size, size), jnp.float32), device)
    b = jax.device_put(jax.random.normal(k2, (size, size), jnp.float32), device)
    matmul, compile_seconds = compile_timed(jnp.matmul, a, b)
    jax.block_until_ready(matmul(a, b))
    timing = time_round_robin({"peak": lambda r: matmul(a, b)}, max(repeats, 5))["peak"]
    flops = 2 * size**3
    return {"size": size, "flops": flops, **timing.to_dict(), "compile_seconds": compile_seconds,
            "gflops": flops / min(timing.seconds) / 1e9, "gflops_median": flops / timing.median / 1e9}


def measure_permutation(n: int, repeats: int, device: jax.Device) -> dict[str, Any]:
    """What a batch order costs: on the device (``jax.random.permutation``) and on the host plus transfer."""
    key = jax.random.key(0)
    on_device, compile_seconds = compile_timed(lambda k: jax.random.permutation(k, n), key)
    jax.block_until_ready(on_device(key))
    timings = time_round_robin({
        "device_permutation": lambda r: on_device(jax.random.fold_in(key, r)),
        "host_shuffled_order_and_transfer": lambda r: jax.device_put(shuffled_order(jax.random.fold_in(key, r), n),
                                                                     device),
    }, max(repeats, 3))
    return {"rows": n, **{name: t.to_dict() for name, t in timings.items()},
            "device_compile_seconds": compile_seconds}


def _max_difference(a, b) -> float:
    return max(float(jnp.max(jnp.abs(u - v))) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def measure_per_example(config: BenchConfig, x: np.ndarray, y: np.ndarray, device: jax.Device) -> dict[str, Any]:
    """``vmap(grad)`` and the closed form for dense layers against one batch gradient and a Python loop."""
    batch = min(config.per_example_batch, x.shape[0])
    cost = COSTS[config.cost]
    params = jax.device_put(init_mlp(jax.random.key(config.seed), list(config.sizes)), device)
    xb = jax.device_put(x[:batch], device)
    yb = jax.device_put(np.eye(config.sizes[-1], dtype=np.float32)[y[:batch]], device)
    vmapped, vmap_compile = compile_timed(lambda p, a, b: vmap_per_example_grads(cost, p, a, b), params, xb, yb)
    closed, closed_compile = compile_timed(lambda p, a, b: dense_per_example_grads(cost, p, a, b), params, xb, yb)
    whole, batch_compile = compile_timed(lambda p, a, b: batch_grad(cost, p, a, b), params, xb, yb)
    one, _ = compile_timed(jax.grad(cost), params, xb[:1], yb[:1])

    def loop(p, a, b):
        return [one(p, a[i:i + 1], b[i:i + 1]) for i in range(batch)]

    # The same numbers four ways: checked before anything is timed.
    per_ex, looped, mean = vmapped(params, xb, yb), loop(params, xb, yb), whole(params, xb, yb)
    error = _max_difference(jax.tree.map(lambda g: jnp.mean(g, axis=0), per_ex), mean)
    loop_error = max(_max_difference(jax.tree.map(lambda g, i=i: g[i], per_ex), looped[i]) for i in range(batch))
    closed_error = _max_difference(closed(params, xb, yb), per_ex)
    timings = time_round_robin({"vmap_grad": lambda r: vmapped(params, xb, yb),
                                "closed_form": lambda r: closed(params, xb, yb),
                                "batch_grad": lambda r: whole(params, xb, yb),
                                "python_loop": lambda r: loop(params, xb, yb)}, max(config.repeats, 5))
    med = {k: t.median for k, t in timings.items()}
    return {"batch": batch, **{name: t.to_dict() for name, t in timings.items()},
            "compile_seconds": {"vmap_grad": vmap_compile, "closed_form": closed_compile, "batch_grad": batch_compile},
            "vmap_over_batch": med["vmap_grad"] / med["batch_grad"],
            "vmap_over_batch_of_mins": min(timings["vmap_grad"].seconds) / min(timings["batch_grad"].seconds),
            "closed_over_batch": med["closed_form"] / med["batch_grad"],
            "closed_over_batch_of_mins": min(timings["closed_form"].seconds) / min(timings["batch_grad"].seconds),
            "loop_over_vmap": med["python_loop"] / med["vmap_grad"],
            "check": {"mean_vs_batch_grad": error, "vmap_vs_loop": loop_error, "closed_vs_vmap": closed_error,
                      "passed": bool(error < 1e-5 and loop_error < 1e-5 and closed_error < 1e-5)}}
