"""Queue CLI: bad input files give a clear message and a non-zero exit, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from structsum.commands.service import EXIT_ERROR, app

runner = CliRunner()


@pytest.fixture(autouse=True)
def no_enqueue(monkeypatch: pytest.MonkeyPatch) -> None:
    """None of these inputs may reach the queue: sending fails the test."""
    import structsum.client as client

    def refuse(*_: object, **__: object) -> None:
        raise AssertionError("a bad input was enqueued")

    monkeypatch.setattr(client, "_send", refuse)


def _run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    assert "Traceback" not in result.output + result.stderr
    return result.exit_code, result.stderr


def test_missing_file(tmp_path: Path) -> None:
    code, err = _run("enqueue", "summarize", str(tmp_path / "nope.txt"), "--template", "t1")
    assert code == EXIT_ERROR
    assert "InputUnreadable" in err and "nope.txt" in err and "hint" in err


def test_a_directory_is_unreadable(tmp_path: Path) -> None:
    code, err = _run("enqueue", "enhance", str(tmp_path))
    assert code == EXIT_ERROR
    assert "InputUnreadable" in err


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.txt"
    path.write_bytes("caf\u00e9 cr\u00e8me".encode("latin-1"))
    code, err = _run("enqueue", "summarize", str(path), "--template", "t1")
    assert code == EXIT_ERROR
    assert "TextNotUtf8" in err and "iconv" in err


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.txt"
    path.write_text("  \n")
    code, err = _run("enqueue", "enhance", str(path))
    assert code == EXIT_ERROR
    assert "EmptyText" in err


def test_bad_variable_syntax(tmp_path: Path) -> None:
    path = tmp_path / "ok.txt"
    path.write_text("some text")
    code, err = _run("enqueue", "summarize", str(path), "--template", "t1", "--var", "novalue")
    assert code == EXIT_ERROR
    assert "KEY=VALUE" in err


def test_bad_template_id_is_refused_before_enqueue(tmp_path: Path) -> None:
    path = tmp_path / "ok.txt"
    path.write_text("some text")
    code, err = _run("enqueue", "summarize", str(path), "--template", "../../etc")
    assert code == EXIT_ERROR
    assert "RequestInvalid" in err and "template_id" in err


@pytest.mark.parametrize("status", [0, 70])
def test_worker_exits_with_the_workers_status(monkeypatch: pytest.MonkeyPatch, status: int) -> None:
    """70 (engine dead or hung) must reach the supervisor, or it will not restart."""
    import structsum.tasks as tasks

    argv: list[list[str]] = []

    def start(args: list[str]) -> int:
        argv.append(args)
        return status

    monkeypatch.setattr(tasks.app, "start", start)
    result = runner.invoke(app, ["worker", "--concurrency", "2"])
    assert result.exit_code == status
    assert argv and argv[0][0] == "worker" and "--concurrency=2" in argv[0]


def test_worker_exits_70_when_celery_returns_no_status(monkeypatch: pytest.MonkeyPatch) -> None:
    """Celery's start() returns None after a warm shutdown; the runtime kept the 70."""
    from types import SimpleNamespace

    import structsum.tasks as tasks

    rt = SimpleNamespace(exit_status=None)

    def start(args: list[str]) -> None:
        # what the worker_shutdown signal does with the stopping worker's status
        rt.exit_status = 70

    monkeypatch.setattr(tasks.app, "start", start)
    monkeypatch.setattr(tasks, "runtime", lambda: rt)
    assert runner.invoke(app, ["worker"]).exit_code == 70


def test_serve_engine_prints_a_server_matching_the_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from structsum.config import get_settings

    monkeypatch.setenv("STRUCTSUM_ENGINE__MODEL", str(tmp_path))  # a local folder: no conversion
    monkeypatch.setenv("STRUCTSUM_ENGINE__URL", "http://0.0.0.0:8123")
    monkeypatch.setenv("STRUCTSUM_ENGINE__MAX_NUM_SEQS", "5")
    monkeypatch.setenv("STRUCTSUM_ENGINE__API_KEY", "s3cret-key")
    get_settings.cache_clear()
    try:
        result = runner.invoke(app, ["serve-engine", "--dry-run"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    argv = result.stdout.split()
    assert argv[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    assert argv[argv.index("--model") + 1] == str(tmp_path)
    assert argv[argv.index("--host") + 1] == "0.0.0.0"
    assert argv[argv.index("--port") + 1] == "8123"
    assert argv[argv.index("--max-num-seqs") + 1] == "5"
    assert "s3cret-key" not in result.output  # the key travels in VLLM_API_KEY only
