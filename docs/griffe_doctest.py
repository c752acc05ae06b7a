"""A griffe extension for the API reference: doctests become ``pycon`` code blocks.

flowkit's docstrings put their short ``>>>`` examples at the top level (not in
an ``Examples:`` section), where Markdown would read ``>>>`` as nested quotes
and ``['x']`` in an output line as a link. This wraps each such run of lines
(up to the next blank line) in a fenced code block. Loaded by mkdocstrings
(``extensions:`` in mkdocs.yml); not part of the site.
"""

from __future__ import annotations

from typing import Any

import griffe


def fence_doctests(text: str) -> str:
    """``text`` with every unindented ``>>>`` block fenced as ``pycon``."""
    lines, out, inside = text.splitlines(), [], False
    for line in lines:
        if not inside and line.startswith(">>>"):
            out.append("```pycon")
            inside = True
        elif inside and not line.strip():
            out.append("```")
            inside = False
        out.append(line)
    if inside:
        out.append("```")
    return "\n".join(out)


class DoctestBlocks(griffe.Extension):
    """Fence the top-level doctests of every docstring griffe loads."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None and ">>>" in obj.docstring.value:
            obj.docstring.value = fence_doctests(obj.docstring.value)
