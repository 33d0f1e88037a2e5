"""One run per job: claims in Redis, their expiry, and the engine failures a job witnessed.

Real Redis (the test DB the service tests claim), no engine: fast, no lock needed.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import pytest
from celery.worker import state

import structsum.tasks as tasks
from structsum.config import QueueSettings, Settings
from structsum.errors import JobTimeout, PoisonSuspected
from structsum.service.claims import JobClaims
from structsum.service.runtime import WorkerRuntime
from tests.fakes import FakeEngine
from tests.service.conftest import REDIS

pytestmark = pytest.mark.service

TEXT = "Alice: we ship on Friday. Bob: I write the release notes by Thursday."


@pytest.fixture
def url(redis_db: int) -> str:
    return f"{REDIS}/{redis_db}"


@pytest.fixture
def prefix() -> str:
    return f"claimtest{uuid.uuid4().hex[:8]}:"


def claims_on(url: str, prefix: str, *, ttl_s: float = 5.0, owner: str = "w1") -> JobClaims:
    """One worker's claims; two with the same prefix are two workers on one queue."""
    return JobClaims.from_url(url, prefix=prefix, ttl_s=ttl_s, witness_ttl_s=60, owner=owner)


def test_a_copy_waits_for_the_running_job_and_is_dropped_once_it_succeeded(
    url: str, prefix: str
) -> None:
    first, second = claims_on(url, prefix), claims_on(url, prefix, owner="w2")
    assert first.acquire("job-1", wait_s=5, done=lambda: False)
    finished = threading.Event()
    threading.Timer(1.5, finished.set).start()
    started = time.monotonic()
    assert second.acquire("job-1", wait_s=10, done=finished.is_set) is False
    assert 1.4 < time.monotonic() - started < 4  # it waited for the first run
    first.release("job-1")
    assert second.acquire("job-1", wait_s=1, done=lambda: False)  # free again
    second.release("job-1")


def test_a_killed_workers_claim_expires_unless_renewed(url: str, prefix: str) -> None:
    dead = claims_on(url, prefix, ttl_s=0.6)
    alive = claims_on(url, prefix, ttl_s=0.6, owner="w2")
    assert dead.acquire("job-dead", wait_s=1, done=lambda: False)  # never renewed: "killed"
    assert alive.acquire("job-alive", wait_s=1, done=lambda: False)
    alive.start()  # heartbeat every 0.2 s
    try:
        other = claims_on(url, prefix, ttl_s=0.6, owner="w3")
        started = time.monotonic()
        assert other.acquire("job-dead", wait_s=5, done=lambda: False)
        assert time.monotonic() - started < 2.5  # after the TTL, not the wait bound
        with pytest.raises(JobTimeout):  # the renewed claim outlives several TTLs
            other.acquire("job-alive", wait_s=2, done=lambda: False)
    finally:
        alive.stop()


def test_release_only_drops_this_runs_own_claim(url: str, prefix: str) -> None:
    first = claims_on(url, prefix, ttl_s=0.5)
    assert first.acquire("job-x", wait_s=1, done=lambda: False)
    time.sleep(0.7)  # expired; another run takes it
    second = claims_on(url, prefix, owner="w2")
    assert second.acquire("job-x", wait_s=1, done=lambda: False)
    first.release("job-x")  # late release of the expired claim must not free the new one
    assert first._redis.get(first.claim_key("job-x")) is not None
    second.release("job-x")
    assert first._redis.get(first.claim_key("job-x")) is None


def test_a_claim_lost_in_a_redis_outage_is_taken_back_but_never_stolen(
    url: str, prefix: str
) -> None:
    """After an outage longer than the TTL the running job re-takes its claim, so the
    redelivered copy keeps waiting; a claim another run took meanwhile stays theirs."""
    running = claims_on(url, prefix)
    for task_id in ("job-a", "job-b"):
        assert running.acquire(task_id, wait_s=1, done=lambda: False)
        running._redis.delete(running.claim_key(task_id))  # expired while Redis was down
    copy = claims_on(url, prefix, owner="w2")
    assert copy.acquire("job-b", wait_s=1, done=lambda: False)  # a copy got in first
    running.renew()
    with pytest.raises(JobTimeout):  # job-a is held again by the run that is still going
        copy.acquire("job-a", wait_s=1.5, done=lambda: False)
    assert copy._redis.get(copy.claim_key("job-b")).startswith("w2:")
    running.release("job-b")  # not ours any more: a no-op on the key
    assert copy._redis.get(copy.claim_key("job-b")).startswith("w2:")


def test_engine_failures_are_counted_per_job_in_flight(url: str, prefix: str) -> None:
    claims = claims_on(url, prefix)
    for task_id in ("a", "b"):
        assert claims.acquire(task_id, wait_s=1, done=lambda: False)
    assert claims.record_witnesses() == {"a": 1, "b": 1}
    claims.release("b")
    assert claims.record_witnesses() == {"a": 2}
    assert (claims.witnessed("a"), claims.witnessed("b"), claims.witnessed("c")) == (2, 1, 0)
    assert 0 < claims._redis.ttl(claims.witness_key) <= 60


@pytest.fixture
def claimed_runtime(
    url: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[WorkerRuntime]:
    settings = Settings(queue=QueueSettings(metrics_port=None, warm_grammars=False))
    rt = WorkerRuntime(settings, exit_later=lambda _: None)
    rt.start(FakeEngine(lambda _: ("Clean text.", "stop")), claims=claims_on(url, prefix))
    monkeypatch.setattr(tasks, "runtime", lambda: rt)
    monkeypatch.setattr(state, "should_stop", None)
    yield rt
    rt.stop()


def test_a_worker_failure_records_its_jobs_and_the_second_makes_them_poison(
    claimed_runtime: WorkerRuntime,
) -> None:
    claims = claimed_runtime.claims
    assert claims is not None
    task_id = str(uuid.uuid4())
    assert claims.acquire(task_id, wait_s=1, done=lambda: False)
    claimed_runtime.fail("the engine core died")  # what the watchdog does
    claimed_runtime.fail("the engine core died")  # a second report of the same failure
    assert claims.witnessed(task_id) == 1
    claims.release(task_id)

    # Below the threshold the job runs; at it, it fails typed without touching the engine.
    outcome = tasks.enhance_task.apply(kwargs={"text": TEXT}, task_id=task_id)
    assert outcome.successful()
    claims.record_witnesses()  # nothing held: no count
    claims._redis.hincrby(claims.witness_key, task_id, 1)
    outcome = tasks.enhance_task.apply(kwargs={"text": TEXT}, task_id=task_id)
    with pytest.raises(PoisonSuspected) as info:
        outcome.get()
    assert info.value.details["engine_failures"] == 2
    assert claims.held() == []  # released after the outcome
