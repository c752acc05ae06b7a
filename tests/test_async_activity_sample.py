"""The async activity completion sample (``examples/temporal_samples/async_activity.py``)
runs in-memory and on an in-process Worker (MemoryTransport + SQLiteStore), on asyncio
and trio, and as a script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import anyio
import pytest

import flowkit
from flowkit.stores import SQLiteStore
from flowkit.transports import MemoryTransport

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # the test imports the example as a worker would
    sys.path.insert(0, str(ROOT))

from examples.temporal_samples import async_activity as sample  # noqa: E402

pytestmark = pytest.mark.anyio


class TestAsyncActivitySample:
    """The greeter completes the node from outside; the run returns its greeting."""

    async def test_in_memory(self) -> None:
        assert "Hello, World!" == await sample.run_in_memory()

    async def test_on_a_worker(self, tmp_path: Path) -> None:
        transport, store = MemoryTransport(), SQLiteStore(tmp_path / "runs.db")
        flows = [sample.greeting_workflow]
        worker = flowkit.Worker(flows, transport, store, poll_interval=0.05)
        client = flowkit.Client(transport, store, flows=flows)
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                await tg.start(worker.run)
                greeting = await sample.run_on_worker(client, "Worker")
                tg.cancel_scope.cancel()
        await transport.close()
        assert "Hello, Worker!" == greeting

    def test_as_a_script(self) -> None:
        script = ROOT / "examples" / "temporal_samples" / "async_activity.py"
        done = subprocess.run(
            [sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=False
        )
        assert 0 == done.returncode, done.stderr
        assert "Hello, World!" == done.stdout.strip()
