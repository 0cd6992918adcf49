"""``python -m gd_jax.cli.bench``: the same command as ``gd-jax bench``."""

import sys

from gd_jax.cli.bench import main

sys.exit(main())
