"""The flows an ``--app MODULE[:ATTR]`` names, for every command line that takes one.

``python -m flowkit.worker`` and the ``flowkit`` command both load apps here, so
they accept the same specs and say the same thing when one is wrong: a
:class:`UsageError` whose message starts with ``--app SPEC:`` and says what to
pass instead.
"""

from __future__ import annotations

import argparse
import functools
import importlib
from typing import TYPE_CHECKING, Any

from .._durations import shown
from .._errors import FlowkitError
from ._target import runnable

if TYPE_CHECKING:
    from collections.abc import Callable


class UsageError(FlowkitError):
    """A flag is wrong; the message says which and how to fix it."""


def app_spec(text: str) -> str:
    """``MODULE`` or ``MODULE:ATTR`` with Python names (an argparse ``type=``)."""
    module_name, colon, attr = text.partition(":")
    names = [*module_name.split("."), *([attr] if colon else [])]
    if not all(name.isidentifier() for name in names):
        raise argparse.ArgumentTypeError(
            "expected MODULE or MODULE:ATTR with Python names, e.g. myapp.flows or "
            f"myapp.flows:checkout; got {text!r}"
        )
    return text


def load_flows(specs: list[str], *, include_broken: bool = False) -> list[Any]:
    """Import ``module`` or ``module:attr`` and collect the flows they define.

    A flow that does not build (a ``Flow`` builder with an edge to no node, a
    ``@flow`` body that does not compile) raises its error here, unless
    ``include_broken``: then it is returned, and raises when its ``blueprint`` is read.
    """
    is_flow = functools.partial(_is_flow, include_broken=include_broken)
    flows: list[Any] = []
    for spec in specs:
        module_name, _, attr = spec.partition(":")
        module = import_app(spec, module_name)
        if attr:
            flows.extend(_named_flows(spec, module, attr, is_flow))
        else:
            flows.extend(v for v in vars(module).values() if is_flow(v))
    if not flows:
        raise UsageError(
            f"--app {' '.join(specs)}: no flows found (define @flow functions "
            "or flowkit.Flow builders at module level)"
        )
    return list({id(flow): flow for flow in flows}.values())  # --app given twice: once


def load_schedules(specs: list[str]) -> list[Any]:
    """The :class:`~flowkit.Schedule` objects the ``--app`` modules define at module level
    (``nightly = flowkit.Schedule(report, cron="0 2 * * *")``); ``module:attr`` specs
    name flows and bring none."""
    from ._schedules import Schedule

    found: list[Any] = []
    for spec in specs:
        module_name, _, attr = spec.partition(":")
        if not attr:
            module = import_app(spec, module_name)
            found.extend(v for v in vars(module).values() if isinstance(v, Schedule))
    return list({id(schedule): schedule for schedule in found}.values())


def import_app(spec: str, module_name: str) -> Any:
    """The module ``--app spec`` names; a module that fails to import is a UsageError."""
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"--app {spec}: cannot import {module_name!r}: {exc}") from exc
    except Exception as exc:  # the module itself is broken: say so in one line
        raise UsageError(
            f"--app {spec}: importing {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from exc


def _is_flow(value: Any, *, include_broken: bool) -> bool:
    try:
        return runnable(value)  # reads the blueprint: a flow that does not build raises
    except FlowkitError:
        if include_broken:
            return True
        raise


def _named_flows(spec: str, module: Any, attr: str, is_flow: Callable[[Any], bool]) -> list[Any]:
    """The flow, or the list of flows, ``module.attr`` holds."""
    if not hasattr(module, attr):
        raise UsageError(f"--app {spec}: module {module.__name__!r} has no {attr!r}")
    found = getattr(module, attr)
    items = list(found) if isinstance(found, list | tuple) else [found]
    for item in items:
        if not is_flow(item):
            what = f"{attr!r} is" if item is found else f"{attr!r} holds"
            raise UsageError(
                f"--app {spec}: {what} {shown(item)}, not a flow; name a @flow function, "
                "a flowkit.Flow builder or a list of them"
            )
    return items
