"""The compiled checks of ``vachat.fast_schemas`` only ever say yes to what jsonschema accepts,
so validation through ``SchemaRegistry.validate`` refuses exactly what it refused before, with
the same error details (jsonschema still words every error)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from vachat.app import VachatApplication
from vachat.errors import ValidationFailed
from vachat.ids import new_id
from vachat.schemas import SchemaRegistry
from vachat.testing import make_test_settings

ID = new_id()
# Values that sit on the edges the compiled keywords test: types jsonschema tells apart
# (bool vs integer, 1.0 vs 1), lengths, patterns (a final newline, which Python's `$` lets
# through and ECMA's does not), ids, duplicates.
SCALARS: list[Any] = [
    None, True, False, 0, 1, -1, 1.0, 1.5, 2 ** 60, "", "a", "text", "file", "x" * 100, "x" * 32001, ID, ID + "\n",
    ID.lower(), "alice\n", "a b", "a_b-c", "é", "😀" * 5, "0" * 26,
]


def _values(rng: random.Random, schema_names: list[str], depth: int = 0) -> Any:
    pick = rng.random()
    if depth < 2 and pick < 0.15:
        return [_values(rng, schema_names, depth + 1) for _ in range(rng.choice([0, 1, 2, 3, 11]))]
    if depth < 2 and pick < 0.25:
        return _object(rng, schema_names, depth + 1)
    if pick < 0.35:
        return [rng.choice(["a", "b", ID, "a"]) for _ in range(rng.choice([0, 1, 2, 11]))]  # string lists, repeats
    return rng.choice(SCALARS)


def _object(rng: random.Random, names: list[str], depth: int) -> dict[str, Any]:
    chosen = rng.sample(names, k=rng.randint(0, len(names))) if names else []
    out = {name: _values(rng, names, depth) for name in chosen}
    if rng.random() < 0.1:
        out["unexpected"] = 1
    return out


def _property_names(schema: Any, found: set[str]) -> set[str]:
    if isinstance(schema, dict):
        for key, value in schema.items():
            if key == "properties" and isinstance(value, dict):
                found.update(value)
            _property_names(value, found)
    elif isinstance(schema, list):
        for item in schema:
            _property_names(item, found)
    return found


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> SchemaRegistry:
    """Every schema of the core and the built-in plugins, as a server loads them."""
    database = tmp_path_factory.mktemp("schemas") / "schemas.db"
    application = VachatApplication(make_test_settings(f"sqlite:///{database}"))
    application.schemas.compile_all()
    return application.schemas


def _jsonschema_details(registry: SchemaRegistry, schema_id: str, instance: Any) -> list[dict[str, str]] | None:
    """What jsonschema alone says (None: valid)."""
    compiled = registry._checks.get(schema_id)
    registry._checks[schema_id] = None
    try:
        registry.validate(schema_id, instance)
        return None
    except ValidationFailed as error:
        return error.details
    finally:
        registry._checks[schema_id] = compiled


def test_the_hot_frames_and_bodies_are_compiled(registry):
    registry.compile_all()
    for schema_id in ("chat/message-create", "chat/conversation-ref", "chat/conversation-create"):
        assert registry._checks[schema_id] is not None, schema_id


def test_a_compiled_check_never_accepts_what_jsonschema_refuses(registry):
    registry.compile_all()
    rng = random.Random(19)
    compiled = [schema_id for schema_id in registry.ids() if registry._checks.get(schema_id) is not None]
    assert len(compiled) >= 20
    accepted = refused = 0
    for schema_id in compiled:
        check = registry._checks[schema_id]
        names = sorted(_property_names(registry.get(schema_id), set()))
        for _ in range(400):
            instance = _object(rng, names, 0) if rng.random() < 0.8 else _values(rng, names)
            expected = _jsonschema_details(registry, schema_id, instance)
            if check(instance):
                accepted += 1
                assert expected is None, (schema_id, instance, expected)
            elif expected is not None:
                refused += 1
    assert accepted > 500 and refused > 500  # both sides were exercised


@pytest.mark.parametrize("data", [
    {},
    {"conversationId": ID, "content": "hi", "extra": 1},
    {"conversationId": ID.lower(), "content": "hi"},
    {"conversationId": ID + "\n", "content": "hi"},
    {"conversationId": ID, "content": 5},
    {"conversationId": ID, "content": "x" * 32001},
    {"conversationId": ID, "type": "video"},
    {"conversationId": ID, "files": ["a", "a"]},
    {"conversationId": ID, "files": ["a b"]},
    {"conversationId": ID, "files": [str(n) for n in range(11)]},
    {"conversationId": ID, "parentId": 3},
    {"conversationId": ID, "parentId": "nope"},
    {"conversationId": ID, "metadata": {str(n): n for n in range(33)}},
    {"conversationId": ID, "requiresAIResponse": 1},
    {"conversationId": ID, "clientMessageId": ""},
    {"conversationId": ID, "clientMessageId": "a/b"},
    [],
    "text",
])
def test_send_message_frames_refused_with_jsonschemas_own_details(registry, data):
    expected = _jsonschema_details(registry, "chat/message-create", data)
    if expected is None:  # an id with a final newline: see test_a_final_newline_in_a_referenced_pattern
        assert registry.validate("chat/message-create", data) is data
        return
    with pytest.raises(ValidationFailed) as refused:
        registry.validate("chat/message-create", data)
    assert refused.value.details == expected


def test_a_final_newline_in_a_referenced_pattern_is_refused_by_both(registry):
    """A ``$ref``'d schema is judged with the registry's ECMA ``pattern`` too: jsonschema picks
    a referenced schema's class by its ``$schema``, which the registry therefore drops, so
    ``"<id>\\n"`` is not a conversation id for either check."""
    data = {"conversationId": ID + "\n"}
    assert registry._checks["chat/message-create"](data) is False
    details = _jsonschema_details(registry, "chat/message-create", data)
    assert details and details[0]["field"] == "conversationId", details


@pytest.mark.parametrize("data", [
    {"conversationId": ID},
    {"conversationId": ID, "content": "hi", "type": "text", "files": ["a", "b_c-1"], "parentId": None,
     "metadata": {"k": [1]}, "requiresAIResponse": False, "clientMessageId": "c:1.2"},
    {"conversationId": ID, "parentId": ID, "content": "é😀" * 100},
])
def test_valid_send_message_frames_are_answered_by_the_compiled_check(registry, data):
    registry.compile_all()
    assert registry._checks["chat/message-create"](data) is True
    assert registry.validate("chat/message-create", data) is data


def test_a_schema_with_an_unresolvable_ref_is_left_to_jsonschema():
    registry = SchemaRegistry()
    registry.add("t/broken", {"type": "object", "properties": {"x": {"$ref": "missing.json"}}})
    assert registry._check("t/broken") is None


def test_an_invalid_schema_is_refused_every_time_a_valid_one_is_checked_once():
    """Each distinct schema is checked against the meta-schema once per process: the check's
    result depends on its text alone. A schema that fails is refused wherever it is added."""
    from vachat.schemas import SchemaError

    invalid = {"type": "object", "properties": {"name": {"type": "strnig"}}}
    for _ in range(2):
        with pytest.raises(SchemaError, match="invalid JSON Schema"):
            SchemaRegistry().add("test/invalid", dict(invalid))
    valid = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 3}}}
    for _ in range(2):
        registry = SchemaRegistry()
        registry.add("test/valid", dict(valid))
        with pytest.raises(ValidationFailed):
            registry.validate("test/valid", {"name": "four"})
