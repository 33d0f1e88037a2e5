"""Redis behind the processors' small storage interfaces (result cache, conversations).

Processors never import Redis or Celery; the task layer builds these from the
settings and passes them in. Keys live in the result backend's Redis, under the
queue's ``key_prefix`` so that several deployments can share one DB.
"""

from __future__ import annotations

import logging

import redis

from structsum.config import Settings
from structsum.service.broker import broker_errors

log = logging.getLogger(__name__)

# A cache lookup waits at most this long on Redis: past it the job runs uncached.
CACHE_SOCKET_TIMEOUT_S = 5.0


class RedisResultStore:
    """The result cache in Redis: ``SET key value EX ttl``; an outage only costs a miss.

    The cache saves engine time, it never decides an outcome: a Redis error on
    lookup or store is logged and the job goes on as if nothing were cached.
    """

    def __init__(self, settings: Settings) -> None:
        self._prefix = settings.queue.key_prefix + settings.cache.key_prefix
        self._client = redis.Redis.from_url(
            settings.queue.backend_url,
            socket_timeout=CACHE_SOCKET_TIMEOUT_S,
            socket_connect_timeout=CACHE_SOCKET_TIMEOUT_S,
        )

    def get(self, key: str) -> str | None:
        try:
            value = self._client.get(self._prefix + key)
        except redis.RedisError as exc:
            log.warning("result cache lookup failed (%s); running the job", exc)
            return None
        return _text(value)

    def put(self, key: str, value: str, ttl_s: int) -> None:
        try:
            self._client.set(self._prefix + key, value, ex=ttl_s)
        except redis.RedisError as exc:
            log.warning("result cache store failed (%s); the result is not cached", exc)


class RedisConversationStore:
    """Conversation histories in Redis: one JSON document per id, its TTL renewed per turn.

    Unlike the cache, a history that cannot be read would give a wrong answer, so
    Redis errors surface as ``ServiceUnavailable`` (retryable).
    """

    def __init__(self, settings: Settings) -> None:
        self._prefix = settings.queue.key_prefix + settings.conversation.key_prefix
        self._client = redis.Redis.from_url(settings.queue.backend_url)

    def load(self, conversation_id: str) -> str | None:
        with broker_errors():
            value = self._client.get(self._prefix + conversation_id)
        return _text(value)

    def save(self, conversation_id: str, value: str, ttl_s: int) -> None:
        with broker_errors():
            self._client.set(self._prefix + conversation_id, value, ex=ttl_s)


def _text(value: bytes | str | None) -> str | None:
    """redis-py returns bytes unless the client decodes; either way, a str out."""
    return value.decode() if isinstance(value, bytes) else value
