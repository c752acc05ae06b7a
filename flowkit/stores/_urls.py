"""``stores.from_url``: ``memory://``, ``sqlite:///path.db``, ``postgresql://...``,
``redis://...``.

The URL plumbing every store's ``from_url`` shares is ``flowkit.backends._options``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from .._errors import ConfigurationError as ConfigurationError
from ..backends._options import redact

# scheme -> (module, class); the module (and its driver) loads only when used
_SCHEMES: dict[str, tuple[str, str]] = {
    "memory": ("._memory", "MemoryStore"),
    "sqlite": ("._sqlite", "SQLiteStore"),
    "postgres": ("._postgres", "PostgresStore"),
    "postgresql": ("._postgres", "PostgresStore"),
    "redis": ("._redis", "RedisStore"),
    "rediss": ("._redis", "RedisStore"),
}


def from_url(url: str, **options: Any) -> Any:
    """Build a store from a URL; the query may set the store's options.

    Each store's class method ``from_url(url, **options)`` lists the options it
    reads from the query; keyword ``options`` override them.

    >>> from_url("memory://?snapshot_every=8").snapshot_every
    8
    """
    import importlib

    entry = _SCHEMES.get(urlsplit(url).scheme.lower())
    if entry is None:
        raise ConfigurationError(
            f"unknown store URL {redact(url)!r}: use memory://, sqlite:///path.db, "
            "postgresql://user@host/db or redis://host:port/db"
        )
    module_name, class_name = entry
    cls = getattr(importlib.import_module(module_name, __package__), class_name)
    return cls.from_url(url, **options)
