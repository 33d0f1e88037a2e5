"""End to end: Redis, one real worker process, the bundled model.

The tests share one worker (engine start ~1 min). Each test stands on its own, in
any order: counters are compared before and after. A SIGKILLed worker's jobs running
again on another worker is tests/service/test_recovery.py's story (16 in flight, a
visibility timeout shorter than a job). Run under `flock /tmp/structsum-engine.lock`.
"""

from __future__ import annotations

import json
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from typer.testing import CliRunner

from structsum import client
from structsum.config import Settings, get_settings
from structsum.errors import (
    EmptyText,
    JobUnknown,
    RequestInvalid,
    StructsumError,
    TemplateNotFound,
    TextTooLong,
)
from structsum.models import EnhancementResult, SummaryResult
from tests.service.conftest import TEST_MAX_INPUT_CHARS, WorkerProcess

pytestmark = [pytest.mark.service, pytest.mark.engine]

INPUTS = Path(__file__).parents[1] / "data" / "inputs"
TEMPLATE = "generic_summary_v1"
JOB_TIMEOUT_S = 300.0
NOTE = (
    "Alice: so um we ship v2 on Friday. Bob: ok I will write the release notes by "
    "Thursday. Carol: QA signs off Thursday afternoon, if the staging server is up."
)


def short_texts(count: int) -> list[str]:
    """The shortest sample inputs: real text, but quick on 2 CPU cores."""
    paths = sorted(INPUTS.glob("*.txt"), key=lambda p: len(p.read_text()))
    assert len(paths) >= count
    return [p.read_text() for p in paths[:count]]


@pytest.fixture(scope="module")
def plain_app(service_settings: Settings) -> Celery:
    """What a foreign app does: a bare Celery app that knows only URLs and the prefix."""
    queue = service_settings.queue
    app = Celery("foreign", broker=queue.broker_url, backend=queue.backend_url)
    app.conf.broker_transport_options = {"global_keyprefix": queue.key_prefix}
    app.conf.result_backend_transport_options = {"global_keyprefix": queue.key_prefix}
    return app


def send(plain_app: Celery, settings: Settings, name: str, *args: Any, **kwargs: Any) -> str:
    result = plain_app.send_task(name, args=args, kwargs=kwargs, queue=settings.queue.queue_name)
    return str(result.id)


def test_engine_loaded_once_at_start(worker: WorkerProcess) -> None:
    assert worker.metric("structsum_engine_loads_total") == 1
    load_s = worker.metric("structsum_engine_load_seconds")
    assert load_s is not None and load_s > 1
    assert worker.metric("structsum_jobs_in_flight") == 0
    assert "loading the engine once for the threads pool" in worker.log_text()


def test_health(worker: WorkerProcess) -> None:
    url = f"http://127.0.0.1:{worker.metrics_port}/healthz"
    with urllib.request.urlopen(url, timeout=30) as response:
        report = json.loads(response.read())
    assert response.status == 200
    assert report["ok"] is True
    assert (report["engine"], report["broker"], report["backend"]) == ("ok", "ok", "ok")


def test_enhance(worker: WorkerProcess, service_settings: Settings) -> None:
    job = client.enqueue_enhancement(NOTE.encode(), settings=service_settings)
    result = job.result(JOB_TIMEOUT_S)
    assert isinstance(result, EnhancementResult)
    assert result.text.strip()
    assert result.usage.completion_tokens > 0
    assert result.ttft_s is not None
    assert job.state == "SUCCESS"


def test_summarize(worker: WorkerProcess, service_settings: Settings) -> None:
    result = client.enqueue_summary(NOTE, TEMPLATE, settings=service_settings).result(JOB_TIMEOUT_S)
    assert isinstance(result, SummaryResult)
    assert result.template_id == TEMPLATE
    assert result.valid, result.errors
    assert result.data and result.data["title"]
    assert result.enhancement is None
    queued = worker.metric("structsum_queue_wait_seconds_count", task="structsum.summarize")
    assert queued is not None and queued >= 1


def test_enhance_and_summarize(worker: WorkerProcess, service_settings: Settings) -> None:
    job = client.enqueue_enhance_and_summarize(NOTE, TEMPLATE, settings=service_settings)
    result = job.result(JOB_TIMEOUT_S)
    assert result.valid, result.errors
    assert result.enhancement is not None and result.enhancement.text.strip()
    assert result.usage.prompt_tokens > result.enhancement.usage.prompt_tokens


def test_send_task_by_name(
    worker: WorkerProcess, service_settings: Settings, plain_app: Celery
) -> None:
    task_id = send(
        plain_app, service_settings, "structsum.summarize", text=NOTE, template_id=TEMPLATE
    )
    payload = plain_app.AsyncResult(task_id).get(timeout=JOB_TIMEOUT_S)
    assert SummaryResult.model_validate(payload).valid
    # and the client reads the same job by id, typed
    again = client.get_result(task_id, timeout=10, settings=service_settings)
    assert isinstance(again, SummaryResult)
    assert again.model_dump(mode="json") == payload


def test_sixteen_concurrent_summaries(worker: WorkerProcess, service_settings: Settings) -> None:
    peak_before = worker.metric("structsum_jobs_in_flight_max") or 0
    assert peak_before < 16
    texts = short_texts(16)
    jobs = [client.enqueue_summary(t, TEMPLATE, settings=service_settings) for t in texts]
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(lambda j: j.result(JOB_TIMEOUT_S), jobs))
    assert len({j.id for j in jobs}) == 16
    invalid = [(r.data, r.errors) for r in results if not r.valid]
    assert not invalid, f"{len(invalid)}/16 invalid: {invalid[:2]}"
    # all 16 were running together in the one worker, over the one engine
    assert worker.metric("structsum_jobs_in_flight_max") == 16
    assert worker.metric("structsum_engine_loads_total") == 1


@pytest.mark.parametrize(
    ("args", "kwargs", "error"),
    [
        ((), {"template_id": TEMPLATE}, RequestInvalid),
        ((), {"text": 123, "template_id": TEMPLATE}, RequestInvalid),
        ((), {"text": NOTE, "template_id": TEMPLATE, "variables": "x"}, RequestInvalid),
        ((), {"text": NOTE, "template_id": TEMPLATE, "surprise": 1}, RequestInvalid),
        ((NOTE, TEMPLATE), {}, RequestInvalid),
        ((), {"text": NOTE, "template_id": "no_such_template"}, TemplateNotFound),
        ((), {"text": "x" * (TEST_MAX_INPUT_CHARS + 1), "template_id": TEMPLATE}, TextTooLong),
        ((), {"text": " \n\t ", "template_id": TEMPLATE}, EmptyText),
    ],
    ids=["missing", "text-int", "vars-str", "extra", "positional", "template", "oversize", "empty"],
)
def test_bad_payloads_fail_typed(
    worker: WorkerProcess,
    service_settings: Settings,
    plain_app: Celery,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    error: type[StructsumError],
) -> None:
    task_id = send(plain_app, service_settings, "structsum.summarize", *args, **kwargs)
    with pytest.raises(error) as info:
        client.job(task_id, settings=service_settings).result(60)
    assert info.value.hint  # the typed class came back, hint and all
    with pytest.raises(error):  # plain Celery re-raises the same class too
        plain_app.AsyncResult(task_id).get(timeout=10)


def test_worker_keeps_serving_after_bad_payloads(
    worker: WorkerProcess, service_settings: Settings, plain_app: Celery
) -> None:
    def request_invalid() -> float:
        value = worker.metric(
            "structsum_errors_total", task="structsum.summarize", code="RequestInvalid"
        )
        return value or 0.0

    before = request_invalid()
    payloads: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
        ((), {"template_id": TEMPLATE}),
        ((NOTE, TEMPLATE), {}),
        ((), {"text": 1, "template_id": TEMPLATE}),
        ((), {"text": NOTE, "template_id": TEMPLATE, "surprise": 1}),
        ((), {"text": NOTE, "template_id": TEMPLATE, "variables": "x"}),
    ]
    for args, kwargs in payloads:
        task_id = send(plain_app, service_settings, "structsum.summarize", *args, **kwargs)
        with pytest.raises(RequestInvalid):
            client.job(task_id, settings=service_settings).result(60)
    assert request_invalid() >= before + 5
    assert worker.process.poll() is None
    result = client.enqueue_enhancement(NOTE, settings=service_settings).result(JOB_TIMEOUT_S)
    assert result.text.strip()


def test_an_idempotency_key_runs_one_job_and_ids_are_known_or_unknown(
    worker: WorkerProcess, service_settings: Settings
) -> None:
    key = f"note-{time.time()}"
    first = client.enqueue_enhancement(NOTE, settings=service_settings, idempotency_key=key)
    again = client.enqueue_enhancement(NOTE, settings=service_settings, idempotency_key=key)
    assert first.id == again.id
    assert first.state in ("PENDING", "STARTED", "SUCCESS")
    assert first.result(JOB_TIMEOUT_S).text.strip()
    # one message, one run: the worker received the id once
    assert worker.log_text().count(f"structsum.enhance[{first.id}] received") == 1
    stranger = client.job("0f0f0f0f-no-such-job", settings=service_settings)
    assert stranger.state == "UNKNOWN"
    with pytest.raises(JobUnknown):
        stranger.result(1)


def test_result_expiry(worker: WorkerProcess, service_settings: Settings) -> None:
    queue = service_settings.queue
    job = client.enqueue_enhancement(NOTE, settings=service_settings)
    job.result(JOB_TIMEOUT_S)
    store = redis.Redis.from_url(queue.backend_url)
    ttl = store.ttl(f"{queue.key_prefix}celery-task-meta-{job.id}")
    assert 0 < ttl <= queue.result_expires_s

    # The same mechanism with a one-second expiry: the result is gone, the id unknown.
    short = service_settings.model_copy(
        update={"queue": queue.model_copy(update={"result_expires_s": 1})}
    )
    backend = client.client_app(short).backend
    backend.store_result("expiring-job", {"text": "x"}, "SUCCESS")
    assert store.exists(f"{queue.key_prefix}celery-task-meta-expiring-job")
    time.sleep(2.2)
    assert not store.exists(f"{queue.key_prefix}celery-task-meta-expiring-job")
    handle = client.job("expiring-job", settings=short)
    assert handle.state == "UNKNOWN"  # no result, no record of it being enqueued
    with pytest.raises(JobUnknown):
        handle.result(0.5)


def test_cli_enqueue_result_and_stats(
    worker: WorkerProcess,
    service_settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from structsum.commands.service import app
    from tests.service.conftest import worker_env

    for key, value in worker_env(service_settings).items():
        if key.startswith("STRUCTSUM_"):
            monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    try:
        note = tmp_path / "note.txt"
        note.write_text(NOTE)
        runner = CliRunner()

        def processed() -> int:
            stats = runner.invoke(app, ["stats", "--json"])
            assert stats.exit_code == 0, stats.stderr
            ours = json.loads(stats.stdout)["workers"][worker.hostname]
            return int(ours["structsum"]["processed"])

        before = processed()
        done = runner.invoke(
            app, ["enqueue", "summarize", str(note), "--template", TEMPLATE, "--wait"]
        )
        assert done.exit_code == 0, done.stderr
        printed = SummaryResult.model_validate_json(done.stdout)
        assert printed.valid

        queued = runner.invoke(app, ["enqueue", "enhance", str(note)])
        assert queued.exit_code == 0, queued.stderr
        task_id = queued.stdout.strip()
        fetched = runner.invoke(app, ["result", task_id, "--wait", "--timeout", "300"])
        assert fetched.exit_code == 0, fetched.stderr
        assert EnhancementResult.model_validate_json(fetched.stdout).text

        unknown = runner.invoke(app, ["result", "no-such-id"])
        assert unknown.exit_code == 3 and "UNKNOWN" in unknown.stderr

        stats = runner.invoke(app, ["stats", "--json"])
        assert stats.exit_code == 0, stats.stderr
        report = json.loads(stats.stdout)
        ours = report["workers"][worker.hostname]
        assert ours["pool"] == "thread"
        assert ours["concurrency"] == service_settings.queue.worker_concurrency
        assert ours["structsum"]["engine_loaded"] is True
        assert ours["structsum"]["processed"] >= before + 2  # this test's two jobs
        assert report["queued"] == 0
    finally:
        get_settings.cache_clear()


def test_stats_line_is_logged(worker: WorkerProcess, service_settings: Settings) -> None:
    def stats_lines() -> list[str]:
        return [line for line in worker.log_text().splitlines() if " stats processed=" in line]

    # A worker started just now has not reached its first interval yet.
    deadline = time.monotonic() + 5 * service_settings.queue.stats_interval_s
    while not stats_lines() and time.monotonic() < deadline:
        time.sleep(0.2)
    lines = stats_lines()
    assert lines
    assert "errors=" in lines[-1] and "avg_latency_s=" in lines[-1] and "tok_s=" in lines[-1]
