"""vLLM's scheduler figures that say whether work was saved: prefix cache and speculation.

vLLM v1 reports them per scheduler step to its stat loggers; the engine hands
``AsyncLLM`` one more logger (``stat_logger_factory``) that adds them up here.
Everything is in tokens: the prefix cache counts prompt tokens looked up
(``queries``) and found (``hits``); speculation counts draft tokens proposed and
accepted. Counters only grow, so a reader takes differences between two reads
(``delta``) to see one job or one benchmark arm.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class EngineCounters:
    """Cumulative since the engine started."""

    prefix_queries: int = 0  # prompt tokens looked up in the prefix cache
    prefix_hits: int = 0  # of them, found (their KV was reused, not recomputed)
    spec_drafts: int = 0
    spec_draft_tokens: int = 0
    spec_accepted_tokens: int = 0

    @property
    def prefix_hit_rate(self) -> float | None:
        return self.prefix_hits / self.prefix_queries if self.prefix_queries else None

    @property
    def spec_acceptance_rate(self) -> float | None:
        if not self.spec_draft_tokens:
            return None
        return self.spec_accepted_tokens / self.spec_draft_tokens

    def delta(self, earlier: EngineCounters) -> EngineCounters:
        """What happened between ``earlier`` and this read."""
        mine, theirs = asdict(self), asdict(earlier)
        return EngineCounters(**{k: mine[k] - theirs[k] for k in mine})

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "prefix_hit_rate": self.prefix_hit_rate,
            "spec_acceptance_rate": self.spec_acceptance_rate,
        }


class CounterSink:
    """Where the stat logger adds; read from any thread (the logger runs on the engine loop)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters = EngineCounters()

    def add(self, step: EngineCounters) -> None:
        with self._lock:
            now, more = asdict(self._counters), asdict(step)
            self._counters = EngineCounters(**{k: now[k] + more[k] for k in now})

    def read(self) -> EngineCounters:
        with self._lock:
            return self._counters


def stat_logger_factory(sink: CounterSink) -> Any:
    """A per-engine vLLM stat logger factory that feeds ``sink`` (vLLM imported here)."""
    from vllm.v1.metrics.loggers import StatLoggerBase

    class SinkLogger(StatLoggerBase):
        def __init__(self, vllm_config: Any, engine_index: int = 0) -> None:
            self.engine_index = engine_index

        def record(
            self,
            scheduler_stats: Any,
            iteration_stats: Any,
            mm_cache_stats: Any = None,
            engine_idx: int = 0,
        ) -> None:
            if scheduler_stats is None:
                return
            prefix = scheduler_stats.prefix_cache_stats
            spec = scheduler_stats.spec_decoding_stats
            sink.add(
                EngineCounters(
                    prefix_queries=prefix.queries,
                    prefix_hits=prefix.hits,
                    spec_drafts=spec.num_drafts if spec else 0,
                    spec_draft_tokens=spec.num_draft_tokens if spec else 0,
                    spec_accepted_tokens=spec.num_accepted_tokens if spec else 0,
                )
            )

        def log_engine_initialized(self) -> None:
            pass

    return SinkLogger
