"""Tests pinning the public surface of ``flowkit`` and what importing it pulls in."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import flowkit
import flowkit.testing

PUBLIC_NAMES = [
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
    "PENDING",
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

TESTING_NAMES = [
    "Call",
    "Divergence",
    "Faults",
    "ReplayResult",
    "ScheduleSimulation",
    "Simulation",
    "SimulationError",
    "TraceEntry",
    "UpdateOutcome",
    "at",
    "capture_events",
    "never",
    "replay",
    "replay_async",
    "simulate",
    "simulate_async",
]

OPTIONAL_SDKS = [
    "aiokafka",
    "aio_pika",
    "redis",
    "psycopg",
    "google",
    "azure",
    "aiobotocore",
    "nats",
    "opentelemetry",
]


class TestAll:
    """``flowkit.__all__`` changes only on purpose, and every name in it exists."""

    def test_all_is_pinned(self) -> None:
        assert PUBLIC_NAMES == sorted(flowkit.__all__)

    def test_no_duplicates(self) -> None:
        assert len(set(flowkit.__all__)) == len(flowkit.__all__)

    @pytest.mark.parametrize("name", PUBLIC_NAMES)
    def test_name_is_importable(self, name: str) -> None:
        assert hasattr(flowkit, name)

    def test_errors_share_one_root(self) -> None:
        errors = [
            getattr(flowkit, name)
            for name in PUBLIC_NAMES
            if isinstance(getattr(flowkit, name), type)
            and issubclass(getattr(flowkit, name), Exception)
        ]
        assert len(errors) >= 10
        assert all(issubclass(error, flowkit.FlowkitError) for error in errors)


class TestTestingAll:
    """``flowkit.testing.__all__`` changes only on purpose, and every name in it exists."""

    def test_all_is_pinned(self) -> None:
        assert TESTING_NAMES == sorted(flowkit.testing.__all__)

    @pytest.mark.parametrize("name", TESTING_NAMES)
    def test_name_is_importable(self, name: str) -> None:
        assert hasattr(flowkit.testing, name)


class TestImportCost:
    """``import flowkit`` loads no broker, database or telemetry SDK."""

    def test_no_optional_sdk_is_imported(self) -> None:
        code = (
            "import json, sys, flowkit\n"
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
        )
        completed = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
        )
        loaded = set(json.loads(completed.stdout))
        assert "flowkit" in loaded
        assert [] == sorted(loaded & set(OPTIONAL_SDKS))
