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
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import uvicorn

from config.settings import PROJECT_ROOT

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Playwright

#: Screenshots are kept here too (ignored by git), besides the pytest tmp dir.
ARTIFACTS = PROJECT_ROOT / "test-artifacts"
#: The widths every page is looked at: a desktop and a phone.
WIDTHS = {"desktop": 1280, "phone": 390}

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


def free_port() -> int:
    """A free port on 127.0.0.1 (the app's public base URL is known before it starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serving_on(app: object, port: int) -> Iterator[None]:
    """``app`` under uvicorn on 127.0.0.1:``port`` in a thread, its lifespan on."""
    config = uvicorn.Config(
        app,  # type: ignore[arg-type]
        host="127.0.0.1",
        port=port,
        log_config=None,
        lifespan="on",
        ws="none",
        access_log=False,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="browser-test-app", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the web app did not start")
        time.sleep(0.01)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(timeout=10)


class _Landing(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<!doctype html><title>Acme</title><h1>Welcome to Acme</h1>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:  # no request lines in the test output
        return


@contextmanager
def landing_page() -> Iterator[str]:
    """A tiny local landing page (the machines are offline); its URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Landing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/join"
    finally:
        server.shutdown()
        server.server_close()


def screenshots(page: Page, name: str, folder: Path) -> list[Path]:
    """Full-page screenshots of ``page`` at every width of :data:`WIDTHS` into
    ``folder`` and :data:`ARTIFACTS`; checks nothing is wider than the screen (no
    sideways scrolling on a phone). Leaves the page at the last width."""
    ARTIFACTS.mkdir(exist_ok=True)
    taken = []
    for width_name, width in WIDTHS.items():
        page.set_viewport_size({"width": width, "height": 900})
        path = folder / f"{name}-{width_name}.png"
        page.screenshot(path=str(path), full_page=True)
        (ARTIFACTS / path.name).write_bytes(path.read_bytes())
        assert page.evaluate("document.documentElement.scrollWidth") <= width, path.name
        taken.append(path)
    return taken
