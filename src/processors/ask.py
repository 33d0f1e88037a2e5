"""Follow-up questions on one document, with a bounded history that prefix caching serves.

Why the layout matters: a chat that sends its whole history every turn recomputes
all of it unless the engine's prefix cache recognises the start of the prompt.
So the prompt is built fixed parts first, and byte-identical from turn to turn:

    system:    instructions [+ the template's schema] + the document
    user/assistant pairs:  the kept earlier turns, oldest first, as stored
    user:      this turn's question

Turn N's prompt starts with turn N-1's prompt and answer, token for token, so
vLLM computes only the new tail. The history is bounded (turns first, then
tokens, counted with the engine's real tokenizer), so a long conversation costs
what a short one does. Dropping turns breaks the reused prefix after the system
part, so a full history is cut to its newest few turns at once (``trim_history``), not
by one turn per question: the prefix then holds again for the next turns.

The history lives behind ``ConversationStore`` (Redis in the worker, a dict in
tests); processors never see Redis.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from pydantic import BaseModel, ValidationError

from structsum.config import Settings
from structsum.errors import ConversationMismatch, EmptyText, TextTooLong
from structsum.models import AskRequest, AskResult, Turn, Usage
from structsum.processors.attempts import judge
from structsum.processors.budget import output_budget
from structsum.processors.engine import Engine, GenerationRequest
from structsum.processors.prompts import ASK_JSON, ASK_SYSTEM, language_instruction
from structsum.processors.templates import Template, load_template


class ConversationStore(Protocol):
    """Conversation records by id, as JSON strings, each with a time to live."""

    def load(self, conversation_id: str) -> str | None: ...

    def save(self, conversation_id: str, value: str, ttl_s: int) -> None: ...


class Conversation(BaseModel):
    """What is stored per conversation id: the document, its template, the kept turns."""

    document: str
    template_id: str | None = None
    turns: list[Turn] = []
    asked: int = 0  # questions answered so far, trimmed ones included


def trim_history(
    turns: Sequence[Turn],
    *,
    max_turns: int,
    max_tokens: int,
    count: Callable[[str], int],
    keep_turns: int | None = None,
) -> list[Turn]:
    """The turns to keep: all of them while they fit; past a limit, far fewer at once.

    Turns first: more than ``max_turns`` and only the newest ``keep_turns`` stay (at
    most half of ``max_turns``, else the next turns would trim again at once; None:
    half). Then tokens (of the questions and answers, the real tokenizer through
    ``count``): more than ``max_tokens`` and the oldest go until the rest fits
    ``max_tokens // 2``. Whole turns are dropped, oldest first, never cut in half.

    Why a cut and not one turn at a time: dropping the oldest turn changes everything
    after the document, so that prompt recomputes every kept turn (the prefix cache
    serves only the system part). A window sliding by one turn would pay that on every
    question once the history is full (on the CPU box turns 10-12 took 3.6-5.7x as
    long as turn 2, docs/benchmarks.md); a cut pays it once per
    ``max_turns - keep_turns + 1`` questions, and only for the turns it keeps, so
    the settings keep few (2 of 8: the cut to 4 still took 1.53x turn 2).
    """
    kept = list(turns)
    if len(kept) > max_turns:
        half = max(max_turns // 2, min(max_turns, 1))  # a limit of 1 keeps its one turn
        keep = half if keep_turns is None else min(keep_turns, half)
        kept = kept[len(kept) - keep :] if keep else []
    sizes = [count(t.question) + count(t.answer) for t in kept]
    if sum(sizes) > max_tokens:
        while kept and sum(sizes) > max_tokens // 2:
            kept.pop(0)
            sizes.pop(0)
    return kept


def system_prompt(document: str, template: Template | None, language: str | None) -> str:
    """The fixed part of every turn: instructions, the answer format, then the document."""
    answer_format = ASK_JSON.format(schema=template.schema_json) if template else ""
    return (
        ASK_SYSTEM
        + language_instruction(language)
        + answer_format
        + f'\n\nThe document:\n"""\n{document}\n"""'
    )


def build_messages(system: str, turns: Sequence[Turn], question: str) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": system}]
    for turn in turns:
        messages.append({"role": "user", "content": turn.question})
        messages.append({"role": "assistant", "content": turn.answer})
    messages.append({"role": "user", "content": question})
    return messages


def _conversation(
    request: AskRequest, document: str | None, store: ConversationStore
) -> Conversation:
    """The stored conversation, or a new one about ``document``; a different document is refused."""
    stored = store.load(request.conversation_id)
    conversation: Conversation | None = None
    if stored is not None:
        try:
            conversation = Conversation.model_validate_json(stored)
        except ValidationError:
            conversation = None  # written by another version: start over
    if conversation is None:
        if document is None:
            raise EmptyText(
                f"conversation {request.conversation_id!r} is unknown or expired and the "
                "request names no document",
                {"conversation_id": request.conversation_id},
                hint="send the text (or a finished summary job id) with the first question",
            )
        return Conversation(document=document, template_id=request.template_id)
    if document is not None and document != conversation.document:
        raise ConversationMismatch(
            f"conversation {request.conversation_id!r} is about another document",
            {"conversation_id": request.conversation_id},
        )
    if request.template_id is not None and request.template_id != conversation.template_id:
        conversation = conversation.model_copy(update={"template_id": request.template_id})
    return conversation


def ask(
    request: AskRequest,
    *,
    document: str | None,
    engine: Engine,
    settings: Settings,
    store: ConversationStore,
) -> AskResult:
    """Answer one question about the conversation's document and remember the turn.

    ``document`` is the request's text, or the finished summary the task layer
    looked up; None on later turns, which use the stored one.
    """
    started = time.perf_counter()
    conversation = _conversation(request, document, store)
    template = (
        load_template(settings.template_dirs, conversation.template_id)
        if conversation.template_id
        else None
    )
    limits = settings.conversation
    sampling = settings.sampling.ask
    system = system_prompt(conversation.document, template, request.language)
    turns = trim_history(
        conversation.turns,
        max_turns=limits.max_history_turns,
        max_tokens=limits.max_history_tokens,
        count=engine.count_tokens,
        keep_turns=limits.history_turns_after_trim,
    )
    requested = (template.policy.max_tokens if template else None) or sampling.max_tokens
    if request.max_tokens is not None:
        requested = min(requested, request.max_tokens)
    messages = build_messages(system, turns, request.question)
    ids = engine.tokenize_chat(messages)
    plan = output_budget(
        len(ids), requested=requested, max_model_len=settings.engine.max_model_len,
        budget=settings.budget,
    )  # fmt: skip
    while not plan.fits and turns:
        # The configured limits still leave too little room to answer: older turns go.
        turns = turns[1:]
        messages = build_messages(system, turns, request.question)
        ids = engine.tokenize_chat(messages)
        plan = output_budget(
            len(ids), requested=requested, max_model_len=settings.engine.max_model_len,
            budget=settings.budget,
        )  # fmt: skip
    if not plan.fits:
        raise TextTooLong(
            f"the document and question take {len(ids)} tokens, leaving no room to answer "
            f"within max_model_len={settings.engine.max_model_len}",
            {"prompt_tokens": len(ids), "max_model_len": settings.engine.max_model_len},
            hint="ask about a finished summary (its job id) instead of the full text, "
            "or raise STRUCTSUM_ENGINE__MAX_MODEL_LEN",
        )
    guide = template.decoding.guide if template else None
    output = engine.generate(
        [
            GenerationRequest(
                messages, sampling, guide=guide, max_tokens=plan.max_tokens, prompt_token_ids=ids
            )
        ]
    )[0]
    answer = output.text.strip()
    data: dict[str, object] | None = None
    errors: list[str] = []
    if template is not None:
        judgement = judge(
            output, template.schema, guided=guide is not None, registry=template.registry
        )
        data, errors = judgement.data, judgement.errors
    kept = [*turns, Turn(question=request.question, answer=answer)]
    asked = conversation.asked + 1
    record = conversation.model_copy(update={"turns": kept, "asked": asked})
    store.save(request.conversation_id, record.model_dump_json(), limits.ttl_s)
    return AskResult(
        conversation_id=request.conversation_id,
        turn=asked,
        answer=answer,
        data=data,
        valid=None if template is None else (data is not None and not errors),
        errors=errors,
        history_turns=len(turns),
        finish_reason=output.finish_reason,
        usage=Usage(prompt_tokens=output.prompt_tokens, completion_tokens=output.completion_tokens),
        elapsed_s=time.perf_counter() - started,
        ttft_s=output.ttft_s,
        model=engine.model_name,
    )


def summary_document(data: object) -> str:
    """A finished summary as the document a conversation is about (stable JSON text)."""
    return json.dumps(data, indent=2, ensure_ascii=False, sort_keys=True)
