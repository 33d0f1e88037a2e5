"""Verbatim fields: string fields whose value must be copied from the source (issue 15).

A template marks them in two ways, with the same meaning:

* on the string schema itself: ``"x-structsum": {"verbatim": true}``;
* in ``policy.toml`` (per profile if wanted): ``verbatim = ["/properties/key_points/items"]``,
  JSON pointers into ``schema.json`` that must name string schemas.

Two guards follow from a mark:

* **while decoding** the field is constrained to the source: its string schema in the
  decoding schema becomes an ``enum`` of the source's sentences (clauses when a
  sentence is too long), built per request and bounded in count and length by
  ``settings.grounding``. Both backends get this enum (xgrammar has no substring
  constraint; llguidance's ``substring_words`` lives in its Lark grammars, which
  vLLM does not combine with a JSON schema request, see docs/benchmarks.md);
* **after decoding** a value that is not a substring of the source, both sides
  whitespace-normalised (and NFC), is a validation error, retried like any other.
  This catches what the decode cannot: an unguided retry, a text whose sentences
  were cut to the bounds.

The annotation never reaches a backend: the simplifier records where the marks are
(``SimplifiedSchema.verbatim_paths``) and strips them from the decoding schema.
"""

from __future__ import annotations

import copy
import re
import unicodedata
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from structsum.config import GroundingSettings
from structsum.errors import SchemaInvalid
from structsum.processors.guide import Guide
from structsum.processors.schema_walk import Schema, json_path, transform, walk

if TYPE_CHECKING:
    from structsum.processors.simplify import SimplifiedSchema

ANNOTATION = "x-structsum"
# Where a verbatim node sits in a schema: keys and indexes from the root.
Path = tuple[str | int, ...]

_SPACE = re.compile(r"\s+")
# A sentence ends at . ! ? (or an ellipsis) followed by space, or at a line break.
_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+|\s*\n\s*")
# Clause breaks inside an over-long sentence.
_CLAUSE_END = re.compile(r"(?<=[,;:])\s+")
# How much of a rejected value an error message repeats.
_SHOWN_CHARS = 80


# --- the marks ---------------------------------------------------------------------------


def is_marked(node: Any) -> bool:
    """Whether a schema node carries ``"x-structsum": {"verbatim": true}``."""
    if not isinstance(node, dict):
        return False
    annotation = node.get(ANNOTATION)
    return isinstance(annotation, dict) and annotation.get("verbatim") is True


def _is_string_schema(node: Any) -> bool:
    if not isinstance(node, dict):
        return False
    declared = node.get("type")
    return declared == "string" or (isinstance(declared, list) and "string" in declared)


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def mark(schema: Schema, pointers: Sequence[str]) -> Schema:
    """A copy of ``schema`` with the verbatim annotation at every JSON pointer.

    A pointer that does not resolve, or resolves to something other than a string
    schema, raises ``SchemaInvalid`` naming it: a policy typo must fail at load.
    """
    out = copy.deepcopy(schema)
    for pointer in pointers:
        if not pointer.startswith("/"):
            raise SchemaInvalid(
                f"verbatim pointer {pointer!r} must be a JSON pointer such as "
                "'/properties/quotes/items/properties/quote'",
                {"pointer": pointer},
            )
        node: Any = out
        for token in (_unescape(t) for t in pointer[1:].split("/")):
            if isinstance(node, list) and token.isdigit() and int(token) < len(node):
                node = node[int(token)]
            elif isinstance(node, dict) and token in node:
                node = node[token]
            else:
                raise SchemaInvalid(
                    f"verbatim pointer {pointer!r} names nothing in the schema (no {token!r})",
                    {"pointer": pointer},
                )
        if not _is_string_schema(node):
            raise SchemaInvalid(
                f'verbatim pointer {pointer!r} must name a string schema (with "type": "string")',
                {"pointer": pointer},
            )
        annotation = node.get(ANNOTATION)
        node[ANNOTATION] = {
            **(annotation if isinstance(annotation, dict) else {}),
            "verbatim": True,
        }
    return out


def check_marks(schema: Schema) -> None:
    """Every verbatim annotation sits on a string schema (the decode turns it into an enum)."""
    for location, node in walk(schema):
        if is_marked(node) and not _is_string_schema(node):
            raise SchemaInvalid(
                f'verbatim annotation at {location} must be on a string schema ("type": "string")',
                {"location": location},
            )


def marked_paths(schema: Schema) -> tuple[Path, ...]:
    """Where the verbatim nodes of ``schema`` sit, as key/index paths from the root."""
    found: list[Path] = []

    def visit(node: Any, path: Path) -> None:
        if isinstance(node, dict):
            if is_marked(node):
                found.append(path)
            for key, value in node.items():
                if key not in ("enum", "const", "examples", "default", ANNOTATION):
                    visit(value, (*path, key))
        elif isinstance(node, list):
            for index, value in enumerate(node):
                visit(value, (*path, index))

    visit(schema, ())
    return tuple(found)


def strip_annotations(schema: Schema) -> tuple[Schema, list[Any]]:
    """Remove every ``x-structsum`` annotation: no backend is meant to read it.

    Returns ``(schema, changes)`` like every simplifier step; the changes are the
    locations, made into ``Change`` records by the simplifier.
    """

    def fn(node: Schema, path: str) -> tuple[Schema, list[str]]:
        if ANNOTATION not in node:
            return node, []
        del node[ANNOTATION]
        return node, [path]

    return transform(schema, fn)


# --- the source's sentences ----------------------------------------------------------------


def normalize(text: str) -> str:
    """NFC, every whitespace run one space, no space at the ends (what the check compares)."""
    return _SPACE.sub(" ", unicodedata.normalize("NFC", text)).strip()


def _cut(piece: str, max_chars: int) -> str:
    """At most ``max_chars``, cut at a word boundary (still a substring of the source)."""
    if len(piece) <= max_chars:
        return piece
    cut = piece[:max_chars]
    space = cut.rfind(" ")
    return cut[:space] if space > 0 else cut


def sentences(text: str, *, min_chars: int, max_chars: int) -> list[str]:
    """The source's sentences, whitespace-normalised, each a substring of ``normalize(text)``.

    A sentence over ``max_chars`` is split into clauses, and a clause still over it is
    cut at a word boundary; pieces under ``min_chars`` (a "Yes.", a timestamp) are left
    out. Repeats are kept once, in order of first appearance.
    """
    pieces: list[str] = []
    for sentence in _SENTENCE_END.split(unicodedata.normalize("NFC", text)):
        sentence = normalize(sentence)
        parts = [sentence] if len(sentence) <= max_chars else _CLAUSE_END.split(sentence)
        pieces.extend(_cut(part, max_chars) for part in parts)
    kept = (p for p in pieces if len(p) >= min_chars)
    return list(dict.fromkeys(kept))


def spread(options: Sequence[str], limit: int) -> list[str]:
    """At most ``limit`` options, evenly spaced over the text so a long one is covered."""
    if len(options) <= limit:
        return list(options)
    step = len(options) / limit
    return [options[int(i * step)] for i in range(limit)]


def options_for(node: Schema, candidates: Sequence[str], limit: int) -> list[str]:
    """The candidates a string schema's own length bounds allow, at most ``limit``."""
    low = int(node.get("minLength", 0))
    high = node.get("maxLength")
    fitting = [c for c in candidates if len(c) >= low and (high is None or len(c) <= high)]
    return spread(fitting, limit)


def constrain(
    schema: Schema, paths: Sequence[Path], candidates: Sequence[str], limit: int
) -> Schema:
    """A copy of the decoding schema whose verbatim strings are enums of the source's pieces.

    A node with no fitting candidate stays free (an empty enum cannot be satisfied);
    the post-decode check still judges its value. ``description`` is kept: the model
    reads it in some prompts, the backends ignore it.
    """
    out = copy.deepcopy(schema)
    for path in paths:
        parent: Any = out
        for key in path[:-1]:
            parent = parent[key]
        node = parent[path[-1]]
        options = options_for(node, candidates, limit)
        if not options:
            continue
        constrained: Schema = {"type": "string", "enum": options}
        if "description" in node:
            constrained["description"] = node["description"]
        if isinstance(node.get("type"), list) and "null" in node["type"]:
            constrained = {"anyOf": [constrained, {"type": "null"}]}
        parent[path[-1]] = constrained
    return out


# --- the check after decoding ---------------------------------------------------------------


def verbatim_values(
    data: Any, schema: Any, path: tuple[str | int, ...] = ()
) -> Iterator[tuple[str, str]]:
    """``(location, value)`` of every string in ``data`` that a verbatim schema node governs.

    Follows ``properties``, ``items``, ``prefixItems`` and the branches of
    ``allOf``/``anyOf``/``oneOf``; ``schema`` must have its ``$ref`` inlined (the
    template's marked schema is). A value reached by two branches is reported once.
    """
    seen: set[str] = set()
    for location, value in _governed(data, schema, path):
        if location not in seen:
            seen.add(location)
            yield location, value


def _governed(data: Any, schema: Any, path: tuple[str | int, ...]) -> Iterator[tuple[str, str]]:
    if not isinstance(schema, dict):
        return
    if is_marked(schema) and isinstance(data, str):
        yield json_path(path), data
    for keyword in ("allOf", "anyOf", "oneOf"):
        for branch in schema.get(keyword, []) if isinstance(schema.get(keyword), list) else []:
            yield from _governed(data, branch, path)
    if isinstance(data, dict) and isinstance(schema.get("properties"), dict):
        for key, sub in schema["properties"].items():
            if key in data:
                yield from _governed(data[key], sub, (*path, key))
    if isinstance(data, list):
        declared = schema.get("prefixItems")
        prefix: list[Any] = declared if isinstance(declared, list) else []
        items = schema.get("items")
        for index, item in enumerate(data):
            sub = prefix[index] if index < len(prefix) else items
            yield from _governed(item, sub, (*path, index))


def is_verbatim(value: str, source: str) -> bool:
    """Whether ``value`` occurs in ``source``, both whitespace-normalised; empty never does."""
    needle = normalize(value)
    return bool(needle) and needle in normalize(source)


def verbatim_errors(data: Any, schema: Schema, source: str) -> tuple[list[str], int]:
    """(errors for values not copied from ``source``, verbatim values checked).

    The errors read like validation errors, so a retry prompt shows them to the model.
    """
    normalized = normalize(source)
    errors: list[str] = []
    checked = 0
    for location, value in verbatim_values(data, schema):
        checked += 1
        needle = normalize(value)
        if not needle or needle not in normalized:
            shown = needle if len(needle) <= _SHOWN_CHARS else needle[:_SHOWN_CHARS] + "…"
            errors.append(f"{location}: {shown!r} is not copied word for word from the text")
    return errors, checked


# --- the per-request guide ------------------------------------------------------------------


# Backends whose decode-time enums of the source's sentences break: on an H200 with
# the bundled SmolLM2 tokenizer, llguidance (vLLM's ``guidance`` backend) forced the
# enum's bytes with wrong tokens ("forced bytes: got ' '; applying 'Ä'; stopping"),
# and 2% of interview summaries came back valid (docs/benchmarks.md). There the
# verbatim check after decoding still holds; only the decode-time constraint is off.
ENUM_UNSAFE_BACKENDS = frozenset({"guidance"})


def request_guide(
    decoding: SimplifiedSchema,
    source: str,
    settings: GroundingSettings,
    backend: str | None = None,
) -> Guide | None:
    """The guide of one request: the decoding schema with its verbatim fields made enums.

    Without verbatim fields (or outside the ``json_schema`` mode, where the decode
    cannot name them, or on a ``backend`` in :data:`ENUM_UNSAFE_BACKENDS`) it is the
    template's own guide, compiled once and cached by the backend; with them the
    grammar differs per source and is compiled per request.
    """
    guide = decoding.guide
    if not decoding.verbatim_paths or guide is None or guide.kind != "json":
        return guide
    if backend in ENUM_UNSAFE_BACKENDS:
        return guide
    assert decoding.schema is not None  # the json guide is built from it
    # A text of short pieces only ("Yes. Friday.") still offers them: a free field
    # there would fail the check on every attempt.
    pieces = sentences(
        source, min_chars=settings.min_option_chars, max_chars=settings.max_option_chars
    ) or sentences(source, min_chars=1, max_chars=settings.max_option_chars)
    schema = constrain(decoding.schema, decoding.verbatim_paths, pieces, settings.max_options)
    return Guide("json", schema)
