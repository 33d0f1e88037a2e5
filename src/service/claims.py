"""One run of a job at a time, and the engine failures each job has witnessed.

Celery over Redis redelivers a job that is still unacknowledged when the
visibility timeout passes, whether or not the worker running it is alive
(kombu's ``restore_visible`` does not ask). Celery's own guard
(``worker_deduplicate_successful_tasks``) only skips a copy whose job already
succeeded; a copy of a job still running elsewhere would run beside it and both
would succeed. So every run first takes a claim on its task id in Redis:

- ``SET NX`` with a short TTL (``claim_ttl_s``), renewed by one heartbeat thread
  per worker while the job runs, released after Celery stored the outcome
  (``task_postrun``). A worker that is SIGKILLed stops renewing: its claims expire
  within the TTL and the redelivered copies can run.
- A copy that finds the claim held waits (polling) until the holder finishes or
  its claim expires; if the job succeeded meanwhile, the copy is dropped.

The same store counts, per task id, the engine failures (death, hang) a job was
in flight for. A job that took two engines down is likely what kills them (a
poison request, vllm#43920): it fails as ``PoisonSuspected`` instead of running
a third time and taking the jobs batched with it along.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import redis

from structsum.errors import JobTimeout, ServiceUnavailable

log = logging.getLogger(__name__)

# Seconds between two looks at a claim held by another run.
CLAIM_POLL_S = 1.0
# Seconds a claim-store call may take before the store counts as unreachable.
CLAIM_SOCKET_TIMEOUT_S = 5.0

# Delete / extend a claim only while it is still ours (its token), atomically.
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""
# 1: still ours, extended; 2: it had expired (Redis was down, or restarted from an older
# AOF) and nobody took it, so it is ours again; 0: another run holds it now.
_RENEW = """
local holder = redis.call('get', KEYS[1])
if holder == ARGV[1] then redis.call('pexpire', KEYS[1], ARGV[2]) return 1 end
if not holder then redis.call('set', KEYS[1], ARGV[1], 'px', ARGV[2]) return 2 end
return 0
"""


class JobClaims:
    """Claims on the jobs this worker runs, their heartbeat, and the witness counts."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str,
        ttl_s: float,
        witness_ttl_s: int,
        owner: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._redis = client
        self._prefix = prefix
        self._ttl_ms = max(1, int(ttl_s * 1000))
        self._witness_ttl_s = witness_ttl_s
        self._owner = owner or f"{socket.gethostname()}:{os.getpid()}"
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._held: dict[str, str] = {}  # task id -> token of this run
        self._release = client.register_script(_RELEASE)
        self._renew = client.register_script(_RENEW)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> JobClaims:
        client = redis.Redis.from_url(
            url,
            socket_connect_timeout=CLAIM_SOCKET_TIMEOUT_S,
            socket_timeout=CLAIM_SOCKET_TIMEOUT_S,
            decode_responses=True,
        )
        return cls(client, **kwargs)

    def claim_key(self, task_id: str) -> str:
        return f"{self._prefix}structsum-claim-{task_id}"

    @property
    def witness_key(self) -> str:
        return f"{self._prefix}structsum-engine-failures"

    # --- claims -------------------------------------------------------------------------

    def acquire(self, task_id: str, *, wait_s: float, done: Callable[[], bool]) -> str | None:
        """Take the claim on ``task_id``: this run's token, or None if the job finished
        while we waited.

        Waits while another run holds it (at most ``wait_s``: the holder's deadline
        plus one TTL, after which the holder is gone or past its own deadline) and
        raises ``JobTimeout`` (retryable) past that. Two copies of one job can sit in
        one worker; the token is what tells their releases apart.
        """
        token = f"{self._owner}:{uuid.uuid4().hex}"
        key = self.claim_key(task_id)
        give_up = self._clock() + wait_s
        waited = False
        while True:
            with _unreachable():
                taken = self._redis.set(key, token, nx=True, px=self._ttl_ms)
            if taken:
                with self._lock:
                    self._held[task_id] = token
                if waited:
                    log.info("job %s: the claim is free again; running it", task_id)
                return token
            if not waited:
                with _unreachable():
                    holder = self._redis.get(key)
                log.warning("job %s is running elsewhere (%s); this copy waits", task_id, holder)
                waited = True
            if done():
                log.warning("job %s finished elsewhere; this redelivered copy is dropped", task_id)
                return None
            if self._clock() >= give_up:
                raise JobTimeout(
                    f"job {task_id} is still claimed by another run after {wait_s:.0f} s",
                    {"task_id": task_id, "waited_s": wait_s},
                )
            self._sleep(CLAIM_POLL_S)

    def release(self, task_id: str, token: str) -> None:
        """Drop the claim that ``acquire`` gave this run (its ``token``).

        A no-op for any other run of the job: a copy that failed while it waited (Redis
        down, say) must not free the claim of the copy still running in this worker,
        or a third copy would start beside it.
        """
        with self._lock:
            if self._held.get(task_id) != token:
                return
            del self._held[task_id]
        try:
            self._release(keys=[self.claim_key(task_id)], args=[token])
        except redis.RedisError as exc:  # it expires on its own within the TTL
            log.warning("could not release the claim on job %s: %s", task_id, exc)

    def held(self) -> list[str]:
        with self._lock:
            return list(self._held)

    def renew(self) -> None:
        """Extend every claim this worker holds by one TTL; take back the ones that expired.

        A Redis outage longer than the TTL (or a restart from an AOF that missed the
        last renewals) expires the claims of jobs that are still running. Taking them
        back at the first beat after the outage closes the window in which a
        redelivered copy could start beside the running job.
        """
        with self._lock:
            held = dict(self._held)
        for task_id, token in held.items():
            try:
                ours = self._renew(keys=[self.claim_key(task_id)], args=[token, self._ttl_ms])
            except redis.RedisError as exc:
                log.warning("could not renew the claim on job %s: %s", task_id, exc)
                continue
            if ours == 2:
                log.warning("the claim on job %s had expired while it ran; taken back", task_id)
            elif not ours:
                log.error(
                    "the claim on job %s was taken by another run while this one ran (Redis "
                    "down longer than the claim TTL?); the two copies run side by side",
                    task_id,
                )

    def start(self) -> None:
        """The heartbeat: renew three times per TTL, so one missed beat loses nothing."""
        if self._thread is not None:
            return
        interval = self._ttl_ms / 1000 / 3

        def beat() -> None:
            while not self._stop.wait(interval):
                self.renew()

        self._thread = threading.Thread(target=beat, name="structsum-claims", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=self._ttl_ms / 1000)

    # --- engine failures witnessed ------------------------------------------------------

    def record_witnesses(self) -> dict[str, int]:
        """Count one engine failure for every job in flight now; their new counts.

        Called when this worker's engine died or hung, before it exits. The hash
        expires ``witness_ttl_s`` after its last write (as results do).
        """
        held = self.held()
        if not held:
            return {}
        try:
            pipe = self._redis.pipeline()
            for task_id in held:
                pipe.hincrby(self.witness_key, task_id, 1)
            pipe.expire(self.witness_key, self._witness_ttl_s)
            counts = pipe.execute()[: len(held)]
        except redis.RedisError as exc:
            log.error("could not record the engine failure for %d job(s): %s", len(held), exc)
            return {}
        return {task_id: int(n) for task_id, n in zip(held, counts, strict=True)}

    def witnessed(self, task_id: str) -> int:
        """Engine failures this job was in flight for (0 if none, or the store is down)."""
        try:
            value = self._redis.hget(self.witness_key, task_id)
        except redis.RedisError:
            return 0
        return int(value or 0)

    def close(self) -> None:
        self.stop()
        with contextlib.suppress(redis.RedisError):
            self._redis.close()


@contextlib.contextmanager
def _unreachable() -> Iterator[None]:
    try:
        yield
    except redis.RedisError as exc:
        raise ServiceUnavailable(f"cannot reach Redis to claim the job: {exc}") from exc
