"""Prefix-cache and speculation counters, their export, and the n-gram speculation setting."""

from __future__ import annotations

from structsum.config import EngineSettings
from structsum.processors.engine_stats import CounterSink, EngineCounters
from structsum.processors.vllm_args import speculative_config
from structsum.service.metrics import ServiceMetrics


def test_counters_add_up_and_give_rates_of_a_window() -> None:
    sink = CounterSink()
    sink.add(EngineCounters(prefix_queries=400, prefix_hits=0))
    first = sink.read()
    sink.add(EngineCounters(prefix_queries=420, prefix_hits=384, spec_draft_tokens=8,
                            spec_accepted_tokens=6))  # fmt: skip
    window = sink.read().delta(first)
    assert window.prefix_hit_rate == 384 / 420
    assert window.spec_acceptance_rate == 6 / 8
    assert sink.read().prefix_hit_rate == 384 / 820
    assert EngineCounters().prefix_hit_rate is None  # nothing looked up yet: no rate


def test_metrics_export_the_engine_counters_at_scrape_time() -> None:
    metrics = ServiceMetrics()
    sink = CounterSink()
    metrics.watch_engine(sink.read)
    sink.add(EngineCounters(prefix_queries=100, prefix_hits=75))

    registry = metrics.registry
    assert registry.get_sample_value("structsum_engine_prefix_queries_tokens") == 100
    assert registry.get_sample_value("structsum_engine_prefix_hits_tokens") == 75
    assert registry.get_sample_value("structsum_engine_prefix_cache_hit_rate") == 0.75
    assert metrics.snapshot()["engine"]["prefix_hit_rate"] == 0.75


def test_an_engine_without_counters_reports_none() -> None:
    metrics = ServiceMetrics()
    metrics.watch_engine(None)
    assert "engine" not in metrics.snapshot()
    assert metrics.registry.get_sample_value("structsum_engine_prefix_cache_hit_rate") == 0


def test_ngram_speculation_setting() -> None:
    assert speculative_config(EngineSettings()) is None
    assert speculative_config(EngineSettings(ngram_draft_tokens=4)) == {
        "method": "ngram",
        "num_speculative_tokens": 4,
        "prompt_lookup_min": 2,
        "prompt_lookup_max": 4,
    }
    explicit = {"method": "ngram", "num_speculative_tokens": 2}
    chosen = EngineSettings(ngram_draft_tokens=4, speculative_config=explicit)
    assert speculative_config(chosen) == explicit
