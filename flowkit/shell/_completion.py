"""Completion tokens: how a deferred node execution is completed from outside.

A token is ``fk1.`` followed by base64url JSON naming the run, the dispatch (the
node execution: node, activation and attempt) and a random nonce. It is an
opaque, unguessable reference, not a credential: completing a node needs access
to the run's store (the trust boundary, as for signals), and the nonce, recorded
with the dispatch when the node defers, makes a token that was altered, or that
belongs to another deferral, refused instead of completing the wrong execution.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from typing import TYPE_CHECKING, Any, Final

import attrs

from .._errors import CompletionTokenError
from .._serde import to_data
from ..core import _protocol as p

if TYPE_CHECKING:
    from ..core._state import RunState

_PREFIX: Final = "fk1."


class _Pending:
    """The type of :data:`PENDING`."""

    _instance: _Pending | None = None

    def __new__(cls) -> _Pending:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "flowkit.PENDING"

    def __reduce__(self) -> str:
        return "PENDING"


PENDING: Final = _Pending()
"""Return this from a node that took a completion token: the node is completed
later, by whoever holds the token (``client.complete(token, value)``)."""


@attrs.frozen
class CompletionToken:
    """A parsed completion token: which run, which node execution, which deferral."""

    run_id: str
    dispatch_id: str
    attempt: int
    nonce: str

    def encode(self) -> str:
        """The token as the string a node hands out."""
        data = {"r": self.run_id, "d": self.dispatch_id, "a": self.attempt, "n": self.nonce}
        raw = json.dumps(data, separators=(",", ":")).encode()
        return _PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def new(cls, run_id: str, dispatch_id: str, attempt: int) -> CompletionToken:
        return cls(run_id, dispatch_id, attempt, secrets.token_urlsafe(16))

    @classmethod
    def parse(cls, token: object) -> CompletionToken:
        """Read a token; :class:`CompletionTokenError` if it is not one."""
        if not isinstance(token, str) or not token.startswith(_PREFIX):
            raise CompletionTokenError(
                str(token),
                "not a flowkit completion token (they start with 'fk1.')",
                "pass the string context().completion_token() returned, unchanged",
            )
        body = token[len(_PREFIX) :]
        try:
            data = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
            parsed = cls(str(data["r"]), str(data["d"]), int(data["a"]), str(data["n"]))
        except (binascii.Error, ValueError, KeyError, TypeError) as exc:
            raise CompletionTokenError(
                token,
                f"it is malformed ({exc.__class__.__name__})",
                "pass the string context().completion_token() returned, unchanged",
            ) from None
        return parsed


def check_open(token: str, parsed: CompletionToken, state: RunState) -> None:
    """Refuse the completion unless the token's node execution is still open in ``state``."""
    status = state.header.get("status")
    if state.finished:
        raise CompletionTokenError(
            token, f"run {parsed.run_id!r} has finished ({status})", "nothing is left to complete"
        )
    record = state.sections["dispatches"].get(parsed.dispatch_id)
    if record is None:
        raise CompletionTokenError(
            token,
            f"node execution {parsed.dispatch_id!r} of run {parsed.run_id!r} is no longer "
            "open (it was completed, failed, timed out, retried or cancelled)",
            "complete each token once; a retried node hands out a new token",
        )
    nonce = record.get("deferred")
    if nonce is not None and nonce != parsed.nonce:
        raise CompletionTokenError(
            token,
            f"it does not match node execution {parsed.dispatch_id!r} of run "
            f"{parsed.run_id!r} (altered, or from another deferral)",
            "pass the string context().completion_token() returned, unchanged",
        )


def completion_event(parsed: CompletionToken, value: Any, *, plain: bool) -> p.NodeCompleted:
    """The event that completes the token's node execution with ``value``."""
    return p.NodeCompleted(parsed.dispatch_id, to_data(value) if plain else value)


def failure_event(parsed: CompletionToken, error: BaseException | str) -> p.NodeFailed:
    """The event that fails the token's node execution (retried by its retry policy)."""
    from .._errors import describe

    if isinstance(error, str):
        error = RuntimeError(error)
    type_, mro, message = describe(error)
    info = {"type": type_, "mro": list(mro), "message": message, "attempt": parsed.attempt}
    return p.NodeFailed(parsed.dispatch_id, info)
