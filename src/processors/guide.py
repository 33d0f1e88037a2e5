"""What a decode must match, as a plain value shared by the schema and the engine.

Its own module so that the decoding schema (``simplify``) can name its guide
without importing the engine, and the engine can accept one without knowing how
schemas are simplified.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

GuideKind = Literal["json", "regex", "json_object"]


@dataclass(frozen=True)
class Guide:
    """What the output must match: a JSON Schema, a regex, or any JSON object."""

    kind: GuideKind
    value: dict[str, Any] | str | None = None
