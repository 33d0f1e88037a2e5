"""Fault-injection helpers shared by the recovery tests and scripts/fault_injection.py.

A private ``redis-server`` (own port, own directory, loopback only) that can be
crashed and restarted without touching anyone else's Redis, and a way to find a
worker's vLLM engine-core process so that it can be killed or frozen.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from pathlib import Path

import psutil

REDIS_START_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateRedis:
    """A redis-server of our own; ``aof`` decides whether a crash keeps the data."""

    def __init__(self, directory: Path, *, aof: bool = True, port: int | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise FileNotFoundError("redis-server is not installed")
        self.binary = binary
        self.directory = directory
        self.aof = aof
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        return [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.directory),
            "--save", "",
            "--appendonly", "yes" if self.aof else "no",
            "--appendfsync", "everysec",
            "--maxmemory-policy", "noeviction",
            "--logfile", str(self.directory / "redis.log"),
        ]  # fmt: skip

    def start(self) -> PrivateRedis:
        import redis

        self.process = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=1)
        deadline = time.monotonic() + REDIS_START_TIMEOUT_S
        while True:
            try:
                # LOADING while it replays the AOF: wait until it answers for real
                client.ping()
                client.dbsize()
                break
            except redis.RedisError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise
                time.sleep(0.1)
        client.close()
        return self

    def kill(self) -> None:
        """kill -9: no save, no fsync beyond what ``everysec`` already wrote."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def restart(self, down_s: float = 1.0) -> float:
        """Crash, stay down ``down_s``, start again; seconds until it answered."""
        self.kill()
        time.sleep(down_s)
        started = time.monotonic()
        self.start()
        return time.monotonic() - started

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def engine_core(worker_pid: int) -> psutil.Process:
    """The vLLM engine-core process among a worker's descendants."""
    children = psutil.Process(worker_pid).children(recursive=True)
    for child in children:
        with contextlib.suppress(psutil.Error):
            if "EngineCore" in child.name() or "EngineCore" in " ".join(child.cmdline()):
                return child
    if not children:
        raise LookupError(f"worker {worker_pid} has no child processes")
    # no title set: the biggest child holds the model (others: resource tracker)
    return max(children, key=lambda c: c.memory_info().rss)


def group_rss_mib(pid: int) -> float:
    """Resident memory of a process and its descendants, MiB."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            total += proc.memory_info().rss
    return total / 2**20
