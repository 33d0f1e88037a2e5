"""Engine watchdog and circuit breaker: a worker whose engine cannot serve exits.

vLLM notices a dead engine core (``errored``) but only tells a caller that asks,
and it never notices a hung one: ``check_health`` reads the same flag
(vllm#36451). Without a watchdog, an idle worker with a dead engine keeps taking
jobs and burning their retries, and a hung engine blocks every job thread while
``/healthz`` says 200. vLLM's own server polls ``errored`` every few seconds and
exits; this does the same, and also treats "requests in flight, no output for
``stall_s``" as a hang (the progress test proposed for vLLM's /health, #45526).

On a trip the runtime stops consumption, reports unhealthy and exits with
``ENGINE_DEAD_EXIT_CODE`` (70) so a ``Restart=on-failure`` supervisor restarts it;
jobs it held are redelivered (retries published, or the visibility timeout).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

# EX_SOFTWARE: the status a worker exits with when its engine cannot serve.
ENGINE_DEAD_EXIT_CODE = 70

Trip = Callable[[str], None]
Clock = Callable[[], float]


class _PollingWatchdog:
    """Calls ``check()`` every ``interval_s`` on a daemon thread; the first reason it
    returns is kept in ``tripped`` and handed to ``on_trip``, and polling ends."""

    thread_name = "structsum-watchdog"
    label = "watchdog"  # names it in the log line of a failing check

    def __init__(self, *, interval_s: float, stall_s: float, on_trip: Trip, clock: Clock) -> None:
        self._interval_s = interval_s
        self._stall_s = stall_s
        self._on_trip = on_trip
        self._clock = clock
        self._since = clock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self.tripped: str | None = None

    def check(self) -> str | None:
        """Why the worker should exit now, or None."""
        raise NotImplementedError

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=self._interval_s + 1)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                reason = self.check()
            except Exception:  # a failing probe must not kill the watchdog silently
                log.exception("the %s's check failed", self.label)
                continue
            if reason:
                self.tripped = reason
                self._on_trip(reason)
                return


class EngineWatchdog(_PollingWatchdog):
    """Polls an engine's ``errored`` flag and ``progress()``; calls ``on_trip`` once.

    The hang clock adds up the time with requests in flight and no output, across
    short idle gaps: a hung engine fails each job by its deadline, and the job's
    retry arrives seconds later, so "in flight" keeps dropping to zero. Reset on every
    output, and after an idle stretch of ``stall_s`` (a healthy engine that was only
    slow once is not blamed at the next job). Before this, a deadline shorter than
    ``stall_s`` kept a hung engine's worker alive, retrying into it (CI, session 5).
    """

    thread_name = "structsum-watchdog"
    label = "engine watchdog"

    def __init__(
        self,
        engine: Any,
        *,
        interval_s: float,
        stall_s: float,
        on_trip: Trip,
        clock: Clock = time.monotonic,
    ) -> None:
        super().__init__(interval_s=interval_s, stall_s=stall_s, on_trip=on_trip, clock=clock)
        self._engine = engine
        self._last_progress: int | None = None
        self._last_check = self._since
        self._stalled_s = 0.0
        self._idle_s = 0.0

    def check(self) -> str | None:
        """One look at the engine: why it cannot serve, or None while it can."""
        if getattr(self._engine, "errored", False):
            return "the engine core died"
        progress = getattr(self._engine, "progress", None)
        if progress is None:
            return None
        in_flight, produced = progress()
        now = self._clock()
        elapsed, self._last_check = now - self._last_check, now
        if produced != self._last_progress:
            self._last_progress, self._stalled_s, self._idle_s = produced, 0.0, 0.0
            return None
        if in_flight == 0:
            self._idle_s += elapsed
            if self._idle_s >= self._stall_s:
                self._stalled_s = 0.0
            return None
        self._idle_s = 0.0
        self._stalled_s += elapsed
        if self._stalled_s >= self._stall_s:
            return (
                f"the engine hangs: no output for {self._stalled_s:.0f} s "
                f"with {in_flight} request(s) in flight"
            )
        return None


class ConsumptionWatchdog(_PollingWatchdog):
    """Trips when jobs wait in the queue and this worker has taken none for ``stall_s``.

    A worker can survive a Redis restart connected and answering pings, yet never
    consume again (celery#8030, fixed in kombu 5.7; other ways to get there may
    remain). Nothing else notices: its engine is fine and Redis answers. A worker
    that holds no job (``reserved() == 0``) while the queue is not empty is not
    consuming; exiting lets the supervisor start one that does, and loses nothing
    (it holds no job). A Redis that cannot be read resets the clock: an outage is
    what /readyz reports, not a reason to exit.
    """

    thread_name = "structsum-consumption"
    label = "consumption watchdog"

    def __init__(
        self,
        *,
        queued: Callable[[], int],
        reserved: Callable[[], int],
        interval_s: float,
        stall_s: float,
        on_trip: Trip,
        clock: Clock = time.monotonic,
    ) -> None:
        super().__init__(interval_s=interval_s, stall_s=stall_s, on_trip=on_trip, clock=clock)
        self._queued = queued
        self._reserved = reserved
        self.stalled_s = 0.0

    def check(self) -> str | None:
        now = self._clock()
        try:
            waiting = self._queued()
        except Exception as exc:  # Redis down: readiness reports it; no verdict here
            log.debug("consumption watchdog cannot read the queue: %s", exc)
            waiting = 0
        if waiting == 0 or self._reserved() > 0:
            self._since, self.stalled_s = now, 0.0
            return None
        self.stalled_s = now - self._since
        if self.stalled_s >= self._stall_s:
            log.critical(
                "this worker stopped consuming",
                extra={"queued": waiting, "reserved": 0, "stalled_s": round(self.stalled_s)},
            )
            return (
                f"this worker stopped consuming: {waiting} job(s) queued and none taken "
                f"for {self.stalled_s:.0f} s"
            )
        return None


class CircuitBreaker:
    """Opens after ``threshold`` engine errors in a row; any success closes the count."""

    def __init__(self, threshold: int, on_open: Trip) -> None:
        self._threshold = threshold
        self._on_open = on_open
        self._lock = threading.Lock()
        self._errors = 0
        self.open = False

    def success(self) -> None:
        with self._lock:
            self._errors = 0

    def failure(self, code: str) -> None:
        with self._lock:
            self._errors += 1
            opens = not self.open and self._errors >= self._threshold
            if opens:
                self.open = True
        if opens:
            self._on_open(f"{self._threshold} engine errors in a row (last: {code})")


def kill_descendants(*, report: bool = True) -> int:
    """SIGKILL every process this one started (the engine core and its workers); how many.

    A hung engine core (seen: SIGSTOPped) never sees its parent die and cannot be
    shut down politely, and its own worker process keeps spinning; left behind they
    hold the CPU or GPU memory the restarted worker needs. SIGKILL reaches a stopped
    process too. Nothing waits for them here: vLLM's own threads notice the death
    and reap them, and waiting beside them hung a worker's hard exit in CI.
    """
    try:
        import psutil
    except ImportError:  # a worker always has it (vLLM needs it); nothing to kill without
        return 0
    children = psutil.Process().children(recursive=True)
    for child in children:
        with contextlib.suppress(psutil.Error):
            child.kill()
    if report and children:
        log.warning("killed %d engine process(es) left by a failed engine", len(children))
    return len(children)


def hard_exit_later(seconds: float, status: int = ENGINE_DEAD_EXIT_CODE) -> threading.Timer:
    """Exit the process after ``seconds`` if the warm shutdown has not finished by then.

    A warm shutdown waits for the job threads; behind a hung engine they wait until
    their deadlines. ``os._exit`` skips that (and atexit handlers): the engine core
    processes are killed first and the supervisor starts a fresh worker.
    """
    import os

    def _exit() -> None:
        log.critical("warm shutdown did not finish in %.0f s; exiting with %d", seconds, status)
        logging.shutdown()
        kill_descendants(report=False)  # after the last log line: nothing may block _exit
        os._exit(status)

    timer = threading.Timer(seconds, _exit)
    timer.name = "structsum-hard-exit"
    timer.daemon = True
    timer.start()
    return timer
