"""What ``make demo`` starts for the referrer's journey, started the way ``referrals
demo`` starts it (without the Prefect server: ``LocalStack.start_web``): with no Stripe
key, the web app and the local Stripe stand-in as two processes; the page the demo
links to offers payout setup, and its button walks over plain HTTP to the stand-in's
hosted page and back; ``down`` stops both by their PIDs. The stand-in is local only
and refuses live keys."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from config.settings import PROJECT_ROOT, load_settings
from flows import bootstrap
from flows.cli import demo_referrer
from integrations.ledger.sql import SqlLedger
from integrations.payments.stripe_stand_in import FakeStripe
from integrations.prefect_stack import STAND_IN, LocalStack
from integrations.web.magic import PageLinks
from tests.conftest import contact
from tests.integration.test_ledger_flow import given_reward

pytestmark = pytest.mark.slow

PAGE_KEY = "p" * 40


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def answers(url: str, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    return False


@pytest.fixture
def stack(tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalStack]:
    # A key in the test's environment would reach the processes: the demo runs keyless.
    monkeypatch.delenv("REFERRALS_STRIPE_API_KEY", raising=False)
    monkeypatch.delenv("REFERRALS_STRIPE_API_BASE", raising=False)
    port = free_port()
    stack = LocalStack(
        PROJECT_ROOT,
        port=free_port(),
        run_dir=tmp_path / "run",
        home=tmp_path / "home",
        extra_env={
            "REFERRALS_DATABASE_URL": sqlite_url,
            "REFERRALS_INBOX_DIR": str(tmp_path / "inbox"),
            "REFERRALS_PAGE_KEY": PAGE_KEY,
            "REFERRALS_VISITOR_KEY": "v" * 40,
            "REFERRALS_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        },
    )
    try:
        yield stack
    finally:
        stack.down()


def test_without_a_stripe_key_the_demo_web_app_onboards_through_the_local_stand_in_and_down_stops_both(  # noqa: E501
    stack: LocalStack, sqlite_ledger: SqlLedger, sqlite_url: str, tmp_path: Path
) -> None:
    given_reward(sqlite_ledger, datetime.now(UTC), amount_minor=2_000)
    base = stack.extra_env["REFERRALS_PUBLIC_BASE_URL"]
    port = int(base.rsplit(":", 1)[1])

    stand_in = stack.start_web(port, stripe_stand_in=True)

    assert stand_in is not None
    assert stand_in.startswith("http://127.0.0.1:")
    assert answers(f"{base}/healthz"), (tmp_path / "run" / "web.log").read_text()
    # Started again (a second `referrals demo`): the same processes, nothing restarted.
    web_pid = stack.running("web")
    assert stack.start_web(port, stripe_stand_in=True) == stand_in
    assert stack.running("web") == web_pid

    referrer = demo_referrer(sqlite_ledger.referrer_side)
    assert referrer == "C1"
    settings = load_settings(database_url=sqlite_url, page_key=PAGE_KEY, public_base_url=base)
    page_url = PageLinks(bootstrap.magic_links(settings), base)(referrer)
    with httpx.Client(timeout=10) as browser:
        page = browser.get(page_url)
        assert "Set up payouts" in page.text
        to_stripe = browser.get(f"{page_url}/connect")
        assert to_stripe.status_code == 303
        hosted = to_stripe.headers["location"]
        assert hosted.startswith(f"{stand_in}/connect/hosted/")
        assert "Agree and submit" in browser.get(hosted).text
        back = browser.post(hosted)
        assert back.headers["location"] == f"{page_url}/connect/return"
        to_page = browser.get(back.headers["location"])
        assert to_page.headers["location"] == page_url
        after = browser.get(page_url)
    assert after.status_code == 200
    assert "Set up payouts" not in after.text
    account = sqlite_ledger.asks.contacts(["C1"])["C1"].stripe_account_id
    assert account is not None
    assert account.startswith("acct_")

    stopped = stack.down()

    assert {"web", STAND_IN} <= set(stopped)
    assert not (tmp_path / "run" / f"{STAND_IN}.url").exists()
    for url in (f"{base}/healthz", stand_in):
        with pytest.raises(httpx.ConnectError):
            httpx.get(url, timeout=2)


def test_the_demo_shows_the_page_of_a_referrer_who_has_no_way_to_be_paid_yet() -> None:
    facts = {
        "PAID-BY-STRIPE": SimpleNamespace(
            contact=contact("PAID-BY-STRIPE", stripe_account_id="acct_1"), choice=None
        ),
        "NO-RAIL": SimpleNamespace(contact=contact("NO-RAIL"), choice=None),
    }
    store = SimpleNamespace(
        referrers_with_rewards=lambda limit: list(facts)[:limit],
        referrer_facts=facts.get,
    )

    assert demo_referrer(store) == "NO-RAIL"
    assert demo_referrer(SimpleNamespace(referrers_with_rewards=lambda limit: [])) is None


def test_the_stand_in_refuses_a_live_key_given_or_configured() -> None:
    with pytest.raises(ValueError, match="live key"):
        FakeStripe(api_key="sk_live_" + "x" * 24)

    refused = subprocess.run(
        [sys.executable, "-m", "integrations.payments.stripe_stand_in", "--port", "0"],
        env={**os.environ, "REFERRALS_STRIPE_API_KEY": "sk_live_" + "x" * 24},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 2
    assert "live key" in refused.stderr
    assert "sk_live_x" not in refused.stderr + refused.stdout
