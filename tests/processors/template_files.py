"""A template on disk for tests: a small valid schema, its example and prompt, and a writer."""

import json
from pathlib import Path
from typing import Any

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "title": {"type": "string", "minLength": 1, "maxLength": 40},
        "points": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
        "date": {"type": ["string", "null"], "format": "date"},
    },
    "required": ["title", "points", "date"],
    "additionalProperties": False,
}
EXAMPLE: dict[str, Any] = {"title": "Budget", "points": ["a", "b"], "date": "2025-01-31"}
PROMPT = (
    "Summarize as JSON like {{ example }}.\n{% if language %}In {{ language }}.{% endif %}\n"
    "{{ text }}"
)


def write_template(
    root: Path,
    template_id: str = "t1",
    *,
    schema: Any = SCHEMA,
    example: Any = EXAMPLE,
    prompt: str = PROMPT,
    policy: str | None = "",
    skip: tuple[str, ...] = (),
) -> Path:
    directory = root / template_id
    directory.mkdir(parents=True)
    files = {
        "schema.json": schema if isinstance(schema, str) else json.dumps(schema),
        "example.json": example if isinstance(example, str) else json.dumps(example),
        "prompt.jinja": prompt,
    }
    if policy is not None:
        files["policy.toml"] = policy
    for name, content in files.items():
        if name not in skip:
            (directory / name).write_text(content, encoding="utf-8")
    return directory
