import shutil
from pathlib import Path

from structsum.config import Settings
from structsum.processors.templates import list_templates, load_template
from structsum.processors.warmup import WARMUP_TOKENS, warm_grammars
from tests.fakes import FakeEngine


def _settings(templates_dir: Path | None = None, profile: str = "gpu") -> Settings:
    # gpu by default: there only interview_summary_v1 has verbatim fields.
    settings = Settings().model_copy(update={"profile": profile})
    if templates_dir is None:
        return settings
    return settings.model_copy(update={"templates_dir": templates_dir})


def test_one_guided_request_per_template_in_one_batch() -> None:
    settings = _settings()
    engine = FakeEngine(lambda _: ("{", "length"))
    warmup = warm_grammars(engine, settings)
    # Templates with verbatim fields build their grammar per request: nothing to warm.
    shipped = [
        t
        for t in list_templates(settings.templates_dir)
        if not load_template(settings.templates_dir, t).for_profile("gpu").decoding.verbatim_paths
    ]
    assert len(shipped) >= 3
    assert warmup.templates == tuple(shipped)
    assert engine.batches == [len(shipped)]
    for template_id, request in zip(shipped, engine.requests, strict=True):
        decoding = load_template(settings.templates_dir, template_id).decoding
        assert request.guide is not None
        assert request.guide.value == decoding.schema  # the grammar the jobs will use
        assert request.max_tokens == WARMUP_TOKENS


def test_unguided_templates_are_skipped(tmp_path: Path) -> None:
    source = _settings().templates_dir
    for name in ("generic_summary_v1", "meeting_minutes_v1"):
        shutil.copytree(source / name, tmp_path / name)
    policy = tmp_path / "meeting_minutes_v1" / "policy.toml"
    policy.write_text('[simplify]\nmode = "none"\n')
    engine = FakeEngine(lambda _: ("{", "length"))
    warmup = warm_grammars(engine, _settings(tmp_path))
    # The user's folder overrides meeting_minutes_v1 (unguided); the shipped rest warms.
    assert "meeting_minutes_v1" not in warmup.templates
    assert "generic_summary_v1" in warmup.templates and "document_brief_v1" in warmup.templates
    assert engine.batches == [len(warmup.grammars)]


def test_every_decoding_schema_the_attempts_use_is_compiled_once(tmp_path: Path) -> None:
    source = _settings().templates_dir
    shutil.copytree(source / "generic_summary_v1", tmp_path / "generic_summary_v1")
    (tmp_path / "generic_summary_v1" / "policy.toml").write_text(
        """
        [simplify]
        max_items = 5
        [simplify.variants.uncapped]
        strip_caps = true
        [simplify.variants.same]      # the same schema as default: one grammar
        max_items = 5
        [simplify.variants.unused]
        max_items = 2
        [simplify.variants.late]      # only an unguided attempt names it
        max_items = 3
        [retry]
        attempts = 4
        decoding = ["uncapped", "default", "same", "late"]
        guided = [true, true, true, false]
        """
    )
    template = load_template(tmp_path, "generic_summary_v1")
    engine = FakeEngine(lambda _: ("{", "length"))
    warmup = warm_grammars(engine, _settings(tmp_path), ["generic_summary_v1"])
    assert warmup.templates == ("generic_summary_v1",)
    assert warmup.grammars == ("generic_summary_v1:uncapped", "generic_summary_v1")
    assert engine.batches == [2]
    assert [r.guide.value for r in engine.requests if r.guide is not None] == [
        template.decodings["uncapped"].schema,
        template.decodings["default"].schema,
    ]


def test_templates_with_verbatim_fields_are_not_warmed(tmp_path: Path) -> None:
    source = _settings().templates_dir
    for name in ("generic_summary_v1", "document_brief_v1"):
        shutil.copytree(source / name, tmp_path / name)
    engine = FakeEngine(lambda _: ("{", "length"))
    # On the CPU profile generic_summary_v1's key points are verbatim.
    ids = ["document_brief_v1", "generic_summary_v1"]
    warmup = warm_grammars(engine, _settings(tmp_path, profile="cpu"), ids)
    assert warmup.templates == ("document_brief_v1",)
    assert warm_grammars(engine, _settings(tmp_path, profile="gpu"), ids).templates == (
        "document_brief_v1",
        "generic_summary_v1",
    )
