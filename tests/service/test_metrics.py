"""Worker metrics: counters from results, in-flight peak, stats line, HTTP endpoints."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from typing import Any

import pytest

from structsum.models import Attempt, EnhancementResult, Grounding, SummaryResult, Usage
from structsum.service.metrics import MetricsServer, ServiceMetrics, StatsLogger


def summary(valid: bool, attempts: int = 1) -> SummaryResult:
    usage = Usage(prompt_tokens=100, completion_tokens=40)
    return SummaryResult(
        template_id="t",
        schema_sha256="0" * 64,
        data={},
        valid=valid,
        attempts=[
            Attempt(
                index=i,
                temperature=0.7,
                guided=True,
                finish_reason="stop",
                usage=usage,
                elapsed_s=1.0,
                ttft_s=0.2,
                valid=valid,
            )
            for i in range(attempts)
        ],
        usage=usage,
        elapsed_s=1.0,
        model="m",
        settings_fingerprint="f",
    )


def value(metrics: ServiceMetrics, name: str, **labels: str) -> float:
    found = metrics.registry.get_sample_value(name, labels)
    assert found is not None, f"no sample {name} {labels}"
    return found


def test_results_feed_counters() -> None:
    metrics = ServiceMetrics()
    with metrics.job("structsum.summarize", enqueued_at=None):
        pass
    metrics.record_result("structsum.summarize", summary(valid=True, attempts=2))
    metrics.record_result("structsum.summarize", summary(valid=False))
    metrics.record_result(
        "structsum.enhance",
        EnhancementResult(
            text="x",
            truncated=False,
            usage=Usage(prompt_tokens=5, completion_tokens=7),
            elapsed_s=0.5,
            ttft_s=0.1,
            model="m",
        ),
    )
    metrics.record_failure("structsum.summarize", "TemplateNotFound")
    metrics.record_retry("structsum.summarize", "EngineUnavailable")

    task = "structsum.summarize"
    assert value(metrics, "structsum_jobs_total", task=task, outcome="success") == 2
    assert value(metrics, "structsum_jobs_total", task=task, outcome="failure") == 1
    assert value(metrics, "structsum_jobs_total", task=task, outcome="retry") == 1
    assert value(metrics, "structsum_errors_total", task=task, code="TemplateNotFound") == 1
    assert value(metrics, "structsum_retries_total", task=task, code="EngineUnavailable") == 1
    assert value(metrics, "structsum_summaries_total", task=task, valid="true") == 1
    assert value(metrics, "structsum_summaries_total", task=task, valid="false") == 1
    assert value(metrics, "structsum_summary_attempts_sum", task=task) == 3
    assert value(metrics, "structsum_tokens_total", task=task, kind="completion") == 80
    assert value(metrics, "structsum_tokens_total", task="structsum.enhance", kind="prompt") == 5
    assert value(metrics, "structsum_ttft_seconds_count", task=task) == 3
    snap = metrics.snapshot()
    assert (snap["processed"], snap["errors"], snap["retries"]) == (4, 1, 1)
    assert snap["errors_by_code"] == {"TemplateNotFound": 1}
    assert snap["valid_rate"] == 0.5
    assert snap["completion_tokens"] == 87


def test_grounding_feeds_a_histogram_the_verbatim_counter_and_the_snapshot() -> None:
    metrics = ServiceMetrics()
    task = "structsum.summarize"
    grounded = summary(valid=True).model_copy(
        update={
            "grounding": Grounding(
                score=0.8, content_words=10, verbatim=0.75, verbatim_fields=4, verbatim_copied=3
            )
        }
    )
    metrics.record_result(task, grounded)
    loose = Grounding(score=0.4, content_words=5)
    metrics.record_result(task, summary(valid=True).model_copy(update={"grounding": loose}))
    metrics.record_result(task, summary(valid=False))  # nothing graded: not counted
    assert value(metrics, "structsum_summary_grounding_count", task=task) == 2
    assert value(metrics, "structsum_summary_grounding_bucket", task=task, le="0.5") == 1
    assert value(metrics, "structsum_verbatim_fields_total", task=task, copied="true") == 3
    assert value(metrics, "structsum_verbatim_fields_total", task=task, copied="false") == 1
    assert metrics.snapshot()["avg_grounding"] == pytest.approx(0.6)


def test_queue_wait_needs_the_enqueue_time() -> None:
    metrics = ServiceMetrics()
    with metrics.job("structsum.enhance", enqueued_at=None):
        pass
    assert metrics.registry.get_sample_value(
        "structsum_queue_wait_seconds_count", {"task": "structsum.enhance"}
    ) in (None, 0.0)
    import time

    with metrics.job("structsum.enhance", enqueued_at=time.time() - 3.0):
        pass
    assert value(metrics, "structsum_queue_wait_seconds_sum", task="structsum.enhance") >= 3.0


def test_in_flight_peak_counts_overlapping_jobs() -> None:
    metrics = ServiceMetrics()
    inside = threading.Barrier(5)
    release = threading.Event()

    def job() -> None:
        with metrics.job("structsum.summarize"):
            inside.wait(timeout=5)
            release.wait(timeout=5)

    threads = [threading.Thread(target=job) for _ in range(4)]
    for t in threads:
        t.start()
    inside.wait(timeout=5)
    assert value(metrics, "structsum_jobs_in_flight") == 4
    release.set()
    for t in threads:
        t.join()
    assert value(metrics, "structsum_jobs_in_flight") == 0
    assert value(metrics, "structsum_jobs_in_flight_max") == 4
    assert metrics.snapshot()["max_in_flight"] == 4


def test_a_failing_job_still_leaves_flight() -> None:
    metrics = ServiceMetrics()
    with pytest.raises(RuntimeError), metrics.job("structsum.enhance"):
        raise RuntimeError("boom")
    assert value(metrics, "structsum_jobs_in_flight") == 0
    assert value(metrics, "structsum_job_latency_seconds_count", task="structsum.enhance") == 1


def test_stats_line_format() -> None:
    metrics = ServiceMetrics()
    with metrics.job("structsum.summarize"):
        pass
    metrics.record_result("structsum.summarize", summary(valid=True))
    line = StatsLogger(metrics, interval_s=60).line()
    fields = dict(part.split("=") for part in line.split())
    assert fields["processed"] == "1"
    assert fields["errors"] == "0"
    assert float(fields["avg_latency_s"]) >= 0
    assert float(fields["tok_s"]) > 0  # 40 completion tokens in the first window


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.mark.parametrize("healthy", [True, False])
def test_http_server_serves_metrics_and_health(healthy: bool) -> None:
    metrics = ServiceMetrics()
    metrics.record_engine_load(1.5)

    def health() -> dict[str, Any]:
        return {"ok": healthy, "engine": "ok" if healthy else "EngineUnavailable: dead"}

    server = MetricsServer(metrics, health, host="127.0.0.1", port=0)
    server.start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        status, body = _get(base + "/metrics")
        assert status == 200
        assert b"structsum_engine_loads_total 1.0" in body
        status, body = _get(base + "/healthz")
        assert status == (200 if healthy else 503)
        assert json.loads(body)["ok"] is healthy
        assert _get(base + "/nope")[0] == 404
    finally:
        server.stop()


def test_liveness_does_not_depend_on_redis() -> None:
    """Redis down: not ready (send no work), yet alive (do not restart the worker)."""

    def live() -> dict[str, Any]:
        return {"ok": True, "engine": "ok"}

    def ready() -> dict[str, Any]:
        return {"ok": False, "engine": "ok", "broker": "ConnectionError"}

    server = MetricsServer(ServiceMetrics(), ready, live=live, host="127.0.0.1", port=0)
    server.start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        assert _get(base + "/livez")[0] == 200
        assert _get(base + "/readyz")[0] == 503
        assert _get(base + "/healthz")[0] == 503  # the old name is readiness
    finally:
        server.stop()


def test_the_metrics_server_binds_loopback_by_default() -> None:
    from structsum.config import QueueSettings

    assert QueueSettings().metrics_host == "127.0.0.1"
