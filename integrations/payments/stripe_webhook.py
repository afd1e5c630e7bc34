"""Verification of Stripe webhook deliveries.

Stripe signs each delivery with the endpoint's secret (``whsec_...``): the
``Stripe-Signature`` header is ``t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">``
(several ``v1`` entries while a secret is being rolled). The signature must be checked
on the raw bytes as received, before any JSON parsing, and the timestamp bounds how
long a captured delivery can be replayed.
"""

from __future__ import annotations

import json
import time
from typing import Any

import stripe

from domain.errors import InputRejected

_RECORD = "stripe webhook"
_FIELD = "Stripe-Signature"


def _timestamp(sig_header: str) -> int | None:
    for item in sig_header.split(","):
        name, _, value = item.strip().partition("=")
        if name == "t":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def verify_stripe_event(
    payload: bytes,
    sig_header: str,
    secret: str,
    tolerance: int = 300,
    *,
    now: float | None = None,
) -> dict[str, Any]:
    """Check a webhook delivery's signature and age, and return its event.

    The HMAC is checked by the ``stripe`` library (``WebhookSignature.verify_header``).
    The age is checked here, in both directions: the library only refuses timestamps
    older than ``tolerance``, while one far in the future is as suspect.

    Args:
        payload: the request body, byte for byte as received.
        sig_header: the ``Stripe-Signature`` header.
        secret: the endpoint's signing secret.
        tolerance: how many seconds the signature's timestamp may differ from now.
        now: the current Unix time (tests); default ``time.time()``.

    Returns:
        The event as a plain dict (``id``, ``type``, ``data.object``, ...).

    Raises:
        InputRejected: the header is missing or malformed, no signature matches, the
            timestamp is outside the tolerance, or the body is not a JSON event.
    """
    if not sig_header:
        raise InputRejected(_RECORD, _FIELD, "missing Stripe-Signature header")
    if not secret.strip():
        raise InputRejected(_RECORD, _FIELD, "no webhook signing secret is configured")
    timestamp = _timestamp(sig_header)
    if timestamp is None:
        raise InputRejected(_RECORD, _FIELD, "malformed header: no integer t= timestamp")
    if not any(item.strip().startswith("v1=") for item in sig_header.split(",")):
        raise InputRejected(_RECORD, _FIELD, "malformed header: no v1= signature")
    try:
        # tolerance=None: the age check below covers both directions, with its own reason.
        stripe.WebhookSignature.verify_header(payload, sig_header, secret, None)
    except stripe.SignatureVerificationError:
        raise InputRejected(
            _RECORD,
            _FIELD,
            "signature does not match (wrong signing secret, or the body was altered)",
        ) from None
    except UnicodeDecodeError:
        raise InputRejected(_RECORD, None, "body is not UTF-8") from None
    current = time.time() if now is None else now
    age = current - timestamp
    if abs(age) > tolerance:
        direction = "old" if age > 0 else "in the future"
        raise InputRejected(
            _RECORD,
            _FIELD,
            f"timestamp is {abs(int(age))} s {direction}, outside the {tolerance} s tolerance",
        )
    try:
        event = json.loads(payload)
    except ValueError:
        raise InputRejected(_RECORD, None, "body is not JSON") from None
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        raise InputRejected(_RECORD, None, "body is not a Stripe event (no type)")
    if not isinstance(event.get("id"), str):
        raise InputRejected(_RECORD, "id", "event has no id")
    return event
