"""Decoding variants of a template for the template benchmark, as policy files.

A variant replaces the policy's ``[simplify]`` table (``[retry]`` stays) and is
written as a real ``policy.toml`` next to a copy of the template, so the arm runs
through the same loader and pipeline as a shipped template:

* ``policy``   - the template's shipped policy.
* ``full``     - the full schema as written; only what vLLM refuses for xgrammar
  is dropped (see ``BACKEND_REFUSED``), no caps added, ``$ref`` kept.
* ``uncapped`` - the shipped policy without any ``maxItems``/``maxLength`` in the
  grammar (the GPU fast path), in every decoding schema it names; the full schema
  still validates.
* ``unguided`` - no constraint at all (mode ``none``); validation only.

``full`` and ``unguided`` decode every attempt one way, so they drop the policy's
``[simplify.variants]`` and ``[retry] decoding``.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from structsum.processors.policy import DEFAULT_DECODING, Policy, SimplifyPolicy
from structsum.processors.templates import load_template

# What vLLM's xgrammar backend refuses outright (has_xgrammar_unsupported_json_features);
# the "full" variant drops only these, so that it runs at all.
BACKEND_REFUSED = ("uniqueItems", "contains", "minContains", "maxContains", "multipleOf")


def _single(policy: Policy, simplify: SimplifyPolicy) -> Policy:
    """``policy`` with one decoding schema for every attempt (its variants dropped)."""
    retry = policy.retry.model_copy(update={"decoding": [DEFAULT_DECODING]})
    return policy.model_copy(update={"simplify": simplify, "retry": retry})


def _full(policy: Policy) -> Policy:
    simplify = SimplifyPolicy(
        mode="json_schema",
        inline_refs=False,
        drop_keywords=list(BACKEND_REFUSED),
        additional_properties_false=False,
        require_all=False,
    )
    return _single(policy, simplify)


def _uncapped(policy: Policy) -> Policy:
    """Caps stripped from every decoding schema the policy names (variants included)."""
    caps = ("max_items", "max_string_length")
    variants = {
        name: {**{k: v for k, v in override.items() if k not in caps}, "strip_caps": True}
        for name, override in policy.simplify.variants.items()
    }
    simplify = policy.simplify.model_copy(
        update={
            "strip_caps": True,
            "max_items": None,
            "max_string_length": None,
            "variants": variants,
        }
    )
    return policy.model_copy(update={"simplify": simplify})


def _unguided(policy: Policy) -> Policy:
    return _single(policy, SimplifyPolicy(mode="none"))


VARIANTS: dict[str, Callable[[Policy], Policy]] = {
    "policy": lambda policy: policy,
    "full": _full,
    "uncapped": _uncapped,
    "unguided": _unguided,
    # The prompt with or without example.json (issue 15: a small model copies it).
    "with-example": lambda policy: policy.model_copy(update={"example": True}),
    "no-example": lambda policy: policy.model_copy(update={"example": False}),
    # No example and a cooler retry schedule (first attempt 0.2 instead of 0.7).
    "no-example-cool": lambda policy: policy.with_overrides(
        {"example": False, "retry": {"temperatures": [0.2, 0.0]}}
    ),
}


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def policy_toml(policy: Policy) -> str:
    """``policy`` as policy.toml text (``None`` fields are left out: they are defaults)."""
    return "\n".join(_toml_table(policy.model_dump(mode="json"), ())).lstrip("\n") + "\n"


def _toml_table(data: dict[str, Any], name: tuple[str, ...]) -> list[str]:
    """A table's keys, then its sub-tables as ``[a.b]`` (a profile's ``[profiles.cpu]``)."""
    lines = [f"\n[{'.'.join(name)}]"] if name else []
    lines += [
        f"{k} = {_toml_value(v)}"
        for k, v in data.items()
        if v is not None and not isinstance(v, dict)
    ]
    for key, value in data.items():
        if isinstance(value, dict) and value:
            lines += _toml_table(value, (*name, key))
    return lines


def variant_templates_dir(
    root: Path,
    templates_dir: Path,
    template_id: str,
    variant: str,
    *,
    profile: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> Path:
    """A templates dir holding ``template_id`` with the variant's policy.toml.

    With a ``profile``, the variant edits the policy as that profile sees it, written
    out flat, so a profile's own keys cannot undo the variant; ``overrides`` (policy
    keys, e.g. ``{"example": False}``) are merged in before the variant.
    """
    target = root / variant
    if not (target / template_id).exists():
        shutil.copytree(templates_dir / template_id, target / template_id)
        policy = load_template(templates_dir, template_id).policy
        if profile is not None:
            policy = policy.for_profile(profile)
        if overrides:
            policy = policy.with_overrides(overrides)
        policy = VARIANTS[variant](policy)
        (target / template_id / "policy.toml").write_text(policy_toml(policy), encoding="utf-8")
        load_template(target, template_id)  # refuse a variant that does not load, now
    return target
