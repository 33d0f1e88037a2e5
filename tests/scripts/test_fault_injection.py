"""The fault-injection script's bookkeeping: recovery times and the audit of a private Redis."""

from __future__ import annotations

import collections
import json
from pathlib import Path
from types import ModuleType

import pytest

from structsum.bench.faults import PrivateRedis
from structsum.config import QueueSettings
from tests.scripts.conftest import load_script


@pytest.fixture(scope="module")
def fi() -> ModuleType:
    return load_script("fault_injection")


def test_recovery_is_the_first_job_done_after_each_fault(fi: ModuleType) -> None:
    metas = {
        "a": {"date_done": "2026-01-01T00:00:10"},
        "b": {"date_done": "2026-01-01T00:00:25"},
        "c": {"status": "PENDING"},
    }
    base = 1767225600.0  # 2026-01-01T00:00:00Z
    assert fi.recovery_seconds([base + 5, base + 20, base + 30], metas) == [5.0, 5.0, None]


def test_the_audit_tells_lost_from_waiting_and_typed_from_untyped(
    fi: ModuleType, tmp_path: Path
) -> None:
    store = PrivateRedis(tmp_path / "redis", aof=False).start()
    try:
        queue = QueueSettings(broker_url=store.url, key_prefix="t:")
        audit = fi.Audit(store.url, queue)
        r = audit.redis
        r.set("t:celery-task-meta-ok", json.dumps({"status": "SUCCESS"}))
        failure = {"exc_type": "PoisonSuspected", "exc_module": "structsum.errors"}
        r.set("t:celery-task-meta-typed", json.dumps({"status": "FAILURE", "result": failure}))
        bug = {"exc_type": "KeyError", "exc_module": "builtins"}
        r.set("t:celery-task-meta-bug", json.dumps({"status": "FAILURE", "result": bug}))
        r.lpush("t:structsum", json.dumps({"headers": {"id": "queued"}}))
        r.hset("t:unacked", "tag", json.dumps([{"headers": {"id": "running"}}, "", "structsum"]))
        phase = fi.Phase("p", ids=["ok", "typed", "bug", "queued", "running", "gone"])

        class NoLogs:
            def successes(self) -> collections.Counter[str]:
                return collections.Counter({"ok": 2})  # ran to success twice

        row = audit.report(phase, NoLogs())
    finally:
        store.stop()
    assert (row["completed"], row["lost"], row["lost_ids"]) == (1, 1, ["gone"])
    assert row["still_waiting"] == 2 and row["duplicated"] == 1
    assert row["typed_errors"] == {"PoisonSuspected": 1}
    assert row["untyped_errors"] == {"KeyError": 1}
