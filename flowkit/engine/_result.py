"""``RunResult`` and ``RunHandle``: what callers get back from a run."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio
import attrs

from .._errors import (
    Cancelled,
    ChildFailed,
    FlowkitError,
    NodeError,
    WaitTimeout,
    WorkflowFailed,
)
from ._state import RunState, RunStatus

if TYPE_CHECKING:
    from ._runtime import Runtime


@attrs.frozen
class RunResult:
    """Where a run stands: ``status``, ``output``, ``error``, ``state`` and ``run_id``."""

    run_id: str
    status: RunStatus
    output: Any = None
    error: FlowkitError | None = None
    state: dict[str, Any] = attrs.field(factory=dict)
    blueprint_id: str = ""
    _snapshot: dict[str, Any] = attrs.field(factory=dict, repr=False, alias="_snapshot")

    @classmethod
    def of(cls, state: RunState) -> RunResult:
        header = state.header
        status = state.status
        return cls(
            run_id=state.run_id,
            status=status,
            output=header.get("output") if status is RunStatus.COMPLETED else None,
            error=error_from_info(state.run_id, header.get("error")),
            state={k: v for k, v in state.context.items() if not k.startswith("__")},
            blueprint_id=str(header.get("blueprint", "")),
            _snapshot=state.to_dict(),
        )

    def snapshot(self) -> dict[str, Any]:
        """The run's serialised state, for :meth:`Runtime.resume` without a store."""
        return self._snapshot

    def unwrap(self) -> Any:
        """The output of a completed run; raises the run's error otherwise."""
        if self.status is RunStatus.COMPLETED:
            return self.output
        if self.error is not None:
            raise self.error
        raise WorkflowFailed(self.run_id, f"run is {self.status.value}, not completed")


def error_from_info(run_id: str, info: dict[str, Any] | None) -> FlowkitError | None:
    """Rebuild a FlowkitError from the plain error record kept in a run's state."""
    if not info:
        return None
    type_ = str(info.get("type", ""))
    message = str(info.get("message", ""))
    if type_ == "flowkit._errors.Cancelled":
        return Cancelled(run_id)
    if type_ == "flowkit._errors.WaitTimeout":
        return WaitTimeout(str(info.get("wait", "")), run_id)
    if type_ == "flowkit._errors.ChildFailed":
        return ChildFailed(str(info.get("child_run_id", "")), message)
    if type_ == "flowkit._errors.WorkflowFailed" or not info.get("node"):
        return WorkflowFailed(run_id, message)
    return NodeError(
        str(info["node"]),
        int(info.get("attempt", 0)),
        message,
        error_type=type_,
        error_mro=info.get("mro", ()),
    )


class RunHandle:
    """A started run: ``await handle.result()`` waits; ``await handle.cancel()`` stops it."""

    def __init__(self, runtime: Runtime, run_id: str) -> None:
        self._runtime = runtime
        self.run_id = run_id

    async def result(self, timeout: float | None = None) -> RunResult:
        """Wait until the run is completed, failed or cancelled.

        Raises ``TimeoutError`` if that takes longer than ``timeout`` seconds.
        """
        with anyio.fail_after(timeout):
            return await self._runtime._wait_finished(self.run_id)

    async def status(self) -> RunStatus:
        return (await self._runtime.result(self.run_id)).status

    async def cancel(self) -> RunResult:
        """Cancel the run: in-flight nodes are cancelled and the run ends ``cancelled``."""
        return await self._runtime.cancel(self.run_id)

    def __repr__(self) -> str:
        return f"RunHandle(run_id={self.run_id!r})"
