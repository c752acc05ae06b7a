"""Masking secrets in text and structured data: :func:`redact`.

The ground floor (standard library only), so the URL helpers of stores and
transports and the log processors of ``flowkit.observability`` share one
definition of what a secret looks like. ``flowkit.observability.redact`` is this
function.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Final, overload

MASK: Final = "***"

_SECRET_WORDS = (
    r"password|passwd|pwd|secret|token|sharedaccesskey|sharedaccesssignature"
    r"|account[-_]?key|access[-_]?key|api[-_]?key|private[-_]?key"
)
# scheme://user:PASSWORD@host -> the password (up to the last "@" of the authority)
_URL_PASSWORD = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s:/@'\"]*:)[^\s/'\"]+(?=@)")
# Password=...; SharedAccessKey=...; password='a b'; ?token=...&
_KEY_VALUE = re.compile(
    rf"(?i)((?<![\w-])[\w.-]*?(?:{_SECRET_WORDS})\s*=\s*)"
    r"('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|[^\s;&,]+)"
)
# 'secret': 'value' / "password": "value" (reprs of dicts, JSON)
_QUOTED_PAIR = re.compile(
    rf"(?i)(['\"])([\w.-]*?(?:{_SECRET_WORDS}))\1(\s*:\s*)(['\"])(?:\\.|(?!\4).)*\4"
)
# Bearer <token>; Authorization: Basic <credentials>
_BEARER = re.compile(r"(?i)(\bbearer\s+)[A-Za-z0-9\-._~+/]{8,}=*")
_BASIC = re.compile(r"(?i)(\bauthorization['\"]?\s*[:=]\s*['\"]?basic\s+)[A-Za-z0-9+/]+=*")
_SECRET_KEY = re.compile(rf"(?i)(?:^|[\W_])(?:{_SECRET_WORDS})$|^(?:authorization|cookie)$")


@overload
def redact(value: str, *, secrets: Iterable[str] = ()) -> str: ...
@overload
def redact(value: Mapping[str, Any], *, secrets: Iterable[str] = ()) -> dict[str, Any]: ...
@overload
def redact(value: Any, *, secrets: Iterable[str] = ()) -> Any: ...
def redact(value: Any, *, secrets: Iterable[str] = ()) -> Any:
    """``value`` with secrets masked as ``***``.

    Masks passwords in URLs (``amqp://user:***@host``), values in connection
    strings (``Password=***;``, ``SharedAccessKey=***``, ``password='***'``),
    bearer tokens, the values of secret-looking keys (``secret``,
    ``password``, ``*_token``, ...) in mappings and in their reprs, and any of
    the literal ``secrets`` given (a webhook secret read from the environment,
    say). Mappings, lists and tuples are redacted recursively; another object
    is returned as is unless its ``repr`` shows a secret, in which case the
    redacted ``repr`` is returned. Applying it twice changes nothing more.

    Generalises ``flowkit.backends._options.redact`` (URLs only) and agrees with it
    on URLs.

    >>> redact("amqp://app:hunter2@rabbit:5672/prod")
    'amqp://app:***@rabbit:5672/prod'
    >>> redact("Endpoint=sb://ns/;SharedAccessKeyName=root;SharedAccessKey=abc=")
    'Endpoint=sb://ns/;SharedAccessKeyName=root;SharedAccessKey=***'
    >>> redact({"path": "/hooks/pay", "secret": "wh_123"})
    {'path': '/hooks/pay', 'secret': '***'}
    """
    return _scrub(value, tuple(s for s in secrets if s))


def redact_field(key: Any, value: Any) -> Any:
    """``value`` redacted as the value of ``key`` in a mapping: masked whole if the key
    looks secret (``password``, ``api_key``...), else as :func:`redact` would."""
    return _scrub_item(key, value, ())


def _scrub(value: Any, secrets: tuple[str, ...]) -> Any:
    if isinstance(value, str):
        return _scrub_text(value, secrets)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, Mapping):
        return {k: _scrub_item(k, v, secrets) for k, v in value.items()}
    if type(value) in (list, tuple):
        return type(value)(_scrub(v, secrets) for v in value)
    text = repr(value)
    scrubbed = _scrub_text(text, secrets)
    return value if scrubbed == text else scrubbed


def _scrub_item(key: Any, value: Any, secrets: tuple[str, ...]) -> Any:
    if value not in (None, "") and _SECRET_KEY.search(str(key)):
        return MASK
    return _scrub(value, secrets)


def _scrub_text(text: str, secrets: tuple[str, ...]) -> str:
    if "@" in text:
        text = _URL_PASSWORD.sub(rf"\1{MASK}", text)
    if "=" in text:
        text = _KEY_VALUE.sub(_mask_value, text)
    if ":" in text and ("'" in text or '"' in text):
        text = _QUOTED_PAIR.sub(rf"\1\2\1\3\4{MASK}\4", text)
    if "earer" in text:
        text = _BEARER.sub(rf"\1{MASK}", text)
    if "asic" in text:
        text = _BASIC.sub(rf"\1{MASK}", text)
    for secret in secrets:
        text = text.replace(secret, MASK)
    return text


def _mask_value(match: re.Match[str]) -> str:
    value = match.group(2)
    quote = value[0] if value[:1] in ("'", '"') else ""
    return f"{match.group(1)}{quote}{MASK}{quote}"
