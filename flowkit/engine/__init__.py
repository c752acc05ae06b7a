"""The deterministic core and the in-memory runtime."""

from ._action import Action as Action
from ._context import Context as Context
from ._context import NodeContext as NodeContext
from ._context import context as context
from ._events import Event as Event
from ._events import EventBus as EventBus
from ._invoke import Node as Node
from ._middleware import Middleware as Middleware
from ._result import RunHandle as RunHandle
from ._result import RunResult as RunResult
from ._runtime import Runtime as Runtime
from ._state import RunStatus as RunStatus

__all__ = [
    "Action",
    "Context",
    "Event",
    "EventBus",
    "Middleware",
    "Node",
    "NodeContext",
    "RunHandle",
    "RunResult",
    "RunStatus",
    "Runtime",
    "context",
]
