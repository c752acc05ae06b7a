"""``python -m flowkit.worker``: run a worker process (see ``--help``).

``main`` is the worker's command line; ``flowkit worker`` runs it too.
"""

from __future__ import annotations

import sys

from ._cli import main as main

if __name__ == "__main__":
    sys.exit(main())
