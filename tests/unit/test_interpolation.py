"""Interpolation as the Compose specification defines it (cases after compose-go's own
template tests), the variables' precedence (--env, process, --env-file, .env), and every
error naming the variable, the file and the line."""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.config import environment, load_file, load_text, parse_env_overrides
from orchestrator.errors import ConfigError
from orchestrator.interpolation import InterpolationError, interpolate

ENV = {"FOO": "first", "BAR": ""}  # FOO set, BAR set but empty, anything else unset


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        # direct
        ("$FOO", "first"),
        ("${FOO}", "first"),
        ("This $FOO var", "This first var"),
        ("$FOO-bar", "first-bar"),  # a name ends at the first non-name character
        ("${BAR}", ""),
        # default
        ("${UNSET:-def}", "def"),
        ("${BAR:-def}", "def"),
        ("${FOO:-def}", "first"),
        ("${UNSET-def}", "def"),
        ("${BAR-def}", ""),
        ("${FOO-def}", "first"),
        ("${UNSET:-}", ""),
        ("${BAR:-/non:-alphanumeric}", "/non:-alphanumeric"),
        # required, satisfied
        ("${FOO:?err}", "first"),
        ("${FOO?err}", "first"),
        ("${BAR?err}", ""),
        # alternative
        ("${FOO:+alt}", "alt"),
        ("${BAR:+alt}", ""),
        ("${UNSET:+alt}", ""),
        ("${FOO+alt}", "alt"),
        ("${BAR+alt}", "alt"),
        ("${UNSET+alt}", ""),
        # nested
        ("${UNSET-$FOO}", "first"),
        ("${UNSET-${FOO}}", "first"),
        ("${UNSET-${FOO} ${FOO}}", "first first"),
        ("${BAR:-${FOO}}", "first"),
        ("${UNSET:-${BAR-default}}", ""),
        ("${UNSET:-${OTHER:-deep}}", "deep"),
        ("${BAR+$FOO ${FOO:+second}}", "first second"),
        ("${UNSET-myerror?msg}", "myerror?msg"),  # the first operator decides
        # escapes and literal dollars
        ("$$", "$"),
        ("$${FOO}", "${FOO}"),
        ("$$FOO", "$FOO"),
        ("a $ string", "a $ string"),
        ("^REGEX$", "^REGEX$"),
        ("$}", "$}"),
        ("$", "$"),
        ("cost: $5", "cost: $5"),
        ("${UNSET:-$$}", "$"),
        ("no reference", "no reference"),
    ],
)
def test_every_form(template: str, expected: str) -> None:
    assert interpolate(template, ENV).text == expected


@given(st.text())
def test_an_escaped_text_comes_back_unchanged(text: str) -> None:
    """What `orchestrator config` relies on to print values that load back the same."""
    assert interpolate(text.replace("$", "$$"), ENV).text == text


@given(st.text().filter(lambda t: "$" not in t))
def test_text_without_a_dollar_is_left_alone(text: str) -> None:
    assert interpolate(text, ENV) == interpolate(text, {}) and interpolate(text, ENV).text == text


@pytest.mark.parametrize(
    ("template", "whole"),
    [("${N:-2}", True), ("$N", True), ("${A:-${B}}", True), ("x${N}", False),
     ("${N}${N}", False), ("$$", False), ("${N} ", False)],
)
def test_whole_means_exactly_one_reference(template: str, whole: bool) -> None:
    assert interpolate(template, {}).whole is whole


def test_unset_variables_without_default_are_reported_not_fatal() -> None:
    result = interpolate("${A}-$B-${C:-x}-${A}", {})
    assert result.text == "--x-" and result.unset == ("A", "B")


def test_only_the_branch_used_is_evaluated() -> None:
    assert interpolate("${FOO:-${NEED:?never}}", ENV).text == "first"
    assert interpolate("${UNSET:+${NEED:?never}}", ENV).text == ""


@pytest.mark.parametrize(
    ("template", "variable", "message"),
    [
        ("${UNSET:?Mandatory Variable Unset}", "UNSET",
         "required variable UNSET is missing a value: Mandatory Variable Unset"),
        ("${BAR:?Mandatory Variable Empty}", "BAR",
         "required variable BAR is missing a value: Mandatory Variable Empty"),
        ("${UNSET:?}", "UNSET", "required variable UNSET is missing a value"),
        ("${UNSET?Mandatory}", "UNSET", "required variable UNSET is missing a value: Mandatory"),
        ("${UNSET?}", "UNSET", "required variable UNSET is missing a value"),
        ("${UNSET:?need ${FOO}}", "UNSET", "missing a value: need first"),
        ("${UNSET?bar-baz}", "UNSET", "missing a value: bar-baz"),
        ("${UNSET:-${DEEP:?inner}}", "DEEP", "required variable DEEP"),
    ],
)
def test_required_variable_errors_name_it(template: str, variable: str, message: str) -> None:
    with pytest.raises(InterpolationError, match="required variable") as info:
        interpolate(template, ENV)
    assert message in str(info.value) and info.value.variable == variable


@pytest.mark.parametrize(
    ("template", "problem"),
    [("${", "unclosed"), ("x ${FOO", "unclosed"), ("${}", "invalid reference"),
     ("${ }", "invalid reference"), ("${ foo}", "invalid reference"),
     ("${foo }", "invalid reference"), ("${foo!}", "invalid reference"),
     ("${FOO/a/b}", "invalid reference"), ("${#FOO}", "invalid reference"),
     ("${{ ENV.FOO }}", "Jina's ${{ ENV.NAME }} is written ${NAME} here")],
)
def test_malformed_references_are_errors(template: str, problem: str) -> None:
    with pytest.raises(InterpolationError) as info:
        interpolate(template, ENV)
    assert problem in str(info.value) and info.value.variable == ""


# -- in a file: line numbers, types, warnings ------------------------------------------------


def write(tmp_path: Path, text: str, name: str = "app.yml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip())
    return path


@pytest.mark.parametrize(
    ("text", "line", "path", "variable"),
    [
        ("name: a\nuses: ${EXEC:?give the executor}\n", 2, "uses", "EXEC"),
        ("name: a\nuses: pkg.m:E\nenv:\n  TOKEN: ${TOKEN?}\n", 4, "env.TOKEN", "TOKEN"),
        ("deployments:\n  - name: a\n    uses: pkg.m:E\n    replicas: ${N:?how many}\n", 4,
         "deployments[0].replicas", "N"),
        ("jtype: Deployment\nwith:\n  name: a\n  uses: ${U:?}\n", 4, "with.uses", "U"),
        ("x-base: &base\n  uses: ${U:?}\nname: a\n<<: *base\n", 2, "x-base.uses", "U"),
    ],
)
def test_a_required_variable_names_itself_the_file_and_the_line(
        tmp_path: Path, text: str, line: int, path: str, variable: str) -> None:
    source = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_file(source, environ={}, env_files=[])
    err = info.value
    assert (err.file, err.line, err.path) == (str(source), line, path)
    assert str(err).startswith(f"{source}:{line}: {path}: required variable {variable} ")


def test_an_unset_variable_warns_with_file_and_line_and_becomes_blank(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    source = write(tmp_path, """
        name: a${SUFFIX}
        uses: pkg.m:E
    """)
    with caplog.at_level(logging.WARNING, logger="orchestrator.config"):
        (cfg,) = load_file(source, environ={}, env_files=[])
    assert cfg.spec.name == "a"
    assert caplog.messages == [f"{source}:1: name: the variable SUFFIX is not set; "
                               "defaulting to a blank string"]


def test_types_follow_yaml_for_a_whole_reference_but_env_and_uses_with_stay_strings(
        tmp_path: Path) -> None:
    source = write(tmp_path, """
        name: a
        uses: pkg.m:E
        replicas: ${N:-2}
        stop_grace: "${G}"
        external: ${EXT:-false}
        max_starting: ${NONE}
        env: {COUNT: "${N:-2}", FLAG: $EXT}
        uses_with: {count: "${N:-2}", nested: {n: "${N:-2}"}, money: "$$5 and $5"}
    """)
    (cfg,) = load_file(source, environ={"G": "1.5", "EXT": "false", "NONE": ""},
                       env_files=[])
    spec = cfg.spec
    assert (spec.replicas, spec.stop_grace, spec.external, spec.max_starting) == (
        2, 1.5, False, None)
    assert spec.env == {"COUNT": "2", "FLAG": "false"}
    assert spec.uses_with == {"count": "2", "nested": {"n": "2"}, "money": "$5 and $5"}


def test_an_anchor_is_interpolated_once_so_an_escape_is_not_undone(tmp_path: Path) -> None:
    source = write(tmp_path, """
        x-shared: &shared
          tag: "$${LITERAL}"
        name: a
        uses: pkg.m:E
        uses_with:
          one: *shared
          two: *shared
    """)
    (cfg,) = load_file(source, environ={"LITERAL": "no"}, env_files=[])
    assert cfg.spec.uses_with == {"one": {"tag": "${LITERAL}"}, "two": {"tag": "${LITERAL}"}}


def test_keys_are_not_interpolated(tmp_path: Path) -> None:
    source = write(tmp_path, "name: a\nuses: pkg.m:E\nenv: {$KEY: v}\n")
    (cfg,) = load_file(source, environ={"KEY": "no"}, env_files=[])
    assert cfg.spec.env == {"$KEY": "v"}


# -- where the variables come from ---------------------------------------------------------------


def test_dotenv_beside_the_file_is_read_by_default(tmp_path: Path) -> None:
    write(tmp_path, "NAME=from-dotenv\n# a comment\nexport TAG='v 2'\n", ".env")
    source = write(tmp_path, "name: ${NAME}\nuses: pkg.m:E\nuses_with: {tag: $TAG}\n")
    (cfg,) = load_file(source, environ={})
    assert (cfg.spec.name, cfg.spec.uses_with) == ("from-dotenv", {"tag": "v 2"})


@pytest.mark.parametrize(
    ("dotenv", "files", "environ", "overrides", "expected"),
    [
        ({"V": "dotenv"}, None, {}, [], "dotenv"),
        ({"V": "dotenv"}, [{"V": "file1"}], {}, [], "file1"),  # --env-file replaces .env
        ({"V": "dotenv"}, [{"W": "w"}], {}, [], ""),  # ... even for keys it lacks
        ({}, [{"V": "file1"}, {"V": "file2"}], {}, [], "file2"),  # later file wins
        ({}, [{"V": "file1"}, {"W": "w"}], {}, [], "file1"),
        ({"V": "dotenv"}, None, {"V": "process"}, [], "process"),  # process over files
        ({}, [{"V": "file1"}], {"V": "process"}, [], "process"),
        ({}, [{"V": "file1"}], {"V": "process"}, ["V=cli"], "cli"),  # --env over all
        ({"V": "dotenv"}, None, {}, ["V=cli"], "cli"),
        ({}, [], {"V": "process"}, ["V"], "process"),  # bare KEY: the process's value
        ({}, [], {}, ["V="], ""),
    ],
)
def test_precedence_env_over_process_over_env_files_over_dotenv(
        tmp_path: Path, dotenv: dict[str, str], files: list[dict[str, str]] | None,
        environ: dict[str, str], overrides: list[str], expected: str) -> None:
    if dotenv:
        write(tmp_path, "".join(f"{k}={v}\n" for k, v in dotenv.items()), ".env")
    paths = None if files is None else [
        write(tmp_path, "".join(f"{k}={v}\n" for k, v in f.items()), f"f{i}.env")
        for i, f in enumerate(files)]
    source = write(tmp_path, "name: a\nuses: pkg.m:E\nenv: {V: '${V-}'}\n")
    (cfg,) = load_file(source, env=overrides, env_files=paths, environ=environ)
    assert cfg.spec.env["V"] == expected


def test_env_file_values_interpolate_from_lines_above_and_the_process(tmp_path: Path) -> None:
    first = write(tmp_path, "BASE=/srv\n", "a.env")
    second = write(tmp_path, "HOME_DIR=${BASE}/${USER_NAME}\nREQ=${REQ:-fallback}\n", "b.env")
    variables = environment(tmp_path / "app.yml", env_files=[first, second],
                            environ={"USER_NAME": "ann"})
    assert variables["HOME_DIR"] == "/srv/ann" and variables["REQ"] == "fallback"


@pytest.mark.parametrize(
    ("content", "problem", "key"),
    [(None, "cannot read env file: no such file", ""),
     ("TOKEN=${SECRET:?needed}\n", "required variable SECRET is missing a value", "TOKEN"),
     ("BAD=${oops\n", "unclosed reference", "BAD")],
)
def test_env_file_errors_name_the_file(tmp_path: Path, content: str | None, problem: str,
                                       key: str) -> None:
    env_file = tmp_path / "x.env"
    if content is not None:
        env_file.write_text(content)
    source = write(tmp_path, "name: a\nuses: pkg.m:E\n")
    with pytest.raises(ConfigError) as info:
        load_file(source, env_files=[env_file], environ={})
    assert info.value.file == str(env_file) and info.value.path == key
    assert problem in str(info.value)


@pytest.mark.parametrize("bad", ["=x", "1A=x", "A-B=x", ""])
def test_env_overrides_need_a_variable_name(bad: str) -> None:
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_env_overrides([bad], {})


def test_load_text_uses_exactly_the_variables_given(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("N", "from-process")
    write(tmp_path, "N=from-dotenv\n", ".env")
    (cfg,) = load_text("name: ${N:-given}\nuses: pkg.m:E\n", tmp_path / "app.yml",
                       variables={})
    assert cfg.spec.name == "given"


def test_text_fields_stay_strings_whatever_the_value_looks_like(tmp_path: Path) -> None:
    source = write(tmp_path, """
        name: ${N}
        uses: pkg.m:E
        image: ${T}
        restart_policy: ${R:-no}
        policy: {order: "${O:-start-first}", max_surge: "${S:-2}"}
    """)
    (cfg,) = load_file(source, environ={"N": "007", "T": "1.0"}, env_files=[])
    assert (cfg.spec.name, cfg.spec.image, cfg.spec.restart_policy) == ("007", "1.0", "no")
    assert (cfg.spec.policy.order, cfg.spec.policy.max_surge) == ("start-first", 2)
