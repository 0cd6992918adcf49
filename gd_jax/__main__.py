"""``python -m gd_jax``: the ``gd-jax`` command."""

import sys

from gd_jax.cli.main import main

sys.exit(main())
