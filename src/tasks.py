"""Celery tasks: validate the payload, call a processor, return the result as JSON.

Start a worker with ``structsum worker`` (threads pool, one engine shared by
``queue.worker_concurrency`` job threads). Two retry layers never overlap: the
summary processor retries invalid JSON per template policy; Celery retries only
errors marked ``retryable`` (engine or Redis outages), with backoff.

Expected failures (``StructsumError``) are declared in ``throws``: Celery logs
them without a traceback and stores the exception's class, module and
arguments, so ``AsyncResult.get()`` re-raises the same class in any client that
has imported ``structsum.errors`` (``structsum.client`` does).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from celery import Task, states
from celery.exceptions import Ignore, ImproperlyConfigured, WorkerShutdown
from celery.signals import celeryd_after_setup, task_postrun, worker_shutdown
from celery.worker.control import inspect_command
from pydantic import BaseModel

from structsum.config import Settings, get_settings
from structsum.errors import (
    EngineError,
    EngineUnavailable,
    PoisonSuspected,
    ServiceUnavailable,
    StructsumError,
    SummaryNotReady,
)
from structsum.models import (
    AskRequest,
    AskResult,
    EnhancementRequest,
    EnhancementResult,
    SummaryRequest,
    SummaryResult,
)
from structsum.processors.ask import ask, summary_document
from structsum.processors.deadline import DeadlineEngine, deadline_in
from structsum.processors.engine import Engine
from structsum.processors.enhancement import enhance
from structsum.processors.summary import summarize
from structsum.service.app import (
    ASK,
    ENHANCE,
    ENHANCE_AND_SUMMARIZE,
    ENQUEUED_AT_HEADER,
    SHARED_ENGINE_POOLS,
    SUMMARIZE,
    TASK_NAMES,
    build_app,
)
from structsum.service.payloads import parse_request
from structsum.service.runtime import WorkerRuntime, get_runtime
from structsum.service.startup import check_startup

log = logging.getLogger(__name__)

# Where a run keeps its claim's token on its Celery request, for task_postrun.
CLAIM_TOKEN = "structsum_claim_token"

app = build_app(get_settings())

# Celery-level retries, for outages only (engine restart, Redis blip, deadline):
# ``queue.job_retries`` tries with exponential backoff and jitter, capped so a job
# is not parked for long.
MAX_RETRIES = get_settings().queue.job_retries
# EX_CONFIG: the worker refused to start (settings, pool, engine load, metrics port).
STARTUP_FAILED_EXIT_CODE = 78
RETRY_BACKOFF_S = 2
RETRY_BACKOFF_MAX_S = 60

RequestT = TypeVar("RequestT", bound=BaseModel)
ResultT = TypeVar("ResultT", SummaryResult, EnhancementResult, AskResult)


def retryable_errors() -> tuple[type[StructsumError], ...]:
    """The top-most classes of the error tree marked ``retryable``, for ``autoretry_for``."""
    found: list[type[StructsumError]] = []
    pending: list[type[StructsumError]] = [StructsumError]
    while pending:
        cls = pending.pop()
        if cls.retryable:
            found.append(cls)
            continue
        pending.extend(cls.__subclasses__())
    return tuple(sorted(found, key=lambda c: c.__name__))


def error_code(exc: BaseException) -> str:
    return exc.code if isinstance(exc, StructsumError) else type(exc).__name__


def runtime() -> WorkerRuntime:
    return get_runtime(get_settings())


class StructsumTask(Task):
    """Shared policy of every structsum task: typed failures, outage-only retries, metrics."""

    throws = (StructsumError,)
    autoretry_for = retryable_errors()
    max_retries = MAX_RETRIES
    retry_backoff = RETRY_BACKOFF_S
    retry_backoff_max = RETRY_BACKOFF_MAX_S
    retry_jitter = True

    def on_failure(
        self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        runtime().metrics.record_failure(self.name, error_code(exc))

    def on_retry(
        self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        runtime().metrics.record_retry(self.name, error_code(exc))


def _run(
    task: Task,
    model: type[RequestT],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    process: Callable[[RequestT, Engine, Settings], ResultT],
) -> dict[str, Any]:
    rt = runtime()
    with rt.metrics.job(task.name, enqueued_at=_enqueued_at(task)):
        _claim(task, rt)
        # The deadline starts when the job starts; every engine call of it shares it.
        deadline = deadline_in(rt.settings.queue.job_deadline_s)
        request = parse_request(model, args, kwargs, rt.settings)
        engine = DeadlineEngine(rt.engine, deadline)
        try:
            result = process(request, engine, rt.settings)
        except EngineUnavailable:
            rt.engine_died()
            raise
        except EngineError as exc:
            rt.breaker.failure(exc.code)
            raise
        rt.breaker.success()
        if rt.claims is not None and _succeeded(task):
            # Another run got past its claim (ours lapsed: a heartbeat starved past the
            # TTL, a long Redis outage). The first stored result stays the only one.
            log.warning(
                "job %s succeeded elsewhere while this run ran; not stored twice", task.request.id
            )
            raise Ignore()
    rt.metrics.record_result(task.name, result)
    return result.model_dump(mode="json")


def _claim(task: Task, rt: WorkerRuntime) -> None:
    """Make this the only run of the job; drop a copy of a finished job; refuse a poison one.

    The claim is released after Celery stored the outcome (``task_postrun``), so a
    copy waiting on it sees SUCCESS before it could run.
    """
    claims, task_id = rt.claims, task.request.id
    if claims is None or not task_id:
        return
    queue = rt.settings.queue
    wait_s = queue.job_deadline_s + queue.claim_ttl_s
    token = claims.acquire(task_id, wait_s=wait_s, done=lambda: _succeeded(task))
    if token is None:
        raise Ignore()
    # Only this run may release it (task_postrun): not a copy of the job that fails
    # while it waits in the same worker.
    setattr(task.request, CLAIM_TOKEN, token)
    if _succeeded(task):  # finished between Celery's redelivery check and the claim
        log.warning("job %s already succeeded; this redelivered copy is dropped", task_id)
        raise Ignore()
    witnessed = claims.witnessed(task_id)
    if witnessed >= queue.poison_failures:
        raise PoisonSuspected(
            f"job {task_id} was in flight at {witnessed} engine failures (death or hang); "
            "it is not run again",
            {"task_id": task_id, "engine_failures": witnessed},
        )


def _succeeded(task: Task) -> bool:
    """Whether the job of this run already has a stored success (any run of it)."""
    return bool(task.AsyncResult(task.request.id).state == states.SUCCESS)


def _enqueued_at(task: Task) -> float | None:
    """The client's enqueue time; a foreign sender may omit it or send junk (no metric then)."""
    # A worker merges message headers into the request; apply() nests them under .headers.
    value = task.request.get(ENQUEUED_AT_HEADER)
    if value is None:
        value = (task.request.headers or {}).get(ENQUEUED_AT_HEADER)
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _enhance(request: EnhancementRequest, engine: Engine, settings: Settings) -> EnhancementResult:
    return enhance(request, engine=engine, settings=settings, cache=runtime().result_store)


def _summarize(request: SummaryRequest, engine: Engine, settings: Settings) -> SummaryResult:
    return summarize(request, engine=engine, settings=settings, cache=runtime().result_store)


def _enhance_then_summarize(
    request: SummaryRequest, engine: Engine, settings: Settings
) -> SummaryResult:
    return summarize(
        request.model_copy(update={"enhance": True}),
        engine=engine,
        settings=settings,
        cache=runtime().result_store,
    )


def _ask(request: AskRequest, engine: Engine, settings: Settings) -> AskResult:
    store = runtime().conversation_store
    if store is None:
        raise ServiceUnavailable("this worker has no conversation store (not started)")
    document = request.text
    if request.summary_job_id is not None:
        document = _finished_summary(request.summary_job_id)
    return ask(request, document=document, engine=engine, settings=settings, store=store)


def _finished_summary(job_id: str) -> str:
    """The document a summary job stands for: its result's JSON, once it succeeded."""
    from celery.result import AsyncResult

    job = AsyncResult(job_id, app=app)
    state = job.state
    payload = job.result if state == "SUCCESS" else None
    if not isinstance(payload, dict) or payload.get("data") is None or "template_id" not in payload:
        raise SummaryNotReady(
            f"job {job_id} is {state}, not a finished summary with data",
            {"job_id": job_id, "state": state},
        )
    return summary_document(payload["data"])


@app.task(name=ENHANCE, base=StructsumTask, bind=True)
def enhance_task(self: Task, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """kwargs: an EnhancementRequest; returns an EnhancementResult as JSON."""
    return _run(self, EnhancementRequest, args, kwargs, _enhance)


@app.task(name=SUMMARIZE, base=StructsumTask, bind=True)
def summarize_task(self: Task, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """kwargs: a SummaryRequest; returns a SummaryResult as JSON."""
    return _run(self, SummaryRequest, args, kwargs, _summarize)


@app.task(name=ENHANCE_AND_SUMMARIZE, base=StructsumTask, bind=True)
def enhance_and_summarize_task(self: Task, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """kwargs: a SummaryRequest; the enhanced text is what gets summarized."""
    return _run(self, SummaryRequest, args, kwargs, _enhance_then_summarize)


@app.task(name=ASK, base=StructsumTask, bind=True)
def ask_task(self: Task, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """kwargs: an AskRequest; returns an AskResult as JSON (the turn is stored)."""
    return _run(self, AskRequest, args, kwargs, _ask)


# --- worker lifecycle -------------------------------------------------------------------


def pool_name(pool_cls: Any) -> str:
    """'threads', 'solo', 'prefork', ... for a pool given by name or class."""
    from celery.concurrency import ALIASES, get_implementation

    if isinstance(pool_cls, str) and pool_cls in ALIASES:
        return pool_cls  # by name: no import (eventlet/gevent may not be installed)
    cls = get_implementation(pool_cls)
    for name, path in ALIASES.items():
        if path == f"{cls.__module__}:{cls.__name__}":
            return name
    return f"{cls.__module__}.{cls.__name__}"


@celeryd_after_setup.connect
def _load_engine(sender: Any = None, instance: Any = None, **_: Any) -> None:
    """Runs once per worker process, before it consumes: the only engine load.

    ``celeryd_after_setup`` rather than ``worker_init``: logging is configured by
    then (so the load is logged) and the consumer has not started yet. Celery logs
    and swallows a signal handler's exception, which would leave a worker that
    consumes with no engine, watchdog or claims; a failed start therefore ends the
    worker (``WorkerShutdown``, which Celery does not swallow) with status 78.
    """
    if getattr(instance, "app", None) is not app:
        return
    try:
        start_runtime(instance)
    except Exception as exc:
        log.critical("this worker cannot start: %s", exc, exc_info=True)
        raise WorkerShutdown(STARTUP_FAILED_EXIT_CODE) from exc


def start_runtime(instance: Any) -> None:
    """Check the pool and the settings, then load the engine; typed errors if refused."""
    pool = pool_name(instance.pool_cls)
    if pool not in SHARED_ENGINE_POOLS:
        raise ImproperlyConfigured(
            f"structsum workers need a pool that shares one engine ({SHARED_ENGINE_POOLS}), "
            f"got {pool!r}; start them with `structsum worker`"
        )
    rt = runtime()
    check_startup(rt.settings, refuse=ImproperlyConfigured)
    seqs = rt.settings.engine.max_num_seqs
    if instance.concurrency < seqs:
        log.warning(
            "concurrency %s is below engine.max_num_seqs %s: the engine batch never fills",
            instance.concurrency,
            seqs,
        )
    log.info("loading the engine once for the %s pool, concurrency %s", pool, instance.concurrency)
    rt.start()


@task_postrun.connect
def _release_claim(sender: Any = None, task_id: str | None = None, **_: Any) -> None:
    """After the outcome is stored (success, failure, retry published): free the job id."""
    if task_id and getattr(sender, "name", None) in TASK_NAMES:
        claims = runtime().claims
        token = getattr(sender.request, CLAIM_TOKEN, None)
        if claims is not None and token is not None:
            claims.release(task_id, token)


@worker_shutdown.connect
def _close_engine(sender: Any = None, **_: Any) -> None:
    if getattr(sender, "app", None) is app:
        rt = runtime()
        # The worker's status is set before this signal; Celery's start() drops it.
        rt.exit_status = getattr(sender, "exitcode", None)
        rt.stop()


@inspect_command(name="structsum_stats")
def structsum_stats(state: Any) -> dict[str, Any]:
    """Remote `structsum stats`: this worker's counters, through the broker."""
    rt = runtime()
    snapshot = rt.metrics.snapshot()
    snapshot["engine_loaded"] = rt.loaded
    return snapshot
