"""The one guarded reader of JAX's private state (gd_jax/_src/jax_internals.py), at whatever jax runs here.

CI runs it at the tested versions and at the declared floor (jax 0.8.1): if a JAX release moves
either name, these fail instead of the fallbacks quietly taking over.
"""

import subprocess
import sys
import textwrap

from gd_jax._src import jax_internals


def test_backend_started_is_false_before_the_first_computation_and_true_after():
    code = textwrap.dedent("""
        from gd_jax._src.jax_internals import backend_started
        before = backend_started()
        import jax.numpy as jnp
        jnp.ones(2).block_until_ready()
        print(before, backend_started())
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.split() == ["False", "True"]


def test_the_private_names_are_where_gd_jax_reads_them():
    from jax._src import distributed, xla_bridge

    assert callable(xla_bridge.backends_are_initialized)
    assert hasattr(distributed.global_state, "client")


def test_no_distributed_client_outside_a_multi_process_run():
    assert jax_internals.distributed_client() is None
