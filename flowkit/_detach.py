"""Copies of run data that share nothing mutable with the original."""

from __future__ import annotations

import copy
from typing import Any, Final

_PLAIN_SCALARS: Final = frozenset({str, int, float, bool, type(None)})


def detached(value: Any) -> Any:
    """A deep copy of ``value`` that shares nothing mutable with it.

    Plain data (dicts, lists, scalars) is copied directly, the fast way; other
    values with :func:`copy.deepcopy`. A value that cannot be copied (a lock,
    a socket, a client) is shared: there is no other way to hand it out.
    """
    try:
        return _detached_plain(value)
    except RecursionError:  # a cycle, or nesting deeper than plain data goes
        return _deep_copy(value)


def _detached_plain(value: Any) -> Any:
    kind = type(value)
    if kind in _PLAIN_SCALARS:
        return value
    if kind is dict:
        return {key: _detached_plain(item) for key, item in value.items()}
    if kind is list:
        return [_detached_plain(item) for item in value]
    return _deep_copy(value)


def _deep_copy(value: Any) -> Any:
    try:
        return copy.deepcopy(value)
    except Exception:  # whatever stops a copy (no pickling support, a lock inside)
        return value
