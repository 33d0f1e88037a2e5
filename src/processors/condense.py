"""Map stage: text over the context becomes chunk notes before the guided summary.

Each round splits the text into chunks that fit the condense prompt, writes short
notes per chunk in one batch (the engine decodes them together) and joins them.
Rounds repeat until the notes fit; a round that does not shrink the text, or a
text that needs more chunks than allowed, is refused rather than looped on.
"""

from __future__ import annotations

from structsum.config import Settings
from structsum.errors import TextTooLong
from structsum.models import Usage
from structsum.processors.budget import text_allowance
from structsum.processors.chunking import split_text
from structsum.processors.engine import Engine, GenerationRequest
from structsum.processors.prompts import CONDENSE_SYSTEM


def condense(
    text: str, *, allowance: int, engine: Engine, settings: Settings
) -> tuple[str, int, Usage]:
    """While the text is over ``allowance`` tokens, replace it by chunk notes.

    Returns the text that fits, the number of chunks of the first round (1 when
    nothing was condensed) and the tokens spent.
    """
    budget = settings.budget
    chunk_tokens = _chunk_tokens(engine, settings)
    usage = Usage()
    first_round_chunks = 1
    previous_tokens: int | None = None
    for round_index in range(budget.max_condense_rounds):
        tokens = engine.count_tokens(text)
        if tokens <= allowance:
            return text, first_round_chunks, usage
        if previous_tokens is not None and tokens >= previous_tokens:
            raise TextTooLong(
                f"condensing does not shrink the text ({previous_tokens} -> {tokens} tokens)",
                {"tokens": tokens, "allowance": allowance},
                hint="use a model with a longer context (STRUCTSUM_ENGINE__MODEL), or raise "
                "STRUCTSUM_ENGINE__MAX_MODEL_LEN",
            )
        previous_tokens = tokens
        chunks = _chunks(text, chunk_tokens, engine=engine, settings=settings)
        if round_index == 0:
            first_round_chunks = len(chunks)
        text, spent = _notes(chunks, engine=engine, settings=settings)
        usage = usage + spent
    if engine.count_tokens(text) > allowance:
        raise TextTooLong(
            f"text still exceeds the context after {budget.max_condense_rounds} condense rounds",
            {"rounds": budget.max_condense_rounds},
            hint="raise STRUCTSUM_BUDGET__MAX_CONDENSE_ROUNDS, or send a shorter text",
        )
    return text, first_round_chunks, usage


def _chunk_tokens(engine: Engine, settings: Settings) -> int:
    """Text tokens per chunk: what the condense prompt and its notes leave of the context."""
    overhead = len(engine.tokenize_chat(condense_messages("")))
    return text_allowance(
        overhead,
        output_tokens=settings.sampling.condense.max_tokens,
        max_model_len=settings.engine.max_model_len,
        budget=settings.budget,
    )


def _chunks(text: str, chunk_tokens: int, *, engine: Engine, settings: Settings) -> list[str]:
    budget = settings.budget
    chunks = split_text(
        text,
        max_tokens=chunk_tokens,
        overlap_tokens=budget.chunk_overlap_tokens,
        count=engine.count_tokens,
    )
    if len(chunks) > budget.max_chunks:
        raise TextTooLong(
            f"text needs {len(chunks)} chunks of {chunk_tokens} tokens, "
            f"the limit is {budget.max_chunks}",
            {"chunks": len(chunks), "limit": budget.max_chunks},
            hint="raise STRUCTSUM_BUDGET__MAX_CHUNKS (or STRUCTSUM_ENGINE__MAX_MODEL_LEN), "
            "or send a shorter text",
        )
    return chunks


def _notes(chunks: list[str], *, engine: Engine, settings: Settings) -> tuple[str, Usage]:
    """One batch of notes, one per chunk, joined in order."""
    sampling = settings.sampling.condense
    outputs = engine.generate([GenerationRequest(condense_messages(c), sampling) for c in chunks])
    usage = Usage()
    for output in outputs:
        usage = usage + Usage(
            prompt_tokens=output.prompt_tokens, completion_tokens=output.completion_tokens
        )
    return "\n\n".join(output.text.strip() for output in outputs), usage


def condense_messages(text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": CONDENSE_SYSTEM}, {"role": "user", "content": text}]
