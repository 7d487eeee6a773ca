"""JSON Schema registry: every schema file loaded once, checked, compiled and cached.

Schema ids are short names, ``<namespace>/<file stem>``: the core's files in ``schemas/`` are
``core/…``, a plugin's ``<plugin>/schemas/`` files are ``<plugin>/…``. Each file's ``$id`` is
``https://vachat.dev/schemas/<id>.json`` (set when missing), so a relative ``$ref`` such as
``"pagination.json"`` or ``"../core/user.json"`` works between files. Handlers name the ids they
accept and return; the OpenAPI document is built from the same registry, so it cannot drift.
"""

from __future__ import annotations

import copy
import functools
import itertools
import json
import re
from pathlib import Path
from typing import Any, Iterator

import jsonschema
from jsonschema import Draft202012Validator, ValidationError, validators
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from .errors import ValidationFailed
from .fast_schemas import Check, compile_check

__all__ = ["SchemaRegistry", "SchemaError", "SCHEMA_BASE_URI", "schema_uri", "describe_errors", "human_message", "keyword_message"]

SCHEMA_BASE_URI = "https://vachat.dev/schemas/"
# Most details a validation error lists: enough to fix a form, too few to amplify a bad request.
MAX_ERROR_DETAILS = 20
# Most errors examined to choose them: building one costs ~50 µs, and a 1 MiB array of wrong
# items holds 250,000 of them (seconds of IOLoop), so the search stops here.
MAX_ERRORS_EXAMINED = 100


class SchemaError(ValueError):
    """A schema file is unreadable, invalid, or outside its namespace."""


@functools.lru_cache(maxsize=None)
def _python_regex(pattern: str) -> re.Pattern[str]:
    """``pattern`` (ECMA-262, as JSON Schema means it) for Python's ``re``. The one difference
    that matters: ECMA's ``$`` is the end of the string, Python's also matches before a final
    newline, so ``^[a-z]+$`` would let ``"alice\\n"`` through. ``$`` outside a class becomes ``\\Z``."""
    out: list[str] = []
    in_class = escaped = False
    for char in pattern:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "[":
            in_class = True
        elif char == "]":
            in_class = False
        elif char == "$" and not in_class:
            char = r"\Z"
        out.append(char)
    return re.compile("".join(out))


def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not _python_regex(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


# Draft 2020-12 with ECMA-262 semantics for ``pattern``.
_Validator = validators.extend(Draft202012Validator, {"pattern": _pattern})

# The schemas found valid in this process, each as its canonical JSON text. Checking one against
# the meta-schema takes ~4 ms, ~0.4 s for the core's and the built-in plugins' together, on
# every application built; whether a schema is valid depends on its text alone, so each is
# checked once per process (the test suite builds an application per test).
_valid_schema_texts: set[str] = set()


def _check_against_meta_schema(schema: dict[str, Any]) -> None:
    """``jsonschema.SchemaError`` unless ``schema`` is a valid Draft 2020-12 schema."""
    text = json.dumps(schema, sort_keys=True)
    if text not in _valid_schema_texts:
        Draft202012Validator.check_schema(schema)
        _valid_schema_texts.add(text)


DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"


def schema_uri(schema_id: str) -> str:
    return f"{SCHEMA_BASE_URI}{schema_id}.json"


class SchemaRegistry:
    def __init__(self) -> None:
        self._schemas: dict[str, dict[str, Any]] = {}
        self._validators: dict[str, Draft202012Validator] = {}
        # The quick yes for valid instances (``fast_schemas``), None for a schema it cannot compile.
        self._checks: dict[str, Check | None] = {}
        self._registry: Registry | None = None

    # -- loading ---------------------------------------------------------------

    def add_directory(self, namespace: str, directory: Path) -> list[str]:
        """Load every ``*.json`` under ``directory`` as ``<namespace>/<relative stem>``."""
        added = []
        for path in sorted(Path(directory).rglob("*.json")):
            stem = path.relative_to(directory).with_suffix("").as_posix()
            try:
                schema = json.loads(path.read_text())
            except (OSError, ValueError) as error:
                raise SchemaError(f"{path}: not readable JSON: {error}") from None
            self.add(f"{namespace}/{stem}", schema, source=str(path))
            added.append(f"{namespace}/{stem}")
        return added

    def add(self, schema_id: str, schema: dict[str, Any], source: str = "<memory>") -> None:
        if not isinstance(schema, dict):
            raise SchemaError(f"{source}: a schema must be a JSON object")
        expected = schema_uri(schema_id)
        declared = schema.setdefault("$id", expected)
        if declared != expected:
            raise SchemaError(f"{source}: $id must be {expected!r} (its namespace), not {declared!r}")
        # Every schema is Draft 2020-12, validated by ``_Validator`` (ECMA ``pattern``). A
        # ``$schema`` naming that draft is dropped: jsonschema picks the class of a ``$ref``'d
        # schema by its ``$schema``, and would judge it with the stock class, whose ``$``
        # lets a final newline through (``"<id>\\n"`` passed as a conversation id).
        if schema.get("$schema") == DRAFT_2020_12:
            del schema["$schema"]
        try:
            _check_against_meta_schema(schema)
        except jsonschema.SchemaError as error:
            raise SchemaError(f"{source}: invalid JSON Schema: {error.message}") from None
        if schema_id in self._schemas:
            raise SchemaError(f"{source}: schema {schema_id!r} is defined twice")
        self._schemas[schema_id] = schema
        self._registry = None
        self._validators.clear()
        self._checks.clear()

    def _resources(self) -> Registry:
        if self._registry is None:
            self._registry = Registry().with_resources(
                (schema["$id"], Resource.from_contents(schema, default_specification=DRAFT202012))
                for schema in self._schemas.values()
            ).crawl()
        return self._registry

    def compile_all(self) -> None:
        """Compile every validator now, so a broken ``$ref`` fails at start-up, not mid-request."""
        for namespace in sorted({schema_id.partition("/")[0] for schema_id in self._schemas}):
            self.compile_namespace(namespace)

    def compile_namespace(self, namespace: str) -> None:
        """Compile the validators of one owner's schemas and resolve their ``$ref``s now; raises
        ``SchemaError`` naming the first that fails."""
        registry = self._resources()
        for schema_id, schema in self._schemas.items():
            if not schema_id.startswith(f"{namespace}/"):
                continue
            try:
                self.validator(schema_id)
                self._check(schema_id)
            except Exception as error:  # a schema referencing.Registry cannot take
                raise SchemaError(f"schema {schema_id!r} does not compile: {error}") from None
            resolver = registry.resolver(base_uri=schema["$id"])
            for ref in _walk_refs(schema):
                try:
                    resolver.lookup(ref)
                except Exception:  # referencing.exceptions.Unresolvable and friends
                    raise SchemaError(f"schema {schema_id!r}: $ref {ref!r} does not resolve") from None

    # -- use -------------------------------------------------------------------

    def remove_namespace(self, namespace: str) -> None:
        """Forget one owner's schemas (a plugin that failed to load)."""
        for schema_id in [schema_id for schema_id in self._schemas if schema_id.startswith(f"{namespace}/")]:
            del self._schemas[schema_id]
        self._registry = None
        self._validators.clear()
        self._checks.clear()

    def __contains__(self, schema_id: str) -> bool:
        return schema_id in self._schemas

    def ids(self) -> list[str]:
        return sorted(self._schemas)

    def get(self, schema_id: str) -> dict[str, Any]:
        try:
            return self._schemas[schema_id]
        except KeyError:
            raise KeyError(f"unknown schema {schema_id!r}") from None

    def id_for_uri(self, uri: str) -> str | None:
        if uri.startswith(SCHEMA_BASE_URI) and uri.endswith(".json"):
            candidate = uri[len(SCHEMA_BASE_URI):-len(".json")]
            return candidate if candidate in self._schemas else None
        return None

    def validator(self, schema_id: str) -> Draft202012Validator:
        validator = self._validators.get(schema_id)
        if validator is None:
            validator = _Validator(
                self.get(schema_id),
                registry=self._resources(),
                format_checker=Draft202012Validator.FORMAT_CHECKER,
            )
            self._validators[schema_id] = validator
        return validator

    def _check(self, schema_id: str) -> Check | None:
        if schema_id not in self._checks:
            schema = self.get(schema_id)

            def resolve(ref: str, resolver: Any) -> tuple[Any, Any]:
                resolved = resolver.lookup(ref)
                return resolved.contents, resolved.resolver

            self._checks[schema_id] = compile_check(schema, resolve, self._resources().resolver(base_uri=schema["$id"]),
                                                    _python_regex)
        return self._checks[schema_id]

    def validate(self, schema_id: str, instance: Any) -> Any:
        """Return ``instance`` if valid; else raise ``ValidationFailed`` naming each bad field.
        A compiled check (``fast_schemas``) answers most valid instances; jsonschema decides
        the rest and words every error."""
        check = self._checks[schema_id] if schema_id in self._checks else self._check(schema_id)
        if check is not None and check(instance):
            return instance
        errors = sorted(itertools.islice(self.validator(schema_id).iter_errors(instance), MAX_ERRORS_EXAMINED),
                        key=lambda e: list(e.absolute_path))
        if errors:
            raise ValidationFailed("Validation failed", details=describe_errors(errors))
        return instance

    def object_properties(self, schema_id: str) -> dict[str, Any]:
        """The ``properties`` an object schema declares, including those it takes through
        ``allOf`` (``$ref``s resolved): what a query schema accepts as parameters."""
        schema = self.get(schema_id)
        resolver = self._resources().resolver(base_uri=schema["$id"])
        merged: dict[str, Any] = {}

        def collect(node: dict[str, Any], resolver: Any) -> None:
            if "$ref" in node:
                resolved = resolver.lookup(node["$ref"])
                collect(resolved.contents, resolved.resolver)
            for part in node.get("allOf", []):
                collect(part, resolver)
            merged.update(node.get("properties", {}))  # the schema's own win over inherited ones

        collect(schema, resolver)
        return merged

    def copy(self, schema_id: str) -> dict[str, Any]:
        return copy.deepcopy(self.get(schema_id))


def describe_errors(errors: list[jsonschema.ValidationError]) -> list[dict[str, str]]:
    """``[{"field": "profile.email", "message": "must be a valid e-mail address"}]``, one entry
    per failing field. Messages are what a person would write after the field's name (see
    ``human_message``), never jsonschema's wording, and never repeat the value sent."""
    details: list[dict[str, str]] = []
    seen: set[tuple[str, str]] = set()
    for error in _leaf_errors(errors):
        path = [str(part) for part in error.absolute_path]
        if error.validator == "required":
            missing = error.message.split("'")[1] if "'" in error.message else ""
            path.append(missing)
            message = "is required"
        elif error.validator == "dependentRequired":
            missing = error.message.split("'")[1] if "'" in error.message else ""
            path.append(missing)
            message = "is required here"
        elif error.validator in ("additionalProperties", "unevaluatedProperties"):
            known = error.schema.get("properties", {})
            extras = [name for name in (error.instance or {}) if name not in known]
            for extra in extras or [""]:
                key = (".".join(path + [extra]), "is not an allowed field")
                if key not in seen and len(details) < MAX_ERROR_DETAILS:
                    seen.add(key)
                    details.append({"field": key[0], "message": key[1]})
            if len(details) >= MAX_ERROR_DETAILS:
                break
            continue
        else:
            message = human_message(error)
        key = (".".join(path) or "(body)", message)
        if key not in seen:
            seen.add(key)
            details.append({"field": key[0], "message": key[1]})
        if len(details) >= MAX_ERROR_DETAILS:
            break
    return details


# How each JSON type is named in a message.
_TYPE_NAMES = {
    "string": "text", "integer": "a whole number", "number": "a number", "boolean": "true or false",
    "object": "an object", "array": "a list", "null": "null",
}
# What a value of each format looks like, for "must be …".
_FORMAT_NAMES = {
    "email": "a valid e-mail address",
    "idn-email": "a valid e-mail address",
    "date-time": "a date and time such as 2024-05-01T12:00:00Z",
    "date": "a date such as 2024-05-01",
    "time": "a time such as 12:00:00Z",
    "uri": "a full URL such as https://example.com/",
    "uuid": "a UUID",
    "ipv4": "an IPv4 address",
    "ipv6": "an IPv6 address",
    "hostname": "a host name",
}
# Most enum values listed in a message; longer lists are summarised.
MAX_ENUM_VALUES_SHOWN = 10


def human_message(error: jsonschema.ValidationError) -> str:
    """The message for one failing keyword, read after the field name ("email must be a valid
    e-mail address"). A schema may word its own with ``"x-message"`` (useful for ``pattern``,
    which people cannot read)."""
    own = error.schema.get("x-message") if isinstance(error.schema, dict) else None
    if isinstance(own, str) and own:
        return own
    message = keyword_message(str(error.validator), error.validator_value)
    if "propertyNames" in error.relative_schema_path:  # about the object's keys, not a value
        return f"keys {message}"
    return message


def keyword_message(keyword: str, value: Any) -> str:
    if keyword == "type":
        kinds = value if isinstance(value, list) else [value]
        return "must be " + _either([_TYPE_NAMES.get(kind, str(kind)) for kind in kinds])
    if keyword == "format":
        return "must be " + _FORMAT_NAMES.get(value, f"a valid {value}")
    if keyword == "minLength":
        return "must not be empty" if value == 1 else f"must be at least {value} characters long"
    if keyword == "maxLength":
        return f"must be at most {value} characters long"
    if keyword == "pattern":
        return "is not in the expected format"
    if keyword == "enum":
        shown = [_literal(item) for item in value[:MAX_ENUM_VALUES_SHOWN]]
        if len(value) > MAX_ENUM_VALUES_SHOWN:
            return f"must be one of the allowed values ({', '.join(shown)}, …)"
        return "must be " + _either(shown) if len(shown) <= 2 else "must be one of " + _either(shown)
    if keyword == "const":
        return f"must be {_literal(value)}"
    if keyword == "minimum":
        return f"must be at least {_number(value)}"
    if keyword == "maximum":
        return f"must be at most {_number(value)}"
    if keyword == "exclusiveMinimum":
        return f"must be greater than {_number(value)}"
    if keyword == "exclusiveMaximum":
        return f"must be less than {_number(value)}"
    if keyword == "multipleOf":
        return f"must be a multiple of {_number(value)}"
    if keyword == "minItems":
        return "must not be empty" if value == 1 else f"must have at least {value} items"
    if keyword == "maxItems":
        return f"must have at most {value} item{'' if value == 1 else 's'}"
    if keyword == "uniqueItems":
        return "must not contain the same item twice"
    if keyword == "minProperties":
        return "must not be empty" if value == 1 else f"must have at least {value} entries"
    if keyword == "maxProperties":
        return f"must have at most {value} entr{'y' if value == 1 else 'ies'}"
    if keyword in ("contains", "minContains"):
        return "must contain an allowed item"
    if keyword == "maxContains":
        return "contains too many such items"
    return "is not valid"  # not, false schemas, and anything rarer


def _either(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def _literal(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _number(value: Any) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _leaf_errors(errors: list[jsonschema.ValidationError]) -> Iterator[jsonschema.ValidationError]:
    """For oneOf/anyOf failures, report the most relevant sub-error rather than the umbrella."""
    for error in errors:
        if error.context:
            yield jsonschema.exceptions.best_match(error.context)
        else:
            yield error


def _walk_refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _walk_refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk_refs(item)
