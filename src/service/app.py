"""The Celery app, built from settings and nothing else.

Clients and workers build the same app from the same queue settings, so the
broker/backend URLs, key prefix, serializer and queue name always agree. This
module imports neither the engine nor the processors: an app that only enqueues
jobs needs the package and the Redis URL, not vLLM.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from structsum.config import QueueSettings, Settings

ENHANCE = "structsum.enhance"
SUMMARIZE = "structsum.summarize"
ENHANCE_AND_SUMMARIZE = "structsum.enhance_and_summarize"
ASK = "structsum.ask"
TASK_NAMES = (ENHANCE, SUMMARIZE, ENHANCE_AND_SUMMARIZE, ASK)

# Message header carrying the enqueue time (Unix seconds); the worker turns it into
# the queue-wait histogram. Senders that omit it only lose that one metric.
ENQUEUED_AT_HEADER = "structsum_enqueued_at"

# The only pools that keep one engine per process: every job thread shares it.
# prefork would fork a live vLLM engine (or load one per child), so it is refused.
SHARED_ENGINE_POOLS = ("threads", "solo")


def celery_config(queue: QueueSettings) -> dict[str, Any]:
    """Celery settings for the queue group: one mapping, reviewed in one place."""
    # Celery's Redis caveat: the visibility timeout must be set in all three places
    # (broker and result backend transport options, and the top-level setting).
    broker_options: dict[str, Any] = {
        "visibility_timeout": queue.visibility_timeout_s,
        # kombu looks for overdue unacked jobs every interval x throttle seconds
        # (10 x 10 by default); one look per redelivery_sweep_s bounds recovery.
        "unacked_restore_interval": queue.redelivery_sweep_s,
        "unacked_restore_throttle": 1,
    }
    backend_options: dict[str, Any] = {"visibility_timeout": queue.visibility_timeout_s}
    if queue.key_prefix:
        # kombu prefixes every Redis key and list it uses (queues, unacked, bindings);
        # the Redis result backend reads its own option for the result keys.
        broker_options["global_keyprefix"] = queue.key_prefix
        backend_options["global_keyprefix"] = queue.key_prefix
    return {
        "broker_url": queue.broker_url,
        "result_backend": queue.backend_url,
        "broker_transport_options": broker_options,
        "result_backend_transport_options": backend_options,
        "visibility_timeout": queue.visibility_timeout_s,
        "broker_connection_retry_on_startup": True,
        # JSON only: a pickle payload from the network would be code execution.
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        # A job is acknowledged after it ran; a worker killed mid-job leaves it
        # unacked and Redis delivers it again after the visibility timeout.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # A redelivered job whose id already succeeded is skipped, not run again; a copy
        # of a job still running elsewhere waits on that run's claim (service/claims.py).
        "worker_deduplicate_successful_tasks": True,
        "task_track_started": True,
        "worker_prefetch_multiplier": queue.prefetch_multiplier,
        "worker_concurrency": queue.worker_concurrency,
        "worker_pool": "threads",
        "task_soft_time_limit": queue.soft_time_limit_s,
        "task_time_limit": queue.time_limit_s,
        "result_expires": queue.result_expires_s,
        "result_backend_always_retry": True,
        "task_default_queue": queue.queue_name,
        "task_routes": {"structsum.*": {"queue": queue.queue_name}},
    }


def build_app(settings: Settings, *, main: str = "structsum") -> Celery:
    """A Celery app for these settings; tests build their own with a private DB/prefix."""
    app = Celery(main, set_as_current=False)
    app.conf.update(celery_config(settings.queue))
    return app
