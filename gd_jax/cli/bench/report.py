"""What a ``gd-jax bench`` result says: the issue's targets, a plain-text table, a chart, a markdown
table for the docs, and a comparison of two runs."""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from typing import Any, NamedTuple

from gd_jax._src.serialization import atomic_write_bytes
from gd_jax.cli.bench.config import VARIANTS

__all__ = ["compare_results", "format_markdown", "format_table", "noise_note", "plot_results", "targets",
           "targets_markdown"]

Ratio = Callable[[str], "float | None"]


def _speedup(v: dict[str, Any], name: str, key: str) -> float | None:
    return v[name].get(key) if name in v else None


def _inverse(v: dict[str, Any], name: str) -> Ratio:
    return lambda key: 1 / s if (s := _speedup(v, name, key)) else None


class Target(NamedTuple):
    """One goal of the issue, as the run measured it."""

    name: str
    ratio: Ratio  # the measured figure, of the medians ("gd_jax_speedup") or of the minimums
    goal: float
    at_least: bool  # the goal is a minimum (a speed-up), else a maximum (a time, a difference)
    at_floor: Ratio | None = None  # the best ratio this machine's floor allows (None: no floor to say it)
    # True when the two sides are one compiled program: the goal holds by construction, the
    # measured difference is the run's noise (None: not a comparison of two programs).
    same_program: bool | None = None


def _batch_targets(table: dict[str, Any]) -> list[Target]:
    bs, v = table["batch_size"], table["variants"]
    small = bs < 100  # the textbook's batch 10 has its own targets; larger batches share theirs

    def over_floor(name: str, floor: str) -> Ratio:  # gd_jax at its floor: the floor over ``name``, per model
        return lambda k: a / b if (a := _speedup(v, name, k)) and (b := _speedup(v, floor, k)) else None

    rows = [
        Target(f"bs {bs}: gd_jax speed-up over vectorized_numpy", lambda k: _speedup(v, "vectorized_numpy", k), 1.5,
               True, over_floor("vectorized_numpy", "matmul_floor")),
        Target(f"bs {bs}: gd_jax speed-up over torch", lambda k: _speedup(v, "torch", k), 7.0 if small else 2.0, True,
               over_floor("torch", "matmul_floor")),
    ]
    if small:
        rows.append(Target(f"bs {bs}: gd_jax speed-up over textbook_numpy",
                           lambda k: _speedup(v, "textbook_numpy", k), 25.0, True,
                           over_floor("textbook_numpy", "matmul_floor")))
    rows.append(Target(f"bs {bs}: gd_jax time over matmul_floor", _inverse(v, "matmul_floor"), 1.3, False))
    rows.append(Target(f"bs {bs}: |optax / gd_jax - 1|",
                       lambda k: abs(s - 1) if (s := _speedup(v, "optax", k)) else None, 0.03, False,
                       same_program=v.get("optax", {}).get("same_program_as_gd_jax")))
    if bs <= 128:
        goals = (("gd_jax_sweep16", 6.0), ("gd_jax_sweep16_own", 3.0)) if small else \
            (("gd_jax_sweep16", 4.0), ("gd_jax_sweep16_own", 2.0))
        rows += [Target(f"bs {bs}: {name} throughput over 16 sequential gd_jax epochs", _inverse(v, name), goal, True,
                        _inverse(v, name.replace("gd_jax_", "matmul_floor_")))
                 for name, goal in goals]
    return rows


TRAIN_COMMAND_GOAL_S = 3.0  # a warm `gd-jax train` on the sample, start to exit, on a quiet 2-core CPU


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each as a measured ratio (of the medians, and of the minimums), its goal and
    whether the median's ratio met it. On a loaded machine the minimums are the less disturbed figure.

    ``at_floor``: where a floor variant measures the products alone, the ratio gd_jax would reach
    if its epoch took no more than that floor (``matmul_floor`` for one model, the
    ``matmul_floor_sweep16`` variants for the sweeps); ``floor_allows_goal`` says whether that
    ratio meets the goal, i.e. whether the goal is reachable on this machine without faster products.

    ``same_program``: for optax's parity, whether optax's epoch compiled to gd_jax's own program
    (equal ``program_fingerprint``). Then the parity holds by construction, and is met whatever
    the clock says: the measured difference is this run's noise (see ``noise_note``).
    """
    candidates = [row for table in result["batch_sizes"] for row in _batch_targets(table)]
    pe = result.get("per_example_gradients")
    if pe:
        for key, what in (("vmap", "vmap(grad)"), ("closed", "the closed form (per_example_grads)")):
            def pe_ratio(k: str, key: str = key) -> float:
                return pe[key + "_over_batch" + ("" if k == "gd_jax_speedup" else "_of_mins")]

            candidates.append(Target(f"per-example gradients (batch {pe['batch']}): {what} time over batch grad",
                                     pe_ratio, 2.0, False))
    tta = result.get("time_to_accuracy")
    if tta and tta.get("vectorized_numpy", {}).get("reached") and tta["gd_jax"].get("reached"):
        tta_ratio = tta["gd_jax"]["seconds"] / tta["vectorized_numpy"]["seconds"]
        candidates.append(Target(f"time to {tta['target']:.0%}: gd_jax (compiling included) over vectorized_numpy",
                                 lambda k: tta_ratio, 1.0, False))
    command = result.get("train_command")
    if command and command["status"] == "ok":  # seconds, not a ratio: the goal is the issue's 3 s
        candidates.append(Target(f"{command['command']}, warm compilation cache: wall seconds",
                                 lambda k: command["median" if k == "gd_jax_speedup" else "min"],
                                 TRAIN_COMMAND_GOAL_S, False))
        if command.get("also"):
            also = command["also"]
            candidates.append(Target(f"{command['command']} {also['flags']}, warm compilation cache: wall seconds",
                                     lambda k: also["median" if k == "gd_jax_speedup" else "min"],
                                     TRAIN_COMMAND_GOAL_S, False))
    rows = []
    for t in candidates:
        value, of_mins = t.ratio("gd_jax_speedup"), t.ratio("gd_jax_speedup_of_mins")
        at_floor = t.at_floor("gd_jax_speedup") if t.at_floor else None
        if value is not None:
            met = t.same_program is True or (value >= t.goal if t.at_least else value <= t.goal)
            row = {"target": t.name, "value": value, "value_of_mins": of_mins, "goal": t.goal, "met": bool(met),
                   "at_floor": at_floor, "floor_allows_goal": None if at_floor is None else bool(at_floor >= t.goal)}
            if t.same_program is not None:
                row["same_program"] = t.same_program
            rows.append(row)
    return rows


def noise_note(result: dict[str, Any]) -> str | None:
    """How far apart two variants that compiled to one program were timed in this run, as a sentence, or None.

    optax's epoch usually compiles to gd_jax's own program (the same optimised HLO): every
    difference between their times is then the machine's, and a ratio nearer its goal than
    that difference cannot be told from it in this run.
    """
    apart = [(t["batch_size"], name, abs(r["gd_jax_speedup"] - 1)) for t in result["batch_sizes"]
             for name, r in t["variants"].items()
             if r.get("same_program_as_gd_jax") and r.get("gd_jax_speedup") is not None]
    if not apart:
        return None
    each = ", ".join(f"{d:.1%} at batch {bs} ({name})" for bs, name, d in apart)
    return (f"Noise: variants that compiled to gd_jax's own program were timed {each} apart from it; "
            "a ratio that near its goal is within this run's noise.")


def _same_program_text(t: dict[str, Any]) -> str:
    return "; the same compiled program as gd_jax's: the difference is noise" if t.get("same_program") else ""


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _header(result: dict[str, Any], out: io.StringIO) -> None:
    m, c, p = result["machine"], result["config"], result["peak"]
    print(f"gd-jax bench: {m['device_kind']} ({m['platform']}), {m['cpu_count']} CPUs, jax {m['versions']['jax']}; "
          f"sizes {c['sizes']}, {c['cost']} cost, eta {c['learning_rate']}, {c['rows']:,} rows ({c['dataset']}); "
          f"load average {result['load_average_start'][0]:.2f} at start", file=out)
    xla = m.get("xla") or {}
    print(f"XLA: XLA_FLAGS={xla.get('XLA_FLAGS')!r}, NPROC={xla.get('NPROC')!r} "
          f"({xla.get('chosen_by', 'as the environment set it')})", file=out)
    print(f"peak: {p['gflops']:.1f} GFLOP/s ({p['size']}^3 float32 matmul, best of {len(p['seconds'])})", file=out)
    note = result.get("load_warning")
    if note:
        print(note, file=out)


def _variant_row(name: str, r: dict[str, Any]) -> str:
    if r["status"] == "skipped":
        return f"  {name:<19s} skipped: {r['reason']}"
    check = r.get("check")
    check_text = "n/a" if check is None else f"{'ok' if check['passed'] else 'WRONG'} {check['error']:.0e}"
    rss = r["peak_rss_bytes"] / 2**20 if r.get("peak_rss_bytes") else None
    spread = f"[{r['min']:.4f}-{r['max']:.4f}]"
    kernels = str(r["kernels_per_step"]["count"]) if r.get("kernels_per_step") else "-"
    return (f"  {name:<19s} {r['median']:9.4f} {spread:>17s} {r['seconds_per_model']:9.4f}"
            f" {_fmt(r['gd_jax_speedup'], '8.2f'):>8s} {_fmt(r['compile_seconds'], '9.2f'):>9s}"
            f" {r['examples_per_second']:11.3g} {r['gflops']:8.2f} {_fmt(r['fraction_of_peak'], '7.1%'):>7s}"
            f" {_fmt(rss, '7.0f'):>7s} {kernels:>7s}  {check_text}{'  ' + r['note'] if r.get('note') else ''}")


def _batch_table(table: dict[str, Any], repeats: int, out: io.StringIO) -> None:
    print(f"\nbatch size {table['batch_size']}: {table['steps_per_epoch']} steps an epoch, median of "
          f"{repeats} epochs [min-max]; gd_jax x: how many times faster gd_jax is, per model "
          f"(load {table['load_average'][0]:.2f})", file=out)
    print(f"  {'variant':<19s} {'s/epoch':>9s} {'[min-max]':>17s} {'per model':>9s} {'gd_jax x':>8s} "
          f"{'compile s':>9s} {'examples/s':>11s} {'GFLOP/s':>8s} {'of peak':>7s} {'RSS MB':>7s} "
          f"{'kernels':>7s}  check", file=out)
    for name, r in table["variants"].items():
        print(_variant_row(name, r), file=out)


def _extras(result: dict[str, Any], out: io.StringIO) -> None:
    perm = result["permutation"]
    print(f"\nbatch order of {perm['rows']:,} rows: jax.random.permutation on the device "
          f"{perm['device_permutation']['median'] * 1e3:.2f} ms, gd.shuffled_order + transfer "
          f"{perm['host_shuffled_order_and_transfer']['median'] * 1e3:.2f} ms", file=out)
    pe = result.get("per_example_gradients")
    if pe:
        print(f"per-example gradients, batch {pe['batch']}: vmap(grad) {pe['vmap_grad']['median'] * 1e3:.3f} ms "
              f"({pe['vmap_over_batch']:.2f}x the batch grad), closed form {pe['closed_form']['median'] * 1e3:.3f} ms "
              f"({pe['closed_over_batch']:.2f}x), batch grad {pe['batch_grad']['median'] * 1e3:.3f} ms, Python loop "
              f"{pe['python_loop']['median'] * 1e3:.2f} ms ({pe['loop_over_vmap']:.1f}x vmap); "
              f"check {'ok' if pe['check']['passed'] else 'WRONG'}", file=out)
    command = result.get("train_command")
    if command:
        if command["status"] == "ok":
            warm = ", ".join(f"{t:.2f}" for t in command["warm_seconds"])
            print(f"{command['command']} (warm compilation cache): median {command['median']:.2f} s of {warm} s; "
                  f"the run that filled the cache {command['cold_seconds']:.2f} s", file=out)
            if command.get("also"):
                also = command["also"]
                print(f"  with {also['flags']}: median {also['median']:.2f} s of "
                      + ", ".join(f"{t:.2f}" for t in also["warm_seconds"]) + " s", file=out)
        else:
            print(f"{command['command']} failed: {command['reason']}", file=out)
    tta = result.get("time_to_accuracy")
    if not tta:
        return
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


def format_table(result: dict[str, Any]) -> str:
    """The result as plain-text tables, one per batch size, then the other measurements and the targets."""
    out = io.StringIO()
    _header(result, out)
    for table in result["batch_sizes"]:
        _batch_table(table, result["config"]["repeats"], out)
    _extras(result, out)
    if result.get("targets"):
        print("targets:" + ("  (the machine was busy: not to be quoted)" if result.get("load_warning") else ""),
              file=out)
        for t in result["targets"]:
            floor = "" if t.get("at_floor") is None else f"; at the products' floor {t['at_floor']:.3g}" + (
                "" if t["floor_allows_goal"] else ", beyond the goal's reach here")
            print(f"  {'met   ' if t['met'] else 'MISSED'} {t['target']}: {t['value']:.3g} "
                  f"(of the minimums {_fmt(t['value_of_mins'], '.3g')}; goal {t['goal']:g}{floor}"
                  f"{_same_program_text(t)})", file=out)
        if note := noise_note(result):
            print(note, file=out)
    others = result.get("other_processes_cores")
    print(f"load average {result['load_average_end'][0]:.2f} at the end" + (
        "" if others is None else f" (other processes: {others:.2f} cores on average)") +
        f"; {result['wall_seconds']:.0f} s in all, "
          f"{result['process_cpu_seconds']:.0f} s of this process's CPU time", file=out)
    return out.getvalue()


def _md_header(result: dict[str, Any]) -> list[str]:
    m, c, v = result["machine"], result["config"], result["machine"]["versions"]
    source = result.get("source") or {}
    commit = (source.get("commit") or "unknown")[:10] + (" (with uncommitted changes)" if source.get("dirty") else "")
    loads = result.get("load_averages") or [result["load_average_start"][0], result["load_average_end"][0]] + [
        t[k][0] for t in result["batch_sizes"] for k in ("load_average", "load_average_before") if k in t]
    xla = m.get("xla") or {}
    lines = [f"Measured {result['started']} by `{result.get('command', 'gd-jax bench')}` at commit {commit}.",
             "",
             f"- machine: {m['cpu_model']}, {m['cpu_count']} cores ({m['device_kind']}, {m['platform']}), "
             f"{m['system']}",
             "- versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val),
             f"- load average (1 min) during the run: {min(loads):.2f} to {max(loads):.2f}, this run's threads "
             "included" + ("" if result.get("other_processes_cores") is None else
                           f"; other processes kept {result['other_processes_cores']:.2f} cores busy on average"),
             f"- XLA: `XLA_FLAGS={xla.get('XLA_FLAGS') or ''}`, `NPROC={xla.get('NPROC') or ''}` "
             f"({xla.get('chosen_by', 'as the environment set it')})",
             f"- network {list(c['sizes'])}, {c['cost']} cost, eta {c['learning_rate']}, {c['rows']:,} rows, "
             f"median of {c['repeats']} interleaved epochs"]
    if result.get("load_warning"):
        lines += ["", f"**{result['load_warning']}**"]
    return lines


def _md_batch(table: dict[str, Any]) -> list[str]:
    lines = ["", f"Batch size {table['batch_size']} ({table['steps_per_epoch']:,} steps an epoch):", "",
             "| variant | s/epoch (median) | [min, max] | per model | gd_jax x | kernels/step | configuration |",
             "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for name, r in table["variants"].items():
        if r["status"] != "ok":
            lines.append(f"| {name} | {r['status']} | | | | | {r.get('reason', '')} |")
            continue
        kernels = r["kernels_per_step"]["count"] if r.get("kernels_per_step") else ""
        lines.append(f"| {name} | {r['median']:.4f} | [{r['min']:.4f}, {r['max']:.4f}] | {r['seconds_per_model']:.4f} "
                     f"| {_fmt(r['gd_jax_speedup'], '.2f')} | {kernels} | {r.get('note', '')} |")
    return lines


def format_markdown(result: dict[str, Any]) -> str:
    """The result as markdown for the README and docs: machine, versions, commit, load, one table per batch
    size and the targets. Every figure comes from ``result``; none is typed by hand."""
    lines = _md_header(result)
    for table in result["batch_sizes"]:
        lines += _md_batch(table)
    if result.get("targets"):
        lines += ["", *targets_markdown(result["targets"])]
    if note := noise_note(result):
        lines += ["", note]
    return "\n".join(lines) + "\n"


def targets_markdown(rows: list[dict[str, Any]]) -> list[str]:
    """The lines of a markdown table of ``targets(result)``'s rows (the docs' benchmark page uses it too)."""
    lines = ["| target | measured (median) | of the minimums | at the products' floor | goal | |",
             "| --- | ---: | ---: | ---: | ---: | --- |"]
    for t in rows:
        name = t["target"].replace("|", "\\|")  # a literal bar inside a markdown cell
        lines.append(f"| {name} | {t['value']:.3g} | {_fmt(t['value_of_mins'], '.3g')} "
                     f"| {_fmt(t.get('at_floor'), '.3g')} | {t['goal']:g} | {'met' if t['met'] else 'missed'}"
                     f"{' (the same program)' if t.get('same_program') else ''} |")
    return lines


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
