"""Seeds: a whole number to the run's PRNG keys (gd_jax._src.seeds)."""

import jax
import numpy as np
import pytest

import gd_jax as gd
from gd_jax._src.seeds import seed_key


def test_seeds_map_to_distinct_keys_and_agree_with_jax_below_2_to_32():
    for seed in (0, 2, 12345, 2**32 - 1):
        np.testing.assert_array_equal(jax.random.key_data(seed_key(seed)),
                                      jax.random.key_data(jax.random.key(seed)))
    seeds = [2, 2**32 + 2, 2**33 + 2, 2**63, 2**64 - 1, 2**32, 1]
    data = {tuple(np.asarray(jax.random.key_data(seed_key(s))).tolist()) for s in seeds}
    assert len(data) == len(seeds)
    # jax.random.key's own conversion is what collided: 2**32 + 2 gives the key of 2.
    np.testing.assert_array_equal(jax.random.key_data(jax.random.key(2**32 + 2)),
                                  jax.random.key_data(jax.random.key(2)))
    for bad in (-1, 2**64, 2.5):
        with pytest.raises(ValueError, match=r"a seed must be an integer from 0 to 2\*\*64 - 1"):
            seed_key(bad)


@pytest.mark.parametrize("bad", [-1, 2**64, 2.5, True])
def test_seed_keys_raise_a_library_value_error_not_the_cli_flag(bad):
    with pytest.raises(ValueError, match="a seed must be an integer") as info:
        gd.seed_keys(bad)
    assert "--seed" not in str(info.value)
