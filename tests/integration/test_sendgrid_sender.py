"""The real SendGrid sender, over HTTP, against the local fake of the Mail Send API."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest
from python_http_client.exceptions import HTTPError
from sendgrid import SendGridAPIClient

from config.settings import load_settings
from domain.errors import ConfigError
from domain.models import EmailMessage, EmailOutcome
from integrations.email.sendgrid_sender import SendGridEmailSender
from tests.fakes.sendgrid_server import FakeSendGrid, Fault, validate_mail_send

NOW = 1_700_000_000.0
TEMPLATE_ID = "d-0123456789abcdef0123456789abcdef"
ASM_GROUP = 4242
SENDER = "referrals@company.test"

SenderFactory = Callable[..., SendGridEmailSender]


@pytest.fixture
def fake() -> Iterator[FakeSendGrid]:
    with FakeSendGrid(clock=lambda: NOW) as server:
        yield server


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def make_sender(fake: FakeSendGrid, sleeps: list[float]) -> SenderFactory:
    def make(**overrides: Any) -> SendGridEmailSender:
        kwargs: dict[str, Any] = {
            "from_email": SENDER,
            "from_name": "Referral program",
            "templates": {"ask_deal_won": TEMPLATE_ID},
            "asm_group_id": ASM_GROUP,
            "api_host": fake.url,
            "sleep": sleeps.append,
            "clock": lambda: NOW,
            "timeout": 5.0,
        }
        kwargs.update(overrides)
        api_key = kwargs.pop("api_key", fake.api_key)
        return SendGridEmailSender(api_key, **kwargs)

    return make


def asks(count: int, *, template: str = "ask_deal_won", start: int = 0) -> list[EmailMessage]:
    return [
        EmailMessage(
            message_id=f"msg-{i:06d}",
            kind="ask",
            to_email=f"person{i}@customer.example",
            to_name=f"Person Number{i}",
            subject=f"A thank-you, Person {i}",
            template=template,
            data={
                "first_name": "Person",
                "referral_code": f"CODE{i:06d}",
                "text": f"Hello Person {i}, share CODE{i:06d}.",
                "html": f"<p>Hello Person {i}, share <b>CODE{i:06d}</b>.</p>",
            },
        )
        for i in range(start, start + count)
    ]


def without_recipients(body: dict[str, Any]) -> dict[str, Any]:
    copy: dict[str, Any] = json.loads(json.dumps(body))
    for p in copy["personalizations"]:
        p.pop("to")
    return copy


# -- batching and the request body ---------------------------------------------------


def test_2500_messages_go_out_in_exactly_three_requests_of_at_most_1000(
    fake: FakeSendGrid, make_sender: SenderFactory
) -> None:
    messages = asks(2500)

    results = make_sender().send(messages)

    sizes = [len(r.body["personalizations"]) for r in fake.requests]
    assert sizes == [1000, 1000, 500]
    assert [r.message_id for r in results] == [m.message_id for m in messages]
    assert {r.outcome for r in results} == {EmailOutcome.ACCEPTED}
    assert sorted(d.to_email for d in fake.delivered) == sorted(m.to_email for m in messages)


def test_each_message_is_accepted_with_the_x_message_id_of_its_request(
    fake: FakeSendGrid, make_sender: SenderFactory
) -> None:
    results = make_sender().send(asks(1500))

    by_request = {
        p["custom_args"]["message_id"]: request.message_id
        for request in fake.requests
        for p in request.body["personalizations"]
    }
    assert {r.message_id: r.provider_ref for r in results} == by_request
    assert len(set(by_request.values())) == 2


def test_custom_args_carry_only_our_message_id(
    fake: FakeSendGrid, make_sender: SenderFactory
) -> None:
    messages = asks(30)

    make_sender().send(messages)

    expected = {m.to_email: {"message_id": m.message_id} for m in messages}
    assert {d.to_email: d.custom_args for d in fake.delivered} == expected


def test_no_recipient_address_or_name_appears_anywhere_but_to(
    fake: FakeSendGrid, make_sender: SenderFactory
) -> None:
    messages = asks(20) + asks(20, template="notice_reward", start=20)

    make_sender().send(messages)

    assert len(fake.requests) == 2
    for request in fake.requests:
        rest = json.dumps(without_recipients(request.body))
        assert "@customer.example" not in rest
        for p in request.body["personalizations"]:
            assert "Number" not in json.dumps(p["custom_args"])


def test_every_request_carries_the_sender_and_the_unsubscribe_group(
    fake: FakeSendGrid, make_sender: SenderFactory
) -> None:
    make_sender().send(asks(5) + asks(5, template="notice_reward", start=5))

    for request in fake.requests:
        assert request.body["asm"] == {"group_id": ASM_GROUP}
        assert request.body["from"] == {"email": SENDER, "name": "Referral program"}
        assert request.headers["Authorization"] == f"Bearer {fake.api_key}"


def test_no_asm_block_is_sent_when_no_group_is_configured(
    fake: FakeSendGrid, make_sender: SenderFactory
) -> None:
    make_sender(asm_group_id=None).send(asks(3))

    assert "asm" not in fake.requests[0].body


def test_a_template_with_an_id_is_sent_as_dynamic_template_data_plus_subject(
    fake: FakeSendGrid, make_sender: SenderFactory
) -> None:
    message = asks(1)[0]

    make_sender().send([message])

    (delivered,) = fake.delivered
    assert delivered.template_id == TEMPLATE_ID
    assert delivered.dynamic_template_data == {**message.data, "subject": message.subject}
    assert fake.requests[0].body["personalizations"][0]["to"] == [
        {"email": message.to_email, "name": message.to_name}
    ]


def test_messages_without_a_template_id_each_arrive_with_their_own_content_in_one_request(
    fake: FakeSendGrid, make_sender: SenderFactory
) -> None:
    messages = asks(300, template="notice_reward")

    results = make_sender().send(messages)

    assert {r.outcome for r in results} == {EmailOutcome.ACCEPTED}
    assert len(fake.requests) == 1
    rendered = {r.to_email: r for r in fake.rendered}
    for m in messages:
        seen = rendered[m.to_email]
        assert (seen.subject, seen.text, seen.html) == (m.subject, m.data["text"], m.data["html"])
        assert seen.custom_args == {"message_id": m.message_id}


def test_text_only_and_html_only_messages_get_content_blocks_of_their_own_kind(
    fake: FakeSendGrid, make_sender: SenderFactory
) -> None:
    base = asks(2, template="notice_reward")
    text_only = replace(base[0], data={"text": "plain only"})
    html_only = replace(base[1], data={"html": "<p>html only</p>"})

    make_sender().send([text_only, html_only])

    kinds = sorted([c["type"] for c in r.body["content"]] for r in fake.requests)
    assert kinds == [["text/html"], ["text/plain"]]
    rendered = {r.to_email: (r.text, r.html) for r in fake.rendered}
    assert rendered[text_only.to_email] == ("plain only", None)
    assert rendered[html_only.to_email] == (None, "<p>html only</p>")


def test_a_body_over_the_substitution_limit_is_sent_alone_with_its_content_inline(
    fake: FakeSendGrid, make_sender: SenderFactory
) -> None:
    small = asks(3, template="notice_reward")
    big_html = "<p>" + "x" * 12_000 + "</p>"
    (big,) = asks(1, template="notice_reward", start=3)
    big = replace(big, data={"text": "short", "html": big_html})

    results = make_sender().send([*small, big])

    assert {r.outcome for r in results} == {EmailOutcome.ACCEPTED}
    assert sorted(len(r.body["personalizations"]) for r in fake.requests) == [1, 3]
    (alone,) = [r for r in fake.requests if len(r.body["personalizations"]) == 1]
    assert "substitutions" not in alone.body["personalizations"][0]
    assert alone.body["content"][1] == {"type": "text/html", "value": big_html}


def test_a_message_with_no_content_fails_alone_and_the_others_are_sent(
    fake: FakeSendGrid, make_sender: SenderFactory
) -> None:
    good = asks(2, template="notice_reward")
    (empty,) = asks(1, template="notice_reward", start=2)
    empty = replace(empty, data={"first_name": "X"})

    results = {r.message_id: r for r in make_sender().send([*good, empty])}

    assert results[empty.message_id].outcome is EmailOutcome.FAILED
    assert "no text or html" in (results[empty.message_id].error or "")
    assert [results[m.message_id].outcome for m in good] == [EmailOutcome.ACCEPTED] * 2
    assert len(fake.delivered) == 2


def test_an_invalid_recipient_address_fails_alone_without_naming_it(
    fake: FakeSendGrid, make_sender: SenderFactory
) -> None:
    good = asks(2)
    broken = replace(asks(1, start=2)[0], to_email="not an address")

    results = {r.message_id: r for r in make_sender().send([*good, broken])}

    assert results[broken.message_id].outcome is EmailOutcome.FAILED
    assert results[broken.message_id].error == "invalid recipient address"
    assert len(fake.delivered) == 2


def test_two_messages_to_one_address_travel_in_different_requests(
    fake: FakeSendGrid, make_sender: SenderFactory
) -> None:
    first, second = asks(2)
    second = replace(second, to_email=first.to_email.upper())

    results = make_sender().send([first, second])

    assert {r.outcome for r in results} == {EmailOutcome.ACCEPTED}
    assert [len(r.body["personalizations"]) for r in fake.requests] == [1, 1]


def test_a_message_id_given_twice_is_sent_once_and_answered_twice(
    fake: FakeSendGrid, make_sender: SenderFactory
) -> None:
    (message,) = asks(1)

    results = make_sender().send([message, message])

    assert len(results) == 2
    assert results[0] == results[1]
    assert len(fake.delivered) == 1


# -- retries and failures ------------------------------------------------------------


def test_a_429_waits_until_the_rate_limit_resets_and_then_sends_the_batch_once(
    fake: FakeSendGrid, make_sender: SenderFactory, sleeps: list[float]
) -> None:
    fake.script([Fault(429, headers=fake.rate_limit_headers(reset=int(NOW) + 7))])

    results = make_sender().send(asks(10))

    assert sleeps == [7.0]
    assert [a.status for a in fake.attempts] == [429, 202]
    assert len(fake.requests) == 1
    assert len(fake.delivered) == 10
    assert {r.outcome for r in results} == {EmailOutcome.ACCEPTED}


def test_the_wait_for_a_rate_limit_reset_is_capped(
    fake: FakeSendGrid, make_sender: SenderFactory, sleeps: list[float]
) -> None:
    fake.script([Fault(429, headers=fake.rate_limit_headers(reset=int(NOW) + 3600))])

    make_sender(max_rate_limit_wait=20.0).send(asks(1))

    assert sleeps == [20.0]
    assert len(fake.requests) == 1


def test_a_500_then_a_202_backs_off_once_and_sends_the_batch_once(
    fake: FakeSendGrid, make_sender: SenderFactory, sleeps: list[float]
) -> None:
    fake.script([500, "ok"])

    results = make_sender().send(asks(10))

    assert sleeps == [0.5]
    assert [a.status for a in fake.attempts] == [500, 202]
    assert len(fake.requests) == 1
    assert {r.outcome for r in results} == {EmailOutcome.ACCEPTED}


def test_a_dropped_connection_is_retried(
    fake: FakeSendGrid, make_sender: SenderFactory, sleeps: list[float]
) -> None:
    fake.script(["disconnect"])

    results = make_sender().send(asks(3))

    assert sleeps == [0.5]
    assert len(fake.requests) == 1
    assert {r.outcome for r in results} == {EmailOutcome.ACCEPTED}


def test_a_request_that_times_out_is_retried(
    fake: FakeSendGrid, make_sender: SenderFactory, sleeps: list[float]
) -> None:
    fake.script([Fault(503, delay=0.2)])

    results = make_sender(timeout=0.05).send(asks(2))

    assert sleeps == [0.5]
    assert {r.outcome for r in results} == {EmailOutcome.ACCEPTED}
    assert len(fake.delivered) == 2


def test_a_400_fails_the_request_at_once_and_its_error_names_no_address(
    fake: FakeSendGrid, make_sender: SenderFactory, sleeps: list[float]
) -> None:
    refusal = {
        "errors": [
            {
                "message": "Each email address in the personalization block should be unique "
                "between to, cc, and bcc. We found the first duplicate instance of "
                "[person0@customer.example] in the personalizations.0.to field.",
                "field": "personalizations.0",
                "help": None,
            }
        ]
    }
    fake.script([Fault(400, body=json.dumps(refusal).encode())])

    results = make_sender().send(asks(3))

    assert {r.outcome for r in results} == {EmailOutcome.FAILED}
    error = results[0].error or ""
    assert error.startswith("SendGrid 400: personalizations.0:")
    assert "@" not in error
    assert sleeps == []
    assert [a.status for a in fake.attempts] == [400]


def test_an_empty_subject_without_a_template_fails_locally_without_a_request(
    fake: FakeSendGrid, make_sender: SenderFactory, sleeps: list[float]
) -> None:
    (message,) = asks(1, template="notice_reward")

    results = make_sender().send([replace(message, subject="")])

    # Refused locally: an empty subject would make SendGrid refuse the whole request.
    assert results[0].outcome is EmailOutcome.FAILED
    assert results[0].error == "empty subject"
    assert fake.attempts == []
    assert sleeps == []


def test_a_bad_api_key_fails_without_retry_and_the_error_does_not_contain_the_key(
    fake: FakeSendGrid, make_sender: SenderFactory, sleeps: list[float]
) -> None:
    wrong_key = "SG.wrong-key.abcdefghijklmnopqrstuvwxyz0123456789"

    results = make_sender(api_key=wrong_key).send(asks(4))

    assert {r.outcome for r in results} == {EmailOutcome.FAILED}
    error = results[0].error or ""
    assert error.startswith("SendGrid 401")
    assert wrong_key not in error
    assert "abcdefghijklmnopqrstuvwxyz" not in error
    assert [a.status for a in fake.attempts] == [401]
    assert sleeps == []


@pytest.mark.parametrize("status", [403, 413])
def test_forbidden_and_too_large_fail_without_retry(
    fake: FakeSendGrid, make_sender: SenderFactory, sleeps: list[float], status: int
) -> None:
    fake.script([status])

    results = make_sender().send(asks(2))

    assert {r.outcome for r in results} == {EmailOutcome.FAILED}
    assert (results[0].error or "").startswith(f"SendGrid {status}")
    assert len(fake.attempts) == 1
    assert sleeps == []


def test_exhausted_retries_leave_the_messages_retryable_and_nothing_sent(
    fake: FakeSendGrid, make_sender: SenderFactory, sleeps: list[float]
) -> None:
    fake.script([503, 503, 503, 503])

    results = make_sender(max_attempts=4).send(asks(5))

    assert {r.outcome for r in results} == {EmailOutcome.RETRYABLE}
    assert results[0].error == "SendGrid 503 after 4 attempts"
    assert sleeps == [0.5, 1.0, 2.0]
    assert len(fake.attempts) == 4
    assert fake.delivered == []


def test_an_accepted_request_is_never_resent_when_a_later_one_fails(
    fake: FakeSendGrid, make_sender: SenderFactory
) -> None:
    fake.script(["ok", 400])

    results = make_sender().send(asks(1500))

    outcomes = [r.outcome for r in results]
    assert outcomes == [EmailOutcome.ACCEPTED] * 1000 + [EmailOutcome.FAILED] * 500
    assert [a.status for a in fake.attempts] == [202, 400]
    assert len(fake.delivered) == 1000


def test_nothing_logged_names_an_address_or_the_key_even_at_debug(
    fake: FakeSendGrid, make_sender: SenderFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake.script([500, "ok", 400])

    make_sender(max_per_request=5).send(asks(10))

    assert caplog.records, "the sender should say what it did"
    assert "@customer.example" not in caplog.text
    assert fake.api_key not in caplog.text


# -- configuration -------------------------------------------------------------------


def test_the_sender_built_from_settings_sends_to_the_configured_host(
    fake: FakeSendGrid,
) -> None:
    settings = load_settings(
        sendgrid_api_key=fake.api_key,
        sendgrid_api_host=fake.url,
        sendgrid_from_email=SENDER,
        sendgrid_asm_group_id=7,
        sendgrid_templates={"ask_deal_won": TEMPLATE_ID},
    )

    results = SendGridEmailSender.from_settings(settings).send(asks(2))

    assert {r.outcome for r in results} == {EmailOutcome.ACCEPTED}
    assert fake.requests[0].body["asm"] == {"group_id": 7}
    assert fake.delivered[0].template_id == TEMPLATE_ID


def test_a_legacy_template_id_is_refused_at_construction() -> None:
    with pytest.raises(ConfigError, match="ask_renewal"):
        SendGridEmailSender(
            "SG.key", from_email=SENDER, templates={"ask_renewal": "4f0b-legacy-id"}
        )


def test_the_sender_repr_does_not_show_the_key() -> None:
    sender = SendGridEmailSender("SG.secret-value", from_email=SENDER)

    assert "secret-value" not in repr(sender)


# -- the fake answers like SendGrid --------------------------------------------------


def test_the_fake_answers_413_for_more_than_1000_personalizations(fake: FakeSendGrid) -> None:
    client = SendGridAPIClient(api_key=fake.api_key, host=fake.url)
    body = {
        "from": {"email": SENDER},
        "subject": "s",
        "content": [{"type": "text/plain", "value": "x"}],
        "personalizations": [{"to": [{"email": f"p{i}@x.example"}]} for i in range(1001)],
    }

    with pytest.raises(HTTPError) as caught:
        client.send(body)

    assert caught.value.status_code == 413
    assert "limited to 1000 personalizations" in caught.value.body.decode()


def test_the_fake_answers_400_with_sendgrids_error_shape_for_an_invalid_body(
    fake: FakeSendGrid,
) -> None:
    client = SendGridAPIClient(api_key=fake.api_key, host=fake.url)
    body = {"from": {"email": "nobody"}, "personalizations": [{"to": []}]}

    with pytest.raises(HTTPError) as caught:
        client.send(body)

    assert caught.value.status_code == 400
    errors = json.loads(caught.value.body)["errors"]
    fields = {e["field"] for e in errors}
    assert {"from.email", "personalizations.0.to", "subject", "content"} <= fields
    assert all(set(e) == {"message", "field", "help"} for e in errors)
    assert fake.requests == []


def test_the_fake_takes_substitutions_of_10000_bytes_of_utf8_json_and_refuses_more() -> None:
    def body(value: str) -> dict[str, Any]:
        return {
            "from": {"email": SENDER},
            "subject": "Hello",
            "content": [{"type": "text/plain", "value": "-t-"}],
            "personalizations": [
                {"to": [{"email": "person@customer.example"}], "substitutions": {"-t-": value}}
            ],
        }

    # {"-t-":"..."} is 10 bytes around the value, and each "é" takes 2 bytes of UTF-8.
    at_limit = "é" * 4995

    assert validate_mail_send(body(at_limit)) == []
    (error,) = validate_mail_send(body(at_limit + "x"))
    assert error["field"] == "personalizations.0.substitutions"
