"""Webhooks: an ASGI app that turns signed HTTP calls into signals."""

from ._app import WebhookApp as WebhookApp
from ._app import WebhookRoute as WebhookRoute
from ._app import app as app
from ._app import sign as sign

__all__ = ["WebhookApp", "WebhookRoute", "app", "sign"]
