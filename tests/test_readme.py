"""The short README: its limits, its commands and its Python quick start agree with the code.

The details live in the documentation site (``docs/``, checked by ``test_docs.py`` and
``test_site.py``); the README keeps a paragraph, the two set-up commands, a quick start, a table
of links into the site, the headline figure, and the licence.
"""

import argparse
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
SETUP_COMMANDS = (
    'pip install -e ".[test]" && gd-jax train',
    'pip install -e ".[test]" && pytest',
)


def test_readme_is_short():
    lines = README.count("\n")
    assert lines <= 200, f"README.md has {lines} lines; keep it at most 200 and move details into docs/"


def test_readme_keeps_the_two_setup_commands_after_the_venv_line():
    block = re.search(r"## Set-up: two commands\n.*?```bash\n(.*?)```", README, re.S)
    assert block, "README.md has no '## Set-up: two commands' section with a bash block"
    lines = [line.split("#")[0].strip() for line in block[1].splitlines()]
    assert lines[0].startswith("python3 -m venv"), f"the venv line comes first: {lines}"
    assert lines[1:3] == list(SETUP_COMMANDS), f"the two set-up commands should read {SETUP_COMMANDS}: {lines}"


def test_every_file_the_readme_links_exists():
    missing = [target for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README)
               if not re.match(r"\w+://", target) and not (ROOT / target).exists()]
    assert not missing, f"README.md links files the repository does not hold: {missing}"


def test_headline_figure_is_a_committed_result():
    images = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", README)
    assert images, "README.md shows no figure"
    for image in images:
        assert image.startswith("experiments/results/") and (ROOT / image).exists(), image


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def test_every_gd_jax_command_and_option_in_the_readme_exists():
    """Each ``gd-jax SUBCOMMAND --option`` written in the README's shell blocks is one the parser has."""
    from gd_jax.cli import build_parser

    parser = build_parser()
    commands = _commands(parser)
    problems = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        for line in block.splitlines():
            for part in re.split(r"&&|;", line.split("#")[0]):
                words = shlex.split(part)
                if not words or words[0] != "gd-jax" or len(words) < 2:
                    continue
                sub = commands.get(words[1])
                if sub is None:
                    problems.append(f"no subcommand {words[1]!r}: {part.strip()}")
                    continue
                flags = {f for a in sub._actions for f in a.option_strings}
                problems += [f"gd-jax {words[1]} has no {w}" for w in words[2:]
                             if w.startswith("--") and w.split("=")[0] not in flags]
    assert not problems, problems


@pytest.mark.slow
def test_readme_python_quick_start_runs(check_recorded_accuracy):
    block = re.search(r"## Quick start\n.*?```python\n(.*?)```", README, re.S)[1]
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)
    # It trains the textbook network for 30 epochs with keys 0 and 1 (a run that does not stall;
    # a stalled one ends near 0.8, chance is 0.1).
    assert namespace["g"][0]["w"].shape == (784, 30)
    assert len(namespace["history"]) == 30
    check_recorded_accuracy(namespace["gd"].accuracy(namespace["params"], namespace["test"]), "README quick start")
