"""A template from a schema someone already has: ``structsum templates add``.

Teams bring API payloads and SchemaStore entries, not templates. From a schema this
builds the rest of ``schemas/<id>/``: a prompt that describes the fields from the
schema's own titles and descriptions, an example instance that validates (shown
to the model, so it is made readable: plain words, one item per array), and the
policy of the current profile written out so the author can edit it.

The example is built by hand from the schema first; where that misses (a pattern,
a combination it cannot satisfy), hypothesis-jsonschema draws one and shrinks it
(``structsum[author]``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

from structsum.errors import ExampleInvalid, MissingExtra, SchemaInvalid
from structsum.processors.drafts import declared_draft, normalise
from structsum.processors.policy import Policy, default_policy
from structsum.processors.schema_registry import SchemaRegistry
from structsum.processors.schema_walk import Schema
from structsum.processors.simplify import inline_refs

# Readable values for the formats jsonschema checks; a format not listed gets a word.
FORMAT_SAMPLES: dict[str, str] = {
    "date": "2024-05-01",
    "date-time": "2024-05-01T09:30:00Z",
    "time": "09:30:00Z",
    "email": "ada@example.com",
    "idn-email": "ada@example.com",
    "uri": "https://example.com",
    "uri-reference": "https://example.com",
    "iri": "https://example.com",
    "url": "https://example.com",
    "hostname": "example.com",
    "ipv4": "192.0.2.1",
    "ipv6": "2001:db8::1",
    "uuid": "123e4567-e89b-12d3-a456-426614174000",
    "duration": "P1D",
    "regex": "^a$",
    "json-pointer": "/a",
}
# How often a recursive $ref is expanded while building the example: one level reads best.
EXAMPLE_REF_DEPTH = 1
# Attempts hypothesis may spend finding a valid instance before giving up.
HYPOTHESIS_MAX_EXAMPLES = 200


class _NoExample(Exception):
    """The hand-built example cannot satisfy this subschema."""


# --- the example ------------------------------------------------------------------------


def example_instance(
    schema: Schema, *, format_checking: bool = True, registry: SchemaRegistry | None = None
) -> dict[str, Any]:
    """A readable instance of ``schema`` that its own draft's validator accepts.

    ``registry``: the local schema registry remote ``$ref`` resolve from.

    Raises ``ExampleInvalid`` when neither the hand-built example nor
    hypothesis-jsonschema finds one (write example.json by hand then).
    """
    from structsum.processors.templates import validate_instance

    draft = declared_draft(schema)
    normalised, _ = normalise(schema, draft)
    refs = registry.decoding if registry is not None else None
    try:
        flat, _ = inline_refs(normalised, EXAMPLE_REF_DEPTH, registry=refs)
    except SchemaInvalid:  # anchors, deep recursion: hypothesis resolves refs itself
        flat = normalised
    # Every property first (the model copies the example's shape), then only the
    # required ones (optional parts can conflict: a metaschema's every keyword).
    for optional in (True, False):
        try:
            built: Any = _build(flat, "item", optional)
        except _NoExample:
            continue
        if isinstance(built, dict) and not validate_instance(
            schema, built, format_checking=format_checking, registry=registry
        ):
            return built
    found = _in_order(_hypothesis_example(flat if registry is not None else normalised), flat)
    errors = validate_instance(schema, found, format_checking=format_checking, registry=registry)
    if not isinstance(found, dict) or errors:
        raise ExampleInvalid(
            "no valid example instance found for the schema: " + "; ".join(errors[:3]),
            {"errors": errors[:3]},
            hint="write example.json by hand (an object the schema accepts)",
        )
    return found


def _build(node: Any, name: str, optional: bool = True) -> Any:
    """An instance of ``node``; ``optional`` False leaves optional properties out."""
    if node is True or node == {}:
        return _words(name)
    if node is False or not isinstance(node, dict):
        raise _NoExample(name)
    if "const" in node:
        return node["const"]
    if isinstance(node.get("enum"), list) and node["enum"]:
        return next((v for v in node["enum"] if v is not None), node["enum"][0])
    if isinstance(node.get("allOf"), list):
        merged = {k: v for k, v in node.items() if k != "allOf"}
        for branch in node["allOf"]:
            if isinstance(branch, dict):
                merged = _merge(merged, branch)
        return _build(merged, name, optional)
    for keyword in ("anyOf", "oneOf"):
        if isinstance(node.get(keyword), list):
            rest = {k: v for k, v in node.items() if k != keyword}
            for branch in node[keyword]:
                if isinstance(branch, dict):
                    try:
                        return _build(_merge(rest, branch), name, optional)
                    except _NoExample:
                        continue
            raise _NoExample(name)
    kind = _kind(node)
    if kind == "object":
        return _object(node, optional)
    if kind == "array":
        return _array(node, name, optional)
    if kind == "string":
        return _string(node, name)
    if kind in ("integer", "number"):
        return _number(node, integer=kind == "integer")
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    raise _NoExample(name)


def _merge(a: Schema, b: Schema) -> Schema:
    out = dict(a)
    for key, value in b.items():
        if key == "properties" and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        elif key == "required" and isinstance(out.get(key), list):
            out[key] = [*out[key], *value]
        else:
            out[key] = value
    return out


def _kind(node: Schema) -> str | None:
    declared = node.get("type")
    if isinstance(declared, list):
        declared = next((t for t in declared if t != "null"), declared[0] if declared else None)
    if isinstance(declared, str):
        return declared
    if "properties" in node or "additionalProperties" in node or "required" in node:
        return "object"
    if "items" in node or "prefixItems" in node:
        return "array"
    if any(k in node for k in ("pattern", "format", "minLength", "maxLength")):
        return "string"
    if any(k in node for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")):
        return "number"
    return "string"  # a value the schema leaves free: a placeholder word reads best


def _object(node: Schema, optional: bool) -> dict[str, Any]:
    properties = node.get("properties") if isinstance(node.get("properties"), dict) else {}
    out: dict[str, Any] = {}
    required = [r for r in node.get("required", []) if isinstance(r, str)]
    for prop, sub in properties.items():
        if not optional and prop not in required:
            continue
        try:
            out[prop] = _build(sub, prop, optional)
        except _NoExample:
            if prop in required:
                raise
    for prop in required:
        if prop not in out:
            extra = node.get("additionalProperties", True)
            out[prop] = _build(extra if isinstance(extra, dict) else True, prop, optional)
    return out


def _array(node: Schema, name: str, optional: bool) -> list[Any]:
    prefix = node.get("prefixItems") if isinstance(node.get("prefixItems"), list) else []
    out = [_build(sub, name, optional) for sub in prefix]
    items = node.get("items", True)
    want = max(1 if optional else 0, int(node.get("minItems", 0)))
    if node.get("maxItems") == 0:
        return []
    while len(out) < want and items is not False:
        value = _build(items, name, optional)
        if node.get("uniqueItems") and value in out:
            value = f"{value} {len(out) + 1}" if isinstance(value, str) else value
        out.append(value)
    return out


def _string(node: Schema, name: str) -> str:
    fmt = node.get("format")
    if isinstance(node.get("pattern"), str):
        return _pattern_sample(node["pattern"], name)
    if isinstance(fmt, str) and fmt in FORMAT_SAMPLES:
        return FORMAT_SAMPLES[fmt]
    text = _words(name)
    low, high = int(node.get("minLength", 0)), node.get("maxLength")
    while len(text) < low:
        text += " " + _words(name)
    return text[:high] if isinstance(high, int) else text


def _pattern_sample(pattern: str, name: str) -> str:
    """The shortest string hypothesis finds that ``pattern`` matches (``T-0000``)."""
    try:
        from hypothesis import HealthCheck, find, settings
        from hypothesis import strategies as st
        from hypothesis.errors import HypothesisException
    except ImportError as exc:
        raise _NoExample(name) from exc
    try:
        return str(
            find(
                st.from_regex(pattern),
                lambda _: True,
                settings=settings(database=None, suppress_health_check=list(HealthCheck)),
            )
        )
    except (HypothesisException, re.error) as exc:
        raise _NoExample(name) from exc


def _in_order(instance: Any, node: Any) -> Any:
    """``instance`` with object keys in the schema's property order (vLLM's xgrammar
    backend decodes keys in that order, and the model copies the example)."""
    if isinstance(instance, dict) and isinstance(node, dict):
        found = node.get("properties")
        properties: dict[str, Any] = found if isinstance(found, dict) else {}
        ordered = [k for k in properties if k in instance] + [
            k for k in instance if k not in properties
        ]
        return {k: _in_order(instance[k], properties.get(k)) for k in ordered}
    if isinstance(instance, list) and isinstance(node, dict):
        return [_in_order(item, node.get("items")) for item in instance]
    return instance


def _number(node: Schema, *, integer: bool) -> int | float:
    low = node.get("minimum", node.get("exclusiveMinimum"))
    high = node.get("maximum", node.get("exclusiveMaximum"))
    value: float = 1
    if isinstance(low, (int, float)):
        value = low + (1 if "exclusiveMinimum" in node and "minimum" not in node else 0)
    if isinstance(high, (int, float)) and value > high:
        value = high
    step = node.get("multipleOf")
    if isinstance(step, (int, float)) and step > 0:
        value = step * max(1, round(value / step))
    return int(value) if integer else value


def _words(name: str) -> str:
    """``userName`` / ``user_name`` -> ``example user name``: reads as a placeholder."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name).replace("_", " ").replace("-", " ")
    return f"example {spaced.lower().strip()}".strip()


def _hypothesis_example(schema: Schema) -> Any:
    """The shrunk (smallest) instance hypothesis-jsonschema finds for ``schema``."""
    try:
        from hypothesis import HealthCheck, find, settings
        from hypothesis.errors import HypothesisException
        from hypothesis_jsonschema import from_schema
    except ImportError as exc:
        raise MissingExtra(
            f"the schema needs hypothesis-jsonschema to draw an example ({exc})",
            {"module": "hypothesis_jsonschema"},
            hint="pip install 'structsum[author]', or write example.json by hand",
        ) from exc
    hypothesis_jsonschema_compat()
    try:
        return find(
            from_schema(json.loads(json.dumps(schema))),
            lambda instance: isinstance(instance, dict),
            settings=settings(
                max_examples=HYPOTHESIS_MAX_EXAMPLES,
                database=None,
                suppress_health_check=list(HealthCheck),
            ),
        )
    except HypothesisException as exc:  # NoSuchExample, Unsatisfiable, InvalidArgument
        raise ExampleInvalid(
            f"hypothesis-jsonschema found no instance of the schema: {exc}",
            {},
            hint="write example.json by hand (an object the schema accepts)",
        ) from exc


def hypothesis_jsonschema_compat() -> None:
    """Let hypothesis-jsonschema 0.23 run on Hypothesis versions without ``many.more()``.

    hypothesis-jsonschema draws object keys with the private ``many(...).more()`` loop;
    recent Hypothesis replaced it by ``with many(...) as e: for _ in e``. This adapter
    drives the new iterator from ``more()``; it is a no-op on versions that have it.
    """
    from hypothesis.internal.conjecture import utils as conjecture_utils

    many = conjecture_utils.many
    if hasattr(many, "more"):
        return

    def more(self: Any) -> bool:
        if self._depth is None:
            self.__enter__()
            self._compat_iterator = iter(self)
        try:
            next(self._compat_iterator)
        except StopIteration:
            self.__exit__(None, None, None)
            return False
        return True

    many.more = more  # type: ignore[attr-defined]


# --- the prompt and the policy ----------------------------------------------------------

PROMPT_HEAD = "You turn a text into a JSON object. Reply with one JSON object and nothing else.\n"
PROMPT_TAIL = """Use only facts from the text. Keep every value short.
{% if language %}
Write the values in this language: {{ language }}.
{% endif %}

Example of the format (about a different text):
{{ example }}

The text:
\"\"\"
{{ text }}
\"\"\"
"""
# Fields described in the prompt; a longer list costs prompt tokens and reads as noise.
MAX_PROMPT_FIELDS = 40


def default_prompt(schema: Schema, registry: SchemaRegistry | None = None) -> str:
    """A prompt that names the object and describes its top-level fields from the schema."""
    normalised, _ = normalise(schema, declared_draft(schema))
    refs = registry.decoding if registry is not None else None
    try:
        flat, _ = inline_refs(normalised, EXAMPLE_REF_DEPTH, registry=refs)
    except SchemaInvalid:  # the field list is best effort; refs stay unnamed
        flat = normalised
    lines = [PROMPT_HEAD]
    about = " ".join(str(flat.get(k, "")).strip() for k in ("title", "description")).strip()
    if about:
        lines.append(f"The object: {_one_line(about)}\n")
    properties = flat.get("properties") if isinstance(flat.get("properties"), dict) else {}
    required = set(flat.get("required", []))
    if properties:
        lines.append("Fields:")
        for name, sub in list(properties.items())[:MAX_PROMPT_FIELDS]:
            text = ""
            if isinstance(sub, dict):
                text = " ".join(
                    str(sub.get(k, "")).strip() for k in ("title", "description")
                ).strip()
            mark = " (required)" if name in required else ""
            lines.append(f'- "{name}"{mark}: {_one_line(text) or "see the example"}')
        lines.append("")
    # Descriptions are text, not Jinja: a raw block keeps their braces literal.
    body = "\n".join(lines).replace("endraw", "end raw")
    return "{% raw %}" + body + "{% endraw %}\n" + PROMPT_TAIL


def _one_line(text: str, limit: int = 200) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def policy_toml(kind: Literal["cpu", "gpu"]) -> str:
    """The profile's default policy as the policy.toml an author edits."""
    policy: Policy = default_policy(kind)
    head = (
        f"# Written by `structsum templates add` for the {kind} profile (policy.py\n"
        "# default_policy). The full schema validates every result; this only shapes\n"
        "# the decoding schema and the retries.\n"
    )
    lines = [head]
    for table, values in policy.model_dump(mode="json").items():
        if isinstance(values, dict):
            lines.append(f"[{table}]")
            lines += [f"{k} = {json.dumps(v)}" for k, v in values.items() if v is not None]
            lines.append("")
        elif values is not None:
            lines.insert(1, f"{table} = {json.dumps(values)}")
    return "\n".join(lines)


def write_template(
    directory: Path,
    schema: Schema,
    *,
    prompt: str | None,
    kind: Literal["cpu", "gpu"],
    format_checking: bool = True,
    registry: SchemaRegistry | None = None,
) -> list[Path]:
    """Create ``directory`` with the four template files; refuses an existing one.

    The schema is checked as the loader checks it before anything is written;
    ``registry``: the local schema registry remote ``$ref`` resolve from.
    """
    from structsum.processors.templates import check_schema_document

    check_schema_document(schema, "schema", registry=registry)
    example = example_instance(schema, format_checking=format_checking, registry=registry)
    directory.mkdir(parents=True, exist_ok=False)
    files = {
        "schema.json": json.dumps(schema, indent=2, ensure_ascii=False) + "\n",
        "prompt.jinja": prompt if prompt is not None else default_prompt(schema, registry),
        "example.json": json.dumps(example, indent=2, ensure_ascii=False) + "\n",
        "policy.toml": policy_toml(kind),
    }
    written = []
    for name, text in files.items():
        (directory / name).write_text(text, encoding="utf-8")
        written.append(directory / name)
    return written
