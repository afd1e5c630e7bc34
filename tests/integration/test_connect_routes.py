"""The onboarding routes of the referrer's page, in a Starlette app under uvicorn,
on the ledger and the fake Stripe over HTTP: a token that names nobody gets the plain
404 page, a good one is sent to Stripe's (the fake's) hosted onboarding, and coming
back reads the account from Stripe before sending the referrer to their page."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime

import httpx
import pytest
from starlette.applications import Starlette

from domain.connect import ConnectStatus, Onboarding
from integrations.ledger.sql import SqlLedger
from integrations.payments.stripe_connect import StripeConnect
from integrations.web.app import NOT_FOUND_PAGE
from integrations.web.connect import connect_routes
from tests.fakes.stripe_server import FakeStripe
from tests.integration.test_ledger_flow import given_reward
from tests.integration.test_webhooks import serve

BASE = "https://refer.example.com"
TOKEN = "C1-token.signed"
TOKENS = {TOKEN: "C1"}


@pytest.fixture
def gateway(fake: FakeStripe) -> Iterator[StripeConnect]:
    with StripeConnect.connect(fake.api_key, api_base=fake.url, max_network_retries=0) as made:
        yield made


@pytest.fixture
def client(ledger: SqlLedger, gateway: StripeConnect, now: datetime) -> Iterator[httpx.Client]:
    given_reward(ledger, now)
    routes = connect_routes(
        referrer_of=TOKENS.get,
        onboarding=Onboarding(ledger.connect, gateway, lambda: now),
        public_base_url=BASE + "/",
    )
    # Starlette's TestClient warns (an error here) with this httpx: a real server instead.
    with serve(Starlette(routes=routes)) as url, httpx.Client(base_url=url) as made:
        yield made


@pytest.mark.parametrize("token", ["C1-token.tampered", "x" * 300])
def test_a_token_that_names_nobody_gets_the_plain_not_found_page_and_reaches_no_stripe(
    client: httpx.Client, fake: FakeStripe, token: str
) -> None:
    for path in (f"/p/{token}/connect", f"/p/{token}/connect/return"):
        answer = client.get(path, follow_redirects=False)

        assert answer.status_code == 404
        assert answer.text == NOT_FOUND_PAGE
    assert fake.requests == []


def test_a_good_token_is_sent_to_the_hosted_onboarding_of_a_new_account(
    client: httpx.Client, fake: FakeStripe
) -> None:
    answer = client.get(f"/p/{TOKEN}/connect", follow_redirects=False)

    assert answer.status_code == 303
    assert answer.headers["location"].startswith(f"{fake.url}/connect/hosted/")
    assert answer.headers["cache-control"] == "no-store"
    (account,) = fake.connect_accounts
    assert TOKEN not in str(account)


def test_each_visit_gets_a_fresh_link_to_the_same_account(
    client: httpx.Client, fake: FakeStripe
) -> None:
    first = client.get(f"/p/{TOKEN}/connect", follow_redirects=False).headers["location"]
    second = client.get(f"/p/{TOKEN}/connect", follow_redirects=False).headers["location"]

    assert first != second
    assert len(fake.connect_accounts) == 1
    assert fake.count("POST /v1/accounts") == 1


def test_coming_back_reads_the_account_and_sends_the_referrer_to_their_page(
    client: httpx.Client, fake: FakeStripe, ledger: SqlLedger, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    hosted = client.get(f"/p/{TOKEN}/connect", follow_redirects=False).headers["location"]
    with httpx.Client() as browser:
        browser.get(hosted)
        done = browser.post(hosted, follow_redirects=False)
    assert done.headers["location"] == f"{BASE}/p/{TOKEN}/connect/return"

    answer = client.get(f"/p/{TOKEN}/connect/return", follow_redirects=False)

    assert answer.status_code == 303
    assert answer.headers["location"] == f"{BASE}/p/{TOKEN}"
    assert fake.count("GET /v1/accounts/*") == 1
    assert ledger.connect.of_referrer("C1").status is ConnectStatus.ENABLED  # type: ignore[union-attr]
    # The app's own lines (uvicorn's access log is the test server's: ``referrals web
    # serve`` turns it off; httpx's lines are this test's client).
    ours = [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.INFO and r.name.startswith(("integrations", "stripe"))
    ]
    assert ours
    assert [line for line in ours if TOKEN in line or "/connect/hosted/" in line] == []


def test_coming_back_before_starting_sends_the_referrer_to_their_page(
    client: httpx.Client, fake: FakeStripe
) -> None:
    answer = client.get(f"/p/{TOKEN}/connect/return", follow_redirects=False)

    assert answer.status_code == 303
    assert answer.headers["location"] == f"{BASE}/p/{TOKEN}"
    assert fake.requests == []


def test_stripe_unreachable_answers_a_try_again_page_and_the_retry_makes_one_account(
    client: httpx.Client, fake: FakeStripe
) -> None:
    fake.script("POST /v1/accounts", ["commit_then_500"])

    failed = client.get(f"/p/{TOKEN}/connect", follow_redirects=False)
    retried = client.get(f"/p/{TOKEN}/connect", follow_redirects=False)

    assert failed.status_code == 503
    assert "Try again" in failed.text
    assert retried.status_code == 303
    assert len(fake.connect_accounts) == 1
