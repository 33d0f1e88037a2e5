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

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

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


# Profiles a policy may override keys for (config.profiles.Profile, repeated here so the
# policy stays importable without the settings).
PolicyProfile = Literal["cpu", "gpu"]


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
    drop_keywords: list[str] = Field(default_factory=lambda: list(DEFAULT_DROP_KEYWORDS))
    max_items: int | None = Field(
        default=None, ge=1, description="add or tighten maxItems on every array to at most this"
    )
    max_string_length: int | None = Field(
        default=None, ge=1, description="add or tighten maxLength on every string to at most this"
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
    verbatim: list[str] = Field(
        default_factory=list,
        description="JSON pointers into schema.json of string fields copied word for word "
        "from the text, e.g. '/properties/key_points/items' (as the schema annotation "
        '"x-structsum": {"verbatim": true} does); see processors/verbatim.py',
    )
    example: bool = Field(
        default=True,
        description="render example.json into the prompt; false renders {{ example }} empty "
        "(a small model copies the example's words)",
    )
    profiles: dict[PolicyProfile, dict[str, Any]] = Field(
        default_factory=dict,
        description="per hardware profile, keys of this policy that replace the ones above "
        "([profiles.cpu] verbatim = [...]; tables merge key by key)",
    )

    @model_validator(mode="after")
    def _profiles_valid(self) -> Policy:
        for name, overlay in self.profiles.items():
            if "profiles" in overlay:
                raise ValueError(f"profiles.{name} cannot hold profiles")
            try:
                self.for_profile(name)
            except ValidationError as exc:
                problems = "; ".join(
                    f"{'.'.join(str(part) for part in e['loc'])}: {e['msg']}" for e in exc.errors()
                )
                raise ValueError(f"profiles.{name}: {problems}") from exc
        return self

    def for_profile(self, profile: str) -> Policy:
        """This policy with the profile's overrides merged in; itself when there are none.

        The result has no ``profiles`` of its own, so applying a profile twice changes
        nothing the second time.
        """
        overlay = self.profiles.get(profile)  # type: ignore[call-overload]
        if not overlay:
            return self if not self.profiles else self.model_copy(update={"profiles": {}})
        return self.model_copy(update={"profiles": {}}).with_overrides(overlay)

    def with_overrides(self, overlay: dict[str, Any]) -> Policy:
        """A validated copy with ``overlay``'s keys merged in (tables key by key)."""
        return Policy.model_validate(_merged(self.model_dump(mode="json"), overlay))


def _merged(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """``overlay`` over ``base``; a table in both merges key by key, anything else replaces."""
    out = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merged(out[key], value)
        else:
            out[key] = value
    return out
