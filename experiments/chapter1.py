"""Experiment 1: the textbook's chapter 1 on full MNIST, over seeds, with its stalls explained.

Nielsen's "Neural Networks and Deep Learning", chapter 1, trains sigmoid networks with the
quadratic cost, eta = 3.0, mini-batches of 10, for 30 epochs on 50,000 training digits, and
reports the best test accuracy over the epochs: 95.42% for [784, 30, 10] and 96.59% for
[784, 100, 10]. It also shows what too small (eta = 0.001) and too large (eta = 100) a learning
rate do. Here every configuration runs over seeds, each configuration's seeds (and learning
rates of one shape) trained as one compiled program (``common.train_models``), each seed's keys
derived as ``gd-jax train --seed`` derives them.

Some seeds stall several points below the others. After every epoch the script measures each
output neuron on the test set (its largest activation, its mean weighted input ``z`` on the
digits it should recognise), so that a stall is traced to its cause: a run counts as *stalled*
when one output neuron stays below 0.5 on every test image, i.e. it never says "this is my
digit", so that digit is (almost) never predicted. With the quadratic cost the output error is
``delta = (a - y) sigma'(z)``, which vanishes when that neuron is saturated off, so nothing pulls
it back. ``--remedies`` reruns the seeds of both networks with chapter 3's remedies: weights
N(0, 1/n_in) (``scaled-init``, ``scaled-init-100``) and the cross-entropy cost, eta 0.5
(``cross-entropy``, ``cross-entropy-100``).

Writes ``results.md`` (ours beside the published figures, a table per configuration, the stalls
explained), ``results.json`` (every curve and measurement) and ``accuracy.png`` (test accuracy per
epoch, one line per seed), rewritten after each group of configurations.

Run: ``python experiments/chapter1.py --idx-dir ../shared/data/mnist-full [--seeds 10] [--remedies]``
"""

from __future__ import annotations

import argparse
import itertools
import sys
from typing import Any, NamedTuple

import common
import jax
import jax.numpy as jnp
import numpy as np

import gd_jax as gd

BATCH_SIZE = 10
Params = list[dict[str, jax.Array]]  # gd_jax's network: one {"w", "b"} dict a layer
DEAD_BELOW = 0.5  # an output neuron whose activation stays below this on every test image never votes yes


class Config(NamedTuple):
    """One training configuration; batch size, epochs and data are shared."""

    name: str
    sizes: tuple[int, ...]
    init: str
    cost: str
    learning_rate: float
    published: float | None  # the book's best test accuracy, a fraction
    label: str


TEXTBOOK = (
    Config("textbook", (784, 30, 10), "normal", "quadratic", 3.0, 0.9542,
           "[784, 30, 10], N(0,1) weights, quadratic cost, eta 3.0"),
    Config("textbook-100", (784, 100, 10), "normal", "quadratic", 3.0, 0.9659,
           "[784, 100, 10], N(0,1) weights, quadratic cost, eta 3.0"),
)
EXTREMES = (  # the book shows these curves without a single figure to compare with
    Config("eta-0.001", (784, 100, 10), "normal", "quadratic", 0.001, None,
           "[784, 100, 10], quadratic cost, eta 0.001 (too small)"),
    Config("eta-100", (784, 30, 10), "normal", "quadratic", 100.0, None,
           "[784, 30, 10], quadratic cost, eta 100 (too large)"),
)
REMEDIES = (
    Config("scaled-init", (784, 30, 10), "scaled", "quadratic", 3.0, None,
           "[784, 30, 10], N(0,1/n_in) weights, quadratic cost, eta 3.0"),
    Config("cross-entropy", (784, 30, 10), "normal", "cross-entropy", 0.5, None,
           "[784, 30, 10], N(0,1) weights, cross-entropy cost, eta 0.5"),
    Config("scaled-init-100", (784, 100, 10), "scaled", "quadratic", 3.0, None,
           "[784, 100, 10], N(0,1/n_in) weights, quadratic cost, eta 3.0"),
    Config("cross-entropy-100", (784, 100, 10), "normal", "cross-entropy", 0.5, None,
           "[784, 100, 10], N(0,1) weights, cross-entropy cost, eta 0.5"),
)
def output_neurons(params: Params, x: jax.Array, y: jax.Array) -> dict[str, jax.Array]:
    """Per output neuron ``j`` on a labelled set: what it does, and whether it can still learn.

    Returns a dict of ``(n_classes,)`` arrays:
      max_activation: the largest ``a_j`` over all examples (below 0.5: it never votes yes).
      mean_z_own: the mean weighted input ``z_j`` over the examples of digit ``j``.
      mean_sigma_prime_own: the mean ``sigma'(z_j) = a_j (1 - a_j)`` over the same examples,
        the factor that scales the quadratic cost's output error ``delta_j = (a_j - y_j) sigma'(z_j)``.
      predicted: how many examples are predicted as digit ``j``.
    """
    z = gd.forward(params, x)
    a = jax.nn.sigmoid(z)
    n_classes = z.shape[-1]
    own = jax.nn.one_hot(y, n_classes, dtype=z.dtype)  # (n, classes): example i is digit j
    per_class = jnp.sum(own, axis=0)
    return {
        "max_activation": jnp.max(a, axis=0),
        "mean_z_own": jnp.sum(own * z, axis=0) / per_class,
        "mean_sigma_prime_own": jnp.sum(own * a * (1 - a), axis=0) / per_class,
        "predicted": jnp.sum(jax.nn.one_hot(jnp.argmax(z, axis=-1), n_classes, dtype=jnp.int32), axis=0),
    }


def weighted_input_scale(params: Params, x: jax.Array) -> jax.Array:
    """The standard deviation of each layer's weighted inputs ``z`` over examples and neurons, ``(layers,)``."""
    scales, a = [], x
    for layer in params:
        z = a @ layer["w"] + layer["b"]
        scales.append(jnp.std(z))
        a = jax.nn.sigmoid(z)
    return jnp.stack(scales)


def to_lists(d: dict[str, jax.Array]) -> dict[str, list]:
    """JSON-ready copy of a dict of arrays."""
    return {k: np.asarray(v).tolist() for k, v in d.items()}


def dead_digits(max_activation) -> list[int]:
    """The output neurons that stay below ``DEAD_BELOW`` on every example."""
    return [int(j) for j in np.flatnonzero(np.asarray(max_activation) < DEAD_BELOW)]


def dead_since(max_activation_per_epoch: list[list[float]], digit: int) -> int:
    """The first epoch (0 = at initialisation) from which ``digit``'s neuron stayed below ``DEAD_BELOW``."""
    since = len(max_activation_per_epoch) - 1
    while since > 0 and max_activation_per_epoch[since - 1][digit] < DEAD_BELOW:
        since -= 1
    return since


def off_spans(max_activation_per_epoch: list[list[float]]) -> dict[str, list[list[int]]]:
    """Per output neuron, the runs of trained epochs (1-based, inclusive) after which it was off on every image.

    Epoch 0 is left out: a small initialisation (N(0, 1/n_in)) can start a neuron just below 0.5
    everywhere without saturating it, which is not a stall.
    """
    spans: dict[str, list[list[int]]] = {}
    for digit in range(len(max_activation_per_epoch[0])):
        for epoch in range(1, len(max_activation_per_epoch)):
            if max_activation_per_epoch[epoch][digit] >= DEAD_BELOW:
                continue
            runs = spans.setdefault(str(digit), [])
            if runs and runs[-1][1] == epoch - 1:
                runs[-1][1] = epoch
            else:
                runs.append([epoch, epoch])
    return spans


def stall_note(run: dict[str, Any], test_counts: np.ndarray) -> str:
    """One line per dead output neuron: which digit, since when, and how saturated it is."""
    notes = []
    for j in run["dead_digits"]:
        first, last = run["output_neurons_per_epoch"][0], run["output_neurons_per_epoch"][-1]
        after_one = run["output_neurons_per_epoch"][min(1, len(run["output_neurons_per_epoch"]) - 1)]
        notes.append(
            f"digit {j}: predicted {last['predicted'][j]}x for {test_counts[j]} test {j}s, max activation "
            f"{last['max_activation'][j]:.3f}, below {DEAD_BELOW} since epoch {run['dead_since_epoch'][str(j)]}; "
            f"mean z on its own digit {first['mean_z_own'][j]:.1f} (init) -> {after_one['mean_z_own'][j]:.1f} "
            f"(epoch 1) -> {last['mean_z_own'][j]:.1f} (end), sigma'(z) there {last['mean_sigma_prime_own'][j]:.1e}"
        )
    return "; ".join(notes)


def format_spans(spans: dict[str, list[list[int]]]) -> str:
    """``{"7": [[2, 10]]}`` as ``7: 2-10``."""
    parts = [f"{digit}: " + ", ".join(value_range(a, b) for a, b in runs) for digit, runs in spans.items()]
    return "; ".join(parts) or "-"


def value_range(low, high, fmt: str = "") -> str:
    """``low-high``, or one value when they are equal."""
    return format(low, fmt) if format(low, fmt) == format(high, fmt) else f"{low:{fmt}}-{high:{fmt}}"


def diagnosis(results: dict[str, Any]) -> list[str]:
    """Markdown lines that explain the stalls from the measurements: when, how saturated, what fixes them."""
    blocks = results["configs"]
    dead = [(name, r, j) for name, b in blocks.items() for r in b["runs"] for j in r["dead_digits"]]
    lines = ["## Reading the stalls", ""]
    if not dead:
        return lines + ["No run stalled: every output neuron fired (activation >= "
                        f"{DEAD_BELOW}) on some test image at the end of every run.", ""]
    since = [r["dead_since_epoch"][str(j)] for _, r, j in dead]
    z_end = [r["output_neurons_per_epoch"][-1]["mean_z_own"][j] for _, r, j in dead]
    sp_end = [r["output_neurons_per_epoch"][-1]["mean_sigma_prime_own"][j] for _, r, j in dead]
    predicted = [r["output_neurons_per_epoch"][-1]["predicted"][j] for _, r, j in dead]
    counts = [results["setup"]["test_digit_counts"][j] for _, _, j in dead]  # test images of the dead digits
    n_test = results["setup"]["n_test"]
    lines += [
        f"Every stalled run ({len(dead)} dead output neurons over {len({(n, r['seed']) for n, r, _ in dead})} runs) "
        "has the same cause: one output neuron is pushed so far negative on the images of its own digit "
        f"that it stays off. At the end its mean weighted input on its own digit is {max(z_end):.1f} or lower "
        f"(down to {min(z_end):.1f}), where sigma'(z) averages {min(sp_end):.0e} (lowest) to {max(sp_end):.0e}; it "
        f"went below {DEAD_BELOW} on every test image at initialisation in {since.count(0)} case(s), during "
        f"epoch 1 in {since.count(1)}, later in {sum(e > 1 for e in since)}, and never came back. "
        f"Its digit is then predicted {value_range(min(predicted), max(predicted))} times out of "
        f"{value_range(min(counts), max(counts))}, so the run loses about that digit's share of the test set "
        f"(~{value_range(min(counts) / n_test, max(counts) / n_test, '.0%')}).",
        "",
    ]
    comebacks = [(name, r["seed"], int(d), a, b) for name, blk in blocks.items() for r in blk["runs"]
                 for d, spans in r["off_epochs"].items() if d not in map(str, r["dead_digits"]) for a, b in spans]
    if comebacks:
        name, seed, digit, a, b = max(comebacks, key=lambda c: c[4] - c[3])
        lines += [
            f"A stall is not necessarily final: in {len({(c[0], c[1]) for c in comebacks})} run(s) an output "
            f"neuron was off on every test image for one or more epochs and then came back (the longest: "
            f"{name} seed {seed}, digit {digit}, off after epochs {a}-{b}); the tables list them. Being saturated, "
            "such a neuron learns slowly rather than not at all, so whether a run counts as stalled depends "
            "partly on the number of epochs.",
            "",
        ]
    for name, b in blocks.items():
        ill = [r["final_accuracy"] for r in b["runs"] if r["stalled"]]
        well = [r["final_accuracy"] for r in b["runs"] if not r["stalled"]]
        if ill and well:
            lines += [f"- {name}: healthy runs average {np.mean(well):.4f}, stalled ones {np.mean(ill):.4f}, "
                      f"a gap of {np.mean(well) - np.mean(ill):.4f}.", ""]
    scales = {name: np.mean([r["z_std_at_init"] for r in b["runs"]], axis=0) for name, b in blocks.items()}
    lines += [
        "Why it recovers slowly if at all: with the quadratic cost the output error is "
        "delta_j = (a_j - y_j) sigma'(z_j), so a neuron saturated off gets a gradient scaled by that tiny "
        "sigma'. The cross-entropy cost's delta_j = a_j - y_j has no sigma' factor. N(0, 1/n_in) weights "
        "start the weighted inputs much closer to 0, away from saturation; measured on the test set at "
        "initialisation (standard deviation of z, hidden / output layer, mean over seeds): "
        + "; ".join(f"{name} {sc[0]:.1f} / {sc[-1]:.1f}" for name, sc in scales.items()) + ".",
        "",
    ]
    for base in TEXTBOOK:  # each textbook network's stalled seeds, rerun with the remedies of its shape
        stalled_seeds = sorted({r["seed"] for name, r, _ in dead if name == base.name})
        same_seeds = [name for name in (base.name, *(c.name for c in REMEDIES if c.sizes == base.sizes))
                      if name in blocks]
        if not stalled_seeds or len(same_seeds) < 2:
            continue
        by_seed = {name: {r["seed"]: r for r in blocks[name]["runs"]} for name in same_seeds}
        lines += [
            f"The {base.name} run's stalled seeds under each remedy (final test accuracy; for the neuron that "
            f"died in the {base.name} run: its largest test activation after epoch 1 and at the end):",
            "",
            "| seed (digit) | " + " | ".join(same_seeds) + " |",
            "| :--- | " + " | ".join("---:" for _ in same_seeds) + " |",
        ]
        for seed in stalled_seeds:
            digits = by_seed[base.name][seed]["dead_digits"]
            cells = []
            for name in same_seeds:
                r = by_seed[name].get(seed)
                if r is None:  # the remedy ran fewer seeds
                    cells.append("-")
                    continue
                per_epoch = r["output_neurons_per_epoch"]
                acts = ", ".join(f"{per_epoch[min(1, len(per_epoch) - 1)]['max_activation'][j]:.2f} -> "
                                 f"{per_epoch[-1]['max_activation'][j]:.2f}" for j in digits)
                cells.append(f"{r['final_accuracy']:.4f} ({acts})")
            lines.append(f"| {seed} ({', '.join(map(str, digits))}) | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def probe(params: Params, x: jax.Array, y: jax.Array) -> dict[str, jax.Array]:
    """What the stall diagnosis measures after every epoch: the output neurons and the z scales."""
    return output_neurons(params, x, y) | {"z_std": weighted_input_scale(params, x)}


def run_records(configs: list[Config], seeds: list[int], group: common.GroupRun) -> dict[str, list[dict]]:
    """Per configuration, one record per seed from a group's measurements (members in order)."""
    records: dict[str, list[dict]] = {}
    i = 0
    for config, seed in itertools.product(configs, seeds):
        test = [float(group.initial["test_accuracy"][i])] + group.curves["test_accuracy"][:, i].tolist()
        neurons = [to_lists({k: v[i] for k, v in p.items() if k != "z_std"}) for p in group.probes]
        max_activation = [n["max_activation"] for n in neurons]
        dead = dead_digits(max_activation[-1])
        records.setdefault(config.name, []).append({
            "seed": seed,
            "final_accuracy": test[-1],
            "peak_accuracy": max(test[1:]),
            "peak_epoch": int(np.argmax(test[1:])) + 1,
            "peak_validation_accuracy": float(group.curves["validation_accuracy"][:, i].max()),
            "stalled": bool(dead),
            "dead_digits": dead,
            "dead_since_epoch": {str(j): dead_since(max_activation, j) for j in dead},
            "off_epochs": off_spans(max_activation),  # digit -> [[first, last], ...], stalls and recoveries alike
            "recovered": any(d not in map(str, dead) for d in off_spans(max_activation)),
            "test_accuracy_per_epoch": test,  # index 0 is the untrained network
            "validation_accuracy_per_epoch": group.curves["validation_accuracy"][:, i].tolist(),
            "train_accuracy_per_epoch": group.curves["train_accuracy"][:, i].tolist(),
            "train_cost_per_epoch": group.curves["train_cost"][:, i].tolist(),
            "output_neurons_per_epoch": neurons,
            "z_std_at_init": np.asarray(group.probes[0]["z_std"][i]).tolist(),  # per layer: hidden, output
        })
        i += 1
    return records


def summarise(config: Config, runs: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    """Peak and final test accuracy over a configuration's seeds, and its stall count."""
    healthy = [r["peak_accuracy"] for r in runs if not r["stalled"]]
    return {
        "peak": common.describe([r["peak_accuracy"] for r in runs], config.published),
        "final": common.describe([r["final_accuracy"] for r in runs]),
        "peak_validation": common.describe([r["peak_validation_accuracy"] for r in runs]),
        "seeds": len(runs),
        "stalled": sum(r["stalled"] for r in runs),
        "recovered": sum(r["recovered"] for r in runs),
        "peak_not_stalled": float(np.mean(healthy)) if healthy else None,
        "group_seconds": seconds,
    }


def markdown(results: dict[str, Any]) -> str:
    """The results as markdown: ours beside the book, one table per configuration, the stalls explained."""
    meta = results["setup"]
    lines = [
        "# Experiment 1: chapter 1 over seeds",
        "",
        f"Sigmoid networks, quadratic cost unless named, mini-batches of {meta['batch_size']}, {meta['epochs']} "
        "epochs; accuracy on the test digits after each epoch, *peak* = the best epoch (the book's figure). "
        f"A run is *stalled* when one output neuron stays below {DEAD_BELOW} on every test image at the end "
        "(it never votes for its digit).",
        "",
        *common.setup_lines(meta),
        "| configuration | published peak | ours: peak test accuracy " + common.STATS_HEADER[2:]
        + " final test accuracy | peak validation accuracy | stalled seeds |",
        "| :--- | ---: " + common.STATS_RULE + " ---: | ---: | ---: |",
    ]
    for name, block in results["configs"].items():
        s = block["summary"]
        lines.append(f"| {name} | {common.pct(block['config']['published'])} | {common.stats_cells(s['peak'])} | "
                     f"{common.pct(s['final']['mean'])} +- {100 * s['final']['std']:.2f} | "
                     f"{common.pct(s['peak_validation']['mean'])} | {s['stalled']} / {s['seeds']} |")
    lines.append("")
    for name, block in results["configs"].items():
        p = block["config"]["published"]
        if p is not None:
            gap = block["summary"]["peak"]["gap_points"]
            lines.append(f"- {name}: mean peak {common.pct(block['summary']['peak']['mean'])} against the published "
                         f"{common.pct(p)}, {gap:+.2f} points ({'within' if abs(gap) <= 0.5 else 'outside'} 0.5).")
    lines.append("")
    for name, block in results["configs"].items():
        s = block["summary"]
        lines += [
            f"## {name}: {block['config']['label']}",
            "",
            "| seed | peak test accuracy (epoch) | final test accuracy | stalled | dead output neuron (digit) "
            "| output neuron off after epochs (digit: epochs) |",
            "| ---: | ---: | ---: | :---: | :--- | :--- |",
        ]
        for r in block["runs"]:
            dead = ", ".join(str(j) for j in r["dead_digits"]) or "-"
            lines.append(f"| {r['seed']} | {common.pct(r['peak_accuracy'])} ({r['peak_epoch']}) | "
                         f"{common.pct(r['final_accuracy'])} | {'yes' if r['stalled'] else 'no'} | {dead} | "
                         f"{format_spans(r['off_epochs'])} |")
        healthy = common.pct(s["peak_not_stalled"])
        lines += [
            "",
            f"Stalled {s['stalled']} of {s['seeds']} seeds (mean peak of the others {healthy}); {s['recovered']} "
            "seeds had an output neuron off for a while that came back.",
            "",
        ]
        stalled = [r for r in block["runs"] if r["stalled"]]
        if stalled:
            lines += ["Stalled seeds:", ""]
            lines += [f"- seed {r['seed']}: {stall_note(r, np.array(meta['test_digit_counts']))}" for r in stalled]
            lines.append("")
    lines += diagnosis(results)
    return "\n".join(lines)


def plot(results: dict[str, Any], path: str) -> None:
    """Test accuracy per epoch, one panel per configuration, one line per seed (stalled ones in red)."""
    plt = common.pyplot()
    order = [c.name for c in TEXTBOOK + REMEDIES + EXTREMES]  # the book's networks first, then the remedies
    blocks = sorted(results["configs"].items(), key=lambda item: order.index(item[0]) if item[0] in order else 99)
    columns = min(4, len(blocks))
    rows = -(-len(blocks) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.6 * columns, 3.9 * rows), squeeze=False,
                             constrained_layout=True)
    for ax in axes.ravel()[len(blocks):]:
        ax.set_visible(False)
    for ax, (name, block) in zip(axes.ravel(), blocks):
        stalled = sum(r["stalled"] for r in block["runs"])
        recovered = sum(bool(r["recovered"]) and not r["stalled"] for r in block["runs"])
        labelled = set()  # one legend entry per kind of line: the seeds are listed in results.md
        for r in block["runs"]:
            acc = r["test_accuracy_per_epoch"]
            if r["stalled"]:
                kind, style = f"stalled ({stalled} seeds)", {"color": "C3", "lw": 1.3, "zorder": 3}
            elif r["recovered"]:
                kind, style = f"off for a while ({recovered} seeds)", {"color": "C1", "lw": 1.0, "zorder": 2}
            else:
                kind, style = None, {"color": "C0", "lw": 0.8, "alpha": 0.6}
            if kind is not None and kind not in labelled:
                style["label"] = kind
                labelled.add(kind)
            ax.plot(range(len(acc)), [100 * a for a in acc], **style)
        published = block["config"]["published"]
        if published is not None:
            ax.axhline(100 * published, color="k", ls="--", lw=0.8, label=f"published peak {100 * published:.2f}%")
        trained = [100 * a for r in block["runs"] for a in r["test_accuracy_per_epoch"][1:]]  # after epoch 1 on
        if trained:
            ax.set_ylim(max(0.0, min(trained) - 1), max(trained + [100 * (published or 0)]) + 0.5)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="lower right")
        s = block["summary"]
        ax.set(title=f"{name}: peak {100 * s['peak']['mean']:.2f}% mean, {s['stalled']}/{s['seeds']} stalled",
               xlabel="epoch", ylabel="test accuracy (%)")
        ax.title.set_fontsize(9)
        ax.grid(alpha=0.3)
    fig.suptitle("Chapter 1 on MNIST: test accuracy per seed (red: an output neuron off at the end, orange: off "
                 f"for a while; off = below {DEAD_BELOW} on every test image)", fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = common.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_common_arguments(parser)
    parser.add_argument("--seeds", type=int, help="seeds 0..N-1 for the textbook configurations (default 10; "
                        "--quick: 2)")
    parser.add_argument("--extreme-seeds", type=int, help="seeds for eta 0.001 and eta 100 (default 3; --quick: 1)")
    parser.add_argument("--epochs", type=int, help="epochs per run (default 30; --quick: 2)")
    parser.add_argument("--remedies", action="store_true", help="also run the seeds of both networks with N(0,1/n_in) "
                        "weights and with the cross-entropy cost")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these configurations: "
                        + ", ".join(c.name for c in TEXTBOOK + EXTREMES + REMEDIES))
    args = common.parse(parser, argv, "chapter1")
    args.seeds = (2 if args.quick else 10) if args.seeds is None else args.seeds
    args.extreme_seeds = (1 if args.quick else 3) if args.extreme_seeds is None else args.extreme_seeds
    args.epochs = (2 if args.quick else 30) if args.epochs is None else args.epochs
    names = {c.name for c in TEXTBOOK + EXTREMES + REMEDIES}
    for value, flag in ((args.seeds, "--seeds"), (args.extreme_seeds, "--extreme-seeds"), (args.epochs, "--epochs")):
        if value < 1:
            parser.error(f"{flag} must be at least 1, got {value}")
    for name in args.only or []:
        if name not in names:
            parser.error(f"--only {name!r} is not a configuration; choose from {', '.join(sorted(names))}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    data = common.load_data(args.idx_dir)
    train = data.train.take(5000) if args.quick else data.train
    configs = [c for c in TEXTBOOK + EXTREMES + (REMEDIES if args.remedies or args.only else ())
               if not args.only or c.name in args.only]
    setup = common.setup_record(
        data, batch_size=BATCH_SIZE, epochs=args.epochs, seeds=args.seeds, extreme_seeds=args.extreme_seeds,
        quick=args.quick, n_train=train.size, dead_below=DEAD_BELOW,
        test_digit_counts=np.bincount(np.asarray(data.test.y), minlength=10).tolist())
    results: dict[str, Any] = {"setup": setup, "configs": {}}
    # Configurations of one shape, initialisation and cost differ only in seeds and learning rates:
    # they train together as one program.
    shape = lambda c: (c.sizes, c.init, c.cost)  # noqa: E731
    for (sizes, init, cost), group in itertools.groupby(sorted(configs, key=shape), key=shape):
        group = list(group)
        seeds_of = {c.name: list(range(args.extreme_seeds if c in EXTREMES else args.seeds)) for c in group}
        members = [common.Member(s, c.learning_rate) for c in group for s in seeds_of[c.name]]
        print(f"{', '.join(c.name for c in group)}: {len(members)} networks {list(sizes)} as one program", flush=True)
        run = common.train_models(sizes, members, cost=gd.COSTS[cost], init=init, batch_size=BATCH_SIZE,
                                  epochs=args.epochs, train=train,
                                  evals={"test": data.test, "validation": data.validation}, probe=probe)
        i = 0
        for c in group:
            n = len(seeds_of[c.name])
            sub = common.GroupRun({k: v[:, i:i + n] for k, v in run.curves.items()},
                                  {k: v[i:i + n] for k, v in run.initial.items()},
                                  [jax.tree.map(lambda a, i=i, n=n: np.asarray(a)[i:i + n], p) for p in run.probes],
                                  None, [], run.seconds, run.compile_seconds)
            runs = run_records([c], seeds_of[c.name], sub)[c.name]
            results["configs"][c.name] = {"config": c._asdict(), "runs": runs,
                                          "summary": summarise(c, runs, run.seconds)}
            s = results["configs"][c.name]["summary"]
            print(f"{c.name}: peak {common.pct(s['peak']['mean'])} +- {100 * s['peak']['std']:.2f} "
                  f"(min {common.pct(s['peak']['min'])}, max {common.pct(s['peak']['max'])}), "
                  f"stalled {s['stalled']}/{s['seeds']}", flush=True)
            i += n
        # Written after each group, so that an interrupted run keeps the groups it finished.
        common.write_results(args.out, results, markdown(results), {"accuracy.png": lambda p: plot(results, p)})


if __name__ == "__main__":
    sys.exit(main())
