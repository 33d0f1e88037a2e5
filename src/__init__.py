"""structsum: structured-output summarization on vLLM behind a Celery queue."""

__version__ = "0.1.0"
