"""Redis clients shared by ``RedisStore`` and ``RedisTransport`` (redis-py's asyncio client).

Without the "redis" extra this module still imports: ``_HAVE_REDIS`` is False
and the store's and the transport's constructors say what to install.
"""

from __future__ import annotations

from typing import Any

try:
    import redis.asyncio as aioredis
    from redis import exceptions as redis_errors
except ImportError:  # the "redis" extra is not installed: the constructors say so
    _HAVE_REDIS = False
else:
    _HAVE_REDIS = True

POOL_TIMEOUT = 30.0  # seconds a command waits for a pooled connection before failing


def redis_client(url: str, max_connections: int, **options: Any) -> Any:
    """A redis-py client whose pool makes callers wait for a connection beyond
    ``max_connections`` (redis-py's default pool raises "Too many connections")."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=POOL_TIMEOUT, **options
    )
    return aioredis.Redis.from_pool(pool)


def error_roots() -> tuple[type[Exception], ...]:
    """Every root exception class of ``redis.exceptions``."""
    return (
        redis_errors.RedisError,
        redis_errors.RedisClusterException,
        redis_errors.ChildDeadlockedError,
        redis_errors.IncorrectPolicyType,
    )
