"""The referrer's whole journey in one headless Chromium session, driven as a person
drives it (mouse clicks, typing): their magic link opens their page with their
referrals and rewards; the copy button copies their tracked link, which leads to the
landing page; "Set up payouts" goes to Stripe's (the stand-in's) hosted onboarding and,
once agreed, back to the page, which no longer asks; an altered link gets the plain
refusal and a fresh link by email. Then the payout step, run twice, pays the reward
held for lack of a rail exactly once (after the one approval a new destination needs).
Screenshots at desktop and phone widths, before and after onboarding, are kept (the
pytest tmp dir and ``test-artifacts/``, ignored by git)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from config.settings import load_settings
from domain.codes import new_referral_code
from domain.models import Decision, PayoutRailKind, RewardStatus
from domain.program import Program
from flows import bootstrap
from integrations.ledger.sql import SqlLedger
from integrations.ledger.tables import T_NOTIFICATIONS
from integrations.payments.stripe_connect import StripeConnect
from integrations.payments.stripe_rail import StripeTransferRail
from integrations.payments.stripe_stand_in import FakeStripe
from tasks.connect import refresh_connected_accounts
from tasks.payouts import submit_payouts
from tasks.rewards import plan_routes
from tasks.use_cases.approvals import record_decision
from tasks.use_cases.asks import record_ask_decisions
from tests.conftest import contact, people_batch
from tests.integration.browser import (
    WIDTHS,
    chromium_missing,
    free_port,
    landing_page,
    launch_chromium,
    screenshots,
    serving_on,
)
from tests.integration.test_ledger_flow import decide, given_reward

_MISSING = chromium_missing()
pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(_MISSING is not None, reason=_MISSING or ""),
]


@pytest.fixture
def fake() -> Iterator[FakeStripe]:
    with FakeStripe() as server:
        yield server


def test_a_referrer_walks_from_their_magic_link_through_sharing_and_onboarding_and_is_paid_once(
    sqlite_ledger: SqlLedger,
    sqlite_url: str,
    fake: FakeStripe,
    program: Program,
    tmp_path: Path,
) -> None:
    from playwright.sync_api import expect, sync_playwright

    ledger, now = sqlite_ledger, datetime.now(UTC)
    # A real referral code first (a tracked link takes no other); the reward keeps it.
    ledger.sources.record_batch(people_batch(contact("C1", "A-C1")), now)
    record_ask_decisions(ledger, [], {"C1": new_referral_code()}, now, now)
    reward = given_reward(ledger, now - timedelta(days=60), amount_minor=2_000)
    code = ledger.asks.codes_for(["C1"])["C1"]
    port = free_port()
    shots: list[Path] = []

    with landing_page() as landing:
        settings = load_settings(
            database_url=sqlite_url,
            inbox_dir=tmp_path,
            stripe_api_key=fake.api_key,
            stripe_api_base=fake.url,
            stripe_max_network_retries=0,
            page_key="p" * 40,
            visitor_key="v" * 40,
            public_base_url=f"http://127.0.0.1:{port}",
            landing_url=landing,
        )
        base = settings.public_base_url
        magic_link = f"{base}/p/{bootstrap.magic_links(settings).token_for('C1')}"
        with serving_on(bootstrap.web_app(settings), port), sync_playwright() as pw:
            browser = launch_chromium(pw)
            try:
                context = browser.new_context(viewport={"width": WIDTHS["desktop"], "height": 900})
                context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)
                page = context.new_page()

                # The magic link from their email: their page, their referral and reward.
                page.goto(magic_link)
                expect(page.get_by_role("heading", name="Hi Person")).to_be_visible()
                expect(page.get_by_role("heading", name="Referrals", exact=True)).to_be_visible()
                expect(page.get_by_role("cell", name="#1")).to_be_visible()
                expect(page.get_by_role("cell", name="20.00 EUR")).to_be_visible()
                expect(page.get_by_role("heading", name="Get paid")).to_be_visible()
                shots += screenshots(page, "journey-page", tmp_path)
                page.set_viewport_size({"width": WIDTHS["desktop"], "height": 900})

                # Copy the link, and follow it as a friend would: to the landing page.
                page.get_by_role("button", name="Copy link").click()
                expect(page.get_by_role("status").first).to_contain_text("Copied")
                copied = page.evaluate("navigator.clipboard.readText()")
                assert copied == f"{base}/r/{code}"
                assert page.get_by_label("Share this link").input_value() == copied
                friend = context.new_page()
                friend.goto(copied)
                expect(friend.get_by_role("heading", name="Welcome to Acme")).to_be_visible()
                assert friend.url == f"{landing}?ref={code}"
                friend.close()

                # Getting paid: Stripe's hosted onboarding (the stand-in's), and back.
                page.get_by_role("link", name="Set up payouts").click()
                page.wait_for_url(f"{fake.url}/connect/hosted/*")
                page.get_by_role("button", name="Agree and submit").click()
                page.wait_for_url(magic_link)
                expect(page.get_by_role("heading", name="Hi Person")).to_be_visible()
                assert page.get_by_role("heading", name="Get paid").count() == 0
                shots += screenshots(page, "journey-onboarded", tmp_path)

                # An old or altered link: the plain refusal, then a fresh link by email.
                page.goto(magic_link[:-4] + "AAAA")
                expect(page.get_by_role("heading", name="expired or is not valid")).to_be_visible()
                page.get_by_role("link", name="Get a fresh link by email").click()
                page.get_by_label("Email address").click()
                page.get_by_label("Email address").press_sequentially("c1@a-c1.example")
                page.get_by_role("button", name="Email me a link").click()
                expect(page.get_by_role("status")).to_contain_text("If the address is known")
            finally:
                browser.close()

    assert len(shots) == 2 * len(WIDTHS)
    for path in shots:
        assert path.stat().st_size > 10_000
    (account,) = fake.connect_accounts
    assert ledger.asks.contacts(["C1"])["C1"].stripe_account_id == account["id"]
    with ledger.engine.connect() as conn:
        queued = conn.execute(
            select(T_NOTIFICATIONS.c.contact_id).where(T_NOTIFICATIONS.c.kind == "page_link")
        ).scalars()
        assert list(queued) == ["C1"]

    # The payout step: the new destination waits for one approval, then pays once.
    with (
        StripeTransferRail.connect(fake.api_key, api_base=fake.url, max_network_retries=0) as rail,
        StripeConnect.connect(fake.api_key, api_base=fake.url, max_network_retries=0) as connect,
    ):
        rails = {PayoutRailKind.STRIPE_TRANSFER: rail}
        refresh_connected_accounts.fn(ledger.connect, connect, now)
        assert plan_routes.fn(ledger, program, now, now).approval == [reward.reward_id]
        record_decision(
            ledger, reward.reward_id, 1, decide(Decision.APPROVE, amount_minor=2_000), 1, None, now
        )
        for _ in range(2):
            submit_payouts.fn(ledger, rails, [reward.reward_id], now)

    (transfer,) = fake.transfers
    assert transfer["destination"] == account["id"]
    assert transfer["amount"] == 2_000
    assert ledger.rewards.of([reward.reward_id])[reward.reward_id].status is RewardStatus.PAID
