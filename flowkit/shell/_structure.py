"""Structuring node arguments by the node's type hints.

Across a process boundary values arrive as plain JSON data; a node declared
``async def ship(order: Order)`` still receives an ``Order``. Only hints
naming rich types (attrs classes, dataclasses, enums, datetime, UUID,
Decimal, and containers of them) are applied, and only to values that are not
already of that type, so in-process calls pay one ``isinstance`` per argument.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import inspect
import typing
import uuid
from collections.abc import Callable
from typing import Any

import attrs

from .._serde import from_data, is_already

_RICH = (dt.date, dt.time, dt.timedelta, uuid.UUID, decimal.Decimal, enum.Enum)
Structurer = Callable[[tuple[Any, ...], dict[str, Any]], tuple[tuple[Any, ...], dict[str, Any]]]


def is_rich(hint: Any) -> bool:
    """Whether ``hint`` names a type plain JSON data must be structured into."""
    if isinstance(hint, type):
        return attrs.has(hint) or dataclasses.is_dataclass(hint) or issubclass(hint, _RICH)
    return any(is_rich(arg) for arg in typing.get_args(hint))


def _already(value: Any, hint: Any) -> bool:
    return is_already(value, hint)


def structurer(fn: Any) -> Structurer | None:
    """A function converting ``(args, kwargs)`` to ``fn``'s rich hints, or None if none apply."""
    try:
        hints = typing.get_type_hints(fn)
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError, NameError):
        return None
    rich = {p.name: hints[p.name] for p in params if p.name in hints and is_rich(hints[p.name])}
    if not rich:
        return None
    positional = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]

    def convert(name: str, value: Any) -> Any:
        hint = rich.get(name)
        if hint is None or value is None or _already(value, hint):
            return value
        return from_data(value, hint)

    def structure(
        args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        new_args = tuple(
            convert(positional[i], v) if i < len(positional) else v for i, v in enumerate(args)
        )
        return new_args, {k: convert(k, v) for k, v in kwargs.items()}

    return structure
