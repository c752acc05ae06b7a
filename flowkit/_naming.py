"""How flowkit names the functions users register: ``module.qualname``, the same in
every process, even one that runs the defining file as ``__main__``."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

MAIN = "__main__"


def module_name(obj: Any) -> str:
    """The name ``obj``'s module is imported by, even when it runs as ``__main__``.

    A script started with ``python shop.py`` or ``python -m shop`` defines its
    functions in ``__main__``, while workers import the same file as ``shop``:
    node names (and so blueprint digests) must not depend on which. Stays
    ``"__main__"`` when no importable name exists (a REPL, a notebook, ``python -c``).
    """
    target = getattr(obj, "__flowkit_impl__", obj)
    module = getattr(target, "__module__", None) or type(target).__module__
    if module != MAIN:
        return str(module)
    return main_module_name() or MAIN


def main_module_name() -> str | None:
    """The importable name of the ``__main__`` module, if it has one."""
    main = sys.modules.get(MAIN)
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name and spec.name != MAIN:
        return str(spec.name)  # python -m package.module
    path = getattr(main, "__file__", None)
    return _module_at(Path(path)) if path else None


def _module_at(path: Path) -> str | None:
    """The dotted name ``path`` (a .py file) is importable by from ``sys.path``, if any."""
    if path.suffix != ".py":
        return None
    file = path.resolve()
    for entry in sys.path:
        try:
            relative = file.relative_to(Path(entry or os.getcwd()).resolve())
        except (ValueError, OSError):
            continue
        parts = relative.with_suffix("").parts
        if parts and all(part.isidentifier() for part in parts):
            return ".".join(parts)
    return None


def implementation_name(fn: Any) -> str:
    """A readable registry name for a callable: ``module.qualname``."""
    target = getattr(fn, "__flowkit_impl__", fn)
    if not isinstance(target, type) and not callable(target):
        raise TypeError(f"{fn!r} is not callable")
    name = getattr(target, "__qualname__", None) or type(target).__qualname__
    return f"{module_name(target)}.{name}"
