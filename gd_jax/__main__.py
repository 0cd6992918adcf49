"""``python -m gd_jax`` is the ``gd-jax`` command."""

import sys

from gd_jax.cli import main

sys.exit(main())
