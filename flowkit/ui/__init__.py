"""The web console: runs, one run's path and state, the flows, and actions on runs.

``flowkit.ui.app(store=..., flows=...)`` is a plain ASGI app (Starlette, on
asyncio); ``flowkit ui --store URL`` serves it. Needs ``flowkit[ui]``.
"""

from ._app import ConsoleApp as ConsoleApp
from ._app import app as app

__all__ = ["ConsoleApp", "app"]
