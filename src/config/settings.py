"""pydantic-settings models for the engine, sampling, token budget and queue.

Nested groups are overridden from the environment with ``STRUCTSUM_<GROUP>__<KEY>``
(e.g. ``STRUCTSUM_ENGINE__MAX_MODEL_LEN=2048``) or from a TOML file named by
``STRUCTSUM_SETTINGS_FILE``. The built-in defaults are sized for a 2-core CPU box
running the bundled 135M model; on a GPU host the ``gpu`` profile
(``profiles.py``) supplies the defaults of every field the user did not set.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, PrivateAttr, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from structsum.config.profiles import (
    ProfileChoice,
    default_mask_threads,
    profile_defaults,
    resolve_profile,
)
from structsum.config.template_dirs import shipped_templates_dir, template_search_path

StructuredBackend = Literal["auto", "xgrammar", "guidance", "outlines", "lm-format-enforcer"]
EngineKind = Literal["local", "remote"]
TokenizerSource = Literal["server", "local"]


class EngineSettings(BaseModel):
    """How the vLLM engine is built. One engine per process, built once.

    ``kind="local"`` runs vLLM in the worker process; ``kind="remote"`` sends every
    request to an OpenAI-compatible vLLM server at ``url`` (``structsum serve-engine``
    starts one from these same settings). The model and engine fields below describe
    what that server runs; a remote worker only reads ``max_model_len`` (the budget,
    checked against the server's), ``disable_any_whitespace`` and ``model`` (for a
    local tokenizer).
    """

    kind: EngineKind = Field(
        default="local", description="local: vLLM in this process; remote: a vLLM server at url"
    )
    url: str | None = Field(
        default=None,
        description="base URL of the vLLM server for kind=remote (e.g. http://10.0.0.5:8000, "
        "no /v1); also where `structsum serve-engine` listens",
    )
    api_key: SecretStr | None = Field(
        default=None, description="bearer token the server wants (vllm serve --api-key); secret"
    )
    served_model_name: str | None = Field(
        default=None,
        description="model name the server serves; None: the first of its /v1/models",
    )
    connect_timeout_s: float = Field(
        default=5.0, gt=0, description="seconds to open a connection to the server"
    )
    read_timeout_s: float = Field(
        default=300.0,
        gt=0,
        description="seconds the server may stay silent during one request (queueing and "
        "prefill included); the job deadline bounds the whole request",
    )
    pool_connections: int = Field(
        default=256,
        ge=1,
        description="connections to the server per worker; requests beyond wait for one. "
        "Keep it above queue.worker_concurrency (a job may send several requests at once)",
    )
    ready_timeout_s: float = Field(
        default=300.0,
        ge=0,
        description="a remote worker waits this long at start for the server's /health",
    )
    remote_tokenizer: TokenizerSource = Field(
        default="server",
        description="where a remote worker counts tokens for the budget: the server's "
        "/tokenize (always the served tokenizer) or a local copy of the model's tokenizer "
        "(model/tokenizer must name the same model; no round trip per count)",
    )
    model: str | None = Field(
        default=None,
        description="HF folder or name; None means the bundled SmolLM2-135M-Instruct",
    )
    tokenizer: str | None = None
    dtype: str = "bfloat16"
    quantization: str | None = None
    load_format: str = "auto"
    max_model_len: int = Field(default=4096, ge=256)
    gpu_memory_utilization: float = Field(default=0.5, gt=0.0, le=1.0)
    kv_cache_space_gib: float = Field(
        default=2.0,
        ge=0.0,
        description="KV cache size (what VLLM_CPU_KVCACHE_SPACE sets on CPU builds); "
        "0 lets vLLM size it from gpu_memory_utilization (GPU deployments)",
    )
    kv_cache_dtype: str = "auto"
    max_num_seqs: int = Field(default=16, ge=1)
    max_num_batched_tokens: int | None = None
    enable_prefix_caching: bool = True
    enable_chunked_prefill: bool | None = None
    enforce_eager: bool = False
    tensor_parallel_size: int = Field(default=1, ge=1)
    structured_output_backend: StructuredBackend = "xgrammar"
    disable_any_whitespace: bool = Field(
        default=False,
        description="forbid free whitespace between JSON tokens in the grammar "
        "(shorter outputs; measured slower with capped schemas on GPU)",
    )
    speculative_config: dict[str, Any] | None = Field(
        default=None, description="passed to vLLM as is, e.g. {method: ngram, ...}"
    )
    ngram_draft_tokens: int = Field(
        default=0,
        ge=0,
        description="n-gram (prompt-lookup) speculation: tokens drafted from the prompt per "
        "step; 0 = off. Pays where outputs copy the input (enhancement, names in "
        "summaries). vLLM applies it to every request of the engine, so it is a per-worker "
        "choice; an explicit speculative_config wins. The profile sets the default by "
        "measurement (profiles.py)",
    )
    ngram_lookup_min: int = Field(default=2, ge=1, description="shortest n-gram matched")
    ngram_lookup_max: int = Field(default=4, ge=1, description="longest n-gram matched")
    seed: int = Field(
        default=0,
        description="engine seed; per-request seeds kill vllm-cpu 0.32, so the engine is seeded",
    )
    aot_compile: bool | None = Field(
        default=None,
        description="vLLM's AOT-compiled model cache (VLLM_USE_AOT_COMPILE; None = vLLM's "
        "default, on with torch >= 2.10). The CPU profile turns it off: vllm-cpu 0.32 with "
        "torch 2.13 cannot load it back, so every start recompiled",
    )
    mask_threads: int = Field(
        default=0,
        ge=0,
        description="threads filling grammar masks in parallel (structsum's vLLM plugin, "
        "processors/mask_plugin.py); 0 = vLLM's serial fill below 128 guided requests",
    )
    mask_batch_size: int = Field(
        default=8, ge=1, description="guided requests per mask-filling task (mask_threads > 0)"
    )

    @model_validator(mode="after")
    def _remote_needs_url(self) -> EngineSettings:
        if self.kind == "remote" and not self.url:
            raise ValueError("engine.kind=remote needs engine.url (STRUCTSUM_ENGINE__URL)")
        return self


class SamplingSettings(BaseModel):
    """Sampling for one task. Summary retries override the temperature per attempt."""

    temperature: float = Field(default=0.7, ge=0.0)
    top_p: float = Field(default=0.95, gt=0.0, le=1.0)
    top_k: int = Field(default=-1, description="-1 disables top-k")
    repetition_penalty: float = Field(default=1.05, gt=0.0)
    presence_penalty: float = 0.0
    max_tokens: int = Field(default=768, ge=1)
    stop: list[str] = Field(default_factory=list)
    skip_special_tokens: bool = True


class TaskSampling(BaseModel):
    enhancement: SamplingSettings = SamplingSettings(
        temperature=0.2, repetition_penalty=1.1, max_tokens=1024
    )
    summary: SamplingSettings = SamplingSettings()
    # Map stage for text over the context: short, low-temperature notes per chunk.
    condense: SamplingSettings = SamplingSettings(
        temperature=0.1, repetition_penalty=1.1, max_tokens=320
    )
    # Follow-up answers: short and factual; the stop strings end an answer that starts
    # to write the next question itself (small models continue the dialogue).
    ask: SamplingSettings = SamplingSettings(
        temperature=0.2,
        repetition_penalty=1.1,
        max_tokens=256,
        stop=["\nQuestion:", "\nUser:", "\nuser\n"],
    )


class BudgetSettings(BaseModel):
    """Token budget: max_tokens = min(output_reserve, max_model_len - input - margin)."""

    output_reserve: int = Field(default=768, ge=1)
    safety_margin: int = Field(default=32, ge=0)
    min_output_tokens: int = Field(default=128, ge=1)
    chunk_overlap_tokens: int = Field(default=64, ge=0)
    max_chunks: int = Field(default=32, ge=1, description="more chunks than this: TextTooLong")
    max_condense_rounds: int = Field(default=3, ge=1)
    enhancement_output_ratio: float = Field(
        default=1.5, gt=0, description="enhancement may write this many tokens per input token"
    )
    max_input_chars: int = Field(
        default=400_000, ge=1, description="hard limit; longer text is refused, not chunked"
    )
    feedback_answer_chars: int = Field(
        default=600,
        ge=1,
        description="a retry prompt repeats this many characters of the rejected answer "
        "(cut with an ellipsis), next to its validation errors",
    )


class RequestLimits(BaseModel):
    """Bounds on the small request fields, checked by the client and again by the task.

    ``language`` goes into the system prompt and ``variables`` into the prompt
    template, so both are short data, never a channel for megabytes or for keys
    that look like Python internals.
    """

    max_language_chars: int = Field(default=35, ge=2, description="BCP-47 tags fit in 35")
    max_variables: int = Field(default=32, ge=0)
    max_variable_key_chars: int = Field(default=64, ge=1)
    max_variable_value_chars: int = Field(default=4_000, ge=1)


class CacheSettings(BaseModel):
    """The result cache: an identical request returns its stored result, no engine work.

    Identical means the same task, text, template, variables, language and the same
    settings fingerprint (model, engine, sampling, budget, template policy, schema
    and prompt). Results live in the result backend's Redis under ``key_prefix``.
    """

    enabled: bool = True
    ttl_s: int = Field(default=86_400, ge=1, description="how long a stored result is served")
    key_prefix: str = Field(
        default="structsum:result:", description="after queue.key_prefix, before the digest"
    )


class ConversationSettings(BaseModel):
    """Follow-up questions (``structsum.ask``): the history kept per conversation id."""

    ttl_s: int = Field(
        default=3_600, ge=1, description="a conversation idle this long is forgotten"
    )
    max_history_turns: int = Field(
        default=8,
        ge=0,
        description="earlier question/answer pairs kept in the prompt; past it the history "
        "is cut to history_turns_after_trim at once (the prefix cache then serves the next "
        "turns)",
    )
    history_turns_after_trim: int = Field(
        default=2,
        ge=0,
        description="the newest turns a full history is cut to (at most half of "
        "max_history_turns). "
        "The turn that trims recomputes these, so few keep it cheap: with half of 8 the "
        "trimming turn took 1.53x turn 2 on the CPU box (docs/benchmarks.md)",
    )
    max_history_tokens: int = Field(
        default=1_024,
        ge=0,
        description="the kept turns fit this many tokens (real tokenizer); past it the "
        "oldest go until half of it is left",
    )
    key_prefix: str = Field(default="structsum:conversation:", description="after queue.key_prefix")


class GroundingSettings(BaseModel):
    """The grounding score and the per-request verbatim enums (issue 15, processors/verbatim.py)."""

    min_word_chars: int = Field(
        default=4, ge=1, description="a content word has at least this many letters"
    )
    max_options: int = Field(
        default=48,
        ge=1,
        description="sentences of the source a verbatim field may choose from (evenly "
        "spread over a longer text); bounds the per-request grammar",
    )
    max_option_chars: int = Field(
        default=200,
        ge=8,
        description="longer sentences are split into clauses, then cut at a word",
    )
    min_option_chars: int = Field(
        default=12, ge=1, description="shorter pieces (a 'Yes.', a timestamp) are no options"
    )


class QueueSettings(BaseModel):
    """Celery over Redis. See README for the visibility timeout trade-off."""

    broker_url: str = "redis://127.0.0.1:6379/0"
    result_backend: str | None = Field(default=None, description="None: same as broker_url")
    key_prefix: str = Field(default="", description="Redis key/queue prefix, for sharing a DB")
    queue_name: str = "structsum"
    result_expires_s: int = Field(default=86_400, ge=1)
    soft_time_limit_s: int = Field(
        default=600,
        ge=1,
        description="Celery's task_soft_time_limit; NOT enforced: the threads pool "
        "cannot interrupt a job (only prefork can). max_tokens and retries bound a job",
    )
    time_limit_s: int = Field(
        default=660,
        ge=1,
        description="Celery's task_time_limit; NOT enforced under the threads pool "
        "(see soft_time_limit_s)",
    )
    visibility_timeout_s: int = Field(
        default=3600,
        ge=1,
        description="after this long an unacked job (killed worker) is delivered again; "
        "must exceed the longest job",
    )
    worker_concurrency: int = Field(
        default=16, ge=1, description="threads per worker sharing one engine (≈ max_num_seqs)"
    )
    prefetch_multiplier: int = Field(default=1, ge=1)
    warm_grammars: bool = Field(
        default=True,
        description="compile every template's decoding grammar when the worker starts, "
        "so the first job of each template does not pay for it",
    )
    metrics_port: int | None = Field(default=9464, description="Prometheus port; None = off")
    metrics_host: str = Field(
        default="127.0.0.1",
        description="address /metrics, /livez and /readyz bind; 0.0.0.0 exposes them "
        "(no authentication) on every interface",
    )
    stats_interval_s: float = Field(default=30.0, gt=0)
    job_deadline_s: float = Field(
        default=1800.0,
        gt=0,
        description="wall time one run of a job may take; past it the engine requests are "
        "cancelled and the job fails with JobTimeout (the threads pool ignores time limits)",
    )
    deadline_margin_s: float = Field(
        default=300.0,
        ge=0,
        description="the worker refuses to start unless job_deadline_s + this is below "
        "visibility_timeout_s, so Redis never hands out a job that is still running",
    )
    deadline_check: Literal["warn", "refuse"] = Field(
        default="refuse",
        description="what a worker does when job_deadline_s + deadline_margin_s is not below "
        "visibility_timeout_s; warn only for tests that want fast redelivery",
    )
    message_expires_s: int | None = Field(
        default=86_400,
        ge=1,
        description="a queued job not started within this is discarded (REVOKED); None: never",
    )
    watchdog_interval_s: float = Field(
        default=5.0, gt=0, description="how often the engine watchdog looks at the engine"
    )
    watchdog_stall_s: float = Field(
        default=120.0,
        gt=0,
        description="requests in flight and no token for this long: the engine hangs",
    )
    watchdog_exit_grace_s: float = Field(
        default=30.0,
        ge=0,
        description="after the watchdog trips, seconds for a warm shutdown before the "
        "process exits hard with status 70",
    )
    breaker_engine_errors: int = Field(
        default=5,
        ge=1,
        description="this many engine errors in a row stop the worker (circuit breaker)",
    )
    job_retries: int = Field(
        default=3,
        ge=0,
        description="Celery-level retries of a job after a retryable failure (engine "
        "restart, Redis blip, JobTimeout), with exponential backoff and jitter",
    )
    claim_ttl_s: float = Field(
        default=30.0,
        gt=0,
        description="a running job holds a claim on its id in Redis, renewed while it runs; "
        "a redelivered copy waits while it is held. A killed worker's claims expire after this",
    )
    redelivery_sweep_s: int = Field(
        default=10,
        ge=1,
        description="how often a worker looks for unacknowledged jobs older than the "
        "visibility timeout and queues them again (kombu's default is ~100 s)",
    )
    poison_failures: int = Field(
        default=2,
        ge=1,
        description="a job in flight at this many engine failures (death or hang) fails as "
        "PoisonSuspected instead of running again",
    )
    consumption_stall_s: float = Field(
        default=120.0,
        ge=0,
        description="jobs waiting in the queue and none taken by this worker for this long: "
        "it stopped consuming (e.g. after a Redis restart) and exits with status 70; 0: off",
    )
    redis_check: Literal["off", "warn", "refuse"] = Field(
        default="warn",
        description="at worker start, check Redis persistence (AOF or RDB) and "
        "maxmemory-policy noeviction; refuse: do not start without them",
    )

    @property
    def backend_url(self) -> str:
        return self.result_backend or self.broker_url


class TemplateSettings(BaseModel):
    """How templates are loaded: limits on what a schema may be, and the policy of a
    template that ships none (``STRUCTSUM_TEMPLATES__...``)."""

    default_policy: Literal["cpu", "gpu"] = Field(
        default="cpu",
        description="policy of a template without policy.toml (processors/policy.py "
        "default_policy): caps arrays, strings and numbers in the grammar so a small model "
        "stops. Both kinds cap since the H100 corpus run (uncapped: 72 % valid); the gpu "
        "profile sets gpu",
    )
    format_checking: bool = Field(
        default=True,
        description="validate `format` (date, email, uri, ...) in results; off: formats are "
        "annotations only, as the JSON Schema specification allows",
    )
    max_schema_bytes: int = Field(
        default=256 * 1024,
        ge=1,
        description="a schema.json above this size is refused at load (compile time and "
        "memory grow with it)",
    )
    max_decoding_schema_bytes: int = Field(
        default=512 * 1024,
        ge=1,
        description="a decoding schema above this size after $ref inlining is refused "
        "(inlining can multiply a schema); set [simplify] inline_refs = false for it",
    )
    schema_registry_dir: Path | None = Field(
        default=None,
        description="a folder of local schema files, each registered under its $id: a remote "
        "$ref to one of them resolves to the file (validation and decoding); every other "
        "remote $ref is refused. None: every remote $ref is refused. Nothing is fetched",
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="STRUCTSUM_",
        env_nested_delimiter="__",
        extra="ignore",
        toml_file=None,
    )

    engine: EngineSettings = EngineSettings()
    sampling: TaskSampling = TaskSampling()
    budget: BudgetSettings = BudgetSettings()
    limits: RequestLimits = RequestLimits()
    grounding: GroundingSettings = GroundingSettings()
    queue: QueueSettings = QueueSettings()
    cache: CacheSettings = CacheSettings()
    conversation: ConversationSettings = ConversationSettings()
    templates: TemplateSettings = TemplateSettings()
    templates_dir: Path = Field(
        default_factory=shipped_templates_dir,
        description="searched before the shipped templates: an id here overrides a shipped "
        "one; default: the shipped templates alone",
    )
    cache_dir: Path = Field(
        default_factory=lambda: (
            Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "structsum"
        ),
        description="converted models live here",
    )
    log_level: str = "INFO"
    profile: ProfileChoice = Field(
        default="auto",
        description="hardware profile supplying defaults (STRUCTSUM_PROFILE); after "
        "validation always 'cpu' or 'gpu', the one in force",
    )
    _profile_reason: str = PrivateAttr(default="")

    @property
    def template_dirs(self) -> tuple[Path, ...]:
        """Where templates are looked up, in order (``templates_dir``, then the shipped)."""
        return template_search_path(self.templates_dir)

    @field_validator("templates_dir", "cache_dir")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return Path(value).expanduser()

    @model_validator(mode="after")
    def _apply_profile(self) -> Settings:
        """Profile defaults for the fields nobody set; user values are never touched."""
        detected = resolve_profile(self.profile)
        self.profile, self._profile_reason = detected.profile, detected.reason
        for group, defaults in profile_defaults(self.profile).items():
            current: BaseModel = getattr(self, group)
            unset = {k: v for k, v in defaults.items() if k not in current.model_fields_set}
            if unset:
                setattr(self, group, _with_defaults(current, unset))
        if "mask_threads" not in self.engine.model_fields_set:
            backend = self.engine.structured_output_backend
            threads = default_mask_threads(self.profile, backend)
            self.engine = _with_defaults(self.engine, {"mask_threads": threads})
        if "worker_concurrency" not in self.queue.model_fields_set:
            # One job thread per engine slot: fewer leave the batch unfilled.
            seqs = self.engine.max_num_seqs
            self.queue = _with_defaults(self.queue, {"worker_concurrency": seqs})
        return self

    @property
    def profile_reason(self) -> str:
        """Why this profile is in force (forced, or the hardware evidence), for the logs."""
        return self._profile_reason

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        settings_file = os.environ.get("STRUCTSUM_SETTINGS_FILE")
        if settings_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(settings_file)))
        return tuple(sources)


def _with_defaults(group: Any, defaults: dict[str, Any]) -> Any:
    """A validated copy of a settings group with these defaults; set fields keep their value."""
    explicit = {name: getattr(group, name) for name in group.model_fields_set}
    return type(group).model_validate({**defaults, **explicit})


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once; processors receive them as arguments."""
    return Settings()
