"""``structsum templates list|check|show``: what templates exist, whether they work, what decodes.

``check`` is the gate a template author runs before shipping: everything loading
checks (schema, example, policy, prompt), plus the decoding side - the simplified
schema keeps the example, vLLM does not refuse it for xgrammar (when xgrammar is
the configured backend), and xgrammar compiles it the way vLLM does and accepts
the example.
Problems are printed as one line each and the exit status is 1; never a traceback.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.table import Table

from structsum.commands.common import require_extra, typed_errors
from structsum.config import get_settings
from structsum.errors import StructsumError, TemplateError

if TYPE_CHECKING:
    from structsum.processors.templates import Template

app = typer.Typer(help="List, check and inspect summary templates (schemas/<id>/).")
out = Console()
err = Console(stderr=True)


def _templates_dirs(command: str) -> tuple[Path, ...]:
    """The search path; refuses with the extra to install when the loader's deps are missing."""
    with typed_errors():
        require_extra(f"templates {command}", engine=False)
    return get_settings().template_dirs


def _where(dirs: tuple[Path, ...]) -> str:
    return ", ".join(str(d) for d in dirs)


def _vllm_refuses(schema: dict[str, Any]) -> bool | None:
    """vLLM's own test for schemas its xgrammar backend refuses; None without vLLM."""
    try:
        from vllm.v1.structured_output.backend_xgrammar import (
            has_xgrammar_unsupported_json_features,
        )
    except ImportError:
        return None
    return bool(has_xgrammar_unsupported_json_features(schema))


def decoding_problems(template: Template, *, backend: str) -> list[str]:
    """What keeps the decoder from producing output like the template's own example."""
    from structsum.processors.templates import grammar_accepts, validate_instance

    decoding = template.decoding
    if decoding.schema is None or decoding.mode != "json_schema":
        return []
    problems = [
        f"example is outside the decoding schema: {error}"
        for error in validate_instance(decoding.schema, template.example)
    ]
    if backend == "xgrammar" and _vllm_refuses(decoding.schema):
        problems.append(
            "vLLM refuses the decoding schema for xgrammar (e.g. uniqueItems, contains, "
            "multipleOf): add them to [simplify] drop_keywords"
        )
    if not grammar_accepts(decoding.schema, template.example):
        problems.append(
            "xgrammar rejects the example under the decoding schema "
            "(keys must follow the schema's property order; values within the caps)"
        )
    return problems


@app.command("list")
def list_command() -> None:
    """List the templates with their decoding mode and caps."""
    directory = _templates_dirs("list")
    from structsum.processors.templates import list_templates, load_template

    ids = list_templates(directory)
    if not ids:
        err.print(f"no templates in {_where(directory)}")
        raise typer.Exit(1)
    table = Table("id", "title", "mode", "caps (items/chars)", "attempts", "sha256")
    for template_id in ids:
        try:
            t = load_template(directory, template_id)
        except TemplateError as exc:
            table.add_row(template_id, f"[red]invalid: {exc.code}[/red]", "", "", "", "")
            continue
        simplify = t.policy.simplify
        caps = (
            "stripped"
            if simplify.strip_caps
            else f"{simplify.max_items}/{simplify.max_string_length}"
        )
        table.add_row(
            t.id,
            str(t.schema.get("title", "")),
            simplify.mode,
            caps,
            str(t.policy.retry.attempts),
            t.schema_sha256[:12],
        )
    out.print(table)


@app.command("check")
def check_command(
    template_id: str | None = typer.Argument(None, help="one template id; default: all"),
) -> None:
    """Validate schema, example, policy, prompt and the decoding grammar; exit 1 on problems."""
    directory = _templates_dirs("check")
    from structsum.processors.templates import list_templates, load_template

    backend = get_settings().engine.structured_output_backend
    ids = [template_id] if template_id else list_templates(directory)
    if not ids:
        err.print(f"no templates in {_where(directory)}")
        raise typer.Exit(1)
    failed = 0
    for tid in ids:
        try:
            problems = decoding_problems(load_template(directory, tid), backend=backend)
        except StructsumError as exc:
            problems = [f"{exc.code}: {exc.message}"]
        if problems:
            failed += 1
            for problem in problems:
                out.print(f"[red]FAIL[/red] {tid}: {problem}", soft_wrap=True)
        else:
            out.print(f"[green]ok[/green]   {tid}")
    if failed:
        err.print(f"{failed} of {len(ids)} template(s) have problems")
        raise typer.Exit(1)


@app.command("show")
def show_command(template_id: str = typer.Argument(..., help="template id")) -> None:
    """Print the policy, what simplification changed, and the decoding schema or regex."""
    directory = _templates_dirs("show")
    from structsum.processors.templates import load_template

    try:
        t = load_template(directory, template_id)
        decoding = t.decoding
    except StructsumError as exc:
        err.print(f"[red]{exc.code}[/red]: {exc}", soft_wrap=True)
        raise typer.Exit(1) from None
    out.print(f"[bold]{t.id}[/bold]  {t.path}")
    out.print(f"schema sha256: {t.schema_sha256}")
    out.print("[bold]policy[/bold]")
    out.print_json(json.dumps(t.policy.model_dump(mode="json")))
    out.print(f"[bold]decoding mode[/bold]: {decoding.mode}")
    out.print("[bold]changes from the full schema[/bold]")
    for change in decoding.changes or ["(none)"]:
        out.print(f"  - {change}", soft_wrap=True)
    if decoding.regex is not None:
        out.print("[bold]decoding regex[/bold]")
        out.print(decoding.regex, soft_wrap=True, markup=False, highlight=False)
    elif decoding.schema is not None:
        out.print("[bold]decoding schema[/bold]")
        out.print_json(json.dumps(decoding.schema))
