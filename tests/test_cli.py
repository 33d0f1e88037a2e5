"""The one-shot CLI: bad input gives a clear message and a non-zero exit, no traceback.

The one-shot summary end to end (stdout only JSON, the compiled engine) is the
wheel's test in tests/test_packaging.py: one engine start covers both.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "scripts" / "samples" / "meeting.txt"


def run_cli(
    *args: str, stdin: bytes | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "structsum.cli", *args],
        input=stdin.decode("latin-1") if stdin is not None else None,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=REPO,
    )


def assert_clean_failure(proc: subprocess.CompletedProcess[str], code: str) -> None:
    assert proc.returncode != 0
    assert code in proc.stderr
    assert "hint" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert proc.stdout == ""


def test_unknown_template(tmp_path: Path) -> None:
    proc = run_cli("summarize", str(SAMPLE), "--template", "no_such_template")
    assert_clean_failure(proc, "TemplateNotFound")
    assert "no_such_template" in proc.stderr


def test_empty_text(tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n\t\n")
    assert_clean_failure(run_cli("summarize", str(empty)), "EmptyText")
    assert_clean_failure(run_cli("enhance", str(empty)), "EmptyText")


def test_unreadable_file(tmp_path: Path) -> None:
    proc = run_cli("summarize", str(tmp_path / "missing.txt"))
    assert_clean_failure(proc, "InputUnreadable")
    assert "missing.txt" in proc.stderr
    assert_clean_failure(run_cli("enhance", str(tmp_path)), "InputUnreadable")  # a directory


def test_non_utf8_input(tmp_path: Path) -> None:
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("Réunion à Zürich: décision prise.".encode("latin-1"))
    proc = run_cli("summarize", str(latin1))
    assert_clean_failure(proc, "TextNotUtf8")
    assert "offset 1" in proc.stderr
    assert_clean_failure(run_cli("enhance", str(latin1)), "TextNotUtf8")


@pytest.mark.engine
def test_enhance_from_stdin_end_to_end() -> None:
    text = "um so yeah we uh decided to ship on friday you know after the fix"
    proc = run_cli("enhance", "-", stdin=text.encode(), timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip()
    assert "enhanced in" in proc.stderr
