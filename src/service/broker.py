"""Reaching Redis: one Celery app per queue configuration, one mapping of its failures.

The client (enqueue, results) and `structsum stats` both talk to the broker and
the result backend; whatever way Redis is unreachable, they raise the same
``ServiceUnavailable``. Kept in the service layer so that both can use it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

from celery import Celery
from kombu.exceptions import OperationalError
from redis.exceptions import RedisError

from structsum.config import Settings, get_settings
from structsum.errors import ServiceUnavailable
from structsum.service.app import build_app

# What kombu, redis-py and the socket layer raise when Redis is down or unreachable.
CONNECTION_ERRORS = (OperationalError, RedisError, ConnectionError)


@lru_cache(maxsize=8)
def _app_for(settings_json: str) -> Celery:
    return build_app(Settings.model_validate_json(settings_json))


def queue_app(settings: Settings | None = None) -> Celery:
    """The Celery app for these settings, built once per distinct configuration."""
    settings = settings or get_settings()
    return _app_for(settings.model_dump_json())


def _backend_gave_up(exc: RuntimeError) -> bool:
    """Celery's Redis result consumer raises a bare RuntimeError after its reconnect retries."""
    return "result store" in str(exc)


@contextmanager
def broker_errors() -> Iterator[None]:
    """Turn an unreachable broker or result backend into ``ServiceUnavailable``."""
    try:
        yield
    except CONNECTION_ERRORS as exc:
        raise ServiceUnavailable(f"cannot reach the broker/result backend: {exc}") from exc
    except RuntimeError as exc:
        if not _backend_gave_up(exc):
            raise
        raise ServiceUnavailable(f"cannot reach the result backend: {exc}") from exc
