"""Convert the bundled SmolLM2-135M-Instruct GGUF to a HF folder (once; later runs reuse it).

python scripts/prepare_model.py            # prints the folder
STRUCTSUM_CACHE_DIR=/tmp/c python scripts/prepare_model.py
"""

from __future__ import annotations

import sys
import time

from rich.console import Console

from structsum.config import get_settings
from structsum.errors import StructsumError
from structsum.processors.model_store import resolve_model


def main() -> int:
    console = Console(stderr=True)
    settings = get_settings()
    started = time.perf_counter()
    try:
        with console.status("preparing the model (first time: converting GGUF, ~20 s)"):
            folder = resolve_model(settings.engine.model, settings.cache_dir)
    except StructsumError as exc:
        console.print(f"[red]error[/]: {exc}")
        return 1
    console.print(f"model ready in {time.perf_counter() - started:.1f} s")
    print(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
