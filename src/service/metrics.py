"""Worker metrics: Prometheus series, a /healthz endpoint and a periodic stats line.

A worker is one process (threads pool), so plain in-process Prometheus
collectors are exact; each ``ServiceMetrics`` owns its registry so tests and
several apps in one interpreter do not collide. The same numbers feed the
periodic log line and the ``structsum stats`` control command.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from structsum.models import AskResult, EnhancementResult, SummaryResult
from structsum.processors.engine_stats import EngineCounters

log = logging.getLogger(__name__)

# Seconds: from a short enhancement on a GPU to a long map/reduce summary on 2 CPU cores.
LATENCY_BUCKETS = (0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320, 640)
TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80)
ATTEMPT_BUCKETS = (1, 2, 3, 4, 5, 8)
# Share of content words found in the text; issue 15 measured 0.17 before, aims at 0.7.
GROUNDING_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


@dataclass
class _Totals:
    """Cumulative numbers the stats line and the control command report."""

    runs: int = 0
    processed: int = 0
    errors: int = 0
    retries: int = 0
    latency_s: float = 0.0
    completion_tokens: int = 0
    prompt_tokens: int = 0
    valid: int = 0
    summaries: int = 0
    grounding_sum: float = 0.0
    grounded: int = 0  # summaries with a grounding score
    in_flight: int = 0
    max_in_flight: int = 0
    cache_hits: int = 0
    errors_by_code: dict[str, int] = field(default_factory=dict)


class ServiceMetrics:
    """Every series the worker exports; thread-safe (job threads update it at once)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self._job_series(self.registry)
        self._timing_series(self.registry)
        self._engine_series(self.registry)
        self._lock = threading.Lock()
        self._totals = _Totals()
        self.started_at = time.time()
        self._counters: Callable[[], EngineCounters] | None = None

    def _job_series(self, r: CollectorRegistry) -> None:
        self.jobs = Counter(
            "structsum_jobs", "finished jobs by task and outcome", ["task", "outcome"], registry=r
        )
        self.errors = Counter(
            "structsum_errors", "failed jobs by task and error code", ["task", "code"], registry=r
        )
        self.retries = Counter(
            "structsum_retries", "Celery retries of retryable errors", ["task", "code"], registry=r
        )
        self.summary_attempts = Histogram(
            "structsum_summary_attempts",
            "generation attempts per summary (template retry policy)",
            ["task"],
            buckets=ATTEMPT_BUCKETS,
            registry=r,
        )
        self.summaries = Counter(
            "structsum_summaries",
            "summaries by schema validity; valid rate = valid=true / all",
            ["task", "valid"],
            registry=r,
        )
        self.result_cache = Counter(
            "structsum_result_cache",
            "finished jobs by result cache outcome (hit: no engine work; miss: ran)",
            ["task", "outcome"],
            registry=r,
        )
        self.grounding = Histogram(
            "structsum_summary_grounding",
            "share of a summary's content words found in its text (processors/grounding.py)",
            ["task"],
            buckets=GROUNDING_BUCKETS,
            registry=r,
        )
        self.verbatim = Counter(
            "structsum_verbatim_fields",
            "verbatim field values by whether they are copied word for word from the text",
            ["task", "copied"],
            registry=r,
        )
        self.tokens = Counter(
            "structsum_tokens",
            "tokens by task and kind (prompt|completion)",
            ["task", "kind"],
            registry=r,
        )

    def _timing_series(self, r: CollectorRegistry) -> None:
        self.latency = Histogram(
            "structsum_job_latency_seconds",
            "job run time in the worker",
            ["task"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "structsum_queue_wait_seconds",
            "enqueue to start (needs the enqueue header)",
            ["task"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "structsum_ttft_seconds",
            "time to first token per generation",
            ["task"],
            buckets=TTFT_BUCKETS,
            registry=r,
        )

    def _engine_series(self, r: CollectorRegistry) -> None:
        self.in_flight = Gauge("structsum_jobs_in_flight", "jobs running now", registry=r)
        self.max_in_flight = Gauge(
            "structsum_jobs_in_flight_max", "most jobs running at once since start", registry=r
        )
        self.engine_up = Gauge("structsum_engine_up", "1 while the engine is loaded", registry=r)
        self.engine_loads = Counter(
            "structsum_engine_loads", "engine loads in this process (must stay 1)", registry=r
        )
        self.engine_load_seconds = Gauge(
            "structsum_engine_load_seconds", "time the engine took to load", registry=r
        )
        # vLLM's own figures, read from the engine at scrape time (watch_engine).
        engine_figures = {  # series name: (EngineCounters field, help)
            "prefix_queries_tokens": ("prefix_queries", "prompt tokens looked up in prefix cache"),
            "prefix_hits_tokens": ("prefix_hits", "prompt tokens found in the prefix cache"),
            "spec_draft_tokens": ("spec_draft_tokens", "tokens drafted by speculative decoding"),
            "spec_accepted_tokens": ("spec_accepted_tokens", "drafted tokens accepted"),
        }
        for series, (field_name, doc) in engine_figures.items():
            gauge = Gauge(f"structsum_engine_{series}", f"{doc}, since start", registry=r)
            gauge.set_function(partial(self._engine_figure, field_name))
        Gauge(
            "structsum_engine_prefix_cache_hit_rate",
            "prefix-cache hits / queries since start (0 before the first request)",
            registry=r,
        ).set_function(lambda: self._engine_rate("prefix_hit_rate"))

    # --- one job ------------------------------------------------------------------------

    @contextmanager
    def job(self, task: str, *, enqueued_at: float | None = None) -> Iterator[None]:
        """Time one job and count it in flight; the outcome is recorded by the task hooks."""
        started = time.time()
        if enqueued_at is not None:
            self.queue_wait.labels(task).observe(max(0.0, started - enqueued_at))
        with self._lock:
            self._totals.in_flight += 1
            self._totals.max_in_flight = max(self._totals.max_in_flight, self._totals.in_flight)
            self.in_flight.set(self._totals.in_flight)
            self.max_in_flight.set(self._totals.max_in_flight)
        try:
            yield
        finally:
            elapsed = time.time() - started
            self.latency.labels(task).observe(elapsed)
            with self._lock:
                self._totals.in_flight -= 1
                self._totals.runs += 1
                self._totals.latency_s += elapsed
                self.in_flight.set(self._totals.in_flight)

    def record_result(
        self, task: str, result: SummaryResult | EnhancementResult | AskResult
    ) -> None:
        cached = not isinstance(result, AskResult) and result.cached
        if not isinstance(result, AskResult):
            self.result_cache.labels(task, "hit" if cached else "miss").inc()
        if cached:
            # Nothing was generated: tokens, TTFT and validity were counted when it ran.
            self.jobs.labels(task, "success").inc()
            with self._lock:
                self._totals.processed += 1
                self._totals.cache_hits += 1
            return
        usage = result.usage
        ttfts: list[float] = []
        if isinstance(result, SummaryResult):
            self.summary_attempts.labels(task).observe(len(result.attempts))
            self.summaries.labels(task, str(result.valid).lower()).inc()
            self._record_grounding(task, result)
            ttfts += [a.ttft_s for a in result.attempts if a.ttft_s is not None]
            if result.enhancement is not None and result.enhancement.ttft_s is not None:
                ttfts.append(result.enhancement.ttft_s)
        elif result.ttft_s is not None:
            ttfts.append(result.ttft_s)
        for ttft in ttfts:
            self.ttft.labels(task).observe(ttft)
        self.tokens.labels(task, "prompt").inc(usage.prompt_tokens)
        self.tokens.labels(task, "completion").inc(usage.completion_tokens)
        self.jobs.labels(task, "success").inc()
        with self._lock:
            totals = self._totals
            totals.processed += 1
            totals.prompt_tokens += usage.prompt_tokens
            totals.completion_tokens += usage.completion_tokens
            if isinstance(result, SummaryResult):
                totals.summaries += 1
                totals.valid += int(result.valid)
                if result.grounding is not None and result.grounding.score is not None:
                    totals.grounding_sum += result.grounding.score
                    totals.grounded += 1

    def _record_grounding(self, task: str, result: SummaryResult) -> None:
        grounding = result.grounding
        if grounding is None:
            return
        if grounding.score is not None:
            self.grounding.labels(task).observe(grounding.score)
        if grounding.verbatim_fields:
            copied = grounding.verbatim_copied
            self.verbatim.labels(task, "true").inc(copied)
            self.verbatim.labels(task, "false").inc(grounding.verbatim_fields - copied)

    def record_failure(self, task: str, code: str) -> None:
        self.errors.labels(task, code).inc()
        self.jobs.labels(task, "failure").inc()
        with self._lock:
            self._totals.processed += 1
            self._totals.errors += 1
            self._totals.errors_by_code[code] = self._totals.errors_by_code.get(code, 0) + 1

    def record_retry(self, task: str, code: str) -> None:
        self.retries.labels(task, code).inc()
        self.jobs.labels(task, "retry").inc()
        with self._lock:
            self._totals.retries += 1

    def record_engine_load(self, seconds: float) -> None:
        self.engine_loads.inc()
        self.engine_load_seconds.set(seconds)
        self.engine_up.set(1)

    # --- the engine's own figures -------------------------------------------------------

    def watch_engine(self, counters: Callable[[], EngineCounters] | None) -> None:
        """Report these prefix-cache and speculation counters (None: the engine has none)."""
        self._counters = counters

    def engine_counters(self) -> EngineCounters | None:
        return self._counters() if self._counters is not None else None

    def _engine_figure(self, name: str) -> float:
        counters = self.engine_counters()
        return float(getattr(counters, name)) if counters is not None else 0.0

    def _engine_rate(self, name: str) -> float:
        counters = self.engine_counters()
        rate = getattr(counters, name) if counters is not None else None
        return float(rate) if rate is not None else 0.0

    # --- reading ------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Cumulative numbers since start, JSON-able (stats line, control command)."""
        with self._lock:
            t = self._totals
            return {
                "processed": t.processed,
                "errors": t.errors,
                "errors_by_code": dict(t.errors_by_code),
                "retries": t.retries,
                "in_flight": t.in_flight,
                "max_in_flight": t.max_in_flight,
                # per run: a retried job counts once per run, like the latency histogram
                "avg_latency_s": t.latency_s / t.runs if t.runs else 0.0,
                "prompt_tokens": t.prompt_tokens,
                "completion_tokens": t.completion_tokens,
                "valid_rate": t.valid / t.summaries if t.summaries else None,
                "cache_hits": t.cache_hits,
                "avg_grounding": t.grounding_sum / t.grounded if t.grounded else None,
                "uptime_s": time.time() - self.started_at,
            } | self._engine_snapshot()

    def _engine_snapshot(self) -> dict[str, Any]:
        counters = self.engine_counters()
        return {"engine": counters.as_dict()} if counters is not None else {}

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class StatsLogger:
    """Logs "processed=N errors=N avg_latency_s=X tok_s=Y" every interval.

    tok/s is completion tokens over the last interval: the rate the engine
    delivers now, not an average diluted by idle hours.
    """

    def __init__(self, metrics: ServiceMetrics, interval_s: float) -> None:
        self._metrics = metrics
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="structsum-stats", daemon=True)
        self._last_tokens = 0
        self._last_time = time.monotonic()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self._interval_s + 1)

    def line(self) -> str:
        snap = self._metrics.snapshot()
        now = time.monotonic()
        tokens = snap["completion_tokens"]
        window = max(now - self._last_time, 1e-9)
        rate = (tokens - self._last_tokens) / window
        self._last_tokens, self._last_time = tokens, now
        return (
            f"processed={snap['processed']} errors={snap['errors']} "
            f"avg_latency_s={snap['avg_latency_s']:.2f} tok_s={rate:.1f} "
            f"in_flight={snap['in_flight']}"
        )

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            log.info("stats %s", self.line())


HealthCheck = Callable[[], dict[str, Any]]


class MetricsServer:
    """GET /metrics (Prometheus text), /livez and /readyz (200 or 503, JSON) on one port.

    /livez is the process and its engine (a liveness probe: failing it means
    restart); /readyz adds Redis (a readiness probe: failing it means "send no
    traffic", never "restart"). /healthz stays as an alias of /readyz.
    """

    def __init__(
        self,
        metrics: ServiceMetrics,
        health: HealthCheck,
        *,
        host: str,
        port: int,
        live: HealthCheck | None = None,
    ):
        self._metrics = metrics
        self._health = health
        self._live = live or health
        handler = self._handler()
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="structsum-metrics", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        metrics = self._metrics
        probes = {"/livez": self._live, "/readyz": self._health, "/healthz": self._health}

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, CONTENT_TYPE_LATEST, metrics.exposition())
                elif path in probes:
                    report = probes[path]()
                    status = 200 if report.get("ok") else 503
                    self._send(status, "application/json", json.dumps(report).encode())
                else:
                    self._send(404, "text/plain", b"try /metrics, /livez or /readyz\n")

            def _send(self, status: int, content_type: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("metrics http: " + format, *args)

        return Handler
