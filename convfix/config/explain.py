"""Turn msgspec's validation errors into convfix's ``<key.path>: expected X, got Y``.

msgspec says *where* a value is wrong (``- at `$.policies.dtype.mode```) but neither what it
found nor, for a ``Literal``, which values it would take; ``Invalid enum value 'loud'`` is no
help to someone editing a TOML file. So only the location is taken from msgspec's message:
what was expected is read from the schema's annotations (in declaration order, so modes read
``fix, warn, strict, off``), and what was found is read from the raw TOML table.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import msgspec

_AT = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<key>.*?)`(?: - at `|$)")


def explain(
    exc: msgspec.ValidationError,
    schema: type[msgspec.Struct],
    raw: Mapping[str, Any],
    expected: Mapping[str, str],
) -> tuple[str, str]:
    """Return ``(key path, problem)`` for a failed ``msgspec.convert(raw, schema)``.

    ``expected`` overrides the schema-derived description for fields whose rules are
    checked after decoding, so a wrong type and a wrong value on them read the same.
    """
    message = str(exc)
    at = _AT.search(message)
    # msgspec writes struct fields as ``.name``; the schema has no arrays or dicts to index.
    path = [part for part in at.group("path").split(".") if part] if at else []
    unknown = _UNKNOWN.match(message)
    if unknown:
        struct = _struct_of(_field_type(schema, path))
        valid = ", ".join(sorted(struct.__struct_fields__))
        return ".".join([*path, unknown.group("key")]), f"unknown key (valid keys: {valid})"
    dotted = ".".join(path)
    wanted = expected.get(dotted) or describe(_field_type(schema, path))
    return dotted, f"expected {wanted}, got {show(_lookup(raw, path))}"


def describe(annotation: Any) -> str:
    """Say in words what a field annotation accepts, e.g. ``a number in (0, 1)``."""
    origin = get_origin(annotation)
    if origin is Annotated:
        base, *metas = get_args(annotation)
        return _constrained(base, [m for m in metas if isinstance(m, msgspec.Meta)])
    if origin is Literal:
        return "one of " + ", ".join(str(value) for value in get_args(annotation))
    if origin is Union or origin is types.UnionType:
        # TOML has no null, so "or None" is never something a user could write.
        kinds = [a for a in get_args(annotation) if a is not type(None)]
        return " or ".join(describe(kind) for kind in kinds)
    if isinstance(annotation, type) and issubclass(annotation, msgspec.Struct):
        return "a table"
    return _NAMES.get(annotation, getattr(annotation, "__name__", str(annotation)))


def show(value: Any) -> str:
    """Render a found value as a TOML reader would recognise it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return repr(value)
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, (list, tuple)):
        return "an array"
    return repr(value)


_NAMES: dict[Any, str] = {
    bool: "true or false",
    int: "an integer",
    float: "a number",
    str: "a string",
}


def _constrained(base: Any, metas: list[msgspec.Meta]) -> str:
    name = describe(base)
    if base is str:
        short = any((m.min_length or 0) >= 1 for m in metas)
        return "a non-empty string" if short else name
    bounds: list[str] = []
    for meta in metas:
        if meta.gt is not None and meta.lt is not None:
            bounds.append(f"in ({meta.gt:g}, {meta.lt:g})")
            continue
        for op, bound in ((">", meta.gt), (">=", meta.ge), ("<", meta.lt), ("<=", meta.le)):
            if bound is not None:
                bounds.append(f"{op} {bound:g}")
    return " ".join([name, *bounds])


def _field_type(schema: type[msgspec.Struct], path: list[str]) -> Any:
    annotation: Any = schema
    for name in path:
        struct = _struct_of(annotation)
        annotation = typing.get_type_hints(struct, include_extras=True)[name]
    return annotation


def _struct_of(annotation: Any) -> Any:
    """The Struct class inside ``annotation``, or the annotation itself if there is none."""
    if isinstance(annotation, type) and issubclass(annotation, msgspec.Struct):
        return annotation
    for arg in get_args(annotation):
        if isinstance(arg, type) and issubclass(arg, msgspec.Struct):
            return arg
    return annotation


def _lookup(raw: Mapping[str, Any], path: list[str]) -> Any:
    value: Any = raw
    for name in path:
        value = value[name]
    return value
