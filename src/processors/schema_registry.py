"""An allow-listed local registry for remote ``$ref`` (issue 16); nothing is ever fetched.

Real-world schemas point at shared definitions by URL
(``"$ref": "https://example.com/schemas/address.json#/$defs/street"``). A worker
must not open a connection because a schema says so, so by default a remote
``$ref`` is refused at load. With ``templates.schema_registry_dir``
(``STRUCTSUM_TEMPLATES__SCHEMA_REGISTRY_DIR``) a folder of local schema files is
the allow-list: each ``*.json`` file there is registered under its own ``$id``
(``id`` in draft-04), and a remote ``$ref`` whose URI (resolved against the
enclosing ``$id``, fragment removed) is one of them resolves to it through
``referencing``:

- **validation** uses the files as written, each by the draft its ``$schema``
  declares (:attr:`SchemaRegistry.validation`);
- **the decoding schema** inlines their 2020-12 copies (drafts.py ``normalise``,
  :attr:`SchemaRegistry.decoding`), like the template's own definitions.

Any other remote ``$ref`` is still refused, with the URI to add. A registry file
that is not a valid schema of its draft, has no ``$id``, or repeats another's
``$id`` is refused (typed) when a template is loaded with the registry.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import urldefrag, urljoin

from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from structsum.errors import SchemaInvalid
from structsum.processors.schema_walk import Schema, _slots

REGISTRY_SETTING = "STRUCTSUM_TEMPLATES__SCHEMA_REGISTRY_DIR"


def document_uri(uri: str) -> str:
    """``https://x/a.json#`` and ``https://x/a.json#/$defs/b`` -> ``https://x/a.json``."""
    return urldefrag(uri)[0]


def schema_id(schema: Schema) -> str | None:
    """The ``$id`` of a schema document (``id`` in draft-04), without its fragment."""
    from structsum.processors.drafts import declared_draft

    keyword = "id" if declared_draft(schema).name == "draft-04" else "$id"
    identifier = schema.get(keyword)
    if not isinstance(identifier, str) or identifier.startswith("#"):
        return None
    return document_uri(identifier) or None


def remote_refs_with_uri(schema: Schema, base: str | None = None) -> Iterator[tuple[str, str, str]]:
    """``(location, ref, document URI)`` of each ``$ref`` that leaves ``schema``'s document.

    The URI is the reference resolved against the enclosing ``$id`` (the base), as
    ``referencing`` resolves it; a reference to the document's own ``$id`` is local.
    """
    from structsum.processors.drafts import declared_draft

    id_keyword = "id" if declared_draft(schema).name == "draft-04" else "$id"
    root = schema_id(schema) or base or ""
    local = {root}

    def visit(node: Any, location: str, scope: str) -> Iterator[tuple[str, str, str]]:
        if not isinstance(node, dict):
            return
        identifier = node.get(id_keyword)
        if isinstance(identifier, str) and not identifier.startswith("#"):
            scope = document_uri(urljoin(scope, identifier))
            local.add(scope)
        for keyword in ("$ref", "$dynamicRef"):
            ref = node.get(keyword)
            if isinstance(ref, str) and not ref.startswith("#"):
                yield location, ref, document_uri(urljoin(scope, ref))
        for container, key, at in _slots(node, location):
            yield from visit(container[key], at, scope)

    # Embedded resources ($id inside) are local too: collect them first, then report.
    found = list(visit(schema, "$", root))
    yield from ((location, ref, uri) for location, ref, uri in found if uri not in local)


@dataclass(frozen=True, eq=False)
class SchemaRegistry:
    """The schemas of one registry folder, by document URI (identity equality: cache key)."""

    directory: Path
    documents: dict[str, Schema]

    def __contains__(self, uri: object) -> bool:
        return isinstance(uri, str) and document_uri(uri) in self.documents

    @cached_property
    def validation(self) -> Registry[Any]:
        """The files as written, each resource by its declared draft; no retrieval."""
        resources = [
            (uri, Resource.from_contents(doc, default_specification=DRAFT202012))
            for uri, doc in self.documents.items()
        ]
        return Registry().with_resources(resources).crawl()

    @cached_property
    def decoding(self) -> Registry[Any]:
        """2020-12 copies of the files (what the decoding schema inlines); no retrieval."""
        from structsum.processors.drafts import declared_draft, normalise

        resources = []
        for uri, doc in self.documents.items():
            normalised, _ = normalise(doc, declared_draft(doc))
            resources.append((uri, DRAFT202012.create_resource(normalised)))
        return Registry().with_resources(resources).crawl()


def refused_remote_ref(
    schema: Schema, where: str, registry: SchemaRegistry | None
) -> SchemaInvalid | None:
    """The typed refusal of the first remote ``$ref`` that ``registry`` does not hold.

    Registry files that ``schema`` uses are checked too, so that validation never
    meets a reference it cannot resolve.
    """
    pending: list[tuple[str, Schema]] = [(where, schema)]
    seen: set[str] = set()
    while pending:
        owner, document = pending.pop()
        for location, ref, uri in remote_refs_with_uri(document):
            if registry is not None and uri in registry.documents:
                if uri not in seen:
                    seen.add(uri)
                    pending.append((f"registry schema {uri!r}", registry.documents[uri]))
                continue
            if registry is None:
                allow = (
                    f'nothing is fetched; to allow it, put that schema (with "$id": {uri!r}) '
                    f"in a folder and set {REGISTRY_SETTING} to it"
                )
            else:
                allow = (
                    f"it is not in the local schema registry {str(registry.directory)!r}; "
                    f"nothing is fetched; to allow it, add that schema there with "
                    f'"$id": {uri!r}'
                )
            return SchemaInvalid(
                f"{owner}: remote $ref {ref!r} at {location} is not allowed: {allow}",
                {"ref": ref, "uri": uri, "location": location},
                hint=f"use '#...' references, or set {REGISTRY_SETTING} to a registry folder",
            )
    return None


# --- loading ------------------------------------------------------------------------------

_cache: dict[Path, tuple[tuple[tuple[str, int], ...], SchemaRegistry]] = {}
_cache_lock = threading.Lock()


def _stamps(directory: Path) -> tuple[tuple[str, int], ...]:
    return tuple(sorted((p.name, p.stat().st_mtime_ns) for p in directory.glob("*.json")))


def load_registry(directory: Path) -> SchemaRegistry:
    """The registry of ``directory``'s ``*.json`` files; cached until one of them changes.

    Raises ``SchemaInvalid`` naming the file for a folder that is missing, a file that is
    not a JSON Schema of its declared draft, has no ``$id``, or repeats another's.
    """
    from structsum.processors.drafts import check_schema, declared_draft

    def refuse(message: str, **details: Any) -> SchemaInvalid:
        return SchemaInvalid(
            f"schema registry {str(directory)!r}: {message}",
            {"registry": str(directory), **details},
            hint=f"fix the file, or unset {REGISTRY_SETTING}",
        )

    if not directory.is_dir():
        raise refuse("not a folder")
    key = directory.resolve()
    stamps = _stamps(directory)
    with _cache_lock:
        hit = _cache.get(key)
    if hit is not None and hit[0] == stamps:
        return hit[1]
    documents: dict[str, Schema] = {}
    origin: dict[str, str] = {}
    for name, _ in stamps:
        path = directory / name
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise refuse(f"{name}: cannot read it as JSON: {exc}", file=name) from exc
        if not isinstance(document, dict):
            raise refuse(f"{name}: a schema must be a JSON object", file=name)
        try:
            check_schema(document, declared_draft(document))
        except SchemaInvalid as exc:
            raise refuse(f"{name}: {exc.message}", file=name) from exc
        uri = schema_id(document)
        if uri is None:
            raise refuse(f"{name}: has no $id (the URI remote $refs use for it)", file=name)
        if uri in documents:
            raise refuse(f"{name} and {origin[uri]} both have $id {uri!r}", file=name)
        documents[uri] = document
        origin[uri] = name
    registry = SchemaRegistry(directory, documents)
    with _cache_lock:
        _cache[key] = (stamps, registry)
    return registry
