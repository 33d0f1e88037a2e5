"""benchmark_engine.py without an engine: arguments, rows, the fair-length flag, exit status."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from structsum.bench.engine_rows import compute_rows
from structsum.bench.report import REQUIRED_KEYS
from structsum.bench.stats import RequestSample
from structsum.bench.workload import SchemaVariant


def parse(script: ModuleType, *argv: str) -> Any:
    args = script.build_parser().parse_args(list(argv))
    script.check_args(args)
    return args


def req(tokens: int, *, valid: bool | None = None, error: str | None = None) -> RequestSample:
    return RequestSample(
        input_tokens=512,
        output_tokens=tokens,
        ttft_ms=20.0,
        e2e_ms=20.0 + tokens,
        itl_ms=[1.0] * (tokens - 1),
        finish_reason="length",
        valid=valid,
        error=error,
    )


def test_defaults(engine_script: ModuleType) -> None:
    args = parse(engine_script, "--backends", "xgrammar")
    assert args.batch_sizes == [1, 8, 64]
    assert (args.input_len, args.output_len, args.seed) == (512, 256, 0)
    assert args.max_model_len == 512 + 256 + 128
    assert args.max_num_seqs == 64
    assert "generic_summary_v1" in args.template_ids
    assert args.schemas == ["full", "simplified"]


def test_bad_arguments_are_refused(engine_script: ModuleType) -> None:
    with pytest.raises(SystemExit):
        parse(engine_script, "--batch-sizes", "0")
    with pytest.raises(SystemExit):
        parse(engine_script, "--output-len", "1")
    with pytest.raises(SystemExit):
        engine_script.build_parser().parse_args(["--backends", "lmfe"])


def rows_for(script: ModuleType, guided_tokens: int) -> list[dict[str, Any]]:
    args = parse(script, "--backends", "xgrammar", "--batch-sizes", "2", "--num-runs", "1")
    variant = SchemaVariant("t", "full", "json", {"type": "object"}, {"type": "object"})
    skipped = SchemaVariant("t", "simplified", "json", {"type": "object"}, {"type": "object"})
    raw = {
        "unguided": {2: [[req(100), req(100)]]},
        "t:full": {2: [[req(guided_tokens, valid=True), req(guided_tokens, valid=False)]]},
    }
    durations = {"unguided": {2: [1.0]}, "t:full": {2: [2.0]}}
    return compute_rows(
        args,
        "xgrammar",
        [variant, skipped],
        raw,
        durations,
        {"t:full": 12.5, "t:simplified": None},
        {"t:simplified": "unsupported"},
        {"t:full": "{}"},
    )


def test_rows_compare_guided_with_unguided(engine_script: ModuleType) -> None:
    unguided, guided, skipped = rows_for(engine_script, 100)
    assert unguided["arm"] == "unguided" and unguided["output_tokens_per_s"] == 200.0
    assert guided["throughput_ratio"] == pytest.approx(0.5)
    assert guided["fair"] is True
    assert guided["valid_fraction"] == 0.5
    assert guided["compile_overhead_ms"] == 12.5
    assert skipped["status"] == "skipped" and skipped["note"] == "unsupported"
    cells = engine_script.engine_rows([unguided, guided, skipped])
    assert cells[1][5] == "50%"
    assert cells[2][3] == "skipped"


def test_a_guided_arm_that_stopped_early_is_flagged(engine_script: ModuleType) -> None:
    _, guided, _ = rows_for(engine_script, 50)
    assert guided["fair"] is False
    assert "differ by 50%" in guided["note"]
    assert engine_script.engine_rows([guided])[0][5].endswith("*")


def fake_part(backend: str, failed: int) -> dict[str, Any]:
    row = {
        "backend": backend,
        "arm": "unguided",
        "batch_size": 1,
        "status": "ok",
        "failed": failed,
        "output_tokens_per_s": 10.0,
        "requests_per_s": 1.0,
        "mean_output_tokens": 10.0,
        "p50_ttft_ms": 1.0,
        "p99_ttft_ms": 1.0,
        "p50_itl_ms": 1.0,
        "p99_itl_ms": 1.0,
        "valid_fraction": None,
    }
    return {
        "backend": backend,
        "rows": [row],
        "samples": {"unguided": {}},
        "schemas": {},
        "notes": [],
        "engine_load_s": 1.0,
    }


@pytest.mark.parametrize(("failed", "status"), [(0, 0), (1, 1)])
def test_report_and_exit_status(
    engine_script: ModuleType,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    failed: int,
    status: int,
) -> None:
    monkeypatch.setattr(
        engine_script, "run_children", lambda args, argv: iter([fake_part("xgrammar", failed)])
    )
    code = engine_script.main(
        [
            "--model",
            "m",
            "--backends",
            "xgrammar",
            "--result-dir",
            str(tmp_path),
            "--result-filename",
            "r.json",
            "--metadata",
            "label=test",
        ]
    )
    assert code == status
    report = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    assert set(REQUIRED_KEYS) <= set(report)
    assert report["benchmark"] == "engine"
    assert report["arguments"]["batch_sizes"] == [1, 8, 64]
    assert report["metadata"] == {"label": "test"}
    assert report["engines"]["xgrammar"]["engine_load_s"] == 1.0
    assert "fair_length_rule" in report["settings"]


def test_a_backend_whose_engine_died_fails_the_run(
    engine_script: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    broken = {
        "backend": "guidance",
        "rows": [],
        "samples": {},
        "schemas": {},
        "notes": ["guidance: engine process failed (exit 1)"],
        "error": "exit 1",
    }
    monkeypatch.setattr(engine_script, "run_children", lambda args, argv: iter([broken]))
    code = engine_script.main(
        ["--model", "m", "--backends", "guidance", "--result-dir", str(tmp_path)]
    )
    assert code == 1
