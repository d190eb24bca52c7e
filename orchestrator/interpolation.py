"""Variable interpolation in a string, as the Compose specification defines it. Pure.

=======================  ==============================================================
form                     value
=======================  ==============================================================
``$VAR``, ``${VAR}``     VAR's value; unset: an empty string, reported in ``unset``
                         (Compose warns and substitutes a blank string)
``${VAR:-default}``      ``default`` when VAR is unset or empty
``${VAR-default}``       ``default`` when VAR is unset
``${VAR:?message}``      an error naming VAR (and the message) when VAR is unset or empty
``${VAR?message}``       an error naming VAR when VAR is unset
``${VAR:+alt}``          ``alt`` when VAR is set and not empty, else an empty string
``${VAR+alt}``           ``alt`` when VAR is set, else an empty string
``$$``                   a literal ``$``
=======================  ==============================================================

A name is ``[A-Za-z_][A-Za-z0-9_]*``. Defaults, messages and alternatives are themselves
interpolated, so they nest: ``${A:-${B:-x}}``, ``${A?need $B}``. Only the branch that is
used is evaluated (as a shell does). A ``$`` followed by anything else (``$5``, ``a $
b``, a trailing ``$``) stays as it is; a ``${`` that is not one of the forms above
(``${}``, ``${ A}``, ``${A!}``, no closing brace) is an error, as in Compose. Shell
features Compose does not have (``${A/x/y}``, ``${#A}``) are errors too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OPERATORS = (":-", ":?", ":+", "-", "?", "+")


class InterpolationError(ValueError):
    """A reference is malformed, or a required variable has no value; `variable` names it
    (empty for a malformed reference)."""

    def __init__(self, message: str, *, variable: str = "") -> None:
        self.variable = variable
        super().__init__(message)


@dataclass(frozen=True)
class Substitution:
    """The interpolated text, and what the caller may want to report about it."""

    text: str
    whole: bool = False
    """The original was exactly one reference (``${N:-2}``), so a typed field may read the
    result as YAML would (the integer 2)."""
    unset: tuple[str, ...] = field(default=())
    """Variables used without a default that have no value (substituted by '')."""


def interpolate(template: str, env: Mapping[str, str]) -> Substitution:
    """Substitute every reference in `template` from `env`.

    Raises:
        InterpolationError: a malformed reference, or a required variable without a value.
    """
    if "$" not in template:
        return Substitution(template)
    unset: list[str] = []
    out, references, spans_all = _scan(template, env, unset)
    return Substitution("".join(out), whole=references == 1 and spans_all,
                        unset=tuple(dict.fromkeys(unset)))


def _scan(text: str, env: Mapping[str, str], unset: list[str]
          ) -> tuple[list[str], int, bool]:
    """(output pieces, number of references, whether one reference spans all the text)."""
    out: list[str] = []
    references = 0
    spans_all = False
    i = 0
    while i < len(text):
        dollar = text.find("$", i)
        if dollar < 0:
            out.append(text[i:])
            break
        out.append(text[i:dollar])
        end, value = _reference(text, dollar, env, unset)
        if value is None:  # not a reference: '$' stays literal ('$$' gives one '$')
            out.append("$")
        else:
            references += 1
            spans_all = dollar == 0 and end == len(text)
            out.append(value)
        i = end
    return out, references, spans_all


def _reference(text: str, at: int, env: Mapping[str, str], unset: list[str]
               ) -> tuple[int, str | None]:
    """(index after the token at `at`, its value, or None for a literal '$')."""
    following = text[at + 1:at + 2]
    if following == "$":
        return at + 2, None
    if following == "{":
        close = _closing_brace(text, at)
        if close < 0:
            raise InterpolationError(f"unclosed reference in {text!r}: a '${{' has no "
                                     "matching '}' (write $$ for a literal $)")
        return close + 1, _braced(text[at + 2:close], text, env, unset)
    name = _NAME.match(text, at + 1)
    if name is None:
        return at + 1, None
    return name.end(), _lookup(name.group(), env, unset)


def _closing_brace(text: str, at: int) -> int:
    """The index of the '}' closing the '${' at `at`, counting nested '${'; -1 if none."""
    depth = 0
    i = at
    while i < len(text):
        if text.startswith("${", i):
            depth += 1
            i += 2
            continue
        if text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1


def _braced(inner: str, text: str, env: Mapping[str, str], unset: list[str]) -> str:
    name = _NAME.match(inner)
    if name is None:
        raise _malformed(inner, text)
    variable, rest = name.group(), inner[name.end():]
    if not rest:
        return _lookup(variable, env, unset)
    operator = next((op for op in _OPERATORS if rest.startswith(op)), None)
    if operator is None:
        raise _malformed(inner, text)
    argument = rest[len(operator):]
    value = env.get(variable)
    filled = bool(value) if operator.startswith(":") else value is not None
    kind = operator[-1]
    if kind == "-":
        return value if filled and value is not None else _nested(argument, env, unset)
    if kind == "+":
        return _nested(argument, env, unset) if filled else ""
    if not filled or value is None:  # '?': required
        message = _nested(argument, env, unset)
        raise InterpolationError(
            f"required variable {variable} is missing a value"
            + (f": {message}" if message else ""), variable=variable)
    return value


def _nested(argument: str, env: Mapping[str, str], unset: list[str]) -> str:
    out, _, _ = _scan(argument, env, unset)
    return "".join(out)


def _lookup(name: str, env: Mapping[str, str], unset: list[str]) -> str:
    value = env.get(name)
    if value is None:
        unset.append(name)
        return ""
    return value


def _malformed(inner: str, text: str) -> InterpolationError:
    hint = ""
    if inner.startswith("{"):
        hint = "; Jina's ${{ ENV.NAME }} is written ${NAME} here"
    return InterpolationError(
        f"invalid reference ${{{inner}}} in {text!r}: use ${{NAME}}, ${{NAME:-default}}, "
        f"${{NAME:?error}} or ${{NAME:+alt}} (':' optional), $$ for a literal ${hint}")
