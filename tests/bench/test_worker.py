"""A benchmark's own worker: on the caller's queue, refused loudly when it never answers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from structsum.bench import worker as worker_module
from structsum.bench.worker import WorkerProcess, worker_env
from structsum.config import QueueSettings, Settings
from structsum.errors import WorkerNotReady

SETTINGS = Settings(
    queue=QueueSettings(broker_url="redis://:s3cret@127.0.0.1:6379/7", key_prefix="bench:")
)


def fake_app(answers: list[dict[str, str]]) -> object:
    return SimpleNamespace(control=SimpleNamespace(ping=lambda timeout, destination=None: answers))


def test_the_worker_gets_the_callers_queue() -> None:
    env = worker_env(SETTINGS, {"PATH": "/bin", "STRUCTSUM_QUEUE__RESULT_BACKEND": "redis://x/1"})
    assert env["STRUCTSUM_QUEUE__BROKER_URL"] == "redis://:s3cret@127.0.0.1:6379/7"
    assert env["STRUCTSUM_QUEUE__KEY_PREFIX"] == "bench:"
    assert env["STRUCTSUM_QUEUE__QUEUE_NAME"] == SETTINGS.queue.queue_name
    assert "STRUCTSUM_QUEUE__RESULT_BACKEND" not in env  # the caller uses the broker for results
    assert env["PATH"] == "/bin"


def test_a_worker_that_exits_is_reported_with_its_log(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(worker_module, "build_app", lambda settings: fake_app([]))
    process = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    worker = WorkerProcess(process, tmp_path / "worker.log")
    with pytest.raises(WorkerNotReady, match="exited with 3") as raised:
        worker.wait_ready(SETTINGS, timeout_s=60.0)
    assert raised.value.details["log"] == str(tmp_path / "worker.log")
    assert "s3cret" not in str(raised.value)


def test_a_ready_worker_is_stopped_with_its_group(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(worker_module, "build_app", lambda settings: fake_app([{"w": "pong"}]))
    process = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True
    )
    with WorkerProcess(process, tmp_path / "worker.log") as worker:
        worker.wait_ready(SETTINGS, timeout_s=5.0)
        assert process.poll() is None
    assert process.returncode == -15  # SIGTERM: a warm shutdown


def test_readiness_pings_the_node_name_the_worker_expands(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`--hostname w0@%h` answers as w0@<host>: a ping for the literal name never returns."""
    import socket

    asked: list[list[str] | None] = []

    def ping(timeout: float, destination: list[str] | None = None) -> list[dict[str, str]]:
        asked.append(destination)
        return [{destination[0]: "pong"}] if destination else []

    app = SimpleNamespace(control=SimpleNamespace(ping=ping))
    monkeypatch.setattr(worker_module, "build_app", lambda settings: app)
    process = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True
    )
    with WorkerProcess(process, tmp_path / "worker.log", hostname="w0@%h") as worker:
        worker.wait_ready(SETTINGS, timeout_s=5.0)
    assert asked == [[f"w0@{socket.gethostname()}"]]


def test_readiness_rides_out_a_redis_restart(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A ping that fails because Redis is restarting is a 'not yet', not a crash."""
    import redis

    pings: list[int] = []

    def ping(timeout: float, destination: list[str] | None = None) -> list[dict[str, str]]:
        pings.append(1)
        if len(pings) == 1:
            raise redis.ConnectionError("Connection closed by server.")
        return [{"w": "pong"}]

    app = SimpleNamespace(control=SimpleNamespace(ping=ping))
    monkeypatch.setattr(worker_module, "build_app", lambda settings: app)
    monkeypatch.setattr(worker_module, "PING_TIMEOUT_S", 0.01)
    process = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True
    )
    with WorkerProcess(process, tmp_path / "worker.log") as worker:
        worker.wait_ready(SETTINGS, timeout_s=5.0)
    assert len(pings) == 2
