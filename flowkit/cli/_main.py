"""The ``flowkit`` command: one parser, one subcommand per module, one error convention.

A command is a module of this package with ``register(commands)``, which adds
its parser and sets ``run`` (called with the parsed arguments, returns the exit
status). A command that parses its own arguments (``worker``, which is
``python -m flowkit.worker``) is listed in :data:`OWN_ARGUMENTS` instead and gets
the rest of the command line untouched.

Every bad usage, and every :class:`~flowkit.FlowkitError` a command raises, is
one line on stderr, ``flowkit: error: ...``, and exit status 2.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Protocol

from .._errors import FlowkitError
from .._version import __version__
from ..shell._apps import UsageError
from . import _diff, _flows, _replay, _runs, _schedules, _ui, _worker
from ._base import ERROR, PROG, Parser, example

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from ._base import Commands


class Command(Protocol):
    """A command module."""

    def register(self, commands: Commands) -> None: ...


COMMANDS: tuple[Command, ...] = (_flows, _runs, _schedules, _diff, _replay, _ui, _worker)
"""In ``flowkit --help`` order."""

OWN_ARGUMENTS: dict[str, Callable[[list[str]], int]] = {"worker": _worker.main}
"""Commands that parse the rest of the command line themselves."""


def parser() -> Parser:
    cli = Parser(
        prog=PROG,
        description="flowkit: durable workflows. Inspect the flows an app defines, or run "
        "a worker for them. Each command has --help.",
        **example("flowkit flows list --app myapp.flows"),
    )
    cli.add_argument("--version", action="version", version=f"flowkit {__version__}")
    commands = cli.add_subparsers(
        dest="command", metavar="COMMAND", required=True, title="commands"
    )
    for command in COMMANDS:
        command.register(commands)
    return cli


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``flowkit ARGV`` (``sys.argv[1:]`` by default); returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    _import_from_here()
    if args and args[0] in OWN_ARGUMENTS:
        return OWN_ARGUMENTS[args[0]](args[1:])
    parsed = parser().parse_args(args)
    try:
        return int(parsed.run(parsed))
    except FlowkitError as exc:
        print(f"{ERROR}{' '.join(str(exc).split())}{_hint(exc)}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `flowkit flows list | head`: the reader left, nothing to say
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush cannot fail
        return 1


def _hint(exc: FlowkitError) -> str:
    """What to do about an ``--app`` module that is not there (the message says which)."""
    cause = exc.__cause__
    if isinstance(exc, UsageError) and isinstance(cause, ModuleNotFoundError) and cause.name:
        return (
            f"; run flowkit in the folder that holds {cause.name!r}, add that folder to "
            "PYTHONPATH, or install it"
        )
    return ""


def _import_from_here() -> None:
    """Let ``--app`` name modules in the current directory, as ``python -m`` does (the
    ``flowkit`` script's own folder is first on ``sys.path`` instead)."""
    here = os.getcwd()
    if here not in sys.path and "" not in sys.path:
        sys.path.insert(0, here)
