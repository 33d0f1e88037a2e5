"""Recovery end to end: Redis crash, engine death while busy, worker SIGKILL, a stopped consumer.

A private redis-server (own port and directory, AOF on) and real worker processes
with the bundled model. Worker starts are the expensive part, so the tests run as
one story in file order over three workers; each test starts a worker if the one
before left none, so any of them also runs alone (``-k``):

1. w1 serves 20 jobs while Redis is kill -9'd and restarted: none lost, w1
   consumes again, none runs to success twice.
2. w1's engine core is killed with 16 jobs in flight: w1 exits 70 within
   seconds, takes no job after the death, and the 16 are counted as witnesses.
3. w2 picks those jobs up (one of them, already a witness of an earlier engine
   death, fails as PoisonSuspected) and is SIGKILLed with 16 in flight, the
   visibility timeout far shorter than a job: w3 finishes every job, and no job
   runs to success twice (per task id, across the three workers' logs).
4. w3 stops consuming (its consumer is cancelled, as a worker left catatonic by
   a Redis restart would be): the consumption watchdog makes it exit 70.

Run under `flock /tmp/structsum-engine.lock`.
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
import redis

from structsum import client
from structsum.bench.faults import PrivateRedis, engine_core
from structsum.config import QueueSettings, Settings
from structsum.errors import PoisonSuspected
from structsum.models import EnhancementResult
from structsum.service.watchdog import ENGINE_DEAD_EXIT_CODE
from tests.service.conftest import WorkerProcess, free_port, start_worker

pytestmark = [pytest.mark.service, pytest.mark.engine]
# Passed on their branch, failed in the first full run after merging issues 13-17
# (duplicate successes after a Redis crash, a Redis connection closed mid-test, a
# consumption-stall exit past its deadline): left for the next session, see its notes.
MERGE_FAILURE = "fails since the session-3 merge; issue 17 stays open (closing note)"

NOTE = "Alice: so um we ship v{i} on Friday. Bob: ok I write the release notes by Thursday."
VISIBILITY_S = 3  # far shorter than a job: every running job gets redelivered copies
CLAIM_TTL_S = 10  # longer than the Redis outage of the first test
STALL_S = 15
GRACE_S = 5
RECOVERY_ENV = {
    # a 3 s visibility timeout is below any deadline: the startup check only warns
    "STRUCTSUM_QUEUE__DEADLINE_CHECK": "warn",
    "STRUCTSUM_QUEUE__REDELIVERY_SWEEP_S": "1",
    "STRUCTSUM_QUEUE__CLAIM_TTL_S": str(CLAIM_TTL_S),
    "STRUCTSUM_QUEUE__WATCHDOG_INTERVAL_S": "1",
    "STRUCTSUM_QUEUE__WATCHDOG_EXIT_GRACE_S": str(GRACE_S),
    "STRUCTSUM_QUEUE__CONSUMPTION_STALL_S": str(STALL_S),
    "STRUCTSUM_QUEUE__WARM_GRAMMARS": "false",
}
JOB_TIMEOUT_S = 400.0
LOG_CATCH_UP_S = 10.0
EXIT_TIMEOUT_S = 1 + GRACE_S + 30
SUCCEEDED = re.compile(r"\[([0-9a-f-]{36})\] succeeded in")
RECEIVED = re.compile(r"\[([0-9a-f-]{36})\] received")


class Story:
    """The private Redis, the settings every worker shares, and the workers so far."""

    def __init__(self, store: PrivateRedis, log_dir: Path) -> None:
        self.redis = store
        self.log_dir = log_dir
        self.settings = Settings(
            queue=QueueSettings(
                broker_url=store.url,
                key_prefix="rec:",
                metrics_port=free_port(),
                visibility_timeout_s=VISIBILITY_S,
                stats_interval_s=5.0,
            )
        )
        self.workers: list[WorkerProcess] = []
        self.jobs: list[str] = []  # every job id the story enqueued
        self.poisoned: str | None = None  # the job that witnessed two engine deaths

    def worker(self) -> WorkerProcess:
        """The running worker, or a new one (w1, w2, ...)."""
        if self.workers and self.workers[-1].process.poll() is None:
            return self.workers[-1]
        name = f"w{len(self.workers) + 1}"
        worker = start_worker(self.settings, self.log_dir, name, env=RECOVERY_ENV)
        self.workers.append(worker)
        return worker

    def enqueue(self, count: int) -> list[client.JobHandle[EnhancementResult]]:
        handles = [
            client.enqueue_enhancement(NOTE.format(i=len(self.jobs) + i), settings=self.settings)
            for i in range(count)
        ]
        self.jobs += [h.id for h in handles]
        return handles

    def store(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis.url)

    def trail(self, task_ids: Iterable[str]) -> str:
        """Every worker's log lines about these jobs, to tell how a job ran twice."""
        wanted = list(task_ids)
        lines = [
            f"{n}: {line}"
            for n, worker in enumerate(self.workers, 1)
            for line in worker.log_text().splitlines()
            if any(t in line for t in wanted)
        ]
        return "\n".join(lines)

    def successes(self) -> collections.Counter[str]:
        """Runs that ended in success, per task id, over every worker's log."""
        found: collections.Counter[str] = collections.Counter()
        for worker in self.workers:
            found.update(SUCCEEDED.findall(worker.log_text()))
        return found


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Story]:
    directory = tmp_path_factory.mktemp("recovery")
    redis_dir = Path(f"/tmp/structsum-rec-{os.getpid()}")
    store = PrivateRedis(redis_dir, aof=True).start()
    story = Story(store, directory)
    try:
        yield story
    finally:
        for worker in story.workers:
            worker.kill()
        store.stop()
        shutil.rmtree(redis_dir, ignore_errors=True)


def wait_in_flight(worker: WorkerProcess, count: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while (worker.metric("structsum_jobs_in_flight") or 0) < count:
        assert worker.process.poll() is None, worker.log_tail()
        assert time.monotonic() < deadline, f"never {count} in flight:\n{worker.log_tail()}"
        time.sleep(0.2)


def wait_exit(worker: WorkerProcess, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while worker.process.poll() is None:
        assert time.monotonic() < deadline, f"still running:\n{worker.log_tail()}"
        time.sleep(0.2)
    return int(worker.process.returncode)


def test_a_redis_crash_loses_no_queued_job_and_the_worker_consumes_again(story: Story) -> None:
    worker = story.worker()
    jobs = story.enqueue(20)  # 16 run, 4 wait in the queue
    wait_in_flight(worker, 8)
    time.sleep(1.5)  # AOF everysec: the enqueues are on disk
    story.redis.restart(down_s=2)
    for job in jobs:
        assert job.result(JOB_TIMEOUT_S).text.strip()
    # the worker reconnected and still consumes: new jobs after the restart succeed
    for job in story.enqueue(2):
        assert job.result(JOB_TIMEOUT_S).text.strip()
    assert worker.process.poll() is None
    twice = {k: n for k, n in story.successes().items() if n > 1}
    assert not twice, story.trail(twice)


def test_an_engine_killed_while_busy_stops_the_worker_before_it_takes_another_job(
    story: Story,
) -> None:
    worker = story.worker()
    queue = story.settings.queue
    # One job already witnessed an engine death elsewhere: this one makes two.
    poisoned = str(uuid.uuid4())
    store = story.store()
    store.hincrby(f"{queue.key_prefix}structsum-engine-failures", poisoned, 1)
    app = client.client_app(story.settings)
    app.send_task("structsum.enhance", kwargs={"text": NOTE.format(i="poison")}, task_id=poisoned)
    story.jobs.append(poisoned)
    story.enqueue(19)
    wait_in_flight(worker, 16)
    story.poisoned = poisoned
    received_before = set(RECEIVED.findall(worker.log_text()))
    engine_core(worker.process.pid).kill()
    killed = time.monotonic()
    status = wait_exit(worker, EXIT_TIMEOUT_S)
    assert status == ENGINE_DEAD_EXIT_CODE, worker.log_tail()
    assert time.monotonic() - killed < EXIT_TIMEOUT_S
    # the watchdog or a job (whichever saw it first) reported the death
    assert re.search(r"the engine (core )?died; this worker stops taking jobs", worker.log_text())
    # no job was taken after the death (its own retries excepted: same ids)
    assert set(RECEIVED.findall(worker.log_text())) <= received_before
    failures = {
        k.decode(): int(v)
        for k, v in store.hgetall(f"{queue.key_prefix}structsum-engine-failures").items()
    }
    witnessed = {k: v for k, v in failures.items() if k in received_before}
    # every job in flight at the death (16, less any that finished in between)
    assert len(witnessed) >= 12, witnessed
    assert failures.pop(poisoned) == 2
    assert set(failures.values()) == {1}


def test_a_sigkilled_worker_with_16_in_flight_runs_every_job_exactly_once(
    story: Story,
) -> None:
    worker = story.worker()  # picks up the jobs the dead engine left, if any
    story.enqueue(4 if story.poisoned else 20)
    wait_in_flight(worker, 16)
    time.sleep(VISIBILITY_S + 3)  # the running jobs outlive the visibility timeout
    worker.kill()
    replacement = story.worker()
    outcome: dict[str, str] = {}
    for task_id in story.jobs:
        handle = client.job(task_id, settings=story.settings)
        try:
            handle.result(JOB_TIMEOUT_S)
            outcome[task_id] = "SUCCESS"
        except PoisonSuspected:
            outcome[task_id] = "PoisonSuspected"
    # Celery stores the outcome before it logs "succeeded": give the last line a moment.
    succeeded = {k for k, v in outcome.items() if v == "SUCCESS"}
    logged_by = time.monotonic() + LOG_CATCH_UP_S
    while not succeeded <= set(story.successes()) and time.monotonic() < logged_by:
        time.sleep(0.2)
    successes = story.successes()
    twice = {k: n for k, n in successes.items() if n > 1}
    assert not twice, story.trail(twice)
    poisoned = [k for k, v in outcome.items() if v == "PoisonSuspected"]
    assert poisoned == ([story.poisoned] if story.poisoned else [])
    assert all(successes[k] == 0 for k in poisoned)
    assert all(successes[k] == 1 for k, v in outcome.items() if v == "SUCCESS")
    assert RECEIVED.search(replacement.log_text())  # the replacement did run jobs


def test_a_worker_that_stops_consuming_exits(story: Story) -> None:
    worker = story.worker()
    queue = story.settings.queue
    app = client.client_app(story.settings)
    app.control.cancel_consumer(queue.queue_name, destination=[worker.hostname], reply=True)
    story.enqueue(1)
    stopped = time.monotonic()
    status = wait_exit(worker, STALL_S + EXIT_TIMEOUT_S)
    assert status == ENGINE_DEAD_EXIT_CODE, worker.log_tail()
    assert time.monotonic() - stopped >= STALL_S - 1
    assert "this worker stopped consuming" in worker.log_text()
    # it held no job: the one queued is still there for the next worker
    assert story.store().llen(f"{queue.key_prefix}{queue.queue_name}") == 1
