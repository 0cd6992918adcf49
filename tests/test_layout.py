"""The house: one public surface, private internals, layers without cycles, a light core.

These check the layout the architecture page of the docs describes with the project's own tools: import-linter's
contracts (pyproject.toml), the public ``__all__``, what ``import gd_jax`` loads, and which
imports may sit inside functions.
"""

import ast
import importlib
import pathlib
import pkgutil
import shutil
import subprocess
import sys
import textwrap
import tomllib

import pytest

import gd_jax

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "gd_jax"
# What `import gd_jax` must not load: the command line, and every optional dependency.
OPTIONAL = ("matplotlib", "PIL", "tensorboard", "tqdm", "tensorflow_datasets", "array_record", "torch")
# The only modules a function may import: optional dependencies (imported where used), the
# module that wraps tensorflow-datasets, and the one guarded reader of JAX's private state.
LAZY_ALLOWED = (*OPTIONAL, "requests", "threadpoolctl", "gd_jax._src.data.tfds_mnist", "jax._src", "resource", "fcntl")


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120,
                          cwd=ROOT)


def test_import_gd_jax_loads_no_cli_module_and_no_optional_dependency():
    done = _run("""
        import sys
        import gd_jax
        print(" ".join(sorted(m for m in sys.modules)))
    """)
    assert done.returncode == 0, done.stderr
    loaded = done.stdout.split()
    assert [m for m in loaded if m.startswith("gd_jax.cli")] == []
    assert [m for m in loaded if m.split(".")[0] in OPTIONAL] == []


def _public_modules():
    """Every module of gd_jax whose dotted name has no private part, the command line apart."""
    for info in pkgutil.walk_packages(gd_jax.__path__, "gd_jax."):
        parts = info.name.split(".")
        if not any(p.startswith("_") for p in parts) and parts[1] != "cli":
            yield info.name


def test_every_public_module_lists_only_public_api_in_its_all():
    for name in ["gd_jax", *_public_modules()]:
        module = importlib.import_module(name)
        extra = sorted(set(getattr(module, "__all__", [])) - set(gd_jax.__all__))
        assert not extra, f"{name}.__all__ lists {extra}, which are not in gd_jax.__all__"


def test_gd_jax_all_is_sorted_unique_and_every_name_resolves():
    names = gd_jax.__all__
    assert names == sorted(set(names), key=names.index) and len(names) == len(set(names))
    missing = [n for n in names if not hasattr(gd_jax, n)]
    assert not missing
    public_attributes = {n for n in vars(gd_jax) if not n.startswith("_")} - {"cli"}
    unlisted = sorted(public_attributes - set(names) - {"annotations"})
    assert not unlisted, f"gd_jax exposes {unlisted} outside __all__: import them privately or list them"


def test_the_command_line_offers_python_only_its_entry_points():
    import gd_jax.cli

    assert gd_jax.cli.__all__ == ["build_parser", "main", "run"]
    # The gd-jax program is the one that exits (run); main returns the status to a caller that goes on.
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"gd-jax": "gd_jax.cli.main:run"}


def _function_level_imports(path: pathlib.Path):
    tree = ast.parse(path.read_text(), str(path))
    for func in ast.walk(tree):
        if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(func):
            if isinstance(node, ast.Import):
                yield from ((node.lineno, alias.name) for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                # `from a.b import c` may import the module a.b.c: judge by the fullest name
                yield from ((node.lineno, f"{node.module}.{alias.name}") for alias in node.names)


def test_a_function_level_import_is_only_for_an_optional_dependency():
    offending = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for line, module in _function_level_imports(path):
            if not any(module == a or module.startswith(a + ".") for a in LAZY_ALLOWED):
                offending.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert not offending, "import these at module level (a lazy import hides a cycle):\n" + "\n".join(offending)


@pytest.mark.skipif(shutil.which("lint-imports") is None and not (pathlib.Path(sys.executable).parent
                                                                  / "lint-imports").exists(),
                    reason="import-linter is not installed (pip install -e '.[test]')")
def test_import_linter_contracts_are_kept():
    exe = shutil.which("lint-imports") or str(pathlib.Path(sys.executable).parent / "lint-imports")
    done = subprocess.run([exe, "--no-cache"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


BLOCK_OPTIONAL = f"""
import importlib.abc, sys

class _Absent(importlib.abc.MetaPathFinder):  # a venv with only jax, jaxlib, numpy and optax
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {OPTIONAL!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, _Absent())
"""


def test_the_core_trains_without_any_optional_dependency():
    done = _run(BLOCK_OPTIONAL + """
import jax
import gd_jax as gd

train, test = gd.load_mnist("sample")
params = gd.init_mlp(jax.random.key(0), [784, 30, 10])
params, history = gd.fit(params, train,
                         eval_data=gd.Dataset(test.x[:1000], test.y[:1000]), epochs=2, batch_size=10,
                         optimizer=gd.sgd(3.0), cost=gd.quadratic_cost, key=jax.random.key(1))
print(len(history), history.epochs[-1]["eval_accuracy"] > 0.5)
""")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["2", "True"]


@pytest.mark.parametrize(("call", "extra"), [
    ("gd.plot_history(gd.History(), '/tmp/x.png')", "viz"),
    ("gd.load_mnist('mnist', idx_dir='/nonexistent')", "mnist"),
    ("gd.preprocess_digit('/tmp/x.png')", "viz"),
])
def test_a_missing_optional_dependency_names_the_extra_in_one_line(call, extra):
    done = _run(BLOCK_OPTIONAL + f"""
import gd_jax as gd
try:
    {call}
except ModuleNotFoundError as e:
    print(type(e).__name__, e)
""")
    assert done.returncode == 0, done.stderr[-3000:]
    line = done.stdout.strip()
    assert "\n" not in line and f"pip install 'gd-jax[{extra}]'" in line, line
