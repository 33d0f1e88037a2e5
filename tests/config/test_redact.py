"""Secrets never reach a report or a log line: URL passwords and secret-named keys are masked."""

from __future__ import annotations

import pytest

from structsum.config import QueueSettings, Settings
from structsum.config.redact import MASK, redact, redact_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://:s3cret@host:6379/0", "redis://:***@host:6379/0"),
        ("rediss://app:s3cret@redis.example:6380/2", "rediss://app:***@redis.example:6380/2"),
        ("redis://s3cret@host", "redis://***@host"),
        ("redis://127.0.0.1:6379/7", "redis://127.0.0.1:6379/7"),
        ("see redis://:a@h/1 and amqp://u:b@h//", "see redis://:***@h/1 and amqp://u:***@h//"),
    ],
)
def test_url_passwords_are_masked_and_the_rest_is_kept(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_a_settings_dump_keeps_no_password() -> None:
    settings = Settings(
        queue=QueueSettings(
            broker_url="redis://:s3cret@broker:6379/0",
            result_backend="redis://user:0ther@backend:6379/1",
        )
    )
    dump = redact(settings.model_dump(mode="json"))
    text = repr(dump)
    assert "s3cret" not in text and "0ther" not in text
    assert dump["queue"]["broker_url"] == "redis://:***@broker:6379/0"
    assert dump["queue"]["result_backend"] == "redis://user:***@backend:6379/1"
    # everything else is untouched
    assert dump["engine"] == settings.model_dump(mode="json")["engine"]


def test_values_of_secret_named_keys_are_masked() -> None:
    data = {
        "hf_token": "hf_abc",
        "password": "pw",
        "nested": [{"api_key": "k"}],
        "tokenizer": "/models/tok",
        "max_tokens": 768,
    }
    assert redact(data) == {
        "hf_token": MASK,
        "password": MASK,
        "nested": [{"api_key": MASK}],
        "tokenizer": "/models/tok",
        "max_tokens": 768,
    }
