"""Sending asks and notifications: once each, never to the suppressed, never lost."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import pytest

from domain.models import EmailMessage, EmailResult, derived_id
from domain.program import Program
from integrations.email.fake import RecordingEmailSender
from integrations.ledger.sql import SqlLedger
from tasks.emails import STALE_CLAIM, send_ask_emails, send_notifications
from tests.conftest import NOW, contact, people_batch
from tests.shards_seed import queue_asks


def _queue_asks(ledger: SqlLedger, program: Program, *contact_ids: str) -> None:
    queue_asks(ledger, program, contact_ids, NOW)


@pytest.fixture
def sender() -> RecordingEmailSender:
    return RecordingEmailSender()


def test_each_queued_ask_is_sent_once_even_when_sending_runs_twice(
    sqlite_ledger: SqlLedger, program: Program, sender: RecordingEmailSender
) -> None:
    _queue_asks(sqlite_ledger, program, "C1", "C2", "C3")

    first = send_ask_emails.fn(sqlite_ledger, sender, program, NOW)
    second = send_ask_emails.fn(sqlite_ledger, sender, program, NOW)

    assert (first.accepted, second.accepted) == (3, 0)
    assert sorted(m.to_name for m in sender.sent) == ["Person C1", "Person C2", "Person C3"]
    assert sqlite_ledger.metrics.summary()["asks"] == {"accepted": 3}


def test_a_contact_suppressed_after_the_ask_was_queued_is_not_asked(
    sqlite_ledger: SqlLedger, program: Program, sender: RecordingEmailSender
) -> None:
    _queue_asks(sqlite_ledger, program, "C1", "C2")
    sqlite_ledger.emails.suppress(["C2"], "unsubscribe", NOW)

    delivery = send_ask_emails.fn(sqlite_ledger, sender, program, NOW)

    assert (delivery.accepted, delivery.suppressed, delivery.failed) == (1, 1, 0)
    assert [m.to_name for m in sender.sent] == ["Person C1"]
    assert sqlite_ledger.metrics.summary()["asks"] == {"accepted": 1, "failed": 1}


def test_an_ask_the_provider_may_have_taken_before_a_crash_is_never_resent(
    sqlite_ledger: SqlLedger, program: Program, sender: RecordingEmailSender
) -> None:
    _queue_asks(sqlite_ledger, program, "C1")
    (ask, _, _) = sqlite_ledger.asks.asks_to_send("", 10)[0]
    sqlite_ledger.emails.mark_sending("ask", [ask.ask_id], NOW - STALE_CLAIM - timedelta(minutes=1))

    delivery = send_ask_emails.fn(sqlite_ledger, sender, program, NOW)

    assert delivery.unknown_after_crash == 1
    assert sender.sent == []
    assert sqlite_ledger.metrics.summary()["asks"] == {"unknown": 1}


class _DiesOnSecondRequest(RecordingEmailSender):
    """A sender whose process dies (an exception) on its second request, unsent."""

    def __init__(self) -> None:
        super().__init__()
        self.requests = 0

    def send(self, messages: Sequence[EmailMessage]) -> list[EmailResult]:
        self.requests += 1
        if self.requests == 2:
            raise RuntimeError("the worker died mid-request")
        return super().send(messages)


def test_a_page_sent_before_a_crash_is_recorded_and_the_claimed_page_is_never_resent(
    sqlite_ledger: SqlLedger, program: Program
) -> None:
    # A page's outcome is recorded with the next page's claim: a crash on the second
    # request must still leave the first page accepted, and the second page claimed
    # (it may have reached the provider) is not sent by any later run.
    _queue_asks(sqlite_ledger, program, "C1", "C2", "C3", "C4")
    dying = _DiesOnSecondRequest()

    with pytest.raises(RuntimeError):
        send_ask_emails.fn(sqlite_ledger, dying, program, NOW, batch_size=2)
    assert sqlite_ledger.metrics.summary()["asks"] == {"accepted": 2, "sending": 2}

    later = RecordingEmailSender()
    delivery = send_ask_emails.fn(sqlite_ledger, later, program, NOW + STALE_CLAIM * 2)

    assert (delivery.accepted, delivery.unknown_after_crash) == (0, 2)
    assert later.sent == []
    assert len(dying.sent) == 2
    assert sqlite_ledger.metrics.summary()["asks"] == {"accepted": 2, "unknown": 2}


def test_every_page_is_recorded_when_asks_span_many_requests(
    sqlite_ledger: SqlLedger, program: Program, sender: RecordingEmailSender
) -> None:
    _queue_asks(sqlite_ledger, program, "C1", "C2", "C3", "C4", "C5")
    (ask, _, _) = sqlite_ledger.asks.asks_to_send("", 10)[2]
    sender.defer([ask.ask_id], times=1)

    delivery = send_ask_emails.fn(sqlite_ledger, sender, program, NOW, batch_size=2)

    assert (delivery.accepted, delivery.retry_later) == (4, 1)
    assert sqlite_ledger.metrics.summary()["asks"] == {"accepted": 4, "queued": 1}
    assert len(set(sender.sent_ids)) == 4
    assert ask.ask_id not in sender.sent_ids


def test_a_retryable_failure_keeps_the_ask_for_the_next_run(
    sqlite_ledger: SqlLedger, program: Program, sender: RecordingEmailSender
) -> None:
    _queue_asks(sqlite_ledger, program, "C1")
    (ask, _, _) = sqlite_ledger.asks.asks_to_send("", 10)[0]
    sender.defer([ask.ask_id], times=1)

    first = send_ask_emails.fn(sqlite_ledger, sender, program, NOW)
    second = send_ask_emails.fn(sqlite_ledger, sender, program, NOW)

    assert (first.retry_later, second.accepted) == (1, 1)
    assert len(sender.sent) == 1


def test_notifications_reach_referrers_even_after_they_unsubscribed_from_asks(
    sqlite_ledger: SqlLedger, program: Program, sender: RecordingEmailSender
) -> None:
    sqlite_ledger.sources.record_batch(people_batch(contact("C1", "A1")), NOW)
    sqlite_ledger.emails.suppress(["C1"], "group_unsubscribe", NOW)
    sqlite_ledger.emails.queue_notifications(
        [
            {
                "notification_id": derived_id("notice", "r1", "paid"),
                "contact_id": "C1",
                "kind": "reward_paid",
                "reward_id": None,
                "data": {"amount": "200.00 EUR", "rail": "ledger_only"},
            }
        ],
        NOW,
    )

    delivery = send_notifications.fn(sqlite_ledger, sender, program, NOW)

    assert delivery.accepted == 1
    assert "200.00 EUR" in sender.sent[0].subject


def test_asks_and_notices_carry_the_referrers_tracked_link_and_show_the_code(
    sqlite_ledger: SqlLedger, program: Program, sender: RecordingEmailSender
) -> None:
    _queue_asks(sqlite_ledger, program, "C1")
    code = sqlite_ledger.asks.codes_for(["C1"])["C1"]
    sqlite_ledger.emails.queue_notifications(
        [
            {
                "notification_id": derived_id("notice", "r1", "paid"),
                "contact_id": "C1",
                "kind": "reward_paid",
                "reward_id": None,
                "data": {"amount": "200.00 EUR", "rail": "ledger_only"},
            }
        ],
        NOW,
    )

    send_ask_emails.fn(sqlite_ledger, sender, program, NOW)
    send_notifications.fn(sqlite_ledger, sender, program, NOW)

    link = f"https://example.com/r/{code}"
    ask, notice = sender.sent
    for message in (ask, notice):
        assert message.data["link"] == link
        assert link in message.data["text"]
        assert f"code: {code}" in message.data["text"] or f"code is {code}" in message.data["text"]


def test_a_notice_to_someone_without_a_code_has_no_link_line(
    sqlite_ledger: SqlLedger, program: Program, sender: RecordingEmailSender
) -> None:
    sqlite_ledger.sources.record_batch(people_batch(contact("C1", "A1")), NOW)
    sqlite_ledger.emails.queue_notifications(
        [
            {
                "notification_id": derived_id("notice", "r1", "paid"),
                "contact_id": "C1",
                "kind": "reward_paid",
                "reward_id": None,
                "data": {"amount": "200.00 EUR", "rail": "ledger_only"},
            }
        ],
        NOW,
    )

    send_notifications.fn(sqlite_ledger, sender, program, NOW)

    assert "link" not in sender.sent[0].data
    assert "Your link" not in sender.sent[0].data["text"]
