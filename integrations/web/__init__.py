"""The referrer-facing web app: the tracked link (``GET /r/<code>``)."""

from integrations.web.app import ClickRecorder, LinkApp, create_app

__all__ = ["ClickRecorder", "LinkApp", "create_app"]
