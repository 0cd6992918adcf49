"""Shared fixtures: the embedded real MNIST sample, loaded once per session."""

import os

import jax
import pytest

# The CLI's persistent compilation cache stays out of the tests (and the user's cache folder):
# tests that exercise it set their own folder. Subprocesses inherit this.
os.environ.setdefault("GD_JAX_COMPILE_CACHE", "off")

import gd_jax as gd


@pytest.fixture(scope="session")
def mnist_sample():
    """``(train, test)``: 5,000 real training digits and the official 10,000 test digits."""
    return gd.load_mnist("sample")


@pytest.fixture(scope="session")
def small_train(mnist_sample):
    """The first 300 training digits: real data, small enough for exact step-by-step references."""
    return mnist_sample[0].take(300)


@pytest.fixture
def x64():
    """Runs a test with float64 enabled (only inside that test, as DESIGN.md asks)."""
    with jax.enable_x64(True):
        yield
