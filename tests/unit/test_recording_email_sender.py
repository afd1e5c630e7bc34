"""The in-memory email sender the flow and task tests use."""

from __future__ import annotations

from domain.models import EmailMessage, EmailOutcome
from domain.ports import EmailSender
from integrations.email.fake import RecordingEmailSender


def message(n: int) -> EmailMessage:
    return EmailMessage(
        message_id=f"msg-{n}",
        kind="ask",
        to_email=f"person{n}@customer.example",
        to_name=f"Person {n}",
        subject="Thanks",
        template="ask_deal_won",
        data={"text": "hello"},
    )


def test_it_is_an_email_sender() -> None:
    assert isinstance(RecordingEmailSender(), EmailSender)


def test_it_records_every_message_and_accepts_each_in_input_order() -> None:
    sender = RecordingEmailSender()
    messages = [message(1), message(2), message(3)]

    results = sender.send(messages)

    assert sender.sent == messages
    assert [r.message_id for r in results] == ["msg-1", "msg-2", "msg-3"]
    assert {r.outcome for r in results} == {EmailOutcome.ACCEPTED}
    assert len({r.provider_ref for r in results}) == 3


def test_a_message_id_sent_again_is_accepted_with_its_first_reference_and_not_recorded() -> None:
    sender = RecordingEmailSender()
    (first,) = sender.send([message(1)])

    again = sender.send([message(1), message(1)])

    assert sender.sent_ids == ["msg-1"]
    assert again == [first, first]
    assert sender.calls == 2


def test_a_message_scripted_to_fail_is_failed_every_time_and_never_recorded() -> None:
    sender = RecordingEmailSender()
    sender.fail(["msg-2"], error="address refused")

    first = sender.send([message(1), message(2)])
    second = sender.send([message(2)])

    assert [r.outcome for r in first] == [EmailOutcome.ACCEPTED, EmailOutcome.FAILED]
    assert first[1].error == "address refused"
    assert second[0].outcome is EmailOutcome.FAILED
    assert sender.sent_ids == ["msg-1"]


def test_a_deferred_message_is_retryable_once_and_then_sent() -> None:
    sender = RecordingEmailSender()
    sender.defer(["msg-1"])

    (first,) = sender.send([message(1)])
    (second,) = sender.send([message(1)])

    assert first.outcome is EmailOutcome.RETRYABLE
    assert first.error == "try again later"
    assert second.outcome is EmailOutcome.ACCEPTED
    assert sender.sent_ids == ["msg-1"]


def test_a_failure_can_be_scripted_for_a_number_of_sends() -> None:
    sender = RecordingEmailSender()
    sender.fail(["msg-1"], times=2)

    outcomes = [sender.send([message(1)])[0].outcome for _ in range(3)]

    assert outcomes == [EmailOutcome.FAILED, EmailOutcome.FAILED, EmailOutcome.ACCEPTED]


def test_an_already_sent_message_stays_accepted_even_if_scripted_to_fail_later() -> None:
    sender = RecordingEmailSender()
    sender.send([message(1)])
    sender.fail(["msg-1"])

    (result,) = sender.send([message(1)])

    assert result.outcome is EmailOutcome.ACCEPTED
    assert sender.sent_ids == ["msg-1"]
