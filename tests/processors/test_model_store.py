"""Model preparation: converts the bundled GGUF once, atomically, without the network."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from structsum.errors import ModelPreparationError
from structsum.processors import model_store


@pytest.fixture()
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_bundled_gguf_is_installed() -> None:
    path = model_store.bundled_gguf_path()
    assert path.suffix == ".gguf"
    assert path.stat().st_size > 50_000_000


@pytest.mark.engine  # converts the real GGUF (~1 min, ~270 MB written)
def test_conversion_is_offline_idempotent_and_atomic(
    tmp_path: Path, no_network: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = Path(model_store.resolve_model(None, tmp_path))
    assert model_store.is_prepared(folder)
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "llama"
    assert "quantization_config" not in config  # dense weights vLLM can load
    assert (folder / "model.safetensors").stat().st_size > 100_000_000
    assert (folder / "tokenizer.json").is_file()
    # No temporary folder is left beside the result.
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]

    # A second call reuses the folder: converting again would be a bug.
    def must_not_convert(*args: object, **kwargs: object) -> None:
        raise AssertionError("converted twice")

    monkeypatch.setattr("transformers.AutoModelForCausalLM.from_pretrained", must_not_convert)
    assert model_store.resolve_model(None, tmp_path) == str(folder)


def test_failed_conversion_leaves_nothing_behind(tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"not a gguf file")
    target = tmp_path / "models" / "out"
    with pytest.raises(ModelPreparationError, match="converting"):
        model_store.convert_gguf(broken, target)
    assert not target.exists()
    assert list((tmp_path / "models").iterdir()) == []


def test_configured_model_is_used_as_is(tmp_path: Path) -> None:
    assert model_store.resolve_model("/srv/models/my-model", tmp_path) == "/srv/models/my-model"
    assert not (tmp_path / "models").exists()
