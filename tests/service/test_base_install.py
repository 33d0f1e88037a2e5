"""An app with the base install only (no extras) enqueues a summary that a worker runs.

The scratch venv installs the wheel from the package index (or pip's cache) like
any app would: no engine stack, no access to the project venv. The worker is the
project's (tests/service/conftest.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from structsum.config import Settings
from structsum.models import SummaryResult
from tests.service.conftest import WorkerProcess, worker_env

pytestmark = pytest.mark.service

TEMPLATE = "generic_summary_v1"
NOTE = "Alice: we ship on Friday. Bob: I will write the release notes and tell support."
JOB_TIMEOUT_S = 300.0
ENQUEUE = f"""
import sys
from structsum.client import enqueue_summary
handle = enqueue_summary(sys.stdin.read(), {TEMPLATE!r})
print(handle.id)
print(handle.result(timeout={JOB_TIMEOUT_S}).model_dump_json())
"""


@pytest.fixture(scope="module")
def base_venv(structsum_wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("base-venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    installed = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(structsum_wheel)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    return venv


def base_env(settings: Settings) -> dict[str, str]:
    env = worker_env(settings)
    for name in ("PYTHONPATH", "VIRTUAL_ENV"):
        env.pop(name, None)
    return env


def test_the_base_install_has_no_engine_stack(base_venv: Path) -> None:
    probe = "import importlib.util as u; print([m for m in ('torch', 'transformers', 'vllm', 'jinja2') if u.find_spec(m)])"  # noqa: E501
    result = subprocess.run(
        [str(base_venv / "bin" / "python"), "-c", probe], capture_output=True, text=True
    )
    assert result.stdout.strip() == "[]", result.stderr


def test_the_worker_command_names_the_extra_it_needs(base_venv: Path) -> None:
    result = subprocess.run(
        [str(base_venv / "bin" / "structsum"), "worker"],
        capture_output=True, text=True, timeout=60, cwd=base_venv,
        env={**os.environ, "COLUMNS": "300"},
    )  # fmt: skip
    assert result.returncode == 1
    assert "MissingExtra" in result.stderr and "structsum[cpu]" in result.stderr
    assert "Traceback" not in result.stderr


def test_enqueue_summary_from_the_base_install(
    base_venv: Path, worker: WorkerProcess, service_settings: Settings
) -> None:
    result = subprocess.run(
        [str(base_venv / "bin" / "python"), "-c", ENQUEUE],
        input=NOTE, capture_output=True, text=True, timeout=JOB_TIMEOUT_S + 60,
        cwd=base_venv, env=base_env(service_settings),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:] + worker.log_tail()
    task_id, payload = result.stdout.splitlines()
    summary = SummaryResult.model_validate(json.loads(payload))
    assert summary.template_id == TEMPLATE
    assert summary.valid, summary.errors
    # The CLI's queue commands run from the same install.
    fetched = structsum_cli(base_venv, service_settings, "result", task_id)
    assert fetched.returncode == 0, fetched.stderr
    assert SummaryResult.model_validate(json.loads(fetched.stdout)) == summary
    stats = structsum_cli(base_venv, service_settings, "stats", "--json")
    assert stats.returncode == 0, stats.stderr
    assert worker.hostname in json.loads(stats.stdout)["workers"]


def structsum_cli(venv: Path, settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(venv / "bin" / "structsum"), *args],
        capture_output=True, text=True, timeout=60, cwd=venv, env=base_env(settings),
    )  # fmt: skip
