"""Worker start checks: a deadline that outlives the visibility timeout; unsafe Redis."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from structsum.config import QueueSettings, Settings
from structsum.service import startup
from structsum.service.startup import check_startup, deadline_problem, redis_problems


class Refused(Exception):
    pass


def _settings(**queue: Any) -> Settings:
    return Settings(queue=QueueSettings.model_validate({"redis_check": "off", **queue}))


def test_defaults_leave_room_under_the_visibility_timeout() -> None:
    assert deadline_problem(Settings()) is None


def test_a_deadline_that_outlives_the_visibility_timeout_refuses_to_start() -> None:
    settings = _settings(visibility_timeout_s=600, job_deadline_s=400, deadline_margin_s=200)
    with pytest.raises(Refused, match="must be below visibility_timeout_s"):
        check_startup(settings, refuse=Refused)
    check_startup(
        _settings(visibility_timeout_s=601, job_deadline_s=400, deadline_margin_s=200),
        refuse=Refused,
    )


def test_the_deadline_check_can_be_only_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    settings = _settings(visibility_timeout_s=5, deadline_check="warn")
    check_startup(settings, refuse=Refused)
    assert "must be below visibility_timeout_s" in caplog.text


@pytest.mark.parametrize(
    ("config", "problems"),
    [
        ({"appendonly": "yes", "save": "", "maxmemory-policy": "noeviction"}, 0),
        ({"appendonly": "no", "save": "3600 1", "maxmemory-policy": "noeviction"}, 0),
        ({"appendonly": "no", "save": "", "maxmemory-policy": "noeviction"}, 1),
        ({"appendonly": "yes", "save": "", "maxmemory-policy": "allkeys-lru"}, 1),
        ({"appendonly": "no", "save": " ", "maxmemory-policy": "volatile-lru"}, 2),
    ],
)
def test_redis_problems(config: dict[str, str], problems: int) -> None:
    assert len(redis_problems(config)) == problems


def test_unsafe_redis_warns_or_refuses(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    unsafe = {"appendonly": "no", "save": "", "maxmemory-policy": "noeviction"}
    monkeypatch.setattr(startup, "read_redis_config", lambda url: unsafe)
    check_startup(_settings(redis_check="warn"), refuse=Refused)
    assert "persists nothing" in caplog.text
    with pytest.raises(Refused, match="persists nothing"):
        check_startup(_settings(redis_check="refuse"), refuse=Refused)


def test_an_unreachable_config_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    # port 1 refuses at once; managed Redis that forbids CONFIG ends the same way
    unreachable = _settings(redis_check="refuse", broker_url="redis://127.0.0.1:1/0")
    check_startup(unreachable, refuse=Refused)
    assert "cannot read the Redis configuration" in caplog.text


@pytest.mark.service
def test_a_worker_that_cannot_start_exits_78_without_taking_a_job(
    service_settings: Settings, tmp_path: Path
) -> None:
    """A real worker whose metrics port is taken: it must not consume engine-less."""
    import socket
    import subprocess
    import sys

    from tests.service.conftest import worker_env

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = worker_env(service_settings, metrics_port=taken.getsockname()[1])
        log_path = tmp_path / "worker.log"
        with log_path.open("wb") as log:
            status = subprocess.run(
                [sys.executable, "-m", "structsum.commands.service", "worker"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=120,
                check=False,
            ).returncode
    text = log_path.read_text(errors="replace")
    assert status == 78, text[-3000:]
    assert "this worker cannot start" in text and "Address already in use" in text
    assert "succeeded in" not in text and "received" not in text
