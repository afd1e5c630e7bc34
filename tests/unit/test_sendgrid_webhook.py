"""Verifying and parsing SendGrid's signed Event Webhook."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from domain.errors import InputRejected
from domain.models import EmailEvent, EmailEventType
from integrations.email.sendgrid_webhook import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    parse_events,
    verify_sendgrid_signature,
)
from tests.fakes.sendgrid_server import WebhookSigner

# The test vector published with SendGrid's own Python library
# (test/unit/test_eventwebhook.py in sendgrid-python).
SG_PUBLIC_KEY = (
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE83T4O/n84iotIvIW4mdBgQ/7dAfSmpqIM8kF9mN1flpV"
    "KS3GRqe62gw+2fNNRaINXvVpiglSI8eNEc6wEA3F+g=="
)
SG_SIGNATURE = (
    "MEUCIGHQVtGj+Y3LkG9fLcxf3qfI10QysgDWmMOVmxG0u6ZUAiEAyBiXDWzM+uOe5W0JuG+luQAbPIqHh89M"
    "15TluLtEZtM="
)
SG_TIMESTAMP = "1600112502"
SG_PAYLOAD = (
    json.dumps(
        [
            {
                "email": "hello@world.com",
                "event": "dropped",
                "reason": "Bounced Address",
                "sg_event_id": "ZHJvcC0xMDk5NDkxOS1MUnpYbF9OSFN0T0doUTRrb2ZTbV9BLTA",
                "sg_message_id": "LRzXl_NHStOGhQ4kofSm_A.filterdrecv-p3mdw1-756b745b58-"
                "kmzbl-18-5F5FC76C-9.0",
                "smtp-id": "<LRzXl_NHStOGhQ4kofSm_A@ismtpd0039p1iad1.sendgrid.net>",
                "timestamp": 1600112492,
            }
        ],
        sort_keys=True,
        separators=(",", ":"),
    )
    + "\r\n"
).encode()

T0 = 1_750_000_000
NOW = datetime.fromtimestamp(T0, tz=UTC)


@pytest.fixture(scope="module")
def signer() -> WebhookSigner:
    return WebhookSigner()


def event(**overrides: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "email": "jane.doe@customer.example",
        "timestamp": T0 - 60,
        "event": "delivered",
        "sg_event_id": "ev-1",
        "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0",
        "smtp-id": "<14c5d75ce93.dfd.64b469@ismtpd-555>",
        "message_id": "msg-000001",
        "response": "250 OK",
    }
    item.update(overrides)
    return {k: v for k, v in item.items() if v is not None}


def payload(*items: object) -> bytes:
    return json.dumps(list(items)).encode()


# -- verify_sendgrid_signature -------------------------------------------------------


def test_sendgrids_own_published_test_vector_verifies() -> None:
    now = datetime.fromtimestamp(int(SG_TIMESTAMP) + 5, tz=UTC)

    verify_sendgrid_signature(SG_PAYLOAD, SG_SIGNATURE, SG_TIMESTAMP, SG_PUBLIC_KEY, now)


def test_a_correctly_signed_payload_verifies(signer: WebhookSigner) -> None:
    body = payload(event())
    headers = signer.headers(body, str(T0))

    verify_sendgrid_signature(
        body, headers[SIGNATURE_HEADER], headers[TIMESTAMP_HEADER], signer.public_key_b64, NOW
    )


def test_a_key_given_as_pem_verifies_too(signer: WebhookSigner) -> None:
    body = payload(event())
    pem = "-----BEGIN PUBLIC KEY-----\n" + signer.public_key_b64 + "\n-----END PUBLIC KEY-----"

    verify_sendgrid_signature(body, signer.sign(body, str(T0)), str(T0), pem, NOW)


def test_a_tampered_payload_is_rejected_as_a_signature_mismatch(signer: WebhookSigner) -> None:
    body = payload(event())
    signature = signer.sign(body, str(T0))
    tampered = body.replace(b"delivered", b"bounce")

    with pytest.raises(InputRejected) as caught:
        verify_sendgrid_signature(tampered, signature, str(T0), signer.public_key_b64, NOW)

    assert caught.value.record == "sendgrid-webhook"
    assert caught.value.field == "signature"
    assert "does not match" in caught.value.reason


def test_a_signature_for_another_timestamp_is_rejected(signer: WebhookSigner) -> None:
    body = payload(event())
    signature = signer.sign(body, str(T0))

    with pytest.raises(InputRejected) as caught:
        verify_sendgrid_signature(body, signature, str(T0 + 1), signer.public_key_b64, NOW)

    assert caught.value.field == "signature"


def test_a_payload_signed_with_another_key_is_rejected(signer: WebhookSigner) -> None:
    body = payload(event())
    signature = WebhookSigner().sign(body, str(T0))

    with pytest.raises(InputRejected) as caught:
        verify_sendgrid_signature(body, signature, str(T0), signer.public_key_b64, NOW)

    assert caught.value.field == "signature"


def test_a_stale_timestamp_is_rejected_even_when_the_signature_is_good(
    signer: WebhookSigner,
) -> None:
    body = payload(event())
    stamp = str(T0 - 301)

    with pytest.raises(InputRejected) as caught:
        verify_sendgrid_signature(body, signer.sign(body, stamp), stamp, signer.public_key_b64, NOW)

    assert caught.value.field == "timestamp"
    assert caught.value.reason == (
        "timestamp is 301s old, beyond the 300s tolerance (stale or replayed)"
    )


def test_a_future_timestamp_is_rejected(signer: WebhookSigner) -> None:
    body = payload(event())
    stamp = str(T0 + 600)

    with pytest.raises(InputRejected) as caught:
        verify_sendgrid_signature(body, signer.sign(body, stamp), stamp, signer.public_key_b64, NOW)

    assert caught.value.field == "timestamp"
    assert "600s in the future" in caught.value.reason


def test_a_timestamp_exactly_at_the_tolerance_is_accepted(signer: WebhookSigner) -> None:
    body = payload(event())
    stamp = str(T0 - 300)

    verify_sendgrid_signature(body, signer.sign(body, stamp), stamp, signer.public_key_b64, NOW)


def test_the_tolerance_can_be_narrowed(signer: WebhookSigner) -> None:
    body = payload(event())
    stamp = str(T0 - 61)

    with pytest.raises(InputRejected, match="beyond the 60s tolerance"):
        verify_sendgrid_signature(
            body, signer.sign(body, stamp), stamp, signer.public_key_b64, NOW, 60
        )


@pytest.mark.parametrize("stamp", ["", "soon", "1.5e9", "-1700000000"])
def test_a_timestamp_that_is_not_epoch_seconds_is_rejected(
    signer: WebhookSigner, stamp: str
) -> None:
    body = payload(event())

    with pytest.raises(InputRejected) as caught:
        verify_sendgrid_signature(
            body, signer.sign(body, str(T0)), stamp, signer.public_key_b64, NOW
        )

    assert caught.value.field == "timestamp"
    assert caught.value.reason == "timestamp is not epoch seconds"


@pytest.mark.parametrize(
    "key",
    ["", "not base64 at all!", base64.b64encode(b"random bytes, not DER").decode()],
)
def test_a_malformed_public_key_is_rejected(signer: WebhookSigner, key: str) -> None:
    body = payload(event())

    with pytest.raises(InputRejected) as caught:
        verify_sendgrid_signature(body, signer.sign(body, str(T0)), str(T0), key, NOW)

    assert caught.value.field == "public_key"


def test_a_key_on_another_curve_is_rejected() -> None:
    other = ec.generate_private_key(ec.SECP384R1()).public_key()
    der = other.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )

    with pytest.raises(InputRejected) as caught:
        verify_sendgrid_signature(b"[]", SG_SIGNATURE, str(T0), base64.b64encode(der).decode(), NOW)

    assert caught.value.field == "public_key"
    assert "P-256" in caught.value.reason


@pytest.mark.parametrize(
    "signature", ["***", base64.b64encode(b"not a DER signature").decode(), ""]
)
def test_a_malformed_signature_is_rejected(signer: WebhookSigner, signature: str) -> None:
    with pytest.raises(InputRejected) as caught:
        verify_sendgrid_signature(b"[]", signature, str(T0), signer.public_key_b64, NOW)

    assert caught.value.field == "signature"


def test_a_naive_now_is_a_programming_error(signer: WebhookSigner) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        verify_sendgrid_signature(
            b"[]", SG_SIGNATURE, str(T0), signer.public_key_b64, NOW.replace(tzinfo=None)
        )


# -- parse_events --------------------------------------------------------------------


@pytest.mark.parametrize("kind", [t.value for t in EmailEventType])
def test_each_known_event_type_becomes_an_email_event(kind: str) -> None:
    events, rejected = parse_events(payload(event(event=kind)))

    assert rejected == []
    assert events == [
        EmailEvent(
            event_id="ev-1",
            type=EmailEventType(kind),
            message_id="msg-000001",
            occurred_at=NOW - timedelta(seconds=60),
            reason=events[0].reason,
        )
    ]
    assert events[0].occurred_at.tzinfo is UTC


def test_a_hard_bounce_and_a_block_say_which_they_are_without_the_address() -> None:
    body = payload(
        event(
            sg_event_id="b1",
            event="bounce",
            type="bounce",
            reason="550 5.1.1 <jane.doe@customer.example>: Recipient address rejected",
        ),
        event(sg_event_id="b2", event="bounce", type="blocked", reason="421 try later"),
    )

    events, _ = parse_events(body)

    assert [e.reason for e in events] == [
        "bounce: 550 5.1.1 <<address>>: Recipient address rejected",
        "blocked: 421 try later",
    ]


def test_drops_deferrals_and_group_unsubscribes_keep_their_reason() -> None:
    body = payload(
        event(sg_event_id="d1", event="dropped", reason="Unsubscribed Address"),
        event(sg_event_id="d2", event="deferred", response="400 try again later"),
        event(sg_event_id="d3", event="group_unsubscribe", asm_group_id=4242),
        event(sg_event_id="d4", event="open", response=None),
    )

    events, _ = parse_events(body)

    assert [e.reason for e in events] == [
        "Unsubscribed Address",
        "400 try again later",
        "unsubscribe group 4242",
        None,
    ]


def test_an_event_id_seen_twice_in_one_payload_is_kept_once() -> None:
    body = payload(
        event(sg_event_id="same", event="delivered"),
        event(sg_event_id="same", event="delivered"),
        event(sg_event_id="other", event="open"),
    )

    events, rejected = parse_events(body)

    assert [e.event_id for e in events] == ["same", "other"]
    assert rejected == []


def test_an_unknown_event_type_is_rejected_without_the_address() -> None:
    events, rejected = parse_events(payload(event(event="processed"), event(sg_event_id="x")))

    assert [e.event_id for e in events] == ["x"]
    (refused,) = rejected
    assert (refused.source, refused.record, refused.field) == (
        "sendgrid",
        "sendgrid-webhook:ev-1",
        "event",
    )
    assert refused.reason == "unknown event type 'processed'"
    assert "customer.example" not in refused.reason + refused.raw
    assert "msg-000001" in refused.raw


@pytest.mark.parametrize(
    ("overrides", "field", "reason"),
    [
        ({"sg_event_id": None}, "sg_event_id", "missing sg_event_id"),
        ({"event": None}, "event", "missing event type"),
        (
            {"message_id": None},
            "message_id",
            "no message_id custom arg: not an email this system sent",
        ),
        ({"timestamp": None}, "timestamp", "missing or non-numeric timestamp"),
        ({"timestamp": "yesterday"}, "timestamp", "missing or non-numeric timestamp"),
        ({"timestamp": 10**20}, "timestamp", "timestamp out of range"),
    ],
)
def test_an_event_missing_a_field_is_rejected_naming_it(
    overrides: dict[str, Any], field: str, reason: str
) -> None:
    events, rejected = parse_events(payload(event(**overrides)))

    assert events == []
    assert [(r.field, r.reason) for r in rejected] == [(field, reason)]
    assert "jane.doe" not in rejected[0].raw


def test_a_numeric_string_timestamp_is_read_as_epoch_seconds() -> None:
    events, _ = parse_events(payload(event(timestamp=str(T0))))

    assert events[0].occurred_at == NOW


def test_an_item_that_is_not_an_object_is_rejected_by_position() -> None:
    events, rejected = parse_events(payload(event(), "oops"))

    assert len(events) == 1
    assert [(r.record, r.field, r.reason) for r in rejected] == [
        ("sendgrid-webhook[1]", None, "event is not a JSON object")
    ]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "payload is not valid JSON"),
        (b'{"event": "delivered"}', "payload is not a JSON array of events"),
    ],
)
def test_a_payload_that_is_not_an_array_of_events_is_rejected_whole(
    body: bytes, reason: str
) -> None:
    events, rejected = parse_events(body)

    assert events == []
    assert [(r.record, r.reason) for r in rejected] == [("sendgrid-webhook", reason)]


def test_sendgrids_signed_sample_parses_to_a_rejection_for_lack_of_our_message_id() -> None:
    events, rejected = parse_events(SG_PAYLOAD)

    assert events == []
    assert [r.field for r in rejected] == ["message_id"]
    assert "hello@world.com" not in rejected[0].raw
