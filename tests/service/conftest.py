"""A real worker process on a private Redis DB, started once for the service tests.

The worker is `python -m structsum.commands.service worker` (what `structsum worker`
runs), with the bundled model, in its own process group so that a SIGKILL takes
its vLLM engine processes with it. Run these tests under
`flock /tmp/structsum-engine.lock`: each worker start loads an engine.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from structsum.bench.worker import WorkerProcess
from structsum.bench.worker import worker_env as bench_worker_env
from structsum.config import BudgetSettings, QueueSettings, Settings
from structsum.errors import WorkerNotReady

REDIS = "redis://127.0.0.1:6379"
CLAIM_KEY = "structsum-test-claim"
# An engine start takes 30-90 s on the 2-core box (longer on a cold compile cache).
WORKER_START_TIMEOUT_S = 240.0
# Small enough that the oversize test sends a modest payload.
TEST_MAX_INPUT_CHARS = 20_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def redis_db() -> Iterator[int]:
    """An empty Redis DB claimed for this run (SET NX), flushed before and after."""
    for db in range(1, 16):
        client = redis.Redis.from_url(f"{REDIS}/{db}")
        if client.dbsize() == 0 and client.set(CLAIM_KEY, os.getpid(), nx=True):
            break
    else:
        pytest.fail("no empty Redis DB in 1..15 for the service tests")
    try:
        yield db
    finally:
        client.flushdb()
        client.close()


@pytest.fixture(scope="session")
def service_settings(redis_db: int) -> Settings:
    """What the client side of the tests uses; the worker gets the same via env."""
    return Settings(
        queue=QueueSettings(
            broker_url=f"{REDIS}/{redis_db}",
            key_prefix=f"sstest{os.getpid()}:",
            metrics_port=free_port(),
            stats_interval_s=2.0,
        ),
        budget=BudgetSettings(max_input_chars=TEST_MAX_INPUT_CHARS),
    )


def worker_env(settings: Settings, **queue_overrides: object) -> dict[str, str]:
    """The worker's environment: the queue connection plus what the tests set."""
    queue = settings.queue.model_copy(update=queue_overrides)
    env = bench_worker_env(settings.model_copy(update={"queue": queue}))
    env.update(
        {
            "STRUCTSUM_QUEUE__METRICS_PORT": str(queue.metrics_port or 0),
            "STRUCTSUM_QUEUE__STATS_INTERVAL_S": str(queue.stats_interval_s),
            "STRUCTSUM_QUEUE__VISIBILITY_TIMEOUT_S": str(queue.visibility_timeout_s),
            "STRUCTSUM_QUEUE__WORKER_CONCURRENCY": str(queue.worker_concurrency),
            "STRUCTSUM_BUDGET__MAX_INPUT_CHARS": str(settings.budget.max_input_chars),
        }
    )
    return env


def start_worker(
    settings: Settings,
    log_dir: Path,
    name: str,
    env: dict[str, str] | None = None,
    **queue_overrides: object,
) -> WorkerProcess:
    """Start a worker and wait until it answers a ping (its engine is loaded by then).

    ``env`` adds STRUCTSUM_... variables for settings ``worker_env`` does not pass.
    """
    queue = settings.queue.model_copy(update=queue_overrides)
    settings = settings.model_copy(update={"queue": queue})
    worker = WorkerProcess.start(
        settings,
        log_path=log_dir / f"{name}.log",
        hostname=f"{name}@structsum-test",
        env={**worker_env(settings), **(env or {})},
        wait=False,
    )
    try:
        worker.wait_ready(settings, WORKER_START_TIMEOUT_S)
    except WorkerNotReady as exc:
        pytest.fail(f"{exc}:\n{worker.log_tail()}")
    return worker


# Two templates a team brings (issue 16): older drafts, no policy.toml (the profile's
# default policy applies). The shared worker serves them from STRUCTSUM_TEMPLATES_DIR.
BYOS_SCHEMAS: dict[str, dict[str, object]] = {
    "byos_draft04": {
        "$schema": "http://json-schema.org/draft-04/schema#",
        "id": "https://example.com/byos/note.json",
        "title": "Meeting note",
        "type": "object",
        "definitions": {"item": {"type": "string", "minLength": 1}},
        "properties": {
            "topic": {"type": "string", "description": "What the meeting was about"},
            "attendees": {"type": "array", "items": {"$ref": "#/definitions/item"}},
            "duration_min": {"type": "integer", "minimum": 0, "exclusiveMinimum": True},
        },
        "required": ["topic", "attendees"],
    },
    "byos_draft07": {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "Decision record",
        "type": "object",
        "definitions": {"owner": {"type": "string", "description": "Who acts on it"}},
        "properties": {
            "decision": {"type": "string", "description": "What was decided"},
            "owner": {"$ref": "#/definitions/owner"},
            "pair": {"type": "array", "items": [{"type": "string"}], "additionalItems": False},
        },
        "required": ["decision", "owner"],
    },
}


@pytest.fixture(scope="session")
def byos_templates_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The BYOS_SCHEMAS as templates, made as `structsum templates add` makes them."""
    from structsum.processors.scaffold import write_template

    root = tmp_path_factory.mktemp("byos-templates")
    for template_id, schema in BYOS_SCHEMAS.items():
        write_template(root / template_id, schema, prompt=None, kind="cpu")
        (root / template_id / "policy.toml").unlink()
    return root


class SharedWorker:
    """The worker the service tests share, started again if a test killed it.

    An engine start is the expensive part, so tests share one worker; a test that
    kills it (the SIGKILL redelivery test) costs the next test a fresh start
    instead of failing it, whatever order the tests run in.
    """

    def __init__(
        self, settings: Settings, log_dir: Path, env: dict[str, str] | None = None
    ) -> None:
        self._settings = settings
        self._log_dir = log_dir
        self._env = env
        self._starts = 0
        self._current: WorkerProcess | None = None

    def get(self) -> WorkerProcess:
        current = self._current
        if current is None or current.process.poll() is not None:
            self._starts += 1
            current = start_worker(
                self._settings, self._log_dir, f"shared{self._starts}", env=self._env
            )
            self._current = current
        return current

    def stop(self) -> None:
        if self._current is not None:
            self._current.stop()
            self._current = None


@pytest.fixture(scope="session")
def shared_worker(
    service_settings: Settings,
    tmp_path_factory: pytest.TempPathFactory,
    byos_templates_dir: Path,
) -> Iterator[SharedWorker]:
    shared = SharedWorker(
        service_settings,
        tmp_path_factory.mktemp("workers"),
        env={"STRUCTSUM_TEMPLATES_DIR": str(byos_templates_dir)},
    )
    yield shared
    shared.stop()


@pytest.fixture
def worker(shared_worker: SharedWorker) -> WorkerProcess:
    """A running worker with its engine loaded (the shared one, restarted if it died)."""
    return shared_worker.get()
