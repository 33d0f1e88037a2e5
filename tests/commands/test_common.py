import importlib.util
from collections.abc import Callable

import pytest
from typer.testing import CliRunner

from structsum.cli import app
from structsum.commands.common import require_extra
from structsum.errors import MissingExtra

runner = CliRunner()


def without(*modules: str) -> Callable[..., object]:
    real = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None) -> object:
        return None if name in modules else real(name, package)

    return find_spec


def test_an_engine_command_without_vllm_names_the_cpu_and_gpu_extras(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", without("vllm"))
    with pytest.raises(MissingExtra) as caught:
        require_extra("worker", engine=True)
    assert caught.value.details["missing"] == ["vllm"]
    assert "structsum[cpu]" in caught.value.message and "structsum[gpu]" in caught.value.message
    assert not MissingExtra.retryable


def test_templates_without_jinja_name_the_worker_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", without("jinja2"))
    with pytest.raises(MissingExtra) as caught:
        require_extra("templates list", engine=False)
    assert caught.value.details == {
        "command": "templates list",
        "extras": ["worker"],
        "missing": ["jinja2"],
    }


def test_nothing_is_missing_in_the_project_venv() -> None:
    require_extra("worker", engine=True)


@pytest.mark.parametrize(
    ("argv", "extra"),
    [
        (["worker"], "structsum[cpu]"),
        (["summarize", "-"], "structsum[cpu]"),
        (["enhance", "-"], "structsum[cpu]"),
        (["templates", "list"], "structsum[worker]"),
        (["templates", "check"], "structsum[worker]"),
        (["templates", "show", "generic_summary_v1"], "structsum[worker]"),
    ],
)
def test_worker_commands_without_their_extra_exit_1_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], extra: str
) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", without("vllm", "jinja2"))
    result = runner.invoke(app, argv, input="some text", env={"COLUMNS": "300"})
    assert result.exit_code == 1, result.output
    assert "MissingExtra" in result.output and extra in result.output
    assert "Traceback" not in result.output


def test_a_remote_worker_needs_the_remote_extra_not_vllm(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from structsum.config import get_settings

    monkeypatch.setenv("STRUCTSUM_ENGINE__KIND", "remote")
    monkeypatch.setenv("STRUCTSUM_ENGINE__URL", "http://gpu-host:8000")
    get_settings.cache_clear()
    try:
        monkeypatch.setattr(importlib.util, "find_spec", without("vllm"))
        require_extra("worker", engine=True)  # vLLM is not needed to talk to a server
        monkeypatch.setattr(importlib.util, "find_spec", without("vllm", "httpx"))
        with pytest.raises(MissingExtra) as caught:
            require_extra("worker", engine=True)
        assert caught.value.details["extras"] == ["remote"]
        assert "structsum[remote]" in caught.value.message
        # serving the model needs vLLM whatever kind the workers use
        with pytest.raises(MissingExtra) as caught:
            require_extra("serve-engine", engine=True, server=True)
        assert caught.value.details["missing"] == ["vllm"]
    finally:
        get_settings.cache_clear()
