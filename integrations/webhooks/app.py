"""The webhook receiver: an ASGI app (Starlette) that verifies, then stores once.

Routes:

* ``POST /webhooks/sendgrid``: SendGrid's signed Event Webhook. The raw body is
  verified against ``X-Twilio-Email-Event-Webhook-Signature`` and ``-Timestamp``
  (ECDSA P-256, within the tolerance), parsed, and applied by the ledger: each
  ``sg_event_id`` once, suppressing contacts that bounced hard, unsubscribed or
  reported spam. ``200`` with the counts; ``400`` with a short reason for a bad
  signature, a stale timestamp or a body that is not an array of events; ``503``
  when no verification key is configured.
* ``POST /webhooks/stripe``: verified against ``Stripe-Signature`` (HMAC-SHA256, within
  the tolerance), then kept in the ledger's Stripe inbox once per event id.
  ``200`` with ``{"received": true, "duplicate": bool}``; ``400`` with a reason for a
  bad signature or a stale timestamp; ``503`` when no signing secret is configured.
* ``GET /healthz``: ``200`` with which webhooks are configured.

Nothing is read from a body before its signature is checked, and nothing is written
for a body that fails. The order of deliveries never matters: storing an event
depends on nothing but the event. Logs carry event ids, types and counts only: never
a body, an address, a header value or a key. A ledger error answers ``503`` (both
providers retry) and logs only the error's class, because a database error's text
can quote the statement's parameters, the payload among them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Protocol

from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from domain.errors import ConfigError, InputRejected
from domain.models import EmailEvent, EmailEventsApplied, Rejected
from domain.stores.provider_events import ProviderEventStore
from integrations.email import sendgrid_webhook
from integrations.email.sendgrid_webhook import parse_events, verify_sendgrid_signature
from integrations.payments.stripe_webhook import verify_stripe_event

logger = logging.getLogger(__name__)

STRIPE_SIGNATURE_HEADER = "Stripe-Signature"
TOLERANCE_SECONDS = 300
# SendGrid batches events by size and Stripe events are a few kB; anything far larger
# is refused before it is read into memory.
MAX_BODY_BYTES = 5 * 1024 * 1024


class EmailEventInbox(Protocol):
    """What the app needs of the ``emails`` store (:class:`domain.stores.emails.EmailStore`)."""

    def apply_email_events(
        self,
        events: Sequence[EmailEvent],
        now: datetime,
        rejected: Sequence[Rejected] = (),
    ) -> EmailEventsApplied: ...


class WebhookInbox(Protocol):
    """What the app needs of the ledger: its ``emails`` store (SendGrid's events) and
    its ``provider_events`` store (Stripe's inbox)."""

    @property
    def emails(self) -> EmailEventInbox: ...

    @property
    def provider_events(self) -> ProviderEventStore: ...


def _utc_now() -> datetime:
    return datetime.now(UTC)


def create_app(
    ledger: WebhookInbox,
    *,
    sendgrid_public_key: str | None,
    stripe_secret: str | None,
    clock: Callable[[], datetime] = _utc_now,
    tolerance_seconds: int = TOLERANCE_SECONDS,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> Starlette:
    """Build the webhook receiver.

    Args:
        ledger: where events are applied and kept.
        sendgrid_public_key: SendGrid's verification key (base64 DER, or PEM); ``None``
            or blank: the SendGrid route answers 503.
        stripe_secret: the Stripe endpoint's signing secret (``whsec_...``); ``None`` or
            blank: the Stripe route answers 503.
        clock: the current time, timezone-aware (tests pin it).
        tolerance_seconds: how far a signature's timestamp may be from ``clock()``,
            either way, before the delivery is refused as stale (or forged ahead).
        max_body_bytes: larger bodies are refused with 413 before being read.

    Returns:
        The ASGI app.

    Raises:
        ConfigError: the SendGrid key is not a P-256 public key.
    """
    sendgrid_key = (sendgrid_public_key or "").strip() or None
    stripe_key = (stripe_secret or "").strip() or None
    if sendgrid_key is not None:
        _check_sendgrid_key(sendgrid_key)

    async def sendgrid(request: Request) -> Response:
        if sendgrid_key is None:
            logger.error("sendgrid webhook refused: no verification key is configured")
            return _error(503, "the SendGrid webhook verification key is not configured")
        body = await _read_body(request, max_body_bytes)
        if body is None:
            return _error(413, f"body larger than {max_body_bytes} bytes")
        signature = request.headers.get(sendgrid_webhook.SIGNATURE_HEADER)
        timestamp = request.headers.get(sendgrid_webhook.TIMESTAMP_HEADER)
        if not signature or not timestamp:
            return _refused("sendgrid", "missing signature or timestamp header")
        now = clock()
        try:
            verify_sendgrid_signature(
                body, signature, timestamp, sendgrid_key, now, tolerance_seconds
            )
        except InputRejected as exc:
            return _refused("sendgrid", exc.reason)
        events, rejected = parse_events(body)
        if not events and any(r.record == sendgrid_webhook.RECORD for r in rejected):
            # The whole body is unusable (not JSON, not an array): nothing to apply.
            return _refused("sendgrid", rejected[0].reason)
        try:
            applied = await run_in_threadpool(
                ledger.emails.apply_email_events, events, now, rejected
            )
        except SQLAlchemyError as exc:
            return _ledger_failed("sendgrid", exc)
        counts = applied.counts()
        logger.info(
            "sendgrid webhook applied: %s",
            ", ".join(f"{name}={value}" for name, value in counts.items()),
        )
        return JSONResponse(counts)

    async def stripe(request: Request) -> Response:
        if stripe_key is None:
            logger.error("stripe webhook refused: no signing secret is configured")
            return _error(503, "the Stripe webhook signing secret is not configured")
        body = await _read_body(request, max_body_bytes)
        if body is None:
            return _error(413, f"body larger than {max_body_bytes} bytes")
        now = clock()
        try:
            event = verify_stripe_event(
                body,
                request.headers.get(STRIPE_SIGNATURE_HEADER, ""),
                stripe_key,
                tolerance_seconds,
                now=now.timestamp(),
            )
        except InputRejected as exc:
            return _refused("stripe", exc.reason)
        try:
            new = await run_in_threadpool(ledger.provider_events.store_stripe_event, event, now)
        except InputRejected as exc:
            return _refused("stripe", exc.reason)
        except SQLAlchemyError as exc:
            return _ledger_failed("stripe", exc)
        logger.info(
            "stripe webhook %s: event %s (%s)",
            "stored" if new else "duplicate",
            event["id"],
            event["type"],
        )
        return JSONResponse({"received": True, "duplicate": not new})

    async def healthz(request: Request) -> Response:
        return JSONResponse(
            {"status": "ok", "sendgrid": sendgrid_key is not None, "stripe": stripe_key is not None}
        )

    return Starlette(
        routes=[
            Route("/webhooks/sendgrid", sendgrid, methods=["POST"]),
            Route("/webhooks/stripe", stripe, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ]
    )


def _check_sendgrid_key(key: str) -> None:
    """Refuse a malformed key at start rather than at the first delivery.

    An empty signature over an empty body goes through key loading (which names
    ``public_key`` when the key is wrong) and then fails on the signature, as it must.
    """
    try:
        verify_sendgrid_signature(b"", "", "0", key, datetime.fromtimestamp(0, UTC))
    except InputRejected as exc:
        if exc.field == "public_key":
            raise ConfigError(f"SendGrid webhook verification key: {exc.reason}") from None


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The raw body, byte for byte (what was signed), or None if over ``limit``."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    parts: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        parts.append(chunk)
    return b"".join(parts)


def _error(status: int, reason: str) -> JSONResponse:
    return JSONResponse({"error": reason}, status_code=status)


def _refused(provider: str, reason: str) -> JSONResponse:
    # The reasons come from the verifiers and name no secret, header value or address.
    logger.warning("%s webhook refused: %s", provider, reason)
    return _error(400, reason)


def _ledger_failed(provider: str, exc: SQLAlchemyError) -> JSONResponse:
    # Only the class: the message may quote the statement's parameters (the payload).
    logger.error("%s webhook not stored: ledger error %s", provider, type(exc).__name__)
    return _error(503, "the ledger is unavailable; retry later")
