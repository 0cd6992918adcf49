"""The ``gd-jax`` command line: one module per subcommand, the run folder and its policies.

Not library API: programs import ``gd_jax``; this package is the application on top of it.
Its Python entry points are ``run`` (the ``gd-jax`` program: it exits), ``main`` (the same
command line, returning its exit status to a caller that goes on) and ``build_parser`` (the
parser the CLI reference is generated from).
"""

from gd_jax.cli.main import build_parser, main, run

__all__ = ["build_parser", "main", "run"]
