"""Local ``$ref`` resolution through ``referencing``; a remote reference is never fetched.

A worker reads templates and validates model output; neither may open a
connection because a schema says so. The registries here have no retrieval
function: a reference that leaves the document fails to resolve instead of
being downloaded, and the loader refuses such references up front with a message
that names them. The one exception is an allow-listed local registry
(schema_registry.py): a remote reference to one of its files resolves to it.
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

    # Whether a remote reference may resolve (to a local registry's 2020-12 copies).
    _remote: bool = False

    @classmethod
    def of(cls, schema: Schema, registry: Registry[Any] | None = None) -> LocalRefs:
        """The refs of ``schema``; ``registry`` (a local registry's ``decoding`` copies)
        lets remote references to its files resolve, every other one is refused."""
        resource = DRAFT202012.create_resource(schema)
        uri = resource.id() or ""
        base = registry if registry is not None else offline_registry()
        resolver = base.with_resource(uri, resource).resolver(base_uri=uri)
        return cls(resolver, registry is not None)

    def lookup(self, ref: str, location: str) -> tuple[Any, LocalRefs]:
        """The target of ``ref`` (``#`` or ``#/...``), and the refs to resolve inside it.

        Anchors are refused as well as remote references (unless a local registry
        holds their document): only pointers can be inlined.
        """
        if not ref.startswith("#"):
            if self._remote:
                return self._lookup_remote(ref, location)
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
        return resolved.contents, LocalRefs(resolved.resolver, self._remote)

    def _lookup_remote(self, ref: str, location: str) -> tuple[Any, LocalRefs]:
        """A reference into a registry file. Its copy is in 2020-12 terms: a pointer
        written for the file as is (``#/definitions/a``) is tried renamed (``#/$defs/a``)."""
        from structsum.processors.drafts import rewrite_pointer

        document, _, fragment = ref.partition("#")
        if fragment and not fragment.startswith("/"):
            raise SchemaInvalid(
                f"$ref {ref!r} at {location} names an anchor; only JSON-pointer refs "
                "('...#/...') can be inlined",
                {"ref": ref},
            )
        renamed = f"{document}{rewrite_pointer('#' + fragment)}" if fragment else ref
        for candidate in dict.fromkeys((ref, renamed)):
            try:
                resolved = self._resolver.lookup(candidate)
            except Unresolvable:
                continue
            return resolved.contents, LocalRefs(resolved.resolver, self._remote)
        raise SchemaInvalid(
            f"remote $ref {ref!r} at {location} points at nothing in the local schema registry",
            {"ref": ref},
        )
