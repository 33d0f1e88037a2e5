"""The raw-engine benchmark sends the service's own vLLM requests (no engine started)."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from structsum.bench import engine_runs
from structsum.bench.engine_runs import bench_request, engine_settings, sampling_params
from structsum.bench.workload import SchemaVariant
from structsum.processors.engine import build_engine_args
from structsum.processors.guide import Guide

SCHEMA: dict[str, Any] = {"type": "object", "properties": {"a": {"type": "string"}}}


def bench_args(**overrides: Any) -> argparse.Namespace:
    values: dict[str, Any] = {
        "temperature": 0.7,
        "top_p": 0.95,
        "disable_any_whitespace": True,
        "tokenizer": None,
        "load_format": "dummy",
        "dtype": "bfloat16",
        "max_model_len": 896,
        "max_num_seqs": 8,
        "gpu_memory_utilization": 0.85,
        "kv_cache_gib": None,
        "enforce_eager": True,
        "enable_prefix_caching": False,
        "seed": 0,
        "mask_threads": None,
        "mask_batch_size": 8,
    }
    values.update(overrides)
    return argparse.Namespace(**values)


def test_unguided_arm_runs_to_exactly_the_output_length() -> None:
    request = bench_request(bench_args(), None, 64)
    assert request.guide is None and request.exact_length
    assert request.sampling.max_tokens == 64
    assert (request.sampling.temperature, request.sampling.top_p) == (0.7, 0.95)
    assert request.sampling.repetition_penalty == 1.0


@pytest.mark.parametrize(
    ("kind", "value"), [("json", SCHEMA), ("regex", "[ab]+"), ("json_object", None)]
)
def test_guided_arm_carries_its_variant_guide_and_stops_at_its_end(kind: str, value: Any) -> None:
    variant = SchemaVariant("t", "simplified", kind, value, SCHEMA)
    request = bench_request(bench_args(), variant, 64)
    assert request.guide == Guide(kind, value)  # type: ignore[arg-type]
    assert not request.exact_length


def test_json_object_keeps_disable_any_whitespace_in_the_benchmark() -> None:
    from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams

    variant = SchemaVariant("t", "simplified", "json_object", None, SCHEMA)
    params = sampling_params(bench_args(disable_any_whitespace=True), variant, 32)
    assert params.structured_outputs == StructuredOutputsParams(
        json_object=True, disable_any_whitespace=True
    )
    assert params.output_kind == RequestOutputKind.DELTA


def test_engine_flags_become_the_service_engine_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(engine_runs, "on_gpu", lambda: False)
    cpu = engine_settings(bench_args(), "guidance")
    assert cpu.kv_cache_space_gib == engine_runs.CPU_KV_CACHE_GIB
    assert (cpu.structured_output_backend, cpu.disable_any_whitespace) == ("guidance", True)
    assert (cpu.max_model_len, cpu.max_num_seqs, cpu.load_format) == (896, 8, "dummy")
    monkeypatch.setattr(engine_runs, "on_gpu", lambda: True)
    assert engine_settings(bench_args(), "xgrammar").kv_cache_space_gib == 0.0
    assert engine_settings(bench_args(kv_cache_gib=3.0), "xgrammar").kv_cache_space_gib == 3.0


def test_mask_threads_follow_the_profile_per_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the flag each backend gets what a worker of this profile would run."""
    from structsum.config import get_settings

    monkeypatch.setenv("STRUCTSUM_PROFILE", "gpu")
    get_settings.cache_clear()
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    try:
        assert engine_settings(bench_args(), "xgrammar").mask_threads == 8
        assert engine_settings(bench_args(), "guidance").mask_threads == 0
        assert engine_settings(bench_args(mask_threads=3), "guidance").mask_threads == 3
    finally:
        get_settings.cache_clear()


def test_engine_args_come_from_the_service_mapping(tmp_path: Any) -> None:
    from vllm.config import StructuredOutputsConfig

    args = build_engine_args(
        engine_settings(bench_args(kv_cache_gib=1.0), "xgrammar"), str(tmp_path)
    )
    assert args.structured_outputs_config == StructuredOutputsConfig(
        backend="xgrammar", disable_any_whitespace=True
    )
    assert (args.max_model_len, args.enable_prefix_caching, args.seed) == (896, False, 0)
    assert args.kv_cache_memory_bytes == 1 << 30
