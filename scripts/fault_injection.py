"""Fault injection (review Part C): many jobs at once, worker kills, Redis crashes.

Not CI: it starts ``--kills + 1`` workers (about a minute each on 2 CPU cores).
Everything runs on a private redis-server (own port, own directory under /tmp,
loopback only) and real worker processes with the bundled model; run it under
``flock /tmp/structsum-engine.lock``. Three phases share one Redis:

1. ``kills``: ``--jobs`` enhancement jobs enqueued at once; the worker is
   SIGKILLed (process group, engine included) ``--kills`` times while jobs run,
   and a new one started each time.
2. ``redis-aof``: ``--redis-jobs`` jobs, Redis kill -9'd mid-run with AOF
   (``appendfsync everysec``) and restarted; the worker rides through.
3. ``redis-no-aof``: the same with persistence off (the dev/CI default).

Per phase it prints enqueued / completed / lost / duplicated (ran to success
more than once) / typed and untyped errors / peak worker RSS / recovery seconds
(fault to the first job finished after it), and writes the JSON report under
``--result-dir``. Jobs are short notes, so the run measures recovery, not speed.

    flock /tmp/structsum-engine.lock .venv/bin/python scripts/fault_injection.py --kills 3
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import os
import random
import re
import signal
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from structsum import client
from structsum.bench.faults import PrivateRedis, free_port, group_rss_mib
from structsum.bench.report import (
    base_report,
    fmt,
    parse_metadata,
    print_table,
    report_filename,
    write_report,
)
from structsum.bench.worker import WorkerProcess
from structsum.config import QueueSettings, Settings

NOTE = "Alice: so um we ship v{i} on Friday. Bob: ok I write the release notes by Thursday."
SUCCEEDED = re.compile(r"\[([0-9a-f-]{36})\] succeeded in")
TERMINAL = ("SUCCESS", "FAILURE", "REVOKED")
# No job finished and none waiting or unacknowledged for this long: the phase is over.
QUIET_S = 30.0
POLL_S = 1.0


@dataclass
class Phase:
    name: str
    ids: list[str] = field(default_factory=list)
    faults: list[float] = field(default_factory=list)  # wall-clock times of the faults
    peak_rss_mib: float = 0.0
    seconds: float = 0.0


class Fleet:
    """The one running worker, its successors, their logs and their memory."""

    def __init__(self, settings: Settings, workdir: Path, concurrency: int) -> None:
        self.settings = settings
        self.workdir = workdir
        self.concurrency = concurrency
        self.workers: list[WorkerProcess] = []
        self.ports: list[int] = []
        self.peak_rss_mib = 0.0
        self.starts: list[float] = []  # seconds each worker took to answer a ping
        self._stop = threading.Event()
        threading.Thread(target=self._sample, daemon=True).start()

    @property
    def current(self) -> WorkerProcess:
        return self.workers[-1]

    def start(self) -> float:
        """Start the next worker; seconds until it answered a ping."""
        self.ports.append(free_port())
        os.environ["STRUCTSUM_QUEUE__METRICS_PORT"] = str(self.ports[-1])
        started = time.monotonic()
        log_path = self.workdir / f"w{len(self.workers) + 1}.log"
        worker = WorkerProcess.start(self.settings, log_path=log_path, concurrency=self.concurrency)
        self.workers.append(worker)
        self.starts.append(time.monotonic() - started)
        return self.starts[-1]

    def kill(self) -> None:
        self.current.kill()

    def in_flight(self) -> int:
        """Jobs the current worker runs now (its /metrics)."""
        url = f"http://127.0.0.1:{self.ports[-1]}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                text = response.read().decode()
        except OSError:
            return 0
        found = re.search(r"^structsum_jobs_in_flight ([0-9.]+)$", text, re.MULTILINE)
        return int(float(found.group(1))) if found else 0

    def successes(self) -> collections.Counter[str]:
        found: collections.Counter[str] = collections.Counter()
        for worker in self.workers:
            found.update(SUCCEEDED.findall(worker.log_path.read_text(errors="replace")))
        return found

    def _sample(self) -> None:
        while not self._stop.wait(POLL_S):
            if self.workers and self.current.process.poll() is None:
                rss = group_rss_mib(self.current.process.pid)
                self.peak_rss_mib = max(self.peak_rss_mib, rss)

    def stop(self) -> None:
        self._stop.set()
        for worker in self.workers:
            worker.kill()


class Audit:
    """What Redis says about every job: its state, or where it still waits."""

    def __init__(self, url: str, queue: QueueSettings) -> None:
        self.redis = redis.Redis.from_url(url, decode_responses=True)
        self.queue = queue

    def meta(self, task_id: str) -> dict[str, Any]:
        raw = self.redis.get(f"{self.queue.key_prefix}celery-task-meta-{task_id}")
        return json.loads(raw) if raw else {"status": "NONE"}

    def waiting(self) -> set[str]:
        """Ids in the queue list or in the unacked hash (delivered, not acknowledged)."""
        prefix = self.queue.key_prefix
        ids = set()
        for raw in self.redis.lrange(f"{prefix}{self.queue.queue_name}", 0, -1):
            ids.add(json.loads(raw)["headers"]["id"])
        for raw in self.redis.hvals(f"{prefix}unacked"):
            ids.add(json.loads(raw)[0]["headers"]["id"])
        return ids

    def settle(self, ids: list[str], timeout_s: float) -> None:
        """Wait until every job is terminal, or nothing moved for QUIET_S, or the timeout."""
        deadline = time.monotonic() + timeout_s
        done, quiet_since = -1, time.monotonic()
        while time.monotonic() < deadline:
            try:
                now_done = sum(self.meta(i)["status"] in TERMINAL for i in ids)
                idle = not self.waiting()
            except redis.RedisError:
                time.sleep(POLL_S)
                continue
            if now_done == len(ids):
                return
            if now_done != done:
                done, quiet_since = now_done, time.monotonic()
            elif idle and time.monotonic() - quiet_since > QUIET_S:
                return
            time.sleep(POLL_S)

    def report(self, phase: Phase, fleet: Fleet) -> dict[str, Any]:
        metas = {i: self.meta(i) for i in phase.ids}
        waiting = self.waiting()
        states = collections.Counter(m["status"] for m in metas.values())
        typed: collections.Counter[str] = collections.Counter()
        untyped: collections.Counter[str] = collections.Counter()
        for m in metas.values():
            if m["status"] == "FAILURE":
                result = m.get("result") or {}
                kind = str(result.get("exc_type"))
                module = result.get("exc_module")
                (typed if module == "structsum.errors" else untyped)[kind] += 1
        lost = [i for i, m in metas.items() if m["status"] not in TERMINAL and i not in waiting]
        successes = fleet.successes()
        twice = [i for i in phase.ids if successes[i] > 1]
        return {
            "phase": phase.name,
            "enqueued": len(phase.ids),
            "completed": states["SUCCESS"],
            "states": dict(states),
            "lost": len(lost),
            "lost_ids": lost[:10],
            "still_waiting": len(waiting & set(phase.ids)),
            "duplicated": len(twice),
            "typed_errors": dict(typed),
            "untyped_errors": dict(untyped),
            "peak_rss_mib": round(phase.peak_rss_mib, 1),
            "faults": len(phase.faults),
            "recovery_s": recovery_seconds(phase.faults, metas),
            "seconds": round(phase.seconds, 1),
        }


def recovery_seconds(faults: list[float], metas: dict[str, dict[str, Any]]) -> list[float | None]:
    """Per fault: seconds until the first job finished after it (None: none did)."""
    done = sorted(
        dt.datetime.fromisoformat(m["date_done"]).replace(tzinfo=dt.UTC).timestamp()
        for m in metas.values()
        if m.get("date_done")
    )
    out: list[float | None] = []
    for fault in faults:
        later = [t for t in done if t > fault]
        out.append(round(later[0] - fault, 1) if later else None)
    return out


def enqueue(settings: Settings, count: int, start: int) -> list[str]:
    return [
        client.enqueue_enhancement(NOTE.format(i=start + i), settings=settings).id
        for i in range(count)
    ]


def wait_for(predicate: Any, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if predicate():
                return True
        except redis.RedisError:
            pass
        time.sleep(0.2)
    return False


def run_kills(args: argparse.Namespace, fleet: Fleet, audit: Audit, rng: random.Random) -> Phase:
    phase = Phase("kills")
    started = time.monotonic()
    fleet.peak_rss_mib = 0.0
    phase.ids = enqueue(fleet.settings, args.jobs, 0)
    for _ in range(args.kills):
        wait_for(lambda: fleet.in_flight() >= args.concurrency, 180)
        time.sleep(rng.uniform(0, args.kill_jitter_s))
        phase.faults.append(time.time())
        print(f"kill {len(phase.faults)}: {fleet.in_flight()} in flight", flush=True)
        fleet.kill()
        fleet.start()
    audit.settle(phase.ids, args.settle_s)
    phase.peak_rss_mib, phase.seconds = fleet.peak_rss_mib, time.monotonic() - started
    return phase


def run_redis_crash(
    args: argparse.Namespace, fleet: Fleet, audit: Audit, store: PrivateRedis, aof: bool, first: int
) -> Phase:
    phase = Phase("redis-aof" if aof else "redis-no-aof")
    started = time.monotonic()
    fleet.peak_rss_mib = 0.0
    if store.aof != aof:
        audit.redis.config_set("appendonly", "yes" if aof else "no")
        store.aof = aof
    phase.ids = enqueue(fleet.settings, args.redis_jobs, first)
    wait_for(lambda: fleet.in_flight() >= args.concurrency // 2, 180)
    time.sleep(1.5)  # the enqueues are older than AOF's one-second fsync window
    phase.faults.append(time.time())
    print(f"{phase.name}: kill -9 with {fleet.in_flight()} in flight", flush=True)
    store.restart(down_s=args.redis_down_s)
    audit.settle(phase.ids, args.settle_s)
    phase.peak_rss_mib, phase.seconds = fleet.peak_rss_mib, time.monotonic() - started
    return phase


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--redis-jobs", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=16)
    # 16 short notes at once take ~80 s each on the 2-core box: a deadline below that
    # turns the run into JobTimeout retries (seen with 100 s). Killed workers' jobs come
    # back after the visibility timeout, so it bounds each kill's recovery.
    parser.add_argument("--visibility-s", type=int, default=300)
    parser.add_argument("--deadline-s", type=float, default=240.0)
    parser.add_argument("--margin-s", type=float, default=10.0)
    parser.add_argument("--kill-jitter-s", type=float, default=5.0)
    parser.add_argument("--redis-down-s", type=float, default=2.0)
    parser.add_argument("--settle-s", type=float, default=900.0)
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--result-dir", type=Path, default=Path("results"))
    parser.add_argument("--label", default=None)
    parser.add_argument("--metadata", nargs="*", default=None, help="key=value pairs")
    return parser.parse_args()


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    """``timeout`` sends SIGTERM: leave through ``finally`` (workers and Redis stopped)."""
    raise SystemExit(128 + signum)


def main() -> None:
    args = parse_args()
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    workdir = Path(tempfile.mkdtemp(prefix="structsum-fi-"))
    store = PrivateRedis(workdir / "redis", aof=True).start()
    queue = QueueSettings(
        broker_url=store.url,
        key_prefix="fi:",
        visibility_timeout_s=args.visibility_s,
        worker_concurrency=args.concurrency,
    )
    settings = Settings(queue=queue)
    # What the workers read from their environment (WorkerProcess passes the queue URL).
    os.environ.update(
        {
            "STRUCTSUM_QUEUE__VISIBILITY_TIMEOUT_S": str(args.visibility_s),
            "STRUCTSUM_QUEUE__JOB_DEADLINE_S": str(args.deadline_s),
            "STRUCTSUM_QUEUE__DEADLINE_MARGIN_S": str(args.margin_s),
            "STRUCTSUM_QUEUE__WARM_GRAMMARS": "false",
        }
    )
    fleet = Fleet(settings, workdir, args.concurrency)
    audit = Audit(store.url, queue)
    rng = random.Random(args.seed)
    phases: list[Phase] = []

    def save(rows: list[dict[str, Any]], partial: bool) -> Path:
        report = base_report(
            "fault_injection",
            arguments=vars(args),
            model=settings.engine.model,
            metadata=parse_metadata(args.metadata),
        )
        report["results"] = rows
        report["partial"] = partial
        report["samples"] = {
            "worker_starts_s": [round(s, 1) for s in fleet.starts],
            "workdir": workdir,
        }
        report["notes"] = [
            "recovery_s: per fault, seconds until the first job finished after it",
            f"a killed worker's jobs come back after the visibility timeout "
            f"({args.visibility_s} s) plus one redelivery sweep, or when the next worker "
            "starts, whichever is later",
        ]
        return write_report(report, args.result_dir, filename)

    filename = report_filename("fault_injection", args.label)  # one file, rewritten per phase
    rows: list[dict[str, Any]] = []
    path: Path | None = None
    try:
        fleet.start()
        phases.append(run_kills(args, fleet, audit, rng))
        # Each phase is audited as soon as it settles and its row kept: the results live
        # in the one Redis, and the no-AOF crash of the last phase wipes the earlier
        # phases' results (session 5: rows recomputed at the end read 0 completed).
        # A report after every phase: a run cut short still leaves what it measured.
        rows.append(audit.report(phases[-1], fleet))
        path = save(rows, partial=True)
        first = args.jobs
        for aof in (True, False):
            if fleet.current.process.poll() is not None:
                fleet.start()
            phases.append(run_redis_crash(args, fleet, audit, store, aof, first))
            first += args.redis_jobs
            rows.append(audit.report(phases[-1], fleet))
            path = save(rows, partial=aof)
    finally:
        fleet.stop()
        store.stop()
    print_table(
        "fault injection",
        ["phase", "enqueued", "completed", "lost", "duplicated", "typed errors",
         "untyped", "peak RSS MiB", "recovery s"],
        [
            [
                r["phase"], str(r["enqueued"]), str(r["completed"]), str(r["lost"]),
                str(r["duplicated"]), json.dumps(r["typed_errors"]) or "{}",
                str(sum(r["untyped_errors"].values())), fmt(r["peak_rss_mib"], 0),
                " ".join(fmt(s) for s in r["recovery_s"]),
            ]
            for r in rows
        ],
    )  # fmt: skip
    print(f"report: {path}")


if __name__ == "__main__":
    main()
