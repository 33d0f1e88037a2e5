"""Decoding variants of a template: each one writes a policy.toml that loads."""

from __future__ import annotations

import copy
import json
import tomllib
from pathlib import Path

import pytest

from structsum.bench import policy_variants
from structsum.config import Settings
from structsum.processors.policy import Policy
from structsum.processors.templates import list_templates, load_template

TEMPLATES_DIR = Settings().templates_dir


@pytest.mark.parametrize("template_id", list_templates(TEMPLATES_DIR))
def test_every_variant_writes_a_loadable_policy(template_id: str, tmp_path: Path) -> None:
    shipped = load_template(TEMPLATES_DIR, template_id).policy
    for variant, make in policy_variants.VARIANTS.items():
        expected = make(shipped)
        assert (
            Policy.model_validate(tomllib.loads(policy_variants.policy_toml(expected))) == expected
        )
        directory = policy_variants.variant_templates_dir(
            tmp_path, TEMPLATES_DIR, template_id, variant
        )
        assert load_template(directory, template_id).policy == expected


def test_full_variant_decodes_the_schema_as_written_minus_what_vllm_refuses(tmp_path: Path) -> None:
    directory = policy_variants.variant_templates_dir(
        tmp_path, TEMPLATES_DIR, "meeting_minutes_v1", "full"
    )
    template = load_template(directory, "meeting_minutes_v1")
    arrays = ("attendees", "decisions", "action_items", "open_questions")
    assert template.decoding.changes == [f"dropped uniqueItems at $.properties.{a}" for a in arrays]
    directory = policy_variants.variant_templates_dir(
        tmp_path, TEMPLATES_DIR, "document_brief_v1", "full"
    )
    written = copy.deepcopy(load_template(TEMPLATES_DIR, "document_brief_v1").schema)
    for array in ("sections", "key_facts", "risks"):
        del written["properties"][array]["uniqueItems"]  # no grammar can say it
    assert load_template(directory, "document_brief_v1").decoding.schema == written


def test_uncapped_variant_has_no_caps_in_the_grammar(tmp_path: Path) -> None:
    directory = policy_variants.variant_templates_dir(
        tmp_path, TEMPLATES_DIR, "generic_summary_v1", "uncapped"
    )
    schema = load_template(directory, "generic_summary_v1").decoding.schema
    assert "maxItems" not in json.dumps(schema) and "maxLength" not in json.dumps(schema)


PER_ATTEMPT = Policy.model_validate(
    {
        "simplify": {
            "max_items": 5,
            "variants": {"uncapped": {"strip_caps": True}, "short": {"max_string_length": 60}},
        },
        "retry": {"decoding": ["uncapped", "short", "default"]},
    }
)


def test_a_policy_with_per_attempt_decodings_round_trips_as_toml() -> None:
    text = policy_variants.policy_toml(PER_ATTEMPT)
    assert "[simplify.variants.uncapped]" in text
    assert Policy.model_validate(tomllib.loads(text)) == PER_ATTEMPT


def test_uncapped_strips_the_caps_of_every_decoding_schema() -> None:
    uncapped = policy_variants.VARIANTS["uncapped"](PER_ATTEMPT)
    assert uncapped.retry.decoding == PER_ATTEMPT.retry.decoding
    for name in uncapped.simplify.decoding_names:
        variant = uncapped.simplify.variant(name)
        assert variant.strip_caps and variant.max_string_length is None, name


@pytest.mark.parametrize("variant", ["full", "unguided"])
def test_single_schema_variants_decode_every_attempt_one_way(variant: str) -> None:
    policy = policy_variants.VARIANTS[variant](PER_ATTEMPT)
    assert policy.simplify.variants == {} and policy.retry.decoding == ["default"]
