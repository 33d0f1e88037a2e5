"""Compile time of a decoding grammar, outside vLLM, for the template benchmark (issue 15).

A template's own guide is compiled once and cached by the backend; a guide with
verbatim fields differs per source, so every request pays for its compile. This
times the compile the way vLLM's backends do it (xgrammar's ``compile_json_schema``
with any whitespace; llguidance's matcher over a JSON-schema grammar), with caches
off, on the model's tokenizer. Run it while the engine is idle: both compete for
the same cores.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

Compile = Callable[[str], None]


def _xgrammar(tokenizer: Any) -> Compile:
    import xgrammar

    info = xgrammar.TokenizerInfo.from_huggingface(tokenizer)
    compiler = xgrammar.GrammarCompiler(info, cache_enabled=False)

    def compile_schema(schema: str) -> None:
        compiler.compile_json_schema(schema, any_whitespace=True)

    return compile_schema


def _guidance(tokenizer: Any) -> Compile:
    import llguidance
    import llguidance.hf

    lltokenizer = llguidance.hf.from_tokenizer(tokenizer)

    def compile_schema(schema: str) -> None:
        grammar = llguidance.LLMatcher.grammar_from_json_schema(schema)
        matcher = llguidance.LLMatcher(lltokenizer, grammar)
        if matcher.is_error():
            raise ValueError(matcher.get_error())

    return compile_schema


BACKENDS: dict[str, Callable[[Any], Compile]] = {"xgrammar": _xgrammar, "guidance": _guidance}


class GrammarTimer:
    """Milliseconds to compile a JSON schema into one backend's grammar, cache off."""

    def __init__(self, model_dir: str, backend: str) -> None:
        from transformers import AutoTokenizer

        if backend not in BACKENDS:
            raise ValueError(f"no compile timer for backend {backend!r} ({sorted(BACKENDS)})")
        self.backend = backend
        self._compile = BACKENDS[backend](AutoTokenizer.from_pretrained(model_dir))

    def ms(self, schema: dict[str, Any]) -> float:
        text = json.dumps(schema)
        started = time.perf_counter()
        self._compile(text)
        return (time.perf_counter() - started) * 1000
