"""Per-template policy: how the decoding schema is simplified and how invalid output is retried.

A template's ``policy.toml`` is parsed into :class:`Policy`. Every field has a
default, so a template without a policy file works; unknown keys are rejected
so that a typo (``max_item = 5``) fails loudly instead of being ignored.

The full schema always validates the result. The simplify policy only shapes the
schema handed to the decoding backend, so it may loosen constraints freely and
tighten them only in the ways it lists (caps, ``additionalProperties``,
``required``), each reported by the simplifier.

A policy may name more than one decoding schema: ``[simplify]`` is the one called
``default``, and each ``[simplify.variants.<name>]`` table overrides some of its
keys (the rest are inherited). ``[retry] decoding`` then says, per attempt, which
one guides it (the last entry repeats, like ``guided``), e.g. a first attempt
without caps in the grammar (fast on xgrammar) and capped retries, or the reverse::

    [simplify]
    max_items = 5
    max_string_length = 200

    [simplify.variants.uncapped]
    strip_caps = true          # drops the inherited caps too

    [retry]
    decoding = ["uncapped", "default"]
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

# The name of the decoding schema ``[simplify]`` itself describes.
DEFAULT_DECODING = "default"
# Variant names appear in results, logs and table columns: keep them plain words.
_VARIANT_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
# Keys of ``[simplify]`` whose values a ``strip_caps = true`` variant does not inherit.
_CAP_KEYS = ("max_items", "max_string_length")

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
    format_patterns: bool = Field(
        default=False,
        description="decode `format` strings (uri, email, date-time, ...) by bounded regexes "
        "of the format (processors/bounded_regex.py): xgrammar's own accept any length",
    )
    bound_patterns: bool = Field(
        default=False,
        description="with max_string_length: bound the unbounded repetition of every "
        "`pattern` (`+`, `*`, `{n,}`) so the repeated parts share max_string_length characters",
    )
    max_number: int | None = Field(
        default=None,
        ge=1,
        description="give numbers without a minimum/maximum the bound -max_number/max_number "
        "in the grammar (an unbounded number lets a model write digits forever)",
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
    variants: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="named decoding schemas, [simplify.variants.<name>]: each overrides "
        "the keys above it sets and inherits the rest; [retry] decoding picks one per attempt",
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

    @model_validator(mode="after")
    def _variants_valid(self) -> SimplifyPolicy:
        for name in self.variants:
            if name == DEFAULT_DECODING or not _VARIANT_NAME.fullmatch(name):
                raise ValueError(
                    f"variant name {name!r}: use a word of letters, digits, _ and - "
                    f"other than {DEFAULT_DECODING!r} (that is [simplify] itself)"
                )
            self.variant(name)  # raises on an invalid override, at load time
        return self

    @property
    def decoding_names(self) -> tuple[str, ...]:
        """``default`` and every variant, in the order the policy lists them."""
        return (DEFAULT_DECODING, *self.variants)

    def variant(self, name: str) -> SimplifyPolicy:
        """The policy of one named decoding schema: ``[simplify]`` with the variant's keys.

        A variant that sets ``strip_caps = true`` does not inherit the caps (it could
        never be valid with them); a variant cannot have variants of its own.
        """
        if name == DEFAULT_DECODING:
            return self
        if name not in self.variants:
            raise ValueError(
                f"no decoding schema {name!r}; the policy has {list(self.decoding_names)}"
            )
        override = self.variants[name]
        if "variants" in override:
            raise ValueError(f"variant {name!r}: a variant cannot have variants")
        inherited = self.model_dump(exclude={"variants"})
        if override.get("strip_caps") is True:
            for key in _CAP_KEYS:
                inherited.pop(key)
        try:
            return SimplifyPolicy.model_validate({**inherited, **override})
        except ValidationError as exc:
            problems = "; ".join(describe_error(error) for error in exc.errors())
            raise ValueError(f"variant {name!r}: {problems}") from None


def describe_error(error: Any) -> str:
    """One pydantic error as ``key: message`` (``unknown key`` for a typo)."""
    key = ".".join(str(part) for part in error["loc"]) or "(top level)"
    if error["type"] == "extra_forbidden":
        return f"unknown key {key!r}"
    return f"{key}: {error['msg']}"


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
    decoding: list[str] = Field(
        default_factory=lambda: [DEFAULT_DECODING],
        min_length=1,
        description="per attempt which decoding schema guides it: 'default' ([simplify]) "
        "or a [simplify.variants] name; the last value repeats",
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

    def decoding_for(self, attempt: int) -> str:
        """The decoding schema of the 0-based ``attempt``; the schedule's last value repeats."""
        return self.decoding[min(max(attempt, 0), len(self.decoding) - 1)]

    def guided_decodings(self) -> list[str]:
        """The decoding schemas the guided attempts use, once each, in attempt order."""
        used = [self.decoding_for(i) for i in range(self.attempts) if self.guided_for(i)]
        return list(dict.fromkeys(used))


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
    def _decodings_exist(self) -> Policy:
        known = self.simplify.decoding_names
        unknown = [name for name in self.retry.decoding if name not in known]
        if unknown:
            raise ValueError(
                f"retry.decoding names {unknown}, which the policy does not define; "
                f"it has {list(known)} (add [simplify.variants.<name>])"
            )
        return self

    @model_validator(mode="after")
    def _profiles_valid(self) -> Policy:
        for name, overlay in self.profiles.items():
            if "profiles" in overlay:
                raise ValueError(f"profiles.{name} cannot hold profiles")
            try:
                self.for_profile(name)
            except ValidationError as exc:
                problems = "; ".join(describe_error(error) for error in exc.errors())
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


# --- the policy of a template without policy.toml -----------------------------------------

# What the grammar cannot enforce (vLLM refuses these for xgrammar, or the backends
# ignore them): validation checks them. Unlike DEFAULT_DROP_KEYWORDS, pattern, format
# and minLength stay in the grammar: a schema someone brings usually has patterns
# (ids, versions, dates) that a small model only satisfies when guided.
_KEPT_IN_GRAMMAR: tuple[str, ...] = ("pattern", "format", "minLength")
GRAMMAR_UNSUPPORTED: tuple[str, ...] = tuple(
    keyword for keyword in DEFAULT_DROP_KEYWORDS if keyword not in _KEPT_IN_GRAMMAR
)
# Caps of the CPU default policy: every array and free string bounded, so the bundled
# 135M model must stop; a schema's own smaller maxItems/maxLength are kept. Sized so
# that a 40-property schema still fits the default output budget (768 tokens).
CPU_DEFAULT_MAX_ITEMS = 3
CPU_DEFAULT_MAX_STRING_LENGTH = 60
# Numbers without bounds decode within +-10^12 (13 digits, a few decimals).
CPU_DEFAULT_MAX_NUMBER = 10**12


def default_policy(kind: Literal["cpu", "gpu"]) -> Policy:
    """The policy of a template that ships no ``policy.toml`` (``settings.templates``).

    Caps in the grammar, the only thing that makes a small model stop (DESIGN.md
    section 5): arrays, free strings, pattern and format strings (bounded regexes) and
    numbers; the full schema still validates every result.

    ``gpu`` was the uncapped grammar until the BYOS corpus ran on an H100 (session 5,
    docs/benchmarks.md): uncapped, 72 % of the 53 good schemas ended valid, most of
    the rest ran to max_tokens in a free string, and root schemas without a type were
    answered with a bare number. llguidance, the GPU profile's backend, decodes these
    caps at 92-106 % of the unguided rate, so both kinds now get the same caps; an
    uncapped grammar is one ``strip_caps = true`` away in a template's policy.toml.
    """
    del kind  # both profiles: the same caps (see above); kept for the settings' choice
    return Policy(
        simplify=SimplifyPolicy(
            drop_keywords=list(GRAMMAR_UNSUPPORTED),
            grammar_formats=list(GRAMMAR_FORMATS),
            grammar_compatible=True,
            bound_free_json=True,
            format_patterns=True,
            bound_patterns=True,
            max_number=CPU_DEFAULT_MAX_NUMBER,
            max_items=CPU_DEFAULT_MAX_ITEMS,
            max_string_length=CPU_DEFAULT_MAX_STRING_LENGTH,
        )
    )
