"""The ledger's webhook inbox (WebhookLedger), on SQLite and (when configured) Postgres.

SendGrid events are applied once per ``sg_event_id`` and suppress the contacts they
call for; Stripe events are kept once per event id and read back oldest first,
whatever order they arrived in.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from domain.errors import InputRejected
from domain.models import AskDecision, EmailEvent, EmailEventType, Rejected, derived_id
from domain.suppression import suppression_reason
from integrations.ledger.sql import SqlLedger
from integrations.ledger.tables import (
    EmailEventRow,
    ProviderEventRow,
    QuarantineRow,
    StripeEventRow,
    SuppressionRow,
)
from tasks.use_cases.asks import record_ask_decisions
from tests.integration.test_ledger_flow import given_moments

T = EmailEventType


class _Ledger(SqlLedger):
    """The ledger, as the webhook receiver is given it."""


@pytest.fixture
def inbox(ledger: SqlLedger) -> _Ledger:
    return _Ledger(ledger.engine)


# -- helpers -------------------------------------------------------------------------------


def given_asks(ledger: SqlLedger, now: datetime, contacts: Sequence[str]) -> dict[str, str]:
    """One queued ask per contact; contact id -> ask id (the email's message id)."""
    moments = given_moments(ledger, now, contacts)
    asks = record_ask_decisions(
        ledger, [AskDecision(m) for m in moments], {c: f"CODE-{c}" for c in contacts}, now, now
    )
    return {a.contact_id: a.ask_id for a in asks}


def email_event(
    event_id: str,
    type_: EmailEventType,
    message_id: str,
    at: datetime,
    reason: str | None = None,
) -> EmailEvent:
    return EmailEvent(event_id, type_, message_id, at, reason)


def rows(ledger: SqlLedger, table: Any) -> list[dict[str, Any]]:
    with ledger.engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(table.__table__)).mappings()]


def count(ledger: SqlLedger, table: Any, *where: Any) -> int:
    with ledger.engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count()).select_from(table.__table__).where(*where)
            ).scalar_one()
        )


def suppressions(ledger: SqlLedger) -> dict[str, str]:
    return {r["contact_id"]: r["reason"] for r in rows(ledger, SuppressionRow)}


def stripe_event(
    event_id: str, type_: str, created: int, object_id: str = "ch_1", **extra: Any
) -> dict[str, Any]:
    return {
        "id": event_id,
        "object": "event",
        "type": type_,
        "created": created,
        "livemode": False,
        "api_version": "2024-06-20",
        "data": {"object": {"id": object_id, "object": "charge", "amount": 1200}},
    } | extra


# -- SendGrid ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("type_", "reason", "suppresses"),
    [
        (T.BOUNCE, "bounce: 550 5.1.1 user unknown", "bounce"),
        (T.BOUNCE, "bounce", "bounce"),
        (T.BOUNCE, "blocked: 554 listed on a block list", None),
        (T.BOUNCE, None, None),
        (T.UNSUBSCRIBE, None, "unsubscribe"),
        (T.GROUP_UNSUBSCRIBE, "unsubscribe group 42", "group_unsubscribe"),
        (T.SPAMREPORT, None, "spamreport"),
        (T.DELIVERED, None, None),
        (T.CLICK, None, None),
        (T.OPEN, None, None),
        (T.DROPPED, "Bounced Address", "dropped: bounced address"),
        (T.DROPPED, "Unsubscribed Address", "dropped: unsubscribed address"),
        (T.DROPPED, "Spam Reporting Address", "dropped: spam reporting address"),
        (T.DROPPED, "Invalid", "dropped: invalid"),
        (T.DROPPED, "Invalid SMTPAPI header", None),
        (T.DROPPED, "Spam Content (if Spam Checker app is enabled)", None),
        (T.DROPPED, None, None),
        (T.DEFERRED, "421 try later", None),
    ],
)
def test_hard_bounces_unsubscribes_spam_reports_and_drops_for_the_address_suppress(
    type_: EmailEventType, reason: str | None, suppresses: str | None, now: datetime
) -> None:
    assert suppression_reason(email_event("e", type_, "m", now, reason)) == suppresses


def test_new_events_are_kept_with_their_contact_and_suppress_whom_they_should(
    inbox: _Ledger, now: datetime
) -> None:
    asks = given_asks(inbox, now, ["C1", "C2", "C3", "C4", "C5", "C6"])
    events = [
        email_event("sg-1", T.BOUNCE, asks["C1"], now, "bounce: 550 no such user"),
        email_event("sg-2", T.UNSUBSCRIBE, asks["C2"], now),
        email_event("sg-3", T.GROUP_UNSUBSCRIBE, asks["C3"], now, "unsubscribe group 7"),
        email_event("sg-4", T.SPAMREPORT, asks["C4"], now),
        email_event("sg-5", T.DELIVERED, asks["C5"], now),
        email_event("sg-6", T.CLICK, asks["C5"], now + timedelta(minutes=5)),
        email_event("sg-7", T.BOUNCE, asks["C6"], now, "blocked: 554 rejected"),
    ]

    applied = inbox.emails.apply_email_events(events, now)

    assert applied.counts() == {
        "received": 7,
        "new": 7,
        "duplicates": 0,
        "unknown_messages": 0,
        "rejected": 0,
        "suppressed": 4,
    }
    assert applied.suppressed == ("C1", "C2", "C3", "C4")
    assert suppressions(inbox) == {
        "C1": "bounce",
        "C2": "unsubscribe",
        "C3": "group_unsubscribe",
        "C4": "spamreport",
    }
    kept = {r["sg_event_id"]: r for r in rows(inbox, EmailEventRow)}
    assert {k: (r["type"], r["contact_id"]) for k, r in kept.items()} == {
        "sg-1": ("bounce", "C1"),
        "sg-2": ("unsubscribe", "C2"),
        "sg-3": ("group_unsubscribe", "C3"),
        "sg-4": ("spamreport", "C4"),
        "sg-5": ("delivered", "C5"),
        "sg-6": ("click", "C5"),
        "sg-7": ("bounce", "C6"),
    }
    assert kept["sg-6"]["occurred_at"] == now + timedelta(minutes=5)
    assert kept["sg-6"]["received_at"] == now
    assert kept["sg-7"]["reason"] == "blocked: 554 rejected"
    assert inbox.asks.histories(["C1", "C5"], now, [])["C1"].suppressed is True
    assert inbox.asks.histories(["C1", "C5"], now, [])["C5"].suppressed is False


def test_a_batch_applied_again_changes_nothing(inbox: _Ledger, now: datetime) -> None:
    asks = given_asks(inbox, now, ["C1", "C2"])
    events = [
        email_event("sg-1", T.BOUNCE, asks["C1"], now, "bounce: gone"),
        email_event("sg-2", T.DELIVERED, asks["C2"], now),
    ]
    inbox.emails.apply_email_events(events, now)

    again = inbox.emails.apply_email_events(list(reversed(events)), now + timedelta(hours=1))

    assert (again.new, again.duplicates, again.suppressed) == (0, 2, ())
    assert count(inbox, EmailEventRow) == 2
    assert count(inbox, ProviderEventRow, ProviderEventRow.provider == "sendgrid") == 2
    assert {r["received_at"] for r in rows(inbox, EmailEventRow)} == {now}
    assert suppressions(inbox) == {"C1": "bounce"}


def test_repeats_within_one_batch_count_once(inbox: _Ledger, now: datetime) -> None:
    asks = given_asks(inbox, now, ["C1"])
    bounce = email_event("sg-1", T.BOUNCE, asks["C1"], now, "bounce: gone")

    applied = inbox.emails.apply_email_events([bounce, bounce, bounce], now)

    assert (applied.received, applied.new, applied.duplicates) == (1, 1, 0)
    assert count(inbox, EmailEventRow) == 1


def test_the_same_batch_applied_concurrently_is_applied_once(inbox: _Ledger, now: datetime) -> None:
    asks = given_asks(inbox, now, ["C1", "C2", "C3"])
    events = [
        email_event(f"sg-{c}-{n}", T.UNSUBSCRIBE if n == 0 else T.CLICK, asks[c], now)
        for c in asks
        for n in range(3)
    ]

    with ThreadPoolExecutor(max_workers=5) as pool:
        results = list(pool.map(lambda _: inbox.emails.apply_email_events(events, now), range(5)))

    assert sum(r.new for r in results) == len(events)
    assert sorted(c for r in results for c in r.suppressed) == ["C1", "C2", "C3"]
    assert count(inbox, EmailEventRow) == len(events)


def test_events_for_unknown_messages_are_kept_but_suppress_nobody(
    inbox: _Ledger, now: datetime
) -> None:
    given_asks(inbox, now, ["C1"])

    applied = inbox.emails.apply_email_events(
        [
            email_event("sg-1", T.BOUNCE, "not-one-of-ours", now, "bounce: gone"),
            email_event("sg-2", T.SPAMREPORT, "neither-this", now),
        ],
        now,
    )

    assert (applied.new, applied.unknown_messages, applied.suppressed) == (2, 2, ())
    assert {r["contact_id"] for r in rows(inbox, EmailEventRow)} == {None}
    assert suppressions(inbox) == {}


def test_a_notification_message_id_leads_to_its_contact(inbox: _Ledger, now: datetime) -> None:
    notification_id = derived_id("notice", "R1", "earned")
    inbox.emails.queue_notifications(
        [
            {
                "notification_id": notification_id,
                "contact_id": "C9",
                "kind": "reward_earned",
                "reward_id": None,
                "data": {},
            }
        ],
        now,
    )

    applied = inbox.emails.apply_email_events(
        [email_event("sg-1", T.UNSUBSCRIBE, notification_id, now)], now
    )

    assert applied.suppressed == ("C9",)
    assert rows(inbox, EmailEventRow)[0]["contact_id"] == "C9"


def test_a_contact_already_suppressed_keeps_its_first_reason(inbox: _Ledger, now: datetime) -> None:
    asks = given_asks(inbox, now, ["C1"])
    inbox.emails.suppress(["C1"], "asked by phone", now)

    applied = inbox.emails.apply_email_events(
        [
            email_event("sg-2", T.SPAMREPORT, asks["C1"], now + timedelta(minutes=1)),
            email_event("sg-1", T.UNSUBSCRIBE, asks["C1"], now),
        ],
        now,
    )

    assert (applied.new, applied.suppressed) == (2, ())
    assert suppressions(inbox) == {"C1": "asked by phone"}


def test_the_earliest_suppressing_event_gives_the_reason(inbox: _Ledger, now: datetime) -> None:
    asks = given_asks(inbox, now, ["C1"])

    inbox.emails.apply_email_events(
        [
            email_event("sg-a", T.SPAMREPORT, asks["C1"], now + timedelta(minutes=1)),
            email_event("sg-b", T.UNSUBSCRIBE, asks["C1"], now),
        ],
        now,
    )

    assert suppressions(inbox) == {"C1": "unsubscribe"}


def test_an_event_already_recorded_as_a_provider_event_is_kept_but_not_applied_again(
    inbox: _Ledger, now: datetime
) -> None:
    asks = given_asks(inbox, now, ["C1"])
    inbox.provider_events.record_provider_event("sendgrid", "sg-1", "unsubscribe", now)

    applied = inbox.emails.apply_email_events(
        [email_event("sg-1", T.UNSUBSCRIBE, asks["C1"], now)], now
    )

    assert (applied.new, applied.duplicates, applied.suppressed) == (0, 1, ())
    assert count(inbox, EmailEventRow) == 1


def test_addresses_in_reasons_are_redacted_before_they_are_stored(
    inbox: _Ledger, now: datetime
) -> None:
    asks = given_asks(inbox, now, ["C1"])

    inbox.emails.apply_email_events(
        [email_event("sg-1", T.BOUNCE, asks["C1"], now, "bounce: 550 <c1@a-c1.example> unknown")],
        now,
    )

    assert rows(inbox, EmailEventRow)[0]["reason"] == "bounce: 550 <<address>> unknown"


def test_refused_items_and_ids_too_long_go_to_the_quarantine(inbox: _Ledger, now: datetime) -> None:
    asks = given_asks(inbox, now, ["C1"])
    parser_refusal = Rejected("sendgrid", "sendgrid-webhook:sg-x", "event", "unknown event type")

    applied = inbox.emails.apply_email_events(
        [
            email_event("x" * 129, T.UNSUBSCRIBE, asks["C1"], now),
            email_event("sg-2", T.UNSUBSCRIBE, "m" * 129, now),
            email_event("sg-3", T.DELIVERED, asks["C1"], now),
        ],
        now,
        rejected=[parser_refusal],
    )

    assert (applied.received, applied.new, applied.rejected) == (3, 1, 3)
    assert suppressions(inbox) == {}
    quarantined = rows(inbox, QuarantineRow)
    assert {(q["field"], q["stage"]) for q in quarantined} == {
        ("event", "webhook"),
        ("sg_event_id", "webhook"),
        ("message_id", "webhook"),
    }


def test_an_empty_batch_does_nothing(inbox: _Ledger, now: datetime) -> None:
    applied = inbox.emails.apply_email_events([], now)

    assert applied.counts() == dict.fromkeys(applied.counts(), 0)


# -- Stripe --------------------------------------------------------------------------------


def test_a_stripe_event_is_stored_once_as_received(inbox: _Ledger, now: datetime) -> None:
    created = int(now.timestamp()) - 30
    event = stripe_event("evt_1", "charge.refunded", created, object_id="ch_9")

    first = inbox.provider_events.store_stripe_event(event, now)
    again = inbox.provider_events.store_stripe_event(event, now + timedelta(minutes=1))

    assert (first, again) == (True, False)
    (row,) = rows(inbox, StripeEventRow)
    assert row["event_id"] == "evt_1"
    assert row["type"] == "charge.refunded"
    assert row["created_at"] == now - timedelta(seconds=30)
    assert row["livemode"] is False
    assert row["object_id"] == "ch_9"
    assert row["payload"] == event
    assert row["received_at"] == now
    assert row["processed_at"] is None
    assert count(inbox, ProviderEventRow, ProviderEventRow.provider == "stripe") == 1


def test_stripe_events_come_back_oldest_first_whatever_order_they_arrived_in(
    inbox: _Ledger, now: datetime
) -> None:
    t0 = int(now.timestamp()) - 600
    paid = stripe_event("evt_paid", "charge.succeeded", t0)
    refunded = stripe_event("evt_refund", "charge.refunded", t0 + 60)
    disputed = stripe_event("evt_dispute", "charge.dispute.created", t0 + 120)

    for event in (disputed, refunded, paid, refunded):
        inbox.provider_events.store_stripe_event(event, now)

    everything = inbox.provider_events.unprocessed_stripe_events(None, 10)
    assert [e.event_id for e in everything] == ["evt_paid", "evt_refund", "evt_dispute"]
    assert everything[1].payload == refunded
    assert everything[1].object_id == "ch_1"
    assert [
        e.event_id
        for e in inbox.provider_events.unprocessed_stripe_events(
            ["charge.refunded", "charge.succeeded"], 10
        )
    ] == ["evt_paid", "evt_refund"]
    assert [e.event_id for e in inbox.provider_events.unprocessed_stripe_events(None, 1)] == [
        "evt_paid"
    ]
    assert inbox.provider_events.unprocessed_stripe_events([], 10) == []


def test_processed_stripe_events_leave_the_queue_once(inbox: _Ledger, now: datetime) -> None:
    t0 = int(now.timestamp())
    for n in range(3):
        inbox.provider_events.store_stripe_event(
            stripe_event(f"evt_{n}", "charge.refunded", t0 + n), now
        )

    marked = inbox.provider_events.mark_stripe_events_processed(
        ["evt_0", "evt_1", "evt_missing"], now
    )
    again = inbox.provider_events.mark_stripe_events_processed(
        ["evt_0", "evt_1"], now + timedelta(hours=1)
    )

    assert (marked, again) == (2, 0)
    assert [e.event_id for e in inbox.provider_events.unprocessed_stripe_events(None, 10)] == [
        "evt_2"
    ]
    processed = {r["event_id"]: r["processed_at"] for r in rows(inbox, StripeEventRow)}
    assert processed == {"evt_0": now, "evt_1": now, "evt_2": None}
    # Marking processed never lets the event in again.
    assert (
        inbox.provider_events.store_stripe_event(stripe_event("evt_0", "charge.refunded", t0), now)
        is False
    )
    assert inbox.provider_events.mark_stripe_events_processed([], now) == 0


def test_the_same_stripe_event_stored_concurrently_is_stored_once(
    inbox: _Ledger, now: datetime
) -> None:
    event = stripe_event("evt_race", "charge.refunded", int(now.timestamp()))

    with ThreadPoolExecutor(max_workers=5) as pool:
        results = list(
            pool.map(lambda _: inbox.provider_events.store_stripe_event(event, now), range(5))
        )

    assert sorted(results) == [False, False, False, False, True]
    assert count(inbox, StripeEventRow) == 1


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"id": None}, "id"),
        ({"id": "evt_" + "x" * 200}, "id"),
        ({"type": ""}, "type"),
        ({"type": "t" * 65}, "type"),
        ({"created": "yesterday"}, "created"),
        ({"created": True}, "created"),
        ({"created": 10**15}, "created"),
        ({"livemode": "false"}, "livemode"),
    ],
)
def test_a_stripe_event_missing_what_the_inbox_needs_is_refused_and_nothing_is_stored(
    inbox: _Ledger, now: datetime, change: dict[str, Any], field: str
) -> None:
    event = stripe_event("evt_1", "charge.refunded", int(now.timestamp())) | change

    with pytest.raises(InputRejected) as refused:
        inbox.provider_events.store_stripe_event(event, now)

    assert refused.value.field == field
    assert count(inbox, StripeEventRow) == 0
    assert count(inbox, ProviderEventRow) == 0


def test_a_stripe_event_without_an_object_id_is_kept_all_the_same(
    inbox: _Ledger, now: datetime
) -> None:
    event = stripe_event("evt_1", "balance.available", int(now.timestamp())) | {
        "data": {"object": {"object": "balance"}}
    }

    assert inbox.provider_events.store_stripe_event(event, now) is True
    assert inbox.provider_events.unprocessed_stripe_events(None, 1)[0].object_id is None
