"""Per-template policy: how the decoding schema is simplified and how invalid output is retried.

A template's ``policy.toml`` is parsed into :class:`Policy`. Every field has a
default, so a template without a policy file works; unknown keys are rejected
so that a typo (``max_item = 5``) fails loudly instead of being ignored.

The full schema always validates the result. The simplify policy only shapes the
schema handed to the decoding backend, so it may loosen constraints freely and
tighten them only in the ways it lists (caps, ``additionalProperties``,
``required``), each reported by the simplifier.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Keywords whose removal can only loosen a schema: each is a conjunct constraint on its
# own node, read by no other keyword. Dropping `properties`, `prefixItems` or
# `patternProperties` is not here: `additionalProperties` / `items` read them, so
# dropping them could reject what the full schema accepts.
SAFE_TO_DROP: frozenset[str] = frozenset(
    {
        "pattern",
        "format",
        "minLength",
        "maxLength",
        "minItems",
        "maxItems",
        "uniqueItems",
        "contains",
        "minContains",
        "maxContains",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "minProperties",
        "maxProperties",
        "propertyNames",
        "dependentRequired",
        "dependentSchemas",
        "not",
        "if",
        "then",
        "else",
        "contentEncoding",
        "contentMediaType",
        "contentSchema",
    }
)

# What xgrammar (vLLM's default backend) rejects or ignores, or what makes its grammar
# large: regexes, formats, lower length bounds and array-content constraints.
DEFAULT_DROP_KEYWORDS: tuple[str, ...] = (
    "pattern",
    "format",
    "minLength",
    "uniqueItems",
    "contains",
    "minContains",
    "maxContains",
    "multipleOf",
    "propertyNames",
    "dependentRequired",
    "dependentSchemas",
    "not",
    "if",
    "then",
    "else",
)


# A recursive $ref (trees, threads) is expanded this often in the decoding schema: deep
# enough for what a summary nests, small enough to keep the grammar small.
DEFAULT_MAX_REF_DEPTH = 3
# $ref inlinings one schema may need: far above any template's, far below what turns a
# small mutually recursive schema into tens of MB (one measured at 32 MB, 7 minutes).
DEFAULT_MAX_INLINED_REFS = 2000
# The string formats xgrammar builds a grammar for (vLLM refuses a schema with any other).
GRAMMAR_FORMATS: tuple[str, ...] = (
    "email",
    "date",
    "time",
    "date-time",
    "duration",
    "ipv4",
    "ipv6",
    "hostname",
    "uuid",
    "uri",
    "uri-reference",
    "uri-template",
    "json-pointer",
    "relative-json-pointer",
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SimplifyPolicy(_Strict):
    """What the decoding schema drops, caps or tightens relative to the full schema."""

    mode: Literal["json_schema", "regex", "json_object", "none"] = Field(
        default="json_schema",
        description="json_schema: guided by the simplified schema; regex: guided by a regex "
        "built from it (outlines); json_object: any JSON object; none: unguided, validate only",
    )
    inline_refs: bool = Field(default=True, description="replace local $ref by their target")
    max_ref_depth: int = Field(
        default=DEFAULT_MAX_REF_DEPTH,
        ge=0,
        description="how often a recursive $ref is expanded before the decoding schema "
        "stops the recursion there (false); 0 refuses recursive schemas",
    )
    max_inlined_refs: int = Field(
        default=DEFAULT_MAX_INLINED_REFS,
        ge=1,
        description="refuse a schema whose $ref inlining passes this many references "
        "(inlining can multiply a schema; bounded load time)",
    )
    drop_keywords: list[str] = Field(default_factory=lambda: list(DEFAULT_DROP_KEYWORDS))
    grammar_formats: list[str] | None = Field(
        default=None,
        description="keep only these `format` values in the decoding schema (the others "
        "are dropped: the backend refuses them); None keeps every format",
    )
    max_items: int | None = Field(
        default=None, ge=1, description="add or tighten maxItems on every array to at most this"
    )
    max_string_length: int | None = Field(
        default=None, ge=1, description="add or tighten maxLength on every string to at most this"
    )
    grammar_compatible: bool = Field(
        default=False,
        description="reshape what vLLM refuses for xgrammar (empty allOf branches, "
        "patternProperties beside properties) instead of failing the request",
    )
    bound_free_json: bool = Field(
        default=False,
        description="with max_items and max_string_length: bound maps (maxProperties, "
        "property name length) and decode values the schema leaves free as capped scalars",
    )
    strip_caps: bool = Field(
        default=False,
        description="remove maxItems/maxLength from the decoding schema (fast on GPUs; the "
        "full schema still validates, so over-long output fails validation and is retried)",
    )
    additional_properties_false: bool = Field(
        default=True, description="forbid keys the schema does not list (decoding only)"
    )
    require_all: bool = Field(
        default=False, description="make every listed property required (decoding only)"
    )

    @field_validator("drop_keywords")
    @classmethod
    def _only_safe_drops(cls, value: list[str]) -> list[str]:
        unsafe = sorted(set(value) - SAFE_TO_DROP)
        if unsafe:
            raise ValueError(
                f"cannot drop {unsafe}: dropping them could reject output the full schema "
                f"accepts; droppable keywords are {sorted(SAFE_TO_DROP)}"
            )
        return list(dict.fromkeys(value))

    @model_validator(mode="after")
    def _caps_consistent(self) -> SimplifyPolicy:
        if self.strip_caps and (self.max_items is not None or self.max_string_length is not None):
            raise ValueError("strip_caps = true contradicts max_items / max_string_length")
        return self


class RetryPolicy(_Strict):
    """How many attempts, and how each one differs from the last."""

    attempts: int = Field(default=3, ge=1)
    temperatures: list[float] = Field(
        default_factory=lambda: [0.7, 0.3, 0.0],
        min_length=1,
        description="attempt i uses temperatures[min(i, len - 1)]",
    )
    guided: list[bool] = Field(
        default_factory=lambda: [True],
        min_length=1,
        description="per attempt whether decoding is guided; the last value repeats",
    )
    feedback_errors: bool = Field(
        default=True, description="append the validation errors to the retry prompt"
    )
    truncation_growth: float = Field(
        default=1.5,
        ge=1.0,
        description="multiply max_tokens after an attempt cut at max_tokens (1.0: off)",
    )
    repair_unique_items: bool = Field(
        default=True,
        description="drop repeated items from arrays the full schema marks uniqueItems "
        "(no grammar can enforce it) before validating, instead of retrying",
    )
    on_exhausted: Literal["error", "return_invalid"] = Field(
        default="return_invalid",
        description="after the last invalid attempt: raise OutputInvalid, or return the "
        "best output marked invalid",
    )

    @field_validator("temperatures")
    @classmethod
    def _non_negative(cls, value: list[float]) -> list[float]:
        if any(t < 0 for t in value):
            raise ValueError("temperatures must be >= 0")
        return value

    def temperature_for(self, attempt: int) -> float:
        """Temperature of the 0-based ``attempt``; the schedule's last value repeats."""
        return self.temperatures[min(max(attempt, 0), len(self.temperatures) - 1)]

    def guided_for(self, attempt: int) -> bool:
        """Whether the 0-based ``attempt`` is guided; the schedule's last value repeats."""
        return self.guided[min(max(attempt, 0), len(self.guided) - 1)]


class Policy(_Strict):
    """A template's ``policy.toml``: ``[simplify]``, ``[retry]`` and an output budget."""

    simplify: SimplifyPolicy = SimplifyPolicy()
    retry: RetryPolicy = RetryPolicy()
    max_tokens: int | None = Field(
        default=None, ge=1, description="per-template output budget (overrides sampling)"
    )


# --- the policy of a template without policy.toml -----------------------------------------

# What the grammar cannot enforce (vLLM refuses these for xgrammar, or the backends
# ignore them): validation checks them. Unlike DEFAULT_DROP_KEYWORDS, pattern, format
# and minLength stay in the grammar: a schema someone brings usually has patterns
# (ids, versions, dates) that a small model only satisfies when guided.
GRAMMAR_UNSUPPORTED: tuple[str, ...] = (
    "uniqueItems",
    "contains",
    "minContains",
    "maxContains",
    "multipleOf",
    "propertyNames",
    "dependentRequired",
    "dependentSchemas",
    "not",
    "if",
    "then",
    "else",
)
# Caps of the CPU default policy: every array and free string bounded, so the bundled
# 135M model must stop; a schema's own smaller maxItems/maxLength are kept. Sized so
# that a 40-property schema still fits the default output budget (768 tokens).
CPU_DEFAULT_MAX_ITEMS = 3
CPU_DEFAULT_MAX_STRING_LENGTH = 60


def default_policy(kind: Literal["cpu", "gpu"]) -> Policy:
    """The policy of a template that ships no ``policy.toml`` (``settings.templates``).

    ``cpu``: caps in the grammar, the only thing that makes a small model on a CPU
    stop (DESIGN.md section 5). ``gpu``: no caps in the grammar, the fast path there;
    the full schema still validates every result on both.
    """
    drops, formats = list(GRAMMAR_UNSUPPORTED), list(GRAMMAR_FORMATS)
    if kind == "gpu":
        return Policy(
            simplify=SimplifyPolicy(
                drop_keywords=drops,
                grammar_formats=formats,
                grammar_compatible=True,
                strip_caps=True,
            )
        )
    return Policy(
        simplify=SimplifyPolicy(
            drop_keywords=drops,
            grammar_formats=formats,
            grammar_compatible=True,
            bound_free_json=True,
            max_items=CPU_DEFAULT_MAX_ITEMS,
            max_string_length=CPU_DEFAULT_MAX_STRING_LENGTH,
        )
    )
