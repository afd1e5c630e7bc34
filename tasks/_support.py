"""What every task shares: a logger that works inside and outside a Prefect run."""

from __future__ import annotations

import logging
from typing import Any

from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger


def run_logger() -> logging.Logger | logging.LoggerAdapter[Any]:
    """The run's logger in a flow or task run; a module logger when a test calls
    ``task.fn()`` directly. Log ids and counts only: never emails, names or keys."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("referrals")
