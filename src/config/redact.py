"""Secrets out of anything written down: reports, settings dumps, log lines.

Settings carry the broker and result-backend URLs, and a Redis URL may hold a
password (``redis://:s3cret@host:6379/0``). A benchmark report or a log line is
shared freely, so whatever prints settings passes them through ``redact`` first.
It lives in config, the lowest layer, so that report code and service logs alike
can use it without importing upward.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

MASK = "***"

# scheme://[user][:password]@ -- the password (or a lone user token) is masked, the
# user name, host, port and path stay: they tell which server was used.
_URL_CREDENTIALS = re.compile(
    r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:@/\s]*)(?::(?P<password>[^@/\s]*))?@"
)

# Mapping keys whose values are secrets whatever they look like.
# Whole words of a snake_case key: ``hf_token`` is one, ``max_tokens`` and ``tokenizer`` are not.
_SECRET_KEY = re.compile(
    r"(?:^|_)(?:pass(?:word|wd)?|secret|token|api_?key|credentials?)(?:$|_)", re.IGNORECASE
)


def _mask_credentials(match: re.Match[str]) -> str:
    head, user, password = match.group("head", "user", "password")
    if password is None:
        # redis://token@host: Redis reads a lone user part as the password
        return f"{head}{MASK}@" if user else match.group(0)
    return f"{head}{user}:{MASK}@"


def redact_url(text: str) -> str:
    """``text`` with the password of every URL in it masked (``redis://:***@host``)."""
    return _URL_CREDENTIALS.sub(_mask_credentials, text)


def redact(value: Any) -> Any:
    """A copy of ``value`` (nested dicts, lists, strings) safe to write down.

    URL passwords are masked in every string, and the whole value of a key that
    names a secret (``password``, ``token``, ``api_key``...) is masked.
    """
    if isinstance(value, str):
        return redact_url(value)
    if isinstance(value, Mapping):
        return {key: MASK if _is_secret(key, item) else redact(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [redact(item) for item in value]
    return value


def _is_secret(key: object, item: object) -> bool:
    return isinstance(key, str) and bool(_SECRET_KEY.search(key)) and isinstance(item, str)
