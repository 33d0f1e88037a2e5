"""The watchdog trips on a dead or hung engine; the breaker on errors in a row."""

from __future__ import annotations

import threading

import pytest

from structsum.config import QueueSettings, Settings
from structsum.service.runtime import WorkerRuntime
from structsum.service.watchdog import (
    ENGINE_DEAD_EXIT_CODE,
    CircuitBreaker,
    ConsumptionWatchdog,
    EngineWatchdog,
)


class ProbeEngine:
    """What the watchdog reads from VllmEngine: ``errored`` and ``progress()``."""

    def __init__(self) -> None:
        self.errored = False
        self.in_flight = 0
        self.produced = 0

    def progress(self) -> tuple[int, int]:
        return self.in_flight, self.produced


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _watchdog(engine: ProbeEngine, clock: Clock, trips: list[str]) -> EngineWatchdog:
    return EngineWatchdog(engine, interval_s=1, stall_s=30, on_trip=trips.append, clock=clock)


def test_a_dead_engine_trips_even_when_idle() -> None:
    engine, clock, trips = ProbeEngine(), Clock(), []
    dog = _watchdog(engine, clock, trips)
    assert dog.check() is None
    engine.errored = True
    assert dog.check() == "the engine core died"


def test_no_output_with_requests_in_flight_is_a_hang() -> None:
    engine, clock, trips = ProbeEngine(), Clock(), []
    dog = _watchdog(engine, clock, trips)
    engine.in_flight = 3
    assert dog.check() is None
    clock.now += 29
    assert dog.check() is None
    clock.now += 2
    reason = dog.check()
    assert reason is not None and "no output for 31 s with 3 request(s)" in reason


def test_progress_or_idleness_is_not_a_hang() -> None:
    engine, clock, trips = ProbeEngine(), Clock(), []
    dog = _watchdog(engine, clock, trips)
    engine.in_flight = 1
    for _ in range(10):  # slow but moving: one output every 20 s
        clock.now += 20
        engine.produced += 1
        assert dog.check() is None
    engine.in_flight = 0
    clock.now += 600  # idle for ten minutes
    assert dog.check() is None
    engine.in_flight = 1  # a new request: the stall clock starts now, not at the last output
    assert dog.check() is None
    clock.now += 10
    assert dog.check() is None


def test_a_hang_that_fails_each_job_by_its_deadline_still_trips() -> None:
    """A hung engine fails every job at its deadline (20 s here, under stall_s 30) and
    the retry comes seconds later: in flight drops to 0 between attempts, but no output
    ever comes, so the stalled time adds up across the gaps."""
    engine, clock, trips = ProbeEngine(), Clock(), []
    dog = _watchdog(engine, clock, trips)
    engine.produced = 5  # the worker answered jobs before the hang
    assert dog.check() is None
    reason = None
    for _attempt in range(3):
        engine.in_flight = 1
        for _ in range(20):
            clock.now += 1
            reason = reason or dog.check()
        engine.in_flight = 0  # JobTimeout: requests cancelled, the retry waits 3 s
        for _ in range(3):
            clock.now += 1
            reason = reason or dog.check()
    assert reason is not None and "no output for 30 s" in reason


def test_a_long_idle_stretch_forgets_an_earlier_slow_request() -> None:
    engine, clock, trips = ProbeEngine(), Clock(), []
    dog = _watchdog(engine, clock, trips)
    engine.in_flight = 1
    clock.now += 25  # a slow prefill, cancelled by its deadline before any output
    assert dog.check() is None
    engine.in_flight = 0
    clock.now += 30  # idle for stall_s
    assert dog.check() is None
    engine.in_flight = 1
    clock.now += 25  # the next job's prefill: 25 s, not 50 s of stall
    assert dog.check() is None


def test_engines_without_probes_never_trip() -> None:
    dog = EngineWatchdog(object(), interval_s=1, stall_s=1, on_trip=lambda _: None)
    assert dog.check() is None


def test_the_thread_trips_once_within_its_interval() -> None:
    engine = ProbeEngine()
    tripped = threading.Event()
    trips: list[str] = []

    def on_trip(reason: str) -> None:
        trips.append(reason)
        tripped.set()

    dog = EngineWatchdog(engine, interval_s=0.05, stall_s=30, on_trip=on_trip)
    dog.start()
    try:
        engine.errored = True
        assert tripped.wait(2)
    finally:
        dog.stop()
    assert trips == ["the engine core died"] and dog.tripped == trips[0]


def test_breaker_opens_after_k_errors_in_a_row() -> None:
    opened: list[str] = []
    breaker = CircuitBreaker(3, opened.append)
    breaker.failure("EngineError")
    breaker.failure("EngineError")
    breaker.success()  # a success in between starts the count again
    breaker.failure("EngineError")
    breaker.failure("EngineError")
    assert opened == [] and not breaker.open
    breaker.failure("EngineOutOfMemory")
    breaker.failure("EngineError")  # opens once
    assert opened == ["3 engine errors in a row (last: EngineOutOfMemory)"]
    assert breaker.open


class Queue:
    """What the consumption watchdog reads: the queue length and the jobs this worker holds."""

    def __init__(self) -> None:
        self.waiting = 0
        self.reserved = 0
        self.down = False

    def length(self) -> int:
        if self.down:
            raise ConnectionError("Redis is down")
        return self.waiting


def _consumption(queue: Queue, clock: Clock) -> ConsumptionWatchdog:
    return ConsumptionWatchdog(
        queued=queue.length,
        reserved=lambda: queue.reserved,
        interval_s=1,
        stall_s=60,
        on_trip=lambda _: None,
        clock=clock,
    )


def test_jobs_queued_and_none_taken_for_the_stall_time_is_a_stopped_consumer() -> None:
    queue, clock = Queue(), Clock()
    dog = _consumption(queue, clock)
    queue.waiting = 5
    assert dog.check() is None
    clock.now += 59
    assert dog.check() is None and dog.stalled_s == 59
    clock.now += 2
    reason = dog.check()
    assert reason is not None and "5 job(s) queued and none taken for 61 s" in reason


def test_a_busy_worker_an_empty_queue_or_a_redis_outage_is_not_a_stall() -> None:
    queue, clock = Queue(), Clock()
    dog = _consumption(queue, clock)
    queue.waiting, queue.reserved = 40, 16  # all threads busy: the rest waits, rightly
    for _ in range(3):
        clock.now += 50
        assert dog.check() is None
    queue.reserved = 0
    clock.now += 50
    assert dog.check() is None  # the clock starts when the worker holds nothing
    queue.down = True  # Redis down: /readyz reports it; the clock starts again after
    clock.now += 50
    assert dog.check() is None
    queue.down = False
    clock.now += 50
    assert dog.check() is None
    clock.now += 11
    assert dog.check() is not None


def test_runtime_trip_stops_consuming_and_exits_70(monkeypatch: pytest.MonkeyPatch) -> None:
    from celery.worker import state

    monkeypatch.setattr(state, "should_stop", None)
    exits: list[float] = []
    settings = Settings(
        queue=QueueSettings(metrics_port=None, watchdog_exit_grace_s=4, breaker_engine_errors=2)
    )
    runtime = WorkerRuntime(settings, exit_later=exits.append)
    runtime.breaker.failure("EngineError")
    assert state.should_stop is None
    runtime.breaker.failure("EngineError")
    assert state.should_stop == ENGINE_DEAD_EXIT_CODE == 70
    assert exits == [4]
    runtime.fail("the engine hangs")  # a second trip changes nothing
    assert exits == [4]
    assert runtime.failure is not None and "engine errors in a row" in runtime.failure
    assert runtime.liveness() == {"engine": runtime.failure, "ok": False}


# Run in a process of its own: kill_descendants() in the test process would also
# kill the suite's shared worker.
_KILL_SCRIPT = """
import signal, subprocess, sys
from structsum.service.watchdog import kill_descendants
busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
stopped = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
stopped.send_signal(signal.SIGSTOP)
print(busy.pid, stopped.pid, kill_descendants(), flush=True)
"""


def test_engine_processes_left_by_a_failure_are_killed_even_when_stopped() -> None:
    """A hung (SIGSTOPped) engine core and its busy worker must not outlive the worker."""
    import subprocess
    import sys

    psutil = pytest.importorskip("psutil")
    done = subprocess.run(
        [sys.executable, "-c", _KILL_SCRIPT], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    busy, stopped, killed = (int(x) for x in done.stdout.split())
    assert killed == 2
    for pid in (busy, stopped):
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"
