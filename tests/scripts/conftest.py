"""Load the benchmark scripts as modules (they live in scripts/, not in the package)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def load_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_script_{name}", SCRIPTS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def engine_script() -> ModuleType:
    return load_script("benchmark_engine")


@pytest.fixture(scope="session")
def tasks_script() -> ModuleType:
    return load_script("benchmark_tasks")


@pytest.fixture(scope="session")
def plot_script() -> ModuleType:
    return load_script("plot_benchmarks")


@pytest.fixture(scope="session")
def compare_script() -> ModuleType:
    return load_script("compare_tasks")
