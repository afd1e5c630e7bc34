"""Headless Chromium for browser tests: Debian's package, never a downloaded browser.

The tests drive the system ``chromium`` (``apt-get install chromium``) through
Playwright; ``playwright install`` is not used (it downloads a browser). The flags keep
Chromium from calling home: in a closed network its background connections are refused
and it misbehaves without them.

Mind one trap when a test also calls Prefect: while a sync Playwright is open in a
thread, its event loop counts as running there, so Prefect's functions that have an
async twin (``run_deployment``, ``suspend_flow_run``, ...) return an un-awaited
coroutine instead of running. Make those calls before opening the browser (or in
another thread); ``get_client(sync_client=True)`` is not affected.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Playwright

CHROMIUM = Path(os.environ.get("REFERRALS_TEST_CHROMIUM", "/usr/bin/chromium"))

CHROMIUM_ARGS = (
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
    "--disable-background-networking",
    "--disable-gpu",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


def chromium_missing() -> str | None:
    """Why browser tests cannot run here, or ``None`` when they can."""
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium)"
    return None


def launch_chromium(playwright: Playwright, *, headless: bool = True) -> Browser:
    """Launch the system Chromium with the flags a closed network needs."""
    return playwright.chromium.launch(
        executable_path=str(CHROMIUM), headless=headless, args=list(CHROMIUM_ARGS)
    )
