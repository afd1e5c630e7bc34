"""Detractors reach a person: each new follow-up handed on once, never lost, never twice."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from domain.detractors import CrmTaskResult, DetractorFollowUp, TaskOutcome
from domain.models import EmailMessage, EmailResult, EventType, SourceEvent, derived_id
from domain.program import Program
from integrations.email.fake import RecordingEmailSender
from integrations.ledger.sql import SqlLedger
from tasks.detractors import OWNER_SETTING, STALE_CLAIM, Handoffs, hand_on_detractors
from tests.conftest import NOW, contact, people_batch
from tests.moments_seed import record_detection

OWNER = "owner@company.example"


def given_detractors(ledger: SqlLedger, *contact_ids: str, score: int = 3) -> None:
    """Contacts who answered NPS ``score`` yesterday, listed as follow-ups."""
    ledger.sources.record_batch(people_batch(*(contact(c, f"A{c}") for c in contact_ids)), NOW)
    events = [
        SourceEvent(
            "test",
            f"nps-{c}",
            EventType.NPS_RESPONSE,
            NOW - timedelta(days=1),
            account_id=f"A{c}",
            contact_id=c,
            score=score,
        )
        for c in contact_ids
    ]
    record_detection(ledger.engine, [], [], events, NOW)


def message_id(contact_id: str) -> str:
    return derived_id("detractor-handoff", f"test:nps-{contact_id}")


class RecordingTasks:
    """A CRM that records the follow-ups it got; outcomes scripted per contact."""

    name = "recording-crm"

    def __init__(self, outcomes: dict[str, TaskOutcome] | None = None) -> None:
        self.created: list[DetractorFollowUp] = []
        self.outcomes = dict(outcomes or {})

    def create(self, follow_ups: Sequence[DetractorFollowUp]) -> list[CrmTaskResult]:
        results = []
        for f in follow_ups:
            outcome = self.outcomes.pop(f.contact_id or "", TaskOutcome.CREATED)
            if outcome is TaskOutcome.CREATED:
                self.created.append(f)
            results.append(
                CrmTaskResult(f.source_event, outcome, task_id=f"task-{len(self.created)}")
            )
        return results


class BrokenSender:
    name = "broken"

    def send(self, messages: Sequence[EmailMessage]) -> list[EmailResult]:
        raise ConnectionError("smtp.example refused owner@company.example")


@pytest.fixture
def sender() -> RecordingEmailSender:
    return RecordingEmailSender()


def hand_on(
    ledger: SqlLedger,
    sender: object,
    program: Program,
    *,
    crm: RecordingTasks | None = None,
    owner: str | None = OWNER,
    at: object = NOW,
) -> Handoffs:
    return hand_on_detractors.fn(ledger, sender, crm, owner, program, at)  # type: ignore[arg-type]


def test_each_new_detractor_is_handed_on_once_even_when_the_task_runs_twice(
    ledger: SqlLedger, program: Program, sender: RecordingEmailSender
) -> None:
    given_detractors(ledger, "C1", "C2")

    first = hand_on(ledger, sender, program)
    second = hand_on(ledger, sender, program)

    assert (first.handed_on, second.handed_on) == (2, 0)
    assert sorted(m.message_id for m in sender.sent) == sorted(map(message_id, ["C1", "C2"]))
    assert {m.to_email for m in sender.sent} == {OWNER}
    assert ledger.summary()["detractors_handed_on"] == {"accepted": 2}


def test_a_detractor_found_after_a_hand_off_is_handed_on_by_the_next_run(
    ledger: SqlLedger, program: Program, sender: RecordingEmailSender
) -> None:
    given_detractors(ledger, "C1")
    hand_on(ledger, sender, program)
    given_detractors(ledger, "C2")

    again = hand_on(ledger, sender, program)

    assert again.handed_on == 1
    assert sender.sent_ids == [message_id("C1"), message_id("C2")]


def test_the_owner_email_names_the_contact_score_and_account_but_no_address(
    sqlite_ledger: SqlLedger, program: Program, sender: RecordingEmailSender
) -> None:
    given_detractors(sqlite_ledger, "C1", score=2)

    hand_on(sqlite_ledger, sender, program)

    (message,) = sender.sent
    shown = message.subject + message.data["text"]
    assert "Person C1 (C1)" in shown
    assert "Account AC1 (AC1)" in shown
    assert "Score: 2 out of 10" in shown
    assert "@" not in shown
    assert all("@" not in v for k, v in message.data.items())


def test_without_an_owner_address_detractors_wait_counted_with_a_one_line_warning(
    sqlite_ledger: SqlLedger,
    program: Program,
    sender: RecordingEmailSender,
    caplog: pytest.LogCaptureFixture,
) -> None:
    given_detractors(sqlite_ledger, "C1", "C2")

    with caplog.at_level(logging.WARNING):
        waiting = hand_on(sqlite_ledger, sender, program, owner=None)
    later = hand_on(sqlite_ledger, sender, program)

    assert waiting == Handoffs(not_handed_on=2)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [f"2 detractor follow-ups not handed on: {OWNER_SETTING} is not set"]
    assert later.handed_on == 2
    assert len(sender.sent) == 2


def test_a_deferred_email_goes_out_next_run_and_a_refused_one_is_not_retried(
    ledger: SqlLedger, program: Program, sender: RecordingEmailSender
) -> None:
    given_detractors(ledger, "C1", "C2", "C3")
    sender.defer([message_id("C1")])
    sender.fail([message_id("C2")], error="mailbox does not exist")

    first = hand_on(ledger, sender, program)
    second = hand_on(ledger, sender, program)
    third = hand_on(ledger, sender, program)

    assert (first.handed_on, first.email_retry_later, first.email_failed) == (1, 1, 1)
    assert (second.handed_on, second.email_retry_later, second.email_failed) == (1, 0, 0)
    assert third == Handoffs()
    assert sorted(sender.sent_ids) == sorted([message_id("C1"), message_id("C3")])
    assert ledger.summary()["detractors_handed_on"] == {"accepted": 2, "failed": 1}


def test_a_hand_off_a_dead_run_left_sending_is_marked_unknown_and_never_sent(
    ledger: SqlLedger, program: Program, sender: RecordingEmailSender
) -> None:
    given_detractors(ledger, "C1")
    claimed_at = NOW - STALE_CLAIM - timedelta(minutes=1)
    ledger.handoffs.open_handoffs(claimed_at, with_crm=False)
    assert ledger.handoffs.claim_handoffs("email", ["test:nps-C1"], claimed_at) == ["test:nps-C1"]

    result = hand_on(ledger, sender, program)

    assert (result.handed_on, result.email_unknown) == (0, 1)
    assert sender.sent == []
    assert ledger.summary()["detractors_handed_on"] == {"unknown": 1}


def test_a_failing_email_backend_neither_stops_the_crm_tasks_nor_leaks_its_message(
    sqlite_ledger: SqlLedger, program: Program, caplog: pytest.LogCaptureFixture
) -> None:
    given_detractors(sqlite_ledger, "C1", "C2")
    crm = RecordingTasks()

    with caplog.at_level(logging.WARNING):
        result = hand_on(sqlite_ledger, BrokenSender(), program, crm=crm)

    assert (result.handed_on, result.email_unknown, result.crm_tasks) == (0, 2, 2)
    assert "@" not in caplog.text
    assert "ConnectionError" in caplog.text


def test_crm_tasks_are_created_once_and_a_retryable_one_waits_for_the_next_run(
    ledger: SqlLedger, program: Program, sender: RecordingEmailSender
) -> None:
    given_detractors(ledger, "C1", "C2", "C3")
    crm = RecordingTasks({"C2": TaskOutcome.RETRYABLE, "C3": TaskOutcome.FAILED})

    first = hand_on(ledger, sender, program, crm=crm)
    second = hand_on(ledger, sender, program, crm=crm)
    third = hand_on(ledger, sender, program, crm=crm)

    assert (first.crm_tasks, first.crm_retry_later, first.crm_failed) == (1, 1, 1)
    assert (second.crm_tasks, second.crm_retry_later) == (1, 0)
    assert third == Handoffs()
    assert [f.contact_id for f in crm.created] == ["C1", "C2"]
    assert ledger.handoffs.handoff_counts()["crm"] == {"created": 2, "failed": 1}
    # The owner's emails went once each, whatever the CRM said.
    assert len(sender.sent) == 3


def test_hand_offs_written_without_a_crm_get_no_task_once_a_crm_is_configured(
    sqlite_ledger: SqlLedger, program: Program, sender: RecordingEmailSender
) -> None:
    given_detractors(sqlite_ledger, "C1")
    hand_on(sqlite_ledger, sender, program)
    crm = RecordingTasks()

    later = hand_on(sqlite_ledger, sender, program, crm=crm)

    assert later == Handoffs()
    assert crm.created == []


def test_the_ledger_keeps_a_hand_off_once_sent(
    ledger: SqlLedger, program: Program, sender: RecordingEmailSender
) -> None:
    given_detractors(ledger, "C1")
    hand_on(ledger, sender, program, crm=RecordingTasks())
    refused = [
        "DELETE FROM detractor_handoffs",
        "UPDATE detractor_handoffs SET email_status = 'queued'",
        "UPDATE detractor_handoffs SET crm_status = 'queued'",
        "UPDATE detractor_handoffs SET source_event = 'test:other'",
    ]

    for sql in refused:
        with (
            pytest.raises(IntegrityError, match=r"append-only|hand-off is kept"),
            ledger.engine.begin() as conn,
        ):
            conn.execute(text(sql))

    assert ledger.handoffs.handoff_counts() == {"email": {"accepted": 1}, "crm": {"created": 1}}
