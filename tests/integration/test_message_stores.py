"""The messages group's stores behave alike on SQL (SQLite, PostgreSQL) and in memory:
each scenario runs on the SQL store and on its recording in-memory fake."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import insert

from domain.discounts import (
    CouponInstruction,
    DiscountOutcome,
    DiscountRail,
    DiscountResult,
)
from domain.links import LinkClick, VisitorKind
from domain.models import (
    Contact,
    EmailEvent,
    EmailEventType,
    EmailOutcome,
    EmailResult,
    ReferrerType,
)
from integrations.ledger.engine import make_engine
from integrations.ledger.memory import InMemoryLedger
from integrations.ledger.sql import SqlLedger
from integrations.ledger.tables import ContactRow, ReferralCodeRow

Given = Callable[..., None]


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> Iterator[tuple[Any, Given]]:
    """A ledger (SQL or in memory) and a way to give it referrers with codes."""
    if request.param == "memory":
        memory = InMemoryLedger()

        def given_memory(contact_id: str, code: str, *, opted_out: bool = False) -> None:
            memory.links.owners[code] = contact_id
            memory.discounts.referral_codes[code] = contact_id
            memory.emails.contacts[contact_id] = Contact(
                contact_id, None, contact_id, None, ReferrerType.CUSTOMER, opted_out
            )
            if opted_out:
                memory.links.opted_out.add(contact_id)

        yield memory, given_memory
        return
    engine = make_engine(str(request.getfixturevalue(f"{request.param}_url")))
    ledger = SqlLedger(engine)

    def given_sql(contact_id: str, code: str, *, opted_out: bool = False) -> None:
        when = datetime(2026, 1, 1, tzinfo=UTC)
        with engine.begin() as conn:
            conn.execute(
                insert(ContactRow),
                {
                    "contact_id": contact_id,
                    "name": contact_id,
                    "referrer_type": "customer",
                    "opted_out": opted_out,
                    "updated_at": when,
                },
            )
            conn.execute(
                insert(ReferralCodeRow),
                {"code": code, "contact_id": contact_id, "created_at": when},
            )

    yield ledger, given_sql
    engine.dispose()


def _click(click_id: str, code: str, at: datetime) -> LinkClick:
    return LinkClick(click_id, code, "C1", at, "0" * 64, VisitorKind.PERSON)


def test_a_code_leads_to_its_owner_only_while_the_owner_is_in_the_program(
    backend: tuple[Any, Given],
) -> None:
    ledger, given = backend
    given("C1", "LIVECODE")
    given("C2", "GONECODE", opted_out=True)
    assert ledger.links.live_referrer("LIVECODE") == "C1"
    assert ledger.links.live_referrer("GONECODE") is None
    assert ledger.links.live_referrer("NOSUCHCODE") is None


def test_a_batch_of_clicks_written_twice_is_stored_once(
    backend: tuple[Any, Given], now: datetime
) -> None:
    ledger, given = backend
    given("C1", "LIVECODE")
    first = [_click(f"k{i}", "LIVECODE", now + timedelta(seconds=i)) for i in range(3)]
    assert ledger.links.record_link_clicks(first, now) == 3
    assert ledger.links.record_link_clicks([*first, _click("k3", "LIVECODE", now)], now) == 1


def test_the_coupon_key_is_stored_once_and_each_code_is_queued_once_until_settled(
    backend: tuple[Any, Given], now: datetime
) -> None:
    ledger, given = backend
    given("C1", "CODEONE")
    given("C2", "CODETWO")
    rail = DiscountRail.STRIPE
    coupon = CouponInstruction(
        coupon_id="friend-10",
        name="Friend",
        percent_off=Decimal("10"),
        amount_off=None,
        duration="once",
        duration_in_months=None,
        rail=rail,
        idempotency_key=CouponInstruction.key_for("friend-10", rail),
    )
    first = ledger.discounts.prepare_coupon(coupon, now)
    again = ledger.discounts.prepare_coupon(coupon, now + timedelta(hours=1))
    assert (first.status, again.status) == ("pending", "pending")
    assert again.instruction.idempotency_key == "program:friend-10:coupon"
    assert again.instruction.key_created_at == now
    ledger.discounts.record_coupon_result(
        coupon, DiscountResult("friend-10", DiscountOutcome.SUCCEEDED, "co_1"), now
    )
    assert ledger.discounts.prepare_coupon(coupon, now).provider_ref == "co_1"

    assert ledger.discounts.queue_promotion_codes("friend-10", rail, now) == 2
    assert ledger.discounts.queue_promotion_codes("friend-10", rail, now) == 0
    pending = ledger.discounts.pending_promotion_codes(rail, "", 10)
    assert [(p.code, p.idempotency_key) for p in pending] == [
        ("CODEONE", "code:CODEONE:promotion_code"),
        ("CODETWO", "code:CODETWO:promotion_code"),
    ]
    assert [p.code for p in ledger.discounts.pending_promotion_codes(rail, "CODEONE", 10)] == [
        "CODETWO"
    ]
    ledger.discounts.record_promotion_code_results(
        rail,
        [
            DiscountResult("CODEONE", DiscountOutcome.SUCCEEDED, "promo_1"),
            DiscountResult("CODETWO", DiscountOutcome.RETRYABLE, error="timeout"),
        ],
        now,
    )
    assert ledger.discounts.referee_discounts(rail) == {"pending": 1, "succeeded": 1, "failed": 0}
    assert [p.code for p in ledger.discounts.pending_promotion_codes(rail, "", 10)] == ["CODETWO"]


def _notice(notification_id: str, contact_id: str) -> dict[str, Any]:
    return {
        "notification_id": notification_id,
        "contact_id": contact_id,
        "kind": "reward_earned",
        "data": {"amount": "50.00 EUR"},
    }


def test_a_notification_is_claimed_once_settled_once_and_retried_only_when_retryable(
    backend: tuple[Any, Given], now: datetime
) -> None:
    ledger, given = backend
    given("C1", "CODEONE")
    given("C2", "CODETWO")
    emails = ledger.emails
    assert emails.queue_notifications([_notice("n1", "C1"), _notice("n2", "C2")], now) == 2
    assert emails.queue_notifications([_notice("n1", "C1")], now) == 0
    assert emails.queued_emails("notification") == 2
    queued = emails.notifications_to_send("", 10)
    assert [(n, kind, who.contact_id, data) for n, kind, who, data in queued] == [
        ("n1", "reward_earned", "C1", {"amount": "50.00 EUR"}),
        ("n2", "reward_earned", "C2", {"amount": "50.00 EUR"}),
    ]
    assert [n for n, *_ in emails.notifications_to_send("n1", 10)] == ["n2"]

    assert sorted(emails.mark_sending("notification", ["n1", "n2"], now)) == ["n1", "n2"]
    assert emails.mark_sending("notification", ["n1", "n2"], now) == []
    emails.record_email_results(
        "notification",
        [
            EmailResult("n1", EmailOutcome.ACCEPTED, provider_ref="sg-1"),
            EmailResult("n2", EmailOutcome.RETRYABLE, error="429"),
        ],
        now,
    )
    assert emails.queued_emails("notification") == 1
    assert [n for n, *_ in emails.notifications_to_send("", 10)] == ["n2"]

    # A sender that claimed n2 and died: after the stale time it is unknown, never resent.
    assert emails.mark_sending("notification", ["n2"], now) == ["n2"]
    assert emails.expire_sending("notification", claimed_before=now) == 0
    assert emails.expire_sending("notification", claimed_before=now + timedelta(hours=1)) == 1
    assert emails.mark_sending("notification", ["n2"], now + timedelta(hours=2)) == []
    assert emails.queued_emails("notification") == 0


def test_email_events_are_applied_once_and_suppress_the_contact_of_their_message(
    backend: tuple[Any, Given], now: datetime
) -> None:
    ledger, given = backend
    given("C1", "CODEONE")
    given("C2", "CODETWO")
    emails = ledger.emails
    emails.queue_notifications([_notice("n1", "C1"), _notice("n2", "C2")], now)
    events = [
        EmailEvent("sg-1", EmailEventType.DELIVERED, "n1", now),
        EmailEvent("sg-2", EmailEventType.UNSUBSCRIBE, "n1", now + timedelta(minutes=1)),
        EmailEvent("sg-3", EmailEventType.BOUNCE, "n2", now, "blocked: 554 on a list"),
        EmailEvent("sg-4", EmailEventType.SPAMREPORT, "not-ours", now),
    ]
    applied = emails.apply_email_events(events, now)
    assert applied.counts() == {
        "received": 4,
        "new": 4,
        "duplicates": 0,
        "unknown_messages": 1,
        "rejected": 0,
        "suppressed": 1,
    }
    assert applied.suppressed == ("C1",)
    again = emails.apply_email_events([*events, events[0]], now + timedelta(hours=1))
    assert (again.received, again.new, again.duplicates, again.suppressed) == (4, 0, 4, ())
    assert emails.suppressed(["C1", "C2", "C3"]) == {"C1"}
    assert emails.suppress(["C2", "C1"], "asked by phone", now) == 1
    assert emails.suppressed(["C1", "C2"]) == {"C1", "C2"}


def test_the_local_outbox_keeps_each_message_once_oldest_first(
    backend: tuple[Any, Given], now: datetime
) -> None:
    ledger, _ = backend

    def message(message_id: str, at: datetime) -> dict[str, Any]:
        return {
            "message_id": message_id,
            "kind": "ask",
            "to_name": "Ada",
            "to_email": "ada@example.com",
            "subject": f"subject {message_id}",
            "body": "text",
            "created_at": at,
        }

    later = now + timedelta(minutes=1)
    assert ledger.emails.write_outbox([message("m2", later), message("m1", now)]) == 2
    assert ledger.emails.write_outbox([message("m1", later)]) == 0
    assert [r["message_id"] for r in ledger.emails.outbox(limit=10)] == ["m1", "m2"]
    assert ledger.emails.outbox(limit=1) == [
        {
            "message_id": "m1",
            "kind": "ask",
            "to_name": "Ada",
            "subject": "subject m1",
            "body": "text",
        }
    ]
