"""Inbound webhooks: SendGrid's Event Webhook and Stripe's, verified, then kept once.

:func:`~integrations.webhooks.app.create_app` builds the ASGI app; serve it with any
ASGI server (uvicorn) behind TLS.
"""

from __future__ import annotations

from integrations.webhooks.app import WebhookInbox, create_app

__all__ = ["WebhookInbox", "create_app"]
