"""The README and the docstrings say what the code does: names, signatures, files and figures.

Each test reads the README (or a source file) and checks one kind of claim against the code, so
that a renamed parameter, a new public name or a moved file shows up as a failing test that says
exactly which line to change.
"""

import inspect
import re
from pathlib import Path

import pytest

import gd_jax as gd

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _section(heading: str) -> str:
    """The README text under ``## heading`` up to the next heading of the same level."""
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", README, re.S | re.M)
    assert match, f"README.md has no '## {heading}' section"
    return match[1]


def _table_first_cells(text: str) -> list[str]:
    """The first cell of every body row of the Markdown tables in ``text``."""
    cells = []
    for line in text.splitlines():
        if line.startswith("|") and not re.match(r"\|\s*-", line):
            cells.append(line.split("|")[1].strip())
    return [cell for cell in cells if cell not in ("name", "module")]  # header rows


def _api_table_entries() -> list[str]:
    """Every backticked entry of the API table's first column, e.g. ``fit(params, train, *, ...)``."""
    cells = _table_first_cells(_section("The public API"))
    return [entry for cell in cells for entry in re.findall(r"`([^`]+)`", cell)]


def _name_of(entry: str) -> str:
    return re.match(r"[A-Za-z_][A-Za-z0-9_]*", entry)[0]


def test_readme_api_table_lists_exactly_gd_jax_all():
    listed = [_name_of(entry) for entry in _api_table_entries()]
    duplicated = sorted({name for name in listed if listed.count(name) > 1})
    missing = sorted(set(gd.__all__) - set(listed))
    extra = sorted(set(listed) - set(gd.__all__))
    assert not missing and not extra and not duplicated, (
        f"README.md's API table (## The public API) lacks {missing} from gd_jax.__all__ (add a row each); "
        f"lists {extra} that gd_jax.__all__ does not export (export or remove them); lists {duplicated} twice")


def test_every_name_in_gd_jax_all_exists():
    absent = [name for name in gd.__all__ if not hasattr(gd, name)]
    assert not absent, f"gd_jax.__all__ names {absent}, which gd_jax does not define or import"


def _parameters(entry: str) -> list[str] | None:
    """The parameter list an entry like ``fit(params, train, *, epochs, ...)`` shows, or None."""
    match = re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*\((.*)\)", entry)
    if not match:
        return None
    return [part.strip() for part in match[1].split(",") if part.strip()]


def _signature_claims():
    for entry in _api_table_entries():
        shown = _parameters(entry)
        if shown is not None:
            yield pytest.param(entry, shown, id=_name_of(entry))


@pytest.mark.parametrize(("entry", "shown"), list(_signature_claims()))
def test_readme_api_table_signatures_match_the_code(entry, shown):
    """Each parameter the table shows exists, in that order, keyword-only after ``*``, with the shown default."""
    obj = getattr(gd, _name_of(entry))
    params = inspect.signature(obj).parameters
    order = list(params)
    keyword_only = False
    previous = -1
    for item in shown:
        if item == "...":
            continue
        if item == "*":
            keyword_only = True
            continue
        name, _, default = (part.strip() for part in item.partition("="))
        name = name.lstrip("*")  # *args, **kwargs
        assert name in params, f"README shows `{entry}` but {obj.__name__} has no parameter {name!r} ({order})"
        where = order.index(name)
        assert where > previous, f"README shows `{entry}` but {obj.__name__}'s parameters are in the order {order}"
        previous = where
        kind = params[name].kind
        assert (kind is inspect.Parameter.KEYWORD_ONLY) == keyword_only, (
            f"README shows `{entry}` but {name!r} is {kind.description} in the code")
        if default:  # "..." stands for any default
            actual = params[name].default
            if default == "...":
                assert actual is not inspect.Parameter.empty, f"README shows `{entry}` but {name!r} has no default"
                continue
            assert actual is not inspect.Parameter.empty and repr(actual) in (default, default.replace('"', "'")), (
                f"README shows `{entry}` but {name!r} defaults to {actual!r}")


def test_readme_says_what_make_epoch_returns():
    """The prose's ``epoch(...)`` has the parameters of the function ``make_epoch`` builds."""
    shown = re.search(r"`make_epoch` builds `epoch\(([^)]*)\)`", README)
    assert shown, "README.md no longer describes the function make_epoch builds as `make_epoch` builds `epoch(...)`"
    epoch = gd.make_epoch(gd.quadratic_cost, gd.sgd(1.0), batch_size=1, n_classes=10)
    actual = list(inspect.signature(epoch).parameters)
    assert [p.strip() for p in shown[1].split(",")] == actual, f"README shows epoch({shown[1]}), the code {actual}"


# Markdown files a source or document names: each must exist in the repository, else the
# reference points readers to nothing (a docstring once cited a design note the repository lacks).
_MD_REFERENCE = re.compile(r"(?<![\w/.-])((?:[\w.-]+/)*[\w.-]+\.md)\b")


def _tracked_text_files():
    for path in sorted(ROOT.rglob("*")):
        if path.suffix in {".py", ".md", ".toml"} and not any(
                part.startswith(".") or part in {"runs", "build", "dist"} for part in path.relative_to(ROOT).parts):
            yield path


def test_every_markdown_file_cited_exists():
    missing = []
    for path in _tracked_text_files():
        for cited in set(_MD_REFERENCE.findall(path.read_text(errors="replace"))):
            if cited == "results.md":
                continue  # the report each experiment writes when it runs
            if not ((path.parent / cited).exists() or (ROOT / cited).exists()):
                missing.append(f"{path.relative_to(ROOT)} cites {cited}")
    assert not missing, "cited files that the repository does not hold: " + "; ".join(sorted(missing))


def test_readme_quotes_the_recorded_accuracies(recorded_accuracy):
    """The figures the README states are the ones the accuracy tests check (tests/conftest.py)."""
    setup, tests = _section("Set-up: two commands"), _section("Tests")
    default = f"{recorded_accuracy['gd-jax train']:.4f}"
    assert f"reaches {default} test accuracy" in setup, f"README's set-up should say the default run reaches {default}"
    for run, value in recorded_accuracy.items():
        assert f"{value:.4f}" in tests, f"README's Tests section should quote {run}'s recorded {value:.4f}"
    assert "measured on the sample by this project" in setup, "say whose figure it is: this project's, on the sample"
