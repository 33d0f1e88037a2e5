"""Task payloads in and out: the one place a raw payload becomes a request model.

Both sides use it: the client refuses a bad request before it is enqueued, and
the worker refuses a bad payload sent by anyone else (``send_task`` by name) with
the same typed error.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from structsum.config import Settings
from structsum.errors import RequestInvalid, TextNotUtf8
from structsum.models import AskResult, EnhancementResult, SummaryResult

RequestT = TypeVar("RequestT", bound=BaseModel)


def decode_text(text: str | bytes) -> str:
    """Strict UTF-8: a replaced byte would silently change what gets summarized."""
    if isinstance(text, str):
        return text
    try:
        return text.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TextNotUtf8(
            f"text is not valid UTF-8 at byte {exc.start}", {"position": exc.start}
        ) from exc


def parse_request(
    model: type[RequestT],
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    settings: Settings | None = None,
) -> RequestT:
    """Validate a task payload; malformed -> RequestInvalid, bad text -> its own error.

    The request models raise EmptyText / TextNotUtf8 / TextHasNul / TextTooLong
    themselves (they are not ValueErrors, so pydantic lets them through);
    everything else pydantic rejects becomes RequestInvalid with pydantic's error
    list, minus the input values (they may be megabytes of text). With settings,
    the text size and the request limits are the configured ones (client and
    worker both pass theirs), so an oversized text never reaches Redis.
    """
    if args:
        raise RequestInvalid(
            f"send the request as keyword arguments, got {len(args)} positional",
            {"positional_args": len(args)},
        )
    context = {"budget": settings.budget, "limits": settings.limits} if settings else None
    try:
        return model.model_validate(dict(kwargs), context=context)
    except ValidationError as exc:
        errors = json.loads(exc.json(include_url=False, include_input=False))
        fields = sorted({".".join(str(p) for p in e.get("loc", ())) for e in errors})
        raise RequestInvalid(
            f"invalid {model.__name__}: {', '.join(fields) or 'payload'}",
            {"model": model.__name__, "errors": errors},
        ) from None


def result_model(
    payload: Mapping[str, Any],
) -> type[SummaryResult] | type[EnhancementResult] | type[AskResult]:
    """Which result a stored payload is: answers carry a conversation, summaries a template."""
    if "conversation_id" in payload:
        return AskResult
    return SummaryResult if "template_id" in payload else EnhancementResult
