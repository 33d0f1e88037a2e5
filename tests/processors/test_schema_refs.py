"""Local $ref resolution: in-document pointers resolve, nothing is ever fetched."""

import urllib.request
from typing import Any

import pytest
from referencing.exceptions import Unresolvable

from structsum.errors import SchemaInvalid
from structsum.processors.schema_refs import LocalRefs, has_refs, remote_refs
from structsum.processors.templates import validate_instance


def test_remote_refs_are_found_in_subschemas_only() -> None:
    schema = {
        "properties": {
            "a": {"$ref": "https://example.com/a.json"},
            "b": {"$ref": "#/$defs/b"},
            "c": {"const": {"$ref": "https://example.com/data-not-a-ref"}},
        },
        "anyOf": [{"$dynamicRef": "other.json#meta"}],
        "$defs": {"b": {"type": "string"}},
    }
    assert list(remote_refs(schema)) == [
        ("$.properties.a", "https://example.com/a.json"),
        ("$.anyOf[0]", "other.json#meta"),
    ]
    assert has_refs(schema)
    assert not has_refs({"properties": {"c": {"const": {"$ref": "#"}}}})


def test_pointers_resolve_relative_to_the_schema_id() -> None:
    schema = {"$id": "https://example.com/s.json", "$defs": {"a~b": {"type": "null"}}}
    target, _ = LocalRefs.of(schema).lookup("#/$defs/a~0b", "$.x")
    assert target == {"type": "null"}
    root, _ = LocalRefs.of(schema).lookup("#", "$.x")
    assert root is schema


@pytest.mark.parametrize(
    "ref, message",
    [
        ("https://example.com/s.json#/$defs/a", "remote \\$ref .* at \\$.x"),
        ("#anchor", "is an anchor"),
        ("#/$defs/missing", "points at nothing"),
    ],
)
def test_what_does_not_resolve_locally_is_refused(ref: str, message: str) -> None:
    with pytest.raises(SchemaInvalid, match=message):
        LocalRefs.of({"$defs": {}}).lookup(ref, "$.x")


def test_validation_never_fetches_a_remote_ref(monkeypatch: pytest.MonkeyPatch) -> None:
    fetched: list[Any] = []

    def urlopen(request: Any, *args: Any, **kwargs: Any) -> Any:
        fetched.append(request)
        raise OSError("no network in tests")

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    schema = {"properties": {"a": {"$ref": "http://127.0.0.1:9/remote.json"}}}
    with pytest.raises(Unresolvable, match=r"remote\.json"):
        validate_instance(schema, {"a": 1})
    assert fetched == []
