"""``python -m gd_jax``: the ``gd-jax`` command."""

from gd_jax.cli.main import run

run()
