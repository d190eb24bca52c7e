"""YAML deployment files: loading, `${VAR}` interpolation, validation.

A file holds ONE deployment as top-level fields, or SEVERAL under `deployments:`::

    # one                           # several
    name: echo                      deployments:
    uses: ../executors/echo.py:Echo   - name: echo
    replicas: 2                         uses: ../executors/echo.py:Echo
                                      - name: other
                                        uses: docker://my/executor:1

The fields are exactly those of `Deployment(...)`:

=================  ==========================  ===========================================
field              type (default)              meaning
=================  ==========================  ===========================================
name               str (required)              DNS-safe: lowercase, digits, '-', <= 40
uses               str (required)              'file.py:Class' (relative to the YAML
                                               file), 'pkg.module:Class' or
                                               'docker://image:tag'
uses_with          map (``{}``)                the executor's ``__init__`` kwargs
replicas           int >= 1 (1)                worker replicas per shard
shards             int >= 1 (1)                shards; the head fans out by ``polling``
polling            ANY | ALL | map (ANY)       per endpoint: ``{"/index": "ALL"}``
uses_before        str (none)                  executor run before the shards
uses_after         str (none)                  executor merging the shards' results
port               int 1..65535 (engine picks)  head port published on ``host``
host               str (127.0.0.1)             host address the head port binds to
env                map str->str (``{}``)       environment of the worker pods
volumes            list (``[]``)               'host:/container[:ro|rw]'; a relative host
                                               path is relative to the YAML file
timeout_ready      seconds > 0 (60)            start deadline per pod
image              str (orchestrator-runtime:  runtime image of file/module executors
                   latest)
cpus               number (none)               CPU limit per pod
memory             '512m', '1g', bytes (none)  memory limit per pod (>= 6 MiB)
gpus               int or 'all' (none)         GPUs per pod
restart_policy     no | on-failure | always |  applied once a pod is ready
                   unless-stopped (on-failure)
health_interval    seconds > 0 (0.5)           how often the head probes its workers
stop_grace         seconds >= 0 (10)           SIGTERM-to-SIGKILL grace
log_max_size       '10m', '64k', bytes, null   each pod's log rotates at this size (engine
                   (10m)                       drivers json-file / local); null: the
                                               engine's own log settings
log_max_files      int >= 1 (3)                rotated log files kept per pod
max_starting       int >= 1 (all at once)      staggered start: pods starting at a time
needs              str or list (``[]``)        names of deployments this one follows
external           bool (false)                an already running service at host:port
protocol           grpc (grpc)                 wire protocol
policy             map (see below)             rolling update and scale policy
=================  ==========================  ===========================================

``policy`` fields: ``max_surge`` (1), ``max_unavailable`` (0), ``order`` (start-first |
stop-first), ``monitor`` (0 s), ``failure_action`` (rollback | pause), ``drain_timeout``
(30 s), ``stop_grace`` (10 s), ``shard_parallelism`` (1).

Interpolation (in string values only, before validation): ``${VAR}`` is the environment
variable (unset: an error), ``${VAR:-default}`` falls back to ``default`` when VAR is unset
or empty, ``$$`` is a literal ``$``. A value that is exactly one ``${...}`` takes the type
YAML would give the substituted text, so ``replicas: ${N:-2}`` is the integer 2; values
under ``env`` and ``uses_with`` always stay strings.

Every error is a `ConfigError` whose message is ONE line:
``FILE: FIELD.PATH: problem`` (e.g. ``app.yml: deployments[1].policy.max_surge: must be
an integer >= 0``).
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from orchestrator.errors import ConfigError, SpecError
from orchestrator.spec import DeploymentSpec

_VAR = re.compile(r"\$(?:\$|\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\})")
_WHOLE = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*(?::-[^}]*)?\}$")
_BAD_REF = re.compile(r"\$\{(?![A-Za-z_][A-Za-z0-9_]*(?::-[^}]*)?\})")
_STRING_SECTIONS = ("env", "uses_with")


@dataclass(frozen=True)
class DeploymentConfig:
    """One deployment of a file: its interpolated fields, where they came from, its spec."""

    fields: Mapping[str, Any]
    spec: DeploymentSpec
    source: Path
    path: str  # "" for a single-deployment file, else "deployments[i]"

    @property
    def base_dir(self) -> Path:
        """Relative `uses:` and volume paths are resolved against the file's folder."""
        return self.source.parent


def load_file(path: Path | str, env: Mapping[str, str] | None = None) -> list[DeploymentConfig]:
    """Read, interpolate and validate a deployment file.

    Raises:
        ConfigError: the file is missing, not YAML, or a field is invalid (one line).
    """
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(source, "", f"cannot read: {exc.strerror or exc}") from exc
    return load_text(text, source, env=os.environ if env is None else env)


def load_text(text: str, source: Path, *, env: Mapping[str, str]) -> list[DeploymentConfig]:
    """Like `load_file`, from text already read (`source` names it in errors).

    Raises:
        ConfigError: not YAML, or a field is invalid.
    """
    data = _parse_yaml(text, source)
    entries = _entries(data, source)
    configs = [_one(raw, prefix, source, env) for prefix, raw in entries]
    _check_unique(configs, source)
    return configs


def _parse_yaml(text: str, source: Path) -> object:
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(source, "", f"invalid YAML: {where}{exc.problem}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(source, "", f"invalid YAML: {exc}") from exc


def _entries(data: object, source: Path) -> list[tuple[str, object]]:
    """(field path prefix, raw mapping) of every deployment in the document."""
    if data is None:
        raise ConfigError(source, "", "the file is empty: expected a deployment's fields "
                          "or a 'deployments:' list")
    if not isinstance(data, dict):
        raise ConfigError(source, "", f"expected a mapping at the top, got "
                          f"{_type(data)}")
    if "deployments" not in data:
        return [("", data)]
    others = sorted(str(k) for k in data if k != "deployments")
    if others:
        raise ConfigError(source, others[0], "top-level fields cannot be mixed with a "
                          "'deployments:' list; move them into a list entry")
    items = data["deployments"]
    if not isinstance(items, list) or not items:
        raise ConfigError(source, "deployments", "must be a non-empty list of deployments")
    return [(f"deployments[{i}]", item) for i, item in enumerate(items)]


def _one(raw: object, prefix: str, source: Path, env: Mapping[str, str]) -> DeploymentConfig:
    if not isinstance(raw, dict):
        raise ConfigError(source, prefix, f"expected a mapping of fields, got {_type(raw)}")
    for key in raw:
        if not isinstance(key, str):
            raise ConfigError(source, _join(prefix, str(key)), "field names must be strings")
    fields = {key: _interpolate(value, _join(prefix, key), source, env,
                                typed=key not in _STRING_SECTIONS)
              for key, value in raw.items()}
    fields = _resolve_volumes(fields, source.parent)
    try:
        spec = DeploymentSpec.from_fields(base_dir=source.parent, **fields)
    except SpecError as exc:
        problem = str(exc)
        if exc.field and problem.startswith(f"{exc.field}: "):
            problem = problem[len(exc.field) + 2:]
        if problem.startswith("unknown field"):
            problem += _suggestion(exc.field or "")
        raise ConfigError(source, _join(prefix, exc.field or ""), problem) from exc
    return DeploymentConfig(fields=fields, spec=spec, source=source, path=prefix)


def _suggestion(path: str) -> str:
    """' (did you mean 'replicas'?)' for a misspelt field, else ''."""
    from dataclasses import fields as dc_fields

    from orchestrator.spec import UpdatePolicy

    parent, _, key = path.rpartition(".")
    owner = UpdatePolicy if parent == "policy" else DeploymentSpec
    close = difflib.get_close_matches(key, [f.name for f in dc_fields(owner)], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _check_unique(configs: list[DeploymentConfig], source: Path) -> None:
    seen: set[str] = set()
    for cfg in configs:
        if cfg.spec.name in seen:
            raise ConfigError(source, _join(cfg.path, "name"),
                              f"{cfg.spec.name!r} is used by an earlier deployment")
        seen.add(cfg.spec.name)


# -- interpolation --------------------------------------------------------------------


def _interpolate(value: object, path: str, source: Path, env: Mapping[str, str], *,
                 typed: bool) -> object:
    """Substitute `${...}` in every string below `value`; other scalars pass through."""
    if isinstance(value, str):
        return _substitute(value, path, source, env, typed=typed)
    if isinstance(value, list):
        return [_interpolate(v, f"{path}[{i}]", source, env, typed=typed)
                for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: _interpolate(v, _join(path, str(k)), source, env, typed=typed)
                for k, v in value.items()}
    return value


def _substitute(text: str, path: str, source: Path, env: Mapping[str, str], *,
                typed: bool) -> object:
    if "$" not in text:
        return text
    bad = _BAD_REF.search(text)
    if bad:
        raise ConfigError(source, path, f"malformed variable reference in {text!r}: use "
                          "${NAME} or ${NAME:-default} ($$ for a literal $)")

    def repl(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match.group(1), match.group(2)
        value = env.get(name)
        if value:
            return value
        if default is not None:
            return default
        if value is not None:  # set but empty, and no default: empty is what was asked
            return value
        raise ConfigError(source, path, f"environment variable {name} is not set "
                          f"(use ${{{name}:-default}} to give a default)")

    result = _VAR.sub(repl, text)
    if typed and _WHOLE.match(text):
        return _scalar(result)
    return result


def _scalar(text: str) -> object:
    """The value YAML would read from `text` as a plain scalar (a string otherwise)."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if isinstance(value, str | int | float | bool) or value is None else text


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
