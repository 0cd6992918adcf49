"""``gd-jax sweep`` across processes on 127.0.0.1: one model axis over the devices of every process.

Each process joins one ``jax.distributed`` run, so each check runs in fresh child processes
(``gd-jax launch`` or processes started by hand, as on several hosts). Stated tolerance: the
two-process sweep equals the one-process sweep to ``TOLERANCE`` (each model is trained on one
device either way; measured bit-identical).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from gd_jax import cli

TOLERANCE = 1e-4
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SWEEP = ["sweep", "--sizes", "784,8,10", "--batch-size", "500", "--eta", "0.5,3", "--seeds", "2", "--no-progress",
         "--no-figures"]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _gd_jax(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gd_jax", *args], capture_output=True, text=True, env=_env(),
                          cwd=cwd, timeout=300)


def _largest_difference(a, b) -> float:
    a, b = np.load(a / "params.npz"), np.load(b / "params.npz")
    assert sorted(a.files) == sorted(b.files)
    return max(float(np.max(np.abs(a[k] - b[k]))) for k in a.files)


def _errors(err: str) -> list[str]:
    """stderr without the lines gloo prints when its peers connect."""
    return [line for line in err.splitlines() if line.strip() and not line.startswith("[Gloo]")]


@pytest.mark.slow
def test_launch_two_processes_sweeps_into_one_folder_equal_to_one_process(tmp_path):
    two = _gd_jax("launch", "-n", "2", *SWEEP, "--epochs", "2", "--out", "two", cwd=tmp_path)
    assert two.returncode == 0, two.stderr[-3000:]
    assert sorted(os.listdir(tmp_path)) == ["two"]  # process 1 wrote nothing of its own
    one = _gd_jax(*SWEEP, "--epochs", "2", "--out", "one", cwd=tmp_path)
    assert one.returncode == 0, one.stderr[-3000:]
    assert _largest_difference(tmp_path / "two", tmp_path / "one") < TOLERANCE
    assert "--num-processes" in (tmp_path / "two" / "config.json").read_text()


def _free_port() -> int:
    from gd_jax.cli.launch import free_port

    return free_port("127.0.0.1")


@pytest.mark.slow
@pytest.mark.parametrize("signal_name, says", [
    ("SIGKILL", "process 0 of 2 lost contact with process 1: it died or hung"),
    ("SIGSTOP", "process 0 of 2 lost contact with process 1: no sign of life for"),
])
def test_a_dead_or_hung_peer_ends_the_sweep_in_one_line_and_it_resumes_across_processes(tmp_path, signal_name, says):
    port = _free_port()
    args = [*SWEEP, "--batch-size", "10", "--epochs", "1000", "--out", "run", "--coordinator", f"127.0.0.1:{port}",
            "--num-processes", "2"]
    hosts = [tmp_path / "host0", tmp_path / "host1"]  # as on two hosts: only process 0 may write its --out
    for host in hosts:
        host.mkdir()
    processes = [subprocess.Popen([sys.executable, "-m", "gd_jax", *args, "--process-id", str(i)], cwd=hosts[i],
                                  env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for i in range(2)]
    try:
        checkpoints = hosts[0] / "run" / "checkpoints"
        deadline = time.monotonic() + 240
        while not (checkpoints / "epoch-000002.npz").exists():
            assert time.monotonic() < deadline and all(p.poll() is None for p in processes), "the sweep never started"
            time.sleep(0.1)
        processes[1].send_signal(getattr(signal, signal_name))
        stopped = time.monotonic()
        _, err = processes[0].communicate(timeout=60)
        waited = time.monotonic() - stopped
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
            p.communicate()
    assert processes[0].returncode == 4, err[-3000:]
    assert waited < 30
    assert os.listdir(hosts[1]) == []
    (line,) = _errors(err)
    assert line.startswith(f"gd-jax: error: {says}"), line
    assert line.endswith("continue with: gd-jax launch -n 2 sweep --resume run"), line

    from gd_jax._src.checkpoint import latest_checkpoint, read_checkpoint_manifest

    done = read_checkpoint_manifest(latest_checkpoint(str(checkpoints)))["epoch"]
    resumed = _gd_jax("launch", "-n", "2", "sweep", "--resume", "run", "--epochs", str(done + 1), "--no-progress",
                      "--no-figures", cwd=hosts[0])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    one = _gd_jax(*SWEEP, "--batch-size", "10", "--epochs", str(done + 1), "--out", "one", cwd=tmp_path)
    assert one.returncode == 0, one.stderr[-3000:]
    assert _largest_difference(hosts[0] / "run", tmp_path / "one") < TOLERANCE


@pytest.mark.parametrize("command, says", [
    (["train", "--eta", "nan"], "--eta must be a positive finite number, got nan"),
    (["sweep", "--eta", "1,x"], "--eta wants a number or a comma list"),
    (["sweep", "--momentum", "0.5,1"], "--momentum 1 is outside [0, 1)"),
    (["sweep", "--epochs", "-1"], "--epochs must be an integer >= 0"),
    (["evaluate", "runs/x"], "gd-jax launch runs 'train' or 'sweep'"),
])
def test_launch_validates_the_command_once_before_starting_any_process(tmp_path, capsys, monkeypatch, command, says):
    from gd_jax.cli import launch

    started = []
    monkeypatch.setattr(launch.subprocess, "Popen", lambda *a, **k: started.append(a))
    monkeypatch.chdir(tmp_path)
    assert cli.main(["launch", "-n", "2", *command]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err, err
    assert started == [] and os.listdir(tmp_path) == []
