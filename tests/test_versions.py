"""The versions gd_jax declares are the ones CI tests, and the tests run at full float32 precision.

``pyproject.toml`` declares floors (``jax>=...``); ``.ci/floor.txt`` pins exactly those floors and
``.ci/run`` runs the suite with them installed; ``.ci/constraints.txt`` pins the tested versions,
with which the recorded figures were measured.
"""

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import jax
import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
FLOOR = ROOT / ".ci" / "floor.txt"
TESTED = ROOT / ".ci" / "constraints.txt"


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirements(group: str | None = None) -> dict[str, Requirement]:
    """``{package: requirement}``: the run dependencies, or those of one optional extra (with the extras it names)."""
    lines = PROJECT["dependencies"] if group is None else PROJECT["optional-dependencies"][group]
    found = {}
    for r in map(Requirement, lines):
        if _normalise(r.name) == _normalise(PROJECT["name"]):  # gd-jax[viz]: another extra of this project
            for extra in sorted(r.extras):
                found.update(_requirements(extra))
        else:
            found[_normalise(r.name)] = r
    return found


def pinned_versions(path: Path) -> dict[str, str]:
    """``{package: version}`` from a pip constraints file of ``name==version`` lines."""
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            (spec,) = Requirement(line).specifier
            assert spec.operator == "==", f"{path.name}: {line!r} is not a pin (name==version)"
            pins[_normalise(Requirement(line).name)] = spec.version
    return pins


def _floor(requirement: Requirement) -> str | None:
    lower = [s.version for s in requirement.specifier if s.operator == ">="]
    return lower[0] if lower else None


def test_every_dependency_has_a_floor_and_floor_txt_pins_exactly_those_floors():
    required = {**_requirements(), **_requirements("test")}
    declared = {name: _floor(r) for name, r in required.items()}
    pinned = pinned_versions(FLOOR)
    assert all(declared.values()), f"dependencies without a >= floor: {[n for n, v in declared.items() if not v]}"
    differ = {name: (declared.get(name), pinned.get(name)) for name in declared.keys() | pinned.keys()
              if Version(declared.get(name) or "0") != Version(pinned.get(name) or "0")}
    assert not differ, (f"pyproject.toml's floors and .ci/floor.txt's pins differ, {{package: (declared, pinned)}}: "
                        f"{differ}; CI tests the pins, so declare what it tests")


@pytest.mark.parametrize("group", [None, "test"])
def test_tested_versions_lie_within_the_declared_ranges(group):
    pins = pinned_versions(TESTED)
    outside = {name: pins.get(name) for name, r in _requirements(group).items()
               if name not in pins or not r.specifier.contains(pins[name], prereleases=True)}
    assert not outside, f".ci/constraints.txt pins versions outside pyproject.toml's ranges: {outside}"


def test_ruff_has_an_upper_bound():
    """The lint test runs ruff: a new release with new rules must not fail it unannounced."""
    ruff = _requirements("test")["ruff"]
    assert any(s.operator == "<" for s in ruff.specifier), f"bound ruff from above, e.g. 'ruff>=0.6,<0.18': {ruff}"


def test_ci_tested_environment_really_is_the_tested_one(untested_numerics):
    """Where .ci/run installs the tested versions, the accuracy tests must check the recorded figures."""
    if not os.environ.get("GD_JAX_CI_TESTED_VERSIONS"):
        pytest.skip("only in .ci/run's tested-versions environment (GD_JAX_CI_TESTED_VERSIONS=1)")
    assert untested_numerics == [], "CI's tested environment is off the pins: " + ", ".join(untested_numerics)


def test_matmul_precision_is_pinned_to_highest_here_and_in_subprocesses():
    """float32 products at full precision (no TF32 on GPUs) wherever the tests compare with float64."""
    assert jax.config.jax_default_matmul_precision == "highest"
    child = subprocess.run([sys.executable, "-c", "import jax; print(jax.config.jax_default_matmul_precision)"],
                           capture_output=True, text=True, timeout=120, check=True)
    assert child.stdout.strip() == "highest"
