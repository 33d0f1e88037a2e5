"""Checks a worker makes before it consumes: its deadline and its Redis.

Two facts of Celery over Redis decide whether a job runs once and is never lost
(see docs/service.md): a job still running when the visibility timeout passes is
handed out again, so the per-job deadline plus a margin must stay below it; and a
Redis that does not persist (no AOF, no RDB) or evicts keys loses queued jobs and
results on a restart or under memory pressure.
"""

from __future__ import annotations

import logging
from typing import Any

from structsum.config import Settings

log = logging.getLogger(__name__)

# Seconds to wait for Redis while checking its configuration.
REDIS_CHECK_TIMEOUT_S = 5.0


def worst_case_tokens(settings: Settings) -> int:
    """Generated tokens of the largest job the settings accept (enhance + summary).

    Enhancement writes up to ``max_chunks`` chunks; a summary over the context
    condenses up to ``max_chunks`` notes per round, then makes up to three
    attempts (the templates' usual policy). An estimate to log, not a promise.
    """
    budget, sampling = settings.budget, settings.sampling
    enhance = budget.max_chunks * sampling.enhancement.max_tokens
    condense = budget.max_condense_rounds * budget.max_chunks * sampling.condense.max_tokens
    return enhance + condense + 3 * sampling.summary.max_tokens


def deadline_problem(settings: Settings) -> str | None:
    queue = settings.queue
    if queue.job_deadline_s + queue.deadline_margin_s >= queue.visibility_timeout_s:
        return (
            f"job_deadline_s ({queue.job_deadline_s:g}) + deadline_margin_s "
            f"({queue.deadline_margin_s:g}) must be below visibility_timeout_s "
            f"({queue.visibility_timeout_s}): Redis would hand out jobs still running"
        )
    return None


def redis_problems(config: dict[str, Any]) -> list[str]:
    """What is unsafe in a Redis ``CONFIG GET`` result, for a broker and result store."""
    problems: list[str] = []
    aof = str(config.get("appendonly", "")).lower() == "yes"
    rdb = bool(str(config.get("save", "")).strip())
    if not (aof or rdb):
        problems.append(
            "Redis persists nothing (appendonly no, save ''): a restart loses every "
            "queued job and stored result; run it with --appendonly yes"
        )
    policy = str(config.get("maxmemory-policy", "noeviction"))
    if policy != "noeviction":
        problems.append(
            f"Redis maxmemory-policy is {policy!r}: it may evict queues and results; "
            "set it to noeviction"
        )
    return problems


def read_redis_config(url: str) -> dict[str, Any]:
    import redis

    client = redis.Redis.from_url(
        url,
        socket_connect_timeout=REDIS_CHECK_TIMEOUT_S,
        socket_timeout=REDIS_CHECK_TIMEOUT_S,
        decode_responses=True,
    )
    try:
        config: dict[str, Any] = {}
        for key in ("appendonly", "save", "maxmemory-policy"):
            config.update({str(k): v for k, v in client.config_get(key).items()})
        return config
    finally:
        client.close()


def check_startup(settings: Settings, *, refuse: type[Exception]) -> None:
    """Raise ``refuse`` on a deadline that outlives the visibility timeout; check Redis."""
    queue = settings.queue
    problem = deadline_problem(settings)
    if problem and queue.deadline_check == "refuse":
        raise refuse(problem)
    if problem:
        log.warning("%s", problem)
    log.info(
        "job deadline %.0f s (visibility timeout %d s); the largest job the settings "
        "accept generates about %d tokens",
        queue.job_deadline_s,
        queue.visibility_timeout_s,
        worst_case_tokens(settings),
    )
    if queue.redis_check == "off":
        return
    import redis

    problems: list[str] = []
    for url in dict.fromkeys((queue.broker_url, queue.backend_url)):
        try:
            problems += redis_problems(read_redis_config(url))
        except redis.RedisError as exc:  # managed Redis often disables CONFIG
            log.warning("cannot read the Redis configuration (%s); not checked", exc)
    for text in dict.fromkeys(problems):
        if queue.redis_check == "refuse":
            raise refuse(text)
        log.warning("%s", text)
