"""The whole getting-paid journey through ``referrals web serve``'s app as bootstrap
builds it (with a Stripe key, the onboarding routes are mounted): the referrer's page
offers payout setup, the link goes to Stripe's (the fake's) hosted onboarding, Stripe
sends them back, and their page no longer asks."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from config.settings import load_settings
from flows import bootstrap
from integrations.ledger.sql import SqlLedger
from integrations.payments.stripe_stand_in import FakeStripe
from tests.integration.test_ledger_flow import given_reward
from tests.integration.test_link_clicks import serving

PAGE_KEY = "p" * 40
VISITOR_KEY = "v" * 40


@pytest.fixture
def fake() -> Iterator[FakeStripe]:
    with FakeStripe() as server:
        yield server


def test_a_referrer_sets_up_payouts_from_their_page_and_comes_back_to_it(
    sqlite_ledger: SqlLedger, sqlite_url: str, fake: FakeStripe, tmp_path: Path
) -> None:
    given_reward(sqlite_ledger, datetime.now(UTC))
    settings = load_settings(
        database_url=sqlite_url,
        inbox_dir=tmp_path,
        stripe_api_key=fake.api_key,
        stripe_api_base=fake.url,
        stripe_max_network_retries=0,
        page_key=PAGE_KEY,
        visitor_key=VISITOR_KEY,
    )
    token = bootstrap.magic_links(settings).token_for("C1")
    app = bootstrap.web_app(settings)

    with serving(app) as browser:
        page = browser.get(f"/p/{token}")
        assert "Set up payouts" in page.text
        assert f"/p/{token}/connect" in page.text
        assert browser.get("/p/forged.token/connect").status_code == 404

        to_stripe = browser.get(f"/p/{token}/connect")
        assert to_stripe.status_code == 303
        hosted = to_stripe.headers["location"]
        assert hosted.startswith(f"{fake.url}/connect/hosted/")
        with httpx.Client() as on_stripe:
            on_stripe.get(hosted)
            back = on_stripe.post(hosted)
        assert back.status_code == 303
        returned = back.headers["location"]
        assert returned == f"{settings.public_base_url}/p/{token}/connect/return"
        # The public base URL is not this test server's: follow by path.
        to_page = browser.get(returned.removeprefix(settings.public_base_url))
        assert to_page.headers["location"] == f"{settings.public_base_url}/p/{token}"
        after = browser.get(f"/p/{token}")

    assert after.status_code == 200
    assert "Set up payouts" not in after.text
    assert (
        sqlite_ledger.asks.contacts(["C1"])["C1"].stripe_account_id
        == fake.connect_accounts[0]["id"]
    )
