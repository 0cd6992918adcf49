"""The command-line reference page, made from ``gd_jax.cli.build_parser()`` at build time.

It walks the parser itself: every subcommand, its description, its usage line and every option
with its flags, default, choices and help, so the page cannot disagree with ``gd-jax --help``.
"""

from __future__ import annotations

import argparse
import os


def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser, str]]:
    found = []
    for action in parser._actions:  # argparse has no public way to list its subparsers
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, sub in action.choices.items():
                found.append((name, sub, helps.get(name, "")))
    return found


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _default(action: argparse.Action) -> str:
    default = action.default
    if default in (None, argparse.SUPPRESS, False) or isinstance(action, (argparse._HelpAction,
                                                                           argparse._VersionAction)):
        return ""
    if isinstance(default, (list, tuple)):
        default = ",".join(map(str, default))
    return f"`{default}`"


def _flags(action: argparse.Action) -> str:
    if action.option_strings:
        names = ", ".join(f"`{s}`" for s in action.option_strings)
        if action.nargs != 0:
            metavar = action.metavar or (action.dest.upper() if not action.choices else None)
            if metavar:
                names += f" `{metavar}`"
        return names
    return f"`{action.metavar or action.dest}` (positional)"


def _options_table(parser: argparse.ArgumentParser) -> list[str]:
    rows = ["| option | default | choices | meaning |", "| --- | --- | --- | --- |"]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            continue
        choices = ", ".join(f"`{c}`" for c in action.choices) if action.choices else ""
        rows.append(f"| {_flags(action)} | {_default(action)} | {choices} | {_cell(action.help or '')} |")
    return rows


def _usage(parser: argparse.ArgumentParser) -> str:
    os.environ.setdefault("COLUMNS", "100")
    return parser.format_usage().strip().removeprefix("usage: ")


def cli_page() -> str:
    from gd_jax.cli import build_parser

    parser = build_parser()
    subs = _subcommands(parser)
    lines = [
        "# Command line",
        "",
        "`gd-jax` (also `python -m gd_jax`) has one subcommand per task. This page is made at build time from "
        "the command's own parser, `gd_jax.cli.build_parser()`, so it lists every subcommand and option exactly "
        "as `gd-jax SUBCOMMAND --help` does.",
        "",
        f"> {_cell(parser.description or '')}",
        "",
        "```text",
        _usage(parser),
        "```",
        "",
        "| subcommand | what it does |",
        "| --- | --- |",
    ]
    lines += [f"| [`{name}`](#gd-jax-{name}) | {_cell(help_)} |" for name, _, help_ in subs]
    lines += ["", "Options of `gd-jax` itself:", ""] + _options_table(parser)
    for name, sub, _ in subs:
        lines += ["", f"## gd-jax {name} {{#gd-jax-{name}}}", ""]
        if sub.description:
            lines += [_cell(sub.description), ""]
        lines += ["```text", _usage(sub), "```", ""]
        lines += _options_table(sub)
    return "\n".join(lines) + "\n"
