"""The referrer's journey in headless Chromium: the magic link opens their page, which
shows their referrals and rewards; the copy button copies their tracked link; the link
leads to the landing page. Screenshots at desktop and phone widths are kept (the pytest
tmp dir and ``test-artifacts/``, ignored by git).

Stripe Connect onboarding, the rest of the journey, is
``tests/integration/test_connect_browser.py``.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from sqlalchemy import select

from config.settings import PROJECT_ROOT
from domain.codes import new_referral_code
from domain.links import LinkClick, VisitorKind
from domain.models import PayoutRailKind
from domain.program import Program
from integrations.ledger.sql import SqlLedger
from integrations.ledger.tables import T_NOTIFICATIONS
from integrations.web import create_app
from integrations.web.magic import MagicLinks, PageLinks
from integrations.web.pages import ReferrerPages
from tasks.use_cases.asks import record_ask_decisions
from tests.conftest import contact, people_batch
from tests.integration.browser import chromium_missing, launch_chromium
from tests.integration.test_payout_crashes import seed_payable_reward

_MISSING = chromium_missing()
pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(_MISSING is not None, reason=_MISSING or ""),
]

ARTIFACTS = PROJECT_ROOT / "test-artifacts"
KEY = b"a-visitor-key-of-at-least-32-characters"
PAGE_KEY = b"a-page-key-of-at-least-32-characters!!"
WIDTHS = {"desktop": 1280, "phone": 390}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
    """A tiny local landing page (the machines are offline)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Landing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/join"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def web_app(ledger: SqlLedger, program: Program, landing: str) -> Iterator[tuple[str, PageLinks]]:
    """The referrers' web app under uvicorn on a port known before it starts (the
    public base URL is built into the page links)."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    magic = MagicLinks(PAGE_KEY, 3600)
    pages = ReferrerPages(
        ledger.referrer_side,
        magic,
        program,
        base,
        {PayoutRailKind.STRIPE_TRANSFER, PayoutRailKind.STRIPE_BALANCE},
        KEY,
    )
    app = create_app(ledger.links, landing=landing, visitor_key=KEY, pages=pages)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on", ws="none")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the web app did not start")
        time.sleep(0.01)
    try:
        yield base, PageLinks(magic, base)
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_a_referrer_opens_their_page_copies_their_link_and_it_leads_to_the_landing_page(
    sqlite_ledger: SqlLedger, program: Program, now: datetime, tmp_path: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    ledger = sqlite_ledger
    referrer = contact("A", "ACC-A")
    # A real referral code first (the reward's seed keeps the code already held).
    ledger.record_batch(people_batch(referrer), now)
    record_ask_decisions(ledger, [], {"A": new_referral_code()}, now, now)
    seed_payable_reward(ledger, referrer, now, key="deal-a")
    code = ledger.asks.codes_for(["A"])["A"]
    ledger.links.record_link_clicks(
        [LinkClick(f"k{i}", code, "A", now, "f" * 64, VisitorKind.PERSON) for i in range(3)],
        now,
    )
    ARTIFACTS.mkdir(exist_ok=True)

    with landing_page() as landing, web_app(ledger, program, landing) as (base, links):
        magic_link = links("A")
        with sync_playwright() as playwright:
            browser = launch_chromium(playwright)
            try:
                context = browser.new_context(viewport={"width": 1280, "height": 900})
                context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)
                page = context.new_page()

                page.goto(magic_link)
                expect(page.get_by_role("heading", name="Hi Person")).to_be_visible()
                expect(page.get_by_role("heading", name="Referrals", exact=True)).to_be_visible()
                expect(page.get_by_role("cell", name="#1")).to_be_visible()
                expect(page.get_by_role("cell", name="25.00 EUR")).to_be_visible()
                expect(page.get_by_role("link", name="Set up payouts")).to_be_visible()
                link = page.get_by_label("Share this link").input_value()
                assert link == f"{base}/r/{code}"

                page.get_by_role("button", name="Copy link").click()
                expect(page.get_by_role("status").first).to_contain_text("Copied")
                assert page.evaluate("navigator.clipboard.readText()") == link

                for name, width in WIDTHS.items():
                    page.set_viewport_size({"width": width, "height": 900})
                    shot = f"referrer-page-{name}.png"
                    page.screenshot(path=str(tmp_path / shot), full_page=True)
                    page.screenshot(path=str(ARTIFACTS / shot), full_page=True)
                    # Nothing wider than the screen: no sideways scrolling on a phone.
                    assert page.evaluate("document.documentElement.scrollWidth") <= width

                page.goto(link)
                expect(page.get_by_role("heading", name="Welcome to Acme")).to_be_visible()
                assert page.url == f"{landing}?ref={code}"

                # An old or altered link: the plain refusal, then a fresh link by email.
                page.goto(magic_link[:-4] + "AAAA")
                expect(page.get_by_role("heading", name="expired or is not valid")).to_be_visible()
                page.get_by_role("link", name="Get a fresh link by email").click()
                page.get_by_label("Email address").fill("a@acc-a.example")
                page.get_by_role("button", name="Email me a link").click()
                expect(page.get_by_role("status")).to_contain_text("If the address is known")
            finally:
                browser.close()

    for name in WIDTHS:
        assert (tmp_path / f"referrer-page-{name}.png").stat().st_size > 10_000
    with ledger.engine.connect() as conn:
        queued = conn.execute(
            select(T_NOTIFICATIONS.c.contact_id).where(T_NOTIFICATIONS.c.kind == "page_link")
        ).scalars()
        assert list(queued) == ["A"]
