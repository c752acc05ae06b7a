"""flowkit: durable workflows in plain async Python.

Write ``@flow`` / ``@node`` functions or build graphs with ``Flow``; run them
in-memory, under virtual time in tests, or across workers on a broker.
"""

from ._durations import Backoff as Backoff
from ._errors import BlueprintError as BlueprintError
from ._errors import Cancelled as Cancelled
from ._errors import ChildFailed as ChildFailed
from ._errors import CompileError as CompileError
from ._errors import CompletionTimeout as CompletionTimeout
from ._errors import CompletionTokenError as CompletionTokenError
from ._errors import ConfigurationError as ConfigurationError
from ._errors import DuplicateDelivery as DuplicateDelivery
from ._errors import FlowkitError as FlowkitError
from ._errors import InvalidInputs as InvalidInputs
from ._errors import MigrationRefused as MigrationRefused
from ._errors import MissingDependency as MissingDependency
from ._errors import NodeError as NodeError
from ._errors import ResultTimeout as ResultTimeout
from ._errors import ResumeError as ResumeError
from ._errors import StoreError as StoreError
from ._errors import TransportError as TransportError
from ._errors import Undeliverable as Undeliverable
from ._errors import UpdateRejected as UpdateRejected
from ._errors import WaitTimeout as WaitTimeout
from ._errors import WebhookRejected as WebhookRejected
from ._errors import WorkflowFailed as WorkflowFailed
from ._version import __version__ as __version__
from .blueprint import Analysis as Analysis
from .blueprint import Blueprint as Blueprint
from .blueprint import EdgeSpec as EdgeSpec
from .blueprint import LintIssue as LintIssue
from .blueprint import NodeConfig as NodeConfig
from .blueprint import NodeSpec as NodeSpec
from .blueprint import analyze as analyze
from .blueprint import lint as lint
from .dsl import Flow as Flow
from .dsl import FlowDef as FlowDef
from .dsl import flow as flow
from .dsl import node as node
from .engine import PENDING as PENDING
from .engine import Action as Action
from .engine import ChildRow as ChildRow
from .engine import Context as Context
from .engine import Event as Event
from .engine import HistoryEvent as HistoryEvent
from .engine import Limit as Limit
from .engine import Middleware as Middleware
from .engine import Node as Node
from .engine import NodeContext as NodeContext
from .engine import NodeRow as NodeRow
from .engine import RunDescription as RunDescription
from .engine import RunHandle as RunHandle
from .engine import RunResult as RunResult
from .engine import RunStatus as RunStatus
from .engine import RunSummary as RunSummary
from .engine import Runtime as Runtime
from .engine import Schedule as Schedule
from .engine import TimerRow as TimerRow
from .engine import WaitRow as WaitRow
from .engine import context as context
from .worker import Client as Client
from .worker import Worker as Worker

__all__ = [
    "PENDING",
    "Action",
    "Analysis",
    "Backoff",
    "Blueprint",
    "BlueprintError",
    "Cancelled",
    "ChildFailed",
    "ChildRow",
    "Client",
    "CompileError",
    "CompletionTimeout",
    "CompletionTokenError",
    "ConfigurationError",
    "Context",
    "DuplicateDelivery",
    "EdgeSpec",
    "Event",
    "Flow",
    "FlowDef",
    "FlowkitError",
    "HistoryEvent",
    "InvalidInputs",
    "Limit",
    "LintIssue",
    "Middleware",
    "MigrationRefused",
    "MissingDependency",
    "Node",
    "NodeConfig",
    "NodeContext",
    "NodeError",
    "NodeRow",
    "NodeSpec",
    "ResultTimeout",
    "ResumeError",
    "RunDescription",
    "RunHandle",
    "RunResult",
    "RunStatus",
    "RunSummary",
    "Runtime",
    "Schedule",
    "StoreError",
    "TimerRow",
    "TransportError",
    "Undeliverable",
    "UpdateRejected",
    "WaitRow",
    "WaitTimeout",
    "WebhookRejected",
    "Worker",
    "WorkflowFailed",
    "__version__",
    "analyze",
    "context",
    "flow",
    "lint",
    "node",
]
