"""``structsum templates list|check|show|add``: what templates exist, whether they work, what
decodes, and a new template from a schema someone already has.

``check`` is the gate a template author runs before shipping (the checks are in
processors/template_check.py); it prints one line per template and per problem,
and exits 1 when any template has one. Errors are reported the way every command
reports them (``typed_errors``): one line, a hint, exit 1, never a traceback.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from structsum.commands.common import read_text, require_extra, typed_errors
from structsum.config import get_settings
from structsum.errors import (
    InputUnreadable,
    SchemaInvalid,
    TemplateError,
    TemplateInvalid,
    TemplateNotFound,
)

if TYPE_CHECKING:
    from structsum.processors.policy import SimplifyPolicy
    from structsum.processors.templates import Template

app = typer.Typer(help="List, check and inspect summary templates (schemas/<id>/).")
out = Console()


def _caps(simplify: SimplifyPolicy) -> str:
    """The policy's caps as ``items/chars`` (``stripped``: none in the grammar)."""
    if simplify.strip_caps:
        return "stripped"
    return f"{simplify.max_items}/{simplify.max_string_length}"


def _decodings_used(template: Template) -> list[str]:
    """The decoding schemas the attempts use, once each, in attempt order."""
    retry = template.policy.retry
    return list(dict.fromkeys(retry.decoding_for(i) for i in range(retry.attempts)))


def _templates_dirs(command: str) -> tuple[Path, ...]:
    """The search path; refuses with the extra to install when the loader's deps are missing."""
    with typed_errors():
        require_extra(f"templates {command}", engine=False)
    return get_settings().template_dirs


def _all_ids(dirs: tuple[Path, ...]) -> list[str]:
    from structsum.processors.templates import list_templates

    ids = list_templates(dirs)
    if not ids:
        where = ", ".join(str(d) for d in dirs)
        raise TemplateNotFound(
            f"no templates in {where} (STRUCTSUM_TEMPLATES_DIR adds a directory)",
            {"templates_dir": where},
        )
    return ids


@app.command("list")
def list_command() -> None:
    """List the templates with their decoding mode and caps."""
    directory = _templates_dirs("list")
    from structsum.processors.templates import load_template

    with typed_errors():
        ids = _all_ids(directory)
    table = Table("id", "title", "mode", "caps (items/chars)", "attempts", "sha256")
    for template_id in ids:
        try:
            t = load_template(directory, template_id, get_settings().templates)
        except TemplateError as exc:
            table.add_row(template_id, f"[red]invalid: {exc.code}[/red]", "", "", "", "")
            continue
        caps = ", ".join(_caps(t.policy.simplify.variant(name)) for name in _decodings_used(t))
        table.add_row(
            t.id,
            str(t.schema.get("title", "")),
            t.policy.simplify.mode,
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
    backend = get_settings().engine.structured_output_backend
    with typed_errors():
        ids = [template_id] if template_id else _all_ids(directory)
        failed = [tid for tid in ids if not _report(tid, directory, backend)]
        if failed:
            raise TemplateInvalid(
                f"{len(failed)} of {len(ids)} template(s) have problems: {', '.join(failed)}",
                {"template_ids": failed},
            )


def _report(template_id: str, directory: tuple[Path, ...], backend: str) -> bool:
    """Print one template's check (``ok`` or one ``FAIL`` line per problem); True when ok."""
    from structsum.processors.template_check import template_problems

    problems = template_problems(
        directory, template_id, backend=backend, options=get_settings().templates
    )
    for problem in problems:
        out.print(f"[red]FAIL[/red] {template_id}: {problem}", soft_wrap=True)
    if not problems:
        out.print(f"[green]ok[/green]   {template_id}")
    return not problems


@app.command("show")
def show_command(
    template_id: Annotated[str, typer.Argument(help="template id")],
    text: Annotated[
        Path | None,
        typer.Option(
            help="a source text: show its per-request decoding schema (verbatim fields as "
            "enums of its sentences) and the grounding of --data in it",
        ),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(help="a summary's JSON to grade against --text; default: example.json"),
    ] = None,
) -> None:
    """Print the policy, each attempt's decoding schema and caps, and every decoding schema.

    The template is shown under the settings' profile (its ``[profiles.<name>]``
    overrides applied), with its verbatim fields.
    """
    directory = _templates_dirs("show")
    from structsum.processors.schema_walk import json_path
    from structsum.processors.template_check import keyword_coverage
    from structsum.processors.templates import load_template

    settings = get_settings()
    with typed_errors():
        t = load_template(directory, template_id, settings.templates).for_profile(settings.profile)
        decodings = t.decodings
        source = read_text(text) if text is not None else None
    out.print(f"[bold]{t.id}[/bold]  {t.path}")
    out.print(f"schema sha256: {t.schema_sha256}")
    out.print(f"draft: {t.draft.name} (results are validated by its validator)")
    out.print("[bold]normalisation to 2020-12 (decoding copy)[/bold]")
    for change in t.normalisation or ("(none)",):
        out.print(f"  - {change}", soft_wrap=True, markup=False)
    origin = (
        f"the {settings.templates.default_policy} profile's default (no policy.toml)"
        if t.default_policy
        else "policy.toml"
    )
    out.print(f"[bold]policy[/bold] from {origin}, profile {settings.profile}")
    out.print_json(json.dumps(t.policy.model_dump(mode="json")))
    grammar, validation = keyword_coverage(t)
    out.print(f"[bold]enforced by the grammar[/bold]: {', '.join(grammar) or '(none)'}")
    out.print(
        f"[bold]checked only by validation[/bold]: {', '.join(validation) or '(none)'}",
        soft_wrap=True,
    )
    out.print(_attempts_table(t))
    for name, decoding in decodings.items():
        out.print(
            f"[bold]decoding schema {name!r}[/bold]: mode {decoding.mode}, caps {decoding.caps}"
        )
        out.print("[bold]changes from the full schema[/bold]")
        for change in decoding.changes or ["(none)"]:
            out.print(f"  - {change}", soft_wrap=True, markup=False)
        out.print("[bold]verbatim fields[/bold] (copied from the text, constrained and checked)")
        for path in decoding.verbatim_paths or [()]:
            out.print(f"  - {json_path(path)}" if path else "  (none)", soft_wrap=True)
        schema = decoding.schema
        if source is not None:
            from structsum.processors.verbatim import request_guide

            guide = request_guide(
                decoding, source, settings.grounding, settings.engine.structured_output_backend
            )
            schema = guide.value if guide is not None and isinstance(guide.value, dict) else schema
        if decoding.regex is not None:
            out.print("[bold]decoding regex[/bold]")
            out.print(decoding.regex, soft_wrap=True, markup=False, highlight=False)
        elif schema is not None:
            title = "decoding schema" + (f" for {text}" if text is not None else "")
            out.print(f"[bold]{title}[/bold]")
            out.print_json(json.dumps(schema))
    if source is not None:
        _show_grounding(t, source, data, settings)


def _attempts_table(template: Template) -> Table:
    """One row per attempt: its decoding schema, the caps its grammar enforces, sampling."""
    retry = template.policy.retry
    table = Table(
        "attempt",
        "decoding schema",
        "guided",
        "caps in the grammar",
        "temperature",
        title="attempts (the full schema judges every answer)",
    )
    for index in range(retry.attempts):
        name, decoding = template.decoding_for(index)
        guided = retry.guided_for(index) and decoding.guide is not None
        table.add_row(
            str(index + 1),
            name,
            "yes" if guided else "no",
            decoding.caps if guided else "none (unguided)",
            f"{retry.temperature_for(index):g}",
        )
    return table


def _read_json(path: Path) -> Any:
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        raise InputUnreadable(f"{path} is not JSON: {exc}", {"path": str(path)}) from exc


def _show_grounding(template: Any, source: str, data: Path | None, settings: Any) -> None:
    """The grounding of ``data`` (default: the template's example) in ``source``."""
    from structsum.processors.summary import summary_grounding

    with typed_errors():
        summary = template.example if data is None else _read_json(data)
        if isinstance(summary, dict) and isinstance(summary.get("data"), dict):
            summary = summary["data"]  # a whole SummaryResult, as `enqueue --wait` prints
        graded = summary_grounding(template, summary, source, settings=settings)
    name = "example.json" if data is None else str(data)
    if graded is None:
        out.print(f"[bold]grounding[/bold] of {name}: no data")
        return
    score = "n/a" if graded.score is None else f"{graded.score:.2f}"
    verbatim = (
        f", verbatim {graded.verbatim_copied}/{graded.verbatim_fields} copied"
        if graded.verbatim_fields
        else ""
    )
    out.print(
        f"[bold]grounding[/bold] of {name}: {score} of {graded.content_words} content words "
        f"found in the text{verbatim}"
    )


@app.command("add")
def add_command(
    template_id: Annotated[str, typer.Argument(help="id of the new template (its folder name)")],
    schema: Annotated[Path, typer.Option(help="the JSON Schema file (drafts 4 to 2020-12)")],
    prompt: Annotated[
        Path | None,
        typer.Option(help="a prompt.jinja to use; default: one built from the schema"),
    ] = None,
) -> None:
    """Create a template from a schema (prompt, example, policy), then check it."""
    dirs = _templates_dirs("add")
    from structsum.processors.scaffold import write_template
    from structsum.processors.schema_registry import load_registry
    from structsum.processors.templates import check_template_id

    settings = get_settings()
    target_root = dirs[0]
    with typed_errors():
        if (target_root / template_id).exists():
            raise TemplateInvalid(
                f"template {template_id!r} already exists in {target_root}",
                {"template_id": template_id},
                hint="pick another id, or remove the folder first",
            )
        check_template_id(template_id)
        schema_doc = _read_schema_json(schema)
        registry_dir = settings.templates.schema_registry_dir
        registry = load_registry(registry_dir) if registry_dir is not None else None
        prompt_text = _read_text(prompt) if prompt is not None else None
        written = write_template(
            target_root / template_id,
            schema_doc,
            prompt=prompt_text,
            kind=settings.templates.default_policy,
            format_checking=settings.templates.format_checking,
            registry=registry,
        )
    for path in written:
        out.print(f"wrote {path}")
    with typed_errors():
        if not _report(template_id, dirs, settings.engine.structured_output_backend):
            raise TemplateInvalid(
                f"template {template_id!r} was written but has problems (see above)",
                {"template_id": template_id},
                hint="edit the files it names, then `structsum templates check ID`",
            )


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputUnreadable(f"cannot read {path}: {exc}", {"path": str(path)}) from exc


def _read_schema_json(path: Path) -> dict[str, object]:
    try:
        value = json.loads(_read_text(path))
    except json.JSONDecodeError as exc:
        raise SchemaInvalid(f"{path}: not valid JSON: {exc}", {"path": str(path)}) from exc
    if not isinstance(value, dict):
        raise SchemaInvalid(f"{path}: the schema must be a JSON object", {"path": str(path)})
    return value
