"""What every ``flowkit`` command shares: the one-line error, the parser, the output.

Human output goes through ``rich``, which flowkit imports only here and in
the commands, inside the functions that print a table (``--help`` and ``--json``
do without it); ``--json`` output is plain ``json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TYPE_CHECKING, Any, NoReturn, TypeAlias

if TYPE_CHECKING:
    from rich.console import Console

PROG = "flowkit"
ERROR = "flowkit: error: "  # how every bad usage and start-up failure begins

Commands: TypeAlias = "argparse._SubParsersAction[Parser]"
"""What a command module's ``register`` adds its parser to (``add_subparsers()``)."""


class Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is reported in one line, saying where the help is."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{ERROR}{message} (see {self.prog} --help)\n")


class Formatter(argparse.HelpFormatter):
    """argparse's help, with ``example:`` lines of an epilog printed as they are."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("example: "):
            return "\n".join(indent + line for line in text.splitlines())
        return super()._fill_text(text, width, indent)


def example(line: str) -> dict[str, Any]:
    """The ``add_parser``/``ArgumentParser`` arguments that end a command's help with
    ``example: LINE``."""
    return {"epilog": f"example: {line}", "formatter_class": Formatter}


PIPED_WIDTH = 160
"""Columns of human output that is not going to a terminal (and COLUMNS unset): wide
enough that a table row stays on one line for grep."""


def console() -> Console:
    """The console human output is printed on: colour only on a terminal (rich decides),
    and no markup or highlighting, so ids and messages are printed as they are."""
    from rich.console import Console

    out = Console(markup=False, highlight=False, emoji=False)
    if not out.is_terminal and "COLUMNS" not in os.environ:
        out.width = PIPED_WIDTH
    return out


def print_json(data: Any) -> None:
    """``data`` as indented JSON on stdout, without rich."""
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def open_url(from_url: Any, url: str) -> Any:
    """``from_url(url)`` (a store or a transport); a URL it cannot use is bad usage."""
    from .._errors import FlowkitError
    from ..shell._apps import UsageError

    try:
        return from_url(url)
    except FlowkitError:
        raise
    except ValueError as exc:
        raise UsageError(f"cannot use the URL: {exc}") from exc
