"""Requests and results as pydantic models: the JSON contract of tasks and client."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from structsum.errors import EmptyText, TextNotUtf8

# Extra prompt variables stay scalar so a request can never smuggle objects into Jinja.
PromptVariable = str | int | float | bool


def _check_text(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise TextNotUtf8(
            f"text is not valid UTF-8 at character {exc.start}", {"position": exc.start}
        ) from exc
    if not value.strip():
        raise EmptyText("text is empty")
    return value


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    text: str = Field(description="the text to process, UTF-8")
    language: str | None = Field(default=None, description="output language hint, e.g. 'en'")

    @field_validator("text")
    @classmethod
    def _text_is_usable(cls, value: str) -> str:
        return _check_text(value)


class EnhancementRequest(_Request):
    """Clean up raw text (punctuation, casing, filler words); no output constraints."""


class SummaryRequest(_Request):
    """Summarize text into JSON that satisfies a template's schema."""

    template_id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.-]+$")
    variables: dict[str, PromptVariable] = Field(default_factory=dict)
    enhance: bool = Field(default=False, description="run enhancement first, feed its output")


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
        )


class Attempt(BaseModel):
    """One guided (or unguided) generation of a summary and what validation said of it."""

    index: int
    temperature: float
    guided: bool
    finish_reason: str | None
    usage: Usage
    elapsed_s: float
    ttft_s: float | None = None
    valid: bool
    errors: list[str] = Field(default_factory=list)


class EnhancementResult(BaseModel):
    text: str
    truncated: bool
    usage: Usage
    elapsed_s: float
    ttft_s: float | None = None
    model: str
    chunks: int = 1


class SummaryResult(BaseModel):
    template_id: str
    schema_sha256: str = Field(description="sha256 of the full schema's canonical JSON")
    data: dict[str, Any] | None = Field(description="the parsed JSON; None if nothing parsed")
    valid: bool = Field(description="data satisfies the template's full schema")
    errors: list[str] = Field(default_factory=list, description="validation errors of data")
    attempts: list[Attempt]
    usage: Usage
    elapsed_s: float
    model: str
    settings_fingerprint: str
    chunks: int = 1
    simplification: list[str] = Field(
        default_factory=list, description="what the decoding schema changed from the full one"
    )
    enhancement: EnhancementResult | None = None

    @property
    def temperatures(self) -> list[float]:
        return [attempt.temperature for attempt in self.attempts]
