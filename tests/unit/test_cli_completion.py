"""`orchestrator completion bash|zsh`: generated from the parser, so every command and
option is in it; the bash script parses, and completes as a user would see it."""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.cli import COMMANDS, build_parser
from orchestrator.cli.completion import bash_script, command_tree, zsh_script


def commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
             ) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every (command path, parser), read from argparse independently of the generator."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from commands(sub, (*path, name))


PARSER = build_parser()
EVERY = list(commands(PARSER))
ROOT = command_tree(PARSER)


@pytest.fixture(scope="module")
def scripts() -> dict[str, str]:
    return {"bash": bash_script(ROOT), "zsh": zsh_script(ROOT)}


def test_the_parser_has_the_new_commands() -> None:
    names = {path[0] for path, _ in EVERY if path}
    assert {"top", "exec", "completion", "down", "images"} <= names
    assert ("images", "build") in {path for path, _ in EVERY}


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_every_command_and_option_appears(shell: str, scripts: dict[str, str]) -> None:
    script = scripts[shell]
    for path, parser in EVERY:
        if path:
            assert path[-1] in script, (shell, path)
        if shell == "zsh":
            assert f"{'_'.join(('_orchestrator', *path))}() {{" in script, path
        for action in parser._actions:
            for flag in action.option_strings:
                assert flag in script, (shell, path, flag)
            for choice in action.choices or ():
                if not isinstance(action, argparse._SubParsersAction):
                    assert str(choice) in script, (shell, path, choice)


def test_bash_accepts_the_script(scripts: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "orchestrator.bash"
    path.write_text(scripts["bash"])
    subprocess.run(["bash", "-n", str(path)], check=True)


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed here")
def test_zsh_accepts_the_script(scripts: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "_orchestrator"
    path.write_text(scripts["zsh"])
    subprocess.run(["zsh", "-n", str(path)], check=True)


def complete(script: str, folder: Path, *words: str) -> list[str]:
    """What bash offers for the command line `words` (the last word is under the cursor),
    with no docker CLI on PATH (no deployment names)."""
    (folder / "orchestrator.bash").write_text(script)
    quoted = " ".join(f"'{w}'" for w in words)
    probe = (f"source orchestrator.bash; COMP_WORDS=(orchestrator {quoted}); "
             "COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); _orchestrator; "
             'printf "%s\\n" "${COMPREPLY[@]}"')
    proc = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, check=True,
                          cwd=folder, env={"PATH": "/usr/bin:/bin"})
    return [line for line in proc.stdout.splitlines() if line]


@pytest.mark.parametrize(("words", "offered"), [
    ((""), {c.name for c in COMMANDS}),
    (("up", "--"), {o for a in dict(EVERY)[("up",)]._actions for o in a.option_strings
                    if o.startswith("--")}),
    (("down", "-"), {"-h", "--help", "-f", "--file", "--all", "--grace", "--json", "-q",
                     "--quiet", "--target"}),
    (("export", "--to", ""), {"compose", "swarm", "kubernetes"}),
    (("export", "-f", "app.yml", "--to", "k"), {"kubernetes"}),
    (("images", ""), {"build"}),
    (("images", "build", "--"), {"--force", "--tag", "--base", "--quiet", "--help"}),
    (("completion", ""), {"bash", "zsh"}),
    (("up", "-f", "ap"), {"app.yml"}),
    (("top", "--"), {"--json", "--no-stream", "--interval", "--quiet", "--help"}),
    (("logs", "x", "--p"), {"--pod"}),
    (("exec", "dep", "head", "--", "l"), set()),  # the pod's command: nothing to guess
    (("up", "--heal-after", ""), set()),  # a number
])
def test_bash_completes(words: tuple[str, ...] | str, offered: set[str],
                        scripts: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "app.yml").write_text("name: x\n")
    got = complete(scripts["bash"], tmp_path, *((words,) if isinstance(words, str) else words))
    assert set(got) == offered


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed here")
def test_zsh_hands_every_option_to_arguments(scripts: dict[str, str], tmp_path: Path) -> None:
    """Each command's function, run with `_arguments` replaced by a printer: zsh's own
    quoting and brace expansion turn the script into one spec per flag."""
    path = tmp_path / "_orchestrator"
    path.write_text(scripts["zsh"])
    for command_path, parser in EVERY:
        if not command_path or any(isinstance(a, argparse._SubParsersAction)
                                   for a in parser._actions):
            continue
        function = "_".join(("_orchestrator", *command_path))
        proc = subprocess.run(
            ["zsh", "-f", "-c", f"source {path} 2>/dev/null; "
             f"_arguments() {{ print -l -- \"$@\" }}; {function}"],
            capture_output=True, text=True, check=True)
        # one spec per flag, less its exclusion list: "(-f --file)--file[help]:value:_files"
        specs = [re.sub(r"^\([^)]*\)", "", spec) for spec in proc.stdout.splitlines()]
        for action in parser._actions:
            for flag in action.option_strings:
                assert any(spec.startswith(f"{flag}[") for spec in specs), \
                    (function, flag, specs)
            if action.choices:
                assert any(f"({' '.join(map(str, action.choices))})" in spec
                           for spec in specs), (function, action.dest)
