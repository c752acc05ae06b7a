"""The ``flowkit`` command: ``flowkit flows list|show|lint``, ``flowkit worker``.

Each command is a module here (``_flows``, ``_worker``) with a ``register``
function that adds its parser; ``_main`` dispatches. This package is the top
layer: it may import any package below it, and nothing imports it but
``flowkit/__main__.py``.
"""

from ._main import main as main

__all__ = ["main"]
