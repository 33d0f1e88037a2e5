"""The step profiler behind `benchmark_engine.py --profile`: timers, files, arithmetic."""

from __future__ import annotations

import json
import sys
import time
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from structsum.processors import engine_profile


@pytest.fixture
def fake_vllm(monkeypatch: pytest.MonkeyPatch) -> Iterator[type]:
    """A stand-in for vLLM's engine core: one target that exists, the rest missing."""

    class EngineCore:
        def step(self) -> str:
            time.sleep(0.01)
            return "stepped"

    module = types.ModuleType("vllm.v1.engine.core")
    module.EngineCore = EngineCore  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "vllm.v1.engine.core", module)
    monkeypatch.setattr(engine_profile, "_totals", {})
    monkeypatch.setattr(engine_profile, "_missing", [])
    monkeypatch.setattr(engine_profile, "_started", False)
    monkeypatch.setattr(engine_profile, "_directory", None)
    # Only the fake's targets: wrapping the real vLLM installed here would outlive the test.
    targets = [t for t in engine_profile.TARGETS if t[1] == "vllm.v1.engine.core"]
    monkeypatch.setattr(engine_profile, "TARGETS", tuple(targets))
    yield EngineCore


def test_off_without_the_environment_variable(fake_vllm: type) -> None:
    assert engine_profile.install({}) is False
    assert not getattr(fake_vllm.step, "_structsum_profiled", False)


def test_times_existing_targets_and_writes_them_for_readers(
    fake_vllm: type, tmp_path: Path
) -> None:
    assert engine_profile.install({engine_profile.ENV_DIR: str(tmp_path)})
    engine_profile.install({engine_profile.ENV_DIR: str(tmp_path)})  # idempotent
    core = fake_vllm()
    assert core.step() == "stepped"  # the wrapped method still returns its value
    core.step()
    time.sleep(engine_profile.SETTLE_S)
    totals = engine_profile.read_totals(tmp_path)
    assert totals["step"]["calls"] == 2  # wrapped once, not once per install
    assert totals["step"]["s"] >= 0.02
    written = json.loads(next(tmp_path.glob("profile-*.json")).read_text())
    # Absent in the fake: listed, not an error.
    assert "EngineCore.step_with_batch_queue" in written["missing"]


def test_a_forked_child_reports_its_own_totals(fake_vllm: type, tmp_path: Path) -> None:
    """vLLM forks its engine core on a GPU: the child must flush, and only its own work."""
    import os

    engine_profile.install({engine_profile.ENV_DIR: str(tmp_path)})
    fake_vllm().step()  # the parent's step, before the fork
    pid = os.fork()
    if pid == 0:  # the child: one step of its own, then time for the flusher
        fake_vllm().step()
        fake_vllm().step()
        time.sleep(engine_profile.SETTLE_S)
        os._exit(0)
    os.waitpid(pid, 0)
    child = json.loads((tmp_path / f"profile-{pid}.json").read_text())
    assert child["totals"]["step"]["calls"] == 2


def test_difference_and_per_step_give_the_cost_of_one_arm() -> None:
    before = {"step": {"calls": 10.0, "s": 1.0}, "grammar_bitmask": {"calls": 5.0, "s": 0.1}}
    after = {
        "step": {"calls": 30.0, "s": 3.0},
        "grammar_bitmask": {"calls": 5.0, "s": 0.1},  # unchanged: not part of this arm
        "accept_tokens": {"calls": 20.0, "s": 0.2},  # new since the first read
    }
    arm = engine_profile.difference(after, before)
    assert arm == {"step": {"calls": 20.0, "s": 2.0}, "accept_tokens": {"calls": 20.0, "s": 0.2}}
    per_step = engine_profile.per_step_ms(arm)
    assert per_step["steps"] == 20
    assert per_step["step"] == pytest.approx(100.0)
    assert per_step["accept_tokens"] == pytest.approx(10.0)
    assert engine_profile.per_step_ms({"accept_tokens": {"calls": 1.0, "s": 1.0}}) == {}
