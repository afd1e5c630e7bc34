"""Getting paid, in headless Chromium: the referrer's magic link opens their page, which
offers payout setup; the button leads to Stripe's (the fake's) hosted onboarding and,
once agreed, back to the page, which no longer asks; the reward held for lack of a
rail is then paid once. Screenshots of the page before and after, at desktop and phone
widths, are kept (the pytest tmp dir and ``test-artifacts/``, ignored by git)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import uvicorn

from config.settings import PROJECT_ROOT, load_settings
from domain.models import Decision, PayoutRailKind, RewardStatus
from domain.program import Program
from flows import bootstrap
from integrations.ledger.sql import SqlLedger
from integrations.payments.stripe_connect import StripeConnect
from integrations.payments.stripe_rail import StripeTransferRail
from tasks.connect import refresh_connected_accounts
from tasks.payouts import submit_payouts
from tasks.rewards import plan_routes
from tests.fakes.stripe_server import FakeStripe
from tests.integration.browser import chromium_missing, launch_chromium
from tests.integration.test_ledger_flow import decide, given_reward

_MISSING = chromium_missing()
pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(_MISSING is not None, reason=_MISSING or ""),
]

ARTIFACTS = PROJECT_ROOT / "test-artifacts"
WIDTHS = {"desktop": 1280, "phone": 390}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serving_on(app: object, port: int) -> Iterator[None]:
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
    thread = threading.Thread(target=server.run, name="connect-browser-app", daemon=True)
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


@pytest.fixture
def fake() -> Iterator[FakeStripe]:
    with FakeStripe() as server:
        yield server


def test_a_referrer_onboards_from_their_page_in_a_browser_and_their_held_reward_is_paid_once(
    sqlite_ledger: SqlLedger,
    sqlite_url: str,
    fake: FakeStripe,
    program: Program,
    tmp_path: Path,
) -> None:
    ledger, now = sqlite_ledger, datetime.now(UTC)
    reward = given_reward(ledger, now - timedelta(days=60), amount_minor=2_000)
    port = free_port()
    settings = load_settings(
        database_url=sqlite_url,
        inbox_dir=tmp_path,
        stripe_api_key=fake.api_key,
        stripe_api_base=fake.url,
        stripe_max_network_retries=0,
        page_key="p" * 40,
        visitor_key="v" * 40,
        public_base_url=f"http://127.0.0.1:{port}",
    )
    page_url = f"{settings.public_base_url}/p/{bootstrap.magic_links(settings).token_for('C1')}"
    shots: dict[str, Path] = {}
    from playwright.sync_api import sync_playwright

    with serving_on(bootstrap.web_app(settings), port), sync_playwright() as pw:
        browser = launch_chromium(pw)
        try:
            for name, width in WIDTHS.items():
                view = browser.new_page(viewport={"width": width, "height": 900})
                view.goto(page_url)
                assert view.get_by_role("heading", name="Get paid").is_visible()
                shots[f"setup-{name}"] = tmp_path / f"connect-setup-{name}.png"
                view.screenshot(path=str(shots[f"setup-{name}"]), full_page=True)
                view.close()

            tab = browser.new_page(viewport={"width": WIDTHS["desktop"], "height": 900})
            tab.goto(page_url)
            tab.get_by_role("link", name="Set up payouts").click()
            tab.wait_for_url(f"{fake.url}/connect/hosted/*")
            tab.get_by_role("button", name="Agree and submit").click()
            tab.wait_for_url(page_url)
            assert tab.get_by_role("heading", name="Get paid").count() == 0
            for name, width in WIDTHS.items():
                tab.set_viewport_size({"width": width, "height": 900})
                shots[f"paid-{name}"] = tmp_path / f"connect-done-{name}.png"
                tab.screenshot(path=str(shots[f"paid-{name}"]), full_page=True)
        finally:
            browser.close()
    ARTIFACTS.mkdir(exist_ok=True)
    for path in shots.values():
        assert path.stat().st_size > 0
        (ARTIFACTS / path.name).write_bytes(path.read_bytes())

    # The payout run: the new destination waits for one approval, then pays once.
    with (
        StripeTransferRail.connect(fake.api_key, api_base=fake.url, max_network_retries=0) as rail,
        StripeConnect.connect(fake.api_key, api_base=fake.url, max_network_retries=0) as connect,
    ):
        rails = {PayoutRailKind.STRIPE_TRANSFER: rail}
        refresh_connected_accounts.fn(ledger.connect, connect, now)
        assert plan_routes.fn(ledger, program, now, now).approval == [reward.reward_id]
        ledger.record_decision(
            reward.reward_id, 1, decide(Decision.APPROVE, amount_minor=2_000), 1, None, now
        )
        for _ in range(2):
            submit_payouts.fn(ledger, rails, [reward.reward_id], now)

    (transfer,) = fake.transfers
    assert transfer["destination"] == fake.connect_accounts[0]["id"]
    assert ledger.rewards([reward.reward_id])[reward.reward_id].status is RewardStatus.PAID
