"""What every command shares: strict UTF-8 input, typed-error reports, progress on stderr."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from structsum.errors import InputUnreadable, MissingExtra, StructsumError, TextNotUtf8

# 0 ok, 1 a typed error (message and hint on stderr), 3 "not there yet" (command-specific).
EXIT_ERROR = 1

err = Console(stderr=True)

# What the worker extra brings, by import name: the base install is the client alone.
WORKER_MODULES = (
    "jinja2",
    "jsonschema",
    "outlines_core",
    "prometheus_client",
    "transformers",
    "gguf",
)


def require_extra(command: str, *, engine: bool, server: bool = False) -> None:
    """Refuse a worker-side command at once, naming the extra, instead of an ImportError.

    ``engine``: the command runs the configured engine: vLLM, which the ``cpu`` or
    ``gpu`` extra installs, or (``engine.kind=remote``) an HTTP client of a vLLM
    server, which the ``remote`` extra installs; otherwise the ``worker`` extra
    (templates, tokenizer, metrics) is enough. ``server``: the command runs vLLM
    whatever the engine kind (``serve-engine``).
    """
    from structsum.config import get_settings

    remote = engine and not server and get_settings().engine.kind == "remote"
    modules: tuple[str, ...] = WORKER_MODULES
    if engine:
        modules = (*WORKER_MODULES, "httpx" if remote else "vllm")
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if not missing:
        return
    extras = (["remote"] if remote else ["cpu", "gpu"]) if engine else ["worker"]
    install = " or ".join(f"pip install 'structsum[{extra}]'" for extra in extras)
    raise MissingExtra(
        f"`structsum {command}` needs the {' or '.join(extras)} extra "
        f"(not installed: {', '.join(missing)}): {install}",
        {"command": command, "extras": extras, "missing": missing},
    )


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
        # Messages quote user input and extras ('structsum[cpu]'): never rich markup.
        err.print(f"[bold red]error[/] {exc.code}: {escape(exc.message)}", highlight=False)
        if exc.details.get("errors"):
            err.print(json.dumps(exc.details["errors"], indent=2), highlight=False)
        if exc.hint:
            err.print(f"[yellow]hint[/] {escape(exc.hint)}", highlight=False)
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
