"""What `structsum stats` reports, gathered through the broker (no metrics port needed)."""

from __future__ import annotations

from typing import Any

from structsum.config import Settings, get_settings
from structsum.service.broker import broker_errors, queue_app


def collect(*, timeout: float, settings: Settings | None = None) -> dict[str, Any]:
    """Per worker: pool, concurrency, structsum counters; plus the queue's length."""
    import redis

    settings = settings or get_settings()
    queue = settings.queue
    app = queue_app(settings)
    with broker_errors():
        pool_stats = app.control.inspect(timeout=timeout).stats() or {}
        replies = app.control.broadcast("structsum_stats", reply=True, timeout=timeout) or []
        client = redis.Redis.from_url(queue.broker_url)
        try:
            queued = int(client.llen(queue.key_prefix + queue.queue_name))
        finally:
            client.close()

    workers: dict[str, dict[str, Any]] = {}
    for name, info in pool_stats.items():
        pool = info.get("pool") or {}
        workers[name] = {
            # "celery.concurrency.thread:TaskPool" -> "thread"
            "pool": str(pool.get("implementation", "?")).split(":")[0].rsplit(".", 1)[-1],
            "concurrency": pool.get("max-concurrency"),
            "total": info.get("total", {}),
        }
    for reply in replies:
        for name, snapshot in reply.items():
            workers.setdefault(name, {})["structsum"] = snapshot
    return {"queue": queue.queue_name, "queued": queued, "workers": workers}
