"""``flowkit worker``: the flags and behaviour of ``python -m flowkit.worker``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._base import ERROR, PROG

if TYPE_CHECKING:
    from ._base import Commands

EXAMPLE = (
    "flowkit worker --app myapp.flows --transport amqp://rabbit/ --store postgresql://db/flowkit"
)


def register(commands: Commands) -> None:
    """List ``worker`` in ``flowkit --help``; its arguments go to :func:`main` untouched."""
    commands.add_parser(
        "worker",
        help="run a worker process (the flags of python -m flowkit.worker)",
        add_help=False,
    )


def main(argv: list[str]) -> int:
    """Run the worker command line on ``argv`` (everything after ``worker``)."""
    from ..worker.__main__ import main as worker_main

    return worker_main(argv, prog=f"{PROG} worker", error=ERROR, example=EXAMPLE)
