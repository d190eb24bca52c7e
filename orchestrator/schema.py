"""The JSON Schema of a deployment file, generated from the spec's own definitions.

Every property comes from a field of `DeploymentSpec` or `UpdatePolicy`: its name, its
default, its description and its input's schema (the ``_field(...)`` metadata next to the
field, or the field's annotation), and the Jina form's ``with:`` block comes from the
option table of `orchestrator.jina`. Nothing is listed twice: a new field shows up in the
schema, and a test checks that the schema refuses what the loader refuses.

A value that is still to be interpolated (a string with a ``$``) is accepted wherever a
number, a boolean or a constrained string is expected: the schema describes the file as
written, before interpolation; the loader checks the resolved values.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal

from orchestrator.jina import ACCEPTS_ANY, JINA_OPTIONS, Joined, Refuse, To
from orchestrator.spec import DeploymentSpec, UpdatePolicy

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
_INTERPOLATED = {"type": "string", "pattern": r"\$"}
_EXTENSIONS: dict[str, Any] = {"^x-": {}}
_TYPES: dict[object, str] = {int: "integer", float: "number", str: "string", bool: "boolean"}


def config_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the file format: one deployment as top-level
    fields, several under ``deployments:``, or a Jina file (``jtype: Deployment``)."""
    deployment = _object(_properties(DeploymentSpec), required=["name"])
    deployment["properties"].update({
        "workspace": {"description": "accepted for Jina compatibility; unused"},
        "sandbox": {"const": False, "description": "sandboxes are not supported"},
    })
    deployment.update({
        "if": {"properties": {"external": {"const": True}}, "required": ["external"]},
        "then": {"required": ["port"]},
        "else": {"required": ["uses"]},
    })
    several = _object({"deployments": {
        "type": "array", "minItems": 1, "items": {"$ref": "#/$defs/deployment"},
        "description": "several deployments in one file"}}, required=["deployments"])
    jina = _object({
        "jtype": {"const": "Deployment", "description": "Jina's class name"},
        "version": {"type": ["string", "number"], "description": "Jina's file version"},
        "with": {"$ref": "#/$defs/jina_options"},
    }, required=["jtype"])
    return {
        "$schema": SCHEMA_DIALECT,
        "title": "orchestrator deployment file",
        "description": "One deployment as top-level fields, several under 'deployments:', "
                       "or a Jina file (jtype: Deployment). Keys starting with 'x-' are "
                       "ignored.",
        "oneOf": [{"$ref": "#/$defs/deployment"}, {"$ref": "#/$defs/deployments"},
                  {"$ref": "#/$defs/jina"}],
        "$defs": {
            "deployment": deployment,
            "deployments": several,
            "policy": _object(_properties(UpdatePolicy)),
            "jina": jina,
            "jina_options": _object(_jina_options(deployment["properties"])),
        },
    }


def _object(properties: dict[str, Any], required: list[str] | None = None
            ) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "properties": properties,
                           "patternProperties": dict(_EXTENSIONS),
                           "additionalProperties": False}
    if required:
        out["required"] = required
    return out


def _properties(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: _property(f, hints[f.name]) for f in dataclasses.fields(cls)}


def _property(f: dataclasses.Field[Any], hint: object) -> dict[str, Any]:
    meta: Mapping[str, Any] = f.metadata
    explicit = meta.get("schema")
    core, nullable = _from_hint(hint)
    if explicit is not None:
        core = dict(explicit)
    core.update(meta.get("constraints") or {})
    if nullable:
        core = {"anyOf": [core, {"type": "null"}]}
    if not _accepts_any_string(core):
        core = {"anyOf": [core, _INTERPOLATED]}
    out: dict[str, Any] = {"description": meta.get("doc", "")}
    default = _default(f)
    if default is not dataclasses.MISSING:
        out["default"] = default
    return {**out, **core}


def _from_hint(hint: object) -> tuple[dict[str, Any], bool]:
    """(schema of the annotation's plain type, whether None is allowed)."""
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        rest = [a for a in args if a is not type(None)]
        inner, _ = _from_hint(rest[0]) if len(rest) == 1 else ({}, False)
        return inner, type(None) in args
    if typing.get_origin(hint) is Literal:
        return {"enum": list(args)}, False
    if hint in _TYPES:
        return {"type": _TYPES[hint]}, False
    if typing.get_origin(hint) is Mapping:
        return {"type": "object"}, False
    return {}, False


def _accepts_any_string(schema: Mapping[str, Any]) -> bool:
    return schema.get("type") == "string" and len(schema) == 1


def _default(f: dataclasses.Field[Any]) -> Any:
    value = f.default
    if f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    if isinstance(value, dict | tuple | frozenset):
        return dict(value) if isinstance(value, dict) else sorted(value)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return dataclasses.MISSING  # a nested value (policy): its own fields say


# -- the Jina form ----------------------------------------------------------------------------

_JINA_USES = {"anyOf": [
    {"type": "string", "description": "'Class' with py_modules, docker://IMAGE, "
                                      "'file.py:Class' or 'pkg.module:Class'"},
    {"type": "object", "properties": {
        "jtype": {"type": "string"}, "with": {"type": "object"},
        "py_modules": {"anyOf": [{"type": "string"},
                                 {"type": "array", "items": {"type": "string"},
                                  "maxItems": 1}]},
        "metas": {"type": "object", "properties": {"py_modules": {}},
                  "additionalProperties": False}},
     "required": ["jtype"], "additionalProperties": False}]}
_ONE_OR_LIST = ("port", "port_expose", "port_in", "ports", "host")
_JINA_SHAPES: dict[str, dict[str, Any]] = {
    "uses": _JINA_USES, "uses_before": _JINA_USES, "uses_after": _JINA_USES,
    "timeout_ready": {"anyOf": [{"type": "number", "exclusiveMinimum": 0}, _INTERPOLATED],
                      "description": "start deadline per pod, in milliseconds (Jina's unit)"},
    "gpus": {"anyOf": [{"type": "integer", "minimum": 0},
                       {"type": "string", "pattern": r"^(all|\d+)$"}, _INTERPOLATED]},
    "volumes": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}],
                "description": "'host:/container[:ro|rw]', or a host directory mounted at "
                               "/ its name"},
    "protocol": {"anyOf": [{"type": "string"}, {"type": "array",
                                                "items": {"type": "string"}}]},
}


def _jina_options(ours: Mapping[str, Any]) -> dict[str, Any]:
    """The ``with:`` block: Jina's names from the table, and our names that Jina lacks."""
    out = {name: prop for name, prop in ours.items() if name not in JINA_OPTIONS}
    for name, entry in JINA_OPTIONS.items():
        if isinstance(entry, To):
            out[name] = _jina_mapped(name, entry, ours)
        elif isinstance(entry, Joined):
            out[name] = {"anyOf": [{"type": "string"},
                                   {"type": "array", "items": {"type": "string"},
                                    "maxItems": 1}],
                         "description": entry.note}
        else:
            out[name] = _jina_refused(entry)
    return out


def _jina_mapped(name: str, entry: To, ours: Mapping[str, Any]) -> dict[str, Any]:
    prop = dict(_JINA_SHAPES.get(name) or ours[entry.field])
    if name in _ONE_OR_LIST:
        one = ours[entry.field]
        prop = {"anyOf": [one, {"type": "array", "minItems": 1, "maxItems": 1,
                                "items": one}]}
    if name == "polling":
        prop = {"anyOf": [ours["polling"], {"type": "string", "pattern": r"^\s*\{"}]}
    doc = ours[entry.field].get("description", "")
    prop.setdefault("description", f"{doc} ({entry.note})" if entry.note else doc)
    return prop


def _jina_refused(entry: Refuse) -> dict[str, Any]:
    """Refused options are valid only at a value that asks for nothing."""
    if any(a is ACCEPTS_ANY for a in entry.accepts):
        return {"description": f"accepted, no effect: {entry.reason}"}
    return {"enum": [*entry.accepts, None], "description": f"no meaning here: {entry.reason}"}


# -- the reference, as text -------------------------------------------------------------------


def reference_markdown() -> str:
    """The file format's reference as Markdown tables (fields, policy, Jina options), read
    from `config_schema()`: for a docs site that generates its YAML reference."""
    defs = config_schema()["$defs"]
    parts = ["## Deployment fields\n", _table(defs["deployment"]),
             "\n## `policy` fields\n", _table(defs["policy"]),
             "\n## Jina options (`jtype: Deployment`, under `with:`)\n",
             _table(defs["jina_options"], defaults=False)]
    return "\n".join(parts)


def _table(definition: Mapping[str, Any], *, defaults: bool = True) -> str:
    required = set(definition.get("required", ()))
    unless_external = set(definition.get("else", {}).get("required", ()))
    rows = (["| field | default | meaning |", "|---|---|---|"] if defaults
            else ["| option | meaning here |", "|---|---|"])
    for name, prop in definition["properties"].items():
        if defaults and name in ("workspace", "sandbox"):  # compatibility, not fields
            continue
        doc = str(prop.get("description", "")).replace("|", "\\|")
        if not defaults:
            rows.append(f"| `{name}` | {doc} |")
            continue
        default = ("required" if name in required else
                   "required unless `external`" if name in unless_external else
                   f"`{_json(prop['default'])}`" if "default" in prop else "")
        kind = _kind(prop).replace("|", "\\|")
        rows.append(f"| `{name}` | {default} | {doc} ({kind}) |" if kind else
                    f"| `{name}` | {default} | {doc} |")
    return "\n".join(rows) + "\n"


def _kind(schema: Mapping[str, Any]) -> str:
    """What a value may be, in a few words (``integer >= 1``, ``"ANY" or map``), read from
    its schema; the form for a value still to be interpolated is left out."""
    if schema == _INTERPOLATED:
        return ""
    if "anyOf" in schema:
        kinds = [k for k in (_kind(s) for s in schema["anyOf"]) if k]
        return " or ".join(dict.fromkeys(kinds))
    if "$ref" in schema:
        return f"map: see `{schema['$ref'].rsplit('/', 1)[-1]}` below"
    if "const" in schema:
        return _json(schema["const"])
    if "enum" in schema:
        return " / ".join(f"`{_json(v)}`" for v in schema["enum"])
    if isinstance(schema.get("type"), list):  # {"type": ["string", "integer"]}
        return " or ".join(_kind({"type": t}) for t in schema["type"])
    kind = {"integer": "integer", "number": "number", "string": "string", "boolean": "boolean",
            "object": "map", "array": "list", "null": "null"}.get(schema.get("type", ""), "")
    if kind in ("integer", "number"):
        if "minimum" in schema and "maximum" in schema:
            return f"{kind} from {_json(schema['minimum'])} to {_json(schema['maximum'])}"
        low = (f" > {_json(schema['exclusiveMinimum'])}" if "exclusiveMinimum" in schema else
               f" >= {_json(schema['minimum'])}" if "minimum" in schema else "")
        high = f", <= {_json(schema['maximum'])}" if "maximum" in schema else ""
        return f"{kind}{low}{high}"
    if kind == "list" and "items" in schema:
        return f"list of {_kind(schema['items']) or 'values'}"
    if kind == "string" and "maxLength" in schema:
        return f"string of at most {schema['maxLength']}"
    return kind


def _json(value: Any) -> str:
    return json.dumps(value)
