"""The deterministic core and the in-memory runtime."""

from ..core._action import Action as Action
from ..core._state import RunStatus as RunStatus
from ..runtime._runtime import Runtime as Runtime
from ..shell._completion import PENDING as PENDING
from ..shell._context import Context as Context
from ..shell._context import NodeContext as NodeContext
from ..shell._context import context as context
from ..shell._describe import ChildRow as ChildRow
from ..shell._describe import NodeRow as NodeRow
from ..shell._describe import RunDescription as RunDescription
from ..shell._describe import TimerRow as TimerRow
from ..shell._describe import WaitRow as WaitRow
from ..shell._events import Event as Event
from ..shell._events import EventBus as EventBus
from ..shell._invoke import Node as Node
from ..shell._limits import Limit as Limit
from ..shell._middleware import Middleware as Middleware
from ..shell._result import RunHandle as RunHandle
from ..shell._result import RunResult as RunResult
from ..shell._schedules import Schedule as Schedule
from ..shell._schedules import ScheduleInfo as ScheduleInfo
from ..stores._history import HistoryEvent as HistoryEvent
from ..stores._protocol import RunSummary as RunSummary

__all__ = [
    "PENDING",
    "Action",
    "ChildRow",
    "Context",
    "Event",
    "EventBus",
    "HistoryEvent",
    "Limit",
    "Middleware",
    "Node",
    "NodeContext",
    "NodeRow",
    "RunDescription",
    "RunHandle",
    "RunResult",
    "RunStatus",
    "RunSummary",
    "Runtime",
    "Schedule",
    "ScheduleInfo",
    "TimerRow",
    "WaitRow",
    "context",
]
