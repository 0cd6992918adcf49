"""Data parallelism on a device mesh and multi-process runs, each in fresh subprocesses.

A process fixes its device count when JAX's backend starts, and may join one
``jax.distributed`` run only once, so every check here runs in its own child processes.
Every socket binds 127.0.0.1.

Stated tolerance: data-parallel training equals single-device training to a largest
absolute parameter difference of ``TOLERANCE`` after two epochs (only the summation order
of the gradient differs; measured 1e-6 and below, see experiments/benchmarks/data_parallel.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

TOLERANCE = 1e-5
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _python(code: str, timeout: float = 240) -> dict:
    """Runs ``code`` in a fresh Python; it prints one JSON object as its last line."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=_env(), timeout=timeout, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


# Four CPU devices in one process: the same fit on one device and on the mesh, side by side.
_FOUR_DEVICES = """
import json
import jax
import numpy as np

jax.config.update("jax_num_cpu_devices", 4)
import gd_jax as gd
from gd_jax._src.parallel import data_mesh

train, test = gd.load_mnist("sample")
mesh = data_mesh(4)
params = gd.init_mlp(jax.random.key(0), [784, 30, 10])
out = {"devices": len(mesh.devices.ravel())}

def largest_difference(a, b):
    return max(float(np.max(np.abs(np.asarray(u) - np.asarray(v)))) for u, v in zip(jax.tree.leaves(a),
                                                                                   jax.tree.leaves(b)))

# One full-batch step of plain gradient descent moves the parameters by -eta * gradient:
# on 4 devices the move must be the single-device one, not 4 times it.
one = train.take(64)
kw = dict(epochs=1, batch_size=64, optimizer=gd.sgd(1.0), cost=gd.quadratic_cost, key=jax.random.key(1))
single, _ = gd.fit(params, one, **kw)
parallel, _ = gd.fit(params, one, mesh=mesh, **kw)
move = lambda p: np.concatenate([np.ravel(np.asarray(a) - np.asarray(b)) for a, b in zip(jax.tree.leaves(p),
                                                                                       jax.tree.leaves(params))])
gradient = np.concatenate([np.ravel(g) for g in jax.tree.leaves(jax.grad(gd.quadratic_cost)(
    params, one.x, jax.nn.one_hot(one.y, 10)))])
out["move_ratio"] = float(np.linalg.norm(move(parallel)) / np.linalg.norm(move(single)))
out["move_vs_gradient"] = float(np.max(np.abs(move(parallel) + gradient)) / np.max(np.abs(gradient)))

# Two epochs with momentum, 1,010 rows in batches of 20: 50 sharded steps and a last batch
# of 10 rows, which does not split over 4 devices.
data = train.take(1010)
kw = dict(epochs=2, batch_size=20, optimizer=gd.sgd(3.0, momentum=0.5), cost=gd.quadratic_cost,
          key=jax.random.key(1), eval_data=test.take(2000))
single, h1 = gd.fit(params, data, **kw)
parallel, h4 = gd.fit(params, data, mesh=mesh, **kw)
out["difference"] = largest_difference(single, parallel)
out["moved"] = largest_difference(single, params)
out["accuracy"] = [h1["eval_accuracy"], h4["eval_accuracy"]]
out["train_cost"] = [h1["train_cost"], h4["train_cost"]]
try:
    gd.fit(params, data, mesh=mesh, **{**kw, "batch_size": 10})
except ValueError as e:
    out["bad_batch"] = str(e)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def four_devices():
    return _python(_FOUR_DEVICES)


def test_four_devices_equal_one_device(four_devices):
    r = four_devices
    assert r["devices"] == 4
    assert r["moved"] > 0.1  # the runs trained: the comparison below is not between two idle models
    assert r["difference"] < TOLERANCE, r
    assert r["train_cost"][1] == pytest.approx(r["train_cost"][0], rel=1e-5)
    assert r["accuracy"][1] == pytest.approx(r["accuracy"][0], abs=1e-3)


def test_the_gradient_is_not_multiplied_by_the_device_count(four_devices):
    # Differentiating each device's cost and then averaging the gradients over the devices
    # (shard_map's trap) moves the parameters 4 times as far as one device does.
    assert four_devices["move_ratio"] == pytest.approx(1.0, abs=1e-5)
    assert four_devices["move_vs_gradient"] < 1e-5


def test_a_batch_that_does_not_split_is_refused_with_the_nearest_sizes(four_devices):
    assert four_devices["bad_batch"] == ("batch_size 10 does not divide evenly over 4 devices; use 8 or 12 (a multiple "
                                         "of 4), or train on fewer devices")


# Several processes on 127.0.0.1, through the command line.

TRAIN = ["train", "--epochs", "2", "--batch-size", "100", "--sizes", "784,20,10", "--no-progress", "--no-figures"]
# Over the 100 steps of two epochs the summation order alone moves the parameters this much
# (measured about 1e-6 here; the textbook's 6,000 steps of batch 10 reach about 3e-5).
CLI_TOLERANCE = 1e-4


def _gd_jax(*args: str, cwd, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gd_jax", *args], capture_output=True, text=True, env=_env(),
                          cwd=cwd, timeout=timeout)


def _params(folder) -> list:
    import numpy as np

    with np.load(os.path.join(folder, "params.npz")) as f:
        return [f[k] for k in sorted(f.files)]


def _largest_difference(a: list, b: list) -> float:
    import numpy as np

    assert [x.shape for x in a] == [y.shape for y in b]
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))


@pytest.mark.slow
def test_launch_two_processes_writes_one_run_folder_equal_to_one_process(tmp_path):
    two = _gd_jax("launch", "-n", "2", *TRAIN, "--out", "two", cwd=tmp_path)
    assert two.returncode == 0, two.stderr[-3000:]
    assert sorted(os.listdir(tmp_path)) == ["two"]  # process 1 wrote nothing of its own
    one = _gd_jax(*TRAIN, "--out", "one", cwd=tmp_path)
    assert one.returncode == 0, one.stderr[-3000:]
    with open(tmp_path / "two" / "history.json") as f:
        history = json.load(f)
    assert "--num-processes" in history["config"]["segments"][-1]["command"]  # as launch started it
    assert [e["epoch"] for e in history["epochs"]] == [1, 2]
    assert _largest_difference(_params(tmp_path / "two"), _params(tmp_path / "one")) < CLI_TOLERANCE


def _free_port() -> int:
    from gd_jax.cli.launch import free_port

    return free_port("127.0.0.1")


def _stop_one_of_two(tmp_path, which: int, signal_name: str) -> tuple[subprocess.Popen, str, float, list]:
    """Two processes train; after epoch 2 process ``which`` gets ``signal_name``.

    Returns the other process (ended), its stderr, the seconds it took to end after the
    signal, and the two processes' folders.
    """
    import signal
    import time

    port = _free_port()
    args = [*TRAIN[:2], "1000", *TRAIN[3:], "--out", "run", "--coordinator", f"127.0.0.1:{port}", "--num-processes",
            "2"]
    # Each process in a folder of its own, as on two hosts: only process 0 may write its --out.
    hosts = [tmp_path / "host0", tmp_path / "host1"]
    for host in hosts:
        host.mkdir()
    processes = [subprocess.Popen([sys.executable, "-m", "gd_jax", *args, "--process-id", str(i)], cwd=hosts[i],
                                  env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for i in range(2)]
    other = processes[1 - which]
    try:
        checkpoints = hosts[0] / "run" / "checkpoints"
        deadline = time.monotonic() + 240
        while not (checkpoints / "epoch-000002.npz").exists():
            assert time.monotonic() < deadline and all(p.poll() is None for p in processes), "training never started"
            time.sleep(0.1)
        processes[which].send_signal(getattr(signal, signal_name))
        stopped = time.monotonic()
        _, err = other.communicate(timeout=60)
        waited = time.monotonic() - stopped
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()  # a stopped process too: SIGKILL needs no SIGCONT
            p.communicate()
    return other, err, waited, hosts


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err[-3000:]
    return lines[0]


# A dead peer closes its sockets: the next collective fails at once. A hung one closes
# nothing: gd_jax's peer watch notices its silence (JAX's own check would abort with pages).
@pytest.mark.slow
@pytest.mark.parametrize("signal_name, says", [
    ("SIGKILL", "process 0 of 2 lost contact with process 1: it died or hung"),
    ("SIGSTOP", "process 0 of 2 lost contact with process 1: no sign of life for"),
])
def test_a_dead_or_hung_peer_stops_the_other_in_one_line_and_the_run_resumes(tmp_path, signal_name, says):
    from gd_jax._src.checkpoint import latest_checkpoint, read_checkpoint_manifest

    survivor, err, waited, hosts = _stop_one_of_two(tmp_path, 1, signal_name)
    assert survivor.returncode == 4, err[-3000:]
    assert waited < 30
    assert os.listdir(hosts[1]) == []  # process 1 wrote nothing
    line = _one_line(err)
    assert line.startswith(f"gd-jax: error: {says}"), line
    assert "--resume run" in line

    # The run folder keeps its last finished epoch; the same run resumed ends as one process would.
    done = read_checkpoint_manifest(latest_checkpoint(str(hosts[0] / "run" / "checkpoints")))["epoch"]
    assert done >= 2
    resumed = _gd_jax("launch", "-n", "2", "train", "--resume", "run", "--epochs", str(done + 1), "--no-progress",
                      "--no-figures", cwd=hosts[0])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    one = _gd_jax(*TRAIN[:2], str(done + 1), *TRAIN[3:], "--out", "one", cwd=tmp_path)
    assert one.returncode == 0, one.stderr[-3000:]
    with open(hosts[0] / "run" / "history.json") as f:
        assert [e["epoch"] for e in json.load(f)["epochs"]] == list(range(1, done + 2))
    assert _largest_difference(_params(hosts[0] / "run"), _params(tmp_path / "one")) < CLI_TOLERANCE


@pytest.mark.slow
def test_a_hung_coordinator_stops_the_other_in_one_line(tmp_path):
    survivor, err, waited, _ = _stop_one_of_two(tmp_path, 0, "SIGSTOP")
    assert survivor.returncode == 4, err[-3000:]
    assert waited < 30
    assert _one_line(err).startswith("gd-jax: error: process 1 of 2 lost contact with process 0, which holds the "
                                     "run's coordinator: no answer for")


_MISMATCH = """
import json, sys
from gd_jax._src import distributed, parallel
process_id, port = int(sys.argv[1]), sys.argv[2]
distributed.initialize_distributed(f"127.0.0.1:{port}", 2, process_id)
import jax
import gd_jax as gd
train = gd.load_mnist("sample")[0].take(200)
if process_id == 1:  # one pixel of one digit differs on process 1
    x = train.x.copy()
    x[7, 300] = 1.0 - x[7, 300]
    train = gd.Dataset(x, train.y)
try:
    gd.fit(gd.init_mlp(jax.random.key(0), [784, 10, 10]), train, epochs=1, batch_size=20, optimizer=gd.sgd(3.0),
           cost=gd.quadratic_cost, key=jax.random.key(1), mesh=gd.data_mesh())
    print(json.dumps({"error": None}))
except ValueError as e:
    print(json.dumps({"error": str(e)}))
"""


@pytest.mark.slow
def test_processes_with_different_data_are_refused_in_one_line():
    port = str(_free_port())
    processes = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(_MISMATCH), str(i), port], cwd=ROOT,
                                  env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for i in range(2)]
    outs = [p.communicate(timeout=240) for p in processes]
    for p, (out, err) in zip(processes, outs):
        assert p.returncode == 0, err[-3000:]
        error = json.loads(out.strip().splitlines()[-1])["error"]
        assert error is not None and "\n" not in error
        assert error.startswith("the training data differs between processes: process 1 has fingerprint ")
        assert "every process must load the same data" in error
