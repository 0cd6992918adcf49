"""Experiment 5: the cost landscape, and gradient descent drawn on it.

Three landscapes, each with gradient-descent trajectories (``gd.sgd``, the library's own rule)
for several learning rates:

1. **A quadratic bowl** ``C(w) = 1/2 w^T A w`` with ``A = diag(L, mu)``. Along eigenvector ``i``
   gradient descent multiplies the coordinate by ``1 - eta lambda_i`` each step, so it converges
   exactly when ``eta < 2/L``: below, at (an oscillation that never decays) and above ``2/L`` (it
   diverges). The measured coordinates are checked against that closed form.
2. **The Rosenbrock valley** ``(1 - x)^2 + 100 (y - x^2)^2``: a curved, narrow valley where plain
   gradient descent crawls along the floor, while momentum (the textbook's ball rolling into the
   valley) picks up speed; too large a step (``eta > 2/L`` with ``L`` the valley's steepest
   curvature, about 1002 at the minimum) throws it out.
3. **A 2-D slice of the real network's cost** around a trained minimum ``theta*`` of the
   textbook network: ``C(theta* + a d1 + b d2)`` for two random Gaussian directions, each
   normalised per layer to the norm of that layer's trained parameters (so that the slice has the
   same relative scale in every layer). Gradient descent on ``(a, b)`` from a corner, for learning
   rates measured against the slice's own curvature ``L`` (the largest eigenvalue of its 2x2
   Hessian at the centre): the ball rolls into the valley for ``eta < 2/L`` and is thrown about
   above it.

Writes ``results.md``, ``results.json``, ``bowl.png``, ``rosenbrock.png`` and ``network_slice.png``.

Run: ``python experiments/landscape.py --idx-dir ../shared/data/mnist-full``
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

import common
import jax
import jax.numpy as jnp
import numpy as np

import gd_jax as gd

BOWL = (1.0, 0.2)  # A = diag(L, mu)
BOWL_START = (1.5, 2.0)
BOWL_RATES = (0.5, 1.0, 1.8, 2.0, 2.05)  # in units where L = 1: below, at, above 2/L = 2
ROSENBROCK_START = (-1.2, 1.0)
SEED = 0
SIZES = [784, 30, 10]
SLICE_RATES = (0.25, 1.0, 1.9, 2.2)  # multiples of 1/L of the slice


def descend(cost: Callable[[jax.Array], jax.Array], start, *, learning_rate: float, steps: int,
            momentum: float | None = None) -> np.ndarray:
    """The trajectory ``(steps + 1, dim)`` of ``gd.sgd`` on ``cost`` from ``start``, one compiled scan."""
    optimizer = gd.sgd(learning_rate, momentum=momentum)

    def step(carry, _):
        w, state = carry
        updates, state = optimizer.update(jax.grad(cost)(w), state, w)
        w = gd.apply_updates(w, updates)
        return (w, state), w

    w0 = jnp.asarray(start, dtype=jnp.float32)
    _, path = jax.jit(lambda w: jax.lax.scan(step, (w, optimizer.init(w)), None, length=steps))(w0)
    return np.concatenate([np.asarray(w0)[None], np.asarray(path)])


def bowl(steps: int) -> dict[str, Any]:
    """Gradient descent on the quadratic bowl, against the closed form ``w_k = (1 - eta lambda)^k w_0``."""
    a = jnp.asarray(BOWL, dtype=jnp.float32)
    cost = lambda w: 0.5 * jnp.sum(a * w**2)  # noqa: E731
    runs = []
    for eta in BOWL_RATES:
        path = descend(cost, BOWL_START, learning_rate=eta, steps=steps)
        k = np.arange(steps + 1)[:, None]
        closed = np.asarray(BOWL_START) * (1 - eta * np.asarray(BOWL)) ** k
        runs.append({"learning_rate": eta, "eta_times_L": eta * BOWL[0], "path": path,
                     "factor_per_step": (1 - eta * np.asarray(BOWL)).tolist(),
                     "final_distance": float(np.linalg.norm(path[-1])),
                     "closed_form_final_distance": float(np.linalg.norm(closed[-1])),
                     "max_error_vs_closed_form": float(np.max(np.abs(path - closed) / np.maximum(1, np.abs(closed))))})
    return {"A_diagonal": BOWL, "L": BOWL[0], "two_over_L": 2 / BOWL[0], "start": BOWL_START, "steps": steps,
            "runs": runs}


def rosenbrock_cost(w: jax.Array) -> jax.Array:
    return (1 - w[0]) ** 2 + 100 * (w[1] - w[0] ** 2) ** 2


def rosenbrock(steps: int) -> dict[str, Any]:
    """Plain gradient descent and momentum in the Rosenbrock valley."""
    curvature = float(jnp.max(jnp.linalg.eigvalsh(jax.hessian(rosenbrock_cost)(jnp.ones(2)))))
    settings = [(0.0005, None), (0.001, None), (0.001, 0.9), (2.1 / curvature, None)]
    runs = []
    for eta, momentum in settings:
        path = descend(rosenbrock_cost, ROSENBROCK_START, learning_rate=eta, steps=steps, momentum=momentum)
        stride = max(1, steps // 1000)  # results.json keeps every stride-th point (the last one too)
        finite = np.all(np.isfinite(path), axis=1)
        last = path[finite][-1]
        runs.append({"learning_rate": eta, "momentum": momentum, "path": np.concatenate([path[:-1:stride], path[-1:]]),
                     "path_stride": stride, "final_point": last.tolist(),
                     "final_cost": float(rosenbrock_cost(jnp.asarray(last))),
                     "final_distance_to_minimum": float(np.linalg.norm(last - 1)),
                     "diverged": bool(not finite.all() or np.linalg.norm(last) > 1e3),
                     "steps_to_within_0.1": int(np.argmax(np.linalg.norm(path - 1, axis=1) < 0.1))
                     if np.any(np.linalg.norm(path - 1, axis=1) < 0.1) else None})
    return {"start": ROSENBROCK_START, "steps": steps, "L_at_minimum": curvature, "runs": runs}


def per_layer_direction(key: jax.Array, params) -> list[dict[str, jax.Array]]:
    """A Gaussian direction with each layer (w and b together) scaled to that layer's norm."""
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    raw = jax.tree.unflatten(tree, [jax.random.normal(k, p.shape, p.dtype) for k, p in zip(keys, leaves)])
    out = []
    for layer, d in zip(params, raw):
        norm_p = jnp.sqrt(sum(jnp.sum(v**2) for v in layer.values()))
        norm_d = jnp.sqrt(sum(jnp.sum(v**2) for v in d.values()))
        out.append({k: v * norm_p / norm_d for k, v in d.items()})
    return out


def network_slice(data: common.Data, *, epochs: int, grid: int, radius: float, steps: int,
                  rows: int) -> dict[str, Any]:
    """Trains the textbook network, then draws its cost on a 2-D slice around the result."""
    init_key, shuffle_key = gd.seed_keys(SEED)
    params, history = gd.fit(gd.init_mlp(init_key, SIZES), data.train, eval_data=data.test, epochs=epochs,
                             batch_size=10, optimizer=gd.sgd(3.0), cost=gd.quadratic_cost, key=shuffle_key)
    x, y = jnp.asarray(data.train.x[:rows]), jax.nn.one_hot(jnp.asarray(data.train.y[:rows]), 10)
    d1 = per_layer_direction(jax.random.key(101), params)
    d2 = per_layer_direction(jax.random.key(102), params)

    def sliced(ab: jax.Array) -> jax.Array:
        moved = jax.tree.map(lambda p, u, v: p + ab[0] * u + ab[1] * v, params, d1, d2)
        return gd.quadratic_cost(moved, x, y)

    axis = np.linspace(-radius, radius, grid, dtype=np.float32)
    aa, bb = np.meshgrid(axis, axis)
    points = jnp.asarray(np.stack([aa.ravel(), bb.ravel()], axis=1))
    surface = np.asarray(jax.jit(jax.vmap(sliced))(points))
    hessian = np.asarray(jax.hessian(sliced)(jnp.zeros(2)))
    curvature = float(np.max(np.linalg.eigvalsh(hessian)))
    start = (0.8 * radius, 0.8 * radius)
    runs = []
    for multiple in SLICE_RATES:
        eta = multiple / curvature
        path = descend(sliced, start, learning_rate=eta, steps=steps)
        costs = np.asarray(jax.jit(jax.vmap(sliced))(jnp.asarray(path)))
        runs.append({"eta_times_L": multiple, "learning_rate": eta, "path": path, "cost": costs,
                     "final_cost": float(costs[-1]), "final_point": path[-1].tolist()})
    return {"seed": SEED, "epochs": epochs, "rows": rows, "test_accuracy": history["eval_accuracy"][-1],
            "center_cost": float(sliced(jnp.zeros(2))), "radius": radius, "grid": axis, "surface": surface.reshape(
                grid, grid), "hessian": hessian, "L": curvature, "two_over_L": 2 / curvature, "start": start,
            "runs": runs}


def plot_bowl(r: dict[str, Any], path: str) -> None:
    plt = common.pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 5), constrained_layout=True)
    u = np.linspace(-2.6, 2.6, 200)
    uu, vv = np.meshgrid(u, u)
    ax.contour(uu, vv, 0.5 * (r["A_diagonal"][0] * uu**2 + r["A_diagonal"][1] * vv**2), levels=20, cmap="Greys")
    for i, run in enumerate(r["runs"]):
        p = np.clip(run["path"][:40], -2.6, 2.6)
        ax.plot(p[:, 0], p[:, 1], "o-", ms=2.5, lw=0.9, color=f"C{i}",
                label=f"eta = {run['learning_rate']} ({run['eta_times_L']:.2f}/L): |w| {run['final_distance']:.2g} "
                      f"after {r['steps']}")
    ax.set(xlabel="w1 (curvature L = 1)", ylabel="w2 (curvature 0.2)", title="Quadratic bowl: converges iff eta < 2/L",
           xlim=(-2.6, 2.6), ylim=(-2.6, 2.6))
    ax.legend(fontsize=7, loc="lower left")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_rosenbrock(r: dict[str, Any], path: str) -> None:
    plt = common.pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 5), constrained_layout=True)
    u, v = np.linspace(-2, 2, 300), np.linspace(-1, 3, 300)
    uu, vv = np.meshgrid(u, v)
    ax.contour(uu, vv, (1 - uu) ** 2 + 100 * (vv - uu**2) ** 2, levels=np.logspace(-1, 3.5, 18), cmap="Greys")
    for i, run in enumerate(r["runs"]):
        p = run["path"]
        p = p[np.all(np.isfinite(p), axis=1) & np.all(np.abs(p) < 5, axis=1)]
        mom = f", momentum {run['momentum']}" if run["momentum"] else ""
        where = "thrown out" if run["diverged"] else f"{run['final_distance_to_minimum']:.2g} from (1, 1)"
        ax.plot(p[:, 0], p[:, 1], "-", lw=1.1, color=f"C{i}", label=f"eta {run['learning_rate']:.4g}{mom}: {where}")
    ax.plot([1], [1], "k*", ms=10)
    ax.set(xlim=(-2, 2), ylim=(-1, 3), xlabel="x", ylabel="y",
           title=f"Rosenbrock valley, {r['steps']} steps from (-1.2, 1)")
    ax.legend(fontsize=7, loc="upper left")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_slice(r: dict[str, Any], path: str) -> None:
    plt = common.pyplot()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.8), constrained_layout=True)
    g = np.asarray(r["grid"])
    cs = ax.contourf(g, g, np.log10(np.asarray(r["surface"])), levels=25, cmap="viridis")
    fig.colorbar(cs, ax=ax, label="log10 training cost")
    for i, run in enumerate(r["runs"]):
        p = np.asarray(run["path"])
        inside = np.all(np.abs(p) <= r["radius"], axis=1)
        ax.plot(p[inside, 0], p[inside, 1], "o-", ms=2, lw=0.9, color=f"C{i + 1}",
                label=f"eta = {run['eta_times_L']}/L")
        bx.semilogy(run["cost"], color=f"C{i + 1}", label=f"eta = {run['eta_times_L']}/L = {run['learning_rate']:.3g}")
    ax.plot([0], [0], "w*", ms=9)
    ax.set(xlabel="a (direction 1)", ylabel="b (direction 2)",
           title=f"[784, 30, 10] cost around a trained minimum (test accuracy {100 * r['test_accuracy']:.1f}%)")
    ax.legend(fontsize=7)
    bx.axhline(r["center_cost"], color="k", ls="--", lw=0.8, label="cost at the trained minimum")
    bx.set(xlabel="step", ylabel="training cost on the slice", title="gradient descent within the slice")
    bx.legend(fontsize=7)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(results: dict[str, Any]) -> str:
    b, rb, s = results["bowl"], results["rosenbrock"], results["network_slice"]
    lines = ["# Experiment 5: the cost landscape", "", *common.setup_lines(results["setup"]),
             f"## Quadratic bowl, A = diag{tuple(b['A_diagonal'])}, 2/L = {b['two_over_L']:.2f}, "
             f"{b['steps']} steps", "",
             "| eta | eta L | factor per step (1 - eta lambda_i) | distance to the minimum | closed form "
             "| largest deviation from the closed form |", "| ---: | ---: | :--- | ---: | ---: | ---: |"]
    for run in b["runs"]:
        f = ", ".join(f"{v:+.2f}" for v in run["factor_per_step"])
        lines.append(f"| {run['learning_rate']} | {run['eta_times_L']:.2f} | {f} | {run['final_distance']:.3g} | "
                     f"{run['closed_form_final_distance']:.3g} | {run['max_error_vs_closed_form']:.1e} |")
    lines += ["", "Below 2/L both factors have magnitude below 1 and the distance shrinks geometrically; at 2/L the "
              "steep coordinate flips sign every step without shrinking; above it, it grows.", "",
              f"## Rosenbrock valley, {rb['steps']} steps from {tuple(rb['start'])}; curvature at the minimum "
              f"L = {rb['L_at_minimum']:.1f} (2/L = {2 / rb['L_at_minimum']:.5f})", "",
              "| eta | momentum | final point | distance to (1, 1) | steps to within 0.1 | thrown out |",
              "| ---: | ---: | :--- | ---: | ---: | :---: |"]
    for run in rb["runs"]:
        fp = ", ".join(f"{v:.3g}" for v in run["final_point"])
        lines.append(f"| {run['learning_rate']:.5g} | {run['momentum'] or '-'} | ({fp}) | "
                     f"{run['final_distance_to_minimum']:.3g} | {run['steps_to_within_0.1'] or '-'} | "
                     f"{'yes' if run['diverged'] else 'no'} |")
    lines += ["", f"## A 2-D slice of the [784, 30, 10] network's cost ({s['epochs']} epochs of the textbook run, "
              f"seed {s['seed']}, test accuracy {common.pct(s['test_accuracy'])}; cost on {s['rows']:,} training "
              "digits)", "",
              f"Hessian of the slice at the trained point: {np.round(np.asarray(s['hessian']), 4).tolist()}, largest "
              f"eigenvalue L = {s['L']:.4g}, so 2/L = {s['two_over_L']:.4g}. Cost at the centre "
              f"{s['center_cost']:.4f}; over the slice (radius {s['radius']}) from "
              f"{np.min(s['surface']):.4f} to {np.max(s['surface']):.4f}.", "",
              "| eta (multiple of 1/L) | eta | final cost | final point |", "| ---: | ---: | ---: | :--- |"]
    for run in s["runs"]:
        fp = ", ".join(f"{v:.3g}" for v in run["final_point"])
        lines.append(f"| {run['eta_times_L']} | {run['learning_rate']:.4g} | {run['final_cost']:.4f} | ({fp}) |")
    lines += ["", "The slice is not a quadratic: 2/L at the centre is a local statement, so a step just above it may "
              "still settle where the valley is flatter, and one well below it may stop on the valley floor away "
              "from the centre (the slice's minimum need not be the trained point)."]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = common.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_common_arguments(parser)
    parser.add_argument("--epochs", type=int, help="epochs of the textbook run the slice is drawn around (default "
                        "30; --quick: 2)")
    parser.add_argument("--grid", type=int, help="points per side of the slice (default 41; --quick: 11)")
    args = common.parse(parser, argv, "landscape")
    args.epochs = (2 if args.quick else 30) if args.epochs is None else args.epochs
    args.grid = (11 if args.quick else 41) if args.grid is None else args.grid
    if args.epochs < 1 or args.grid < 3:
        parser.error(f"--epochs must be >= 1 and --grid >= 3, got {args.epochs} and {args.grid}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    data = common.load_data(args.idx_dir)
    if args.quick:
        data = data._replace(train=data.train.take(2000))
    steps = 100 if args.quick else 400
    results = {
        "setup": common.setup_record(data, quick=args.quick),
        "bowl": bowl(60),
        "rosenbrock": rosenbrock(2000 if args.quick else 20000),
        "network_slice": network_slice(data, epochs=args.epochs, grid=args.grid, radius=1.0, steps=steps,
                                       rows=min(data.train.size, 10000)),
    }
    common.write_results(args.out, results, markdown(results), {
        "bowl.png": lambda p: plot_bowl(results["bowl"], p),
        "rosenbrock.png": lambda p: plot_rosenbrock(results["rosenbrock"], p),
        "network_slice.png": lambda p: plot_slice(results["network_slice"], p)})


if __name__ == "__main__":
    sys.exit(main())
