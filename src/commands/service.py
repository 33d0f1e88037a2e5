"""CLI for the queue: `worker`, `enqueue summarize|enhance`, `result`, `stats`.

Only `worker` imports the engine; the other commands talk to Redis alone, so
they run on any machine that has the package and the broker URL.
Exit codes: 0 ok, 1 a typed error (message and hint on stderr), 3 not ready yet.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from structsum.commands.common import (
    EXIT_ERROR,
    err,
    read_text,
    require_extra,
    typed_errors,
    waiting,
)
from structsum.config import get_settings
from structsum.errors import RequestInvalid

app = typer.Typer(
    help="Run workers and queue jobs.", no_args_is_help=True, pretty_exceptions_enable=False
)
enqueue_app = typer.Typer(help="Queue a job; prints its id, or its result with --wait.")
app.add_typer(enqueue_app, name="enqueue")

EXIT_NOT_READY = 3



def _variables(pairs: list[str]) -> dict[str, str]:
    variables: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise RequestInvalid(f"--var wants KEY=VALUE, got {pair!r}", {"var": pair})
        variables[key] = value
    return variables


def _print_json(payload: Any) -> None:
    typer.echo(json.dumps(payload, indent=2, ensure_ascii=False))


@app.command()
def worker(
    concurrency: Annotated[
        int | None,
        typer.Option(help="job threads sharing the engine [default: queue.worker_concurrency]"),
    ] = None,
    loglevel: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING, ...")] = "INFO",
    hostname: Annotated[
        str | None, typer.Option(help="worker node name, e.g. structsum@%h (unique per worker)")
    ] = None,
) -> None:
    """Start a Celery worker: one engine, loaded once, shared by the threads pool.

    Exits with the worker's status: 0 after a normal shutdown, 70 when it stopped
    because its engine died, hung or kept failing (a supervisor should restart it).
    """
    with typed_errors():
        require_extra("worker", engine=True)
    from structsum.tasks import app as celery_app
    from structsum.tasks import runtime

    queue = get_settings().queue
    argv = [
        "worker",
        "--pool=threads",
        f"--concurrency={concurrency or queue.worker_concurrency}",
        f"--loglevel={loglevel}",
        f"--queues={queue.queue_name}",
    ]
    if hostname:
        argv.append(f"--hostname={hostname}")
    # worker_main() drops the worker's status and start() returns it only sometimes
    # (click returns instead of raising Exit); the runtime records it at shutdown.
    status = celery_app.start(argv) or runtime().exit_status
    if status:
        raise typer.Exit(int(status))


@enqueue_app.command("summarize")
def enqueue_summarize(
    file: Annotated[Path, typer.Argument(help="UTF-8 text file, or - for stdin")],
    template: Annotated[str, typer.Option("--template", "-t", help="template id")],
    language: Annotated[str | None, typer.Option(help="output language, e.g. en")] = None,
    var: Annotated[
        list[str] | None, typer.Option("--var", help="extra prompt variable KEY=VALUE")
    ] = None,
    enhance: Annotated[bool, typer.Option(help="clean the text up first")] = False,
    wait: Annotated[bool, typer.Option(help="wait and print the result")] = False,
    timeout: Annotated[float, typer.Option(help="seconds to wait with --wait")] = 600.0,
) -> None:
    """Queue a summary of FILE against a template."""
    from structsum.client import enqueue_summary

    with typed_errors():
        handle = enqueue_summary(
            read_text(file),
            template,
            language=language,
            variables=_variables(var or []),
            enhance=enhance,
        )
        _finish(handle.id, handle, wait, timeout)


@enqueue_app.command("enhance")
def enqueue_enhance(
    file: Annotated[Path, typer.Argument(help="UTF-8 text file, or - for stdin")],
    language: Annotated[str | None, typer.Option(help="output language, e.g. en")] = None,
    wait: Annotated[bool, typer.Option(help="wait and print the result")] = False,
    timeout: Annotated[float, typer.Option(help="seconds to wait with --wait")] = 600.0,
) -> None:
    """Queue an enhancement (clean-up) of FILE."""
    from structsum.client import enqueue_enhancement

    with typed_errors():
        handle = enqueue_enhancement(read_text(file), language=language)
        _finish(handle.id, handle, wait, timeout)


def _finish(task_id: str, handle: Any, wait: bool, timeout: float) -> None:
    if not wait:
        typer.echo(task_id)
        return
    err.print(f"job {task_id}", highlight=False)
    with waiting(f"waiting for job {task_id}"):
        result = handle.result(timeout)
    _print_json(result.model_dump(mode="json"))


@app.command()
def result(
    task_id: Annotated[str, typer.Argument(help="id printed by `structsum enqueue`")],
    wait: Annotated[bool, typer.Option(help="wait for a job that is not finished")] = False,
    timeout: Annotated[float, typer.Option(help="seconds to wait with --wait")] = 600.0,
) -> None:
    """Print a job's result; exit 3 while it is not finished (PENDING also means unknown)."""
    from structsum.client import job

    with typed_errors():
        handle = job(task_id)
        if not wait and not handle.ready():
            err.print(f"job {task_id} is {handle.state}", highlight=False)
            raise typer.Exit(EXIT_NOT_READY)
        with waiting(f"waiting for job {task_id}"):
            outcome = handle.result(timeout)
        _print_json(outcome.model_dump(mode="json"))


@app.command()
def stats(
    timeout: Annotated[float, typer.Option(help="seconds to wait for workers' replies")] = 2.0,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
) -> None:
    """Workers, their pools and structsum counters, and the queue length."""
    from structsum.service.stats import collect

    with typed_errors():
        report = collect(timeout=timeout)
    if as_json:
        _print_json(report)
        return
    console = Console()
    console.print(f"queue {report['queue']}: {report['queued']} waiting", highlight=False)
    table = Table(
        "worker",
        "pool",
        "threads",
        "engine",
        "processed",
        "errors",
        "in flight",
        "max",
        "avg latency s",
        "valid rate",
        "tokens out",
    )
    for name, w in sorted(report["workers"].items()):
        s = w.get("structsum") or {}
        valid = s.get("valid_rate")
        table.add_row(
            name,
            str(w.get("pool", "?")),
            str(w.get("concurrency", "?")),
            "up" if s.get("engine_loaded") else "down",
            str(s.get("processed", "?")),
            str(s.get("errors", "?")),
            str(s.get("in_flight", "?")),
            str(s.get("max_in_flight", "?")),
            f"{s.get('avg_latency_s', 0.0):.2f}",
            "-" if valid is None else f"{valid:.0%}",
            str(s.get("completion_tokens", "?")),
        )
    console.print(table)
    if not report["workers"]:
        err.print("no worker answered; start one with `structsum worker`", highlight=False)
        raise typer.Exit(EXIT_ERROR)


if __name__ == "__main__":
    app()
