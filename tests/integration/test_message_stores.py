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
    AskDecision,
    Contact,
    EmailEvent,
    EmailEventType,
    EmailOutcome,
    EmailResult,
    Moment,
    MomentType,
    ReferrerType,
    SkipReason,
)
from integrations.ledger.engine import make_engine
from integrations.ledger.memory import InMemoryLedger
from integrations.ledger.sql import SqlLedger
from integrations.ledger.tables import AccountRow, ContactRow, MomentRow, ReferralCodeRow
from tasks.use_cases.asks import record_ask_decisions

Given = Callable[..., None]
GivenMoment = Callable[[Moment], None]
SINCE = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> Iterator[tuple[Any, Given, GivenMoment]]:
    """A ledger (SQL or in memory), a way to give it referrers (with a code unless
    ``code`` is None, in an account with a domain when ``domain`` is given), and a way
    to give it moments waiting for a decision."""
    if request.param == "memory":
        memory = InMemoryLedger()

        def given_memory(
            contact_id: str,
            code: str | None,
            *,
            opted_out: bool = False,
            domain: str | None = None,
        ) -> None:
            account_id = f"A-{contact_id}" if domain else None
            person = Contact(
                contact_id, account_id, contact_id, None, ReferrerType.CUSTOMER, opted_out
            )
            memory.emails.contacts[contact_id] = person
            memory.asks.people[contact_id] = person
            if account_id and domain:
                memory.asks.domains[account_id] = domain
            if code is None:
                return
            memory.links.owners[code] = contact_id
            memory.discounts.referral_codes[code] = contact_id
            memory.asks.codes[contact_id] = code
            if opted_out:
                memory.links.opted_out.add(contact_id)

        def moment_memory(moment: Moment) -> None:
            memory.asks.moments[moment.moment_id] = (moment, "new")

        yield memory, given_memory, moment_memory
        return
    engine = make_engine(str(request.getfixturevalue(f"{request.param}_url")))
    ledger = SqlLedger(engine)

    def given_sql(
        contact_id: str,
        code: str | None,
        *,
        opted_out: bool = False,
        domain: str | None = None,
    ) -> None:
        account_id = f"A-{contact_id}" if domain else None
        with engine.begin() as conn:
            if account_id:
                conn.execute(
                    insert(AccountRow),
                    {
                        "account_id": account_id,
                        "name": account_id,
                        "domain": domain,
                        "updated_at": SINCE,
                    },
                )
            conn.execute(
                insert(ContactRow),
                {
                    "contact_id": contact_id,
                    "account_id": account_id,
                    "name": contact_id,
                    "referrer_type": "customer",
                    "opted_out": opted_out,
                    "updated_at": SINCE,
                },
            )
            if code is not None:
                conn.execute(
                    insert(ReferralCodeRow),
                    {"code": code, "contact_id": contact_id, "created_at": SINCE},
                )

    def moment_sql(moment: Moment) -> None:
        with engine.begin() as conn:
            conn.execute(
                insert(MomentRow),
                {
                    "moment_id": moment.moment_id,
                    "type": moment.type.value,
                    "contact_id": moment.contact_id,
                    "account_id": moment.account_id,
                    "occurred_at": moment.occurred_at,
                    "source_event": moment.source_event,
                    "detail": moment.detail,
                    "status": "new",
                },
            )

    yield ledger, given_sql, moment_sql
    engine.dispose()


def _click(click_id: str, code: str, at: datetime) -> LinkClick:
    return LinkClick(click_id, code, "C1", at, "0" * 64, VisitorKind.PERSON)


def test_a_code_leads_to_its_owner_only_while_the_owner_is_in_the_program(
    backend: tuple[Any, Given, GivenMoment],
) -> None:
    ledger, given, _ = backend
    given("C1", "LIVECODE")
    given("C2", "GONECODE", opted_out=True)
    assert ledger.links.live_referrer("LIVECODE") == "C1"
    assert ledger.links.live_referrer("GONECODE") is None
    assert ledger.links.live_referrer("NOSUCHCODE") is None


def test_a_batch_of_clicks_written_twice_is_stored_once(
    backend: tuple[Any, Given, GivenMoment], now: datetime
) -> None:
    ledger, given, _ = backend
    given("C1", "LIVECODE")
    first = [_click(f"k{i}", "LIVECODE", now + timedelta(seconds=i)) for i in range(3)]
    assert ledger.links.record_link_clicks(first, now) == 3
    assert ledger.links.record_link_clicks([*first, _click("k3", "LIVECODE", now)], now) == 1


def test_the_coupon_key_is_stored_once_and_each_code_is_queued_once_until_settled(
    backend: tuple[Any, Given, GivenMoment], now: datetime
) -> None:
    ledger, given, _ = backend
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
    backend: tuple[Any, Given, GivenMoment], now: datetime
) -> None:
    ledger, given, _ = backend
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
    backend: tuple[Any, Given, GivenMoment], now: datetime
) -> None:
    ledger, given, _ = backend
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
    backend: tuple[Any, Given, GivenMoment], now: datetime
) -> None:
    ledger, _, _ = backend

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


def _moment(moment_id: str, contact_id: str, at: datetime) -> Moment:
    return Moment(moment_id, MomentType.DEAL_WON, contact_id, None, at, moment_id, "won a deal")


def test_recording_decisions_mints_missing_codes_queues_asks_and_closes_the_moments_once(
    backend: tuple[Any, Given, GivenMoment], now: datetime
) -> None:
    ledger, given, given_moment = backend
    given("C1", "OLDCODE", domain="c1.example")
    given("C2", None)
    given("C3", None)
    first = _moment("src:1", "C1", now - timedelta(days=2))
    second = _moment("src:2", "C2", now - timedelta(days=1))
    skipped = _moment("src:3", "C3", now - timedelta(hours=1))
    later = _moment("src:4", "C3", now + timedelta(days=1))
    for moment in (first, second, skipped, later):
        given_moment(moment)
    assert ledger.asks.pending_moments(now, 10) == [first, second, skipped]
    assert ledger.asks.pending_moments(now, 2) == [first, second]
    decisions = [
        AskDecision(first),
        AskDecision(second),
        AskDecision(skipped, SkipReason.COOLDOWN),
    ]

    asks = record_ask_decisions(ledger, decisions, {"C1": "NEWCODE1", "C2": "NEWCODE2"}, now, now)

    # C1 kept the code it had; C2 got the one minted; C3 was skipped and has none.
    assert sorted((a.contact_id, a.referral_code, a.moment_id) for a in asks) == [
        ("C1", "OLDCODE", "src:1"),
        ("C2", "NEWCODE2", "src:2"),
    ]
    assert ledger.asks.codes_for(["C1", "C2", "C3"]) == {"C1": "OLDCODE", "C2": "NEWCODE2"}
    assert ledger.asks.pending_moments(now + timedelta(days=2), 10) == [later]
    assert ledger.asks.asked_contacts(now) == ["C1", "C2"]
    assert ledger.asks.asked_contacts(now - timedelta(seconds=1)) == []
    sendable = ledger.asks.asks_to_send("", 10)
    assert sorted((a.ask_id, c.contact_id, detail) for a, c, detail in sendable) == sorted(
        (a.ask_id, a.contact_id, "won a deal") for a in asks
    )
    assert record_ask_decisions(ledger, decisions, {}, now, now) == []
    assert set(ledger.asks.contacts(["C1", "C2", "C9"])) == {"C1", "C2"}
    assert ledger.asks.account_domains(["A-C1", "A-C2"]) == {"A-C1": "c1.example"}


def test_results_alike_and_results_of_their_own_are_each_recorded_on_their_message(
    backend: tuple[Any, Given, GivenMoment], now: datetime
) -> None:
    # A page settles most messages alike (one provider request, one ref) and a few
    # differently (refused locally, a ref each): every one ends as its own result said,
    # and a message listed twice keeps its first result.
    ledger, given, _ = backend
    given("C1", "CODEONE")
    emails = ledger.emails
    ids = [f"n{i:03d}" for i in range(40)]
    emails.queue_notifications([_notice(n, "C1") for n in ids], now)
    assert sorted(emails.mark_sending("notification", ids, now)) == ids
    results = [EmailResult(n, EmailOutcome.ACCEPTED, provider_ref="sg-shared") for n in ids[:30]]
    results += [EmailResult(n, EmailOutcome.ACCEPTED, provider_ref=f"own-{n}") for n in ids[30:35]]
    results += [EmailResult(n, EmailOutcome.FAILED, error="invalid address") for n in ids[35:38]]
    results += [EmailResult(n, EmailOutcome.RETRYABLE, error="503") for n in ids[38:]]
    results.append(EmailResult(ids[0], EmailOutcome.FAILED, error="listed twice"))

    emails.record_email_results("notification", results, now)

    assert [n for n, *_ in emails.notifications_to_send("", 100)] == ids[38:]
    if isinstance(ledger, SqlLedger):
        with ledger.engine.connect() as conn:
            rows = {
                n: (status, ref, error)
                for n, status, ref, error in conn.exec_driver_sql(
                    "SELECT notification_id, status, provider_ref, error FROM notifications"
                )
            }
        assert rows[ids[0]] == ("accepted", "sg-shared", None)
        assert {rows[n] for n in ids[:30]} == {("accepted", "sg-shared", None)}
        assert [rows[n] for n in ids[30:35]] == [("accepted", f"own-{n}", None) for n in ids[30:35]]
        assert {rows[n] for n in ids[35:38]} == {("failed", None, "invalid address")}
        assert {rows[n] for n in ids[38:]} == {("queued", None, "503")}
