from pathlib import Path

import pytest
from pydantic import ValidationError

from structsum.config import Settings


def test_defaults_fit_the_cpu_box() -> None:
    settings = Settings()
    assert settings.engine.model is None  # the bundled model
    assert settings.engine.max_model_len == 4096
    assert settings.queue.broker_url == "redis://127.0.0.1:6379/0"
    assert settings.queue.backend_url == settings.queue.broker_url
    assert settings.sampling.enhancement.temperature < settings.sampling.summary.temperature
    assert (settings.templates_dir / "generic_summary_v1").is_dir()


def test_env_overrides_nested_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRUCTSUM_ENGINE__MAX_MODEL_LEN", "2048")
    monkeypatch.setenv("STRUCTSUM_ENGINE__STRUCTURED_OUTPUT_BACKEND", "guidance")
    monkeypatch.setenv("STRUCTSUM_SAMPLING__SUMMARY__TEMPERATURE", "0.1")
    monkeypatch.setenv("STRUCTSUM_QUEUE__BROKER_URL", "redis://example:6379/3")
    monkeypatch.setenv("STRUCTSUM_SAMPLING__SUMMARY__STOP", '["</s>"]')
    settings = Settings()
    assert settings.engine.max_model_len == 2048
    assert settings.engine.structured_output_backend == "guidance"
    assert settings.sampling.summary.temperature == 0.1
    assert settings.sampling.summary.stop == ["</s>"]
    assert settings.queue.backend_url == "redis://example:6379/3"
    # untouched siblings keep their defaults
    assert settings.sampling.enhancement.temperature == Settings().sampling.enhancement.temperature


def test_settings_file_is_read_and_env_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "structsum.toml"
    path.write_text('[engine]\nmax_num_seqs = 4\nmax_model_len = 1024\n[queue]\nqueue_name = "x"\n')
    monkeypatch.setenv("STRUCTSUM_SETTINGS_FILE", str(path))
    monkeypatch.setenv("STRUCTSUM_ENGINE__MAX_MODEL_LEN", "3000")
    settings = Settings()
    assert settings.engine.max_num_seqs == 4
    assert settings.engine.max_model_len == 3000
    assert settings.queue.queue_name == "x"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("STRUCTSUM_ENGINE__MAX_MODEL_LEN", "12"),
        ("STRUCTSUM_ENGINE__STRUCTURED_OUTPUT_BACKEND", "magic"),
        ("STRUCTSUM_ENGINE__GPU_MEMORY_UTILIZATION", "1.5"),
        ("STRUCTSUM_SAMPLING__SUMMARY__TOP_P", "0"),
    ],
)
def test_bad_values_are_refused(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings()
