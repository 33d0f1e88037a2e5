"""Templates as data: ``schemas/<id>/{schema.json, prompt.jinja, example.json, policy.toml}``.

Loading checks everything a template author can get wrong, once, and raises a
typed error that names the template and the file: the schema must be a valid
schema of the draft its ``$schema`` declares (4, 6, 7, 2019-09 or 2020-12, see
drafts.py), of bounded size, with no remote ``$ref`` and bounded patterns; the
example must validate, the policy must have only known keys, the prompt must
render (in Jinja's sandbox, see rendering.py) and the decoding schema must be
derivable under the policy. A template without ``policy.toml`` gets the
profile's default policy (policy.py ``default_policy``). Loaded templates are
cached until one of their files changes.
The decoding-side check (``structsum templates check``) is in template_check.py.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

import jinja2
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from jsonschema.protocols import Validator
from pydantic import ValidationError

from structsum.config.settings import TemplateSettings
from structsum.config.template_dirs import (
    TemplateDirs,
    as_dirs,
    find_template_dir,
    template_ids,
)
from structsum.errors import (
    ExampleInvalid,
    PatternUnsafe,
    SchemaInvalid,
    TemplateInvalid,
    TemplateNotFound,
)
from structsum.processors.drafts import Draft, check_schema, declared_draft, normalise
from structsum.processors.policy import DEFAULT_DECODING, Policy, default_policy, describe_error
from structsum.processors.regex_safety import DEFAULT_MAX_PATTERN_CHARS, check_pattern
from structsum.processors.rendering import compile_prompt, render_sample, request_variables
from structsum.processors.schema_refs import offline_registry
from structsum.processors.schema_registry import (
    SchemaRegistry,
    load_registry,
    refused_remote_ref,
)
from structsum.processors.schema_walk import json_path, walk
from structsum.processors.simplify import SimplifiedSchema, inline_refs, simplify_schema
from structsum.processors.verbatim import check_marks, is_marked, mark

log = logging.getLogger(__name__)

SCHEMA_FILE = "schema.json"
PROMPT_FILE = "prompt.jinja"
EXAMPLE_FILE = "example.json"
POLICY_FILE = "policy.toml"
REQUIRED_FILES = (SCHEMA_FILE, PROMPT_FILE, EXAMPLE_FILE)

# Template ids are directory names; anything else (separators, "..") could escape the dir.
_TEMPLATE_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
# A schema `pattern` runs on untrusted model output inside the worker (Python `re`
# backtracks); long patterns are where catastrophic backtracking hides.
MAX_PATTERN_CHARS = DEFAULT_MAX_PATTERN_CHARS
# Validation messages go back into retry prompts and logs; a message that quotes a
# whole runaway string would crowd out the text.
MAX_ERROR_CHARS = 240


@dataclass(frozen=True, eq=False)
class Template:
    """A loaded, checked template, shared by the loader's cache: treat it as read-only.

    Identity equality: the dicts inside are not hashable. Hand a copy of ``schema``
    to anything that may modify it (hypothesis-jsonschema resolves refs in place).
    """

    id: str
    path: Path
    schema: dict[str, Any]
    example: dict[str, Any]
    prompt_source: str
    policy: Policy
    schema_sha256: str
    draft: Draft
    # The schema in draft 2020-12 terms (drafts.py), what simplification starts from.
    normalised: dict[str, Any]
    normalisation: tuple[str, ...] = ()
    # True when policy.toml is absent and ``policy`` is the profile's default.
    default_policy: bool = False
    format_checking: bool = True
    # The allow-listed local registry remote $ref resolve from (settings.templates).
    registry: SchemaRegistry | None = None

    # This template under each hardware profile's policy overrides (see for_profile).
    _profiled: dict[str, Template] = field(default_factory=dict, repr=False, compare=False)

    @cached_property
    def decoding(self) -> SimplifiedSchema:
        """The ``default`` decoding schema: what ``[simplify]`` guides the decoder with."""
        return simplify_schema(self.verbatim_marked, self.policy.simplify, self._decoding_refs)

    @property
    def _decoding_refs(self) -> Any:
        """The 2020-12 copies of the registry's schemas, which remote $ref inline from."""
        return self.registry.decoding if self.registry is not None else None

    @cached_property
    def verbatim_marked(self) -> dict[str, Any]:
        """The schema with the policy's verbatim pointers annotated, as every decoding
        schema is built from it (the simplifier records the marks and strips them)."""
        return mark(self.normalised, self.policy.verbatim)

    @cached_property
    def marked_schema(self) -> dict[str, Any]:
        """The full schema with the policy's verbatim pointers annotated, ``$ref`` inlined.

        What the verbatim check walks (processors/verbatim.py); validation still uses
        ``schema`` as written. A recursive schema keeps its ``$ref`` (values behind one
        are not checked): then it is ``verbatim_marked`` itself, read-only like the rest.
        """
        marked = self.verbatim_marked  # inline_refs copies: the decodings' input stays as is
        try:
            return inline_refs(marked, registry=self._decoding_refs)[0]
        except SchemaInvalid:
            return marked

    @cached_property
    def has_verbatim(self) -> bool:
        """Whether any string field must be copied from the source."""
        return any(is_marked(node) for _, node in walk(self.marked_schema))

    def for_profile(self, profile: str) -> Template:
        """This template under ``profile``'s policy overrides (``[profiles.<name>]``).

        The template itself when the policy has none; cached, so each profile's decoding
        schema is built once.
        """
        if not self.policy.profiles:
            return self
        hit = self._profiled.get(profile)
        if hit is None:
            hit = replace(self, policy=self.policy.for_profile(profile), _profiled={})
            self._profiled[profile] = hit
        return hit

    @cached_property
    def decodings(self) -> dict[str, SimplifiedSchema]:
        """Every decoding schema the policy names, simplified once per loaded template.

        The loader builds them before it caches the template, so the jobs that share
        it read them and never simplify again.
        """
        simplify = self.policy.simplify
        built = {DEFAULT_DECODING: self.decoding}
        for name in simplify.variants:
            built[name] = simplify_schema(
                self.verbatim_marked, simplify.variant(name), self._decoding_refs
            )
        return built

    def decoding_for(self, attempt: int) -> tuple[str, SimplifiedSchema]:
        """The name and decoding schema of the 0-based ``attempt`` (per ``[retry] decoding``)."""
        name = self.policy.retry.decoding_for(attempt)
        return name, self.decodings[name]

    def validate(self, instance: object) -> list[str]:
        """Errors of ``instance`` under the full schema, by its declared draft."""
        return validate_instance(
            self.schema, instance, format_checking=self.format_checking, registry=self.registry
        )

    @property
    def prompt_path(self) -> Path:
        return self.path / PROMPT_FILE

    @cached_property
    def compiled_prompt(self) -> jinja2.Template:
        return compile_prompt(self.prompt_source, str(self.prompt_path), self.id)

    @cached_property
    def request_variables(self) -> frozenset[str]:
        """Names the prompt reads besides the reserved ones: the request supplies them."""
        return request_variables(self.prompt_source)

    @cached_property
    def schema_json(self) -> str:
        return json.dumps(self.schema, indent=2, ensure_ascii=False)

    @cached_property
    def example_json(self) -> str:
        # One line: a small model copies the example's layout, and indentation is output
        # tokens it spends on whitespace.
        return json.dumps(self.example, ensure_ascii=False)


# --- hashing and validation -------------------------------------------------------------


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def schema_sha256(schema: dict[str, Any]) -> str:
    """Stable id of a schema: sha256 of its canonical JSON (same across processes)."""
    return hashlib.sha256(canonical_json(schema).encode("utf-8")).hexdigest()


@lru_cache(maxsize=128)
def _validator(
    canonical: str, format_checking: bool, registry: SchemaRegistry | None = None
) -> Validator:
    schema = json.loads(canonical)
    cls = declared_draft(schema).validator_class
    return cls(
        schema,
        format_checker=cls.FORMAT_CHECKER if format_checking else None,
        registry=registry.validation if registry is not None else offline_registry(),
    )


def _shorten(message: str) -> str:
    if len(message) <= MAX_ERROR_CHARS:
        return message
    half = MAX_ERROR_CHARS // 2
    return f"{message[:half]} ... {message[-half:]}"


def validate_instance(
    schema: dict[str, Any],
    instance: object,
    *,
    format_checking: bool = True,
    registry: SchemaRegistry | None = None,
) -> list[str]:
    """Errors of ``instance`` under ``schema``, by the draft its ``$schema`` declares.

    Returns readable ``"$.path: message"`` strings, sorted by path; ``[]`` when valid.
    ``format_checking`` off treats ``format`` as an annotation (settings.templates);
    ``registry``: the local schema registry remote ``$ref`` resolve from.
    """
    validator = _validator(canonical_json(schema), format_checking, registry)
    errors = validator.iter_errors(instance)
    rendered = {f"{json_path(e.absolute_path)}: {_shorten(e.message)}" for e in errors}
    return sorted(rendered)


# --- loading ----------------------------------------------------------------------------


def list_templates(templates_dir: TemplateDirs) -> list[str]:
    """Ids of the template directories on the search path (hidden ones skipped)."""
    return template_ids(templates_dir)


_cache: dict[tuple[Path, str, str, int], tuple[tuple[float | None, ...], Template]] = {}
_cache_lock = threading.Lock()


def _mtimes(directory: Path) -> tuple[float | None, ...]:
    stamps: list[float | None] = []
    for name in (*REQUIRED_FILES, POLICY_FILE):
        try:
            stamps.append((directory / name).stat().st_mtime_ns)
        except FileNotFoundError:
            stamps.append(None)
    return tuple(stamps)


def check_template_id(template_id: str) -> None:
    """Refuse an id that is not a plain directory name (it could escape the folder)."""
    if not _TEMPLATE_ID.match(template_id) or template_id in (".", ".."):
        raise TemplateNotFound(
            f"template id {template_id!r} is not a valid id (letters, digits, _ . -)",
            {"template_id": template_id},
        )


def template_dir(templates_dir: TemplateDirs, template_id: str) -> Path:
    """The directory of ``template_id``; refuses ids that are not plain directory names."""
    check_template_id(template_id)
    directory = find_template_dir(templates_dir, template_id)
    if directory is None:
        searched = ", ".join(str(d) for d in as_dirs(templates_dir))
        raise TemplateNotFound(
            f"unknown template {template_id!r} (not in {searched})",
            {"template_id": template_id, "templates_dir": searched},
        )
    return directory


def load_template(
    templates_dir: TemplateDirs, template_id: str, options: TemplateSettings | None = None
) -> Template:
    """Load and check a template; cached until one of its files changes.

    ``options`` (``settings.templates``) bound the schema, choose the default policy
    and whether formats are checked; None: the built-in defaults (CPU).
    """
    options = options or TemplateSettings()
    directory = template_dir(templates_dir, template_id)
    registry = _registry(options, template_id)
    key = (directory.resolve(), template_id, options.model_dump_json(), id(registry))
    stamps = _mtimes(directory)
    with _cache_lock:
        hit = _cache.get(key)
    # The cached dicts are shared: a caller that edits one in place (third-party
    # schema tools do) must not change what the next job validates against.
    if hit is not None and hit[0] == stamps:
        if schema_sha256(hit[1].schema) == hit[1].schema_sha256:
            return hit[1]
        log.warning("template %s was modified in memory; reloading it", template_id)
    template = _load(directory, template_id, options, registry)
    with _cache_lock:
        _cache[key] = (stamps, template)
    return template


def _registry(options: TemplateSettings, template_id: str) -> SchemaRegistry | None:
    """The local schema registry of the settings (None: remote $ref are refused)."""
    if options.schema_registry_dir is None:
        return None
    try:
        return load_registry(options.schema_registry_dir)
    except SchemaInvalid as exc:
        raise SchemaInvalid(
            f"template {template_id!r}: {exc.message}", {"template_id": template_id, **exc.details}
        ) from exc


def _load(
    directory: Path,
    template_id: str,
    options: TemplateSettings,
    registry: SchemaRegistry | None = None,
) -> Template:
    def where(name: str) -> str:
        return f"template {template_id!r}: {directory / name}"

    for name in REQUIRED_FILES:
        if not (directory / name).is_file():
            raise TemplateInvalid(
                f"{where(name)}: missing file", {"template_id": template_id, "file": name}
            )

    schema = _load_schema(
        directory / SCHEMA_FILE, where(SCHEMA_FILE), template_id, options, registry
    )
    draft = declared_draft(schema)
    normalised, normalisation = normalise(schema, draft)
    has_policy = (directory / POLICY_FILE).is_file()
    policy = (
        _load_policy(directory / POLICY_FILE, where(POLICY_FILE), template_id)
        if has_policy
        else default_policy(options.default_policy)
    )
    example = _load_example(
        directory / EXAMPLE_FILE, where(EXAMPLE_FILE), template_id, schema, options, registry
    )
    prompt_source = _read(directory / PROMPT_FILE, where(PROMPT_FILE), template_id)
    compile_prompt(prompt_source, where(PROMPT_FILE), template_id)

    template = Template(
        id=template_id,
        path=directory,
        schema=schema,
        example=example,
        prompt_source=prompt_source,
        policy=policy,
        schema_sha256=schema_sha256(schema),
        draft=draft,
        normalised=normalised,
        normalisation=tuple(str(c) for c in normalisation),
        default_policy=not has_policy,
        format_checking=options.format_checking,
        registry=registry,
    )
    source = "policy.toml" if has_policy else f"the {options.default_policy} default policy"
    for profiled in (template, *(template.for_profile(p) for p in policy.profiles)):
        _check_decoding(profiled, where(SCHEMA_FILE), source, options)
    render_sample(template)
    return template


def _check_decoding(template: Template, where: str, source: str, options: TemplateSettings) -> None:
    """Every decoding schema derives under the policy, is a valid schema, and fits."""
    try:
        check_marks(template.schema)
        decodings = template.decodings
    except SchemaInvalid as exc:
        raise SchemaInvalid(
            f"{where}: cannot simplify under {source}: {exc.message}",
            {"template_id": template.id, **exc.details},
        ) from exc
    for name, decoding in decodings.items():
        if decoding.schema is None:
            continue
        try:
            Draft202012Validator.check_schema(decoding.schema)
        except SchemaError as exc:
            raise SchemaInvalid(
                f"{where}: simplified schema {name!r} is invalid: {exc.message}",
                {"template_id": template.id, "decoding": name},
            ) from exc
        size = len(canonical_json(decoding.schema).encode("utf-8"))
        if size > options.max_decoding_schema_bytes:
            raise SchemaInvalid(
                f"{where}: the decoding schema {name!r} is {size} bytes after $ref "
                f"inlining, above templates.max_decoding_schema_bytes "
                f"({options.max_decoding_schema_bytes})",
                {"template_id": template.id, "bytes": size},
                hint="set [simplify] inline_refs = false in policy.toml, or raise "
                "STRUCTSUM_TEMPLATES__MAX_DECODING_SCHEMA_BYTES",
            )


def _read(path: Path, where: str, template_id: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TemplateInvalid(
            f"{where}: cannot read: {exc}", {"template_id": template_id, "file": path.name}
        ) from exc


def _load_schema(
    path: Path,
    where: str,
    template_id: str,
    options: TemplateSettings,
    registry: SchemaRegistry | None = None,
) -> dict[str, Any]:
    details = {"template_id": template_id, "file": path.name}
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise TemplateInvalid(f"{where}: cannot read: {exc}", details) from exc
    if size > options.max_schema_bytes:
        raise SchemaInvalid(
            f"{where}: {size} bytes, above templates.max_schema_bytes ({options.max_schema_bytes})",
            {**details, "bytes": size},
            hint="use a smaller schema (the part the summary needs), or raise "
            "STRUCTSUM_TEMPLATES__MAX_SCHEMA_BYTES",
        )
    try:
        schema = json.loads(_read(path, where, template_id))
    except json.JSONDecodeError as exc:
        raise SchemaInvalid(f"{where}: not valid JSON: {exc}", details) from exc
    if not isinstance(schema, dict):
        raise SchemaInvalid(f"{where}: the schema must be a JSON object", details)
    check_schema_document(schema, where, details, registry=registry)
    return schema


def check_schema_document(
    schema: dict[str, Any],
    where: str = "schema",
    details: dict[str, Any] | None = None,
    *,
    registry: SchemaRegistry | None = None,
) -> None:
    """Refuse, with a typed error naming ``where``, a schema no template may use.

    The schema must be valid under the draft it declares, reference nothing
    outside itself (but the files of the local ``registry``), and have only
    bounded patterns.
    """
    details = details or {}
    try:
        check_schema(schema, declared_draft(schema))
    except SchemaInvalid as exc:
        raise SchemaInvalid(f"{where}: {exc.message}", {**details, **exc.details}) from exc
    refused = refused_remote_ref(schema, where, registry)
    if refused is not None:
        raise SchemaInvalid(refused.message, {**details, **refused.details}, hint=refused.hint)
    for location, pattern in _patterns(schema):
        try:
            check_pattern(pattern, max_chars=MAX_PATTERN_CHARS)
        except PatternUnsafe as exc:
            raise PatternUnsafe(
                f"{where}: pattern at {location}: {exc.message}", {**details, **exc.details}
            ) from exc


def _patterns(schema: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """``(location, pattern)`` of every ``pattern`` and ``patternProperties`` key."""
    for location, node in walk(schema):
        if isinstance(node.get("pattern"), str):
            yield location, node["pattern"]
        if isinstance(node.get("patternProperties"), dict):
            for pattern in node["patternProperties"]:
                yield f"{location}.patternProperties", pattern


def _load_policy(path: Path, where: str, template_id: str) -> Policy:
    details = {"template_id": template_id, "file": path.name}
    try:
        raw = tomllib.loads(_read(path, where, template_id))
    except tomllib.TOMLDecodeError as exc:
        raise TemplateInvalid(f"{where}: not valid TOML: {exc}", details) from exc
    try:
        return Policy.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(describe_error(e) for e in exc.errors())
        raise TemplateInvalid(f"{where}: {problems}", details) from exc


def _load_example(
    path: Path,
    where: str,
    template_id: str,
    schema: dict[str, Any],
    options: TemplateSettings,
    registry: SchemaRegistry | None = None,
) -> dict[str, Any]:
    details: dict[str, Any] = {"template_id": template_id, "file": path.name}
    try:
        example = json.loads(_read(path, where, template_id))
    except json.JSONDecodeError as exc:
        raise ExampleInvalid(f"{where}: not valid JSON: {exc}", details) from exc
    if not isinstance(example, dict):
        raise ExampleInvalid(f"{where}: the example must be a JSON object", details)
    errors = validate_instance(
        schema, example, format_checking=options.format_checking, registry=registry
    )
    if errors:
        raise ExampleInvalid(
            f"{where}: does not validate against schema.json: " + "; ".join(errors),
            {**details, "errors": errors},
        )
    return example
