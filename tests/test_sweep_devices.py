"""A sweep sharded over 4 CPU devices equals the same sweep on one device.

The device count of the CPU backend is fixed when JAX starts, so the sharded sweep runs in
a child Python started with ``--xla_force_host_platform_device_count=4``; the child trains
6 models (not a multiple of 4: the grid is padded to 8) on all 4 devices and on the first
device alone, and writes both results to an ``.npz`` that this test compares.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

CHILD = textwrap.dedent("""
    import functools, sys
    import jax, numpy as np
    import gd_jax as gd
    from gd_jax._src.sweep import sweep

    assert len(jax.devices()) == 4, jax.devices()
    train, test = gd.load_mnist("sample")
    init = functools.partial(gd.init_mlp, sizes=[784, 12, 10])
    out = {}
    for shuffle in ("per_model", "shared"):
        for name, devices in (("sharded", None), ("single", jax.devices()[:1])):
            result = sweep(init, train.take(300), grid={"learning_rate": [0.5, 3.0, 1e30]}, seeds=2,
                           make_optimizer=lambda h: gd.sgd(h["learning_rate"]), cost=gd.quadratic_cost,
                           epochs=2, batch_size=16, eval_data=test.take(100), shuffle=shuffle, devices=devices)
            if name == "sharded":
                w = result.params[0]["w"]
                out[f"{shuffle}_shards"] = np.array([len(w.sharding.device_set), len(w.addressable_shards)])
            for i, leaf in enumerate(jax.tree.leaves(result.params)):
                out[f"{shuffle}_{name}_leaf{i}"] = np.asarray(leaf)
            out[f"{shuffle}_{name}_cost"] = np.array([r["eval_cost"] for r in result.records], float)
            out[f"{shuffle}_{name}_stops"] = np.array([m["stop_reason"] for m in result.models])
    np.savez(sys.argv[1], **out)
""")


@pytest.mark.slow
def test_sweep_on_4_cpu_devices_equals_one_device(tmp_path):
    path = tmp_path / "results.npz"
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, "-c", CHILD, str(path)], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = np.load(path)
    for shuffle in ("per_model", "shared"):
        np.testing.assert_array_equal(results[f"{shuffle}_shards"], [4, 4])  # spread over all 4 devices
        stops = results[f"{shuffle}_sharded_stops"]
        np.testing.assert_array_equal(stops, results[f"{shuffle}_single_stops"])
        assert list(stops) == ["epochs"] * 4 + ["diverged"] * 2
        leaves = sorted(k for k in results.files if k.startswith(f"{shuffle}_sharded_leaf"))
        assert len(leaves) == 4
        for key in leaves:
            # Each device runs the same per-model program on its slice of the models; the wide
            # product of the shared order is 2 models wide there and 8 on one device, so its
            # sums may round differently in the last bit.
            tolerance = 0 if shuffle == "per_model" else 5e-6
            np.testing.assert_allclose(results[key], results[key.replace("sharded", "single")], rtol=0,
                                       atol=tolerance)
        np.testing.assert_allclose(results[f"{shuffle}_sharded_cost"], results[f"{shuffle}_single_cost"],
                                   rtol=1e-5, equal_nan=True)
