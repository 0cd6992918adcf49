"""``.ci/run`` installs each version set in a folder of its own and runs the right suite there.

The script runs for real, on a copy of the repository's ``.ci`` folder, with a stand-in Python
that records every command instead of installing anything: what it was asked to create, install
and run, and what it left of a developer's own ``.venv``, are then plain facts to assert.
"""

import os
import shlex
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# A stand-in for python3: `-c` (the version check) succeeds, `-m venv DIR` makes DIR/bin/python a
# copy of this stand-in, pytest fails in the venv named by $CI_FAIL_SUITE, and every call is appended
# to $CI_LOG as one shell-quoted line.
STAND_IN = """#!/usr/bin/env bash
{ printf '%q ' "$0" "$@"; echo; } >> "$CI_LOG"
if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then mkdir -p "$3/bin" && cp "$0" "$3/bin/python"; fi
if [ "$2" = "pytest" ] && [[ "$0" == *"/$CI_FAIL_SUITE/"* ]]; then exit 1; fi
exit 0
"""


@pytest.fixture
def ci_copy(tmp_path):
    """A repository with this one's .ci folder, a developer's .venv holding a file, and the stand-in."""
    repo = tmp_path / "repo"
    (repo / ".ci").mkdir(parents=True)
    for name in ("run", "constraints.txt", "floor.txt", "core_check.py"):
        (repo / ".ci" / name).write_bytes((ROOT / ".ci" / name).read_bytes())
    # .ci/docs builds the site for real (mkdocs, chromium): here a stand-in records that it ran, and with which Python.
    docs = repo / ".ci" / "docs"
    docs.write_text('#!/usr/bin/env bash\necho ".ci/docs PYTHON=$PYTHON" >> "$CI_LOG"\n')
    docs.chmod(0o755)
    (repo / ".venv").mkdir()
    (repo / ".venv" / "mine").write_text("a developer's own environment")
    stand_in = tmp_path / "python3"
    stand_in.write_text(STAND_IN)
    stand_in.chmod(0o755)
    return repo, stand_in, tmp_path / "ci.log"


def _run(repo, stand_in, log, *sets, fail=""):
    env = {**os.environ, "PYTHON": str(stand_in), "CI_LOG": str(log), "CI_FAIL_SUITE": fail or "none"}
    return subprocess.run(["bash", str(repo / ".ci" / "run"), *sets], env=env, capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)


def _suites_run(log):
    """The names of the venvs whose pytest was called, in order."""
    calls = [shlex.split(line) for line in log.read_text().splitlines()]
    return [Path(call[0]).parents[1].name for call in calls if call[1:3] == ["-m", "pytest"]]


def test_ci_keeps_the_developers_venv_and_uses_its_own_folder(ci_copy):
    repo, stand_in, log = ci_copy
    done = _run(repo, stand_in, log)
    assert done.returncode == 0, done.stderr
    assert (repo / ".venv" / "mine").read_text() == "a developer's own environment"
    calls = [shlex.split(line) for line in log.read_text().splitlines()]
    made = [call[3] for call in calls if call[1:3] == ["-m", "venv"]]
    assert made == [".ci/venvs/tested", ".ci/venvs/floor", ".ci/venvs/core"]
    assert sorted(p.name for p in (repo / ".ci" / "venvs").iterdir()) == ["core", "floor", "tested"]


def test_ci_installs_each_version_set_and_runs_its_suite(ci_copy):
    repo, stand_in, log = ci_copy
    assert _run(repo, stand_in, log).returncode == 0
    by_venv: dict[str, list[list[str]]] = {}
    for line in log.read_text().splitlines():
        program, *args = shlex.split(line)
        for name in ("tested", "floor", "core"):
            if program.endswith(f".ci/venvs/{name}/bin/python"):
                by_venv.setdefault(name, []).append(args)
    installs = {name: [a for a in calls if a[:3] == ["-m", "pip", "install"]] for name, calls in by_venv.items()}
    # The tested set installs what the README's test command installs, then the docs extra for the site.
    assert installs["tested"] == [["-m", "pip", "install", "--quiet", "--constraint", ".ci/constraints.txt",
                                   "-e", ".[test]"],
                                  ["-m", "pip", "install", "--quiet", "--constraint", ".ci/constraints.txt",
                                   "-e", ".[docs,test]"]]
    assert installs["floor"] == [["-m", "pip", "install", "--quiet", "--constraint", ".ci/floor.txt", "-e", ".[test]"]]
    # The core set: the four hard requirements, gd_jax without its extras, and the check that it trains.
    assert installs["core"] == [["-m", "pip", "install", "--quiet", "--constraint", ".ci/constraints.txt", "jax",
                                 "jaxlib", "numpy", "optax"],
                                ["-m", "pip", "install", "--quiet", "--no-deps", "-e", "."]]
    assert [".ci/core_check.py"] in by_venv["core"]
    suites = {name: [a for a in calls if a[:2] == ["-m", "pytest"]] for name, calls in by_venv.items()}
    assert suites == {"tested": [["-m", "pytest"]], "floor": [["-m", "pytest", "-m", "not slow"]], "core": []}
    assert ["-m", "mypy"] in by_venv["tested"]
    assert ".ci/docs PYTHON=.ci/venvs/tested/bin/python" in log.read_text()


def test_ci_refuses_a_python_older_than_3_11(ci_copy, tmp_path):
    repo, _, log = ci_copy
    old = tmp_path / "python-old"
    old.write_text("#!/usr/bin/env bash\nif [ \"$1\" = --version ]; then echo 'Python 3.10.0'; fi\nexit 1\n")
    old.chmod(0o755)
    done = _run(repo, old, log)
    assert done.returncode == 2 and "older than 3.11; set PYTHON" in done.stderr
    assert not (repo / ".ci" / "venvs").exists() and (repo / ".venv" / "mine").exists()


def test_a_failing_suite_fails_ci_but_the_other_set_still_runs(ci_copy):
    repo, stand_in, log = ci_copy
    done = _run(repo, stand_in, log, fail="tested")
    assert done.returncode == 1
    assert _suites_run(log) == ["tested", "floor"]


@pytest.mark.parametrize(("sets", "ran"), [(["floor"], ["floor"]), (["tested"], ["tested"])])
def test_one_version_set_can_be_run_alone(ci_copy, sets, ran):
    repo, stand_in, log = ci_copy
    assert _run(repo, stand_in, log, *sets).returncode == 0
    assert _suites_run(log) == ran


def test_an_unknown_version_set_is_refused(ci_copy):
    repo, stand_in, log = ci_copy
    done = _run(repo, stand_in, log, "newest")
    assert done.returncode == 2 and "unknown set 'newest'" in done.stderr
