"""The variants of ``gd-jax bench``: each a way to train the same epoch, each in its best configuration.

A builder takes a ``Problem`` (data, initial parameters, batch orders of one batch size) and
returns a ``Runner`` whose ``epoch(order)`` trains one epoch from the initial parameters.
``step_kernels`` reads a compiled JAX variant's optimised HLO and counts its kernels a step;
``program_fingerprint`` tells whether two variants compiled to the same program.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import math
import os
import re
import statistics
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gd_jax._src.backprop import backprop
from gd_jax._src.costs import COSTS
from gd_jax._src.epoch import TrainState, make_epoch, shuffled_order
from gd_jax._src.network import init_mlp
from gd_jax._src.optim import apply_updates, sgd
from gd_jax._src.sweep import make_sweep_epoch, model_axes
from gd_jax.cli.bench.config import SWEEP_MODELS, BenchConfig
from gd_jax.cli.bench.numpy_worker import NumpyWorker, train_epoch
from gd_jax.cli.bench.timing import Measured

__all__ = ["BUILDERS", "Problem", "Runner", "Skipped", "compile_timed", "program_fingerprint", "relative_error",
           "step_kernels", "to_numpy"]

@dataclasses.dataclass
class Problem:
    """Everything the variants of one batch size share: data, initial parameters, batch orders."""

    config: BenchConfig
    batch_size: int
    device: jax.Device
    x: np.ndarray  # (n, n_0) float32
    y: np.ndarray  # (n,) int32
    params: list[dict[str, np.ndarray]]  # the initial parameters (float32)
    orders: list[np.ndarray]  # one batch order per timed epoch; orders[0] also warms up
    role: str = "timed"  # or "check": the few mini-batches each variant is checked on
    numpy_worker: NumpyWorker | None = None  # vectorized_numpy's own process (None: in this process)

    @property
    def n(self) -> int:
        return self.x.shape[0]

    @property
    def n_classes(self) -> int:
        return self.config.sizes[-1]

    @property
    def steps(self) -> int:
        return -(-self.n // self.batch_size)

    def check_problem(self) -> Problem:
        """The same problem cut to the rows of ``check_steps`` mini-batches of the first order and,
        when the epoch has one, of its smaller last mini-batch, visited in that order."""
        full, rest = divmod(self.n, self.batch_size)
        order = self.orders[0]
        rows = order[: min(self.config.check_steps, full) * self.batch_size]
        if rest:
            rows = np.concatenate([rows, order[full * self.batch_size:]])
        return dataclasses.replace(self, x=self.x[rows], y=self.y[rows], orders=[np.arange(len(rows), dtype=np.int32)],
                                   role="check")


class Runner(NamedTuple):
    """A built variant: ``epoch(order)`` trains one epoch from the initial parameters and returns them (numpy)."""

    epoch: Callable[[np.ndarray], Any]
    compile_seconds: float | None = None
    models: int = 1
    timed_epoch: Callable[[np.ndarray], Any] | None = None  # textbook_numpy: a part of the epoch, extrapolated
    compiled: Any = None  # JAX variants: the compiled epoch, for its optimised HLO
    steps_timed: int | None = None  # the mini-batches timed_epoch runs
    checked: bool = True
    note: str = ""
    config: dict[str, Any] | None = None  # the configuration it ran in (threads, BLAS kernel), for the JSON


class Skipped(Exception):
    """A variant that cannot run here (its library is missing): reported as skipped, not failed."""


def to_numpy(params) -> list[dict[str, np.ndarray]]:
    return [{k: np.asarray(v) for k, v in layer.items()} for layer in jax.device_get(params)]


def _jax_cost(config: BenchConfig) -> Callable:
    return COSTS[config.cost]


def compile_timed(fn: Callable, *args) -> tuple[Any, float]:
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


def _build_gd_jax(p: Problem, optimizer=None) -> Runner:
    opt = optimizer or sgd(p.config.learning_rate)
    epoch = make_epoch(_jax_cost(p.config), opt, batch_size=p.batch_size, n_classes=p.n_classes)
    x, y = jax.device_put(p.x, p.device), jax.device_put(p.y, p.device)
    params = jax.device_put(p.params, p.device)
    state = TrainState(params, opt.init(params))
    call, seconds = compile_timed(epoch, state, x, y, p.orders[0])
    return Runner(lambda order: call(state, x, y, order)[0].params, seconds, compiled=call.compiled)


def _build_optax(p: Problem) -> Runner:
    return _build_gd_jax(p, optax.sgd(p.config.learning_rate))


def _stacked(trees: list) -> Any:
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def _build_sweep(p: Problem, *, own_orders: bool) -> Runner:
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

    call, seconds = compile_timed(epoch, state, hyper, x, y, orders_of(p.orders[0]))
    return Runner(lambda order: model_0(call(state, hyper, x, y, orders_of(order))[0].params),
                   seconds, models=SWEEP_MODELS, compiled=call.compiled,
                   note=f"gd.make_sweep_epoch, shuffle={mode!r}")


def _build_naive_jax(p: Problem) -> Runner:
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
    call, seconds = compile_timed(step, state0, x, y, p.orders[0][: p.batch_size])
    bs = p.batch_size

    def epoch(order: np.ndarray):
        state, finite = state0, []
        for start in range(0, len(order), bs):
            state, ok = call(state, x, y, order[start: start + bs])
            finite.append(ok)  # kept on the device: reading each flag would block every step
        return state.params

    return Runner(epoch, seconds, compiled=call.compiled)


def _thread_candidates(config: BenchConfig) -> list[int]:
    """The thread counts a baseline tries: the one asked for, else 1 and all cores (the faster is kept)."""
    if config.baseline_threads is not None:
        return [config.baseline_threads]
    return sorted({1, os.cpu_count() or 1})


def _choice_rounds(p: Problem) -> int:
    return max(2, p.config.warmup + 1)


def _build_vectorized_numpy(p: Problem) -> Runner:
    """float32 numpy, the mini-batch as one matrix: in its own process with its own BLAS kernel when
    ``p.numpy_worker`` is given (see ``numpy_worker``), else in this process as it is."""
    eta, cost, bs = p.config.learning_rate, p.config.cost, p.batch_size
    if p.numpy_worker is None:
        targets = np.eye(p.n_classes, dtype=np.float32)[p.y]
        return Runner(lambda order: train_epoch(p.params, p.x, targets, order, bs, eta, cost),
                      note="this process's BLAS configuration")
    worker, name = p.numpy_worker, p.role
    info = worker.call("setup", name=name, x=p.x, y=p.y, params=p.params, n_classes=p.n_classes, batch_size=bs,
                       eta=eta, cost=cost)
    choice = None
    if p.role == "timed":
        choice = worker.call("choose_threads", name=name, candidates=_thread_candidates(p.config), orders=p.orders,
                             rounds=_choice_rounds(p))

    def timed(order: np.ndarray) -> Measured:
        return Measured(worker.call("epoch", name=name, params=None, order=order)["seconds"])

    blas = (info["blas"] or [{}])[0]
    note = (f"own process: {blas.get('internal_api')} {blas.get('version')} kernel {blas.get('architecture')}"
            + (f", {choice['chosen']} thread(s) (faster of {', '.join(choice['seconds'])})" if choice else ""))
    return Runner(lambda order: worker.call("epoch", name=name, params=None, order=order)["params"],
                  timed_epoch=timed, note=note, config={"process": info, "threads": choice})



def _build_textbook_numpy(p: Problem) -> Runner:
    """``network.py``'s ``update_mini_batch``: one float64 backprop per example, summed; a fixed number timed."""
    if p.config.cost not in ("quadratic", "cross-entropy"):
        raise Skipped(f"the textbook's backprop has no {p.config.cost} cost")
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

    return Runner(run, timed_epoch=lambda order: run(order, timed), steps_timed=timed,
                   note=f"extrapolated from {timed} of {p.steps} mini-batches")


def _torch_model(p: Problem, torch) -> tuple[Any, list[Any]]:
    layers: list[Any] = []
    for i, layer in enumerate(p.params):
        layers.append(torch.nn.Linear(*layer["w"].shape))
        if i < len(p.params) - 1 or p.config.cost == "quadratic":
            layers.append(torch.nn.Sigmoid())
    model = torch.nn.Sequential(*layers)
    return model, [m for m in model if isinstance(m, torch.nn.Linear)]


def _torch_loss(cost: str, torch) -> Callable:
    def loss_of(out, yb, labels):
        if cost == "quadratic":
            return 0.5 * ((out - yb) ** 2).sum(dim=1).mean()
        if cost == "cross-entropy":  # softplus(z) - y z, the stable form gd_jax uses
            return (torch.nn.functional.softplus(out) - yb * out).sum(dim=1).mean()
        return torch.nn.functional.cross_entropy(out, labels)

    return loss_of


def _build_torch(p: Problem) -> Runner:
    """PyTorch eager, at the faster of 1 thread and all cores (timed in warm-up) unless a count is asked for."""
    try:
        import torch
    except ImportError as e:
        raise Skipped('torch is not installed (pip install -e ".[bench]")') from e
    if p.device.platform != "cpu" and not torch.cuda.is_available():
        raise Skipped(f"torch has no {p.device.platform} device here")
    dev = "cpu" if p.device.platform == "cpu" else "cuda"
    model, linears = _torch_model(p, torch)
    model = model.to(dev)
    x, y = torch.from_numpy(p.x).to(dev), torch.from_numpy(p.y.astype(np.int64)).to(dev)
    targets = torch.nn.functional.one_hot(y, p.n_classes).to(torch.float32)
    optimizer = torch.optim.SGD(model.parameters(), lr=p.config.learning_rate)
    loss_of, bs = _torch_loss(p.config.cost, torch), p.batch_size
    threads = [_thread_candidates(p.config)[0]]

    def epoch(order: np.ndarray):
        torch.set_num_threads(threads[0])
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

    choice = _choose_threads(p, epoch, threads) if p.role == "timed" else None
    note = f"{threads[0]} thread(s)" + (f" (faster of {', '.join(choice['seconds'])})" if choice else "")
    return Runner(epoch, note=note, config={"threads": choice})


def _choose_threads(p: Problem, epoch: Callable, threads: list[int]) -> dict[str, Any]:
    """Times ``epoch`` at each candidate thread count, interleaved; sets ``threads[0]`` to the fastest."""
    seconds: dict[int, list[float]] = {c: [] for c in _thread_candidates(p.config)}
    for r in range(_choice_rounds(p)):
        for c in seconds:
            threads[0] = c
            start = time.perf_counter()
            epoch(p.orders[r % len(p.orders)])
            seconds[c].append(time.perf_counter() - start)
    threads[0] = min(seconds, key=lambda c: statistics.median(seconds[c]))
    return {"chosen": threads[0], "seconds": {str(c): s for c, s in seconds.items()}}



def _build_matmul_floor(p: Problem) -> Runner:
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

    call, seconds = compile_timed(floor, weights, x, p.orders[0])
    return Runner(lambda order: call(weights, x, order), seconds, checked=False, compiled=call.compiled,
                   note="not the algorithm: its matrix products alone")


def _build_sweep_matmul_floor(p: Problem, *, own_orders: bool) -> Runner:
    """The products of ``gd_jax_sweep16`` (or ``_own``) alone, as ``matmul_floor`` is for one model.

    With one shared order the first layer of the 16 models is one wide product
    ``x (b, n_0) @ W (n_0, 16 n_1)``, ``W`` stored as ``(n_0, 16, n_1)`` and the activations as
    ``(b, 16, n)``: the layout ``gd.sweep`` keeps (see ``gd.model_axes``), so that no step
    transposes. Every other product, and with own orders every product (each model its own rows),
    is one batched product over the models. The per-model time of this floor bounds what any
    sweep of these shapes can reach here.
    """
    k, bs = SWEEP_MODELS, p.batch_size
    full = p.n // bs
    stacked = [np.broadcast_to(np.asarray(layer["w"]), (k, *layer["w"].shape)) for layer in p.params]
    if not own_orders:
        stacked[0] = np.moveaxis(stacked[0], 0, 1)  # (n_0, k, n_1)
    weights = jax.device_put([np.ascontiguousarray(w) for w in stacked], p.device)
    x = jax.device_put(p.x, p.device)
    # Activations are (b, k, n) with a shared order and (k, b, n) with own orders.
    layer_product, weight_gradient, backward = (
        ("kbi,kio->kbo", "kbi,kbo->kio", "kbo,kio->kbi") if own_orders else
        ("bki,kio->bko", "bki,bko->kio", "bko,kio->bki"))

    def first_layer(xb, w):
        if own_orders:  # xb: (k, b, n_0)
            return jnp.einsum(layer_product, xb, w)
        return (xb @ w.reshape(w.shape[0], -1)).reshape(xb.shape[0], k, -1)

    def first_gradient(xb, delta):
        if own_orders:
            return jnp.einsum(weight_gradient, xb, delta)
        return (xb.T @ delta.reshape(xb.shape[0], -1)).reshape(xb.shape[1], k, -1)

    def floor(ws, x, orders):
        def step(ws, rows):
            xb = x[rows]
            acts = [first_layer(xb, ws[0])]
            for w in ws[1:]:
                acts.append(jnp.einsum(layer_product, acts[-1], w))
            delta, grads = acts[-1], [None] * len(ws)
            for layer in range(len(ws) - 1, 0, -1):
                grads[layer] = jnp.einsum(weight_gradient, acts[layer - 1], delta)
                delta = jnp.einsum(backward, delta, ws[layer])
            grads[0] = first_gradient(xb, delta)
            return grads, None

        batches = orders[..., : full * bs].reshape(*orders.shape[:-1], full, bs)
        return jax.lax.scan(step, ws, jnp.moveaxis(batches, -2, 0))[0]

    def orders_of(order: np.ndarray) -> np.ndarray:
        return np.stack([np.roll(order, m) for m in range(k)]) if own_orders else order

    call, seconds = compile_timed(floor, weights, x, orders_of(p.orders[0]))
    return Runner(lambda order: call(weights, x, orders_of(order)), seconds, models=k, checked=False,
                  compiled=call.compiled, note=f"not the algorithm: the products of {k} models alone")


BUILDERS: dict[str, Callable[[Problem], Runner]] = {
    "gd_jax": _build_gd_jax,
    "gd_jax_sweep16": lambda p: _build_sweep(p, own_orders=False),
    "gd_jax_sweep16_own": lambda p: _build_sweep(p, own_orders=True),
    "optax": _build_optax,
    "naive_jax": _build_naive_jax,
    "vectorized_numpy": _build_vectorized_numpy,
    "textbook_numpy": _build_textbook_numpy,
    "torch": _build_torch,
    "matmul_floor": _build_matmul_floor,
    "matmul_floor_sweep16": lambda p: _build_sweep_matmul_floor(p, own_orders=False),
    "matmul_floor_sweep16_own": lambda p: _build_sweep_matmul_floor(p, own_orders=True),
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


# Where each instruction came from (Python file, function, line): equal programs traced from other
# source differ here alone. A quoted op_name may hold any character but a quote.
_METADATA = re.compile(r', metadata=\{(?:[^}"]|"[^"]*")*\}')
_NAME = re.compile(r"%[\w.\-]+")
_PARAMETER_NAME = re.compile(r"(?<=[(,])( ?)[\w.\-]+: ")  # a computation's header: (x.1: f32[4,3], ...)


def program_fingerprint(hlo_text: str) -> str:
    """A hash of what an optimised HLO program runs, blind to names and to the source it was traced from.

    Two variants with equal fingerprints run the same instructions, in the same order, on the
    same shapes: the same kernels. Left out: the module's name, the tables of source files and
    functions, each instruction's ``metadata`` (its Python origin), the names of the
    computations' parameters, and the names of instructions and computations, renumbered in
    the order they first appear.
    """
    lines = [_PARAMETER_NAME.sub(r"\1", line) if line.startswith(("%", "ENTRY ")) else line
             for line in hlo_text.splitlines() if line.startswith(("%", "ENTRY ", " ", "}"))]
    names: dict[str, str] = {}
    program = _NAME.sub(lambda m: names.setdefault(m.group(0), f"%{len(names)}"), _METADATA.sub("", "\n".join(lines)))
    return hashlib.sha256(program.encode()).hexdigest()[:16]


def relative_error(params, reference, initial) -> float:
    """``max |params - reference| / max |reference - initial|`` over every leaf."""
    leaves = zip(jax.tree.leaves(params), jax.tree.leaves(reference), jax.tree.leaves(initial))
    diff, moved = 0.0, 0.0
    for p, r, i in leaves:
        p, r, i = (np.asarray(a, dtype=np.float64) for a in (p, r, i))
        diff = max(diff, float(np.max(np.abs(p - r))))
        moved = max(moved, float(np.max(np.abs(r - i))))
    return diff / moved if moved > 0 else (0.0 if diff == 0 else math.inf)


