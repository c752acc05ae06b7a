"""What the samples' client code shares: a runtime or a client, and reading a run until it
reaches a given point."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeAlias

import anyio

if TYPE_CHECKING:
    from collections.abc import Callable

    import flowkit

Api: TypeAlias = "flowkit.Runtime | flowkit.Client"
"""Where a sample's ``demo`` sends its calls: the same methods on both."""

STATE_TIMEOUT = 20.0  # a run reaches the point a demo waits for within this
RESULT_TIMEOUT = 30.0  # a run of a sample finishes within this
POLL = 0.02  # seconds between reads of a run


async def until(
    api: Api, run_id: str, wanted: Callable[[flowkit.RunResult], bool]
) -> flowkit.RunResult:
    """Read the run until ``wanted(result)`` holds (at most ``STATE_TIMEOUT`` seconds).

    A run announces when it finishes, not when it reaches a wait or a node: a client
    that must act at such a point (cancel while a node runs, query during a sleep)
    reads the run again, briefly and boundedly, until it is there.
    """
    with anyio.fail_after(STATE_TIMEOUT):
        while True:
            result = await api.result(run_id)
            if wanted(result):
                return result
            if result.status.finished:
                raise AssertionError(f"run {run_id!r} ended before the expected point: {result}")
            await anyio.sleep(POLL)


def waiting_for(name: str) -> Callable[[flowkit.RunResult], bool]:
    """A test for :func:`until`: the run waits in ``flow.wait(name)``."""
    return lambda result: name in result.waiting_for


def has(variable: str) -> Callable[[flowkit.RunResult], bool]:
    """A test for :func:`until`: the run has assigned ``variable`` (and is paused)."""
    return lambda result: variable in result.state and result.status == "awaiting"


def output(result: flowkit.RunResult) -> Any:
    """The output of a completed run; an ``AssertionError`` saying how it ended otherwise."""
    assert result.status == "completed", f"run {result.run_id!r} ended {result.status}: {result}"
    return result.output
