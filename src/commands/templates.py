"""``structsum templates list|check|show``: what templates exist, whether they work, what decodes.

``check`` is the gate a template author runs before shipping (the checks are in
processors/template_check.py); it prints one line per template and per problem,
and exits 1 when any template has one. Errors are reported the way every command
reports them (``typed_errors``): one line, a hint, exit 1, never a traceback.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from structsum.commands.common import typed_errors
from structsum.config import get_settings
from structsum.errors import TemplateError, TemplateInvalid, TemplateNotFound
from structsum.processors.template_check import template_problems
from structsum.processors.templates import list_templates, load_template

app = typer.Typer(help="List, check and inspect summary templates (schemas/<id>/).")
out = Console()


def _templates_dir() -> Path:
    return get_settings().templates_dir


def _all_ids(directory: Path) -> list[str]:
    ids = list_templates(directory)
    if not ids:
        raise TemplateNotFound(
            f"no templates in {directory} (STRUCTSUM_TEMPLATES_DIR names the directory)",
            {"templates_dir": str(directory)},
        )
    return ids


@app.command("list")
def list_command() -> None:
    """List the templates with their decoding mode and caps."""
    directory = _templates_dir()
    with typed_errors():
        ids = _all_ids(directory)
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
    directory = _templates_dir()
    backend = get_settings().engine.structured_output_backend
    with typed_errors():
        ids = [template_id] if template_id else _all_ids(directory)
        failed = [tid for tid in ids if not _report(tid, directory, backend)]
        if failed:
            raise TemplateInvalid(
                f"{len(failed)} of {len(ids)} template(s) have problems: {', '.join(failed)}",
                {"template_ids": failed},
            )


def _report(template_id: str, directory: Path, backend: str) -> bool:
    """Print one template's check (``ok`` or one ``FAIL`` line per problem); True when ok."""
    problems = template_problems(directory, template_id, backend=backend)
    for problem in problems:
        out.print(f"[red]FAIL[/red] {template_id}: {problem}", soft_wrap=True)
    if not problems:
        out.print(f"[green]ok[/green]   {template_id}")
    return not problems


@app.command("show")
def show_command(template_id: str = typer.Argument(..., help="template id")) -> None:
    """Print the policy, what simplification changed, and the decoding schema or regex."""
    with typed_errors():
        t = load_template(_templates_dir(), template_id)
        decoding = t.decoding
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
