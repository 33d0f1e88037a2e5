"""Local ``$ref`` resolution through ``referencing``; a remote reference is never fetched.

A worker reads templates and validates model output; neither may open a
connection because a schema says so. The registries here have no retrieval
function: a reference that leaves the document fails to resolve instead of
being downloaded, and the loader refuses such references up front with a message
that names them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from referencing import Registry
from referencing.exceptions import Unresolvable
from referencing.jsonschema import DRAFT202012

from structsum.errors import SchemaInvalid
from structsum.processors.schema_walk import Schema, walk

REF_KEYWORDS = ("$ref", "$dynamicRef")


def offline_registry() -> Registry[Any]:
    """A registry that holds nothing and retrieves nothing (jsonschema adds the metaschemas).

    jsonschema's default registry downloads unknown ``http(s)`` references (with a
    deprecation warning); validators built with this one cannot.
    """
    return Registry()


def remote_refs(schema: Schema) -> Iterator[tuple[str, str]]:
    """``(location, ref)`` of every reference that points outside the schema document."""
    for location, node in walk(schema):
        for keyword in REF_KEYWORDS:
            ref = node.get(keyword)
            if isinstance(ref, str) and not ref.startswith("#"):
                yield location, ref


def has_refs(schema: Schema) -> bool:
    return any(keyword in node for _, node in walk(schema) for keyword in REF_KEYWORDS)


@dataclass(frozen=True)
class LocalRefs:
    """Resolves the JSON-pointer references of one schema document, from one base.

    A target reached through a subschema with its own ``$id`` resolves its own
    references from there: use the ``LocalRefs`` that ``lookup`` returns with it.
    """

    _resolver: Any  # referencing's Resolver; its class is not public API

    @classmethod
    def of(cls, schema: Schema) -> LocalRefs:
        resource = DRAFT202012.create_resource(schema)
        uri = resource.id() or ""
        return cls(offline_registry().with_resource(uri, resource).resolver(base_uri=uri))

    def lookup(self, ref: str, location: str) -> tuple[Any, LocalRefs]:
        """The target of ``ref`` (``#`` or ``#/...``), and the refs to resolve inside it.

        Anchors are refused as well as remote references: only pointers can be inlined.
        """
        if not ref.startswith("#"):
            raise SchemaInvalid(f"remote $ref {ref!r} at {location} is not allowed", {"ref": ref})
        if ref != "#" and not ref.startswith("#/"):
            raise SchemaInvalid(
                f"$ref {ref!r} at {location} is an anchor; only JSON-pointer refs ('#/...') "
                "can be inlined",
                {"ref": ref},
            )
        try:
            resolved = self._resolver.lookup(ref)
        except Unresolvable as exc:
            raise SchemaInvalid(
                f"$ref {ref!r} at {location} points at nothing", {"ref": ref}
            ) from exc
        return resolved.contents, LocalRefs(resolved.resolver)
