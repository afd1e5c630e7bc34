"""The webhook receiver over real HTTP: uvicorn on 127.0.0.1, a free port, httpx.

SendGrid posts are signed with :class:`tests.fakes.sendgrid_server.WebhookSigner`, and
Stripe deliveries with the endpoint secret, exactly as the providers do. Tests that
touch the database run on SQLite and (with REFERRALS_TEST_POSTGRES_URL) Postgres.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError
from starlette.applications import Starlette

from domain.errors import ConfigError
from domain.models import EmailEvent, EmailEventsApplied, Rejected
from integrations.ledger.sql import SqlLedger
from integrations.ledger.tables import (
    EmailEventRow,
    ProviderEventRow,
    QuarantineRow,
    StripeEventRow,
    SuppressionRow,
)
from integrations.webhooks import create_app
from tests.fakes.sendgrid_server import WebhookSigner
from tests.integration.test_ledger_webhooks import given_asks

STRIPE_SECRET = "whsec_test_webhook_secret_do_not_log"
SENDGRID = "/webhooks/sendgrid"
STRIPE = "/webhooks/stripe"
ADDRESS = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+")
TABLES = (EmailEventRow, StripeEventRow, ProviderEventRow, SuppressionRow, QuarantineRow)


class _Ledger(SqlLedger):
    """The ledger, as the webhook receiver is given it."""


# -- a real server -------------------------------------------------------------------------


@contextmanager
def serve(app: Starlette) -> Iterator[str]:
    """Run ``app`` with uvicorn on 127.0.0.1 (a free port) in a thread; yield its URL."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        log_config=None,  # leave logging alone: records reach caplog through the root
        lifespan="off",
        ws="none",
        access_log=True,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="webhooks-test-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@dataclass
class Receiver:
    """A running receiver: its HTTP client, the ledger behind it and its signers."""

    client: httpx.Client
    ledger: _Ledger
    signer: WebhookSigner
    now: datetime

    @property
    def stamp(self) -> int:
        return int(self.now.timestamp())

    def post_sendgrid(
        self,
        events: list[dict[str, Any]] | bytes,
        *,
        timestamp: int | None = None,
        signer: WebhookSigner | None = None,
        body: bytes | None = None,
    ) -> httpx.Response:
        """Post ``events`` signed at ``timestamp``; ``body`` replaces what is sent."""
        payload = events if isinstance(events, bytes) else json.dumps(events).encode()
        headers = (signer or self.signer).headers(payload, str(timestamp or self.stamp))
        return self.client.post(
            SENDGRID,
            content=payload if body is None else body,
            headers={**headers, "Content-Type": "application/json"},
        )

    def post_stripe(
        self, event: dict[str, Any], *, timestamp: int | None = None, secret: str = STRIPE_SECRET
    ) -> httpx.Response:
        payload = json.dumps(event).encode()
        header = stripe_signature(payload, secret, timestamp or self.stamp)
        return self.client.post(
            STRIPE,
            content=payload,
            headers={"Stripe-Signature": header, "Content-Type": "application/json"},
        )

    def counts(self) -> dict[str, int]:
        with self.ledger.engine.connect() as conn:
            return {
                t.__tablename__: int(
                    conn.execute(select(func.count()).select_from(t.__table__)).scalar_one()
                )
                for t in TABLES
            }


def stripe_signature(payload: bytes, secret: str, timestamp: int) -> str:
    """Sign like Stripe: HMAC-SHA256 over ``"<t>.<body>"`` with the endpoint secret."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


@pytest.fixture
def signer() -> WebhookSigner:
    return WebhookSigner()


@pytest.fixture
def receiver(
    ledger: SqlLedger,
    now: datetime,
    signer: WebhookSigner,
    caplog: pytest.LogCaptureFixture,
) -> Iterator[Receiver]:
    caplog.set_level(logging.DEBUG)
    inbox = _Ledger(ledger.engine)
    app = create_app(
        inbox,
        sendgrid_public_key=signer.public_key_b64,
        stripe_secret=STRIPE_SECRET,
        clock=lambda: now,
    )
    with serve(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield Receiver(client, inbox, signer, now)


# -- payloads ------------------------------------------------------------------------------


def address(contact_id: str) -> str:
    """The address tests.conftest.contact gives a contact of account ``A-<id>``."""
    return f"{contact_id.lower()}@a-{contact_id.lower()}.example"


def sg_event(
    event_id: str, kind: str, message_id: str, at: datetime, contact_id: str, **extra: Any
) -> dict[str, Any]:
    """One event as SendGrid posts it: with the address, the IP and the user agent."""
    return {
        "sg_event_id": event_id,
        "event": kind,
        "timestamp": int(at.timestamp()),
        "email": address(contact_id),
        "ip": "203.0.113.7",
        "useragent": "Mozilla/5.0",
        "sg_message_id": f"{event_id}.filter0001",
        "message_id": message_id,
    } | extra


def stripe_event(event_id: str, type_: str, created: int, object_id: str) -> dict[str, Any]:
    return {
        "id": event_id,
        "object": "event",
        "type": type_,
        "created": created,
        "livemode": False,
        "data": {
            "object": {
                "id": object_id,
                "object": "charge",
                "amount": 120_000,
                "billing_details": {"email": "payer@customer.example"},
                "receipt_email": "payer@customer.example",
            }
        },
    }


def the_batch(asks: dict[str, str], now: datetime) -> list[dict[str, Any]]:
    """C1 bounces hard, C2 unsubscribes, C3 leaves a group, C4 reports spam, C5 gets
    delivered, clicks, and is blocked once (a soft refusal)."""
    return [
        sg_event(
            "sg-1",
            "bounce",
            asks["C1"],
            now,
            "C1",
            type="bounce",
            status="5.1.1",
            reason=f"550 5.1.1 <{address('C1')}>: Recipient address rejected",
        ),
        sg_event("sg-2", "unsubscribe", asks["C2"], now, "C2"),
        sg_event("sg-3", "group_unsubscribe", asks["C3"], now, "C3", asm_group_id=42),
        sg_event("sg-4", "spamreport", asks["C4"], now, "C4"),
        sg_event("sg-5", "delivered", asks["C5"], now, "C5", response="250 OK"),
        sg_event("sg-6", "click", asks["C5"], now, "C5", url="https://example.com/r/abc"),
        sg_event("sg-7", "bounce", asks["C5"], now, "C5", type="blocked", reason="554 spam"),
    ]


def assert_private(
    text: str, *, addresses: tuple[str, ...] = (), secrets: tuple[str, ...] = ()
) -> None:
    """No address (of those given, or any address-shaped text) and no secret in ``text``."""
    assert ADDRESS.search(text) is None, ADDRESS.search(text)
    for value in (*addresses, *secrets, STRIPE_SECRET):
        assert value not in text


CONTACTS = ["C1", "C2", "C3", "C4", "C5"]


# -- SendGrid ------------------------------------------------------------------------------


def test_healthz_says_which_webhooks_are_configured(receiver: Receiver) -> None:
    answer = receiver.client.get("/healthz")

    assert answer.status_code == 200
    assert answer.json() == {"status": "ok", "sendgrid": True, "stripe": True}


def test_a_signed_batch_is_applied_and_suppresses_who_bounced_or_unsubscribed(
    receiver: Receiver, now: datetime, caplog: pytest.LogCaptureFixture
) -> None:
    asks = given_asks(receiver.ledger, now, CONTACTS)

    answer = receiver.post_sendgrid(the_batch(asks, now))

    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "received": 7,
        "new": 7,
        "duplicates": 0,
        "unknown_messages": 0,
        "rejected": 0,
        "suppressed": 4,
    }
    with receiver.ledger.engine.connect() as conn:
        suppressed = dict(
            conn.execute(select(SuppressionRow.contact_id, SuppressionRow.reason)).tuples().all()
        )
        kept = {
            r.sg_event_id: r for r in conn.execute(select(EmailEventRow.__table__)).mappings().all()
        }
    assert suppressed == {
        "C1": "bounce",
        "C2": "unsubscribe",
        "C3": "group_unsubscribe",
        "C4": "spamreport",
    }
    assert {k: r["contact_id"] for k, r in kept.items()} == {
        "sg-1": "C1",
        "sg-2": "C2",
        "sg-3": "C3",
        "sg-4": "C4",
        "sg-5": "C5",
        "sg-6": "C5",
        "sg-7": "C5",
    }
    assert kept["sg-1"]["reason"] == "bounce: 550 5.1.1 <<address>>: Recipient address rejected"
    assert kept["sg-3"]["reason"] == "unsubscribe group 42"
    every_address = tuple(address(c) for c in CONTACTS)
    assert_private(answer.text, addresses=every_address)
    assert_private(caplog.text, addresses=every_address, secrets=(receiver.signer.public_key_b64,))
    assert "sendgrid webhook applied: received=7, new=7" in caplog.text
    assert all(address(c) not in str(r) for r in kept.values() for c in CONTACTS)


def test_the_same_batch_posted_five_times_is_applied_once(
    receiver: Receiver, now: datetime
) -> None:
    asks = given_asks(receiver.ledger, now, CONTACTS)
    batch = the_batch(asks, now)
    receiver.post_sendgrid(batch)
    after_first = receiver.counts()

    answers = [receiver.post_sendgrid(batch) for _ in range(4)]

    assert {a.status_code for a in answers} == {200}
    assert {(a.json()["new"], a.json()["duplicates"]) for a in answers} == {(0, 7)}
    assert receiver.counts() == after_first
    assert after_first["email_events"] == 7
    assert after_first["suppressions"] == 4


def test_the_same_batch_posted_five_times_at_once_is_applied_once(
    receiver: Receiver, now: datetime
) -> None:
    asks = given_asks(receiver.ledger, now, CONTACTS)
    batch = the_batch(asks, now)

    with ThreadPoolExecutor(max_workers=5) as pool:
        answers = list(pool.map(lambda _: receiver.post_sendgrid(batch), range(5)))

    assert [a.status_code for a in answers] == [200] * 5
    assert sum(a.json()["new"] for a in answers) == 7
    assert sum(a.json()["suppressed"] for a in answers) == 4
    assert receiver.counts()["email_events"] == 7
    assert receiver.counts()["provider_events"] == 7


def test_events_for_unknown_message_ids_are_kept_but_suppress_nobody(
    receiver: Receiver, now: datetime
) -> None:
    given_asks(receiver.ledger, now, ["C1"])

    answer = receiver.post_sendgrid(
        [
            sg_event("sg-1", "bounce", "someone-elses-message", now, "C1", type="bounce"),
            sg_event("sg-2", "unsubscribe", "another-system", now, "C1"),
            sg_event("sg-3", "delivered", "another-system", now, "C1"),
        ]
    )

    assert answer.status_code == 200
    assert answer.json()["new"] == 3
    assert answer.json()["unknown_messages"] == 3
    assert answer.json()["suppressed"] == 0
    assert receiver.counts()["suppressions"] == 0
    assert receiver.counts()["email_events"] == 3


def test_refused_items_of_a_batch_are_quarantined_and_the_rest_applied(
    receiver: Receiver, now: datetime, caplog: pytest.LogCaptureFixture
) -> None:
    asks = given_asks(receiver.ledger, now, ["C1"])

    answer = receiver.post_sendgrid(
        [
            sg_event("sg-1", "unsubscribe", asks["C1"], now, "C1"),
            sg_event("sg-2", "processed", asks["C1"], now, "C1"),
            {"event": "delivered", "email": address("C1")},
        ]
    )

    assert answer.status_code == 200
    assert (answer.json()["new"], answer.json()["rejected"]) == (1, 2)
    with receiver.ledger.engine.connect() as conn:
        raws = list(conn.execute(select(QuarantineRow.raw)).scalars())
    assert len(raws) == 2
    assert all(address("C1") not in raw for raw in raws)
    assert_private(caplog.text, addresses=(address("C1"),))


def _tampered(r: Receiver, batch: list[dict[str, Any]]) -> httpx.Response:
    payload = json.dumps(batch).encode()
    return r.post_sendgrid(batch, body=payload.replace(b"unsubscribe", b"delivered"))


def _wrong_key(r: Receiver, batch: list[dict[str, Any]]) -> httpx.Response:
    return r.post_sendgrid(batch, signer=WebhookSigner())


def _stale(r: Receiver, batch: list[dict[str, Any]]) -> httpx.Response:
    return r.post_sendgrid(batch, timestamp=r.stamp - 301)


def _future(r: Receiver, batch: list[dict[str, Any]]) -> httpx.Response:
    return r.post_sendgrid(batch, timestamp=r.stamp + 301)


def _unsigned(r: Receiver, batch: list[dict[str, Any]]) -> httpx.Response:
    return r.client.post(SENDGRID, content=json.dumps(batch).encode())


def _garbled_signature(r: Receiver, batch: list[dict[str, Any]]) -> httpx.Response:
    return r.client.post(
        SENDGRID,
        content=json.dumps(batch).encode(),
        headers={
            WebhookSigner.SIGNATURE_HEADER: "not base64!",
            WebhookSigner.TIMESTAMP_HEADER: str(r.stamp),
        },
    )


@pytest.mark.parametrize(
    ("post", "reason"),
    [
        (_tampered, "signature does not match"),
        (_wrong_key, "signature does not match"),
        (_stale, "beyond the 300s tolerance"),
        (_future, "in the future"),
        (_unsigned, "missing signature or timestamp header"),
        (_garbled_signature, "not valid base64"),
    ],
    ids=["tampered-body", "wrong-key", "stale", "future", "unsigned", "garbled"],
)
def test_a_badly_signed_or_stale_post_is_refused_and_changes_nothing(
    receiver: Receiver,
    now: datetime,
    post: Callable[[Receiver, list[dict[str, Any]]], httpx.Response],
    reason: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    asks = given_asks(receiver.ledger, now, ["C1", "C2"])
    batch = [
        sg_event("sg-1", "unsubscribe", asks["C1"], now, "C1"),
        sg_event("sg-2", "bounce", asks["C2"], now, "C2", type="bounce"),
    ]
    before = receiver.counts()

    answer = post(receiver, batch)

    assert answer.status_code == 400
    assert reason in answer.json()["error"]
    assert receiver.counts() == before
    assert_private(answer.text + caplog.text, addresses=(address("C1"), address("C2")))


def test_a_signed_body_that_is_not_an_array_of_events_is_refused(
    receiver: Receiver,
) -> None:
    answer = receiver.post_sendgrid(b'{"event": "delivered"}')

    assert answer.status_code == 400
    assert answer.json() == {"error": "payload is not a JSON array of events"}
    assert receiver.counts()["email_events"] == 0


# -- Stripe --------------------------------------------------------------------------------


def test_a_stripe_event_delivered_five_times_out_of_order_is_stored_once_each(
    receiver: Receiver, now: datetime, caplog: pytest.LogCaptureFixture
) -> None:
    t0 = receiver.stamp - 3_600
    paid = stripe_event("evt_paid", "charge.succeeded", t0, "ch_1")
    refunded = stripe_event("evt_refund", "charge.refunded", t0 + 600, "ch_1")

    # The refund arrives first; each is redelivered four more times, re-signed a few
    # seconds apart as Stripe does on a retry.
    answers = [
        receiver.post_stripe(event, timestamp=receiver.stamp - n)
        for n in range(5)
        for event in (refunded, paid)
    ]

    assert {a.status_code for a in answers} == {200}
    assert [a.json() for a in answers[:2]] == [{"received": True, "duplicate": False}] * 2
    assert {a.json()["duplicate"] for a in answers[2:]} == {True}
    stored = receiver.ledger.provider_events.unprocessed_stripe_events(None, 10)
    assert [e.event_id for e in stored] == ["evt_paid", "evt_refund"]
    assert stored[1].payload == refunded
    assert receiver.counts()["stripe_events"] == 2
    assert "stripe webhook stored: event evt_refund (charge.refunded)" in caplog.text
    assert_private(
        caplog.text + "".join(a.text for a in answers),
        addresses=("payer@customer.example",),
    )


def test_a_stripe_event_delivered_five_times_at_once_is_stored_once(
    receiver: Receiver,
) -> None:
    event = stripe_event("evt_race", "charge.refunded", receiver.stamp, "ch_2")

    with ThreadPoolExecutor(max_workers=5) as pool:
        answers = list(pool.map(lambda _: receiver.post_stripe(event), range(5)))

    assert sorted(a.json()["duplicate"] for a in answers) == [False, True, True, True, True]
    assert receiver.counts()["stripe_events"] == 1


@pytest.mark.parametrize(
    ("deliver", "reason"),
    [
        (lambda r, e: r.post_stripe(e, secret="whsec_other"), "signature does not match"),
        (lambda r, e: r.post_stripe(e, timestamp=r.stamp - 301), "outside the 300 s"),
        (lambda r, e: r.post_stripe(e, timestamp=r.stamp + 301), "in the future"),
        (
            lambda r, e: r.client.post(STRIPE, content=json.dumps(e).encode()),
            "missing Stripe-Signature",
        ),
        (
            lambda r, e: r.client.post(
                STRIPE,
                content=json.dumps(e | {"type": "charge.succeeded"}).encode(),
                headers={
                    "Stripe-Signature": stripe_signature(
                        json.dumps(e).encode(), STRIPE_SECRET, r.stamp
                    )
                },
            ),
            "signature does not match",
        ),
    ],
    ids=["wrong-secret", "stale", "future", "unsigned", "tampered-body"],
)
def test_a_badly_signed_or_stale_stripe_delivery_is_refused_and_stores_nothing(
    receiver: Receiver,
    deliver: Callable[[Receiver, dict[str, Any]], httpx.Response],
    reason: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    event = stripe_event("evt_1", "charge.refunded", receiver.stamp, "ch_1")

    answer = deliver(receiver, event)

    assert answer.status_code == 400
    assert reason in answer.json()["error"]
    assert receiver.counts()["stripe_events"] == 0
    assert receiver.counts()["provider_events"] == 0
    assert_private(answer.text + caplog.text, addresses=("payer@customer.example",))


def test_a_signed_stripe_event_the_inbox_cannot_keep_is_refused_with_the_reason(
    receiver: Receiver,
) -> None:
    event = stripe_event("evt_1", "charge.refunded", receiver.stamp, "ch_1")
    del event["created"]

    answer = receiver.post_stripe(event)

    assert answer.status_code == 400
    assert answer.json() == {"error": "event has no integer created time"}
    assert receiver.counts()["stripe_events"] == 0


# -- configuration and failures (no database) ----------------------------------------------


class _BrokenLedger:
    """A ledger whose database is down; its error quotes the parameters, as drivers do."""

    def _fail(self) -> OperationalError:
        return OperationalError(
            "INSERT INTO stripe_events ...", {"payload": "payer@customer.example"}, Exception()
        )

    @property
    def emails(self) -> _BrokenLedger:
        return self

    def apply_email_events(
        self, events: Any, now: datetime, rejected: Any = ()
    ) -> EmailEventsApplied:
        raise self._fail()

    def store_stripe_event(self, event: Any, now: datetime) -> bool:
        raise self._fail()

    @property
    def provider_events(self) -> Any:
        return self


class _NoLedger:
    @property
    def emails(self) -> _NoLedger:
        return self

    def apply_email_events(
        self, events: Sequence[EmailEvent], now: datetime, rejected: Sequence[Rejected] = ()
    ) -> EmailEventsApplied:
        raise AssertionError("nothing may reach the ledger")

    def store_stripe_event(self, event: Any, now: datetime) -> bool:
        raise AssertionError("nothing may reach the ledger")

    @property
    def provider_events(self) -> Any:
        return self


def test_without_a_key_or_secret_both_webhooks_answer_503(now: datetime) -> None:
    app = create_app(_NoLedger(), sendgrid_public_key=None, stripe_secret="  ", clock=lambda: now)

    with serve(app) as url, httpx.Client(base_url=url) as client:
        sendgrid = client.post(SENDGRID, content=b"[]")
        stripe = client.post(STRIPE, content=b"{}")
        health = client.get("/healthz")

    assert (sendgrid.status_code, stripe.status_code) == (503, 503)
    assert "not configured" in sendgrid.json()["error"]
    assert "not configured" in stripe.json()["error"]
    assert health.json() == {"status": "ok", "sendgrid": False, "stripe": False}


def test_a_ledger_failure_answers_503_and_logs_no_parameters(
    now: datetime, signer: WebhookSigner, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    app = create_app(
        _BrokenLedger(),
        sendgrid_public_key=signer.public_key_b64,
        stripe_secret=STRIPE_SECRET,
        clock=lambda: now,
    )
    stamp = int(now.timestamp())
    event = json.dumps(stripe_event("evt_1", "charge.refunded", stamp, "ch_1")).encode()
    batch = json.dumps([sg_event("sg-1", "delivered", "m1", now, "C1")]).encode()

    with serve(app) as url, httpx.Client(base_url=url) as client:
        stripe = client.post(
            STRIPE,
            content=event,
            headers={"Stripe-Signature": stripe_signature(event, STRIPE_SECRET, stamp)},
        )
        sendgrid = client.post(SENDGRID, content=batch, headers=signer.headers(batch, str(stamp)))

    assert (stripe.status_code, sendgrid.status_code) == (503, 503)
    assert "ledger error OperationalError" in caplog.text
    assert_private(
        caplog.text + stripe.text + sendgrid.text,
        addresses=("payer@customer.example", address("C1")),
    )


def test_a_body_over_the_limit_is_refused_before_it_is_read(
    now: datetime, signer: WebhookSigner
) -> None:
    app = create_app(
        _NoLedger(),
        sendgrid_public_key=signer.public_key_b64,
        stripe_secret=STRIPE_SECRET,
        clock=lambda: now,
        max_body_bytes=1_000,
    )
    big = b"[" + b" " * 2_000 + b"]"

    with serve(app) as url, httpx.Client(base_url=url) as client:
        sendgrid = client.post(SENDGRID, content=big, headers=signer.headers(big, "1"))
        stripe = client.post(STRIPE, content=big, headers={"Stripe-Signature": "t=1,v1=00"})

    assert (sendgrid.status_code, stripe.status_code) == (413, 413)


def test_a_malformed_sendgrid_key_is_refused_at_start() -> None:
    with pytest.raises(ConfigError, match="verification key"):
        create_app(_NoLedger(), sendgrid_public_key="not a key", stripe_secret=None)


def test_only_post_is_accepted_on_the_webhooks(now: datetime) -> None:
    app = create_app(_NoLedger(), sendgrid_public_key=None, stripe_secret=None)

    with serve(app) as url, httpx.Client(base_url=url) as client:
        assert client.get(SENDGRID).status_code == 405
        assert client.get(STRIPE).status_code == 405


def test_events_older_than_the_window_are_still_accepted_when_freshly_signed(
    receiver: Receiver, now: datetime
) -> None:
    """The window bounds the signature, not the events: SendGrid batches and retries."""
    asks = given_asks(receiver.ledger, now, ["C1"])
    old = now - timedelta(days=2)

    answer = receiver.post_sendgrid([sg_event("sg-old", "unsubscribe", asks["C1"], old, "C1")])

    assert answer.status_code == 200
    assert answer.json()["suppressed"] == 1
