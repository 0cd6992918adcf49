"""The documentation site says what the code does, and its examples run.

- The reference pages are generated (``docs/gen/``); these tests check that what they generate
  covers the code: every name of ``gd_jax.__all__``, every subcommand and option of ``gd-jax``.
  Where the site is built (``site/``), they check the built pages too.
- Every ```python block of ``docs/**/*.md`` runs, each page's blocks in order in one fresh
  process (as a reader would paste them), and every ```pycon block runs as a doctest with its
  shown output checked. A block that cannot run here (several hosts, say) is preceded by an
  ``<!-- not run: why -->`` comment; there should be few.
- Every example in the docstrings of the public API is a ``>>>`` doctest, and runs with its output
  checked (the names ``gd``, ``jax`` and ``jnp`` are imported for it).
- No measured figure is typed by hand: the prose of the docs and the README holds no measured-looking
  number (those live in the results pages, rendered from committed data).
"""

from __future__ import annotations

import argparse
import copy
import doctest
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import gd_jax as gd

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SITE = Path(os.environ.get("GD_JAX_SITE", ROOT / "site"))
sys.path.insert(0, str(DOCS / "gen"))

import gen_api  # noqa: E402
import gen_cli  # noqa: E402
import gen_results  # noqa: E402

PAGES = sorted(p for p in DOCS.rglob("*.md") if "gen" not in p.relative_to(DOCS).parts)


# --- the reference covers the code ----------------------------------------------------------------------------


def test_every_name_in_gd_jax_all_exists():
    absent = [name for name in gd.__all__ if not hasattr(gd, name)]
    assert not absent, f"gd_jax.__all__ names {absent}, which gd_jax does not define or import"


def test_api_page_documents_exactly_gd_jax_all():
    page = gen_api.api_page()
    documented = re.findall(r"^::: gd_jax\.(\w+)$", page, re.M)
    assert sorted(documented) == sorted(gd.__all__), (
        f"missing {sorted(set(gd.__all__) - set(documented))}, extra {sorted(set(documented) - set(gd.__all__))}")
    assert len(documented) == len(set(documented)), "a name is documented twice"


def test_every_public_name_has_a_docstring():
    missing = [n for n in gd.__all__ if not isinstance(getattr(gd, n), (dict, tuple))
               and not (getattr(gd, n).__doc__ or "").strip()]
    assert not missing, f"public names without a docstring (the API page would be empty for them): {missing}"


def _walk(parser: argparse.ArgumentParser, prefix="gd-jax"):
    yield prefix, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(sub, f"{prefix} {name}")


def test_cli_page_lists_every_subcommand_and_option():
    from gd_jax.cli import build_parser

    page = gen_cli.cli_page()
    missing = []
    for command, parser in _walk(build_parser()):
        if command != "gd-jax" and f"## {command} " not in page:
            missing.append(command)
        section = page.split(f"## {command} ")[-1].split("\n## ")[0] if command != "gd-jax" else page
        for action in parser._actions:
            for flag in action.option_strings:
                if f"`{flag}`" not in section:
                    missing.append(f"{command} {flag}")
    assert not missing, f"the generated CLI page lacks {missing}"


def test_built_site_has_every_page_name_and_option():
    if not (SITE / "index.html").exists():
        pytest.skip(f"no built site at {SITE} (mkdocs build --strict, or .ci/docs)")
    api = (SITE / "reference" / "api" / "index.html").read_text()
    missing = [n for n in gd.__all__ if f'id="gd_jax.{n}"' not in api]
    assert not missing, f"the built API page has no entry for {missing}"
    cli = (SITE / "reference" / "cli" / "index.html").read_text()
    from gd_jax.cli import build_parser

    train = dict(_walk(build_parser()))["gd-jax train"]
    absent = [f for a in train._actions for f in a.option_strings if f"<code>{f}</code>" not in cli]
    assert not absent, f"the built CLI page lacks the train options {absent}"
    for tutorial in ("textbook", "chapter3", "sweep", "own_model"):
        html = (SITE / "tutorials" / tutorial / "index.html").read_text()
        assert "Traceback" not in html, f"tutorial {tutorial} shows an error"
    figures = (SITE / "tutorials" / "textbook" / "index.html").read_text().count("data:image/png")
    assert figures >= 1, "the textbook tutorial's figure was not drawn at build"


# --- the code blocks run ----------------------------------------------------------------------------------------

_FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<kind>python|pycon)[^\n]*\n(?P<code>.*?)^(?P=indent)```[ \t]*$",
                    re.S | re.M)
_NOT_RUN = re.compile(r"<!--\s*not run:\s*(.+?)\s*-->\s*\Z")


def code_blocks(path: Path) -> list[dict]:
    """Each ```python / ```pycon block of a page: kind, code, line, and why it is not run (None: it runs)."""
    text = path.read_text()
    blocks = []
    for match in _FENCE.finditer(text):
        before = text[:match.start()].rstrip()
        not_run = _NOT_RUN.search(before)
        indent = match["indent"]
        code = "".join(line[len(indent):] + "\n" for line in match["code"].splitlines())
        blocks.append({"kind": match["kind"], "code": code, "line": text.count("\n", 0, match.start()) + 2,
                       "not_run": not_run[1] if not_run else None})
    return blocks


RUNNER = r"""
import doctest, json, sys
page, blocks = sys.argv[1], json.loads(sys.stdin.read())
namespace = {"__name__": "__docs__"}
for block in blocks:
    where = f"{page}:{block['line']}"
    if block["kind"] == "python":
        exec(compile(block["code"], where, "exec"), namespace)
        continue
    test = doctest.DocTestParser().get_doctest(block["code"], namespace, where, page, block["line"])
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    runner.run(test, clear_globs=False)
    namespace.update(test.globs)  # DocTest copies the globals it is given: keep what the block defined
    if runner.failures:
        sys.exit(f"{runner.failures} doctest failure(s) in the pycon block at {where}")
"""

RUNNABLE = [p for p in PAGES if any(b["not_run"] is None for b in code_blocks(p))]


@pytest.mark.slow
@pytest.mark.parametrize("page", RUNNABLE, ids=[str(p.relative_to(DOCS)) for p in RUNNABLE])
def test_code_blocks_of_the_page_run(page, tmp_path):
    blocks = [b for b in code_blocks(page) if b["not_run"] is None]
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    done = subprocess.run([sys.executable, "-c", RUNNER, str(page.relative_to(ROOT))], input=json.dumps(blocks),
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=900)
    assert done.returncode == 0, f"{page.relative_to(ROOT)}'s code blocks failed:\n{done.stdout[-3000:]}\n" \
                                 f"{done.stderr[-3000:]}"


def test_few_blocks_are_marked_not_run():
    marked = [(str(p.relative_to(DOCS)), b["line"], b["not_run"]) for p in PAGES for b in code_blocks(p)
              if b["not_run"]]
    assert len(marked) <= 3, f"blocks not run in CI should be few: {marked}"


def test_the_block_parser_sees_every_python_fence():
    for page in PAGES:
        fences = len(re.findall(r"^[ \t]*```(?:python|pycon)\b", page.read_text(), re.M))
        assert fences == len(code_blocks(page)), f"{page}: a python fence the block parser does not read"


# --- docstring examples run -------------------------------------------------------------------------------------


def _public_objects():
    """``(name, object)`` of the package docstring and every public name (classes with their methods)."""
    yield "gd_jax", gd
    seen = set()
    for name in gd.__all__:
        obj = getattr(gd, name)
        if isinstance(obj, (dict, tuple, list)) or id(obj) in seen:
            continue
        seen.add(id(obj))
        yield f"gd_jax.{name}", obj


def _docstring_tests():
    for name, obj in _public_objects():
        finder = doctest.DocTestFinder(exclude_empty=True, recurse=obj is not gd)
        for test in finder.find(obj, name, globs={}):
            if test.examples:
                yield pytest.param(test, id=test.name)


DOCTESTS = list(_docstring_tests())


def test_there_are_docstring_examples_and_all_are_doctests():
    """An example in a public docstring is a ``>>>`` doctest (run below), never an unchecked literal block."""
    assert len(DOCTESTS) >= 5, f"only {len(DOCTESTS)} public docstrings have >>> examples"
    literal = [name for name, obj in _public_objects() if "Example::" in (obj.__doc__ or "")]
    for name, obj in _public_objects():
        if isinstance(obj, type):
            literal += [f"{name}.{m}" for m, f in vars(obj).items() if "Example::" in (getattr(f, "__doc__", "") or "")]
    assert not literal, f"write these docstrings' examples as >>> doctests (with their output): {literal}"


@pytest.mark.parametrize("test", DOCTESTS)
def test_docstring_examples_run(test):
    import jax
    import jax.numpy as jnp

    test.globs.update({"gd": gd, "jax": jax, "jnp": jnp})
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    runner.run(test)
    assert runner.failures == 0, f"{test.name}: {runner.failures} of {len(test.examples)} examples failed (above)"


# --- no figure typed by hand, no dangling file -------------------------------------------------------------------

# A measured-looking number: a fraction with three or more decimals (0.8974), a percentage with
# decimals (95.42%), a speed-up (4.1x; a plain 10x is advice) or a time in (milli)seconds (0.7 ms, 1.3 s).
_MEASURED = re.compile(r"(?<![\w.])(?:\d+\.\d{3,}|\d+\.\d+ ?%|\d+\.\d+x\b|\d+\.\d+ ?m?s\b)")


def _prose(path: Path) -> str:
    """Markdown text without its code (fenced or inline): numbers in code are inputs, not results."""
    text = path.read_text()
    if path.suffix == ".py":  # a jupytext notebook: its markdown cells only
        cells = re.split(r"^# %%", text, flags=re.M)
        text = "\n".join(re.sub(r"^# ?", "", c, flags=re.M) for c in cells if c.startswith(" [markdown]"))
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    return re.sub(r"`[^`\n]*`", "", text)


@pytest.mark.parametrize("path", [*PAGES, *sorted((DOCS / "tutorials").glob("*.py")), ROOT / "README.md"],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_no_measured_figure_is_typed_by_hand(path):
    found = _MEASURED.findall(_prose(path))
    assert not found, (f"{path.relative_to(ROOT)} types measured-looking figures {found}: render them from "
                       "committed data (docs/gen/gen_results.py) or compute them in an executed tutorial")


_MD_REFERENCE = re.compile(r"(?<![\w/.-])((?:[\w.-]+/)*[\w.-]+\.md)\b")


def _text_files():
    for path in sorted(ROOT.rglob("*")):
        if path.suffix in {".py", ".md", ".toml", ".yml"} and not any(
                part.startswith(".") or part in {"runs", "build", "dist", "site"}
                for part in path.relative_to(ROOT).parts):
            yield path


def test_every_markdown_file_cited_exists():
    """A Markdown file a source or document names exists, relative to it, to the root or to docs/."""
    missing = []
    for path in _text_files():
        for cited in set(_MD_REFERENCE.findall(path.read_text(errors="replace"))):
            bare = re.sub(r"^(?:\.\./)+", "", cited)
            if cited == "results.md" or bare.startswith(("reference/", "results/")) or "gen" in path.parts:
                continue  # each experiment's report; the pages docs/gen/ generates at build
            if not any((base / cited).exists() for base in (path.parent, ROOT, DOCS)):
                missing.append(f"{path.relative_to(ROOT)} cites {cited}")
    assert not missing, "cited files that the repository does not hold: " + "; ".join(sorted(missing))


def test_the_bench_page_shows_the_newest_run_with_the_runs_of_its_commit(tmp_path):
    full = [data for p in sorted((ROOT / gen_results.BENCH).glob("*.json"))
            if len((data := json.loads(p.read_text())).get("batch_sizes", [])) > 1]
    if not full:
        pytest.skip("no committed bench result of several batch sizes to build the page's fixtures from")
    base = full[-1]

    def bench(name, started, commit, target):
        data = {**base, "started": started, "source": {"commit": commit}, "command": f"gd-jax bench {name}",
                "machine": {**base["machine"], "xla": {"NPROC": "1"}}, "load_warning": None,
                "targets": [{"target": target, "value": 1.5, "value_of_mins": 1.4, "goal": 1.0, "met": True}]}
        data["batch_sizes"] = copy.deepcopy(base["batch_sizes"])
        for table in data["batch_sizes"]:  # optax compiled to gd_jax's program, timed 5% apart in the newest run
            table["variants"]["optax"].update(same_program_as_gd_jax=name == "newest", gd_jax_speedup=1.05)
        path = tmp_path / gen_results.BENCH / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data))

    bench("old", "2026-01-01T00:00:00Z", "aaaa", "old target")
    bench("newest", "2026-01-02T00:00:00Z", "bbbb", "newest target")
    # A run of one batch size after the full run, at its commit, is the full run's companion, not the page's subject.
    bench("same-commit", "2026-01-03T00:00:00Z", "bbbb", "bs 10: |optax / gd_jax - 1|")
    companion = tmp_path / gen_results.BENCH / "same-commit.json"
    companion.write_text(json.dumps({**json.loads(companion.read_text()),
                                     "batch_sizes": json.loads(companion.read_text())["batch_sizes"][:1]}))
    assert gen_results.newest_bench(tmp_path).name == "newest.json"
    page = gen_results.bench_page(tmp_path)
    assert "`" + str(Path(gen_results.BENCH) / "newest.json") + "`" in page and "| newest target | 1.5 |" in page
    assert "## At the same commit: `same-commit.json`" in page and "NPROC=1" in page
    assert "| bs 10: \\|optax / gd_jax - 1\\| | 1.5 | 1.4 |" in page  # the bars escaped: one row, six cells
    assert "Older committed results: `old.json` (" in page
    sizes = [table["batch_size"] for table in base["batch_sizes"]]
    assert page.count("Noise: variants that compiled to gd_jax's own program were timed 5.0% at batch "
                      f"{sizes[0]} (optax)") == 1  # the newest run's, not its companion's
