"""`orchestrator completion bash|zsh`: a completion script generated from the argparse
parser itself, so every command, option and choice the parser knows is completed and
nothing is written twice.

    source <(orchestrator completion bash)     # in ~/.bashrc
    source <(orchestrator completion zsh)      # in ~/.zshrc (after compinit)

Deployment names (the NAME argument) are completed from the engine's labels through the
docker CLI when it is installed; option values that are paths (-f/--file, -o/--output)
complete file names; options with choices complete those.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from orchestrator.cli import build_parser
from orchestrator.cli.base import EXIT_OK

SHELLS = ("bash", "zsh")
_PATH_DESTS = frozenset({"file", "output"})  # option values that are file paths
_NAMES = ("docker ps -a --filter label=orchestrator.managed=true "
          "--format '{{.Label \"orchestrator.deployment\"}}' 2>/dev/null | sort -u")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.set_defaults(handler=run)
    p.add_argument("shell", choices=SHELLS, help="the shell to complete in")


def run(args: argparse.Namespace) -> int:
    """Print the script for `args.shell`."""
    root = command_tree(build_parser())
    sys.stdout.write(bash_script(root) if args.shell == "bash" else zsh_script(root))
    return EXIT_OK


# -- the parser as a tree ---------------------------------------------------------------


@dataclass(frozen=True)
class Option:
    flags: tuple[str, ...]
    help: str
    takes_value: bool
    choices: tuple[str, ...] = ()
    path: bool = False


@dataclass(frozen=True)
class Positional:
    metavar: str
    help: str
    choices: tuple[str, ...] = ()
    deployment: bool = False  # a deployment name: completed from the engine
    many: bool = False  # takes the rest of the line
    optional: bool = False


@dataclass(frozen=True)
class Node:
    """One command (the root has the empty path) with its options, positionals and
    sub-commands."""

    path: tuple[str, ...]
    help: str
    options: tuple[Option, ...]
    positionals: tuple[Positional, ...]
    children: tuple[Node, ...]

    def walk(self) -> Iterator[Node]:
        yield self
        for child in self.children:
            yield from child.walk()

    @property
    def key(self) -> str:
        return " ".join(self.path)


def command_tree(parser: argparse.ArgumentParser, path: tuple[str, ...] = (),
                 help_text: str = "") -> Node:
    """The parser's commands, options and positionals (argparse keeps them in `_actions`,
    the only way to read a parser back)."""
    options: list[Option] = []
    positionals: list[Positional] = []
    children: list[Node] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            children += [command_tree(sub, (*path, name), helps.get(name, ""))
                         for name, sub in action.choices.items()]
        elif action.option_strings:
            options.append(Option(
                tuple(action.option_strings), action.help or "", action.nargs != 0,
                tuple(str(c) for c in action.choices or ()), action.dest in _PATH_DESTS))
        else:
            positionals.append(Positional(
                str(action.metavar or action.dest), action.help or "",
                tuple(str(c) for c in action.choices or ()), action.dest == "name",
                action.nargs in ("+", "*", argparse.REMAINDER), action.nargs == "?"))
    return Node(path, help_text, tuple(options), tuple(positionals), tuple(children))


# -- bash -------------------------------------------------------------------------------


def bash_script(root: Node) -> str:
    """A `complete -F` function: finds the command path in the words before the cursor
    (skipping option values), then completes a sub-command, an option, an option's value
    or the positional at that index."""
    nodes = list(root.walk())
    valued = [f'"{n.key}|{f}"' for n in nodes for o in n.options if o.takes_value
              for f in o.flags]
    commands = [f'"{" ".join(c.path[:-1])}|{c.path[-1]}"' for n in nodes for c in n.children]
    return _BASH.format(
        valued="|".join(valued), commands="|".join(commands),
        values="\n".join(_bash_value_case(n, o) for n in nodes for o in n.options
                         if o.takes_value),
        options="\n".join(_bash_case(f'"{n.key}"', (f for o in n.options for f in o.flags))
                          for n in nodes),
        words="\n".join(case for n in nodes for case in _bash_word_cases(n)), names=_NAMES)


def _bash_case(pattern: str, words: Iterable[str]) -> str:
    return f'        {pattern}) words="{" ".join(words)}" ;;'


def _bash_value_case(node: Node, option: Option) -> str:
    """What follows an option that takes a value: a file, a choice, or nothing to offer
    (a number or a name)."""
    keys = "|".join(f'"{node.key}|{f}"' for f in option.flags)
    if option.path:
        action = 'compopt -o filenames 2>/dev/null; COMPREPLY=($(compgen -f -- "$cur"))'
    elif option.choices:
        action = f'COMPREPLY=($(compgen -W "{" ".join(option.choices)}" -- "$cur"))'
    else:
        action = ":"
    return f"        {keys}) {action}; return 0 ;;"


def _bash_word_cases(node: Node) -> Iterator[str]:
    """Cases on "path|index of the positional": sub-commands, choices, deployment names."""
    if node.children:
        yield _bash_case(f'"{node.key}|"*', (c.path[-1] for c in node.children))
    for index, p in enumerate(node.positionals):
        pattern = f'"{node.key}|"*' if p.many else f'"{node.key}|{index}"'
        if p.choices:
            yield _bash_case(pattern, p.choices)
        elif p.deployment:
            yield _bash_case(pattern, ["$(_orchestrator_names)"])


_BASH = """# bash completion for orchestrator, generated by `orchestrator completion bash`.
# Load it with:  source <(orchestrator completion bash)

_orchestrator_names() {{
    command -v docker >/dev/null 2>&1 || return 0
    {names}
}}

_orchestrator() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}" prev="${{COMP_WORDS[COMP_CWORD-1]}}"
    local path="" word words="" i skip=0 npos=0
    COMPREPLY=()
    for ((i = 1; i < COMP_CWORD; i++)); do
        word="${{COMP_WORDS[i]}}"
        if ((skip)); then skip=0; continue; fi
        [[ "$word" == "--" ]] && return 0  # the rest is a command for the pod
        case "$path|$word" in
            {valued}) skip=1; continue ;;
            {commands}) path="${{path:+$path }}$word"; npos=0; continue ;;
        esac
        [[ "$word" != -* ]] && ((npos++))
    done
    case "$path|$prev" in
{values}
    esac
    if [[ "$cur" == -* ]]; then
        case "$path" in
{options}
        esac
    else
        case "$path|$npos" in
{words}
        esac
    fi
    [[ -n "$words" ]] && COMPREPLY=($(compgen -W "$words" -- "$cur"))
    return 0
}}

complete -F _orchestrator orchestrator
"""


# -- zsh --------------------------------------------------------------------------------


def zsh_script(root: Node) -> str:
    """One `_arguments` function per command; sub-commands through `->` states."""
    functions = "\n".join(_zsh_function(node) for node in root.walk())
    return _ZSH.format(functions=functions, names=_NAMES)


def _zsh_function(node: Node) -> str:
    name = "_".join(("_orchestrator", *node.path))
    specs = [_zsh_option(o) for o in node.options]
    for index, p in enumerate(node.positionals, start=1):
        action = (f"({' '.join(p.choices)})" if p.choices else
                  "_orchestrator_names" if p.deployment else "_normal" if p.many else " ")
        where = "*:" if p.many else f"{index}:" + (":" if p.optional else "")
        specs.append(f"'{where}{_zsh_text(p.metavar)}:{action}'")
    if not node.children:
        body = "    _arguments -s \\\n        " + " \\\n        ".join(specs)
        return f"{name}() {{\n{body}\n}}\n"
    described = " ".join(f"'{c.path[-1]}:{_zsh_text(c.help)}'" for c in node.children)
    dispatch = "\n".join(f"                {c.path[-1]}) {'_'.join(('_orchestrator', *c.path))} ;;"
                         for c in node.children)
    return (f"{name}() {{\n    local curcontext=\"$curcontext\" state line\n"
            f"    _arguments -C \\\n        " + " \\\n        ".join(specs)
            + " \\\n        '1:command:->command' \\\n        '*::arg:->args'\n"
            f"    case $state in\n        command)\n"
            f"            local -a commands\n            commands=({described})\n"
            f"            _describe 'command' commands ;;\n"
            f"        args)\n            case $words[1] in\n{dispatch}\n            esac ;;\n"
            f"    esac\n}}\n")


def _zsh_option(option: Option) -> str:
    text = f"[{_zsh_text(option.help)}]"
    if option.takes_value:
        action = ("_files" if option.path else f"({' '.join(option.choices)})"
                  if option.choices else " ")
        text += f":value:{action}"
    if len(option.flags) == 1:
        return f"'{option.flags[0]}{text}'"
    return f"'({' '.join(option.flags)})'{{{','.join(option.flags)}}}'{text}'"


def _zsh_text(text: str) -> str:
    """A help text safe inside '...' and an _arguments [description] or message."""
    for bad, good in (("'", ""), ("[", "("), ("]", ")"), (":", " -"), ("`", ""),
                      ("\\", "/"), ("$", "")):
        text = text.replace(bad, good)
    return " ".join(text.split())


_ZSH = """#compdef orchestrator
# zsh completion for orchestrator, generated by `orchestrator completion zsh`.
# Load it with:  source <(orchestrator completion zsh)   (after compinit), or save it as
# _orchestrator in a directory of $fpath.

_orchestrator_names() {{
    local -a names
    (( $+commands[docker] )) || return 0
    names=(${{(f)"$({names})"}})
    _describe 'deployment' names
}}

{functions}
if [[ "${{zsh_eval_context[-1]}}" == loadautofunc ]]; then
    _orchestrator "$@"
else
    compdef _orchestrator orchestrator
fi
"""
