"""Build blueprints from untrusted JSON or plain data, and validate them.

Plain data is checked by hand rather than by cattrs: every problem is reported
at once with its path (``nodes[3].config.retries``), nothing is coerced
(``"3"`` is not an int), and unknown keys are refused. No exception other than
:class:`~flowkit.BlueprintError` leaves this module.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping
from typing import Any, cast

from .._durations import Backoff
from .._errors import BlueprintError
from .._serde import fits_json, too_long
from ._lint import LintIssue, lint
from ._model import (
    JOIN_MODES,
    NODE_KINDS,
    Blueprint,
    EdgeSpec,
    JoinMode,
    NodeConfig,
    NodeKind,
    NodeSpec,
)

_UNNAMED = "<unnamed>"
_MISSING = object()
_TOP_KEYS = frozenset({"id", "version", "nodes", "edges", "metadata", "digest"})
_NODE_KEYS = frozenset({"id", "kind", "uses", "params", "inputs", "config"})
_EDGE_KEYS = frozenset({"source", "target", "action", "when"})
_CONFIG_KEYS = frozenset(
    {
        "retries",
        "backoff",
        "timeout",
        "fallback",
        "join",
        "retry_on",
        "never_retry",
        "retry_timeout",
        "queue",
    }
)
_BACKOFF_KEYS = frozenset({"initial", "factor", "max", "jitter"})


def parse_blueprint_json(text: str | bytes) -> Blueprint:
    """Parse blueprint JSON; invalid JSON or content raises ``BlueprintError``.

    >>> parse_blueprint_json('{"id": "x", "nodes": [{"id": "a", "uses": "a"}]}').nodes[0].id
    'a'
    """
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except json.JSONDecodeError as exc:
        message = f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        raise _malformed(message) from None
    except _DuplicateKey as exc:
        message = f"invalid JSON: key {exc.args[0]!r} appears twice in one object"
        raise _malformed(message) from None
    except UnicodeDecodeError as exc:
        message = f"invalid JSON: not UTF-8 text ({exc.reason} at byte {exc.start})"
        raise _malformed(message) from None
    except RecursionError:
        raise _malformed("invalid JSON: nested too deeply") from None
    except ValueError:  # a number of more digits than Python converts
        message = (
            f"invalid JSON: a number has more than {sys.get_int_max_str_digits()} digits, "
            "more than Python reads; write it as a string"
        )
        raise _malformed(message) from None
    return structure_blueprint(data)


class _DuplicateKey(ValueError):
    pass


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


def _malformed(message: str, blueprint_id: str = _UNNAMED) -> BlueprintError:
    return BlueprintError(blueprint_id, [LintIssue("malformed", None, message)])


def structure_blueprint(data: object) -> Blueprint:
    """Build a blueprint from plain data as produced by ``Blueprint.to_dict()``.

    Raises:
        BlueprintError: with one ``"malformed"`` issue per wrong value, naming its
            path, or a ``"digest-mismatch"`` issue when ``data["digest"]`` is not
            the digest of the blueprint it describes.

    >>> structure_blueprint({"id": "x", "nodes": [{"id": "a", "uses": "a"}]}).id
    'x'
    """
    reader = _Reader()
    try:
        bp = reader.blueprint(data)
    except RecursionError:
        raise _malformed("data is nested too deeply", _blueprint_id(data)) from None
    blueprint_id = _blueprint_id(data)
    if bp is None or reader.issues:
        raise BlueprintError(blueprint_id, reader.issues)
    digest = data.get("digest") if isinstance(data, Mapping) else None
    if digest is not None and digest != bp.digest:
        issue = LintIssue(
            "digest-mismatch",
            None,
            f"digest {digest!r} does not match the content (digest {bp.digest!r}); "
            "the blueprint was edited after it was written: drop the 'digest' key to accept it",
        )
        raise BlueprintError(blueprint_id, [issue])
    return bp


def _blueprint_id(data: object) -> str:
    return _string_key(data, "id") or _UNNAMED


def _string_key(data: object, key: str) -> str | None:
    """``data[key]`` when data is a mapping and that value is a string."""
    value = data.get(key) if isinstance(data, Mapping) else None
    return value if isinstance(value, str) else None


def validate(bp: Blueprint, registry: Mapping[str, object] | None = None) -> Blueprint:
    """Return ``bp`` unchanged if it has no lint errors; otherwise raise.

    Warnings (orphans, unreachable nodes, joins with one predecessor) never raise.

    Raises:
        BlueprintError: listing every error-severity issue at once.

    >>> from flowkit.blueprint import Blueprint, NodeSpec
    >>> validate(Blueprint(id="x", nodes=(NodeSpec("a", uses="a"),))).id
    'x'
    """
    errors = [issue for issue in lint(bp, registry) if issue.severity == "error"]
    if errors:
        raise BlueprintError(bp.id, errors)
    return bp


def _child(path: str, key: object) -> str:
    name = key if isinstance(key, str) else _shown(key)
    return f"{path}.{name}" if path else name


def _shown(value: object) -> str:
    """``repr(value)``, cut short: a value in bad input may be huge."""
    if isinstance(value, int) and not fits_json(value):
        return f"<an int of about {int(value.bit_length() / math.log2(10)) + 1} digits>"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _type_name(value: object) -> str:
    names = {dict: "object", list: "array", str: "string", type(None): "null"}
    return names.get(type(value), type(value).__name__)


class _Reader:
    """Reads plain data into model objects, collecting an issue per problem."""

    def __init__(self) -> None:
        self.issues: list[LintIssue] = []
        self._node_id: str | None = None

    def fail(self, path: str, problem: str) -> None:
        where = path or "blueprint"
        self.issues.append(LintIssue("malformed", self._node_id, f"{where}: {problem}"))

    def blueprint(self, data: object) -> Blueprint | None:
        top = self.mapping(data, "", _TOP_KEYS)
        if top is None:
            return None
        blueprint_id = self.string(top.get("id", _MISSING), "id")
        version = self.integer(top.get("version", 1), "version")
        nodes = self.sequence(top.get("nodes", []), "nodes", self.node)
        edges = self.sequence(top.get("edges", []), "edges", self.edge)
        metadata = self.json_object(top.get("metadata", {}), "metadata")
        self.optional_string(top.get("digest"), "digest")
        if self.issues or blueprint_id is None or version is None or metadata is None:
            return None
        return self.build(blueprint_id, version, nodes, edges, metadata)

    def build(
        self,
        blueprint_id: str,
        version: int,
        nodes: list[NodeSpec],
        edges: list[EdgeSpec],
        metadata: dict[str, Any],
    ) -> Blueprint | None:
        # Keyword data typed Any: attrs' ``converter=tuple`` types these fields
        # as ``Iterable[_T_co]``, which mypy cannot match.
        fields: dict[str, Any] = {"nodes": tuple(nodes), "edges": tuple(edges)}
        try:
            return Blueprint(id=blueprint_id, version=version, metadata=metadata, **fields)
        except (TypeError, ValueError) as exc:  # e.g. params that JSON cannot encode
            self.fail("blueprint", f"cannot be built: {exc}")
            return None

    def node(self, data: object, path: str) -> NodeSpec | None:
        self._node_id = _string_key(data, "id")
        raw = self.mapping(data, path, _NODE_KEYS)
        if raw is None:
            return None
        node_id = self.string(raw.get("id", _MISSING), f"{path}.id")
        kind = self.choice(raw.get("kind", "call"), f"{path}.kind", NODE_KINDS)
        uses = self.optional_string(raw.get("uses"), f"{path}.uses")
        params = self.json_object(raw.get("params", {}), f"{path}.params")
        inputs = self.string_map(raw.get("inputs", {}), f"{path}.inputs")
        config = self.config(raw.get("config", {}), f"{path}.config")
        self._node_id = None
        if node_id is None or kind is None or params is None or inputs is None or config is None:
            return None
        return NodeSpec(node_id, cast("NodeKind", kind), uses, params, inputs, config)

    def edge(self, data: object, path: str) -> EdgeSpec | None:
        raw = self.mapping(data, path, _EDGE_KEYS)
        if raw is None:
            return None
        source = self.string(raw.get("source", _MISSING), f"{path}.source")
        target = self.string(raw.get("target", _MISSING), f"{path}.target")
        action = self.optional_string(raw.get("action"), f"{path}.action")
        when = self.optional_string(raw.get("when"), f"{path}.when")
        if source is None or target is None:
            return None
        return EdgeSpec(source, target, action, when)

    def config(self, data: object, path: str) -> NodeConfig | None:
        raw = self.mapping(data, path, _CONFIG_KEYS)
        if raw is None:
            return None
        before = len(self.issues)
        retries = raw.get("retries", 0)  # null: no limit
        retries = None if retries is None else self.integer(retries, f"{path}.retries")
        backoff = self.backoff(raw.get("backoff"), f"{path}.backoff")
        timeout = self.optional_number(raw.get("timeout"), f"{path}.timeout")
        fallback = self.optional_string(raw.get("fallback"), f"{path}.fallback")
        join = raw.get("join")
        if join is not None:
            join = self.choice(join, f"{path}.join", JOIN_MODES)
        retry_on = self.sequence(raw.get("retry_on", []), f"{path}.retry_on", self.string)
        never = self.sequence(raw.get("never_retry", []), f"{path}.never_retry", self.string)
        retry_timeout = self.optional_number(raw.get("retry_timeout"), f"{path}.retry_timeout")
        queue = self.optional_string(raw.get("queue"), f"{path}.queue")
        if len(self.issues) > before:
            return None
        return NodeConfig(
            retries,
            backoff,
            timeout,
            fallback,
            cast("JoinMode | None", join),
            retry_on=retry_on,
            never_retry=never,
            retry_timeout=retry_timeout,
            queue=queue,
        )

    def backoff(self, data: object, path: str) -> Backoff | None:
        if data is None:
            return None
        raw = self.mapping(data, path, _BACKOFF_KEYS)
        if raw is None:
            return None
        checks = {
            "initial": self.duration,
            "max": self.duration,
            "factor": self.number,
            "jitter": self.boolean,
        }
        before = len(self.issues)
        kwargs: dict[str, Any] = {
            k: checks[k](v, f"{path}.{k}") for k, v in raw.items() if k in checks
        }
        if len(self.issues) > before:
            return None
        try:
            return Backoff(**kwargs)
        except (TypeError, ValueError) as exc:
            self.fail(path, f"invalid backoff: {exc}")
            return None

    def duration(self, value: object, path: str) -> object:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return value
        self.fail(path, f"expected seconds or a string like '250ms', got {_type_name(value)}")
        return None

    def mapping(self, data: object, path: str, keys: frozenset[str]) -> Mapping[str, Any] | None:
        if not isinstance(data, Mapping):
            self.fail(path, f"expected an object, got {_type_name(data)}")
            return None
        for key in data:
            if key not in keys:
                allowed = ", ".join(sorted(keys))
                self.fail(_child(path, key), f"unknown key; expected one of: {allowed}")
        return data

    def sequence(self, data: object, path: str, item: Any) -> list[Any]:
        if not isinstance(data, list | tuple):
            self.fail(path, f"expected an array, got {_type_name(data)}")
            return []
        return [item(value, f"{path}[{index}]") for index, value in enumerate(data)]

    def string(self, value: object, path: str) -> str | None:
        if isinstance(value, str):
            return value
        if value is _MISSING:
            self.fail(path, "is required but missing")
        else:
            self.fail(path, f"expected a string, got {_type_name(value)}")
        return None

    def optional_string(self, value: object, path: str) -> str | None:
        if value is not None and not isinstance(value, str):
            self.fail(path, f"expected a string or null, got {_type_name(value)}")
            return None
        return value

    def choice(self, value: object, path: str, allowed: frozenset[str]) -> str | None:
        if isinstance(value, str) and value in allowed:
            return value
        options = ", ".join(repr(a) for a in sorted(allowed))
        self.fail(path, f"expected one of {options}, got {_shown(value)}")
        return None

    def boolean(self, value: object, path: str) -> bool | None:
        if isinstance(value, bool):
            return value
        self.fail(path, f"expected true or false, got {_type_name(value)}")
        return None

    def integer(self, value: object, path: str) -> int | None:
        if isinstance(value, int) and not isinstance(value, bool):
            return value if self.fits(value, path) else None
        self.fail(path, f"expected an integer, got {_type_name(value)} {_shown(value)}")
        return None

    def number(self, value: object, path: str) -> float | None:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return value if self.fits(value, path) else None
        self.fail(path, f"expected a number, got {_type_name(value)} {_shown(value)}")
        return None

    def fits(self, number: float, path: str) -> bool:
        """Whether JSON can hold ``number``: a finite float, an int of few enough digits."""
        if isinstance(number, float) and not math.isfinite(number):
            self.fail(
                path, f"expected a finite number, got {number!r}: JSON has no NaN or infinity"
            )
            return False
        if isinstance(number, int) and not fits_json(number):
            self.fail(path, too_long(number))
            return False
        return True

    def optional_number(self, value: object, path: str) -> float | None:
        return None if value is None else self.number(value, path)

    def string_map(self, value: object, path: str) -> dict[str, str] | None:
        if not isinstance(value, Mapping):
            self.fail(path, f"expected an object, got {_type_name(value)}")
            return None
        for key, item in value.items():
            if not isinstance(key, str) or not isinstance(item, str):
                self.fail(_child(path, key), f"expected a string, got {_type_name(item)}")
        return dict(value)

    def json_object(self, value: object, path: str) -> dict[str, Any] | None:
        if not isinstance(value, Mapping):
            self.fail(path, f"expected an object, got {_type_name(value)}")
            return None
        before = len(self.issues)
        self.json_value(value, path)
        return dict(value) if len(self.issues) == before else None

    def json_value(self, value: object, path: str) -> None:
        if value is None or isinstance(value, str | bool):
            return
        if isinstance(value, int | float):
            self.fits(value, path)
            return
        if isinstance(value, list | tuple):
            for index, item in enumerate(value):
                self.json_value(item, f"{path}[{index}]")
        elif isinstance(value, Mapping):
            for key, item in value.items():
                if not isinstance(key, str):
                    self.fail(path, f"object keys must be strings, got {_type_name(key)}")
                self.json_value(item, _child(path, key))
        else:
            self.fail(path, f"expected a JSON value, got {_type_name(value)}")
