"""SendGrid's Event Webhook: verify a signed post, then parse its events.

SendGrid signs each post with ECDSA over P-256 and SHA-256; the signed bytes are the
``X-Twilio-Email-Event-Webhook-Timestamp`` header followed by the raw request body, and
the base64 DER signature is in ``X-Twilio-Email-Event-Webhook-Signature``. The
verification key shown in SendGrid's mail settings is the base64 of a DER
SubjectPublicKeyInfo (what ``sendgrid.helpers.eventwebhook`` wraps in PEM armour).

Verify the raw body before parsing it: any re-serialisation changes the bytes signed.
A post is a JSON array of events. Each event carries ``sg_event_id`` (unique per event;
SendGrid may post an event more than once, so store by it), ``event``, ``timestamp``
(epoch seconds), the recipient's ``email``, and our custom args as top-level keys, here
``message_id``. Only that id links an event to our message; the address is never kept.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import (
    load_der_public_key,
    load_pem_public_key,
)

from domain.errors import InputRejected
from domain.models import EmailEvent, EmailEventType, Rejected

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
SOURCE = "sendgrid"
RECORD = "sendgrid-webhook"

_ADDRESS_IN_TEXT = re.compile(r"[^\s@\[\]<>()\"',;:]+@[^\s@\[\]<>()\"',;:]+")
_MAX_REASON_CHARS = 300
_MAX_RAW_CHARS = 500
# Personal data an event may carry; left out of what a rejection keeps.
_PERSONAL_KEYS = frozenset({"email", "ip", "useragent", "url"})


def verify_sendgrid_signature(
    payload: bytes,
    signature_b64: str,
    timestamp: str,
    public_key_b64: str,
    now: datetime,
    tolerance_seconds: int = 300,
) -> None:
    """Check that SendGrid signed ``payload`` at ``timestamp``, within the tolerance.

    Args:
        payload: the raw request body, byte for byte.
        signature_b64: the ``X-Twilio-Email-Event-Webhook-Signature`` header.
        timestamp: the ``X-Twilio-Email-Event-Webhook-Timestamp`` header (epoch seconds).
        public_key_b64: the verification key from SendGrid (base64 DER; PEM accepted).
        now: the current time, timezone-aware.
        tolerance_seconds: how far the timestamp may be from ``now``, either way; SendGrid
            documents no window, so this is ours against replays.

    Raises:
        InputRejected: the key or the signature is malformed, the signature does not
            match, or the timestamp is outside the tolerance. ``field`` names which.
        ValueError: ``now`` is naive.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    key = _public_key(public_key_b64)
    signature = _b64(signature_b64, "signature")
    if not re.fullmatch(r"\d{1,12}", timestamp or ""):
        raise InputRejected(RECORD, "timestamp", "timestamp is not epoch seconds")
    try:
        key.verify(signature, timestamp.encode("ascii") + payload, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise InputRejected(
            RECORD,
            "signature",
            "signature does not match the payload and timestamp for this key",
        ) from None
    skew = now.timestamp() - int(timestamp)
    if skew > tolerance_seconds:
        raise InputRejected(
            RECORD,
            "timestamp",
            f"timestamp is {skew:.0f}s old, beyond the {tolerance_seconds}s tolerance "
            "(stale or replayed)",
        )
    if -skew > tolerance_seconds:
        raise InputRejected(
            RECORD,
            "timestamp",
            f"timestamp is {-skew:.0f}s in the future, beyond the {tolerance_seconds}s tolerance",
        )


def _b64(value: str, field: str) -> bytes:
    try:
        return base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError, AttributeError):
        raise InputRejected(RECORD, field, f"{field} is not valid base64") from None


def _public_key(public_key_b64: str) -> ec.EllipticCurvePublicKey:
    text = (public_key_b64 or "").strip()
    try:
        if text.startswith("-----BEGIN"):
            key = load_pem_public_key(text.encode())
        else:
            key = load_der_public_key(_b64(text, "public_key"))
    except (ValueError, UnsupportedAlgorithm):
        raise InputRejected(
            RECORD, "public_key", "public key is not a base64 DER EC public key"
        ) from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise InputRejected(RECORD, "public_key", "public key is not a P-256 (ECDSA) key")
    return key


def parse_events(payload: bytes) -> tuple[list[EmailEvent], list[Rejected]]:
    """The events of a (verified) webhook post, and the items refused.

    Items of unknown type, without our ``message_id`` custom arg, or with a missing or
    malformed field are refused with the field and the reason (never the address). An
    ``sg_event_id`` seen earlier in the same payload is dropped as a duplicate.
    """
    try:
        items = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return [], [Rejected(SOURCE, RECORD, None, "payload is not valid JSON")]
    if not isinstance(items, list):
        return [], [Rejected(SOURCE, RECORD, None, "payload is not a JSON array of events")]

    events: list[EmailEvent] = []
    rejected: list[Rejected] = []
    seen: set[str] = set()
    for index, item in enumerate(items):
        outcome = _parse_item(index, item)
        if isinstance(outcome, Rejected):
            rejected.append(outcome)
        elif outcome.event_id not in seen:
            seen.add(outcome.event_id)
            events.append(outcome)
    return events, rejected


def _parse_item(index: int, item: object) -> EmailEvent | Rejected:
    record = f"{RECORD}[{index}]"
    if not isinstance(item, dict):
        return Rejected(SOURCE, record, None, "event is not a JSON object", _raw(item))

    def refuse(field: str, reason: str) -> Rejected:
        return Rejected(SOURCE, record, field, reason, _raw(item))

    event_id = item.get("sg_event_id")
    if not isinstance(event_id, str) or not event_id.strip():
        return refuse("sg_event_id", "missing sg_event_id")
    record = f"{RECORD}:{event_id}"

    kind = item.get("event")
    if not isinstance(kind, str) or not kind:
        return refuse("event", "missing event type")
    try:
        type_ = EmailEventType(kind)
    except ValueError:
        return refuse("event", f"unknown event type {_short(kind)!r}")

    message_id = item.get("message_id")
    if not isinstance(message_id, str) or not message_id.strip():
        return refuse("message_id", "no message_id custom arg: not an email this system sent")

    stamp = item.get("timestamp")
    if isinstance(stamp, str) and stamp.isdigit():
        stamp = int(stamp)
    if not isinstance(stamp, int | float) or isinstance(stamp, bool):
        return refuse("timestamp", "missing or non-numeric timestamp")
    try:
        occurred_at = datetime.fromtimestamp(stamp, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return refuse("timestamp", "timestamp out of range")

    return EmailEvent(event_id, type_, message_id, occurred_at, _reason(type_, item))


def _reason(type_: EmailEventType, item: dict[str, Any]) -> str | None:
    text: object = None
    if type_ is EmailEventType.BOUNCE:
        # "bounce" is a hard bounce, "blocked" a refusal the address may recover from.
        kind = item.get("type") if isinstance(item.get("type"), str) else "bounce"
        detail = item.get("reason") or item.get("status")
        text = f"{kind}: {detail}" if detail else kind
    elif type_ in (EmailEventType.DROPPED, EmailEventType.DEFERRED):
        text = item.get("reason") or item.get("response")
    elif type_ is EmailEventType.GROUP_UNSUBSCRIBE and item.get("asm_group_id") is not None:
        text = f"unsubscribe group {item['asm_group_id']}"
    if text is None or text == "":
        return None
    return _short(_ADDRESS_IN_TEXT.sub("<address>", str(text)), _MAX_REASON_CHARS)


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _raw(item: object) -> str:
    if isinstance(item, dict):
        item = {k: v for k, v in item.items() if k not in _PERSONAL_KEYS}
    try:
        text = json.dumps(item, sort_keys=True, default=str)
    except (TypeError, ValueError):
        text = repr(item)
    return _short(_ADDRESS_IN_TEXT.sub("<address>", text), _MAX_RAW_CHARS)
