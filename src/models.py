"""Requests and results as pydantic models: the JSON contract of tasks and client."""

from __future__ import annotations

import re
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from structsum.config import BudgetSettings, RequestLimits
from structsum.errors import EmptyText, TextHasNul, TextNotUtf8, TextTooLong

# Extra prompt variables stay scalar so a request can never smuggle objects into Jinja.
PromptVariable = str | int | float | bool

# BCP-47-like: a 2-8 letter primary subtag, then alphanumeric subtags ("en", "pt-BR",
# "zh-Hant-TW"). fullmatch, so a trailing newline cannot slip through.
LANGUAGE_TAG = re.compile(r"[A-Za-z]{2,8}(?:-[A-Za-z0-9]{1,8})*")
# Variable names are plain identifiers; no leading underscore, so no dunder lookalikes.
VARIABLE_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


def _limits(info: ValidationInfo) -> RequestLimits:
    """Limits from the validation context (client and task pass settings), else defaults."""
    context = info.context or {}
    return context.get("limits") or RequestLimits()


def _check_text(value: str, max_chars: int | None = None) -> str:
    # The size first: every later check walks the whole string.
    if max_chars is not None and len(value) > max_chars:
        raise TextTooLong(
            f"text has {len(value)} characters, the limit is {max_chars}",
            {"chars": len(value), "limit": max_chars},
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise TextNotUtf8(
            f"text is not valid UTF-8 at character {exc.start}", {"position": exc.start}
        ) from exc
    position = value.find("\x00")
    if position >= 0:
        raise TextHasNul(f"text has a NUL character at {position}", {"position": position})
    if not value.strip():
        raise EmptyText("text is empty")
    return value


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    text: str = Field(description="the text to process, UTF-8")
    language: str | None = Field(
        default=None, description="output language hint, a BCP-47 tag such as 'en' or 'pt-BR'"
    )
    use_cache: bool = Field(
        default=True,
        description="False: skip the result cache lookup and run the engine (the fresh "
        "result replaces the stored one)",
    )

    @field_validator("text")
    @classmethod
    def _text_is_usable(cls, value: str, info: ValidationInfo) -> str:
        context = info.context or {}
        budget: BudgetSettings | None = context.get("budget")
        return _check_text(value, budget.max_input_chars if budget else None)

    @field_validator("language")
    @classmethod
    def _language_is_a_tag(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        limit = _limits(info).max_language_chars
        if len(value) > limit:
            raise ValueError(f"language has {len(value)} characters, the limit is {limit}")
        if not LANGUAGE_TAG.fullmatch(value):
            raise ValueError("language must be a BCP-47 tag such as 'en' or 'pt-BR'")
        return value


class EnhancementRequest(_Request):
    """Clean up raw text (punctuation, casing, filler words); no output constraints."""


class SummaryRequest(_Request):
    """Summarize text into JSON that satisfies a template's schema."""

    template_id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.-]+$")
    variables: dict[str, PromptVariable] = Field(default_factory=dict)
    enhance: bool = Field(default=False, description="run enhancement first, feed its output")

    @field_validator("variables")
    @classmethod
    def _variables_are_small(
        cls, value: dict[str, PromptVariable], info: ValidationInfo
    ) -> dict[str, PromptVariable]:
        limits = _limits(info)
        if len(value) > limits.max_variables:
            raise ValueError(f"{len(value)} variables, the limit is {limits.max_variables}")
        for key, item in value.items():
            if len(key) > limits.max_variable_key_chars or not VARIABLE_KEY.fullmatch(key):
                raise ValueError(
                    f"variable names are identifiers of at most "
                    f"{limits.max_variable_key_chars} characters, not starting with '_'"
                )
            if isinstance(item, str) and len(item) > limits.max_variable_value_chars:
                raise ValueError(
                    f"variable {key!r} has {len(item)} characters, "
                    f"the limit is {limits.max_variable_value_chars}"
                )
        return value


class Turn(BaseModel):
    """One question and the answer given, as kept in a conversation's history."""

    question: str
    answer: str


class AskRequest(BaseModel):
    """A follow-up question about one document, in a conversation kept by the worker.

    The first question of a conversation names its document: ``text``, or a finished
    summary's ``summary_job_id`` (the summary's JSON is then the document). Later
    questions may send neither; sending a different document is refused.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    conversation_id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")
    question: str = Field(description="the question, UTF-8")
    text: str | None = Field(default=None, description="the document (first question)")
    summary_job_id: str | None = Field(
        default=None,
        max_length=255,
        pattern=r"^[A-Za-z0-9_.:-]+$",
        description="a finished summary job whose result is the document (first question)",
    )
    template_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="answer with JSON guided by this template's schema; None: free text",
    )
    language: str | None = Field(default=None, description="answer language, a BCP-47 tag")
    max_tokens: int | None = Field(
        default=None, ge=1, description="cap on the answer's tokens, below the configured one"
    )

    @field_validator("question", "text")
    @classmethod
    def _text_is_usable(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        budget: BudgetSettings | None = (info.context or {}).get("budget")
        return _check_text(value, budget.max_input_chars if budget else None)

    @field_validator("language")
    @classmethod
    def _language_is_a_tag(cls, value: str | None, info: ValidationInfo) -> str | None:
        return _Request._language_is_a_tag(value, info)

    @model_validator(mode="after")
    def _one_document(self) -> AskRequest:
        if self.text is not None and self.summary_job_id is not None:
            raise ValueError("send text or summary_job_id, not both")
        return self


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
    decoding: str | None = Field(
        default=None,
        description="the policy's decoding schema that guided this attempt ('default' is "
        "[simplify], else a [simplify.variants] name); None when it was unguided",
    )
    finish_reason: str | None
    usage: Usage
    elapsed_s: float
    ttft_s: float | None = None
    valid: bool
    errors: list[str] = Field(default_factory=list)
    repairs: list[str] = Field(
        default_factory=list, description="meaning-preserving fixes made before validation"
    )


class EnhancementResult(BaseModel):
    text: str
    truncated: bool
    usage: Usage
    elapsed_s: float
    ttft_s: float | None = None
    model: str
    chunks: int = 1
    cached: bool = Field(
        default=False,
        description="served from the result cache; usage and elapsed_s are those of the "
        "run that produced it",
    )


class Grounding(BaseModel):
    """How much of a summary comes from its source (processors/grounding.py)."""

    score: float | None = Field(
        description="share of the summary's content words found in the source; None: no words"
    )
    content_words: int = Field(description="content words counted (repeats included)")
    verbatim: float | None = Field(
        default=None,
        description="share of verbatim fields that are substrings of the source; None: none",
    )
    verbatim_fields: int = Field(default=0, description="verbatim field values checked")
    verbatim_copied: int = Field(default=0, description="of those, copied from the source")


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
        default_factory=list,
        description="what the default decoding schema ([simplify]) changed from the full "
        "one; attempts[i].decoding names the schema each attempt ran under",
    )
    enhancement: EnhancementResult | None = None
    cached: bool = Field(
        default=False,
        description="served from the result cache; usage and elapsed_s are those of the "
        "run that produced it",
    )
    grounding: Grounding | None = Field(
        default=None,
        description="how much of data comes from the text: content-word share and verbatim "
        "fields copied (processors/grounding.py); None when nothing parsed",
    )

    @property
    def temperatures(self) -> list[float]:
        return [attempt.temperature for attempt in self.attempts]


class AskResult(BaseModel):
    """The answer to one follow-up question."""

    conversation_id: str
    turn: int = Field(description="1 for the conversation's first question")
    answer: str = Field(description="the model's answer, stripped (JSON text with a template)")
    data: dict[str, Any] | None = Field(
        default=None, description="the parsed answer, with a template; None without one"
    )
    valid: bool | None = Field(
        default=None, description="data satisfies the template's schema; None: no template"
    )
    errors: list[str] = Field(default_factory=list)
    history_turns: int = Field(description="earlier turns the prompt carried (after trimming)")
    finish_reason: str | None
    usage: Usage
    elapsed_s: float
    ttft_s: float | None = None
    model: str
