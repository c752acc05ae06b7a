"""The URL plumbing every ``from_url`` of a store or a transport shares.

* :func:`split_options` — flowkit's ``?name=value`` options, taken off a URL and converted.
* :func:`redact` — a URL with its password masked, for messages.
* converters for option values (:func:`boolean`, :func:`optional_int`,
  :func:`optional_float`), :func:`check_positive` and :func:`sqlite_path`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import unquote_plus, urlsplit

from .._errors import ConfigurationError
from .._redact import redact as scrub

if TYPE_CHECKING:
    from collections.abc import Mapping


def redact(url: str) -> str:
    """The URL with any password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return parts._replace(netloc=netloc).geturl()
    return url


# -- URL options ---------------------------------------------------------------
Converter = Callable[[str], Any]  # an option's text -> its value; ValueError if bad


def split_options(
    url: str,
    accepted: Mapping[str, Converter],
    *,
    mode: Literal["strict", "pass-through"] = "strict",
) -> tuple[str, dict[str, Any]]:
    """``url`` without flowkit's query options, and those options converted.

    ``accepted`` maps each option's name to a converter from its text
    (``int``, ``float``, ``str``, :func:`boolean`, :func:`optional_int`...).
    In ``"strict"`` mode any other query parameter is refused; in
    ``"pass-through"`` mode it stays in the URL, exactly as written, for the
    driver (libpq's ``sslmode=``, redis-py's ``socket_timeout=``, aio-pika's
    ``heartbeat=``). The returned URL has no ``?`` left when no parameter
    remains. The caller lets keyword options override these:
    ``cls(rest, **(found | options))``.

    Raises:
        ConfigurationError: an unknown option (strict mode), an option given
            twice, or a value its converter refuses; the message names the
            option and the URL, password masked.

    >>> split_options("redis://h/0?prefix=shop&socket_timeout=5", {"prefix": str},
    ...               mode="pass-through")
    ('redis://h/0?socket_timeout=5', {'prefix': 'shop'})
    """
    rest, hash_, fragment = url.partition("#")
    base, question, query = rest.partition("?")
    if not question:
        return url, {}
    kept: list[str] = []
    found: dict[str, Any] = {}
    for pair in filter(None, query.split("&")):
        raw_name, _, raw_text = pair.partition("=")
        name = unquote_plus(raw_name)
        if name not in accepted:
            if mode == "strict":
                raise ConfigurationError(
                    f"unknown option {name!r} in {_where(url)!r}: use {', '.join(accepted)}"
                )
            kept.append(pair)
        elif name in found:
            raise ConfigurationError(f"option {name!r} is given twice in {_where(url)!r}")
        else:
            found[name] = _convert(url, name, unquote_plus(raw_text), accepted[name])
    query = "&".join(kept)
    return base + ("?" if query else "") + query + hash_ + fragment, found


def _convert(url: str, name: str, text: str, convert: Converter) -> Any:
    try:
        return convert(text)
    except (ValueError, KeyError) as exc:
        expected = _EXPECTED.get(convert) or f"{type(exc).__name__}: {exc}"
        raise ConfigurationError(f"bad {name}={text!r} in {_where(url)!r}: {expected}") from exc


def _where(url: str) -> str:
    """``url`` for a message: its password and any secret-looking parameter masked."""
    try:
        return str(scrub(redact(url)))
    except ValueError:  # not even urlsplit can read it
        return str(scrub(url))


def boolean(text: str) -> bool:
    """``true``/``false``, ``1``/``0``, ``yes``/``no`` or ``on``/``off``, any case."""
    value = _BOOLEANS.get(text.strip().lower())
    if value is None:
        raise ValueError(f"not a boolean: {text!r}")
    return value


def optional_int(text: str) -> int | None:
    """A whole number, or ``none`` (or nothing) for None."""
    return None if text.strip().lower() in ("", "none") else int(text)


def optional_float(text: str) -> float | None:
    """A number, or ``none`` (or nothing) for None."""
    return None if text.strip().lower() in ("", "none") else float(text)


def check_positive(owner: str, **values: float) -> None:
    """Refuse any of ``values`` that is not above zero, naming it and ``owner``."""
    for name, value in values.items():
        if not value > 0:  # NaN too
            raise ConfigurationError(f"{owner}: {name} must be above 0, got {value!r}")


def sqlite_path(url: str) -> str:
    """``sqlite:///rel.db`` -> ``rel.db``; ``sqlite:////abs.db`` -> ``/abs.db``;
    ``sqlite://`` and ``sqlite:///`` -> ``:memory:`` (``url`` without its query)."""
    path = url[len("sqlite://") :]
    if path.startswith("/"):
        path = path[1:]
    return path or ":memory:"


HISTORY_URL_OPTIONS: dict[str, Converter] = {
    "history": boolean,
    "history_payload": int,
}
"""The run-history options every store's URL takes (``?history=false&history_payload=4096``)."""

_BOOLEANS = {
    **dict.fromkeys(("1", "true", "yes", "on"), True),
    **dict.fromkeys(("0", "false", "no", "off"), False),
}
_EXPECTED: dict[Converter, str] = {
    int: "expected a whole number",
    float: "expected a number",
    boolean: "expected true/false, 1/0 or yes/no",
    optional_int: "expected a whole number or none",
    optional_float: "expected a number or none",
}
