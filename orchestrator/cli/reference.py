"""The CLI reference as Markdown, read back from the argparse parser itself.

The documentation site's CLI page is generated from this at build time (the mkdocs hook
in ``scripts/mkdocs_hooks.py``), so every command, option, choice and default the parser
knows is documented and nothing is written twice: a new option shows up in the docs the
moment it is added to its command's ``add_arguments``.

    from orchestrator.cli.reference import cli_markdown
    print(cli_markdown())
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator

from orchestrator.cli import build_parser

__all__ = ["anchor", "cli_markdown", "commands"]

USAGE_WIDTH = 72  # usage lines wrapped as argparse wraps them, narrow enough for the page


def cli_markdown(parser: argparse.ArgumentParser | None = None, *, level: int = 2) -> str:
    """Markdown for every command of `parser` (default: the whole `orchestrator` command):
    a heading per command (``## `orchestrator up` ``), its description, its usage line,
    and a table of its arguments with their help, choices and defaults."""
    root = parser or build_parser()
    sections = [_section((root.prog,), root, level, top=True)]
    sections += [_section(path, p, level + len(path) - 2) for path, p in commands(root)]
    return "\n".join(sections)


def commands(parser: argparse.ArgumentParser
             ) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every command below `parser` with its path, depth first in the parser's order
    (``("orchestrator", "images", "build")``); the top level itself is not listed."""
    yield from _below((parser.prog,), parser)


def _below(path: tuple[str, ...], parser: argparse.ArgumentParser
           ) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    for action in parser._actions:  # argparse keeps no public view of its arguments
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*path, name), sub
                yield from _below((*path, name), sub)


def _section(path: tuple[str, ...], parser: argparse.ArgumentParser, level: int, *,
             top: bool = False) -> str:
    lines = [f"{'#' * max(level, 2)} `{' '.join(path)}`", ""]
    if parser.description:
        lines += [_one_paragraph(parser.description), ""]
    lines += ["```text", _usage(parser), "```", ""]
    rows = list(_rows(parser, path))
    if rows:
        lines += ["| argument | meaning |", "|---|---|", *rows, ""]
    if top and parser.epilog:
        lines += [_one_paragraph(parser.epilog), ""]
    return "\n".join(lines)


def anchor(path: tuple[str, ...]) -> str:
    """The id the docs site gives a command's heading (``orchestrator-images-build``)."""
    return "-".join(path)


def _usage(parser: argparse.ArgumentParser) -> str:
    formatter = argparse.HelpFormatter(parser.prog, width=USAGE_WIDTH)
    formatter.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups)
    return formatter.format_help().strip()


def _rows(parser: argparse.ArgumentParser, path: tuple[str, ...]) -> Iterator[str]:
    formatter = argparse.HelpFormatter(parser.prog, width=USAGE_WIDTH)
    for action in parser._actions:
        if action.help == argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
            continue
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                link = anchor((*path, choice.dest))
                yield f"| [`{choice.dest}`](#{link}) | {_cell(choice.help or '')} |"
            continue
        yield f"| {_invocation(action)} | {_cell(_meaning(formatter, action))} |"


def _invocation(action: argparse.Action) -> str:
    if not action.option_strings:
        return f"`{action.metavar or action.dest}`"
    if action.nargs == 0:
        return ", ".join(f"`{flag}`" for flag in action.option_strings)
    choices = "{" + ",".join(str(c) for c in action.choices) + "}" if action.choices else ""
    value = action.metavar or choices or action.dest.upper()
    value = " ".join(value) if isinstance(value, tuple) else value
    return ", ".join(f"`{flag} {value}`" for flag in action.option_strings)


def _meaning(formatter: argparse.HelpFormatter, action: argparse.Action) -> str:
    text = formatter._expand_help(action) if action.help else ""
    extra = []
    if action.choices and not isinstance(action, argparse._SubParsersAction):
        extra.append("one of " + ", ".join(f"`{c}`" for c in action.choices))
    default = action.default
    if (action.option_strings and action.nargs != 0 and default not in (None, [], ())
            and default is not argparse.SUPPRESS and "default" not in text):
        extra.append(f"default `{default}`")
    if isinstance(action, argparse._AppendAction) and "repeatable" not in text:
        extra.append("repeatable")
    return "; ".join(part for part in [text.rstrip("."), *extra] if part)


def _one_paragraph(text: str) -> str:
    return " ".join(text.split())


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")
