"""Every way Redis is unreachable becomes ServiceUnavailable; other errors pass through."""

from __future__ import annotations

import pytest
from kombu.exceptions import OperationalError
from redis.exceptions import ConnectionError as RedisConnectionError

from structsum.config import QueueSettings, Settings
from structsum.errors import ServiceUnavailable
from structsum.service import stats
from structsum.service.broker import broker_errors, queue_app


@pytest.mark.parametrize(
    "outage",
    [
        OperationalError("Error 111 connecting to 127.0.0.1:1"),
        RedisConnectionError("Connection refused"),
        ConnectionRefusedError(111, "refused"),
        RuntimeError(
            "Retry limit exceeded while trying to reconnect to the Celery redis "
            "result store backend."
        ),
    ],
    ids=["kombu", "redis", "socket", "result-consumer"],
)
def test_outages_become_service_unavailable(outage: Exception) -> None:
    with pytest.raises(ServiceUnavailable) as info, broker_errors():
        raise outage
    assert info.value.__cause__ is outage
    assert info.value.retryable


@pytest.mark.parametrize("bug", [RuntimeError("something else"), KeyError("x")])
def test_other_errors_pass_through(bug: Exception) -> None:
    with pytest.raises(type(bug)), broker_errors():
        raise bug


def test_one_app_per_configuration() -> None:
    a = Settings(queue=QueueSettings(broker_url="redis://127.0.0.1:6379/7"))
    b = Settings(queue=QueueSettings(broker_url="redis://127.0.0.1:6379/8"))
    assert queue_app(a) is queue_app(a.model_copy())
    assert queue_app(a) is not queue_app(b)


def test_stats_without_redis_is_service_unavailable() -> None:
    # A configuration of its own, so the cached app tuned here serves no other test.
    queue = QueueSettings(broker_url="redis://127.0.0.1:1/0", key_prefix="stats-no-redis:")
    settings = Settings(queue=queue)
    app = queue_app(settings)
    app.conf.broker_connection_retry = False
    app.conf.broker_connection_max_retries = 0
    app.conf.broker_transport_options = {**app.conf.broker_transport_options, "max_retries": 0}
    with pytest.raises(ServiceUnavailable):
        stats.collect(timeout=0.5, settings=settings)
