"""Enqueue structsum jobs from any app: needs this package and the Redis URL, not vLLM.

    from structsum.client import enqueue_summary
    job = enqueue_summary(text, "generic_summary_v1")
    result = job.result(timeout=300)   # SummaryResult, or raises a StructsumError

Requests are validated here before they are enqueued, so a bad request fails
at once with the same typed error the worker would raise. The worker's typed
errors come back as the same classes (Celery's JSON backend stores class,
module and arguments; importing ``structsum.errors`` here makes them known).
"""

from __future__ import annotations

import time
from typing import Any, Generic, TypeVar, cast

from celery import Celery
from celery.exceptions import TimeoutError as CeleryTimeoutError
from celery.result import AsyncResult
from pydantic import BaseModel, ValidationError

from structsum.config import Settings, get_settings
from structsum.errors import ResultTimeout, StructsumError, TaskFailed
from structsum.models import (
    AskRequest,
    AskResult,
    EnhancementRequest,
    EnhancementResult,
    PromptVariable,
    SummaryRequest,
    SummaryResult,
)
from structsum.service.app import (
    ASK,
    ENHANCE,
    ENHANCE_AND_SUMMARIZE,
    ENQUEUED_AT_HEADER,
    SUMMARIZE,
)
from structsum.service.broker import broker_errors, queue_app
from structsum.service.payloads import decode_text, parse_request, result_model

ResultT = TypeVar("ResultT", SummaryResult, EnhancementResult, AskResult)


def client_app(settings: Settings | None = None) -> Celery:
    """The Celery app for these settings, built once per distinct queue configuration."""
    return queue_app(settings)


class JobHandle(Generic[ResultT]):
    """A queued job: its id, its state, and its typed result."""

    def __init__(self, async_result: AsyncResult, model: type[ResultT] | None = None) -> None:
        self._async = async_result
        self._model = model

    @property
    def id(self) -> str:
        return str(self._async.id)

    @property
    def state(self) -> str:
        """PENDING (queued or unknown), STARTED, RETRY, SUCCESS or FAILURE."""
        with broker_errors():
            return str(self._async.state)

    def ready(self) -> bool:
        return self.state in ("SUCCESS", "FAILURE", "REVOKED")

    def result(self, timeout: float | None = None) -> ResultT:
        """Wait for the result; raises the worker's StructsumError, or ResultTimeout."""
        try:
            with broker_errors():
                payload = self._async.get(timeout=timeout, propagate=False)
                failed = self._async.failed() or self._async.state == "REVOKED"
        except CeleryTimeoutError as exc:
            raise ResultTimeout(
                f"no result for job {self.id} within {timeout} s",
                {"task_id": self.id, "timeout_s": timeout},
            ) from exc
        if failed:
            raise _as_structsum_error(self.id, payload)
        if not isinstance(payload, dict):
            raise TaskFailed(
                f"job {self.id} returned {type(payload).__name__}, not a result object",
                {"task_id": self.id},
            )
        model = self._model or cast(type[ResultT], result_model(payload))
        try:
            return model.model_validate(payload)
        except ValidationError as exc:
            raise TaskFailed(
                f"job {self.id} returned something that is not a {model.__name__}",
                {"task_id": self.id, "errors": exc.errors(include_url=False, include_input=False)},
            ) from exc

    def forget(self) -> None:
        """Delete the stored result now instead of waiting for result_expires."""
        self._async.forget()


def _as_structsum_error(task_id: str, exc: Any) -> StructsumError:
    if isinstance(exc, StructsumError):
        return exc
    # Anything else is a bug or an outage in the worker, not a property of the input.
    return TaskFailed(
        f"job {task_id} failed: {type(exc).__name__}: {exc}",
        {"task_id": task_id, "type": type(exc).__name__, "message": str(exc)},
    )


def _send(
    name: str, request: BaseModel, model: type[ResultT], settings: Settings | None
) -> JobHandle[ResultT]:
    settings = settings or get_settings()
    app = client_app(settings)
    with broker_errors():
        async_result = app.send_task(
            name,
            kwargs=request.model_dump(mode="json"),
            headers={ENQUEUED_AT_HEADER: time.time()},
            # A job nobody started within this is dropped (REVOKED): its caller is gone.
            expires=settings.queue.message_expires_s,
        )
    return JobHandle(async_result, model)


def _summary_request(
    text: str | bytes,
    template_id: str,
    language: str | None,
    variables: dict[str, PromptVariable] | None,
    enhance: bool,
    use_cache: bool,
    settings: Settings | None,
) -> SummaryRequest:
    payload = {
        "text": decode_text(text),
        "template_id": template_id,
        "language": language,
        "variables": variables or {},
        "enhance": enhance,
        "use_cache": use_cache,
    }
    return parse_request(SummaryRequest, (), payload, settings or get_settings())


def enqueue_summary(
    text: str | bytes,
    template_id: str,
    *,
    language: str | None = None,
    variables: dict[str, PromptVariable] | None = None,
    enhance: bool = False,
    use_cache: bool = True,
    settings: Settings | None = None,
) -> JobHandle[SummaryResult]:
    """Queue ``structsum.summarize``; ``enhance=True`` cleans the text up first.

    An identical earlier request is answered from the result cache (``cached`` is
    true in the result); ``use_cache=False`` runs the engine anyway.
    """
    request = _summary_request(text, template_id, language, variables, enhance, use_cache, settings)
    return _send(SUMMARIZE, request, SummaryResult, settings)


def enqueue_enhance_and_summarize(
    text: str | bytes,
    template_id: str,
    *,
    language: str | None = None,
    variables: dict[str, PromptVariable] | None = None,
    use_cache: bool = True,
    settings: Settings | None = None,
) -> JobHandle[SummaryResult]:
    """Queue ``structsum.enhance_and_summarize``: the enhanced text feeds the summary."""
    request = _summary_request(text, template_id, language, variables, True, use_cache, settings)
    return _send(ENHANCE_AND_SUMMARIZE, request, SummaryResult, settings)


def enqueue_enhancement(
    text: str | bytes,
    *,
    language: str | None = None,
    use_cache: bool = True,
    settings: Settings | None = None,
) -> JobHandle[EnhancementResult]:
    """Queue ``structsum.enhance`` (``use_cache=False``: skip the result cache)."""
    payload = {"text": decode_text(text), "language": language, "use_cache": use_cache}
    request = parse_request(EnhancementRequest, (), payload, settings or get_settings())
    return _send(ENHANCE, request, EnhancementResult, settings)


def ask(
    conversation_id: str,
    question: str,
    *,
    text: str | bytes | None = None,
    summary_job_id: str | None = None,
    template_id: str | None = None,
    language: str | None = None,
    max_tokens: int | None = None,
    settings: Settings | None = None,
) -> JobHandle[AskResult]:
    """Queue ``structsum.ask``: a follow-up question in a conversation about one document.

    The first question names the document (``text``, or a finished summary's
    ``summary_job_id``); later ones need only the conversation id. With
    ``template_id`` the answer is JSON guided by that template's schema.
    """
    payload = {
        "conversation_id": conversation_id,
        "question": question,
        "text": None if text is None else decode_text(text),
        "summary_job_id": summary_job_id,
        "template_id": template_id,
        "language": language,
        "max_tokens": max_tokens,
    }
    request = parse_request(AskRequest, (), payload, settings or get_settings())
    return _send(ASK, request, AskResult, settings)


def get_result(
    task_id: str, *, timeout: float | None = None, settings: Settings | None = None
) -> SummaryResult | EnhancementResult | AskResult:
    """The typed result of any structsum job by id (the kind is read from the result)."""
    return job(task_id, settings=settings).result(timeout)


def job(task_id: str, *, settings: Settings | None = None) -> JobHandle[Any]:
    """A handle for a job enqueued elsewhere (another process, ``send_task``, the CLI)."""
    return JobHandle(AsyncResult(task_id, app=client_app(settings)))
