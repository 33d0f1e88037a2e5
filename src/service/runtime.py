"""What a worker process holds: its settings, its one engine, its metrics.

The engine is loaded once when the worker starts (Celery's ``celeryd_after_setup``),
before the worker consumes anything, and every job thread of the threads pool
shares it; vLLM batches their requests. Nothing here is created per task.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from structsum.config import Settings
from structsum.errors import EngineUnavailable, StructsumError
from structsum.processors.ask import ConversationStore
from structsum.processors.engine import Engine
from structsum.processors.result_cache import ResultStore
from structsum.processors.warmup import warm_grammars
from structsum.service.claims import JobClaims
from structsum.service.metrics import MetricsServer, ServiceMetrics, StatsLogger
from structsum.service.watchdog import (
    ENGINE_DEAD_EXIT_CODE,
    CircuitBreaker,
    ConsumptionWatchdog,
    EngineWatchdog,
    hard_exit_later,
    kill_descendants,
)

log = logging.getLogger(__name__)

# Seconds a health probe may wait on the engine or on Redis before calling it down.
HEALTH_TIMEOUT_S = 5.0

__all__ = ["ENGINE_DEAD_EXIT_CODE", "HEALTH_TIMEOUT_S", "WorkerRuntime", "get_runtime"]


class WorkerRuntime:
    """The per-process engine hookup; one instance per worker process."""

    def __init__(
        self,
        settings: Settings,
        metrics: ServiceMetrics | None = None,
        *,
        exit_later: Callable[[float], object] | None = None,
    ) -> None:
        self.settings = settings
        # How a failed worker makes sure it exits; None: a hard exit, armed only when
        # this runtime loaded its own engine (a worker process, never a test's fake).
        self._exit_later = exit_later
        self.metrics = metrics or ServiceMetrics()
        self._engine: Engine | None = None
        self._owns_engine = False
        # The result cache the tasks pass to the processors; None: no caching.
        self.result_store: ResultStore | None = None
        # Where follow-up conversations live; None until started (ask needs one).
        self.conversation_store: ConversationStore | None = None
        self._lock = threading.Lock()
        self._server: MetricsServer | None = None
        self._stats: StatsLogger | None = None
        self._watchdog: EngineWatchdog | None = None
        self._consumption: ConsumptionWatchdog | None = None
        # Claims on running jobs (one run per job) and engine failures witnessed;
        # None where no Redis backs the runtime (eager tests over a fake engine).
        self.claims: JobClaims | None = None
        self.breaker = CircuitBreaker(settings.queue.breaker_engine_errors, self.fail)
        # Why this worker can no longer serve (watchdog, breaker, dead engine); None: healthy.
        self.failure: str | None = None
        # The status the Celery worker stopped with (70 after a failure), for the CLI.
        self.exit_status: int | None = None

    # --- lifecycle ----------------------------------------------------------------------

    def start(
        self,
        engine: Engine | None = None,
        claims: JobClaims | None = None,
        *,
        result_store: ResultStore | None = None,
        conversation_store: ConversationStore | None = None,
    ) -> None:
        """Load the engine (or adopt one, for tests) and start metrics; idempotent.

        A runtime that loads its own engine (a worker) claims its jobs in Redis,
        watches its consumption, and keeps its result cache (when ``cache.enabled``)
        and its conversations in Redis. One that adopts an engine uses the claims and
        stores it is given, if any (tests never touch a shared Redis).
        """
        with self._lock:
            if self._engine is not None:
                return
            if engine is None:
                from structsum.service.stores import RedisConversationStore, RedisResultStore

                conversation_store = RedisConversationStore(self.settings)
                if self.settings.cache.enabled:
                    result_store = RedisResultStore(self.settings)
            self.result_store = result_store
            self.conversation_store = conversation_store
            queue = self.settings.queue
            if queue.metrics_port:
                self._server = MetricsServer(
                    self.metrics,
                    self.health,
                    live=self.liveness,
                    host=queue.metrics_host,
                    port=queue.metrics_port,
                )
                self._server.start()
                log.info("metrics on http://%s:%d/metrics", queue.metrics_host, self._server.port)
            engine_settings = self.settings.engine
            log.info(
                "profile %s (%s): max_num_seqs=%d concurrency=%d backend=%s mask_threads=%d",
                self.settings.profile,
                self.settings.profile_reason,
                engine_settings.max_num_seqs,
                queue.worker_concurrency,
                engine_settings.structured_output_backend,
                engine_settings.mask_threads,
            )
            started = time.perf_counter()
            if engine is None:
                from structsum.processors.engine import load_engine

                engine = load_engine(self.settings.engine, self.settings.cache_dir)
                self._owns_engine = True
            self._engine = engine
            # Prefix-cache and speculation figures, where the engine counts them (vLLM).
            self.metrics.watch_engine(getattr(engine, "counters", None))
            seconds = time.perf_counter() - started
            self.metrics.record_engine_load(seconds)
            log.info("engine %s loaded in %.1f s", engine.model_name, seconds)
            if queue.warm_grammars:
                self._warm(engine)
            self._stats = StatsLogger(self.metrics, queue.stats_interval_s)
            self._stats.start()
            if getattr(engine, "remote", False):
                # No engine process here to die or hang: the server's own supervisor
                # restarts it, and readiness reports its /health. Restarting this
                # worker would not help a sick server; the breaker covers a dead one.
                # Claims and the consumption watchdog below still apply.
                log.info("remote engine: no watchdog; readiness follows the server's /health")
            else:
                self._watchdog = EngineWatchdog(
                    engine,
                    interval_s=queue.watchdog_interval_s,
                    stall_s=queue.watchdog_stall_s,
                    on_trip=self.fail,
                )
                self._watchdog.start()
            if claims is None and self._owns_engine:
                claims = JobClaims.from_url(
                    queue.backend_url,
                    prefix=queue.key_prefix,
                    ttl_s=queue.claim_ttl_s,
                    witness_ttl_s=queue.result_expires_s,
                )
            self.claims = claims
            if claims is not None:
                claims.start()
            if self._owns_engine and queue.consumption_stall_s > 0:
                self._consumption = ConsumptionWatchdog(
                    queued=_queue_length(queue.broker_url, queue.key_prefix + queue.queue_name),
                    reserved=_reserved_jobs,
                    interval_s=queue.watchdog_interval_s,
                    stall_s=queue.consumption_stall_s,
                    on_trip=self.fail,
                )
                self._consumption.start()

    def _warm(self, engine: Engine) -> None:
        """Compile the grammars now; a failure only costs the first jobs their compile."""
        try:
            warm_grammars(engine, self.settings)
        except (StructsumError, ValueError) as exc:
            log.warning("grammar warm-up failed (%s); first jobs compile their own", exc)

    def stop(self) -> None:
        with self._lock:
            if self._watchdog is not None:
                self._watchdog.stop()
                self._watchdog = None
            if self._consumption is not None:
                self._consumption.stop()
                self._consumption = None
            if self.claims is not None:
                self.claims.close()
                self.claims = None
            if self._stats is not None:
                log.info("stats %s", self._stats.line())
                self._stats.stop()
                self._stats = None
            if self._server is not None:
                self._server.stop()
                self._server = None
            if self._engine is not None:
                self._engine = None
                self.metrics.engine_up.set(0)
                if self._owns_engine:
                    self._release_engine()
                    self._owns_engine = False

    @property
    def loaded(self) -> bool:
        return self._engine is not None

    @property
    def engine(self) -> Engine:
        engine = self._engine
        if engine is None:
            raise EngineUnavailable("this worker has no engine loaded (yet)")
        return engine

    def engine_died(self) -> None:
        """The engine is gone: stop taking jobs so a supervisor restarts the worker."""
        self.fail("the engine died")

    def _release_engine(self) -> None:
        """Close a healthy engine; a dead or hung one cannot close, so its processes die."""
        from structsum.processors.engine import close_engine, forget_engine

        if self.failure is None:
            close_engine()
            return
        kill_descendants()
        forget_engine()

    def fail(self, reason: str) -> None:
        """This worker cannot serve: stop consuming, report unhealthy, exit with status 70.

        A worker with a dead engine would otherwise take every queued job and fail
        it; stopping leaves them in the queue for a healthy worker. Running jobs
        finish (with their retry published) during the warm shutdown; if it has not
        finished after ``watchdog_exit_grace_s`` (a hung engine), the process exits hard.
        """
        from celery.worker import state

        first = self.failure is None
        self.failure = self.failure or reason
        self.metrics.engine_up.set(0)
        state.should_stop = ENGINE_DEAD_EXIT_CODE
        if first:
            log.critical("%s; this worker stops taking jobs and exits", reason)
            grace = self.settings.queue.watchdog_exit_grace_s
            if self._exit_later is not None:
                self._exit_later(grace)
            elif self._owns_engine:
                hard_exit_later(grace)
            # After the exit is armed: an unreachable Redis may take seconds to fail.
            self._record_witnesses()

    def _record_witnesses(self) -> None:
        """Poison-job accounting: every job in flight witnessed this failure."""
        if self.claims is None:
            return
        counts = self.claims.record_witnesses()
        if counts:
            log.warning(
                "engine failure recorded for %d job(s) in flight",
                len(counts),
                extra={"witnessed": ",".join(f"{k}:{v}" for k, v in counts.items())},
            )

    # --- health -------------------------------------------------------------------------

    def liveness(self) -> dict[str, Any]:
        """The process and its engine only: Redis blinking must not restart workers.

        Nor a remote engine's server blinking: restarting the worker cannot fix it, so
        the server's /health counts for readiness only.
        """
        report: dict[str, Any] = {"engine": "ok"}
        engine = self._engine
        if self.failure is not None:
            report["engine"] = self.failure
        elif engine is None:
            report["engine"] = "not loaded"
        elif not getattr(engine, "remote", False):
            report["engine"] = _engine_status(engine)
        report["ok"] = report["engine"] == "ok"
        return report

    def health(self) -> dict[str, Any]:
        """Readiness: alive (engine loaded and serving), broker and result backend reachable."""
        report: dict[str, Any] = {**self.liveness(), "broker": "ok", "backend": "ok"}
        engine = self._engine
        if report["engine"] == "ok" and getattr(engine, "remote", False):
            report["engine"] = _engine_status(engine)
        queue = self.settings.queue
        report["broker"] = _redis_status(queue.broker_url)
        report["backend"] = _redis_status(queue.backend_url)
        report["ok"] = all(report[k] == "ok" for k in ("engine", "broker", "backend"))
        if self._consumption is not None:
            report["consumption_stalled_s"] = round(self._consumption.stalled_s, 1)
        report["stats"] = self.metrics.snapshot()
        return report


def _engine_status(engine: Any) -> str:
    """'ok', or why the engine's health check failed (a probe never raises)."""
    check = getattr(engine, "check_health", None)
    if check is None:
        return "ok"
    try:
        check(timeout_s=HEALTH_TIMEOUT_S)
    except Exception as exc:  # a health probe reports every failure, never raises
        return f"{type(exc).__name__}: {exc}"
    return "ok"


def _redis_status(url: str) -> str:
    import redis

    try:
        client = redis.Redis.from_url(
            url, socket_connect_timeout=HEALTH_TIMEOUT_S, socket_timeout=HEALTH_TIMEOUT_S
        )
        try:
            client.ping()
        finally:
            client.close()
    except redis.RedisError as exc:
        return f"{type(exc).__name__}: {exc}"
    return "ok"


def _queue_length(url: str, key: str) -> Callable[[], int]:
    """LLEN of the queue's Redis list, through one client kept for the watchdog."""
    import redis

    client = redis.Redis.from_url(
        url, socket_connect_timeout=HEALTH_TIMEOUT_S, socket_timeout=HEALTH_TIMEOUT_S
    )
    return lambda: int(client.llen(key))


def _reserved_jobs() -> int:
    """Jobs this worker took from the queue and has not finished (running or waiting)."""
    from celery.worker import state

    return len(state.reserved_requests)


_runtime: WorkerRuntime | None = None
_runtime_lock = threading.Lock()


def get_runtime(settings: Settings) -> WorkerRuntime:
    """The process's runtime (created on first use, engine not yet loaded)."""
    global _runtime
    with _runtime_lock:
        if _runtime is None:
            _runtime = WorkerRuntime(settings)
        return _runtime
