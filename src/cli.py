"""``structsum`` command line: one-shot summarize/enhance in-process, templates, service.

Results (JSON) go to stdout or ``--out``; progress, timings and errors go to
stderr, so the output can be piped. Expected errors print their message and hint
and exit non-zero without a traceback.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from structsum.commands.common import err, read_text, require_extra, typed_errors, waiting
from structsum.commands.service import app as service_app
from structsum.commands.templates import app as templates_app
from structsum.config import get_settings
from structsum.logs import configure_logging, engine_environment

app = typer.Typer(
    name="structsum",
    help="Structured-output summarization on vLLM.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(templates_app, name="templates", help="List, check and show templates.")
# worker, enqueue, result, stats: the queue side, at the top level.
app.add_typer(service_app)


def emit(payload: dict[str, Any], out: Path | None) -> None:
    text = json.dumps(payload, indent=2, ensure_ascii=False)
    if out is None:
        typer.echo(text)
    else:
        out.write_text(text + "\n", encoding="utf-8")
        err.print(f"wrote {out}")


@app.command()
def summarize(
    source: Annotated[str, typer.Argument(help="text file, or - for stdin")],
    template: Annotated[str, typer.Option("--template", "-t", help="template id")] = (
        "generic_summary_v1"
    ),
    enhance_first: Annotated[bool, typer.Option("--enhance", help="clean the text first")] = False,
    language: Annotated[str | None, typer.Option(help="output language hint")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="write JSON here")] = None,
    full: Annotated[bool, typer.Option(help="print the whole result, not only data")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Summarize a text into the template's JSON, in this process (no queue)."""
    from structsum.models import SummaryRequest

    settings = get_settings()
    configure_logging("INFO" if verbose else "WARNING")
    with typed_errors():
        require_extra("summarize", engine=True)
        from structsum.processors.templates import load_template

        request = SummaryRequest(
            text=read_text(source), template_id=template, language=language, enhance=enhance_first
        )
        load_template(
            settings.template_dirs, template, settings.templates
        )  # fail fast, before the engine loads
        engine = _load_engine(verbose)
        from structsum.processors.summary import summarize as run_summary

        with waiting(f"summarizing with {template}"):
            result = run_summary(request, engine=engine, settings=settings)
    tries = ", ".join(
        f"t={a.temperature} {a.decoding or 'unguided'} {'ok' if a.valid else 'invalid'}"
        for a in result.attempts
    )
    err.print(
        f"{'valid' if result.valid else '[red]INVALID[/]'} after {len(result.attempts)} "
        f"attempt(s) {escape(f'[{tries}]')} in {result.elapsed_s:.1f} s, "
        f"{result.usage.prompt_tokens} prompt + {result.usage.completion_tokens} output tokens"
    )
    for error in result.errors:
        err.print(f"  {error}", highlight=False)
    emit(result.model_dump(mode="json") if full else (result.data or {}), out)
    if not result.valid:
        raise typer.Exit(3)


@app.command()
def enhance(
    source: Annotated[str, typer.Argument(help="text file, or - for stdin")],
    language: Annotated[str | None, typer.Option(help="output language hint")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="write the text here")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Clean up a transcript (punctuation, casing, filler words), in this process."""
    from structsum.models import EnhancementRequest

    settings = get_settings()
    configure_logging("INFO" if verbose else "WARNING")
    with typed_errors():
        require_extra("enhance", engine=True)
        from structsum.processors.enhancement import enhance as run_enhance

        request = EnhancementRequest(text=read_text(source), language=language)
        engine = _load_engine(verbose)
        with waiting("enhancing"):
            result = run_enhance(request, engine=engine, settings=settings)
    err.print(
        f"enhanced in {result.elapsed_s:.1f} s ({result.chunks} chunk(s), "
        f"{result.usage.completion_tokens} tokens{', TRUNCATED' if result.truncated else ''})"
    )
    if out is None:
        typer.echo(result.text)
    else:
        out.write_text(result.text + "\n", encoding="utf-8")


def _load_engine(verbose: bool) -> Any:
    # vLLM reads its log level at import, which happens below: set it first.
    engine_environment("INFO" if verbose else "WARNING")
    from structsum.processors.engine import load_engine
    from structsum.processors.model_store import resolve_model

    settings = get_settings()
    if not settings.engine.model:
        with waiting("preparing the bundled model (converted once, then cached)"):
            resolve_model(None, settings.cache_dir)
    started = time.perf_counter()
    with waiting("starting the engine (the first start compiles, ~2 min)"):
        engine = load_engine(settings.engine, settings.cache_dir)
    err.print(f"engine ready in {time.perf_counter() - started:.1f} s: {engine.model_name}")
    return engine


def main() -> None:
    engine_environment()  # before any command imports vLLM (worker, templates check)
    try:
        app()
    finally:
        from structsum.processors.engine import close_engine

        close_engine()


if __name__ == "__main__":
    main()
