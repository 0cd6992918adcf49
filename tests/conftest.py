"""Shared fixtures and the test session's numerical settings.

Matrix products run at full float32 precision in every test. On Ampere and newer NVIDIA GPUs
(and on TPUs) XLA's default precision for float32 matmuls may use TF32 or bfloat16 passes,
about 3 significant digits instead of 7, which would break the comparisons of float32 training
against float64 references (``test_train``, ``test_gradients``, ``test_costs``, ``test_network``).
The setting is made through the environment before JAX reads it, so that the CLI runs the
tests start as subprocesses get it too, and through ``jax.config`` for this process.
"""

import collections
import importlib.metadata
import os
import re
from pathlib import Path

import jax
import pytest

# The CLI's persistent compilation cache stays out of the tests (and the user's cache folder):
# tests that exercise it set their own folder. Subprocesses inherit this.
os.environ.setdefault("GD_JAX_COMPILE_CACHE", "off")

import gd_jax as gd


def pytest_collection_modifyitems(config, items):
    """Runs the modules with the most ``slow`` tests first, each module's tests in their own order.

    With ``-n`` (pyproject's addopts), xdist hands whole modules to its workers in this order
    (``--dist loadfile``): the long end-to-end modules start first and the many quick ones even
    out the end, instead of one long module running alone after the rest (longest first).
    """
    module = lambda item: item.nodeid.split("::")[0]  # noqa: E731
    slow = collections.Counter(module(item) for item in items if item.get_closest_marker("slow"))
    items.sort(key=lambda item: -slow[module(item)])  # stable: ties keep pytest's order


MATMUL_PRECISION = "highest"
os.environ["JAX_DEFAULT_MATMUL_PRECISION"] = MATMUL_PRECISION
jax.config.update("jax_default_matmul_precision", MATMUL_PRECISION)

CONSTRAINTS = Path(__file__).resolve().parents[1] / ".ci" / "constraints.txt"
# The packages whose versions decide the recorded figures: the compiled arithmetic (jax, jaxlib)
# and the host-side shuffle (numpy's default_rng permutation).
NUMERIC_PACKAGES = ("jax", "jaxlib", "numpy")

# Test accuracies on the embedded sample's 10,000 test digits, measured with the tested versions on
# CPU after 30 epochs of [784, 30, 10], quadratic cost, eta 3.0, batches of 10. The README quotes them.
RECORDED_ACCURACY = {
    "gd-jax train": 0.8974,        # the CLI's defaults, seed 2 (init and shuffle keys split from key(2))
    "README quick start": 0.9030,  # the README's Python example: init key(0), shuffle key(1)
}


def _pinned_versions(path: Path = CONSTRAINTS) -> dict[str, str]:
    """``{package: version}`` from a pip constraints file of ``name==version`` lines."""
    pins = {}
    for line in path.read_text().splitlines():
        match = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)\s*==\s*([^\s;#]+).*", line)
        if match:
            pins[_normalise(match[1])] = match[2]
    return pins


def _normalise(name: str) -> str:
    """PEP 503 normalisation, so that ``array_record`` and ``array-record`` are one package."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _untested_numerics() -> list[str]:
    """Why the recorded figures may not apply here: each numeric package off its pin, or a non-CPU backend.

    Empty under the tested versions on CPU, where training is deterministic and the recorded
    accuracies are reproduced exactly.
    """
    pins = _pinned_versions()
    reasons = []
    for package in NUMERIC_PACKAGES:
        installed = importlib.metadata.version(package)
        if pins.get(package) != installed:
            reasons.append(f"{package} {installed} (tested: {pins.get(package, 'not pinned')})")
    if jax.default_backend() != "cpu":
        reasons.append(f"backend {jax.default_backend()} (recorded on cpu)")
    return reasons


@pytest.fixture(scope="session")
def check_recorded_accuracy():
    """Checks a measured accuracy against the figure this project recorded for it.

    Under the tested versions (``.ci/constraints.txt``) on CPU, training is deterministic, so the
    measured accuracy must equal the recorded one to the digit (``tolerance``: one test example
    in 10,000). With other versions or devices the arithmetic may round differently and the same
    seed may end elsewhere, so only ``floor`` is asserted: well above a stalled run (about 0.8)
    and chance (0.1).
    """
    reasons = _untested_numerics()

    def check(measured: float, run: str, *, floor: float = 0.88, tolerance: float = 1e-4) -> None:
        recorded = RECORDED_ACCURACY[run]
        if not reasons:
            assert measured == pytest.approx(recorded, abs=tolerance), (
                f"{run}: accuracy {measured:.4f}, but {recorded} was recorded with these versions on CPU; if "
                "the change meant to alter training, re-measure and update the figure here and in README.md")
        else:
            assert measured >= floor, f"{run}: accuracy {measured:.4f} < {floor} (untested: {', '.join(reasons)})"

    return check


@pytest.fixture(scope="session")
def untested_numerics():
    """Why the recorded figures may not apply in this environment; empty under the tested versions on CPU."""
    return _untested_numerics()


@pytest.fixture(scope="session")
def recorded_accuracy():
    """The recorded test accuracies, ``{run: accuracy}``."""
    return dict(RECORDED_ACCURACY)


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
    """Runs a test with float64 enabled, only inside that test: the library's default stays float32."""
    with jax.enable_x64(True):
        yield
