"""RemoteEngine against a scripted HTTP server: requests built right, failures typed.

The fake speaks just enough of vLLM's OpenAI server (/health, /v1/models,
/tokenize, streamed /v1/completions) to check what a user relies on: the guide
reaches the request, the budget's token ids are the prompt, every outage maps to
a typed error that Celery retries, and a deadline closes the stream. The real
server is exercised in test_remote_engine_e2e.py.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from pydantic import SecretStr

from structsum.config import EngineSettings, SamplingSettings
from structsum.config.redact import redact
from structsum.errors import (
    EngineRejected,
    EngineTimeout,
    EngineUnreachable,
    JobTimeout,
    TextTooLong,
)
from structsum.processors.guide import Guide
from structsum.processors.remote_engine import RemoteEngine
from structsum.tasks import retryable_errors
from tests.service.conftest import free_port

MODEL = "served-model"
REQUEST_MESSAGES = [{"role": "user", "content": "hi"}]


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # JSON-able, or a list of SSE data strings for a stream
    delay_s: float = 0.0  # before the answer (a silent server)
    stall_s: float = 0.0  # after the first stream event (a hung generation)


@dataclass
class Script:
    """What the fake answers per path, and what it received."""

    replies: dict[str, Reply] = field(default_factory=dict)
    received: list[tuple[str, dict[str, Any], dict[str, str]]] = field(default_factory=list)
    disconnected: threading.Event = field(default_factory=threading.Event)


def stream(*texts: str, finish: str = "stop") -> list[str]:
    events = [
        json.dumps({"choices": [{"text": t, "token_ids": [10 + i], "finish_reason": None}]})
        for i, t in enumerate(texts)
    ]
    events.append(json.dumps({"choices": [{"text": "", "finish_reason": finish}]}))
    return [*events, "[DONE]"]


def handler(script: Script) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else {}
            script.received.append((self.path, body, dict(self.headers)))
            reply = script.replies.get(self.path, Reply(404, {"error": "no route"}))
            time.sleep(reply.delay_s)
            if isinstance(reply.body, list):
                self.send_response(reply.status)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                try:
                    for i, event in enumerate(reply.body):
                        self._chunk(f"data: {event}\n\n".encode())
                        if i == 0 and reply.stall_s:
                            self._wait_for_disconnect(reply.stall_s)
                    self._chunk(b"")
                except OSError:
                    script.disconnected.set()
                return
            data = json.dumps(reply.body).encode()
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _chunk(self, data: bytes) -> None:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        def _wait_for_disconnect(self, seconds: float) -> None:
            """Stall like a busy engine, and notice the client leaving (vLLM's abort)."""
            self.connection.settimeout(seconds)
            try:
                if self.connection.recv(1, socket.MSG_PEEK) == b"":
                    script.disconnected.set()
                    raise ConnectionResetError
            except TimeoutError:
                pass

        do_GET = _answer
        do_POST = _answer

    return Handler


def base_replies() -> dict[str, Reply]:
    return {
        "/health": Reply(200, {}),
        "/v1/models": Reply(200, {"data": [{"id": MODEL, "max_model_len": 4096}]}),
        "/tokenize": Reply(200, {"tokens": [1, 2, 3], "count": 3, "max_model_len": 4096}),
        "/v1/completions": Reply(200, stream('{"a"', ": 1}")),
    }


@pytest.fixture
def fake() -> Iterator[tuple[Script, str]]:
    script = Script(base_replies())
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler(script))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield script, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def remote(url: str, **overrides: Any) -> RemoteEngine:
    values: dict[str, Any] = {"kind": "remote", "url": url, "ready_timeout_s": 0.0}
    return RemoteEngine(EngineSettings(**(values | overrides)))


@pytest.fixture
def engine(fake: tuple[Script, str]) -> Iterator[RemoteEngine]:
    engine = remote(fake[1], read_timeout_s=2.0)
    yield engine
    engine.close()


def request(**kwargs: Any) -> Any:
    from structsum.processors.generation import GenerationRequest

    return GenerationRequest(REQUEST_MESSAGES, SamplingSettings(max_tokens=50), **kwargs)


def completions(script: Script) -> list[dict[str, Any]]:
    return [body for path, body, _ in script.received if path == "/v1/completions"]


def test_streamed_completion_is_assembled(fake: tuple[Script, str], engine: RemoteEngine) -> None:
    (output,) = engine.generate([request()])
    assert output.text == '{"a": 1}'
    assert output.token_ids == [10, 11]
    assert output.completion_tokens == 2
    assert output.finish_reason == "stop"
    assert output.prompt_tokens == 3
    assert engine.model_name == MODEL


def test_the_budgeted_prompt_ids_and_the_guide_are_sent(
    fake: tuple[Script, str], engine: RemoteEngine
) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    engine.generate([request(guide=Guide("json", schema), prompt_token_ids=[5, 6], max_tokens=9)])
    engine.generate([request(guide=Guide("regex", r"\d+"))])
    engine.generate([request(guide=Guide("json_object"))])
    json_body, regex_body, object_body = completions(fake[0])
    assert json_body["prompt"] == [5, 6]
    assert json_body["max_tokens"] == 9
    assert json_body["stream"] is True
    assert json_body["structured_outputs"] == {"json": schema, "disable_any_whitespace": False}
    assert regex_body["prompt"] == [1, 2, 3]  # tokenized by the server's chat template
    assert regex_body["structured_outputs"] == {"regex": r"\d+"}
    assert object_body["structured_outputs"]["json_object"] is True


def test_chat_tokenization_asks_for_the_generation_prompt(
    fake: tuple[Script, str], engine: RemoteEngine
) -> None:
    assert engine.tokenize_chat(REQUEST_MESSAGES) == [1, 2, 3]
    assert engine.count_tokens("hello") == 3
    chat, text = [body for path, body, _ in fake[0].received if path == "/tokenize"]
    assert chat["messages"] == REQUEST_MESSAGES
    assert chat["add_generation_prompt"] is True
    assert text == {"model": MODEL, "prompt": "hello", "add_special_tokens": False}


def test_api_key_is_sent_and_never_printed(fake: tuple[Script, str]) -> None:
    engine = remote(fake[1], api_key="s3cret-key")
    try:
        engine.count_tokens("x")
    finally:
        engine.close()
    headers = fake[0].received[-1][2]
    assert headers["Authorization"] == "Bearer s3cret-key"
    assert "s3cret-key" not in repr(engine.settings)
    dumped = engine.settings.model_dump(mode="json")
    assert "s3cret-key" not in json.dumps(redact(dumped))
    assert isinstance(engine.settings.api_key, SecretStr)


def test_connection_refused_is_retryable_unreachable() -> None:
    with pytest.raises(EngineUnreachable) as caught:
        remote(f"http://127.0.0.1:{free_port()}")
    assert caught.value.retryable
    assert "not ready" in caught.value.message


@pytest.mark.parametrize("status", [500, 502, 503])
def test_a_5xx_is_retryable_unreachable(
    fake: tuple[Script, str], engine: RemoteEngine, status: int
) -> None:
    fake[0].replies["/v1/completions"] = Reply(status, {"error": "boom"})
    with pytest.raises(EngineUnreachable) as caught:
        engine.generate([request(prompt_token_ids=[1])])
    assert caught.value.retryable
    assert caught.value.details["status"] == status


def test_a_silent_server_is_a_retryable_timeout(
    fake: tuple[Script, str], engine: RemoteEngine
) -> None:
    fake[0].replies["/v1/completions"] = Reply(200, stream("x"), delay_s=4.0)
    with pytest.raises(EngineTimeout) as caught:
        engine.generate([request(prompt_token_ids=[1])])
    assert caught.value.retryable


def test_every_outage_is_retried_by_the_tasks() -> None:
    retried = retryable_errors()
    for error in (EngineUnreachable, EngineTimeout):
        assert issubclass(error, retried)
    assert not issubclass(EngineRejected, retried)


def test_a_prompt_over_the_context_is_text_too_long(
    fake: tuple[Script, str], engine: RemoteEngine
) -> None:
    message = "This model's maximum context length is 4096 tokens. However, you requested 5000"
    fake[0].replies["/v1/completions"] = Reply(400, {"error": {"message": message}})
    with pytest.raises(TextTooLong):
        engine.generate([request(prompt_token_ids=[1])])


def test_a_wrong_key_is_rejected_not_retried(
    fake: tuple[Script, str], engine: RemoteEngine
) -> None:
    fake[0].replies["/v1/completions"] = Reply(401, {"error": "Unauthorized"})
    with pytest.raises(EngineRejected) as caught:
        engine.generate([request(prompt_token_ids=[1])])
    assert not caught.value.retryable


def test_a_server_with_a_shorter_context_is_refused(fake: tuple[Script, str]) -> None:
    fake[0].replies["/v1/models"] = Reply(200, {"data": [{"id": MODEL, "max_model_len": 2048}]})
    with pytest.raises(EngineRejected, match="max_model_len is 2048"):
        remote(fake[1])


def test_an_unserved_model_name_is_refused(fake: tuple[Script, str]) -> None:
    with pytest.raises(EngineRejected, match="does not serve 'other'"):
        remote(fake[1], served_model_name="other")


def test_the_deadline_closes_the_stream(fake: tuple[Script, str], engine: RemoteEngine) -> None:
    script, _ = fake
    script.replies["/v1/completions"] = Reply(200, stream("a", "b"), stall_s=30.0)
    started = time.monotonic()
    with pytest.raises(JobTimeout):
        engine.generate([request(prompt_token_ids=[1])], deadline=started + 1.0)
    assert time.monotonic() - started < 3.0
    # The server sees the client go away: what makes vLLM abort the request.
    assert script.disconnected.wait(5.0)
    assert engine.progress()[0] == 0


def test_health_follows_the_server(fake: tuple[Script, str], engine: RemoteEngine) -> None:
    engine.check_health(timeout_s=2.0)
    fake[0].replies["/health"] = Reply(503, {})
    with pytest.raises(EngineUnreachable):
        engine.check_health(timeout_s=2.0)


def test_remote_needs_a_url() -> None:
    with pytest.raises(ValueError, match=r"needs engine\.url"):
        EngineSettings(kind="remote")
