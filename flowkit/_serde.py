"""Plain data in and out: values crossing a process boundary become JSON, never pickle.

Supported: JSON types, tuples, sets, attrs classes, dataclasses, enums,
``datetime``/``date``/``time``/``timedelta``, ``UUID`` and ``Decimal``. Type
hints structure the data back into those types on the way in.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import json
import math
import sys
import types
import typing
import uuid
from typing import TYPE_CHECKING, Any

import attrs
from cattrs.preconf.json import make_converter

from ._errors import FlowkitError

if TYPE_CHECKING:
    import cattrs


class SerializationError(FlowkitError, TypeError):
    """A value cannot be turned into plain data (or plain data into the hinted type)."""


converter: cattrs.Converter = make_converter()
converter.register_unstructure_hook(decimal.Decimal, str)
converter.register_structure_hook(decimal.Decimal, lambda v, _: decimal.Decimal(str(v)))
converter.register_unstructure_hook(uuid.UUID, str)
converter.register_structure_hook(
    uuid.UUID, lambda v, _: v if isinstance(v, uuid.UUID) else uuid.UUID(v)
)
converter.register_unstructure_hook(dt.timedelta, lambda v: v.total_seconds())
converter.register_structure_hook(
    dt.timedelta, lambda v, _: v if isinstance(v, dt.timedelta) else dt.timedelta(seconds=v)
)

_PLAIN = (str, int, float, bool, type(None))
_BITS_PER_DIGIT = 3.32  # just under log2(10): fewer bits than this many digits' worth fit


def to_data(value: Any) -> Any:
    """Plain JSON-able data for ``value`` (raises :class:`SerializationError`)."""
    if isinstance(value, _PLAIN):
        if isinstance(value, int) and not fits_json(value):
            raise SerializationError(too_long(value))
        return value
    if isinstance(value, dict):
        return {_key(k): to_data(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_data(v) for v in value]
    if (
        attrs.has(type(value))
        or dataclasses.is_dataclass(value)
        or isinstance(
            value, enum.Enum | dt.date | dt.time | dt.timedelta | uuid.UUID | decimal.Decimal
        )
    ):
        return to_data(converter.unstructure(value))
    raise SerializationError(
        f"cannot serialise a {type(value).__qualname__} ({value!r:.80}): node inputs, outputs "
        "and state must be JSON types, attrs classes, dataclasses, enums, datetime, UUID or "
        "Decimal"
    )


def fits_json(number: int) -> bool:
    """Whether ``number`` can be written as JSON and read back: Python refuses to convert
    an int of more digits than ``sys.get_int_max_str_digits()`` to or from text."""
    limit = sys.get_int_max_str_digits()
    if not limit or number.bit_length() < (limit - 1) * _BITS_PER_DIGIT:
        return True
    try:
        str(number)
    except ValueError:
        return False
    return True


def too_long(number: int) -> str:
    """Why ``number`` cannot be JSON, and what to do instead."""
    return (
        f"an int of about {int(number.bit_length() / math.log2(10)) + 1} digits cannot be "
        f"written as JSON (Python reads and writes at most {sys.get_int_max_str_digits()} "
        "digits): pass it as a string or a Decimal"
    )


def _key(key: Any) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, int | float | bool | enum.Enum | uuid.UUID):
        return str(to_data(key))
    raise SerializationError(f"dictionary keys must be strings, got {type(key).__qualname__}")


def is_already(value: Any, hint: Any) -> bool:
    """Whether ``value`` is of type ``hint`` already (or of a member of a union ``hint``),
    so needs no structuring; False when that cannot be told by ``isinstance``."""
    if isinstance(hint, type):
        return isinstance(value, hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(is_already(value, member) for member in typing.get_args(hint))
    return False


def from_data(data: Any, hint: Any) -> Any:
    """Structure plain data into ``hint`` (a type annotation); ``Any`` passes it through."""
    if hint is Any or hint is None or hint is object:
        return data
    try:
        return converter.structure(data, hint)
    except Exception as exc:  # cattrs raises many shapes; report one clear error
        raise SerializationError(
            f"cannot turn {data!r:.80} into {getattr(hint, '__qualname__', hint)}: {exc}"
        ) from exc


def dumps(value: Any) -> bytes:
    """Canonical JSON bytes of ``value`` (after :func:`to_data`)."""
    return json.dumps(to_data(value), separators=(",", ":"), ensure_ascii=False).encode()


def loads(data: bytes | str) -> Any:
    """Parse JSON bytes (raises :class:`SerializationError` on malformed input)."""
    try:
        return json.loads(data)
    except RecursionError:
        raise SerializationError("malformed JSON: nested too deeply") from None
    except ValueError as exc:  # UnicodeDecodeError and numbers of too many digits too
        raise SerializationError(f"malformed JSON: {exc}") from exc
