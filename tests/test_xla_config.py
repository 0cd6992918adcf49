"""XLA's CPU settings chosen by workload: what is chosen, that a user's settings win, that nothing changes once
XLA has started, and what a run records. (Whether a setting is faster is measured, never tested:
experiments/benchmarks/xla_flags.py.)"""

import subprocess
import sys

import pytest

from gd_jax._src import xla_config


@pytest.mark.parametrize(("batch_size", "models", "want"), [
    (10, 1, {"NPROC": "1"}), (16, 1, {"NPROC": "1"}), (17, 1, {}), (32, 1, {}), (128, 1, {}), (1000, 1, {}),
    (10, 16, {}),
])
def test_one_thread_for_small_steps_xla_defaults_otherwise(batch_size, models, want):
    assert xla_config.cpu_settings(batch_size, models) == want


def test_bad_workloads_are_refused():
    with pytest.raises(ValueError, match="batch_size and models must be >= 1, got 0 and 1"):
        xla_config.cpu_settings(0)


def test_in_this_test_process_the_backend_has_started_and_nothing_is_changed():
    import jax.numpy as jnp

    jnp.zeros(1).block_until_ready()
    env: dict[str, str] = {}
    record = xla_config.configure_cpu(10, environ=env)
    assert env == {} and record["applied"] == {} and record["wanted"] == {"NPROC": "1"}
    assert "already started" in record["reason"] and record["backend_started"] is True


CHILD = """
import json, os, sys
from gd_jax._src import xla_config
record = xla_config.configure_cpu(int(sys.argv[1]))
import jax.numpy as jnp
jnp.ones(3).sum().block_until_ready()
print(json.dumps({"record": record, "NPROC": os.environ.get("NPROC"), "after": xla_config.describe()}))
"""


def _child(batch_size: int, **env: str) -> dict:
    import json
    import os

    environ = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "NPROC", "GD_JAX_XLA_CHOICE")}
    done = subprocess.run([sys.executable, "-c", CHILD, str(batch_size)], env={**environ, **env}, capture_output=True,
                          text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_before_the_backend_starts_the_choice_is_set_and_recorded():
    out = _child(10)
    assert out["record"]["applied"] == {"NPROC": "1"} and out["NPROC"] == "1"
    assert "gd_jax's choice for 10 rows a step" in out["after"]["chosen_by"] and out["after"]["backend_started"]
    large = _child(1000)
    assert large["record"]["applied"] == {} and large["NPROC"] is None
    assert "XLA defaults" in large["after"]["chosen_by"]


def test_a_user_s_own_settings_win():
    out = _child(10, NPROC="2")
    assert out["record"]["applied"] == {} and out["NPROC"] == "2"
    assert "the environment sets XLA_FLAGS or NPROC" in out["record"]["reason"]


@pytest.mark.parametrize(("extra", "nproc"), [([], "1"), (["--batch-size", "100"], None)])
def test_gd_jax_train_applies_the_choice_and_records_it_in_each_segment(tmp_path, extra, nproc):
    import json
    import os

    environ = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "NPROC", "GD_JAX_XLA_CHOICE")}
    out = tmp_path / "run"
    args = ["train", "--sizes", "784,10,10", "--epochs", "1", "--no-tensorboard", "--no-progress", "--no-figures",
            "--out", str(out)]
    subprocess.run([sys.executable, "-m", "gd_jax", *args, *extra], env=environ, capture_output=True, text=True,
                   check=True, timeout=300)
    # A resumed run takes its rows per step from its saved settings, not from the flags' defaults.
    subprocess.run([sys.executable, "-m", "gd_jax", "train", "--resume", str(out), "--epochs", "2", "--no-progress",
                    "--no-figures"], env=environ, capture_output=True, text=True, check=True, timeout=300)
    segments = json.loads((out / "config.json").read_text())["segments"]
    assert [s["xla"]["NPROC"] for s in segments] == [nproc, nproc]
    assert all("gd_jax's choice" in s["xla"]["chosen_by"] for s in segments)
