"""EDGE_AGENT_* environment variables merged over a configuration's data, the way
pydantic-settings merged them for this project (variable names in any case, `__`
between nested keys, JSON for tables and lists), without importing it: its
imports (asyncio, dotenv, its many sources) cost ~3 MB of the daemon's peak RSS.
Pure: a pydantic model class and a mapping in, plain data out.
"""

from __future__ import annotations

import json
import types
from collections.abc import Mapping, Sequence, Set
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

DELIMITER = "__"  # EDGE_AGENT_MQTT__TLS__CA_FILE = mqtt.tls.ca_file


class NotJsonError(ValueError):
    """An EDGE_AGENT_* variable for a table or a list whose value is not JSON."""

    def __init__(self, variable: str, key: str, error: ValueError) -> None:
        super().__init__(f"{variable} ({key}) is not valid JSON: {error}")


def env_overrides(
    model: type[BaseModel], environ: Mapping[str, str], prefix: str
) -> dict[str, Any]:
    """The settings given as EDGE_AGENT_* variables, as nested data to merge over the file.

    Variable names are case-insensitive. `EDGE_AGENT_<KEY>` sets a top-level key;
    `__` separates the keys of tables (`EDGE_AGENT_MQTT__TLS__CA_FILE`). A table or a
    list is given as JSON (`EDGE_AGENT_RUNTIME='{"num_threads": 2}'`), merged with its
    single-key variables, which win; every other value is passed as a string, for
    pydantic to convert. A variable naming no top-level key is ignored (test tools
    set EDGE_AGENT_TEST_RUNTIME, EDGE_AGENT_FIXTURES, ...); one naming an unknown key
    inside a table is an unknown key, like in the file. `pipelines` is set only as a
    whole: `EDGE_AGENT_PIPELINES__0__...` yields a table where a list is expected.
    """
    # Lower-cased names; of two that differ only in case, the later one counts.
    variables = {name.lower(): (name, value) for name, value in environ.items()}
    values: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        variable = (prefix + name).lower()
        found = variables.get(variable)
        kind = _json_kind(field)
        if kind is None:  # a plain value: as given
            if found is not None:
                values[name] = found[1]
            continue
        if found is None:
            value: Any = _nested(field, name, prefix, variables) or None
        else:
            value = _decode(found, name, lenient=kind == "lenient")
            if isinstance(value, dict):
                value = deep_update(value, _nested(field, name, prefix, variables))
        if value is None:  # unset, or JSON null: the file's value stays
            continue
        values[name] = _field_names(field, value) if isinstance(value, dict) else value
    return values


def _nested(
    field: FieldInfo, name: str, prefix: str, variables: Mapping[str, tuple[str, str]]
) -> dict[str, Any]:
    """The variables below the top-level key `name` (EDGE_AGENT_MQTT__*), as a tree."""
    prefix = (prefix + name + DELIMITER).lower()
    tree: dict[str, Any] = {}
    for lowered, (variable, value) in variables.items():
        if not lowered.startswith(prefix):
            continue
        *keys, last = lowered[len(prefix) :].split(DELIMITER)
        node: Any = tree
        target: Any = field
        for key in keys:
            target = _subfield(target, key)
            if isinstance(node, dict):
                node = node.setdefault(key, {})
        target = _subfield(target, last)
        decoded: Any = value
        if isinstance(target, FieldInfo) and value:
            kind = _json_kind(target)
            if kind is not None:
                path = ".".join([name, *keys, last])
                decoded = _decode((variable, value), path, lenient=kind == "lenient")
        if isinstance(node, dict):  # not below a key already set to a plain value
            node[last] = decoded
    return tree


def _decode(found: tuple[str, str], key: str, *, lenient: bool) -> Any:
    """JSON of a table or a list; for an optional table, a non-JSON value stays a string
    (and fails validation with the key's path)."""
    variable, value = found
    try:
        return json.loads(value)
    except ValueError as exc:
        if lenient:
            return value
        raise NotJsonError(variable, key, exc) from None


def _json_kind(field: FieldInfo) -> Literal["strict", "lenient"] | None:
    """Whether a field's variable holds JSON: always (a table, a list), or when it
    parses (a union with a table or a list, such as `tls: MqttTlsSettings | None`)."""
    if _structured(field.annotation):
        return "strict"
    if _is_union(field.annotation) and _union_structured(field.annotation):
        return "lenient"
    return None


def _structured(annotation: Any) -> bool:
    annotation = _unannotated(annotation)
    kind = get_origin(annotation) or annotation
    if not isinstance(kind, type) or issubclass(kind, (str, bytes)):
        return False
    return issubclass(kind, (BaseModel, Mapping, Sequence, Set))


def _union_structured(annotation: Any) -> bool:
    members = [_unannotated(member) for member in get_args(annotation)]
    return any(_structured(m) or (_is_union(m) and _union_structured(m)) for m in members)


def _unannotated(annotation: Any) -> Any:
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def _is_union(annotation: Any) -> bool:
    return get_origin(annotation) in (Union, types.UnionType)


def _subfield(target: Any, key: str) -> FieldInfo | None:
    """The field `key` (any case) of a model, of a model inside an optional or a union,
    or of a list's items; None if there is none."""
    if target is None:
        return None
    annotation = target.annotation if isinstance(target, FieldInfo) else target
    for member in get_args(annotation):
        found = _subfield(member, key)
        if found is not None:
            return found
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        for name, field in annotation.model_fields.items():
            if name.lower() == key.lower():
                return field
    return None


def _field_names(field: FieldInfo, values: dict[str, Any]) -> dict[str, Any]:
    """Keys of a table from the environment matched to its model's fields in any case
    (`EDGE_AGENT_MQTT='{"HOST": ...}'`), through nested and optional tables."""
    model = _model(field.annotation)
    if model is None:
        return values
    fields = {name.lower(): (name, sub) for name, sub in model.model_fields.items()}
    renamed: dict[str, Any] = {}
    for key, value in values.items():
        name, sub = fields.get(key.lower(), (key, None))
        if sub is not None and isinstance(value, dict) and _model(sub.annotation) is not None:
            renamed[name] = _field_names(sub, value)
        else:
            renamed[name] = value
    return renamed


def _model(annotation: Any) -> type[BaseModel] | None:
    """The model of a table or an optional table."""
    if _is_union(annotation):
        members = [m for m in get_args(annotation) if m is not type(None)]
        if len(members) != 1 or len(get_args(annotation)) != 2:
            return None
        annotation = members[0]
    annotation = _unannotated(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def by_field_name(model: type[BaseModel], data: dict[str, Any]) -> dict[str, Any]:
    """Top-level keys of the file matched to the fields in any case (`[MQTT]`), the first
    of a field's spellings winning; other keys pass, to be refused as unknown."""
    spellings: dict[str, list[str]] = {}
    for key in data:
        spellings.setdefault(key.lower(), []).append(key)
    matched: dict[str, Any] = {}
    used: set[str] = set()
    for name in model.model_fields:
        keys = spellings.get(name.lower(), [])
        if keys:
            matched[name] = data[keys[0]]
            used.update(keys)
    matched.update((key, value) for key, value in data.items() if key not in used)
    return matched


def deep_update(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """`base` with `update` merged in: tables key by key, everything else replaced."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(merged.get(key), dict) and isinstance(value, dict):
            merged[key] = deep_update(merged[key], value)
        else:
            merged[key] = value
    return merged
