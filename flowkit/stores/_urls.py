"""``stores.from_url``: ``memory://``, ``sqlite:///path.db``, ``postgresql://...``, ``redis://...``."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from .._errors import FlowkitError


class ConfigurationError(FlowkitError, ValueError):
    """A URL or option names something flowkit cannot build."""


def from_url(url: str, **options: Any) -> Any:
    """Build a store from a URL.

    >>> from_url("memory://")  # doctest: +ELLIPSIS
    <flowkit.stores._memory.MemoryStore object at ...>
    """
    scheme = urlsplit(url).scheme.lower()
    if scheme == "memory":
        from ._memory import MemoryStore

        return MemoryStore(**options)
    if scheme == "sqlite":
        from ._sqlite import SQLiteStore

        path = url[len("sqlite://") :]
        if path.startswith("/"):
            path = (
                path[1:] or ":memory:"
            )  # sqlite:///rel.db -> rel.db; sqlite:////abs.db -> /abs.db
        return SQLiteStore(path or ":memory:", **options)
    if scheme in ("postgres", "postgresql"):
        from ._postgres import PostgresStore

        return PostgresStore(url, **options)
    if scheme in ("redis", "rediss"):
        from ._redis import RedisStore

        return RedisStore(url, **options)
    raise ConfigurationError(
        f"unknown store URL {redact(url)!r}: use memory://, sqlite:///path.db, "
        "postgresql://user@host/db or redis://host:port/db"
    )


def redact(url: str) -> str:
    """The URL with any password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return parts._replace(netloc=netloc).geturl()
    return url
