"""The vectorized numpy baseline in its best configuration: its own process, its own BLAS kernel, its best thread count.

The machine may set OpenBLAS overrides (``OPENBLAS_CORETYPE``, ``OPENBLAS_L2_SIZE``) that make a
current numpy pick an older, slower kernel. They are read once, when OpenBLAS loads, so the
baseline runs in a child process started without them (the parent's numpy, and gd_jax, keep
the machine's environment). The child answers requests over its stdin/stdout (pickled):
it times its own epochs (``Measured``: no IPC in the figure), chooses the faster of 1 thread
and all cores during warm-up, and reports the BLAS library, kernel (``architecture``) and
threads that ``threadpoolctl`` sees.

The same four backpropagation equations on whole matrices serve the epoch benchmark and time
to accuracy (``numpy_step``, ``accuracy``), with no JAX in them.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import statistics
import subprocess
import sys
import time
from typing import Any

import numpy as np

__all__ = ["OVERRIDES", "NumpyWorker", "accuracy", "numpy_step", "sigmoid"]

OVERRIDES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
"""The machine's OpenBLAS settings the baseline runs without (they hold numpy to a slower kernel)."""


def sigmoid(z: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):  # exp overflow gives 1/inf = 0, the right limit
        return 1.0 / (1.0 + np.exp(-z))


def numpy_step(ws: list[np.ndarray], bs: list[np.ndarray], xb: np.ndarray, yb: np.ndarray, eta: float,
               cost: str) -> None:
    """One mini-batch step of the four backpropagation equations on whole matrices, updating in place."""
    acts = [xb]
    for w, b in zip(ws[:-1], bs[:-1]):
        acts.append(sigmoid(acts[-1] @ w + b))
    z = acts[-1] @ ws[-1] + bs[-1]
    if cost == "log-likelihood":
        e = np.exp(z - z.max(axis=1, keepdims=True))
        delta = e / e.sum(axis=1, keepdims=True) - yb
    else:
        a = sigmoid(z)
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


def accuracy(ws, bs, x, y) -> float:
    a = x
    for w, b in zip(ws[:-1], bs[:-1]):
        a = sigmoid(a @ w + b)
    z = a @ ws[-1] + bs[-1]
    return float(np.mean(np.argmax(z, axis=1) == y))  # sigmoid and softmax keep the order of z


def train_epoch(params, x, targets, order, batch_size: int, eta: float, cost: str) -> list[dict[str, np.ndarray]]:
    """One epoch from ``params`` (not changed) in ``order``: the new parameters."""
    ws = [layer["w"].copy() for layer in params]
    bs = [layer["b"].copy() for layer in params]
    for start in range(0, len(order), batch_size):
        rows = order[start: start + batch_size]
        numpy_step(ws, bs, x[rows], targets[rows], eta, cost)
    return [{"w": w, "b": b} for w, b in zip(ws, bs)]


# ---------------------------------------------------------------------------------------------
# The child process


class _Server:
    def __init__(self) -> None:
        self.sets: dict[str, dict[str, Any]] = {}  # by name: a problem's data, parameters and settings
        self.threads: int | None = None

    def _limits(self, threads: int | None):
        try:
            from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]
        except ImportError:
            return contextlib.nullcontext()
        return threadpool_limits(limits=threads, user_api="blas") if threads else contextlib.nullcontext()

    def handle(self, request: dict[str, Any]) -> Any:
        kind = request["kind"]
        if kind == "setup":
            targets = np.eye(request["n_classes"], dtype=np.float32)[request["y"]]
            self.sets[request["name"]] = {**request, "targets": targets}
            return self.info()
        if kind == "choose_threads":
            return self.choose_threads(self.sets[request["name"]], request["candidates"], request["orders"],
                                       request["rounds"])
        if kind == "epoch":
            return self.epoch(self.sets[request["name"]], request["params"], request["order"], request.get("eval"))
        raise ValueError(f"unknown request {kind!r}")

    def info(self) -> dict[str, Any]:
        try:
            from threadpoolctl import threadpool_info  # type: ignore[import-untyped]

            pools = [{k: p.get(k) for k in ("internal_api", "version", "architecture", "num_threads", "prefix")}
                     for p in threadpool_info() if p.get("user_api") == "blas"]
        except ImportError:
            pools = None
        return {"blas": pools, "environment": {k: os.environ.get(k) for k in OVERRIDES},
                "numpy": np.__version__, "cpu_count": os.cpu_count()}

    def run(self, d, params, order, threads):
        with self._limits(threads):
            start = time.perf_counter()
            out = train_epoch(params, d["x"], d["targets"], order, d["batch_size"], d["eta"], d["cost"])
            return out, time.perf_counter() - start

    def choose_threads(self, d, candidates, orders, rounds) -> dict[str, Any]:
        """The faster of ``candidates`` (thread counts), by the median of interleaved epochs."""
        seconds: dict[int, list[float]] = {c: [] for c in candidates}
        for r in range(rounds):
            for c in candidates:
                seconds[c].append(self.run(d, d["params"], orders[r % len(orders)], c)[1])
        self.threads = min(candidates, key=lambda c: statistics.median(seconds[c]))
        return {"chosen": self.threads, "seconds": {str(c): s for c, s in seconds.items()}}

    def epoch(self, d, params, order, evaluate):
        params, seconds = self.run(d, d["params"] if params is None else params, order, self.threads)
        acc = None
        if evaluate is not None:
            with self._limits(self.threads):
                acc = accuracy([p["w"] for p in params], [p["b"] for p in params], *evaluate)
        return {"params": params, "seconds": seconds, "accuracy": acc}


def serve() -> None:
    """The child's loop: one pickled request on stdin, one pickled answer on stdout, until stdin closes."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    server = _Server()
    while True:
        try:
            request = pickle.load(stdin)
        except EOFError:
            return
        try:
            answer = {"ok": server.handle(request)}
        except Exception as e:
            answer = {"error": f"{type(e).__name__}: {e}"}
        pickle.dump(answer, stdout)
        stdout.flush()


class NumpyWorker:
    """The parent's handle on the child: ``setup``, ``choose_threads``, ``epoch``; a context manager."""

    def __init__(self) -> None:
        env = {k: v for k, v in os.environ.items() if k not in OVERRIDES}
        code = "from gd_jax.cli.bench.numpy_worker import serve; serve()"
        self._proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      env=env)

    def call(self, kind: str, **request) -> Any:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        pickle.dump({"kind": kind, **request}, self._proc.stdin)
        self._proc.stdin.flush()
        answer = pickle.load(self._proc.stdout)
        if "error" in answer:
            raise RuntimeError(f"the numpy baseline's process failed: {answer['error']}")
        return answer["ok"]

    def close(self) -> None:
        if self._proc.poll() is None:
            assert self._proc.stdin is not None
            self._proc.stdin.close()
            self._proc.wait(timeout=30)

    def __enter__(self) -> NumpyWorker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
