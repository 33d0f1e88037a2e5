"""The ``Engine`` protocol over HTTP: an OpenAI-compatible vLLM server does the work.

Why: one GPU server (or a fleet behind a load balancer) can feed many cheap
workers, which then need neither vLLM nor a GPU, only ``structsum[remote]``.
Everything above the engine (templates, budget, retries, validation, tasks) is
the same code on either kind.

How it matches the local engine:

- Prompts: the chat template is applied by the server's ``/tokenize`` (messages,
  generation prompt), and the token ids go to ``/v1/completions`` as the prompt,
  exactly as the local engine sends ``TokensPrompt`` ids. The budget counts the
  same ids that are sent.
- Guides: the decoding schema's ``Guide`` becomes the request's
  ``structured_outputs`` field (json / regex / json_object), the same
  ``StructuredOutputsParams`` the local engine builds, read by the server's
  structured-output backend.
- Deadline and cancellation: requests stream on a private event loop; past the
  deadline the coroutine is cancelled, which closes the connection, and vLLM's
  server aborts a request whose client disconnected.
- Errors: connection refused or dropped and a 5xx -> ``EngineUnreachable``, no
  answer within ``read_timeout_s`` -> ``EngineTimeout`` (both retryable), a 4xx
  -> ``EngineRejected`` or, for a prompt over the context, ``TextTooLong``.

Unlike ``EngineUnavailable`` (a dead in-process engine: the worker exits), an
unreachable server is not the worker's fault: the job is retried with backoff and
the worker's circuit breaker stops it only after several failures in a row.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any

from structsum.config import EngineSettings
from structsum.errors import (
    EngineError,
    EngineRejected,
    EngineTimeout,
    EngineUnreachable,
    StructsumError,
    TextTooLong,
)
from structsum.processors.engine_loop import LoopEngine, chat_token_ids
from structsum.processors.generation import GenerationOutput, GenerationRequest
from structsum.processors.guide import Guide

log = logging.getLogger(__name__)

# Seconds between two /health probes while a worker waits for its server to come up.
READY_POLL_S = 1.0
# Seconds close() waits for the connections to close and the loop thread to stop.
CLOSE_TIMEOUT_S = 10.0
# Characters of a server's error body kept in an error's details (they can be pages).
ERROR_BODY_CHARS = 2000
# Phrases vLLM's server uses when a prompt does not fit the model's context.
_CONTEXT_ERRORS = ("maximum context length", "maximum model length", "longer than the maximum")
_STREAM_DATA = "data: "
_STREAM_DONE = "[DONE]"


def structured_outputs(guide: Guide | None, disable_any_whitespace: bool) -> dict[str, Any] | None:
    """The request's ``structured_outputs`` field: what ``vllm_args`` builds locally."""
    if guide is None:
        return None
    if guide.kind == "json":
        return {"json": guide.value, "disable_any_whitespace": disable_any_whitespace}
    if guide.kind == "regex":
        return {"regex": str(guide.value)}
    return {"json_object": True, "disable_any_whitespace": disable_any_whitespace}


def completion_body(
    request: GenerationRequest,
    *,
    model: str,
    prompt_ids: list[int],
    disable_any_whitespace: bool,
    request_id: str,
) -> dict[str, Any]:
    """The streamed ``/v1/completions`` body for one request (``build_sampling_params``'s twin)."""
    sampling = request.sampling
    max_tokens = sampling.max_tokens if request.max_tokens is None else request.max_tokens
    body: dict[str, Any] = {
        "model": model,
        "prompt": prompt_ids,
        "max_tokens": max_tokens,
        "temperature": sampling.temperature if request.temperature is None else request.temperature,
        "top_p": sampling.top_p,
        "top_k": sampling.top_k,
        "repetition_penalty": sampling.repetition_penalty,
        "presence_penalty": sampling.presence_penalty,
        "skip_special_tokens": sampling.skip_special_tokens,
        "stream": True,
        "return_token_ids": True,
        "request_id": request_id,
    }
    if sampling.stop:
        body["stop"] = list(sampling.stop)
    if request.exact_length:
        body |= {"ignore_eos": True, "min_tokens": max_tokens}
    guide = structured_outputs(request.guide, disable_any_whitespace)
    if guide is not None:
        body["structured_outputs"] = guide
    return body


def status_error(status: int, body: str, url: str) -> StructsumError:
    """The typed error for a server's non-200 answer."""
    details = {"status": status, "url": url, "body": body[:ERROR_BODY_CHARS]}
    if status >= 500:
        return EngineUnreachable(f"the vLLM server answered {status}", details)
    if status == 400 and any(phrase in body for phrase in _CONTEXT_ERRORS):
        return TextTooLong(
            f"prompt does not fit the served model's context: {body[:ERROR_BODY_CHARS]}",
            details,
            hint="raise the server's --max-model-len and STRUCTSUM_ENGINE__MAX_MODEL_LEN "
            "together, or lower STRUCTSUM_BUDGET__OUTPUT_RESERVE",
        )
    return EngineRejected(f"the vLLM server refused the request ({status})", details)


@contextlib.asynccontextmanager
async def http_errors(url: str) -> AsyncIterator[None]:
    """Map httpx's transport failures onto the error tree, at the one place requests run."""
    import httpx

    try:
        yield
    except httpx.TimeoutException as exc:
        if isinstance(exc, httpx.ConnectTimeout):
            raise EngineUnreachable(
                f"no connection to the vLLM server at {url} in time", {"url": url}
            ) from exc
        raise EngineTimeout(
            f"the vLLM server at {url} did not answer in time ({type(exc).__name__})",
            {"url": url},
        ) from exc
    except httpx.TransportError as exc:
        # Connection refused or reset, the server gone mid-stream, a proxy error.
        raise EngineUnreachable(
            f"cannot reach the vLLM server at {url}: {type(exc).__name__}: {exc}", {"url": url}
        ) from exc


class RemoteEngine(LoopEngine):
    """An OpenAI-compatible vLLM server behind the blocking, thread-safe ``Engine`` API."""

    # The runtime reads it: no engine process of its own to watch or to kill.
    remote = True
    # Past the deadline the coroutines are cancelled: their streams close, and the
    # server aborts requests whose client went away, so no GPU time is spent on a
    # job that gave up.
    _cancelled_where = " on the server"
    _closed_message = "the remote engine is closed"

    def __init__(self, settings: EngineSettings, *, cache_dir: Path | None = None) -> None:
        if not settings.url:
            raise EngineRejected("engine.kind=remote needs engine.url", {})
        self.settings = settings
        self.url = settings.url.rstrip("/")
        super().__init__(thread_name="structsum-remote-engine")
        started = time.perf_counter()
        try:
            self._client: Any = self._call(self._open(), None)
            self._wait_ready(settings.ready_timeout_s)
            self.model_name, self.server_max_model_len = self._call(self._served_model(), None)
        except BaseException:
            self.close()
            raise
        self._check_context()
        self._tokenizer: Any = None
        if settings.remote_tokenizer == "local":
            self._tokenizer = _local_tokenizer(settings, cache_dir)
        self.load_s = time.perf_counter() - started
        log.info(
            "remote engine ready",
            extra={"url": self.url, "model": self.model_name, "load_s": round(self.load_s, 1)},
        )

    # --- plumbing ---------------------------------------------------------------------

    async def _open(self) -> Any:
        import httpx

        settings = self.settings
        headers = {}
        if settings.api_key is not None:
            headers["Authorization"] = f"Bearer {settings.api_key.get_secret_value()}"
        return httpx.AsyncClient(
            base_url=self.url,
            headers=headers,
            timeout=httpx.Timeout(
                settings.read_timeout_s,
                connect=settings.connect_timeout_s,
                # Waiting for a free pooled connection is queueing, like the server's own.
                pool=settings.read_timeout_s,
            ),
            limits=httpx.Limits(
                max_connections=settings.pool_connections,
                max_keepalive_connections=settings.pool_connections,
            ),
        )

    def _call(self, coro: Any, timeout: float | None) -> Any:
        return self._submit(coro).result(timeout=timeout)

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        async with http_errors(self.url):
            response = await self._client.request(method, path, **kwargs)
        if response.status_code != 200:
            raise status_error(response.status_code, response.text, self.url + path)
        return response.json()

    async def _health(self) -> None:
        async with http_errors(self.url):
            response = await self._client.get("/health")
        if response.status_code != 200:
            raise status_error(response.status_code, response.text, self.url + "/health")

    def _wait_ready(self, timeout_s: float) -> None:
        """Wait for the server's /health: workers and their server may start together."""
        give_up = time.monotonic() + timeout_s
        while True:
            try:
                self._call(self._health(), None)
                return
            except (EngineUnreachable, EngineTimeout) as exc:
                if time.monotonic() >= give_up:
                    raise EngineUnreachable(
                        f"the vLLM server at {self.url} was not ready within {timeout_s:.0f} s: "
                        f"{exc.message}",
                        {"url": self.url, "waited_s": timeout_s},
                    ) from exc
            time.sleep(READY_POLL_S)

    async def _served_model(self) -> tuple[str, int | None]:
        models = (await self._json("GET", "/v1/models")).get("data") or []
        wanted = self.settings.served_model_name
        for card in models:
            if wanted is None or card.get("id") == wanted:
                return str(card["id"]), card.get("max_model_len")
        served = [card.get("id") for card in models]
        raise EngineRejected(
            f"the vLLM server at {self.url} does not serve {wanted!r} (it serves {served})",
            {"url": self.url, "served": served},
        )

    def _check_context(self) -> None:
        """The budget plans with our max_model_len: the server must hold at least that."""
        served, ours = self.server_max_model_len, self.settings.max_model_len
        if served is not None and served < ours:
            raise EngineRejected(
                f"the vLLM server's max_model_len is {served}, below engine.max_model_len={ours}: "
                "budgets planned here would be refused there",
                {"server": served, "settings": ours},
                hint=f"set STRUCTSUM_ENGINE__MAX_MODEL_LEN={served} on the workers, or start "
                "the server with the workers' settings (`structsum serve-engine`)",
            )

    # --- tokens -----------------------------------------------------------------------

    def tokenize_chat(self, messages: list[dict[str, str]]) -> list[int]:
        """The prompt ids the server would build (its chat template, generation prompt)."""
        if self._tokenizer is not None:
            return chat_token_ids(self._tokenizer, messages)
        return self._call(self._tokenize_chat(messages), self.settings.read_timeout_s)

    async def _tokenize_chat(self, messages: list[dict[str, str]]) -> list[int]:
        body = {
            "model": self.model_name,
            "messages": messages,
            "add_generation_prompt": True,
            "add_special_tokens": False,
        }
        return list((await self._json("POST", "/tokenize", json=body))["tokens"])

    def count_tokens(self, text: str) -> int:
        if self._tokenizer is not None:
            return len(self._tokenizer.encode(text, add_special_tokens=False))
        body = {"model": self.model_name, "prompt": text, "add_special_tokens": False}
        answer = self._call(self._json("POST", "/tokenize", json=body), None)
        return int(answer["count"])

    def decode(self, token_ids: Sequence[int]) -> str:
        if self._tokenizer is not None:
            return str(self._tokenizer.decode(list(token_ids), skip_special_tokens=True))
        body = {"model": self.model_name, "tokens": list(token_ids)}
        return str(self._call(self._json("POST", "/detokenize", json=body), None)["prompt"])

    # --- generation -------------------------------------------------------------------

    async def _one(self, request: GenerationRequest) -> GenerationOutput:
        ids = request.prompt_token_ids or await self._tokenize_chat_or_local(request.messages)
        body = completion_body(
            request,
            model=self.model_name,
            prompt_ids=ids,
            disable_any_whitespace=self.settings.disable_any_whitespace,
            request_id=f"structsum-{uuid.uuid4().hex}",
        )
        started = time.perf_counter()
        ttft: float | None = None
        text: list[str] = []
        token_ids: list[int] = []
        finish: str | None = None
        async with (
            http_errors(self.url),
            self._client.stream("POST", "/v1/completions", json=body) as response,
        ):
            if response.status_code != 200:
                detail = (await response.aread()).decode("utf-8", "replace")
                raise status_error(response.status_code, detail, self.url + "/v1/completions")
            async for line in response.aiter_lines():
                if not line.startswith(_STREAM_DATA):
                    continue
                data = line[len(_STREAM_DATA) :]
                if data == _STREAM_DONE:
                    break
                chunk = json.loads(data)
                if "error" in chunk:  # vLLM reports a failure mid-stream as a data line
                    raise EngineError(f"the vLLM server failed: {chunk['error']}", chunk)
                for choice in chunk.get("choices") or []:
                    text.append(choice.get("text") or "")
                    token_ids.extend(choice.get("token_ids") or [])
                    finish = choice.get("finish_reason") or finish
                if ttft is None and token_ids:
                    ttft = time.perf_counter() - started
                self._progress += 1  # the loop thread alone writes it
        return GenerationOutput(
            text="".join(text),
            prompt_tokens=len(ids),
            completion_tokens=len(token_ids),
            finish_reason=finish,
            elapsed_s=time.perf_counter() - started,
            ttft_s=ttft,
            token_ids=token_ids,
        )

    async def _tokenize_chat_or_local(self, messages: list[dict[str, str]]) -> list[int]:
        if self._tokenizer is not None:
            return self.tokenize_chat(messages)
        return await self._tokenize_chat(messages)

    def check_health(self, timeout_s: float = 10.0) -> None:
        """The server's /health: 200 while its engine serves (vLLM checks its engine core)."""
        try:
            self._call(self._health(), timeout_s)
        except FutureTimeout:
            raise EngineTimeout(
                f"the vLLM server's /health did not answer within {timeout_s:.0f} s",
                {"url": self.url},
            ) from None

    # --- lifecycle --------------------------------------------------------------------

    def close(self) -> None:
        """Close the connections and stop the loop thread; a second call does nothing."""
        if not self._thread.is_alive():
            return
        client = getattr(self, "_client", None)
        if client is not None:
            with contextlib.suppress(Exception):
                self._call(client.aclose(), CLOSE_TIMEOUT_S)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=CLOSE_TIMEOUT_S)

    def abandon(self) -> None:
        """Stop without waiting (the worker failed): the server aborts what was open."""
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)


def _local_tokenizer(settings: EngineSettings, cache_dir: Path | None) -> Any:
    """The served model's tokenizer, loaded here (``remote_tokenizer=local``)."""
    from transformers import AutoTokenizer

    from structsum.processors.model_store import resolve_model

    source = settings.tokenizer
    if source is None:
        if cache_dir is None:
            raise EngineRejected("a local tokenizer needs the settings' cache_dir", {})
        source = resolve_model(settings.model, cache_dir)
    return AutoTokenizer.from_pretrained(source)
