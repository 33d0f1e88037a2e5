import shutil
from pathlib import Path

from structsum.config import Settings
from structsum.processors.templates import list_templates, load_template
from structsum.processors.warmup import WARMUP_TOKENS, warm_grammars
from tests.fakes import FakeEngine


def _settings(templates_dir: Path | None = None) -> Settings:
    settings = Settings()
    if templates_dir is None:
        return settings
    return settings.model_copy(update={"templates_dir": templates_dir})


def test_one_guided_request_per_template_in_one_batch() -> None:
    settings = _settings()
    engine = FakeEngine(lambda _: ("{", "length"))
    warmup = warm_grammars(engine, settings)
    shipped = list_templates(settings.templates_dir)
    assert len(shipped) >= 4
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
    assert engine.batches == [len(warmup.templates)]
