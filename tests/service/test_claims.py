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
from tests.fakes import FakeEngine, Responder
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
    token = first.acquire("job-1", wait_s=5, done=lambda: False)
    assert token
    finished = threading.Event()
    threading.Timer(1.5, finished.set).start()
    started = time.monotonic()
    assert second.acquire("job-1", wait_s=10, done=finished.is_set) is None
    assert 1.4 < time.monotonic() - started < 4  # it waited for the first run
    first.release("job-1", token)
    token = second.acquire("job-1", wait_s=1, done=lambda: False)  # free again
    assert token
    second.release("job-1", token)


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
    old = first.acquire("job-x", wait_s=1, done=lambda: False)
    assert old
    time.sleep(0.7)  # expired; another run takes it
    second = claims_on(url, prefix, owner="w2")
    new = second.acquire("job-x", wait_s=1, done=lambda: False)
    assert new
    first.release("job-x", old)  # late release of the expired claim must not free the new one
    assert first._redis.get(first.claim_key("job-x")) is not None
    second.release("job-x", new)
    assert first._redis.get(first.claim_key("job-x")) is None


def test_a_copy_in_the_same_worker_cannot_release_the_running_copys_claim(
    url: str, prefix: str
) -> None:
    """Two copies of one job in one worker: the one that never got the claim (it failed
    while waiting, Redis down say) must leave the running one's claim held and renewed."""
    claims = claims_on(url, prefix, ttl_s=0.6)
    running = claims.acquire("job-y", wait_s=1, done=lambda: False)
    assert running
    claims.release("job-y", "a token this worker never handed out")
    assert claims.held() == ["job-y"]
    claims.start()
    try:
        time.sleep(1.5)  # past two TTLs: only the heartbeat keeps it
        with pytest.raises(JobTimeout):
            claims_on(url, prefix, owner="w2").acquire("job-y", wait_s=1, done=lambda: False)
    finally:
        claims.stop()
    claims.release("job-y", running)
    assert claims.held() == []


def test_a_claim_lost_in_a_redis_outage_is_taken_back_but_never_stolen(
    url: str, prefix: str
) -> None:
    """After an outage longer than the TTL the running job re-takes its claim, so the
    redelivered copy keeps waiting; a claim another run took meanwhile stays theirs."""
    running = claims_on(url, prefix)
    tokens = {}
    for task_id in ("job-a", "job-b"):
        tokens[task_id] = running.acquire(task_id, wait_s=1, done=lambda: False)
        assert tokens[task_id]
        running._redis.delete(running.claim_key(task_id))  # expired while Redis was down
    copy = claims_on(url, prefix, owner="w2")
    assert copy.acquire("job-b", wait_s=1, done=lambda: False)  # a copy got in first
    running.renew()
    with pytest.raises(JobTimeout):  # job-a is held again by the run that is still going
        copy.acquire("job-a", wait_s=1.5, done=lambda: False)
    assert copy._redis.get(copy.claim_key("job-b")).startswith("w2:")
    running.release("job-b", tokens["job-b"])  # not ours any more: a no-op on the key
    assert copy._redis.get(copy.claim_key("job-b")).startswith("w2:")


def test_engine_failures_are_counted_per_job_in_flight(url: str, prefix: str) -> None:
    claims = claims_on(url, prefix)
    tokens = {t: claims.acquire(t, wait_s=1, done=lambda: False) for t in ("a", "b")}
    assert all(tokens.values())
    assert claims.record_witnesses() == {"a": 1, "b": 1}
    claims.release("b", tokens["b"])
    assert claims.record_witnesses() == {"a": 2}
    assert (claims.witnessed("a"), claims.witnessed("b"), claims.witnessed("c")) == (2, 1, 0)
    assert 0 < claims._redis.ttl(claims.witness_key) <= 60


def runtime_with_claims(
    url: str, prefix: str, monkeypatch: pytest.MonkeyPatch, responder: Responder
) -> WorkerRuntime:
    """The tasks' runtime: a fake engine, real claims in Redis (call ``stop()``)."""
    settings = Settings(queue=QueueSettings(metrics_port=None, warm_grammars=False))
    rt = WorkerRuntime(settings, exit_later=lambda _: None)
    rt.start(FakeEngine(responder), claims=claims_on(url, prefix))
    monkeypatch.setattr(tasks, "runtime", lambda: rt)
    monkeypatch.setattr(state, "should_stop", None)
    return rt


@pytest.fixture
def claimed_runtime(
    url: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[WorkerRuntime]:
    rt = runtime_with_claims(url, prefix, monkeypatch, lambda _: ("Clean text.", "stop"))
    yield rt
    rt.stop()


def test_a_worker_failure_records_its_jobs_and_the_second_makes_them_poison(
    claimed_runtime: WorkerRuntime,
) -> None:
    claims = claimed_runtime.claims
    assert claims is not None
    task_id = str(uuid.uuid4())
    token = claims.acquire(task_id, wait_s=1, done=lambda: False)
    assert token
    claimed_runtime.fail("the engine core died")  # what the watchdog does
    claimed_runtime.fail("the engine core died")  # a second report of the same failure
    assert claims.witnessed(task_id) == 1
    claims.release(task_id, token)

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


def test_a_run_that_finds_its_job_succeeded_elsewhere_stores_nothing(
    url: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If two runs got past the claim anyway, the second to finish is dropped, not stored."""
    task_id = str(uuid.uuid4())
    first_result = {"text": "the first run's text"}
    backend = tasks.enhance_task.backend

    def finish_elsewhere(_: object) -> tuple[str, str]:
        backend.mark_as_done(task_id, first_result)  # another run stored while this one ran
        return "Clean text.", "stop"

    rt = runtime_with_claims(url, prefix, monkeypatch, finish_elsewhere)
    try:
        outcome = tasks.enhance_task.apply(kwargs={"text": TEXT}, task_id=task_id)
        assert outcome.state == "IGNORED"
        assert backend.get_result(task_id) == first_result
        assert rt.claims is not None and rt.claims.held() == []
    finally:
        backend.forget(task_id)
        rt.stop()
