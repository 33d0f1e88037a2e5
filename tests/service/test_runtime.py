"""The worker runtime: one engine, loaded once; health reports what is down."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from structsum.config import QueueSettings, Settings
from structsum.errors import EngineUnavailable
from structsum.processors.engine import GenerationOutput, GenerationRequest
from structsum.processors.warmup import warmup_requests
from structsum.service.runtime import WorkerRuntime
from tests.fakes import FakeEngine


def _settings(**queue: object) -> Settings:
    return Settings(queue=QueueSettings.model_validate({"metrics_port": None, **queue}))


class HealthyEngine(FakeEngine):
    def __init__(self, fail: bool = False) -> None:
        super().__init__(lambda _: ("{}", "stop"))
        self.fail = fail
        self.checks = 0

    def check_health(self, timeout_s: float = 10.0) -> None:
        self.checks += 1
        if self.fail:
            raise EngineUnavailable("engine core died")


def test_start_warms_every_template_grammar_once() -> None:
    settings = _settings()
    runtime = WorkerRuntime(settings)
    engine = HealthyEngine()
    runtime.start(engine)
    runtime.start(engine)
    try:
        assert len(engine.batches) == 1  # one batch, before any job
        # Every template with a fixed grammar (those with verbatim fields build theirs
        # per request).
        warmed, grammars, _ = warmup_requests(settings)
        assert warmed and engine.batches[0] == len(grammars) >= len(warmed)
        assert all(r.guide is not None and r.max_tokens == 1 for r in engine.requests)
    finally:
        runtime.stop()


def test_warm_up_can_be_switched_off() -> None:
    runtime = WorkerRuntime(_settings(warm_grammars=False))
    engine = HealthyEngine()
    runtime.start(engine)
    runtime.stop()
    assert engine.requests == []


def test_a_failed_warm_up_leaves_the_worker_serving() -> None:
    class DeadOnArrival(HealthyEngine):
        def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationOutput]:
            raise EngineUnavailable("engine core died")

    runtime = WorkerRuntime(_settings())
    runtime.start(DeadOnArrival())
    try:
        assert runtime.loaded
    finally:
        runtime.stop()


def test_no_engine_before_start() -> None:
    runtime = WorkerRuntime(_settings())
    assert not runtime.loaded
    with pytest.raises(EngineUnavailable):
        _ = runtime.engine


def test_start_is_idempotent_and_counts_one_load() -> None:
    runtime = WorkerRuntime(_settings())
    engine = HealthyEngine()
    runtime.start(engine)
    runtime.start(HealthyEngine())
    try:
        assert runtime.engine is engine
        assert runtime.metrics.registry.get_sample_value("structsum_engine_loads_total") == 1
        assert runtime.metrics.registry.get_sample_value("structsum_engine_up") == 1
    finally:
        runtime.stop()
    assert not runtime.loaded
    assert runtime.metrics.registry.get_sample_value("structsum_engine_up") == 0


def test_health_reports_unreachable_redis() -> None:
    # Port 1 refuses connections at once: no waiting on a timeout.
    runtime = WorkerRuntime(_settings(broker_url="redis://127.0.0.1:1/0"))
    runtime.start(HealthyEngine())
    try:
        report = runtime.health()
    finally:
        runtime.stop()
    assert report["ok"] is False
    assert report["engine"] == "ok"
    assert report["broker"].startswith("ConnectionError")


def test_health_reports_a_dead_engine() -> None:
    runtime = WorkerRuntime(_settings(broker_url="redis://127.0.0.1:1/0"))
    engine = HealthyEngine(fail=True)
    runtime.start(engine)
    try:
        report = runtime.health()
    finally:
        runtime.stop()
    assert engine.checks == 1
    assert report["ok"] is False
    assert report["engine"].startswith("EngineUnavailable")


@pytest.mark.service
def test_health_ok_with_redis_and_engine() -> None:
    runtime = WorkerRuntime(_settings(broker_url="redis://127.0.0.1:6379/0"))
    runtime.start(HealthyEngine())
    try:
        report = runtime.health()
    finally:
        runtime.stop()
    assert report["ok"] is True, report
    assert "processed" in report["stats"]


def test_engine_death_stops_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    from celery.worker import state

    from structsum.service.runtime import ENGINE_DEAD_EXIT_CODE

    monkeypatch.setattr(state, "should_stop", None)
    exits: list[float] = []
    runtime = WorkerRuntime(_settings(watchdog_exit_grace_s=7), exit_later=exits.append)
    runtime.start(HealthyEngine())
    try:
        runtime.engine_died()
        assert state.should_stop == ENGINE_DEAD_EXIT_CODE
        assert runtime.metrics.registry.get_sample_value("structsum_engine_up") == 0
        # a warm shutdown that hangs (threads behind a hung engine) ends in a hard exit
        assert exits == [7]
        assert runtime.liveness()["ok"] is False
    finally:
        runtime.stop()
