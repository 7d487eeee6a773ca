"""A quick yes for valid instances of the common JSON Schema shapes, compiled once.

jsonschema walks a schema keyword by keyword through generic dispatch and ``$ref`` lookups:
≈ 30-75 µs for a ``send-message`` frame, on the IOLoop, for every frame and request body.
``compile_check`` turns a schema made only of the keywords listed in ``_KEYWORDS`` into nested
closures answering ``True`` exactly when jsonschema (Draft 2020-12, with the registry's
ECMA ``pattern``) would find no error, in a few microseconds.

It only ever says yes: ``SchemaRegistry.validate`` asks it first and, when it answers
``False``, lets jsonschema validate the instance as before. So every error a client sees is
still jsonschema's, worded by ``describe_errors``; the check must just never accept what
jsonschema refuses. Where exactness would cost more than it saves (``enum`` of non-strings,
``uniqueItems`` of non-strings, ``oneOf`` of overlapping types), the check answers ``False``
and jsonschema decides. A schema using any other keyword (``format``, ``if``, ``allOf``, …)
is not compiled (``None``): jsonschema validates it, as before.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Optional

__all__ = ["compile_check", "Check"]

Check = Callable[[Any], bool]

# Keywords that never change whether an instance is valid.
_ANNOTATIONS = frozenset({"$id", "$schema", "title", "description", "default", "examples", "x-message",
                          "$comment", "deprecated", "readOnly", "writeOnly", "$defs"})
_KEYWORDS = frozenset({"type", "required", "properties", "additionalProperties", "maxLength", "minLength",
                       "pattern", "enum", "maxItems", "minItems", "uniqueItems", "items", "maxProperties",
                       "minProperties", "oneOf", "$ref", "minimum", "maximum"}) | _ANNOTATIONS


class _Unsupported(Exception):
    """The schema uses something the compiler does not handle: jsonschema validates it."""


def _is_integer(value: Any) -> bool:
    # jsonschema's Draft 2020-12 integer: not a bool; a float with no fraction counts.
    kind = type(value)
    return kind is int or (kind is float and value.is_integer())


# jsonschema's type checks (bool is not an integer or a number there).
_TYPES: dict[str, Check] = {
    "object": lambda v: type(v) is dict,
    "array": lambda v: type(v) is list,
    "string": lambda v: type(v) is str,
    "boolean": lambda v: type(v) is bool,
    "null": lambda v: v is None,
    "integer": _is_integer,
    "number": lambda v: type(v) in (int, float),
}


def compile_check(schema: Any, resolve: Callable[[str, Any], tuple[Any, Any]], scope: Any,
                  regex: Callable[[str], "re.Pattern[str]"]) -> Optional[Check]:
    """A check for ``schema``, or None when it uses a keyword the compiler does not handle.
    ``resolve(ref, scope)`` answers ``(schema, scope)`` for a ``$ref`` met under ``scope``
    (the registry's resolver: relative references between files); ``regex(pattern)`` is the
    compiled ``pattern`` exactly as the registry's jsonschema validator uses it."""
    try:
        return _compile(schema, _Compiler(resolve, regex), scope, {})
    except _Unsupported:
        return None


class _Compiler:
    """What compiling needs from the registry: ``$ref`` resolution and its ``pattern`` regex."""

    def __init__(self, resolve: Any, regex: Any) -> None:
        self.resolve = resolve
        self.regex = regex


def _compile(schema: Any, compiler: _Compiler, scope: Any, seen: dict[int, Check]) -> Check:
    if schema is True:
        return lambda value: True
    if schema is False or not isinstance(schema, dict):
        raise _Unsupported(schema)
    if id(schema) in seen:  # a recursive schema: not worth it
        raise _Unsupported("recursive")
    seen[id(schema)] = lambda value: False
    unknown = set(schema) - _KEYWORDS
    if unknown:
        raise _Unsupported(unknown)
    checks: list[Check] = []
    if "$ref" in schema:
        try:
            target, target_scope = compiler.resolve(schema["$ref"], scope)
        except Exception:  # unresolvable: jsonschema reports it, as before
            raise _Unsupported(schema["$ref"]) from None
        checks.append(_compile(target, compiler, target_scope, seen))
    if "type" in schema:
        kind = schema["type"]
        if not isinstance(kind, str) or kind not in _TYPES:
            raise _Unsupported(kind)
        checks.append(_TYPES[kind])
    checks += _string_checks(schema, compiler)
    checks += _number_checks(schema)
    checks += _object_checks(schema, compiler, scope, seen)
    checks += _array_checks(schema, compiler, scope, seen)
    if "enum" in schema:
        allowed = schema["enum"]
        if not isinstance(allowed, list) or not all(type(item) is str for item in allowed):
            raise _Unsupported("enum")
        members = frozenset(allowed)
        checks.append(lambda value: type(value) is str and value in members)
    if "oneOf" in schema:
        checks.append(_one_of(schema["oneOf"], compiler, scope, seen))
    del seen[id(schema)]
    return _all(checks)


def _all(checks: list[Check]) -> Check:
    if not checks:
        return lambda value: True
    if len(checks) == 1:
        return checks[0]
    if len(checks) == 2:
        first, second = checks
        return lambda value: first(value) and second(value)
    return lambda value: all(check(value) for check in checks)


def _add_length_check(checks: list[Check], schema: dict[str, Any], low_keyword: str, high_keyword: str,
                      kind: type) -> None:
    """The check of ``minLength``/``maxLength`` (strings) or ``minItems``/``maxItems`` (arrays)."""
    low, high = schema.get(low_keyword), schema.get(high_keyword)
    if low is None and high is None:
        return
    least = 0 if low is None else _count(low)
    most = None if high is None else _count(high)
    checks.append(lambda v: type(v) is not kind or (least <= len(v) and (most is None or len(v) <= most)))


def _string_checks(schema: dict[str, Any], compiler: _Compiler) -> list[Check]:
    checks: list[Check] = []
    # jsonschema counts code points: len() of a Python str.
    _add_length_check(checks, schema, "minLength", "maxLength", str)
    if "pattern" in schema:
        search = compiler.regex(schema["pattern"]).search
        checks.append(lambda v: type(v) is not str or search(v) is not None)
    return checks


def _number_checks(schema: dict[str, Any]) -> list[Check]:
    checks: list[Check] = []
    for keyword, holds in (("minimum", lambda v, bound: v >= bound), ("maximum", lambda v, bound: v <= bound)):
        if keyword in schema:
            bound = schema[keyword]
            if type(bound) not in (int, float):
                raise _Unsupported(keyword)
            checks.append(lambda v, bound=bound, holds=holds: type(v) not in (int, float) or holds(v, bound))
    return checks


def _object_checks(schema: dict[str, Any], compiler: _Compiler, scope: Any, seen: dict[int, Check]) -> list[Check]:
    checks: list[Check] = []
    required = schema.get("required")
    if required is not None:
        if not isinstance(required, list) or not all(type(name) is str for name in required):
            raise _Unsupported("required")
        names = tuple(required)
        checks.append(lambda v: type(v) is not dict or all(name in v for name in names))
    low, high = schema.get("minProperties"), schema.get("maxProperties")
    if low is not None or high is not None:
        low = 0 if low is None else _count(low)
        high = None if high is None else _count(high)
        checks.append(lambda v: type(v) is not dict or (low <= len(v) and (high is None or len(v) <= high)))
    properties = schema.get("properties")
    if properties is not None:
        if not isinstance(properties, dict):
            raise _Unsupported("properties")
        compiled = {name: _compile(sub, compiler, scope, seen) for name, sub in properties.items()}

        def check_properties(v: Any) -> bool:
            if type(v) is not dict:
                return True
            for name, check in compiled.items():
                if name in v and not check(v[name]):
                    return False
            return True

        checks.append(check_properties)
    if "additionalProperties" in schema:
        extra = schema["additionalProperties"]
        if extra is not False:  # a schema for the others: rarer, left to jsonschema
            raise _Unsupported("additionalProperties")
        known = frozenset(properties or ())
        checks.append(lambda v: type(v) is not dict or known.issuperset(v))
    return checks


def _array_checks(schema: dict[str, Any], compiler: _Compiler, scope: Any, seen: dict[int, Check]) -> list[Check]:
    checks: list[Check] = []
    _add_length_check(checks, schema, "minItems", "maxItems", list)
    if schema.get("uniqueItems") is True:
        # Exact for strings only (jsonschema's equality mixes 1, 1.0 and True otherwise).
        checks.append(lambda v: type(v) is not list or (all(type(item) is str for item in v)
                                                        and len(set(v)) == len(v)))
    elif "uniqueItems" in schema and schema["uniqueItems"] is not False:
        raise _Unsupported("uniqueItems")
    if "items" in schema:
        each = _compile(schema["items"], compiler, scope, seen)
        checks.append(lambda v: type(v) is not list or all(each(item) for item in v))
    return checks


def _one_of(options: Any, compiler: _Compiler, scope: Any, seen: dict[int, Check]) -> Check:
    """``oneOf`` whose options each declare a different single type (``[id, null]``): at most
    one can hold for any instance, so the instance is valid when the option of its type is."""
    if not isinstance(options, list) or not options:
        raise _Unsupported("oneOf")
    by_type: list[tuple[Check, Check]] = []
    kinds: set[str] = set()
    for option in options:
        declared, option_scope = option, scope
        while isinstance(declared, dict) and "type" not in declared and set(declared) - _ANNOTATIONS == {"$ref"}:
            try:
                declared, option_scope = compiler.resolve(declared["$ref"], option_scope)
            except Exception:
                raise _Unsupported(declared["$ref"]) from None
        kind = declared.get("type") if isinstance(declared, dict) else None
        if not isinstance(kind, str) or kind not in _TYPES or kind in kinds:
            raise _Unsupported("oneOf")
        kinds.add(kind)
        by_type.append((_TYPES[kind], _compile(option, compiler, scope, seen)))
    if {"integer", "number"} <= kinds:
        raise _Unsupported("oneOf: integer and number overlap")

    def check_one_of(v: Any) -> bool:
        for is_kind, check in by_type:
            if is_kind(v):
                return check(v)
        return False

    return check_one_of


def _count(value: Any) -> int:
    if type(value) is not int or value < 0:
        raise _Unsupported(value)
    return value
