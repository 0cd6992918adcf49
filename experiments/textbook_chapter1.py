"""The textbook's chapter 1 run over many seeds: how often it stalls, why, and what chapter 3 changes.

Nielsen's "Neural Networks and Deep Learning", chapter 1, trains a [784, 30, 10] sigmoid network
with the quadratic cost, eta = 3.0, mini-batches of 10, for 30 epochs. Here it runs on the
embedded real-MNIST sample (5,000 training digits, the official 10,000 test digits) for seeds
0..N-1, each seed giving its keys exactly as ``gd-jax train --seed`` does::

    init_key, shuffle_key = jax.random.split(jax.random.key(seed))

Some seeds stall about 8-10 points below the others. After every epoch the script measures
each output neuron on the test set (its largest activation, its mean weighted input ``z`` on
the digits it should recognise), so that a stall can be traced to its cause: a run counts as
*stalled* when one output neuron stays below 0.5 on every test image, i.e. it never says
"this is my digit", so that digit is (almost) never predicted. With the quadratic cost the
output error is ``delta = (a - y) sigma'(z)``, which vanishes when that neuron is saturated
off, so nothing pulls it back. The same seeds are then trained with the remedies of chapter 3:
weights ~ N(0, 1/n_in) (``--init scaled``) and the cross-entropy cost (whose
``delta = a - y`` has no ``sigma'`` factor).

Writes ``results.md`` (a table per configuration and a diagnosis), ``results.json`` (all
curves and measurements) and ``accuracy.png`` (test accuracy per epoch, one line per seed)
into the run folder.

Run: ``python experiments/textbook_chapter1.py [--seeds 20] [--epochs 30] [--configs ...] [--out DIR]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import gd_jax as gd

SIZES = [784, 30, 10]
BATCH_SIZE = 10
Params = list[dict[str, jax.Array]]  # gd_jax's network: one {"w", "b"} dict a layer
DEAD_BELOW = 0.5  # an output neuron whose activation stays below this on every test image never votes yes
RESULT_FILES = ("results.md", "results.json", "accuracy.png")


class Config(NamedTuple):
    """One training configuration; everything else (sizes, batch, epochs, seeds, data) is shared."""

    name: str
    init: str
    cost: str
    learning_rate: float
    label: str


CONFIGS = {
    c.name: c
    for c in (
        Config("textbook", "normal", "quadratic", 3.0, "chapter 1: N(0,1) weights, quadratic cost, eta 3.0"),
        Config("scaled-init", "scaled", "quadratic", 3.0, "N(0,1/n_in) weights, quadratic cost, eta 3.0"),
        Config("cross-entropy", "normal", "cross-entropy", 0.5, "N(0,1) weights, cross-entropy cost, eta 0.5"),
        Config("scaled+cross-entropy", "scaled", "cross-entropy", 0.5,
               "N(0,1/n_in) weights, cross-entropy cost, eta 0.5 (network2.py)"),
    )
}
DEFAULT_CONFIGS = ("textbook", "scaled-init", "cross-entropy")


def seed_keys(seed: int) -> tuple[jax.Array, jax.Array]:
    """The (init, shuffle) keys of a seed, derived exactly as the CLI derives them."""
    init_key, shuffle_key = jax.random.split(jax.random.key(seed))
    return init_key, shuffle_key


@jax.jit
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


@jax.jit
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


def run_seed(config: Config, seed: int, train: gd.Dataset, test: gd.Dataset, epochs: int) -> dict[str, Any]:
    """Trains one seed under one configuration and measures the output neurons after every epoch."""
    init_key, shuffle_key = seed_keys(seed)
    params = gd.init_mlp(init_key, SIZES, config.init)
    cost = gd.COSTS[config.cost]
    test_x, test_y = jnp.asarray(test.x), jnp.asarray(test.y)
    neurons = [to_lists(output_neurons(params, test_x, test_y))]  # epoch 0: at initialisation
    initial_accuracy = gd.accuracy(params, test)
    z_scale = np.asarray(weighted_input_scale(params, test_x)).tolist()

    def on_epoch_end(end: gd.EpochEnd) -> None:
        neurons.append(to_lists(output_neurons(end.state.params, test_x, test_y)))

    start = time.perf_counter()
    params, history = gd.fit(params, train, eval_data=test, epochs=epochs, batch_size=BATCH_SIZE,
                             optimizer=gd.sgd(config.learning_rate), cost=cost, key=shuffle_key,
                             on_epoch_end=on_epoch_end)
    seconds = time.perf_counter() - start
    accuracy = [initial_accuracy] + history["eval_accuracy"]
    max_activation = [n["max_activation"] for n in neurons]
    dead = dead_digits(max_activation[-1])
    return {
        "seed": seed,
        "final_accuracy": accuracy[-1],
        "best_accuracy": max(accuracy[1:]) if epochs else accuracy[0],
        "stalled": bool(dead),
        "dead_digits": dead,
        "dead_since_epoch": {str(j): dead_since(max_activation, j) for j in dead},
        "off_epochs": off_spans(max_activation),  # digit -> [[first, last], ...], stalls and recoveries alike
        "recovered": any(str(j) not in map(str, dead) for j in off_spans(max_activation)),
        "test_accuracy_per_epoch": accuracy,  # index 0 is the untrained network
        "train_cost_per_epoch": history["train_cost"],
        "output_neurons_per_epoch": neurons,
        "z_std_at_init": z_scale,  # per layer: hidden, output
        "seconds": seconds,
    }


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean/min/max of the final accuracy, and the stall count, over a configuration's seeds."""
    final = np.array([r["final_accuracy"] for r in runs])
    healthy = np.array([r["final_accuracy"] for r in runs if not r["stalled"]])
    return {
        "seeds": len(runs),
        "mean": float(final.mean()), "min": float(final.min()), "max": float(final.max()),
        "stalled": sum(r["stalled"] for r in runs),
        "recovered": sum(r["recovered"] for r in runs),
        "mean_not_stalled": float(healthy.mean()) if healthy.size else None,
        "seconds": sum(r["seconds"] for r in runs),
    }


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


def markdown(results: dict[str, Any]) -> str:
    """The results as markdown: setup, one table per configuration, the stalls explained."""
    meta = results["setup"]
    test_counts = np.array(meta["test_digit_counts"])
    lines = [
        "# Textbook chapter 1 over seeds",
        "",
        f"[784, 30, 10] sigmoid network, mini-batches of {meta['batch_size']}, {meta['epochs']} epochs, "
        f"trained on the embedded real-MNIST sample ({meta['n_train']:,} training digits) and tested on the "
        f"official {meta['n_test']:,} test digits; seeds 0-{meta['seeds'] - 1}, keys derived as `gd-jax train "
        f"--seed` derives them. A run is *stalled* when one output neuron stays below {DEAD_BELOW} on every test "
        f"image (it never votes for its digit). jax {meta['jax']} on {meta['device']}.",
        "",
        "| configuration | mean final test accuracy | min | max | stalled seeds |",
        "| :--- | ---: | ---: | ---: | ---: |",
    ]
    for name, block in results["configs"].items():
        s = block["summary"]
        lines.append(f"| {name} | {s['mean']:.4f} | {s['min']:.4f} | {s['max']:.4f} | {s['stalled']} / {s['seeds']} |")
    lines.append("")
    for name, block in results["configs"].items():
        s = block["summary"]
        lines += [
            f"## {name}: {block['config']['label']}",
            "",
            "| seed | final test accuracy | best test accuracy | stalled | dead output neuron (digit) "
            "| output neuron off after epochs (digit: epochs) |",
            "| ---: | ---: | ---: | :---: | :--- | :--- |",
        ]
        for r in block["runs"]:
            dead = ", ".join(str(j) for j in r["dead_digits"]) or "-"
            lines.append(f"| {r['seed']} | {r['final_accuracy']:.4f} | {r['best_accuracy']:.4f} | "
                         f"{'yes' if r['stalled'] else 'no'} | {dead} | {format_spans(r['off_epochs'])} |")
        healthy = f"{s['mean_not_stalled']:.4f}" if s["mean_not_stalled"] is not None else "n/a"
        lines += [
            "",
            f"**Summary:** final test accuracy mean {s['mean']:.4f}, min {s['min']:.4f}, max {s['max']:.4f}; "
            f"stalled {s['stalled']} of {s['seeds']} seeds (mean of the others {healthy}); "
            f"{s['recovered']} seeds had an output neuron off for a while that came back; "
            f"{s['seconds']:.0f} s of training.",
            "",
        ]
        stalled = [r for r in block["runs"] if r["stalled"]]
        if stalled:
            lines += ["Stalled seeds:", ""]
            lines += [f"- seed {r['seed']}: {stall_note(r, test_counts)}" for r in stalled]
            lines.append("")
    lines += diagnosis(results)
    return "\n".join(lines)


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
    stalled_seeds = sorted({r["seed"] for name, r, _ in dead if name == "textbook"})
    if "textbook" in blocks and stalled_seeds and len(blocks) > 1:
        by_seed = {name: {r["seed"]: r for r in b["runs"]} for name, b in blocks.items()}
        lines += [
            "The textbook's stalled seeds under each configuration (final test accuracy; for the neuron that "
            "died in the textbook run: its largest test activation after epoch 1 and at the end):",
            "",
            "| seed (digit) | " + " | ".join(blocks) + " |",
            "| :--- | " + " | ".join("---:" for _ in blocks) + " |",
        ]
        for seed in stalled_seeds:
            digits = by_seed["textbook"][seed]["dead_digits"]
            cells = []
            for name in blocks:
                r = by_seed[name][seed]
                per_epoch = r["output_neurons_per_epoch"]
                acts = ", ".join(f"{per_epoch[min(1, len(per_epoch) - 1)]['max_activation'][j]:.2f} -> "
                                 f"{per_epoch[-1]['max_activation'][j]:.2f}" for j in digits)
                cells.append(f"{r['final_accuracy']:.4f} ({acts})")
            lines.append(f"| {seed} ({', '.join(map(str, digits))}) | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def plot(results: dict[str, Any], path: str) -> None:
    """Test accuracy per epoch, one panel per configuration, one line per seed (stalled ones in red)."""
    import matplotlib

    matplotlib.use("Agg")  # files only: never needs a display
    import matplotlib.pyplot as plt

    blocks = results["configs"]
    fig, axes = plt.subplots(1, len(blocks), figsize=(5 * len(blocks), 4.2), sharey=True, squeeze=False,
                             constrained_layout=True)
    lowest = min(min(r["test_accuracy_per_epoch"][1:]) for b in blocks.values() for r in b["runs"])
    for ax, (name, block) in zip(axes[0], blocks.items()):
        for r in block["runs"]:
            acc = r["test_accuracy_per_epoch"][1:]  # epoch 0 (about 10%) would squash the interesting range
            if r["stalled"]:
                label = f"seed {r['seed']}: digit {', '.join(map(str, r['dead_digits']))} off at the end"
                style = {"color": "C3", "lw": 1.3, "zorder": 3, "label": label}
            elif r["recovered"]:
                label = f"seed {r['seed']}: off, came back ({format_spans(r['off_epochs'])})"
                style = {"color": "C1", "lw": 1.0, "zorder": 2, "label": label}
            else:
                style = {"color": "C0", "lw": 0.8, "alpha": 0.5}
            ax.plot(range(1, len(acc) + 1), [100 * a for a in acc], **style)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6, loc="lower right")
        s = block["summary"]
        ax.set(title=f"{name}: {s['stalled']}/{s['seeds']} stalled, mean {100 * s['mean']:.1f}%", xlabel="epoch")
        ax.grid(alpha=0.3)
    axes[0][0].set(ylabel="test accuracy (%)", ylim=(max(0.0, 100 * lowest - 2), None))
    fig.suptitle("Chapter 1 network on the MNIST sample: test accuracy per seed (red: an output neuron off at the "
                 f"end, orange: off for a while; blue: neither; off = below {DEAD_BELOW} on every test image)")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def prepare_out(out: str | None, overwrite: bool) -> str:
    """The run folder; refuses a non-empty existing one unless ``overwrite``."""
    if out is None:
        out = os.path.join("runs", "textbook_chapter1", time.strftime("%Y%m%d-%H%M%S"))
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"--out {out!r} is a file, not a folder; choose another --out")
    if os.path.isdir(out) and os.listdir(out) and not overwrite:
        raise ValueError(
            f"run folder {out!r} already exists and is not empty; pass --overwrite or choose another --out")
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20, help="train seeds 0..N-1 (default 20)")
    parser.add_argument("--epochs", type=int, default=30, help="epochs per run (default 30)")
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(DEFAULT_CONFIGS),
                        help=f"configurations to run (default: {' '.join(DEFAULT_CONFIGS)})")
    parser.add_argument("--out", help="run folder (default runs/textbook_chapter1/<date-time>)")
    parser.add_argument("--overwrite", action="store_true", help="replace the results of an existing run folder")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error(f"--seeds must be at least 1, got {args.seeds}")
    if args.epochs < 1:
        parser.error(f"--epochs must be at least 1, got {args.epochs}; the textbook uses 30")
    try:
        args.out = prepare_out(args.out, args.overwrite)
    except ValueError as e:
        parser.error(str(e))
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    train, test = gd.load_mnist("sample")
    setup = {
        "sizes": SIZES, "batch_size": BATCH_SIZE, "epochs": args.epochs, "seeds": args.seeds,
        "dead_below": DEAD_BELOW, "n_train": train.size, "n_test": test.size,
        "test_digit_counts": np.bincount(np.asarray(test.y), minlength=SIZES[-1]).tolist(),
        "jax": jax.__version__, "gd_jax": gd.__version__, "device": str(jax.devices()[0]),
        "cpu_count": os.cpu_count(), "python": platform.python_version(),
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
    }
    results: dict[str, Any] = {"setup": setup, "configs": {}}
    for name in args.configs:
        config = CONFIGS[name]
        runs = []
        for seed in range(args.seeds):
            runs.append(run_seed(config, seed, train, test, args.epochs))
            r = runs[-1]
            dead = f", output neuron for digit {r['dead_digits']} dead" if r["stalled"] else ""
            print(f"{name:>20s} seed {seed:3d}: test accuracy {r['final_accuracy']:.4f} "
                  f"(best {r['best_accuracy']:.4f}){dead}  [{r['seconds']:.1f} s]", flush=True)
        results["configs"][name] = {"config": config._asdict(), "runs": runs, "summary": summarise(runs)}

    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
        f.write("\n")
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(markdown(results))
    plot(results, os.path.join(args.out, RESULT_FILES[2]))
    for name, block in results["configs"].items():
        s = block["summary"]
        print(f"{name}: mean {s['mean']:.4f}, min {s['min']:.4f}, max {s['max']:.4f}, "
              f"stalled {s['stalled']}/{s['seeds']}")
    print(f"results in {args.out}")


if __name__ == "__main__":
    main()
