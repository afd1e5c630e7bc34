"""Getting paid: Stripe Connect onboarding over real HTTP, the official ``stripe``
library against the fake Stripe (its accounts, account links and stand-in hosted page),
the ledger on SQLite and PostgreSQL.

A referrer with no payable rail gets one Express account however often onboarding is
retried, a crash between Stripe's answer and the ledger's commit included; finishing
the hosted page (seen on the return URL or through the ``account.updated`` webhook)
makes the account their payout destination, recorded as a destination change; and the
reward held for lack of a rail is then paid once.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from domain.connect import (
    DESTINATION_SOURCE,
    ConnectRecord,
    ConnectStatus,
    Onboarding,
    account_key,
)
from domain.errors import PermanentIntegrationError, RetryableIntegrationError
from domain.fraud import PAYOUT_DESTINATION_CHANGED
from domain.models import Decision, PayoutRailKind, RewardStatus
from domain.program import Program
from integrations.ledger.connect import SqlConnectStore
from integrations.ledger.sql import SqlLedger
from integrations.ledger.tables import (
    T_CONNECT_ACCOUNT_STATES,
    T_CONNECT_ACCOUNTS,
    T_PAYOUT_DESTINATION_CHANGES,
)
from integrations.payments.stripe_connect import StripeConnect
from integrations.payments.stripe_rail import StripeTransferRail
from integrations.payments.stripe_stand_in import FakeStripe
from integrations.webhooks import create_app
from tasks.connect import apply_account_updates, refresh_connected_accounts
from tasks.payouts import submit_payouts
from tasks.rewards import plan_routes
from tasks.use_cases.approvals import record_decision
from tests.conftest import contact, people_batch
from tests.integration.test_ledger_flow import decide, given_reward
from tests.integration.test_webhooks import STRIPE, serve

BASE = "https://refer.example.com"
PAGE = f"{BASE}/p/tok"
RETURN_URL = f"{PAGE}/connect/return"
REFRESH_URL = f"{PAGE}/connect"


class _Inbox(SqlLedger):
    """The ledger, as the webhook receiver is given it."""


@pytest.fixture
def connect(fake: FakeStripe) -> Iterator[StripeConnect]:
    with StripeConnect.connect(fake.api_key, api_base=fake.url, max_network_retries=0) as made:
        yield made


def onboarding(ledger: SqlLedger, gateway: StripeConnect, now: datetime) -> Onboarding:
    return Onboarding(ledger.connect, gateway, lambda: now)


class CommitLost(Exception):
    """The process died after Stripe answered, before the account id was committed."""


class CrashingStore(SqlConnectStore):
    """The ledger's store, but the first attach never commits."""

    crashed = False

    def attach(self, referrer_id: str, account_id: str, now: datetime) -> None:
        if not self.crashed:
            self.crashed = True
            raise CommitLost
        super().attach(referrer_id, account_id, now)


def finish_hosted_onboarding(url: str) -> httpx.Response:
    """What the referrer does in their browser: open the link, agree and submit."""
    with httpx.Client(follow_redirects=False) as browser:
        page = browser.get(url)
        assert page.status_code == 200
        assert "Agree and submit" in page.text
        return browser.post(url)


def contact_account(ledger: SqlLedger, contact_id: str) -> str | None:
    return ledger.asks.contacts([contact_id])[contact_id].stripe_account_id


def destination_changes(ledger: SqlLedger) -> list[dict[str, Any]]:
    with ledger.engine.connect() as conn:
        return [
            dict(r)
            for r in conn.execute(
                select(
                    T_PAYOUT_DESTINATION_CHANGES.c.contact_id,
                    T_PAYOUT_DESTINATION_CHANGES.c.old_value,
                    T_PAYOUT_DESTINATION_CHANGES.c.new_value,
                    T_PAYOUT_DESTINATION_CHANGES.c.source,
                )
            ).mappings()
        ]


def test_a_crash_between_stripe_creating_the_account_and_the_commit_makes_no_second_account(
    ledger: SqlLedger, fake: FakeStripe, connect: StripeConnect, now: datetime
) -> None:
    given_reward(ledger, now)  # C1, a referrer with no payout destination
    store = CrashingStore(ledger.engine)
    crashing = Onboarding(store, connect, lambda: now)

    with pytest.raises(CommitLost):
        crashing.account_for("C1")
    # The key was stored before the call; the account id never was.
    record = ledger.connect.of_referrer("C1")
    assert record is not None
    assert record == ConnectRecord("C1", account_key("C1"), None, None, record.created_at)

    account_id = crashing.account_for("C1")

    assert [a["id"] for a in fake.connect_accounts] == [account_id]
    assert [(r.idempotency_key, r.replayed) for r in fake.requests] == [
        (account_key("C1"), False),
        (account_key("C1"), True),
    ]
    assert ledger.connect.of_referrer("C1").account_id == account_id  # type: ignore[union-attr]
    # Known now: no more calls to create it.
    assert crashing.account_for("C1") == account_id
    assert fake.count("POST /v1/accounts") == 2


def test_an_answer_lost_on_the_network_is_retried_with_the_same_key_into_the_same_account(
    ledger: SqlLedger, fake: FakeStripe, connect: StripeConnect, now: datetime
) -> None:
    given_reward(ledger, now)
    fake.script("POST /v1/accounts", ["commit_then_drop"])
    use_case = onboarding(ledger, connect, now)

    with pytest.raises(RetryableIntegrationError):
        use_case.account_for("C1")
    account_id = use_case.account_for("C1")

    assert [a["id"] for a in fake.connect_accounts] == [account_id]


def test_the_account_is_express_with_transfers_requested_and_only_the_contact_id_as_metadata(
    ledger: SqlLedger, fake: FakeStripe, connect: StripeConnect, now: datetime
) -> None:
    given_reward(ledger, now)

    onboarding(ledger, connect, now).start("C1", RETURN_URL, REFRESH_URL)

    (account,) = fake.connect_accounts
    assert account["type"] == "express"
    assert account["capabilities"] == {"transfers": "inactive"}
    assert account["metadata"] == {"referrer_id": "C1"}


def test_finishing_the_hosted_page_returns_to_the_page_and_makes_the_account_the_destination(
    ledger: SqlLedger, fake: FakeStripe, connect: StripeConnect, now: datetime
) -> None:
    given_reward(ledger, now)
    use_case = onboarding(ledger, connect, now)
    link = use_case.start("C1", RETURN_URL, REFRESH_URL)
    assert link.url.startswith(f"{fake.url}/connect/hosted/")
    assert use_case.refresh("C1") is ConnectStatus.ONBOARDING
    assert contact_account(ledger, "C1") is None

    back = finish_hosted_onboarding(link.url)

    assert back.status_code == 303
    assert back.headers["location"] == RETURN_URL
    assert use_case.refresh("C1") is ConnectStatus.ENABLED
    account_id = fake.connect_accounts[0]["id"]
    assert contact_account(ledger, "C1") == account_id
    assert destination_changes(ledger) == [
        {
            "contact_id": "C1",
            "old_value": None,
            "new_value": account_id,
            "source": DESTINATION_SOURCE,
        }
    ]
    # Read again: nothing new to log, no second change.
    assert use_case.refresh("C1") is ConnectStatus.ENABLED
    with ledger.engine.connect() as conn:
        logged = conn.execute(select(T_CONNECT_ACCOUNT_STATES.c.status)).scalars().all()
    assert logged == ["onboarding", "enabled"]
    assert len(destination_changes(ledger)) == 1


def test_a_link_opened_before_shows_the_expired_page_that_sends_to_the_refresh_url(
    ledger: SqlLedger, fake: FakeStripe, connect: StripeConnect, now: datetime
) -> None:
    given_reward(ledger, now)
    link = onboarding(ledger, connect, now).start("C1", RETURN_URL, REFRESH_URL)
    finish_hosted_onboarding(link.url)

    again = httpx.get(link.url)

    assert again.status_code == 200
    assert "expired" in again.text
    assert f'href="{REFRESH_URL}"' in again.text


def test_a_link_past_its_expiry_is_refused_even_unopened(
    ledger: SqlLedger, fake: FakeStripe, connect: StripeConnect, now: datetime
) -> None:
    given_reward(ledger, now)
    link = onboarding(ledger, connect, now).start("C1", RETURN_URL, REFRESH_URL)
    fake.advance(minutes=6)

    assert "expired" in httpx.get(link.url).text
    assert fake.connect_accounts[0]["payouts_enabled"] is False


def test_the_account_updated_webhook_enables_the_account_without_the_return_visit(
    ledger: SqlLedger, fake: FakeStripe, connect: StripeConnect, now: datetime
) -> None:
    given_reward(ledger, now)
    inbox = _Inbox(ledger.engine)
    app = create_app(inbox, sendgrid_public_key=None, stripe_secret=fake.webhook_secret)
    link = onboarding(ledger, connect, now).start("C1", RETURN_URL, REFRESH_URL)
    with serve(app) as url:
        fake.webhook_url = f"{url}{STRIPE}"
        finish_hosted_onboarding(link.url)  # the referrer closes the tab on Stripe's page

    counts = apply_account_updates.fn(ledger.connect, connect, now)

    assert counts == {"events": 1, "enabled": 1, "ignored": 0}
    assert contact_account(ledger, "C1") == fake.connect_accounts[0]["id"]
    assert apply_account_updates.fn(ledger.connect, connect, now)["events"] == 0


def test_an_account_updated_event_for_an_account_not_ours_changes_nothing(
    ledger: SqlLedger, connect: StripeConnect, now: datetime
) -> None:
    given_reward(ledger, now)
    event = {
        "id": "evt_other",
        "object": "event",
        "type": "account.updated",
        "created": int(now.timestamp()),
        "livemode": False,
        "data": {
            "object": {
                "id": "acct_someone_else",
                "object": "account",
                "payouts_enabled": True,
                "capabilities": {"transfers": "active"},
            }
        },
    }
    _Inbox(ledger.engine).provider_events.store_stripe_event(event, now)

    assert apply_account_updates.fn(ledger.connect, connect, now) == {
        "events": 1,
        "enabled": 0,
        "ignored": 1,
    }
    assert contact_account(ledger, "C1") is None


def test_a_reward_held_for_lack_of_a_rail_is_paid_once_after_onboarding(
    ledger: SqlLedger,
    fake: FakeStripe,
    connect: StripeConnect,
    rail: StripeTransferRail,
    program: Program,
    now: datetime,
) -> None:
    reward = given_reward(ledger, now - timedelta(days=60), amount_minor=2_000)
    rails = {PayoutRailKind.STRIPE_TRANSFER: rail}
    plan = plan_routes.fn(ledger, program, now, now)
    assert plan.auto_pay == [reward.reward_id]
    held = submit_payouts.fn(ledger, rails, plan.auto_pay, now)
    assert held.no_rail == [reward.reward_id]
    assert fake.transfers == []

    link = onboarding(ledger, connect, now).start("C1", RETURN_URL, REFRESH_URL)
    finish_hosted_onboarding(link.url)
    # No return visit, no webhook: the payout run reads the account back itself.
    assert refresh_connected_accounts.fn(ledger.connect, connect, now)["enabled"] == 1

    # The new destination waits for a person once, as any destination change does.
    later = now + timedelta(minutes=1)
    plan = plan_routes.fn(ledger, program, later, later)
    assert plan.approval == [reward.reward_id]
    view = ledger.rewards.of([reward.reward_id])[reward.reward_id]
    assert PAYOUT_DESTINATION_CHANGED in view.reward.flags
    record_decision(
        ledger, reward.reward_id, 1, decide(Decision.APPROVE, amount_minor=2_000), 1, None, later
    )
    for _ in range(2):
        submit_payouts.fn(ledger, rails, [reward.reward_id], later)

    (transfer,) = fake.transfers
    assert transfer["destination"] == fake.connect_accounts[0]["id"]
    assert transfer["amount"] == 2_000
    assert ledger.rewards.of([reward.reward_id])[reward.reward_id].status is RewardStatus.PAID


# -- the ledger's guards ------------------------------------------------------------------


def refused(ledger: SqlLedger, statement: Any) -> str | None:
    try:
        with ledger.engine.begin() as conn:
            conn.execute(statement)
    except IntegrityError as exc:
        return str(exc.orig)
    return None


def test_the_database_keeps_connected_accounts_and_their_states_as_written(
    ledger: SqlLedger, fake: FakeStripe, connect: StripeConnect, now: datetime
) -> None:
    given_reward(ledger, now)
    use_case = onboarding(ledger, connect, now)
    use_case.start("C1", RETURN_URL, REFRESH_URL)
    use_case.refresh("C1")
    accounts, states = T_CONNECT_ACCOUNTS, T_CONNECT_ACCOUNT_STATES

    refusals = {
        "delete account": refused(ledger, delete(accounts)),
        "replace account": refused(ledger, update(accounts).values(account_id="acct_other")),
        "clear account": refused(ledger, update(accounts).values(account_id=None)),
        "change key": refused(ledger, update(accounts).values(idempotency_key="other")),
        "delete state": refused(ledger, delete(states)),
        "rewrite state": refused(ledger, update(states).values(status="enabled")),
    }

    assert {what: why for what, why in refusals.items() if why is None} == {}
    assert "append-only" in (refusals["delete state"] or "")
    assert "set once" in (refusals["replace account"] or "")
    assert ledger.connect.of_referrer("C1").status is ConnectStatus.ONBOARDING  # type: ignore[union-attr]


def test_a_referrer_already_holding_another_account_cannot_be_given_a_second(
    ledger: SqlLedger, now: datetime
) -> None:
    ledger.connect.reserve("C1", account_key("C1"), now)
    ledger.connect.attach("C1", "acct_first", now)
    ledger.connect.attach("C1", "acct_first", now)  # the same answer again: nothing

    with pytest.raises(PermanentIntegrationError):
        ledger.connect.attach("C1", "acct_second", now)
    assert ledger.connect.of_referrer("C1").account_id == "acct_first"  # type: ignore[union-attr]


def test_a_connected_account_from_the_crm_is_left_alone_and_a_paying_customer_may_onboard(
    ledger: SqlLedger, connect: StripeConnect, now: datetime
) -> None:
    given_reward(ledger, now)
    ledger.sources.record_batch(
        people_batch(
            contact("C2", "A-C2", stripe_account_id="acct_from_crm"),
            contact("C3", "A-C3", stripe_customer_id="cus_3"),
        ),
        now,
    )
    use_case = onboarding(ledger, connect, now)

    assert use_case.may_start("C1")
    assert not use_case.may_start("C2")
    # Paid in credit unless they chose cash, which waits for a connected account.
    assert use_case.may_start("C3")
    assert not use_case.may_start("nobody")


def test_two_visits_at_once_make_one_account_the_slower_one_told_to_try_again(
    ledger: SqlLedger, fake: FakeStripe, connect: StripeConnect, now: datetime
) -> None:
    given_reward(ledger, now)
    fake.slow_seconds = 0.5
    fake.script("POST /v1/accounts", ["timeout"])  # the first holds the key a while
    use_case = onboarding(ledger, connect, now)
    outcomes: list[object] = []

    def visit() -> None:
        try:
            outcomes.append(use_case.account_for("C1"))
        except RetryableIntegrationError as exc:
            outcomes.append(exc)

    visits = [threading.Thread(target=visit) for _ in range(2)]
    for thread in visits:
        thread.start()
    for thread in visits:
        thread.join()

    (account,) = fake.connect_accounts
    # The second visit, while the first holds the key, is answered 409 (retry later);
    # on a slow machine it may come after the first and simply find the account.
    assert account["id"] in outcomes
    assert all(o == account["id"] or isinstance(o, RetryableIntegrationError) for o in outcomes)
    assert use_case.account_for("C1") == account["id"]
