"""Results pages, rendered at build time from the committed data (never typed by hand).

- ``experiments/results/NAME/``: each experiment's own ``results.md`` (written by its script, with
  the command, commit, versions and machine it ran on), its figures, and where the data lies.
- ``experiments/results/sweep_eta/``: a ``gd-jax sweep`` folder, summarised from its ``sweep.json``.
- ``experiments/benchmarks/results/*.json``: the newest ``gd-jax bench --json`` file, as tables.

``pages(root)`` returns ``{page path: markdown}`` and ``images(root)`` ``{site path: file}``.
"""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

from gd_jax.cli.bench.report import noise_note, targets_markdown

RESULTS = Path("experiments/results")
BENCH = Path("experiments/benchmarks/results")
SOURCE_URL = "the repository"


def _experiments(root: Path) -> list[str]:
    return sorted(p.name for p in (root / RESULTS).iterdir() if (p / "results.md").exists())


def images(root: Path) -> dict[str, Path]:
    found = {}
    for folder in sorted((root / RESULTS).iterdir()):
        for png in sorted(folder.glob("*.png")):
            found[f"results/{folder.name}/{png.name}"] = png
    bench = newest_bench(root)
    if bench is not None and bench.with_suffix(".png").exists():
        found[f"results/benchmarks/{bench.with_suffix('.png').name}"] = bench.with_suffix(".png")
    return found


def _files_note(folder: Path, root: Path) -> str:
    names = ", ".join(f"`{p.name}`" for p in sorted(folder.iterdir()) if p.is_file())
    return (f"!!! info \"Source\"\n    Rendered when this site was built from the committed folder "
            f"`{folder.relative_to(root)}/` ({names}). To remake it, run the command above.\n")


def experiment_page(root: Path, name: str) -> str:
    folder = root / RESULTS / name
    text = (folder / "results.md").read_text()
    pngs = sorted(p.name for p in folder.glob("*.png"))
    # results.md links its figures by bare file name, which is where the build copies them too.
    linked = set(re.findall(r"\]\(([^)]+\.png)\)", text))
    missing = [p for p in pngs if p not in linked]
    extra = []
    if "Made by" not in text and (folder / "results.json").exists():
        data = json.loads((folder / "results.json").read_text())
        if "machine" in data:
            machine = ", ".join(f"{k} {v}" for k, v in data["machine"].items())
            extra.append(f"Recorded machine and versions: {machine}. No commit was recorded with this run.")
    text = re.sub(r"\]\(([^)/]+\.png)\)", rf"]({name}/\1)", text)
    body = [text.rstrip(), ""]
    if extra:
        body += extra + [""]
    for png in missing:
        body += [f"![{png}]({name}/{png})", ""]
    body += [_files_note(folder, root)]
    if not text.lstrip().startswith("# "):
        body.insert(0, f"# {name}\n")
    return "\n".join(body)


def sweep_page(root: Path) -> str:
    folder = root / RESULTS / "sweep_eta"
    data = json.loads((folder / "sweep.json").read_text())
    config, settings = data["config"], data["config"]["settings"]
    swept = list(data["grid"])
    last = {}
    for record in data["records"]:
        last[record["model"]] = record  # records are in epoch order
    table = {}
    for model in data["models"]:
        key = tuple(model[k] for k in swept)
        table.setdefault(key, []).append(last[model["model"]]["eval_accuracy"])
    lines = [
        "# Learning-rate sweep on the sample",
        "",
        "A `gd-jax sweep` folder committed as `experiments/results/sweep_eta/`; this page is rendered from its "
        "`sweep.json` when the site is built.",
        "",
        "Recorded settings: " + ", ".join(f"`{k}` {v}" for k, v in settings.items() if v is not None) + ".",
        "",
        f"Recorded versions and machine: gd_jax {config.get('gd_jax')}, jax {config.get('jax')}, Python "
        f"{config.get('python')}, devices {', '.join(config.get('devices', []))}; "
        f"{config.get('n_train')} training and {config.get('n_eval')} evaluation digits. The folder records no "
        "command line or commit; the equivalent command is `gd-jax sweep` with the settings above "
        "(`--eta " + ",".join(f"{x:g}" for x in data['grid']['learning_rate']) + f" --seeds {len(data['seeds'])}`).",
        "",
        "| " + " | ".join(swept) + " | models | final eval accuracy, mean | min | max |",
        "| " + " | ".join("---:" for _ in swept) + " | ---: | ---: | ---: | ---: |",
    ]
    for key, values in table.items():
        lines.append("| " + " | ".join(f"{v:g}" for v in key) + f" | {len(values)} | {statistics.mean(values):.4f} | "
                     f"{min(values):.4f} | {max(values):.4f} |")
    compile_s = data.get("compile_seconds")
    train_s = sum(data.get("epoch_seconds") or [])
    lines += ["", f"Training took {train_s:.0f} s for all models together after one compile of {compile_s:.1f} s "
              "(recorded in `sweep.json`; the machine was shared).", ""]
    for png in sorted(folder.glob("*.png")):
        lines += [f"![{png.name}](sweep_eta/{png.name})", ""]
    lines += [_files_note(folder, root)]
    return "\n".join(lines)


def newest_bench(root: Path) -> Path | None:
    """The run the page presents: of the bench results measured at the newest one's commit, the fullest.

    A run of one batch size with other settings (``--batch-sizes 10 --xla auto``) often follows the
    full run at the same commit; the full run stays the page's subject and the other its companion.
    """
    runs = _bench_runs(root)
    if not runs:
        return None
    commit = _commit(max(runs, key=lambda r: (r[0].get("started", ""), r[1].name))[0])
    if commit:
        runs = [r for r in runs if _commit(r[0]) == commit]
    return max(runs, key=lambda r: (len(r[0]["batch_sizes"]), r[0].get("started", ""), r[1].name))[1]


def same_commit_benches(root: Path, newest: Path) -> list[Path]:
    """The other bench results measured at the newest one's commit (e.g. one batch size with ``--xla auto``)."""
    commit = _commit(json.loads(newest.read_text()))
    return [path for data, path in _bench_runs(root)
            if path != newest and commit and _commit(data) == commit and "targets" in data]


def _bench_runs(root: Path) -> list[tuple[dict, Path]]:
    """The committed ``gd-jax bench`` results, by file name, with their data (other JSON files left out)."""
    runs = [(json.loads(p.read_text()), p) for p in sorted((root / BENCH).glob("*.json"))]
    return [(data, p) for data, p in runs if "batch_sizes" in data]


def _commit(data: dict) -> str | None:
    return data.get("source", {}).get("commit")


def _fmt(x, digits=4) -> str:
    return "-" if x is None else f"{x:.{digits}g}"


def bench_page(root: Path) -> str:
    path = newest_bench(root)
    data = json.loads(path.read_text())
    m = data["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    source = data.get("source", {})
    commit = (source.get("commit") or "not recorded")[:10] + (" (with uncommitted changes)" if source.get("dirty")
                                                              else "")
    load = lambda xs: ", ".join(f"{x:.1f}" for x in xs)  # noqa: E731
    sizes = [b["batch_size"] for b in data["batch_sizes"]]
    lines = [
        "# Benchmarks",
        "",
        f"The newest committed `gd-jax bench` result, `{path.relative_to(root)}`, rendered when this site was built "
        "(see [benchmarking](../how-to/bench.md) to make your own).",
        "",
        f"- **Command**: `{data.get('command')}`",
        f"- **Commit**: `{commit}`, started {data.get('started')}",
        f"- **Machine**: {m.get('cpu_model')}, {m.get('cpu_count')} cores, {m.get('device')} ({m.get('system')})",
        f"- **Versions**: {versions}",
        f"- **Load average** (1, 5, 15 min) at the start: {load(data['load_average_start'])}; at the end: "
        f"{load(data['load_average_end'])} (the run's own threads included)" + (
            "" if data.get("other_processes_cores") is None else
            f"; other processes kept {data['other_processes_cores']:.2f} cores busy on average during the run") +
        ". On a shared machine seconds move between runs; the ratios within one run are what count.",
        *(["", f"**{data['load_warning']}**"] if data.get("load_warning") else []),
        "",
        "## Seconds per epoch",
        "",
        f"Median of {data['config']['repeats']} timed epochs over {data['config']['rows']:,} rows (per model for "
        "sweeps); in brackets how many times faster gd_jax's epoch is, of the medians / of the minimums "
        "(below 1: the variant was faster).",
        "",
        "| variant | " + " | ".join(f"batch {s}" for s in sizes) + " |",
        "| --- | " + " | ".join("---:" for _ in sizes) + " |",
    ]
    for variant in data["variants"]:
        cells = []
        for b in data["batch_sizes"]:
            v = b["variants"].get(variant)
            if not v or v.get("status") != "ok":
                cells.append(v.get("status", "-") if v else "-")
                continue
            cell = _fmt(v.get("seconds_per_model", v.get("median")))
            if variant != "gd_jax" and v.get("gd_jax_speedup") is not None:
                cell += f" ({v['gd_jax_speedup']:.2f}x / {v['gd_jax_speedup_of_mins']:.2f}x)"
            cells.append(cell)
        lines.append(f"| `{variant}` | " + " | ".join(cells) + " |")
    gd = [b["variants"]["gd_jax"] for b in data["batch_sizes"]]
    lines.append("| GFLOP/s of gd_jax (of peak) | " + " | ".join(
        f"{v['gflops']:.1f} ({v['fraction_of_peak']:.0%})" for v in gd) + " |")
    lines.append("| kernels a step, gd_jax | " + " | ".join(
        str(v.get("kernels_per_step", {}).get("count", "-")) for v in gd) + " |")
    png = path.with_suffix(".png")
    if png.exists():
        lines += ["", f"![gd-jax bench chart](benchmarks/{png.name})"]
    peak, perm, pe = data["peak"], data["permutation"], data["per_example_gradients"]
    lines += [
        "",
        "## The rest of the run",
        "",
        f"- **Peak**: {peak['gflops']:.1f} GFLOP/s ({peak['size']}^3 float32 matmul, best of "
        f"{len(peak['seconds'])}).",
        f"- **A batch order of {perm['rows']:,} rows**: {perm['device_permutation']['median'] * 1e3:.1f} ms as "
        f"`jax.random.permutation` on the device, {perm['host_shuffled_order_and_transfer']['median'] * 1e3:.1f} ms "
        "as `gd.shuffled_order` plus the transfer (medians).",
        f"- **Per-example gradients** of a batch of {pe['batch']}: `vmap(grad)` "
        f"{pe['vmap_grad']['median'] * 1e3:.2f} ms, the batch gradient {pe['batch_grad']['median'] * 1e3:.2f} ms, "
        f"a Python loop {pe['python_loop']['median'] * 1e3:.2f} ms (medians).",
    ]
    tta = data.get("time_to_accuracy") or {}
    if tta:
        lines += ["", f"**Time to {tta['target']:.0%} accuracy** ({tta['eval']}, {tta['dataset']}, batch "
                      f"{tta['batch_size']}):", "", "| who | reached | epochs | seconds | of which compiling |",
                  "| --- | --- | ---: | ---: | ---: |"]
        for who, r in tta.items():
            if isinstance(r, dict) and "reached" in r:
                lines.append(f"| `{who}` | {'yes' if r['reached'] else 'no'} | {r.get('epochs', '-')} | "
                             f"{_fmt(r.get('seconds'), 3)} | {_fmt(r.get('compile_seconds'), 3)} |")
    if data.get("targets"):
        lines += ["", "## Targets recorded in the run", "", *targets_markdown(data["targets"])]
    if note := noise_note(data):
        lines += ["", note]
    companions = same_commit_benches(root, path)
    for other in companions:
        extra = json.loads(other.read_text())
        xla = extra["machine"].get("xla") or {}
        lines += ["", f"## At the same commit: `{other.name}`", "",
                  f"- **Command**: `{extra.get('command')}`",
                  f"- **XLA**: `NPROC={xla.get('NPROC') or ''}`, `XLA_FLAGS={xla.get('XLA_FLAGS') or ''}` "
                  f"({xla.get('chosen_by', 'as the environment set it')})",
                  "- **Other processes**: " + ("not recorded" if extra.get("other_processes_cores") is None else
                                               f"{extra['other_processes_cores']:.2f} cores busy on average"),
                  *(["", f"**{extra['load_warning']}**"] if extra.get("load_warning") else []),
                  "", *targets_markdown(extra.get("targets") or []),
                  *(["", note] if (note := noise_note(extra)) else [])]
    older = [p.name for p in sorted((root / BENCH).glob("*.json")) if p != path and p not in companions]
    if older:
        lines += ["", "Older committed results: " + ", ".join(f"`{n}`" for n in older) + " (compare two with "
                  "`python experiments/benchmarks/compare.py OLD.json NEW.json`)."]
    return "\n".join(lines) + "\n"


TITLES = {"chapter1": "Chapter 1 over seeds", "network_py": "network.py in float64", "chapter3": "Chapter 3 over seeds",
          "run_figures": "Run figures", "sweep_eta": "Learning-rate sweep (sample)", "learning_rate": "Learning rate",
          "minibatch_noise": "Mini-batch noise", "landscape": "The cost landscape", "modes": "Three modes",
          "benchmarks": "Benchmarks"}


def index_page(root: Path) -> str:
    lines = ["# Results", "",
             "Every page in this section is rendered at build time from data committed under `experiments/results/` "
             "and `experiments/benchmarks/results/`; each names the command, commit, versions and machine its data "
             "records. Nothing measured is typed by hand. The scripts that make the data are in `experiments/` "
             "(see `experiments/README.md`).", "", "| page | data |", "| --- | --- |"]
    for name in [*_experiments(root), "sweep_eta"]:
        lines.append(f"| [{TITLES.get(name, name)}]({name}.md) | `experiments/results/{name}/` |")
    bench = newest_bench(root)
    if bench is not None:
        lines.append(f"| [Benchmarks](benchmarks.md) | `{bench.relative_to(root)}` |")
    return "\n".join(lines) + "\n"


def pages(root: Path) -> dict[str, str]:
    out = {"results/index.md": index_page(root)}
    for name in _experiments(root):
        out[f"results/{name}.md"] = experiment_page(root, name)
    out["results/sweep_eta.md"] = sweep_page(root)
    if newest_bench(root) is not None:
        out["results/benchmarks.md"] = bench_page(root)
    return out
