"""What every command shares: strict UTF-8 input, typed-error reports, progress on stderr."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from structsum.errors import InputUnreadable, StructsumError, TextNotUtf8

# 0 ok, 1 a typed error (message and hint on stderr), 3 "not there yet" (command-specific).
EXIT_ERROR = 1

err = Console(stderr=True)


def read_text(source: str | Path) -> str:
    """Read a file (or '-' for stdin) as strict UTF-8."""
    try:
        raw = sys.stdin.buffer.read() if str(source) == "-" else Path(source).read_bytes()
    except OSError as exc:
        raise InputUnreadable(
            f"cannot read {source}: {exc.strerror or exc}", {"path": str(source)}
        ) from exc
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TextNotUtf8(
            f"{source} is not UTF-8: byte 0x{raw[exc.start]:02x} at offset {exc.start}",
            {"offset": exc.start},
        ) from exc


@contextmanager
def typed_errors() -> Iterator[None]:
    """A typed error is the user's to fix: say what and how, exit non-zero, no traceback."""
    try:
        yield
    except StructsumError as exc:
        err.print(f"[bold red]error[/] {exc.code}: {exc.message}", highlight=False)
        if exc.details.get("errors"):
            err.print(json.dumps(exc.details["errors"], indent=2), highlight=False)
        if exc.hint:
            err.print(f"[yellow]hint[/] {exc.hint}", highlight=False)
        raise typer.Exit(EXIT_ERROR) from None


@contextmanager
def waiting(description: str) -> Iterator[None]:
    """A spinner with the seconds elapsed, on stderr, for waits that print nothing else.

    An engine start takes minutes; without it the terminal looks hung. Transient:
    the line goes away when the wait ends, and stdout is never touched.
    """
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=True) as progress:
        progress.add_task(description, total=None)
        yield
