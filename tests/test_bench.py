"""``gd-jax bench``: FLOP counts against XLA's, every variant against gd_jax, the JSON's structure, comparisons.

No test here compares a time with a threshold: times are only checked to be positive and
consistent with each other (a median between its minimum and maximum).
"""

import argparse
import dataclasses
import importlib.util
import json
import math
import os
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gd_jax as gd
from gd_jax import cli
from gd_jax.cli import bench
from gd_jax.cli.bench import numpy_worker, report, timing, train_command, variants  # noqa: F401  (bench.<module> below)
from gd_jax.cli.errors import BadInput

HAS_TORCH = importlib.util.find_spec("torch") is not None

# A configuration small enough for a unit test that still runs every part: 600 rows with
# batches of 32 leave a smaller last batch of 24, so the checks cover the epoch's tail.
TINY = bench.BenchConfig(batch_sizes=(32,), rows=600, repeats=2, warmup=0, check_steps=3, textbook_batches=2,
                         peak_size=64, per_example_batch=8, max_epochs=1, target_accuracy=0.5,
                         train_command_runs=0)  # the whole command has tests of its own below


@pytest.fixture(scope="module")
def tiny_result():
    return bench.run(TINY)


@pytest.mark.parametrize("sizes,batch", [([784, 30, 10], 10), ([784, 30, 10], 1000), ([784, 100, 30, 10], 64)])
def test_flop_count_matches_xla_cost_analysis(sizes, batch):
    """The counted matrix-product FLOPs of a gradient step are XLA's own count less the small elementwise work."""
    params = gd.init_mlp(jax.random.key(0), sizes)
    x, y = jnp.ones((batch, sizes[0])), jnp.ones((batch, sizes[-1]))
    analysis = jax.jit(jax.grad(gd.quadratic_cost)).lower(params, x, y).compile().cost_analysis()
    xla_flops = (analysis[0] if isinstance(analysis, list) else analysis)["flops"]
    ours = bench.mlp_flops_per_example(sizes) * batch
    assert 0.97 * xla_flops <= ours <= xla_flops
    assert bench.mlp_flops_per_example([784, 30, 10]) == 95_880  # 4 (23520 + 300) + 2 (300)


HLO = """HloModule m

%body (p: (s32[], f32[4])) -> (s32[], f32[4]) {
  %p = (s32[], f32[4]{0}) parameter(0)
  %i = s32[] get-tuple-element(%p), index=0
  %one = s32[] constant(1)
  %next = s32[] add(%i, %one)
  %v = f32[4]{0} get-tuple-element(%p), index=1
  %c = f32[4]{0} copy(%v)
  %f = f32[4]{0} fusion(%c), kind=kLoop, calls=%g
  %b = f32[2,2]{1,0} bitcast(%f)
  ROOT %t = (s32[], f32[4]{0}) tuple(%next, %f)
}

ENTRY %main (a: f32[4]) -> f32[4] {
  %a = f32[4]{0} parameter(0)
  %w = (s32[], f32[4]{0}) while(%init), condition=%cond, body=%body
}
"""


def test_step_kernels_counts_the_loop_body_s_launches():
    profile = bench.step_kernels(HLO)
    assert profile["count"] == 3 and profile["by_opcode"] == {"add": 1, "copy": 1, "fusion": 1}
    assert profile["kernels"] == ["next", "c", "f"]


def _compiled_hlo(fn, *args) -> str:
    return jax.jit(fn).lower(*args).compile().as_text()


def test_program_fingerprint_sees_what_runs_not_names_or_source():
    def affine(x, w, b):
        return jnp.tanh(x @ w + b)

    def other_name(inputs, weights, bias):  # the same program, traced from other lines
        z = inputs @ weights
        return jnp.tanh(z + bias)

    args = (jnp.ones((4, 3)), jnp.ones((3, 2)), jnp.ones(2))
    fingerprint = bench.variants.program_fingerprint
    same = [_compiled_hlo(f, *args) for f in (affine, other_name)]
    assert same[0] != same[1]  # the texts differ: their metadata names other lines and functions
    assert fingerprint(same[0]) == fingerprint(same[1])
    assert fingerprint(HLO) == fingerprint(HLO.replace("%next", "%renamed").replace("%body", "%loop"))
    assert fingerprint(HLO) != fingerprint(HLO.replace("copy(", "negate("))
    assert fingerprint(same[0]) != fingerprint(_compiled_hlo(lambda x, w, b: jnp.tanh(x @ w - b), *args))
    assert fingerprint(same[0]) != fingerprint(_compiled_hlo(affine, jnp.ones((5, 3)), *args[1:]))  # a shape


def test_timing_summary_matches_numpy():
    t = bench.Timing([0.30, 0.10, 0.20, 0.25, 0.40])
    assert t.median == pytest.approx(np.median(t.seconds))
    assert t.spread == pytest.approx((0.40 - 0.10) / (2 * np.median(t.seconds)))
    assert t.to_dict()["min"] == 0.10 and t.to_dict()["max"] == 0.40


def test_relative_error_is_the_difference_over_the_movement():
    initial = [{"w": np.zeros((2, 2)), "b": np.zeros(2)}]
    reference = [{"w": np.full((2, 2), 2.0), "b": np.ones(2)}]
    variant = [{"w": np.full((2, 2), 2.0), "b": np.array([1.0, 1.5])}]
    assert bench.variants.relative_error(variant, reference, initial) == pytest.approx(0.5 / 2.0)
    assert bench.variants.relative_error(reference, reference, initial) == 0.0


def test_every_variant_computes_gd_jax_s_epoch_and_the_result_has_its_structure(tiny_result):
    r = tiny_result
    json.loads(json.dumps(r))  # JSON-ready as it is
    assert r["schema"] == bench.SCHEMA_VERSION and r["variants"] == list(bench.VARIANTS)
    for key in ("platform", "device_kind", "cpu_count", "versions", "environment"):
        assert key in r["machine"]
    assert r["machine"]["versions"]["jax"] == jax.__version__
    assert r["other_processes_cores"] is None or r["other_processes_cores"] >= 0
    assert r["peak"]["gflops"] > 0 and r["peak"]["flops"] == 2 * 64**3
    [table] = r["batch_sizes"]
    assert table["batch_size"] == 32 and table["steps_per_epoch"] == 19 and table["rows"] == 600
    assert table["check_steps"] == 4  # three full mini-batches and the smaller last one
    assert table["flops_per_epoch"] == 600 * 95_880
    assert list(table["variants"]) == list(bench.VARIANTS)
    for name, v in table["variants"].items():
        if name == "torch" and not HAS_TORCH:
            assert v["status"] == "skipped" and "torch" in v["reason"]
            continue
        assert v["status"] == "ok", (name, v)
        if name.startswith("matmul_floor"):
            assert v["check"] is None
        else:  # the same parameters as gd_jax after the same mini-batches
            assert v["check"]["passed"] and v["check"]["error"] <= bench.TOLERANCE and v["check"]["steps"] == 4, name
        assert len(v["seconds"]) == TINY.repeats and v["min"] <= v["median"] <= v["max"]
        models = 16 if "sweep16" in name else 1
        assert v["models"] == models
        assert v["seconds_per_model"] == pytest.approx(v["median"] / models)
        assert v["examples_per_second"] == pytest.approx(models * 600 / v["median"])
        assert v["gflops"] == pytest.approx(models * table["flops_per_epoch"] / v["median"] / 1e9)
        assert v["fraction_of_peak"] == pytest.approx(v["gflops"] / r["peak"]["gflops"])
        assert v["gd_jax_speedup"] == pytest.approx(v["seconds_per_model"] / table["variants"]["gd_jax"]["median"])
        assert v["peak_rss_bytes"] > 0
    assert table["variants"]["gd_jax"]["check"]["error"] == 0.0  # the reference itself
    assert table["variants"]["optax"]["check"]["error"] < 1e-6  # optax.sgd: the same floats
    assert table["variants"]["gd_jax"]["compile_seconds"] > 0
    # The profile: the floor's step is the row gather and the five products of a [784, 30, 10] step; gd_jax's
    # adds the activations, the error terms, the updates and its bookkeeping, never fewer kernels.
    floor, ours = (table["variants"][v]["kernels_per_step"] for v in ("matmul_floor", "gd_jax"))
    assert 6 <= floor["count"] < ours["count"]
    # The sweeps' floors: the same products for 16 models, never more kernels than the sweeps themselves.
    for sweep in ("gd_jax_sweep16", "gd_jax_sweep16_own"):
        floor16 = table["variants"][sweep.replace("gd_jax_", "matmul_floor_")]["kernels_per_step"]
        assert 6 <= floor16["count"] < table["variants"][sweep]["kernels_per_step"]["count"]
    assert "kernels_per_step" not in table["variants"]["vectorized_numpy"]
    # optax.sgd's epoch compiles to gd_jax's own program; a step per dispatch or the floor is another one.
    assert table["variants"]["optax"]["same_program_as_gd_jax"] is True
    assert table["variants"]["naive_jax"]["same_program_as_gd_jax"] is False
    assert table["variants"]["matmul_floor"]["same_program_as_gd_jax"] is False
    assert "same_program_as_gd_jax" not in table["variants"]["gd_jax"]
    assert "program" not in table["variants"]["vectorized_numpy"]
    assert "extrapolated from 2 of 19" in table["variants"]["textbook_numpy"]["note"]


def test_per_example_gradients_and_permutation_are_measured(tiny_result):
    pe = tiny_result["per_example_gradients"]
    assert pe["batch"] == 8 and pe["check"]["passed"]
    assert pe["vmap_over_batch"] == pytest.approx(pe["vmap_grad"]["median"] / pe["batch_grad"]["median"])
    perm = tiny_result["permutation"]
    assert perm["rows"] == 600 and perm["device_permutation"]["median"] > 0
    assert perm["host_shuffled_order_and_transfer"]["median"] > 0


def test_time_to_accuracy_follows_the_same_run_in_every_library(tiny_result):
    """Same initial parameters, same batch orders: after one epoch the libraries agree on the accuracy."""
    tta = tiny_result["time_to_accuracy"]
    assert tta["target"] == 0.5 and tta["dataset"] == "sample" and tta["max_epochs"] == 1
    names = ["gd_jax", "vectorized_numpy"] + (["torch"] if HAS_TORCH else [])
    accuracies = [tta[name]["accuracy"][0] for name in names]
    assert max(accuracies) - min(accuracies) <= 0.005
    for name in names:
        r = tta[name]
        assert r["reached"] == (accuracies[0] >= 0.5)
        if r["reached"]:
            assert r["epochs"] == 1 and r["seconds"] == r["wall_seconds"][0] > 0
    assert tta["gd_jax"]["compile_seconds"] > 0


def test_targets_are_ratios_of_the_measured_medians(tiny_result):
    targets = {t["target"]: t for t in tiny_result["targets"]}
    v = tiny_result["batch_sizes"][0]["variants"]
    numpy_target = targets["bs 32: gd_jax speed-up over vectorized_numpy"]
    assert numpy_target["value"] == pytest.approx(v["vectorized_numpy"]["median"] / v["gd_jax"]["median"])
    assert numpy_target["met"] == (numpy_target["value"] >= 1.5)
    # What the floor allows: gd_jax at its floor's time, against the same baseline.
    assert numpy_target["at_floor"] == pytest.approx(v["vectorized_numpy"]["median"] / v["matmul_floor"]["median"])
    assert numpy_target["floor_allows_goal"] == (numpy_target["at_floor"] >= 1.5)
    for name in ("gd_jax_sweep16", "gd_jax_sweep16_own"):
        sweep = targets[f"bs 32: {name} throughput over 16 sequential gd_jax epochs"]
        assert sweep["value"] == pytest.approx(16 * v["gd_jax"]["median"] / v[name]["median"])
        floor = v[name.replace("gd_jax_", "matmul_floor_")]["median"]
        assert sweep["at_floor"] == pytest.approx(16 * v["gd_jax"]["median"] / floor)
    assert targets["bs 32: gd_jax time over matmul_floor"]["at_floor"] is None
    assert "at the products' floor" in bench.format_table(tiny_result)
    assert "bs 32: |optax / gd_jax - 1|" in targets
    assert bench.format_table(tiny_result).count("\n") > 15


def _wrong_numpy(problem):
    """vectorized_numpy with a learning rate 1% too large: a variant that is fast because it is wrong."""
    return bench.variants._build_vectorized_numpy(dataclasses.replace(
        problem, config=dataclasses.replace(problem.config, learning_rate=problem.config.learning_rate * 1.01)))


def test_a_variant_that_computes_another_epoch_is_reported_wrong_and_kept_out_of_ratios(monkeypatch):
    monkeypatch.setitem(bench.variants.BUILDERS, "vectorized_numpy", _wrong_numpy)
    config = dataclasses.replace(TINY, variants=("gd_jax", "vectorized_numpy"), time_to_accuracy=False,
                                 per_example_batch=0)
    r = bench.run(config)
    v = r["batch_sizes"][0]["variants"]["vectorized_numpy"]
    assert v["status"] == "wrong" and not v["check"]["passed"] and v["check"]["error"] > bench.TOLERANCE
    assert v["gd_jax_speedup"] is None
    assert not any("vectorized_numpy" in t["target"] for t in r["targets"])


def _result(medians: dict[str, tuple[float, float]]) -> dict:
    """A result with one batch size: variant -> (median, spread)."""
    return {"batch_sizes": [{"batch_size": 10, "variants": {
        name: {"status": "ok", "median": m, "spread": s} for name, (m, s) in medians.items()}}]}


@pytest.mark.parametrize("same_program", [True, False, None])
def test_optax_parity_is_met_by_one_program_whatever_the_clock_says(same_program):
    """Two variants of one compiled program differ in time by noise alone: their parity is met, and the
    report gives the difference as the run's noise. Two programs are held to the measured goal."""
    result = _result({"gd_jax": (1.0, 0.0), "optax": (1.2, 0.0)})
    optax = result["batch_sizes"][0]["variants"]["optax"]
    optax.update(gd_jax_speedup=1.2, gd_jax_speedup_of_mins=1.1)
    if same_program is not None:
        optax["same_program_as_gd_jax"] = same_program
    [parity] = [t for t in bench.report.targets(result) if "optax" in t["target"]]
    assert parity["value"] == pytest.approx(0.2) and parity["met"] is bool(same_program)
    assert parity.get("same_program") is same_program
    note = bench.report.noise_note(result)
    if same_program:
        assert note == ("Noise: variants that compiled to gd_jax's own program were timed 20.0% at batch 10 "
                        "(optax) apart from it; a ratio that near its goal is within this run's noise.")
        assert bench.report.targets_markdown([parity])[-1].endswith("| met (the same program) |")
    else:
        assert note is None and bench.report.targets_markdown([parity])[-1].endswith("| missed |")


def test_compare_flags_only_slowdowns_beyond_the_noise():
    old = _result({"gd_jax": (1.0, 0.02), "torch": (1.0, 0.10), "optax": (1.0, 0.01), "naive_jax": (1.0, 0.01)})
    new = _result({"gd_jax": (1.2, 0.02), "torch": (1.15, 0.10), "optax": (0.8, 0.01), "naive_jax": (1.04, 0.0)})
    rows = {r["variant"]: r for r in bench.compare_results(old, new)}
    assert rows["gd_jax"]["slowed"] and rows["gd_jax"]["change"] == pytest.approx(0.2)
    assert not rows["torch"]["slowed"]  # 15% slower, but the two runs' noise is 20%
    assert not rows["optax"]["slowed"]  # faster
    assert not rows["naive_jax"]["slowed"]  # 4%: within the 5% every shared machine drifts


def _parse(argv):
    parser = argparse.ArgumentParser()
    bench.add_bench_arguments(parser)
    return parser.parse_args(argv)


def test_options_build_the_config_quick_first():
    config = bench.config_from_args(_parse(["--quick", "--batch-sizes", "7,9", "--sizes", "784,16,10"]))
    assert config.quick and config.batch_sizes == (7, 9) and config.sizes == (784, 16, 10)
    assert config.rows == bench.QUICK["rows"] and config.repeats == bench.QUICK["repeats"]
    assert bench.config_from_args(_parse([])) == bench.BenchConfig()


@pytest.mark.parametrize("change,match", [
    ({"batch_sizes": (0,)}, "batch sizes must be integers between 1 and rows"),
    ({"batch_sizes": (601,), "rows": 600}, r"between 1 and rows \(600\), got \[601\]"),
    ({"variants": ("gd_jax", "jaxx")}, r"unknown variants \['jaxx'\]"),
    ({"cost": "hinge"}, "unknown cost 'hinge'"),
    ({"learning_rate": math.nan}, "learning_rate must be a positive finite number, got nan"),
    ({"repeats": 0}, "repeats must be an integer >= 1, got 0"),
    ({"sizes": (784, 0, 10)}, r"sizes must be two or more positive integers, got \[784, 0, 10\]"),
    ({"device": "quantum"}, "unknown device 'quantum'"),
    ({"target_accuracy": 1.5}, r"target accuracy must be in \(0, 1\], got 1.5"),
])
def test_bad_configurations_are_refused_with_the_fix(change, match):
    with pytest.raises(ValueError, match=match):
        bench.run(dataclasses.replace(TINY, **change))


def test_a_missing_backend_and_unwritable_outputs_are_refused_before_measuring(tmp_path):
    missing = next((d for d in ("tpu", "gpu") if not _has_backend(d)), None)
    if missing:
        with pytest.raises(ValueError, match=f"--device {missing}: JAX has no {missing} backend here"):
            bench.run(dataclasses.replace(TINY, device=missing))
    with pytest.raises(BadInput, match=r"--json folder .* does not exist; create it or choose another path"):
        bench.run_bench(_parse(["--json", str(tmp_path / "no" / "such" / "r.json")]))
    with pytest.raises(ValueError, match="the data has 784 features but the network's input layer has 100"):
        bench.run(dataclasses.replace(TINY, sizes=(100, 10)))


def _has_backend(name: str) -> bool:
    try:
        jax.devices(name)
    except RuntimeError:
        return False
    return True


@pytest.mark.parametrize("argv,message", [
    (["--batch-sizes", "0"], "batch sizes must be integers between 1 and rows (60000), got [0]"),
    (["--variants", "gd_jax,numpyy"], "unknown variants ['numpyy']"),
    (["--json", "/no/such/folder/r.json"], "--json folder '/no/such/folder' does not exist"),
])
@pytest.mark.parametrize("entry", ["gd-jax bench", "python -m gd_jax.cli.bench"])
def test_the_command_prints_one_line_and_exits_2_on_bad_options(entry, argv, message, capsys):
    status = cli.main(["bench", *argv]) if entry == "gd-jax bench" else bench.main(argv)
    assert status == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and message in captured.err and captured.out == ""


@pytest.mark.slow
def test_quick_run_writes_the_table_json_and_chart(tmp_path, capsys):
    """``gd-jax bench --quick`` as CI runs it: every variant present, checked, and written."""
    out = tmp_path / "quick.json"
    assert cli.main(["bench", "--quick", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "batch size 10:" in printed and "batch size 128:" in printed and "targets:" in printed
    r = json.loads(out.read_text())
    assert r["config"]["quick"] and [t["batch_size"] for t in r["batch_sizes"]] == [10, 128]
    for table in r["batch_sizes"]:
        assert list(table["variants"]) == list(bench.VARIANTS)
        for name, v in table["variants"].items():
            assert v["status"] == ("skipped" if name == "torch" and not HAS_TORCH else "ok"), (name, v)
    assert (tmp_path / "quick.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    command = r["train_command"]
    assert command["status"] == "ok" and len(command["warm_seconds"]) == 1, command
    assert command["command"] == "gd-jax train --no-progress" and command["command"] in printed
    assert command["also"]["flags"] == "--no-figures" and len(command["also"]["warm_seconds"]) == 1
    assert next(t for t in r["targets"] if t["target"].startswith("gd-jax train"))["goal"] == 3.0


def test_the_whole_command_is_timed_once_cold_then_warm(tmp_path):
    seen = tmp_path / "seen"
    # A stand-in command that records the compilation cache and the working directory it was given,
    # then sleeps 0.3 s times the number of runs before it: the timings say which run is which.
    record = (f"import os, time; path = {str(seen)!r}; runs = len(open(path).readlines()) if os.path.exists(path) "
              "else 0; open(path, 'a').write(os.environ['GD_JAX_COMPILE_CACHE'] + ' ' + os.getcwd() + '\\n'); "
              "time.sleep(0.3 * runs)")
    timed = bench.train_command.measure_train_command(2, command=[sys.executable, "-c", record])
    assert timed["status"] == "ok" and len(timed["warm_seconds"]) == 2
    assert timed["warm_seconds"][0] >= 0.3 and timed["warm_seconds"][1] >= 0.6  # the first run is not among them
    assert timed["median"] == np.median(timed["warm_seconds"]) and timed["min"] == min(timed["warm_seconds"])
    runs = [line.split() for line in seen.read_text().splitlines()]
    assert len(runs) == 3 and len({tuple(run) for run in runs}) == 1  # one cache, one folder, for every run
    cache, folder = runs[0]
    assert cache == os.path.join(folder, "compile-cache") and not os.path.exists(folder)  # removed afterwards


def test_the_command_is_also_timed_with_more_flags_after_each_warm_run(tmp_path):
    seen = tmp_path / "seen"
    # Records its arguments, then sleeps 0.3 s with --no-figures and not at all without.
    record = (f"import sys, time; open({str(seen)!r}, 'a').write(' '.join(sys.argv[1:]) + '\\n'); "
              "time.sleep(0.3 if '--no-figures' in sys.argv else 0)")
    timed = bench.train_command.measure_train_command(2, command=[sys.executable, "-c", record],
                                                      also=("--no-figures",))
    assert seen.read_text().splitlines() == ["", "", "--no-figures", "", "--no-figures"]
    also = timed["also"]
    assert also["flags"] == "--no-figures" and len(also["warm_seconds"]) == len(timed["warm_seconds"]) == 2
    assert min(also["warm_seconds"]) >= 0.3 > max(timed["warm_seconds"]) - 0.1
    assert also["median"] == np.median(also["warm_seconds"]) and also["min"] == min(also["warm_seconds"])
    rows = bench.targets({"batch_sizes": [], "train_command": timed})
    assert ["--no-figures, warm compilation cache" in row["target"] for row in rows] == [False, True]
    assert rows[1]["value"] == also["median"] and rows[1]["goal"] == 3.0


def test_a_failing_command_is_recorded_with_its_last_line_and_no_target():
    failed = bench.train_command.measure_train_command(1, command=[sys.executable, "-c", "raise SystemExit('no data')"])
    assert failed["status"] == "failed" and failed["reason"] == "no data"
    result = {"batch_sizes": [], "train_command": failed}
    assert bench.targets(result) == []
    ok = {"batch_sizes": [], "train_command": {"command": "gd-jax train", "status": "ok", "median": 4.0, "min": 2.5}}
    [row] = bench.targets(ok)
    assert (row["value"], row["value_of_mins"], row["goal"], row["met"]) == (4.0, 2.5, 3.0, False)


def test_numpy_runs_in_its_own_process_without_the_machine_s_openblas_overrides(monkeypatch):
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Prescott")
    monkeypatch.setenv("OPENBLAS_L2_SIZE", "262144")
    x = np.ones((6, 4), np.float32)
    params = [{"w": np.full((4, 3), 0.1, np.float32), "b": np.zeros(3, np.float32)}]
    with bench.numpy_worker.NumpyWorker() as worker:
        info = worker.call("setup", name="t", x=x, y=np.array([0, 1, 2, 0, 1, 2]), params=params, n_classes=3,
                           batch_size=4, eta=1.0, cost="quadratic")
        choice = worker.call("choose_threads", name="t", candidates=[1, 2], orders=[np.arange(6)], rounds=2)
        out = worker.call("epoch", name="t", params=None, order=np.arange(6))
    assert info["environment"] == {"OPENBLAS_CORETYPE": None, "OPENBLAS_L2_SIZE": None}
    assert choice["chosen"] in (1, 2) and set(choice["seconds"]) == {"1", "2"}
    targets = np.eye(3, dtype=np.float32)[[0, 1, 2, 0, 1, 2]]
    want = bench.numpy_worker.train_epoch(params, x, targets, np.arange(6), 4, 1.0, "quadratic")
    for got, w in zip(out["params"], want):
        np.testing.assert_allclose(got["w"], w["w"], rtol=1e-6)
    assert out["seconds"] > 0


def test_the_baselines_record_the_configuration_they_ran_in(tiny_result):
    v = tiny_result["batch_sizes"][0]["variants"]
    numpy_config = v["vectorized_numpy"]["config"]
    assert numpy_config["process"]["environment"] == {"OPENBLAS_CORETYPE": None, "OPENBLAS_L2_SIZE": None}
    assert numpy_config["threads"]["chosen"] in (1, tiny_result["machine"]["cpu_count"])
    assert "own process" in v["vectorized_numpy"]["note"]
    if HAS_TORCH:
        assert v["torch"]["config"]["threads"]["chosen"] in (1, tiny_result["machine"]["cpu_count"])
    xla = tiny_result["machine"]["xla"]
    assert set(xla) >= {"XLA_FLAGS", "NPROC", "chosen_by", "backend_started"}
    assert tiny_result["per_example_gradients"]["check"]["closed_vs_vmap"] < 1e-5


@pytest.mark.parametrize(("loads", "cpus", "warned"), [([0.4, 0.9], 2, False), ([0.4, 1.01], 2, True),
                                                       ([3.9], 8, False), ([4.5], 8, True)])
def test_a_busy_machine_is_warned_about(loads, cpus, warned):
    note = bench.timing.load_note(loads, cpus)
    assert (note is not None) == warned
    if warned:
        assert f"load average up to {max(loads):.2f} on {cpus} cores" in note and "do not quote" in note


@pytest.mark.parametrize(("start_load", "others", "warned"), [(0.3, 0.2, False), (1.9, 0.2, True), (0.3, 1.2, True),
                                                               (0.9, 0.99, False)])
def test_the_busy_warning_counts_other_processes_not_the_run_s_own_threads(start_load, others, warned):
    # During the run the load average reads this run's own threads: 1.9 mid-run on 2 cores is no warning.
    note = bench.timing.load_note([start_load, 1.9, 1.9], 2, others=others)
    assert (note is not None) == warned
    if warned:
        assert ("other processes" in note) == (others > 1) and "do not quote" in note


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="the machine's busy time comes from Linux's /proc/stat")
def test_other_cores_excludes_this_process_and_its_children():
    snapshot = bench.timing.CpuSnapshot.now()
    busy_loop = "import time\nt = time.process_time()\nwhile time.process_time() - t < 1.0: pass"
    child = subprocess.run([sys.executable, "-c", busy_loop], check=True)  # one core for a second: ours
    assert child.returncode == 0
    t = time.process_time()
    while time.process_time() - t < 1.0:  # and a second of this process's own
        pass
    end = bench.timing.CpuSnapshot.now()
    assert end.own - snapshot.own >= 1.9  # the waited-for child's second is counted as ours
    others = bench.timing.other_cores(snapshot, end)
    # The machine was busy at least those 2 core-seconds, all of them this test's own; other
    # processes (the suite's other workers among them) took the rest, which is all that is left.
    assert others is not None and others * (end.wall - snapshot.wall) == pytest.approx(
        end.machine_busy - snapshot.machine_busy - (end.own - snapshot.own), abs=0.05)
    assert 0 <= others * (end.wall - snapshot.wall) <= end.machine_busy - snapshot.machine_busy - 1.9
    assert bench.timing.other_cores(bench.timing.CpuSnapshot(time.time(), None, 0.0)) is None


def test_the_markdown_report_carries_machine_versions_commit_load_and_every_figure(tiny_result, tmp_path, capsys):
    md = bench.format_markdown(tiny_result)
    assert tiny_result["machine"]["cpu_model"] in md and f"jax {jax.__version__}" in md
    assert "load average (1 min) during the run" in md and "XLA:" in md
    gd_jax_row = next(line for line in md.splitlines() if line.startswith("| gd_jax |"))
    assert f"{tiny_result['batch_sizes'][0]['variants']['gd_jax']['median']:.4f}" in gd_jax_row
    assert ("**WARNING" in md) == bool(tiny_result["load_warning"])
    path = tmp_path / "r.json"
    path.write_text(json.dumps(tiny_result))
    assert bench.main(["--report-md", str(path)]) == 0
    assert capsys.readouterr().out == md
