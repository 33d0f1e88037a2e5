"""CLI for the queue: `worker`, `enqueue summarize|enhance`, `ask`, `result`, `stats`.

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


# Where `serve-engine` listens when engine.url names no port (vLLM's own default).
DEFAULT_SERVER_PORT = 8000


@app.command("serve-engine")
def serve_engine(
    host: Annotated[
        str | None,
        typer.Option(help="address to bind [default: engine.url's host; 0.0.0.0 for all]"),
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="port [default: engine.url's port, else 8000]")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="print the server command instead of running it")
    ] = False,
) -> None:
    """Start a vLLM OpenAI server built from the engine settings, for remote workers.

    The same settings (model, max_model_len, backend, KV cache, batch size...) that
    a local worker's engine gets become the server's flags, so workers with
    engine.kind=remote and engine.url pointing here plan budgets against the
    server they talk to. This process is replaced by the server (exec): signals and
    the exit status are the server's own.
    """
    import os
    import sys
    from urllib.parse import urlsplit

    from structsum.logs import engine_environment

    with typed_errors():
        require_extra("serve-engine", engine=True, server=True)
        settings = get_settings()
        engine_settings = settings.engine
        where = urlsplit(engine_settings.url or "")
        from structsum.processors.model_store import resolve_model
        from structsum.processors.vllm_args import prepare_engine_environment, serve_command

        model = resolve_model(engine_settings.model, settings.cache_dir)
        argv = serve_command(
            engine_settings,
            model,
            host=host or where.hostname or "127.0.0.1",
            port=port or where.port or DEFAULT_SERVER_PORT,
            python=sys.executable,
        )
    if dry_run:
        typer.echo(" ".join(argv))
        return
    engine_environment()
    prepare_engine_environment(engine_settings)
    if engine_settings.api_key is not None:
        os.environ["VLLM_API_KEY"] = engine_settings.api_key.get_secret_value()
    err.print(f"starting the vLLM server: {' '.join(argv[3:])}", highlight=False)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(argv[0], argv)


@enqueue_app.command("summarize")
def enqueue_summarize(
    file: Annotated[Path, typer.Argument(help="UTF-8 text file, or - for stdin")],
    template: Annotated[str, typer.Option("--template", "-t", help="template id")],
    language: Annotated[str | None, typer.Option(help="output language, e.g. en")] = None,
    var: Annotated[
        list[str] | None, typer.Option("--var", help="extra prompt variable KEY=VALUE")
    ] = None,
    enhance: Annotated[bool, typer.Option(help="clean the text up first")] = False,
    cache: Annotated[bool, typer.Option(help="answer from the result cache if stored")] = True,
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
            use_cache=cache,
        )
        _finish(handle.id, handle, wait, timeout)


@enqueue_app.command("enhance")
def enqueue_enhance(
    file: Annotated[Path, typer.Argument(help="UTF-8 text file, or - for stdin")],
    language: Annotated[str | None, typer.Option(help="output language, e.g. en")] = None,
    cache: Annotated[bool, typer.Option(help="answer from the result cache if stored")] = True,
    wait: Annotated[bool, typer.Option(help="wait and print the result")] = False,
    timeout: Annotated[float, typer.Option(help="seconds to wait with --wait")] = 600.0,
) -> None:
    """Queue an enhancement (clean-up) of FILE."""
    from structsum.client import enqueue_enhancement

    with typed_errors():
        handle = enqueue_enhancement(read_text(file), language=language, use_cache=cache)
        _finish(handle.id, handle, wait, timeout)


@app.command("ask")
def ask_command(
    conversation: Annotated[str, typer.Argument(help="conversation id (any name you choose)")],
    question: Annotated[str, typer.Argument(help="the question")],
    file: Annotated[
        Path | None, typer.Option("--text", help="the document, first question only (- stdin)")
    ] = None,
    job_id: Annotated[
        str | None, typer.Option("--job", help="a finished summary job as the document")
    ] = None,
    template: Annotated[
        str | None, typer.Option("--template", "-t", help="answer as this template's JSON")
    ] = None,
    language: Annotated[str | None, typer.Option(help="answer language, e.g. en")] = None,
    max_tokens: Annotated[
        int | None, typer.Option(help="cap on the answer's tokens [default: sampling.ask]")
    ] = None,
    wait: Annotated[bool, typer.Option(help="wait and print the answer")] = True,
    timeout: Annotated[float, typer.Option(help="seconds to wait")] = 600.0,
) -> None:
    """Ask a follow-up question about a document; the worker keeps the conversation."""
    from structsum.client import ask

    with typed_errors():
        handle = ask(
            conversation,
            question,
            text=None if file is None else read_text(file),
            summary_job_id=job_id,
            template_id=template,
            language=language,
            max_tokens=max_tokens,
        )
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
    """Print a job's result; exit 3 while it is not finished (PENDING, or UNKNOWN id)."""
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
        "cache hits",
        "prefix hit rate",
    )
    for name, w in sorted(report["workers"].items()):
        s = w.get("structsum") or {}
        valid = s.get("valid_rate")
        prefix = (s.get("engine") or {}).get("prefix_hit_rate")
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
            str(s.get("cache_hits", "?")),
            "-" if prefix is None else f"{prefix:.0%}",
        )
    console.print(table)
    if not report["workers"]:
        err.print("no worker answered; start one with `structsum worker`", highlight=False)
        raise typer.Exit(EXIT_ERROR)


if __name__ == "__main__":
    app()
