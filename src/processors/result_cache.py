"""The result cache: an identical request returns its stored result, the engine untouched.

Processors see only ``ResultStore`` (get/put of JSON strings by key); the task
layer passes a Redis-backed one in (service/result_cache.py), tests a dict. The
key is a digest of the task kind, the request (minus ``use_cache``) and a
fingerprint of everything else that shapes the output: model, engine and
sampling settings, budget, and for summaries the template's policy, schema and
prompt. Change any of them and the old entries are simply never asked for again
(they expire with their TTL).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel, ValidationError

from structsum.config import CacheSettings
from structsum.models import EnhancementResult, SummaryResult

ResultT = TypeVar("ResultT", SummaryResult, EnhancementResult)


class ResultStore(Protocol):
    """Where results are kept: strings by key, each with its own time to live."""

    def get(self, key: str) -> str | None: ...

    def put(self, key: str, value: str, ttl_s: int) -> None: ...


def digest(payload: Any) -> str:
    """sha256 of the canonical JSON of ``payload`` (sorted keys, no spaces)."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def request_key(kind: str, request: BaseModel, fingerprint: str) -> str:
    """The cache key of one request: the same input and settings give the same key."""
    fields = request.model_dump(mode="json", exclude={"use_cache"})
    return digest({"kind": kind, "request": fields, "fingerprint": fingerprint})


def through_cache(
    store: ResultStore | None,
    settings: CacheSettings,
    *,
    key: str,
    model: type[ResultT],
    use_cache: bool,
    compute: Callable[[], ResultT],
    keep: Callable[[ResultT], bool] = lambda _: True,
) -> ResultT:
    """The stored result for ``key`` (``cached=True``), else ``compute()``, stored if kept.

    ``use_cache=False`` skips the lookup only: the fresh result replaces the stored
    one, so a caller who bypassed once does not leave a stale entry behind. ``keep``
    says which results are worth serving again (a summary that failed validation is
    not: a new run may succeed).
    """
    if store is None or not settings.enabled:
        return compute()
    if use_cache:
        stored = store.get(key)
        if stored is not None:
            try:
                return model.model_validate_json(stored).model_copy(update={"cached": True})
            except ValidationError:
                pass  # written by an older structsum: a miss, overwritten below
    result = compute()
    if keep(result):
        store.put(key, result.model_dump_json(), settings.ttl_s)
    return result
