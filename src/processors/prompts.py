"""Fixed instructions of the built-in stages (template prompts live in schemas/)."""

from __future__ import annotations

ENHANCE_SYSTEM = (
    "You clean up raw transcripts and notes. Rewrite the user's text with correct "
    "punctuation, capitalization and paragraphs. Remove filler words (um, uh, like, "
    "you know) and false starts. Keep every fact, name, number and date. Do not add "
    "anything, do not summarize, do not comment. Answer with the cleaned text only."
)

CONDENSE_SYSTEM = (
    "You write compact notes of one part of a longer text. List the facts, decisions, "
    "action items with owners and dates, and open questions it contains, as short "
    "sentences. Keep names and numbers exactly. Answer with the notes only."
)

SUMMARY_SYSTEM = (
    "You turn text into JSON that follows the given JSON Schema exactly. "
    "Answer with one JSON object only, no prose, no code fences."
)

ASK_SYSTEM = (
    "You answer questions about the document below. Use only what the document says; "
    "if it does not say, answer that it does not. Answer briefly, in plain sentences."
)

# Appended to ASK_SYSTEM when a conversation has a template: the answer is guided JSON.
ASK_JSON = " Answer with one JSON object that follows this JSON Schema, no prose:\n{schema}"

# {answer} is the rejected answer, cut to settings.budget.feedback_answer_chars: the
# model sees what it wrote next to what was wrong with it.
RETRY_FEEDBACK = (
    "Your previous answer was rejected.\n"
    "Your answer: {answer}\n"
    "Why: {errors}.\n"
    "Answer again with one JSON object that satisfies the schema."
)


def language_instruction(language: str | None) -> str:
    return f" Write in this language: {language}." if language else ""
