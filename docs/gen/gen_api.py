"""The Python API reference page, made from ``gd_jax.__all__`` at build time (never kept by hand).

Every public name gets one ``::: gd_jax.NAME`` entry for mkdocstrings, grouped by the module that
defines it (whatever the library's private layout is: ``gd_jax.train`` and ``gd_jax._src.train``
both group as *train*), with an index table of every name and its first docstring line on top.
"""

from __future__ import annotations

import inspect

# The order of the groups on the page: the layers of the library, top-down from data to show.
# A module not named here (a new one) still gets its group, after these.
GROUP_ORDER = ("data", "network", "costs", "gradients", "backprop", "optim", "epoch", "train", "seeds", "sweep",
               "parallel", "distributed", "serialization", "checkpoint", "analysis", "plotting", "tensorboard",
               "images")


def group_of(module: str | None) -> str:
    """``gd_jax._src.train`` and ``gd_jax.train`` -> ``train``; ``gd_jax.data.genuine`` -> ``data``."""
    parts = [p for p in (module or "").split(".") if p and p not in ("gd_jax", "_src")]
    return parts[0].lstrip("_") if parts else "constants"


def defining_module(gd, name: str) -> str | None:
    obj = getattr(gd, name)
    module = getattr(obj, "__module__", None)
    if isinstance(module, str) and module.startswith("gd_jax") and not isinstance(obj, (dict, tuple, list)):
        return module
    # A constant (a dict, a tuple): the gd_jax module whose namespace holds the very same object.
    import sys

    for mod_name, mod in sorted(sys.modules.items()):
        if mod_name.startswith("gd_jax.") and mod is not None and getattr(mod, name, None) is obj:
            return mod_name
    return None


def summary(obj) -> str:
    doc = inspect.getdoc(obj) if not isinstance(obj, (dict, tuple, list, str, int, float)) else None
    if not doc or (type(obj).__doc__ and doc == inspect.getdoc(type(obj))):
        return ""
    first = doc.strip().split("\n\n")[0].replace("\n", " ")
    return first.replace("|", "\\|")


def api_page() -> str:
    import gd_jax as gd

    groups: dict[str, list[str]] = {}
    for name in gd.__all__:
        groups.setdefault(group_of(defining_module(gd, name)), []).append(name)
    order = sorted(groups, key=lambda g: (GROUP_ORDER.index(g) if g in GROUP_ORDER else len(GROUP_ORDER), g))

    lines = [
        "# Python API",
        "",
        "Everything here is importable from `gd_jax` itself (`import gd_jax as gd`); this page is made at "
        "build time from `gd_jax.__all__` and the docstrings, so it lists exactly the public API. "
        "Anything not on this page is private and may change.",
        "",
        "| name | what it is |",
        "| --- | --- |",
    ]
    for group in order:
        for name in groups[group]:
            lines.append(f"| [`{name}`](#gd_jax.{name}) | {summary(getattr(gd, name))} |")
    for group in order:
        lines += ["", f"## {group}", ""]
        for name in groups[group]:
            lines += [f"::: gd_jax.{name}", ""]
    return "\n".join(lines) + "\n"
