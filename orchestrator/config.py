"""YAML deployment files: loading, `${VAR}` interpolation, validation.

A file holds ONE deployment as top-level fields, or SEVERAL under `deployments:`::

    # one                           # several
    name: echo                      deployments:
    uses: ../executors/echo.py:Echo   - name: echo
    replicas: 2                         uses: ../executors/echo.py:Echo
                                      - name: other
                                        uses: docker://my/executor:1

The fields are exactly those of `Deployment(...)`. Each one's type, default and meaning
is written once, beside the field in `orchestrator.spec` (``DeploymentSpec`` and
``UpdatePolicy``); `orchestrator.schema` turns them into the JSON Schema
(``orchestrator config --schema``) and into a Markdown reference
(``reference_markdown()``). Relative ``uses:`` files and ``volumes`` host paths are
relative to the YAML file, not to the shell's directory.

Interpolation follows the Compose specification (see `orchestrator.interpolation` for
every form): ``$VAR``, ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``,
``${VAR:?error}``, ``${VAR?error}``, ``${VAR:+alt}``, ``${VAR+alt}``, ``$$``, nested
(``${A:-${B}}``). It applies to values, never to keys, before validation. A variable used
without a default that has no value becomes an empty string and is reported as a warning
(logger ``orchestrator.config``), as Compose does; ``${VAR:?error}`` makes it an error that
names the variable, the file and the line. A value that is exactly one reference takes the
type YAML would give the substituted text, so ``replicas: ${N:-2}`` is the integer 2;
text fields (name, uses, image, host, ...) and values under ``env`` and ``uses_with``
always stay strings.

Where the variables come from, highest precedence first:

1. ``env`` (the CLI's ``--env KEY=VALUE``): given explicitly for this command;
2. the process environment;
3. ``env_files`` (``--env-file``, repeatable; a later file wins over an earlier one);
4. the file ``.env`` beside the YAML file, read only when no env file is given.

This is Compose's order (shell over ``--env-file`` over ``.env``, which ``--env-file``
replaces), with ``--env`` on top as ``docker compose run -e`` is. Env files are parsed by
python-dotenv; their values may use the same ``${...}`` forms, resolved against the
process environment, ``--env`` and the lines above.

Keys starting with ``x-`` are ignored at any level (outside the free-form maps ``env`` and
``uses_with``), as Compose ignores its extension fields: use them for YAML anchors.

A Jina file is read too: ``jtype: Deployment`` with the deployment's options under
``with:`` in Jina's names (see `orchestrator.jina`).

Every error is a `ConfigError` whose message is ONE line:
``FILE:LINE: FIELD.PATH: problem`` (e.g. ``app.yml:7: deployments[1].policy.max_surge:
must be an integer >= 0``; ``:LINE`` is left out when the file has no such place, as for
a missing field).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import os
import re
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from dotenv import dotenv_values

from orchestrator import jina
from orchestrator.errors import ConfigError, SpecError
from orchestrator.interpolation import InterpolationError, interpolate
from orchestrator.schema import config_schema
from orchestrator.spec import DeploymentSpec, UpdatePolicy, UsesRef

__all__ = ["REDACTED", "ConfigError", "DeploymentConfig", "LoadedFile", "config_schema",
           "environment", "is_secret_key", "load_file", "load_text", "parse_env_overrides",
           "redact", "render", "resolve_file", "resolved_document"]

log = logging.getLogger("orchestrator.config")

_STRING_SECTIONS = ("env", "uses_with")
"""Values below these keys stay strings, and their keys are data (an `x-` key is kept)."""
_STR_TAG = "tag:yaml.org,2002:str"


def _string_fields() -> frozenset[str]:
    """Fields whose values are text (name, image, uses, ...): a reference there stays a
    string, as Compose casts by its schema (`name: ${N}` with N=007 is '007', not 7)."""
    names: set[str] = set()
    for cls in (DeploymentSpec, UpdatePolicy):
        for name, hint in typing.get_type_hints(cls).items():
            args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
            if all(a in (str, UsesRef) or isinstance(a, str) for a in args):
                names.add(name)
    return frozenset(names)


_STRING_FIELDS = _string_fields()
_TYPED_TAGS = {f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null")}
_JINA_TOP = ("jtype", "version", "with")

EnvOverrides = Mapping[str, str] | Iterable[str]
"""`--env` values: a mapping, or 'KEY=VALUE' strings ('KEY' alone: the process's value)."""


@dataclass(frozen=True)
class DeploymentConfig:
    """One deployment of a file: its interpolated fields, where they came from, its spec."""

    fields: Mapping[str, Any]
    spec: DeploymentSpec
    source: Path
    path: str  # "" for a single-deployment file, "with" for a Jina file, else "deployments[i]"

    @property
    def base_dir(self) -> Path:
        """Relative `uses:` and volume paths are resolved against the file's folder."""
        return self.source.parent


@dataclass(frozen=True)
class LoadedFile:
    """A whole file, resolved: its deployments, and what interpolation warned about."""

    source: Path
    configs: list[DeploymentConfig]
    warnings: list[str] = field(default_factory=list)


def load_file(path: Path | str, *, env: EnvOverrides | None = None,
              env_files: Sequence[Path | str] | None = None,
              environ: Mapping[str, str] | None = None) -> list[DeploymentConfig]:
    """Read, interpolate and validate a deployment file; warnings go to the log.

    `env` (``--env``) overrides everything, then `environ` (default: the process
    environment), then `env_files` (``--env-file``, later wins), then ``.env`` beside the
    file when `env_files` is None. Pass ``env_files=[]`` to read no env file at all.

    Raises:
        ConfigError: the file or an env file is missing, not YAML, a required variable has
            no value, or a field is invalid (one line, with the line number when known).
    """
    loaded = resolve_file(path, env=env, env_files=env_files, environ=environ)
    for warning in loaded.warnings:
        log.warning("%s", warning)
    return loaded.configs


def resolve_file(path: Path | str, *, env: EnvOverrides | None = None,
                 env_files: Sequence[Path | str] | None = None,
                 environ: Mapping[str, str] | None = None) -> LoadedFile:
    """Like `load_file`, returning the warnings instead of logging them.

    Raises:
        ConfigError: as `load_file`.
    """
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(source, "", f"cannot read: {exc.strerror or exc}") from exc
    variables = environment(source, env=env, env_files=env_files, environ=environ)
    return _load(text, source, variables)


def load_text(text: str, source: Path, *, variables: Mapping[str, str]
              ) -> list[DeploymentConfig]:
    """Like `load_file`, from text already read (`source` names it in errors), with
    exactly `variables` (no process environment, no env file); warnings go to the log.

    Raises:
        ConfigError: not YAML, a required variable has no value, or a field is invalid.
    """
    loaded = _load(text, source, variables)
    for warning in loaded.warnings:
        log.warning("%s", warning)
    return loaded.configs


def _load(text: str, source: Path, variables: Mapping[str, str]) -> LoadedFile:
    data, warnings, lines = _interpolated_document(text, source, variables)
    entries = _entries(_without_extensions(data), source, lines)
    configs = [_one(raw, prefix, source, lines) for prefix, raw in entries]
    _check_unique(configs, source, lines)
    return LoadedFile(source=source, configs=configs, warnings=warnings)


# -- the variables ------------------------------------------------------------------------


def environment(source: Path | str, *, env: EnvOverrides | None = None,
                env_files: Sequence[Path | str] | None = None,
                environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables a file is interpolated with, in Compose's precedence (module doc).

    Raises:
        ConfigError: an env file cannot be read, or a value in it is a malformed reference
            or a required variable without a value; an `env` item is malformed.
    """
    process = dict(os.environ if environ is None else environ)
    overrides = parse_env_overrides(env or (), process)
    if env_files is None:
        default = Path(source).parent / ".env"
        files: list[Path] = [default] if default.is_file() else []
    else:
        files = [Path(f) for f in env_files]
    above = {**process, **overrides}
    from_files: dict[str, str] = {}
    for file in files:
        from_files.update(_read_env_file(file, above=above, below=from_files))
    return {**from_files, **above}


def parse_env_overrides(items: EnvOverrides, environ: Mapping[str, str]) -> dict[str, str]:
    """`--env` values as a dict. 'KEY=VALUE' sets KEY; 'KEY' alone takes the process's
    value (and is skipped when it has none), as ``docker run -e KEY`` does.

    Raises:
        ConfigError: an item with an empty or invalid name.
    """
    if isinstance(items, Mapping):
        return {str(k): str(v) for k, v in items.items()}
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not key or not key.replace("_", "a").isalnum() or key[0].isdigit():
            raise ConfigError("--env", "", f"{item!r} is not KEY=VALUE with a variable "
                              "name as KEY")
        if sep:
            out[key] = value
        elif key in environ:
            out[key] = environ[key]
    return out


def _read_env_file(file: Path, *, above: Mapping[str, str], below: Mapping[str, str]
                   ) -> dict[str, str]:
    """KEY=VALUE lines parsed by python-dotenv; values interpolated as the YAML's are, a
    reference resolved from `above` (--env, process), this file's lines above, `below`
    (earlier env files)."""
    if not file.is_file():
        raise ConfigError(file, "", "cannot read env file: no such file")
    try:
        raw = dotenv_values(file, interpolate=False)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(file, "", f"cannot read env file: {exc}") from exc
    values: dict[str, str] = {}
    for key, value in raw.items():
        if value is None:  # a bare KEY: the process environment decides
            continue
        try:
            values[key] = interpolate(value, {**below, **values, **above}).text
        except InterpolationError as exc:
            raise ConfigError(file, key, str(exc)) from exc
    return values


# -- the document ---------------------------------------------------------------------------


def _interpolated_document(text: str, source: Path, variables: Mapping[str, str]
                           ) -> tuple[object, list[str], dict[str, int]]:
    """The document with every string value interpolated, the warnings, and the line of
    every field path (for messages)."""
    node = _compose(text, source)
    if node is None:
        return None, [], {}
    walk = _Walk(source, variables)
    walk.node(node, "", typed=True)
    loader = yaml.SafeLoader("")
    try:
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        raise _yaml_error(exc, source) from exc
    finally:
        loader.dispose()
    return data, walk.warnings, walk.lines


def _compose(text: str, source: Path) -> yaml.Node | None:
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        raise _yaml_error(exc, source) from exc
    except yaml.YAMLError as exc:
        raise ConfigError(source, "", f"invalid YAML: {exc}") from exc


def _yaml_error(exc: yaml.MarkedYAMLError, source: Path) -> ConfigError:
    mark = exc.problem_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    return ConfigError(source, "", f"invalid YAML: {where}{exc.problem}",
                       line=mark.line + 1 if mark else None)


class _Walk:
    """Interpolates the string scalars of a YAML node tree in place, once per node (an
    alias shares its anchor's node), and records each field path's line."""

    def __init__(self, source: Path, variables: Mapping[str, str]) -> None:
        self.source = source
        self.variables = variables
        self.lines: dict[str, int] = {}
        self.warnings: list[str] = []
        self._seen: set[int] = set()
        self._resolver = yaml.resolver.Resolver()

    def node(self, node: yaml.Node, path: str, *, typed: bool) -> None:
        if id(node) in self._seen:
            return
        self._seen.add(id(node))
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.ScalarNode):
            self._scalar(node, path, typed=typed)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self.node(item, f"{path}[{i}]", typed=typed)
        elif isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                name = str(key.value) if isinstance(key, yaml.ScalarNode) else "?"
                if name == "<<":  # a merge: its fields land in this mapping
                    self.node(value, path, typed=typed)
                    continue
                self.node(value, _join(path, name), typed=typed and name not in
                          _STRING_SECTIONS and name not in _STRING_FIELDS)

    def _scalar(self, node: yaml.ScalarNode, path: str, *, typed: bool) -> None:
        if node.tag != _STR_TAG or "$" not in node.value:
            return
        line = node.start_mark.line + 1
        try:
            result = interpolate(node.value, self.variables)
        except InterpolationError as exc:
            raise ConfigError(self.source, path, str(exc), line=line) from exc
        for name in result.unset:
            where = f"{self.source}:{line}: {path}" if path else f"{self.source}:{line}"
            self.warnings.append(f"{where}: the variable {name} is not set; "
                                 "defaulting to a blank string")
        node.value = result.text
        if typed and result.whole:
            tag = self._resolver.resolve(  # type: ignore[no-untyped-call]
                yaml.ScalarNode, result.text, (True, False))
            node.tag = tag if tag in _TYPED_TAGS else _STR_TAG


def _without_extensions(value: object) -> object:
    """The document without `x-` keys, except inside free-form maps (env, uses_with)."""
    if isinstance(value, list):
        return [_without_extensions(v) for v in value]
    if not isinstance(value, dict):
        return value
    return {k: v if k in _STRING_SECTIONS else _without_extensions(v)
            for k, v in value.items() if not (isinstance(k, str) and k.startswith("x-"))}


def _entries(data: object, source: Path, lines: Mapping[str, int]
             ) -> list[tuple[str, object]]:
    """(field path prefix, raw mapping) of every deployment in the document."""
    if data is None:
        raise ConfigError(source, "", "the file is empty: expected a deployment's fields "
                          "or a 'deployments:' list")
    if not isinstance(data, dict):
        raise ConfigError(source, "", f"expected a mapping at the top, got "
                          f"{_type(data)}")
    if "jtype" in data:
        return [("with", _jina_fields(data, source, lines))]
    if "deployments" not in data:
        return [("", data)]
    others = sorted(str(k) for k in data if k != "deployments")
    if others:
        raise ConfigError(source, others[0], "top-level fields cannot be mixed with a "
                          "'deployments:' list; move them into a list entry",
                          line=lines.get(others[0]))
    items = data["deployments"]
    if not isinstance(items, list) or not items:
        raise ConfigError(source, "deployments", "must be a non-empty list of deployments",
                          line=lines.get("deployments"))
    return [(f"deployments[{i}]", item) for i, item in enumerate(items)]


def _jina_fields(data: dict[Any, Any], source: Path, lines: Mapping[str, int]
                 ) -> dict[str, Any]:
    """A Jina file (``jtype: Deployment``, options under ``with:``) as our fields."""
    jtype = data["jtype"]
    if jtype == "Flow":
        raise ConfigError(source, "jtype", "a Jina Flow is not read: list its executors "
                          "under 'deployments:', each with 'needs' naming the one before",
                          line=lines.get("jtype"))
    if jtype != "Deployment":
        raise ConfigError(source, "jtype", f"{jtype!r}: only 'Deployment' is read",
                          line=lines.get("jtype"))
    others = sorted(str(k) for k in data if k not in _JINA_TOP)
    if others:
        raise ConfigError(source, others[0], "a Jina file has only jtype, version and "
                          "with at the top; the deployment's options go under 'with:'",
                          line=lines.get(others[0]))
    options = data.get("with") or {}
    if not isinstance(options, dict):
        raise ConfigError(source, "with", f"expected a mapping of options, got "
                          f"{_type(options)}", line=lines.get("with"))
    try:
        return jina.fields_from_jina(options)
    except SpecError as exc:
        raise _field_error(exc, "with", source, lines) from exc


def _one(raw: object, prefix: str, source: Path, lines: Mapping[str, int]
         ) -> DeploymentConfig:
    if not isinstance(raw, dict):
        raise ConfigError(source, prefix, f"expected a mapping of fields, got {_type(raw)}",
                          line=lines.get(prefix))
    for key in raw:
        if not isinstance(key, str):
            path = _join(prefix, str(key))
            raise ConfigError(source, path, "field names must be strings", line=lines.get(path))
    fields = _resolve_volumes(dict(raw), source.parent)
    try:
        spec = DeploymentSpec.from_fields(base_dir=source.parent, **fields)
    except SpecError as exc:
        raise _field_error(exc, prefix, source, lines) from exc
    return DeploymentConfig(fields=fields, spec=spec, source=source, path=prefix)


def _field_error(exc: SpecError, prefix: str, source: Path, lines: Mapping[str, int]
                 ) -> ConfigError:
    """A spec's error as a file's: the field's path in the file, and its line."""
    problem = str(exc)
    if exc.field and problem.startswith(f"{exc.field}: "):
        problem = problem[len(exc.field) + 2:]
    if problem.startswith("unknown field"):
        problem += _suggestion(exc.field or "")
    path = _join(prefix, exc.field or "")
    return ConfigError(source, path, problem, line=_line(path, lines))


def _line(path: str, lines: Mapping[str, int]) -> int | None:
    """The line of `path`, or of its nearest ancestor the file has."""
    while path:
        if path in lines:
            return lines[path]
        cut = max(path.rfind("."), path.rfind("["))
        path = path[:cut] if cut > 0 else ""
    return None


def _suggestion(path: str) -> str:
    """' (did you mean 'replicas'?)' for a misspelt field, else ''."""
    parent, _, key = path.rpartition(".")
    owner = UpdatePolicy if parent == "policy" else DeploymentSpec
    names = [f.name for f in dataclasses.fields(owner)]
    close = difflib.get_close_matches(key, names, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _check_unique(configs: list[DeploymentConfig], source: Path,
                  lines: Mapping[str, int]) -> None:
    seen: set[str] = set()
    for cfg in configs:
        if cfg.spec.name in seen:
            path = _join(cfg.path, "name")
            raise ConfigError(source, path, f"{cfg.spec.name!r} is used by an earlier "
                              "deployment", line=lines.get(path))
        seen.add(cfg.spec.name)


# -- the resolved file (`orchestrator config`) -----------------------------------------------

REDACTED = "<redacted>"
_SECRET_WORD = re.compile(r"^(token|password|passwd|pwd|secret|key|apikey|credentials?|auth|"
                          r"private|passphrase|cert|signature)s?\d*$")


def is_secret_key(key: str) -> bool:
    """Whether a variable or argument name looks like it holds a secret: one of its words
    (split at '_', '-', '.' and case changes) is TOKEN, PASSWORD, SECRET, KEY, AUTH, ...
    (API_KEY, dbPassword, GITHUB_TOKEN; not KEYBOARD or MONKEY)."""
    words = re.split(r"[_\-.\s]+|(?<=[a-z0-9])(?=[A-Z])", key)
    return any(_SECRET_WORD.match(w.lower()) for w in words if w)


def redact(fields: Mapping[str, Any]) -> dict[str, Any]:
    """A spec's fields with the values of secret-looking keys in env and uses_with (at any
    depth) replaced by REDACTED."""
    out = dict(fields)
    for section in _STRING_SECTIONS:
        if isinstance(out.get(section), Mapping):
            out[section] = _redact_map(out[section])
    return out


def _redact_map(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: REDACTED if is_secret_key(str(k)) else
            _redact_map(v) if isinstance(v, Mapping) else v for k, v in values.items()}


def resolved_document(loaded: LoadedFile, *, secrets: bool = False) -> dict[str, Any]:
    """The file as the loader understood it, in our own format: every field explicit,
    variables substituted, paths absolute, a Jina file translated; loadable again with
    the same result (a '$' in a value is written '$$'). Secrets are redacted unless
    `secrets`."""
    order = [f.name for f in dataclasses.fields(DeploymentSpec)]
    docs = [{k: d[k] for k in order if k in d}
            for d in (cfg.spec.to_fields() for cfg in loaded.configs)]
    if not secrets:
        docs = [redact(d) for d in docs]
    docs = [_escaped(d) for d in docs]
    several = len(docs) > 1 or loaded.configs[0].path.startswith("deployments")
    return {"deployments": docs} if several else docs[0]


def _escaped(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("$", "$$")
    if isinstance(value, list):
        return [_escaped(v) for v in value]
    if isinstance(value, dict):
        return {k: _escaped(v) for k, v in value.items()}
    return value


def render(loaded: LoadedFile, *, as_json: bool = False, secrets: bool = False) -> str:
    """`resolved_document` as YAML (default) or JSON text, ending with a newline."""
    doc = resolved_document(loaded, secrets=secrets)
    if as_json:
        return json.dumps(doc, indent=2) + "\n"
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)


# -- paths ------------------------------------------------------------------------------


def _resolve_volumes(fields: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    """Make relative host paths of `volumes` relative to the file, not to the shell's cwd."""
    volumes = fields.get("volumes")
    if not isinstance(volumes, list):
        return fields
    resolved: list[object] = []
    for item in volumes:
        if isinstance(item, str) and ":" in item:
            host, rest = item.split(":", 1)
            if host and not host.startswith(("/", "~")):
                item = f"{base_dir / host}:{rest}"
        resolved.append(item)
    return {**fields, "volumes": resolved}


def _join(prefix: str, key: str) -> str:
    if not prefix:
        return key
    if not key:
        return prefix
    return f"{prefix}{key}" if key.startswith("[") else f"{prefix}.{key}"


def _type(value: object) -> str:
    return {list: "a list", str: "a string", int: "a number", float: "a number",
            bool: "a boolean"}.get(type(value), type(value).__name__)
