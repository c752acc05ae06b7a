"""``flowkit schedules list | pause | resume | trigger | delete`` on a SQLite store whose
schedule a Runtime wrote (in-process, on a fake clock); the commands run in-process through
``flowkit.cli.main``."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import anyio
import pytest

import flowkit
from flowkit import Schedule, flow
from flowkit._clock import use_clock
from flowkit.cli import main
from flowkit.stores import SQLiteStore

if TYPE_CHECKING:
    from pathlib import Path

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC).timestamp()


@flow
async def cleanup(days: int) -> int:
    return days


async def _register(path: Path) -> None:
    nightly = Schedule(cleanup, cron="0 3 * * *", id="nightly", inputs={"days": 7})
    async with flowkit.Runtime(store=SQLiteStore(path), schedules=[nightly]) as rt:
        await rt.tick_schedules()


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    with use_clock(lambda: T0):
        anyio.run(_register, tmp_path / "runs.db")
    return f"sqlite:///{tmp_path / 'runs.db'}"


def listed(capsys: pytest.CaptureFixture[str], url: str) -> list[dict[str, Any]]:
    assert 0 == main(["schedules", "list", "--json", "--store", url])
    rows: list[dict[str, Any]] = json.loads(capsys.readouterr().out)
    return rows


class TestSchedulesCommand:
    """The commands read and change the schedule in the store, without flow code."""

    def test_list(self, capsys: pytest.CaptureFixture[str], store_url: str) -> None:
        (row,) = listed(capsys, store_url)
        assert {"schedule_id": "nightly", "flow": "cleanup", "when": "cron 0 3 * * * UTC"} == {
            k: row[k] for k in ("schedule_id", "flow", "when")
        }
        assert (False, None) == (row["paused"], row["last_run"])
        assert 0 == main(["schedules", "list", "--store", store_url])
        assert "nightly" in capsys.readouterr().out

    def test_pause_resume(self, capsys: pytest.CaptureFixture[str], store_url: str) -> None:
        assert 0 == main(["schedules", "pause", "nightly", "--store", store_url])
        assert "paused nightly\n" == capsys.readouterr().out
        assert [True] == [row["paused"] for row in listed(capsys, store_url)]
        assert 0 == main(["schedules", "resume", "nightly", "--store", store_url])
        capsys.readouterr()
        assert [False] == [row["paused"] for row in listed(capsys, store_url)]

    def test_trigger_is_started_by_the_runtime(
        self, capsys: pytest.CaptureFixture[str], store_url: str, tmp_path: Path
    ) -> None:
        assert 0 == main(["schedules", "trigger", "nightly", "--store", store_url])
        run_id = capsys.readouterr().out.strip()
        assert run_id.startswith("nightly@")
        assert run_id.endswith("-manual")

        async def step() -> Any:
            nightly = Schedule(cleanup, cron="0 3 * * *", id="nightly", inputs={"days": 7})
            store = SQLiteStore(tmp_path / "runs.db")
            async with flowkit.Runtime(store=store, schedules=[nightly]) as rt:
                assert [run_id] == await rt.tick_schedules()
                return (await rt.handle(run_id).result()).output

        with use_clock(lambda: T0 + 60):
            assert 7 == anyio.run(step)

    def test_delete_then_unknown(self, capsys: pytest.CaptureFixture[str], store_url: str) -> None:
        assert 0 == main(["schedules", "delete", "nightly", "--store", store_url])
        capsys.readouterr()
        assert [] == listed(capsys, store_url)
        assert 2 == main(["schedules", "pause", "nightly", "--store", store_url])
        error = capsys.readouterr().err
        assert error.startswith("flowkit: error: unknown schedule 'nightly'")
        assert 1 == len(error.strip().splitlines())
