"""Seeds: from a whole number to the PRNG keys a run starts from.

Every run draws its randomness from one key derived from its seed: the initial parameters
from one half of ``jax.random.split``, the batch orders from the other. The CLI's
``--seed``, ``gd.sweep``'s seeds and the experiments all derive their keys here, so the same
seed trains the same model wherever it is given.
"""

from __future__ import annotations

import jax
import numpy as np

__all__ = ["SEED_LIMIT", "seed_key", "seed_keys"]

SEED_LIMIT = 2**64


def is_seed(seed: object) -> bool:
    """True for an integer in ``[0, 2**64)`` (bools excluded)."""
    return isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) and 0 <= int(seed) < SEED_LIMIT


def seed_key(seed: int) -> jax.Array:
    """The PRNG key of ``seed``: a different key for every seed in ``[0, 2**64)``.

    The seed's two 32-bit halves become the two words of a threefry key, so seeds below
    ``2**32`` give exactly ``jax.random.key(seed)`` (whose 32-bit conversion would make
    ``2**32 + 2`` the same key as ``2``), and no two seeds of the range share a key.

    Raises:
      ValueError: a seed outside ``[0, 2**64)`` or not an integer.
    """
    if not is_seed(seed):
        raise ValueError(f"a seed must be an integer from 0 to 2**64 - 1 ({SEED_LIMIT - 1}), got {seed!r}; e.g. 2")
    words = np.array([int(seed) >> 32, int(seed) & 0xFFFFFFFF], dtype=np.uint32)
    return jax.random.wrap_key_data(jax.numpy.asarray(words), impl="threefry2x32")


def seed_keys(seed: int) -> tuple[jax.Array, jax.Array]:
    """The ``(init_key, shuffle_key)`` of ``seed``, as ``gd-jax train --seed`` derives them.

    Every seed in ``[0, 2**64)`` has its own keys (``seed_key``); below ``2**32`` they
    are ``jax.random.split(jax.random.key(seed))``.

    Raises:
      ValueError: a seed outside ``[0, 2**64)`` or not an integer.
    """
    init_key, shuffle_key = jax.random.split(seed_key(seed))
    return init_key, shuffle_key
