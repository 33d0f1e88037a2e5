"""Structured logs: one line per event, ``key=value`` pairs after the message.

Fields passed with ``log.info("msg", extra={...})`` are appended, so log lines can
be grepped and parsed without a JSON logger dependency. Every log line goes to
stderr, vLLM's included: stdout carries results only (``structsum summarize > s.json``).
"""

from __future__ import annotations

import logging
import os
import sys

# vLLM's own handler writes to stdout unless told otherwise; its engine-core
# subprocess inherits the environment, so one variable covers both processes.
VLLM_STDERR = "ext://sys.stderr"

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        base = f"{self.formatTime(record)} {record.levelname} {record.name}: {record.getMessage()}"
        fields = {k: v for k, v in vars(record).items() if k not in _STANDARD}
        if fields:
            base += " " + " ".join(f"{k}={v}" for k, v in sorted(fields.items()))
        if record.exc_info:
            base += "\n" + self.formatException(record.exc_info)
        return base


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def engine_environment(vllm_level: str | None = None) -> None:
    """Set what vLLM and huggingface_hub read once, at import, before either is imported.

    Called by the CLI at start and by ``load_engine`` (so every worker, however it
    is started): vLLM logs to stderr, at ``vllm_level`` when given, and nothing
    goes to the hub (the bundled model is local). A value the user exported wins.
    """
    os.environ.setdefault("VLLM_LOGGING_STREAM", VLLM_STDERR)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if vllm_level:
        os.environ.setdefault("VLLM_LOGGING_LEVEL", vllm_level.upper())
