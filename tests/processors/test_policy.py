import tomllib

import pytest
from pydantic import ValidationError

from structsum.processors.policy import (
    DEFAULT_DROP_KEYWORDS,
    SAFE_TO_DROP,
    Policy,
    RetryPolicy,
    SimplifyPolicy,
)


def test_empty_policy_has_working_defaults() -> None:
    policy = Policy.model_validate({})
    assert policy.simplify.mode == "json_schema"
    assert policy.simplify.inline_refs
    assert policy.simplify.drop_keywords == list(DEFAULT_DROP_KEYWORDS)
    assert {"pattern", "format", "minLength", "uniqueItems", "dependentSchemas"} <= set(
        policy.simplify.drop_keywords
    )
    assert policy.simplify.max_items is None and policy.simplify.max_string_length is None
    assert policy.retry.attempts == 3
    assert policy.retry.temperatures == [0.7, 0.3, 0.0]
    assert policy.retry.on_exhausted == "return_invalid"
    assert policy.max_tokens is None


def test_default_drops_are_all_safe() -> None:
    assert set(DEFAULT_DROP_KEYWORDS) <= SAFE_TO_DROP


def test_parses_a_full_toml_policy() -> None:
    raw = tomllib.loads(
        """
        max_tokens = 900
        [simplify]
        mode = "regex"
        drop_keywords = ["format"]
        max_items = 4
        max_string_length = 100
        require_all = true
        [retry]
        attempts = 4
        temperatures = [0.5, 0.1]
        guided = [true, false]
        on_exhausted = "error"
        """
    )
    policy = Policy.model_validate(raw)
    assert policy.max_tokens == 900
    assert policy.simplify.mode == "regex"
    assert policy.simplify.max_items == 4
    assert policy.retry.guided == [True, False]
    assert policy.retry.on_exhausted == "error"


@pytest.mark.parametrize(
    "raw, key",
    [
        ({"simplify": {"max_item": 5}}, "max_item"),
        ({"retry": {"on_invalid": "retry"}}, "on_invalid"),
        ({"budget": 100}, "budget"),
    ],
)
def test_unknown_keys_are_rejected_and_named(raw: dict[str, object], key: str) -> None:
    with pytest.raises(ValidationError, match=key) as info:
        Policy.model_validate(raw)
    assert info.value.errors()[0]["type"] == "extra_forbidden"


@pytest.mark.parametrize(
    "raw",
    [
        {"simplify": {"mode": "grammar"}},
        {"simplify": {"max_items": 0}},
        {"retry": {"attempts": 0}},
        {"retry": {"temperatures": []}},
        {"retry": {"temperatures": [0.5, -0.1]}},
        {"retry": {"guided": []}},
        {"retry": {"truncation_growth": 0.5}},
        {"retry": {"on_exhausted": "ignore"}},
        {"max_tokens": 0},
    ],
)
def test_out_of_range_values_are_rejected(raw: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Policy.model_validate(raw)


@pytest.mark.parametrize("keyword", ["properties", "prefixItems", "patternProperties", "type"])
def test_dropping_a_keyword_others_depend_on_is_rejected(keyword: str) -> None:
    with pytest.raises(ValidationError, match=f"cannot drop.*{keyword}"):
        SimplifyPolicy(drop_keywords=["format", keyword])


def test_strip_caps_with_caps_is_a_contradiction() -> None:
    with pytest.raises(ValidationError, match="strip_caps"):
        SimplifyPolicy(strip_caps=True, max_items=3)
    assert SimplifyPolicy(strip_caps=True).strip_caps


def test_duplicate_drops_collapse() -> None:
    assert SimplifyPolicy(drop_keywords=["format", "format"]).drop_keywords == ["format"]


def test_temperature_schedule_repeats_its_last_value() -> None:
    retry = RetryPolicy(attempts=5, temperatures=[0.7, 0.3, 0.0])
    assert [retry.temperature_for(i) for i in range(5)] == [0.7, 0.3, 0.0, 0.0, 0.0]


def test_guided_schedule_repeats_its_last_value() -> None:
    retry = RetryPolicy(attempts=4, guided=[True, True, False])
    assert [retry.guided_for(i) for i in range(4)] == [True, True, False, False]
    assert [RetryPolicy().guided_for(i) for i in range(3)] == [True, True, True]


def test_policies_are_frozen() -> None:
    policy = Policy()
    with pytest.raises(ValidationError):
        policy.max_tokens = 5  # type: ignore[misc]


# --- a decoding schema per attempt --------------------------------------------------------

UNCAPPED_FIRST = """
[simplify]
max_items = 5
max_string_length = 200
require_all = true

[simplify.variants.uncapped]
strip_caps = true

[simplify.variants.short]
max_string_length = 80

[retry]
attempts = 4
decoding = ["uncapped", "default", "short"]
"""


def test_variants_inherit_simplify_and_override_only_their_keys() -> None:
    policy = Policy.model_validate(tomllib.loads(UNCAPPED_FIRST))
    simplify = policy.simplify
    assert simplify.decoding_names == ("default", "uncapped", "short")
    assert simplify.variant("default") is simplify
    short = simplify.variant("short")
    assert (short.max_items, short.max_string_length, short.require_all) == (5, 80, True)
    assert short.variants == {}


def test_a_strip_caps_variant_drops_the_inherited_caps() -> None:
    uncapped = Policy.model_validate(tomllib.loads(UNCAPPED_FIRST)).simplify.variant("uncapped")
    assert uncapped.strip_caps
    assert uncapped.max_items is None and uncapped.max_string_length is None
    assert uncapped.require_all  # everything else is inherited


def test_decoding_schedule_repeats_its_last_value_and_lists_what_guided_attempts_use() -> None:
    retry = Policy.model_validate(tomllib.loads(UNCAPPED_FIRST)).retry
    assert [retry.decoding_for(i) for i in range(4)] == ["uncapped", "default", "short", "short"]
    assert retry.guided_decodings() == ["uncapped", "default", "short"]
    unguided_retries = retry.model_copy(update={"guided": [True, False]})
    assert unguided_retries.guided_decodings() == ["uncapped"]
    assert RetryPolicy().decoding == ["default"]


def test_old_policies_decode_every_attempt_with_simplify() -> None:
    policy = Policy.model_validate({"simplify": {"max_items": 3}})
    assert policy.simplify.variants == {}
    assert [policy.retry.decoding_for(i) for i in range(3)] == ["default"] * 3


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"retry": {"decoding": ["capped"]}}, r"\['capped'\].*does not define"),
        ({"retry": {"decoding": []}}, "at least 1"),
        ({"simplify": {"variants": {"default": {}}}}, "'default'"),
        ({"simplify": {"variants": {"two words": {}}}}, "'two words'"),
        ({"simplify": {"variants": {"x": {"max_item": 3}}}}, "variant 'x': unknown key 'max_item'"),
        ({"simplify": {"variants": {"x": {"mode": "grammar"}}}}, "variant 'x': mode"),
        ({"simplify": {"variants": {"x": {"variants": {}}}}}, "cannot have variants"),
        (
            {"simplify": {"max_items": 3, "variants": {"x": {"strip_caps": True, "max_items": 2}}}},
            "variant 'x'.*strip_caps = true contradicts",
        ),
    ],
)
def test_bad_variants_and_schedules_are_rejected_and_named(
    raw: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        Policy.model_validate(raw)
