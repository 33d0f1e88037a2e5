"""`structsum worker` as a subprocess for a benchmark run: started, awaited, stopped.

The worker is started on the queue the benchmark enqueues to (same broker URL,
Redis DB, key prefix and queue name: passed through its environment), in its own
process group so that stopping it also stops its vLLM engine processes. It is
ready when it answers a ping: by then its engine is loaded.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

import redis
from celery import Celery
from celery.utils.nodenames import host_format
from kombu.exceptions import OperationalError
from prometheus_client.parser import text_string_to_metric_families

from structsum.config import Settings
from structsum.config.redact import redact_url
from structsum.errors import WorkerNotReady
from structsum.service.app import build_app

# An engine start takes 30-90 s on the 2-core box; a cold compile cache takes longer.
WORKER_START_TIMEOUT_S = 300.0
WORKER_STOP_TIMEOUT_S = 60.0
PING_TIMEOUT_S = 1.0
METRICS_TIMEOUT_S = 5.0


def worker_env(settings: Settings, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) with the caller's queue connection."""
    queue = settings.queue
    env = dict(os.environ if base is None else base)
    env["STRUCTSUM_QUEUE__BROKER_URL"] = queue.broker_url
    env["STRUCTSUM_QUEUE__KEY_PREFIX"] = queue.key_prefix
    env["STRUCTSUM_QUEUE__QUEUE_NAME"] = queue.queue_name
    if queue.result_backend:
        env["STRUCTSUM_QUEUE__RESULT_BACKEND"] = queue.result_backend
    else:
        env.pop("STRUCTSUM_QUEUE__RESULT_BACKEND", None)
    return env


def _answers(app: Celery, nodes: list[str] | None) -> bool:
    """Whether the nodes answer a ping; False while Redis is unreachable.

    A Redis restart (fault injection, the recovery tests) kills the client's pooled
    connection; the next ping reconnects.
    """
    try:
        return bool(app.control.ping(destination=nodes, timeout=PING_TIMEOUT_S))
    except (redis.ConnectionError, OperationalError):
        time.sleep(PING_TIMEOUT_S)
        return False


def worker_answers(settings: Settings, *, timeout_s: float = PING_TIMEOUT_S) -> bool:
    """Whether any worker on this queue answers a ping."""
    return bool(build_app(settings).control.ping(timeout=timeout_s))


class WorkerProcess:
    """One worker subprocess; use as a context manager, or call ``stop()``."""

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        log_path: Path,
        hostname: str | None = None,
        metrics_port: int | None = None,
    ) -> None:
        self.process = process
        self.log_path = log_path
        self.hostname = hostname
        self.metrics_port = metrics_port

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def metric(self, name: str, **labels: str) -> float | None:
        """One sample from the worker's /metrics (``metrics_port``); None if it has none yet."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=METRICS_TIMEOUT_S) as response:
            text = response.read().decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                wanted = all(sample.labels.get(k) == v for k, v in labels.items())
                if sample.name == name and wanted:
                    return float(sample.value)
        return None

    @classmethod
    def start(
        cls,
        settings: Settings,
        *,
        log_path: Path,
        concurrency: int | None = None,
        timeout_s: float = WORKER_START_TIMEOUT_S,
        hostname: str | None = None,
        env: Mapping[str, str] | None = None,
        wait: bool = True,
    ) -> WorkerProcess:
        """Start a worker and return once it answers; WorkerNotReady if it never does.

        ``hostname``: its Celery node name (several workers on one host need distinct
        ones; readiness then waits for that node). ``env``: added to its environment
        (``CUDA_VISIBLE_DEVICES`` for one worker per GPU). ``wait=False`` returns at
        once, so that several workers load their engines together; call ``wait_ready``.
        """
        command = [sys.executable, "-m", "structsum.commands.service", "worker"]
        if concurrency:
            command += ["--concurrency", str(concurrency)]
        if hostname:
            command += ["--hostname", hostname]
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("wb") as out:
            process = subprocess.Popen(
                command,
                env={**worker_env(settings), **(env or {})},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        worker = cls(process, log_path, hostname, settings.queue.metrics_port)
        if wait:
            worker.wait_ready(settings, timeout_s)
        return worker

    def wait_ready(self, settings: Settings, timeout_s: float = WORKER_START_TIMEOUT_S) -> None:
        app = build_app(settings)
        deadline = time.monotonic() + timeout_s
        # the node answers under its expanded name: "w0@%h" is "w0@<this host>" then
        nodes = [host_format(self.hostname)] if self.hostname else None
        while not _answers(app, nodes):
            if self.process.poll() is not None or time.monotonic() > deadline:
                code = self.process.poll()
                self.stop()
                state = f"exited with {code}" if code is not None else f"silent {timeout_s:.0f} s"
                where = redact_url(settings.queue.broker_url)
                raise WorkerNotReady(
                    f"the worker on {where} {state}; see {self.log_path}",
                    {"log": str(self.log_path), "exit_code": code},
                )

    def stop(self) -> int | None:
        """Warm shutdown (SIGTERM) as an operator would; SIGKILL the group if it hangs.

        Returns the worker's exit code, or None if it had to be killed.
        """
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=WORKER_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=WORKER_STOP_TIMEOUT_S)
                return None
        # engine processes left behind in the group by a clean stop would leak memory
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        return self.process.returncode

    def kill(self) -> int | None:
        """SIGKILL the process group (worker and engine processes) at once, as a crash would."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=WORKER_STOP_TIMEOUT_S)
        return self.process.returncode

    def __enter__(self) -> WorkerProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
