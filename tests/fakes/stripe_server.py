"""A local fake of the Stripe v1 endpoints the payout code uses, served over real HTTP.

The official ``stripe`` library talks to it unchanged (point ``base_addresses["api"]`` at
:attr:`FakeStripe.url`), so tests exercise the real encoding, headers, retries and error
mapping. What it reproduces of Stripe, and why it matters to payouts:

* **Form bodies** as the library sends them (``metadata[reward_id]=...``, ``expand[0]=``),
  unknown parameters refused (``parameter_unknown``), JSON objects shaped like Stripe's
  (``object``, ``id``, ``created``, ``livemode: false``, lists with ``has_more``).
* **Authentication**: ``Authorization: Bearer sk_test_...`` (or basic auth) must match
  the fake's key, else 401. The body's ``type`` is ``invalid_request_error`` and the
  message echoes the key masked but for its last four characters, as Stripe does.
* **Idempotency** (https://docs.stripe.com/api/idempotent_requests): on POST, the status
  and body of the first request with a key are saved once the endpoint *started
  executing* and replayed (``Idempotent-Replayed: true``) to later requests with the
  same key, errors included. A request refused before execution (parameter validation,
  auth, rate limit, a conflict with an in-flight request using the key) saves nothing
  and may be retried. Same key with other parameters or another endpoint -> 400
  ``idempotency_error``; same key while the first request still runs -> 409
  ``idempotency_error`` / ``idempotency_key_in_use``. Keys are forgotten 24 hours after
  they were saved (see :meth:`FakeStripe.advance`), after which the key creates anew.
  Here "validation" means the request's shape (missing/unknown/malformed parameters);
  failures that need state (unknown destination or customer, insufficient balance) are
  raised by the executing endpoint and therefore saved and replayed.
* **Faults**, scripted per route with :meth:`FakeStripe.script`, one consumed per
  matching request (the library's own retries consume them too):

  ``"ok"``               no fault.
  ``500``                ``api_error`` before execution: nothing saved, nothing created.
  ``429``                ``rate_limit`` with ``Retry-After``; the library does not retry it.
  ``"lock_timeout"``     429 ``lock_timeout`` with ``Stripe-Should-Retry: true``, which
                         the library does retry.
  ``409``                a lock-timeout-like 409 conflict; the library retries 409s.
  ``"timeout"``          the endpoint runs slowly (``slow_seconds``) holding its key,
                         then completes and saves its result: a client with a shorter
                         timeout gives up although the object gets created.
  ``"drop"``             the connection is closed before execution.
  ``"500_saved"``        execution began and failed: the 500 is saved under the key and
                         replayed (``Stripe-Should-Retry: false``) until the key expires.
  ``"commit_then_500"``  the object is created and saved under the key, but this
                         response is a 500 (a crash after the provider acted).
  ``"commit_then_drop"`` the same, with the connection dropped instead.

* **Rate limits**: ``FakeStripe(rate_limit_per_second=...)`` answers 429 above that rate
  for all requests, ``endpoint_rate_limit_per_second=...`` above that rate per endpoint.
* **Connected balances**: an account added with ``add_account(balance={...})`` keeps an
  available balance per currency: transfers add to it, reversals take from it, and a
  reversal it cannot cover is refused with ``balance_insufficient`` (saved under the
  key, like any failure of an executing endpoint). :meth:`FakeStripe.set_account_balance`
  plays the referrer spending their money. Accounts added without one never run short.
* **Charges and payment intents** (read back for the card that paid): added with
  :meth:`FakeStripe.add_charge` / :meth:`FakeStripe.add_payment_intent`, served by
  ``GET /v1/charges/{id}`` and ``GET /v1/payment_intents/{id}`` (``resource_missing``
  404 for an unknown id). A card charge carries ``payment_method_details.card`` with
  brand, last four digits, expiry and ``fingerprint``; a SEPA debit carries
  ``sepa_debit`` (whose bank fingerprint is no card's). ``expand[]=latest_charge`` on a
  payment intent and ``expand[]=payment_intent`` on a charge return the object instead
  of its id; any other expansion is refused as Stripe refuses a field it cannot expand.
* **Coupons and promotion codes** (the referee discount): ``POST``/``GET /v1/coupons``
  (a coupon's own ``id``, taken twice -> ``resource_already_exists``) and
  ``POST``/``GET /v1/promotion_codes`` (``promotion[coupon]``; one active code per
  ``code`` regardless of case; list filters ``code``, ``coupon``, ``active``).
* **Connect onboarding** (the referrer getting paid): ``POST /v1/accounts`` (Express,
  idempotent by key as every POST), ``GET /v1/accounts/{id}``, ``POST /v1/account_links``
  whose ``url`` points at the fake itself, ``/connect/hosted/<link id>``: a stand-in for
  Stripe's hosted onboarding (no API key: a browser opens it). Its "Agree and submit"
  form enables the account (details submitted, charges and payouts enabled, the
  ``transfers`` capability active), emits ``account.updated`` (listed by
  ``GET /v1/events``, and POSTed signed to :attr:`FakeStripe.webhook_url` when set)
  and redirects to the link's ``return_url``. A link opened before, or past its
  ``expires_at`` (5 minutes), shows an expired page sending to its ``refresh_url``. A
  transfer to an API-created account whose ``transfers`` capability is not active is
  refused (``insufficient_capabilities_for_transfer``), as Stripe does.

Thread-safe: one lock guards all state; only the slow fault sleeps outside it.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import fnmatch
import hashlib
import hmac
import html
import json
import re
import socket
import sys
import threading
import time
import traceback
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qsl, urlsplit

import httpx

JSON = dict[str, Any]
Fault = int | str

FAULTS: frozenset[Fault] = frozenset(
    {
        "ok",
        500,
        429,
        409,
        "lock_timeout",
        "timeout",
        "drop",
        "500_saved",
        "commit_then_500",
        "commit_then_drop",
    }
)

# Currencies the fake accepts (lowercase, as Stripe answers them).
CURRENCIES = frozenset(
    {"eur", "usd", "gbp", "chf", "sek", "nok", "dkk", "pln", "cad", "aud", "myr", "sgd"}
    | {"jpy", "krw", "nzd", "hkd", "czk", "huf", "ron"}
)
IDEMPOTENCY_KEY_TTL = timedelta(hours=24)
MAX_IDEMPOTENCY_KEY_LENGTH = 255
_INT = re.compile(r"-?\d+")
_PATH_ID = r"([A-Za-z0-9_\-]+)"


class _StripeError(Exception):
    """An error answer, raised anywhere in request handling."""

    def __init__(
        self,
        status: int,
        type_: str,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body: JSON = {"error": {"type": type_, "message": message}}
        if code:
            self.body["error"]["code"] = code
            self.body["error"]["doc_url"] = f"https://stripe.com/docs/error-codes/{code}"
        if param:
            self.body["error"]["param"] = param
        self.headers = dict(headers or {})


def _invalid(message: str, *, code: str | None = None, param: str | None = None) -> _StripeError:
    return _StripeError(400, "invalid_request_error", message, code=code, param=param)


def _missing(kind: str, object_id: str, *, status: int = 404, param: str = "id") -> _StripeError:
    return _StripeError(
        status,
        "invalid_request_error",
        f"No such {kind}: '{object_id}'",
        code="resource_missing",
        param=param,
    )


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request the fake answered, for tests to inspect.

    ``status`` is 0 when the connection was dropped instead of answered.
    """

    method: str
    path: str
    idempotency_key: str | None
    status: int
    replayed: bool = False
    fault: Fault | None = None

    @property
    def route(self) -> str:
        return f"{self.method} {self.path}"


@dataclass(slots=True)
class _Reply:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False


@dataclass(frozen=True, slots=True)
class _Saved:
    fingerprint: tuple[str, str, tuple[tuple[str, str], ...]]
    status: int
    body: bytes
    headers: dict[str, str]
    request_id: str
    saved_at: datetime


Execute = Callable[[], JSON]
Prepare = Callable[[JSON, tuple[str, ...]], Execute]


@dataclass(frozen=True, slots=True)
class _Route:
    method: str
    pattern: re.Pattern[str]
    prepare: Prepare


@dataclass(slots=True)
class _Collection:
    """Objects of one kind in creation order, with secondary indexes for list filters."""

    by_id: dict[str, JSON] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    index: dict[tuple[str, str], list[str]] = field(default_factory=dict)

    def add(self, obj: JSON, *index_on: str) -> None:
        self.by_id[obj["id"]] = obj
        self.order.append(obj["id"])
        for name in index_on:
            value = obj.get(name)
            if isinstance(value, str):
                self.index.setdefault((name, value), []).append(obj["id"])

    def newest_first(self, name: str | None = None, value: str | None = None) -> list[JSON]:
        ids = self.order if name is None or value is None else self.index.get((name, value), [])
        return [self.by_id[i] for i in reversed(ids)]


def _new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


def _split_key(key: str) -> list[str]:
    """``metadata[reward_id]`` -> ``["metadata", "reward_id"]``; ``expand[]`` -> ``[.., ""]``."""
    head, bracket, rest = key.partition("[")
    if not bracket:
        return [key]
    parts = [head]
    for chunk in ("[" + rest).split("]")[:-1]:
        if not chunk.startswith("["):
            raise _invalid(f"Invalid parameter name: {key}", code="parameter_unknown", param=key)
        parts.append(chunk[1:])
    return parts


def _listify(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    converted = {k: _listify(v) for k, v in node.items()}
    if converted and all(k.isdigit() for k in converted):
        return [converted[k] for k in sorted(converted, key=int)]
    return converted


def decode_form(pairs: Iterable[tuple[str, str]]) -> JSON:
    """Decode Stripe's form encoding into nested dicts and lists.

    Args:
        pairs: decoded ``(key, value)`` pairs, e.g. from :func:`urllib.parse.parse_qsl`.

    Returns:
        ``{"metadata": {"a": "1"}, "expand": ["x"]}`` for
        ``metadata[a]=1&expand[0]=x``.
    """
    root: JSON = {}
    for key, value in pairs:
        parts = _split_key(key)
        node = root
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise _invalid(f"Invalid value for {key}", param=key)
            node = child
        last = parts[-1]
        if last == "":
            last = str(len(node))
        if isinstance(node.get(last), dict):
            raise _invalid(f"Invalid value for {key}", param=key)
        node[last] = value
    result = _listify(root)
    assert isinstance(result, dict)
    return result


# -- parameter validation (a failure here happens before execution: nothing is saved) --


def _reject_unknown(params: JSON, allowed: Iterable[str]) -> None:
    known = set(allowed) | {"expand"}
    for name in params:
        if name not in known:
            raise _invalid(
                f"Received unknown parameter: {name}", code="parameter_unknown", param=name
            )


def _string(params: JSON, name: str, *, required: bool = False) -> str | None:
    value = params.get(name)
    if value is None:
        if required:
            raise _invalid(f"Missing required param: {name}.", code="parameter_missing", param=name)
        return None
    if not isinstance(value, str):
        raise _invalid(f"Invalid string: {name}", code="parameter_invalid_string", param=name)
    return value


def _integer(
    params: JSON, name: str, *, required: bool = False, minimum: int | None = None
) -> int | None:
    raw = _string(params, name, required=required)
    if raw is None:
        return None
    if not _INT.fullmatch(raw):
        raise _invalid(f"Invalid integer: {raw}", code="parameter_invalid_integer", param=name)
    value = int(raw)
    if minimum is not None and value < minimum:
        raise _invalid(
            f"This value must be greater than or equal to {minimum}.",
            code="parameter_invalid_integer",
            param=name,
        )
    return value


def _currency(params: JSON, *, required: bool = True) -> str | None:
    raw = _string(params, "currency", required=required)
    if raw is None:
        return None
    currency = raw.lower()
    if currency not in CURRENCIES:
        raise _invalid(
            f"Invalid currency: {raw}. Stripe currently supports these currencies: "
            + ", ".join(sorted(CURRENCIES)),
            param="currency",
        )
    return currency


def _metadata(params: JSON) -> dict[str, str]:
    raw = params.get("metadata")
    if raw is None or raw == "":
        return {}
    if not isinstance(raw, dict):
        raise _invalid("Invalid object", param="metadata")
    if len(raw) > 50:
        raise _invalid("You can have at most 50 metadata keys.", param="metadata")
    cleaned: dict[str, str] = {}
    for key, value in raw.items():
        if not isinstance(value, str):
            raise _invalid("Metadata values must be strings.", param=f"metadata[{key}]")
        if len(key) > 40:
            raise _invalid(
                "Metadata keys can have at most 40 characters.", param=f"metadata[{key}]"
            )
        if len(value) > 500:
            raise _invalid(
                "Metadata values can have at most 500 characters.", param=f"metadata[{key}]"
            )
        if value != "":  # an empty value unsets a key, so on create it is no key at all
            cleaned[key] = value
    return cleaned


def _mask_key(key: str) -> str:
    prefix = re.match(r"^[a-z]{2,3}_(?:test|live)_", key)
    head = prefix.group(0) if prefix else ""
    tail = key[-4:] if len(key) - len(head) > 4 else ""
    return head + "*" * max(len(key) - len(head) - len(tail), 1) + tail


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, fake: FakeStripe) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.fake = fake
        self._sockets: set[socket.socket] = set()
        self._sockets_lock = threading.Lock()

    def track(self, sock: socket.socket) -> None:
        with self._sockets_lock:
            self._sockets.add(sock)

    def untrack(self, sock: socket.socket) -> None:
        with self._sockets_lock:
            self._sockets.discard(sock)

    def hang_up_all(self) -> None:
        """Shut idle keep-alive connections so their threads end and can be joined."""
        with self._sockets_lock:
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (its timeout) or a stop() mid-request is expected here.
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the library's requests session expects
    server: _Server
    timeout = 30
    # Headers and body go out in two writes; with Nagle on, the client's delayed ACK
    # stalls every keep-alive response by ~40 ms.
    disable_nagle_algorithm = True

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.untrack(self.connection)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        reply = self.server.fake._handle(method, self.path, headers, body)
        if reply.drop:
            self.close_connection = True
            return
        try:
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            if "Content-Type" not in reply.headers:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)
        except ConnectionError:
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the per-request stderr line."""


class FakeStripe:
    """The fake Stripe API server; see the module docstring for what it reproduces.

    Example::

        with FakeStripe() as fake:
            account = fake.add_account()
            client = stripe.StripeClient("sk_test_fake", base_addresses={"api": fake.url})
            fake.script("POST /v1/transfers", [500, "ok"])
            ...
            assert len(fake.transfers) == 1

    Args:
        api_key: the only secret key the fake accepts.
        rate_limit_per_second: when set, requests above this rate (sliding one-second
            window) are answered 429.
        endpoint_rate_limit_per_second: when set, requests to one endpoint (method and
            route, e.g. ``POST /v1/transfers``) above this rate are answered 429, as
            Stripe's per-endpoint limiter does (25/s by default, live).
        slow_seconds: how long the ``"timeout"`` fault keeps a request executing.
        available_balance: platform balance per currency in minor units that transfers
            draw from (``balance_insufficient`` when short); ``None`` means unlimited.
        start: the fake's wall clock at creation (default: now, UTC).
    """

    def __init__(
        self,
        *,
        api_key: str = "sk_test_fake",
        rate_limit_per_second: float | None = None,
        endpoint_rate_limit_per_second: float | None = None,
        slow_seconds: float = 1.0,
        available_balance: Mapping[str, int] | None = None,
        start: datetime | None = None,
    ) -> None:
        self.api_key = api_key
        self.rate_limit_per_second = rate_limit_per_second
        self.endpoint_rate_limit_per_second = endpoint_rate_limit_per_second
        self.slow_seconds = slow_seconds
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._offset = (start - datetime.now(UTC)) if start else timedelta()
        self._available = (
            None
            if available_balance is None
            else {c.lower(): v for c, v in available_balance.items()}
        )
        self._accounts: set[str] = set()
        self._account_balances: dict[str, dict[str, int]] = {}
        self._customers: dict[str, JSON] = {}
        self._transfers = _Collection()
        self._reversals = _Collection()
        self._balance_txns = _Collection()
        self._coupons = _Collection()
        self._promotion_codes = _Collection()
        self._charges = _Collection()
        self._payment_intents = _Collection()
        self._events = _Collection()
        # Accounts made through the API (Connect onboarding), and their links.
        self._connect_accounts: dict[str, JSON] = {}
        self._account_links: dict[str, JSON] = {}
        #: Where ``account.updated`` is POSTed, signed with :attr:`webhook_secret`.
        self.webhook_url: str | None = None
        self.webhook_secret: str = "whsec_fake"
        self._saved: dict[str, _Saved] = {}
        self._in_flight: set[str] = set()
        self._scripts: list[tuple[str, deque[Fault]]] = []
        self._requests: list[RecordedRequest] = []
        self._recent: deque[float] = deque()
        self._endpoint_recent: dict[tuple[str, str], deque[float]] = {}
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._routes = self._build_routes()

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> Self:
        """Serve on a free port of 127.0.0.1 in a background thread."""
        if self._server is not None:
            return self
        self._stopping.clear()
        self._server = _Server(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.01},
            name="fake-stripe",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, wake slow requests, close every connection and join threads."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.hang_up_all()
        server.server_close()
        if thread is not None:
            thread.join()
        self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base address for the library, e.g. ``http://127.0.0.1:54321``."""
        if self._server is None:
            raise RuntimeError("FakeStripe is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    # -- test controls -----------------------------------------------------------------

    def now(self) -> datetime:
        """The fake's wall clock (real time plus everything :meth:`advance` added)."""
        return datetime.now(UTC) + self._offset

    def advance(self, *, hours: float = 0, minutes: float = 0, seconds: float = 0) -> None:
        """Move the fake's clock forward, e.g. past the 24 h life of idempotency keys."""
        with self._lock:
            self._offset += timedelta(hours=hours, minutes=minutes, seconds=seconds)

    def add_account(
        self, account_id: str | None = None, *, balance: Mapping[str, int] | None = None
    ) -> str:
        """Register a Connect account transfers may go to; returns its id.

        Args:
            account_id: the id (default: a new ``acct_...``).
            balance: its available balance per currency in minor units, to make
                reversals it cannot cover fail; ``None``: it never runs short.
        """
        account = account_id or _new_id("acct")
        with self._lock:
            self._accounts.add(account)
            if balance is not None:
                self._account_balances[account] = {c.lower(): v for c, v in balance.items()}
        return account

    def set_account_balance(self, account_id: str, currency: str, amount: int) -> None:
        """Set a connected account's available balance (e.g. the referrer spent it)."""
        with self._lock:
            self._account_balances.setdefault(account_id, {})[currency.lower()] = amount

    def account_balance(self, account_id: str, currency: str) -> int | None:
        """A connected account's available balance (``None``: not tracked)."""
        with self._lock:
            balances = self._account_balances.get(account_id)
            return None if balances is None else balances.get(currency.lower(), 0)

    def add_customer(self, customer_id: str | None = None, currency: str | None = None) -> str:
        """Register a customer whose balance can be credited; returns its id."""
        customer = customer_id or _new_id("cus")
        with self._lock:
            self._customers[customer] = {
                "id": customer,
                "balance": 0,
                "currency": currency.lower() if currency else None,
            }
        return customer

    def add_payment_intent(
        self,
        intent_id: str | None = None,
        *,
        amount: int,
        currency: str = "eur",
        customer: str | None = None,
    ) -> JSON:
        """Register a payment intent (not charged yet: see :meth:`add_charge`); returns it."""
        intent = intent_id or _new_id("pi")
        obj: JSON = {
            "id": intent,
            "object": "payment_intent",
            "amount": amount,
            "amount_capturable": 0,
            "amount_received": 0,
            "capture_method": "automatic_async",
            "client_secret": f"{intent}_secret_{uuid.uuid4().hex[:24]}",
            "confirmation_method": "automatic",
            "created": self._created(),
            "currency": currency.lower(),
            "customer": customer,
            "description": None,
            "invoice": None,
            "last_payment_error": None,
            "latest_charge": None,
            "livemode": False,
            "metadata": {},
            "payment_method": None,
            "payment_method_types": ["card"],
            "status": "requires_payment_method",
        }
        with self._lock:
            self._payment_intents.add(obj)
            return copy.deepcopy(obj)

    def add_charge(
        self,
        charge_id: str | None = None,
        *,
        amount: int,
        currency: str = "eur",
        customer: str | None = None,
        payment_intent: str | None = None,
        fingerprint: str | None = None,
        method: str = "card",
    ) -> JSON:
        """Register a succeeded charge; returns it.

        Args:
            charge_id: the id (default: a new ``ch_...``).
            amount: in minor units.
            currency: ISO code.
            customer: the paying customer's id.
            payment_intent: the intent it pays; that intent (added with
                :meth:`add_payment_intent`) then has it as its ``latest_charge`` and
                succeeds.
            fingerprint: the card's fingerprint (default: a new one).
            method: ``"card"`` or ``"sepa_debit"``.
        """
        if method not in ("card", "sepa_debit"):
            raise ValueError(f"unknown payment method {method!r}")
        charge = charge_id or _new_id("ch")
        fingerprint = fingerprint or uuid.uuid4().hex[:16]
        details: JSON = (
            {
                "type": "card",
                "card": {
                    "amount_authorized": amount,
                    "brand": "visa",
                    "checks": {
                        "address_line1_check": None,
                        "address_postal_code_check": None,
                        "cvc_check": "pass",
                    },
                    "country": "US",
                    "exp_month": 12,
                    "exp_year": 2034,
                    "fingerprint": fingerprint,
                    "funding": "credit",
                    "last4": "4242",
                    "network": "visa",
                    "three_d_secure": None,
                    "wallet": None,
                },
            }
            if method == "card"
            else {
                "type": "sepa_debit",
                "sepa_debit": {
                    "bank_code": "37040044",
                    "branch_code": None,
                    "country": "DE",
                    "fingerprint": fingerprint,
                    "last4": "3000",
                    "mandate": _new_id("mandate"),
                },
            }
        )
        obj: JSON = {
            "id": charge,
            "object": "charge",
            "amount": amount,
            "amount_captured": amount,
            "amount_refunded": 0,
            "balance_transaction": _new_id("txn"),
            "billing_details": {
                "address": {
                    "city": None,
                    "country": None,
                    "line1": None,
                    "line2": None,
                    "postal_code": None,
                    "state": None,
                },
                "email": None,
                "name": None,
                "phone": None,
            },
            "captured": True,
            "created": self._created(),
            "currency": currency.lower(),
            "customer": customer,
            "description": None,
            "disputed": False,
            "failure_code": None,
            "failure_message": None,
            "livemode": False,
            "metadata": {},
            "outcome": {
                "network_status": "approved_by_network",
                "reason": None,
                "risk_level": "normal",
                "seller_message": "Payment complete.",
                "type": "authorized",
            },
            "paid": True,
            "payment_intent": payment_intent,
            "payment_method": _new_id("pm"),
            "payment_method_details": details,
            "receipt_url": None,
            "refunded": False,
            "refunds": {
                "object": "list",
                "data": [],
                "has_more": False,
                "total_count": 0,
                "url": f"/v1/charges/{charge}/refunds",
            },
            "status": "succeeded",
        }
        with self._lock:
            intent = self._payment_intents.by_id.get(payment_intent or "")
            if payment_intent is not None and intent is None:
                raise ValueError(f"add the payment intent {payment_intent} first")
            self._charges.add(obj)
            if intent is not None:
                intent |= {
                    "amount_received": amount,
                    "latest_charge": charge,
                    "payment_method": obj["payment_method"],
                    "payment_method_types": [method],
                    "status": "succeeded",
                }
            return copy.deepcopy(obj)

    def script(self, route: str, faults: Sequence[Fault]) -> None:
        """Queue faults for requests matching ``route``, one consumed per request.

        Args:
            route: ``"METHOD /path"``; ``*`` matches anything, e.g.
                ``"POST /v1/customers/*/balance_transactions"``.
            faults: see the module docstring; ``"ok"`` lets a request through.
        """
        unknown = [f for f in faults if f not in FAULTS]
        if unknown:
            raise ValueError(f"unknown faults {unknown!r}; known: {sorted(map(str, FAULTS))}")
        with self._lock:
            self._scripts.append((route, deque(faults)))

    def add_event(self, event_type: str, data_object: Mapping[str, Any], **extra: Any) -> JSON:
        """Append an event that ``GET /v1/events`` will list; returns it.

        ``extra`` goes into the event's ``data`` beside ``object``, e.g.
        ``previous_attributes={...}``. Creating transfers and reversals also emits
        ``transfer.created`` / ``transfer.reversed``, as Stripe does.
        """
        with self._lock:
            return copy.deepcopy(self._emit(event_type, dict(data_object), **extra))

    def in_flight_keys(self) -> frozenset[str]:
        """Idempotency keys whose first request is still executing."""
        with self._lock:
            return frozenset(self._in_flight)

    def available(self, currency: str) -> int | None:
        """The platform's available balance in ``currency`` (``None``: unlimited)."""
        with self._lock:
            return None if self._available is None else self._available.get(currency.lower(), 0)

    def customer_balance(self, customer_id: str) -> int:
        """A customer's balance in minor units; negative means credit they can spend."""
        with self._lock:
            return int(self._customers[customer_id]["balance"])

    # -- introspection -----------------------------------------------------------------

    @property
    def transfers(self) -> list[JSON]:
        """Every transfer created, oldest first, in its current state."""
        return self._snapshot(self._transfers)

    @property
    def reversals(self) -> list[JSON]:
        return self._snapshot(self._reversals)

    @property
    def balance_transactions(self) -> list[JSON]:
        """Every customer balance transaction created, oldest first."""
        return self._snapshot(self._balance_txns)

    @property
    def coupons(self) -> list[JSON]:
        return self._snapshot(self._coupons)

    @property
    def promotion_codes(self) -> list[JSON]:
        return self._snapshot(self._promotion_codes)

    @property
    def events(self) -> list[JSON]:
        return self._snapshot(self._events)

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request answered (or dropped), in arrival order of their answers."""
        with self._lock:
            return list(self._requests)

    def count(self, route: str = "*", *, status: int | None = None) -> int:
        """How many requests matched ``route`` (``fnmatch`` on ``"METHOD /path"``)."""
        with self._lock:
            return sum(
                1
                for r in self._requests
                if fnmatch.fnmatchcase(r.route, route) and (status is None or r.status == status)
            )

    def _snapshot(self, collection: _Collection) -> list[JSON]:
        with self._lock:
            return [copy.deepcopy(collection.by_id[i]) for i in collection.order]

    # -- request handling --------------------------------------------------------------

    def _handle(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> _Reply:
        request_id = _new_id("req")
        parts = urlsplit(target)
        path = parts.path
        if path.startswith(HOSTED_PREFIX):
            # A browser page, not the API: no key, no idempotency, never scripted.
            reply = self._hosted(method, path[len(HOSTED_PREFIX) :])
            self._record(method, path, None, reply.status, False, None)
            return reply
        key = headers.get("idempotency-key") if method == "POST" else None
        fault: Fault | None = None
        replayed = False
        try:
            self._authenticate(headers)
            self._rate_limit()
            fault = self._next_fault(method, path)
            self._early_fault(fault)
            if key is not None and not 0 < len(key) <= MAX_IDEMPOTENCY_KEY_LENGTH:
                raise _invalid(
                    "Idempotency keys must be between 1 and 255 characters long.",
                    param="Idempotency-Key",
                )
            route, args = self._match(method, path)
            prepare = route.prepare
            self._endpoint_rate_limit(route)
            try:
                text = (body.decode() if method == "POST" else "") or parts.query
                pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=False)
            except UnicodeDecodeError:
                raise _invalid("The request body is not valid UTF-8.") from None
            execute = prepare(decode_form(pairs), args)
            fingerprint = (method, path, tuple(sorted(pairs)))
            saved = self._claim(key, fingerprint) if key is not None else None
            if saved is not None:
                replayed = True
                reply = self._replay(saved)
            else:
                try:
                    reply = self._execute(execute, fault, key, fingerprint, request_id)
                finally:
                    if key is not None:
                        with self._lock:
                            self._in_flight.discard(key)
        except _StripeError as err:
            reply = _Reply(err.status, json.dumps(err.body).encode(), dict(err.headers))
        except _DroppedConnectionError:
            reply = _Reply(0, b"", drop=True)
        except Exception as exc:
            # A bug in the fake: say so loudly rather than look like a network fault.
            traceback.print_exc()
            bug = {"error": {"type": "api_error", "message": f"fake Stripe bug: {exc!r}"}}
            reply = _Reply(500, json.dumps(bug).encode(), {"Stripe-Should-Retry": "false"})
        reply.headers.setdefault("Request-Id", request_id)
        if key is not None:
            reply.headers.setdefault("Idempotency-Key", key)
        self._record(method, path, key, 0 if reply.drop else reply.status, replayed, fault)
        return reply

    def _record(
        self,
        method: str,
        path: str,
        key: str | None,
        status: int,
        replayed: bool,
        fault: Fault | None,
    ) -> None:
        with self._lock:
            self._requests.append(
                RecordedRequest(
                    method, path, key, status, replayed, None if fault == "ok" else fault
                )
            )

    def _authenticate(self, headers: Mapping[str, str]) -> None:
        auth = headers.get("authorization", "")
        scheme, _, credential = auth.partition(" ")
        given: str | None = None
        if scheme.lower() == "bearer" and credential:
            given = credential.strip()
        elif scheme.lower() == "basic" and credential:
            try:
                given = base64.b64decode(credential).decode().split(":", 1)[0]
            except ValueError:
                given = None
        if not given:
            raise _StripeError(
                401,
                "invalid_request_error",
                "You did not provide an API key. You need to provide your API key in the "
                "Authorization header, using Bearer auth (e.g. 'Authorization: Bearer "
                "YOUR_SECRET_KEY').",
            )
        if given != self.api_key:
            raise _StripeError(
                401, "invalid_request_error", f"Invalid API Key provided: {_mask_key(given)}"
            )

    def _rate_limit(self) -> None:
        if self.rate_limit_per_second is None:
            return
        with self._lock:
            _admit(self._recent, self.rate_limit_per_second)

    def _endpoint_rate_limit(self, route: _Route) -> None:
        """Stripe's second limiter: each named operation (method + path with ids) has
        its own rate; a request it refuses still counted against the global one."""
        if self.endpoint_rate_limit_per_second is None:
            return
        with self._lock:
            recent = self._endpoint_recent.setdefault(
                (route.method, route.pattern.pattern), deque()
            )
            _admit(recent, self.endpoint_rate_limit_per_second)

    def _next_fault(self, method: str, path: str) -> Fault:
        route = f"{method} {path}"
        with self._lock:
            for pattern, queue in self._scripts:
                if queue and fnmatch.fnmatchcase(route, pattern):
                    return queue.popleft()
        return "ok"

    @staticmethod
    def _early_fault(fault: Fault) -> None:
        """Faults that strike before the endpoint executes, so nothing is saved."""
        if fault == 500:
            raise _StripeError(
                500,
                "api_error",
                "An unknown error occurred while processing your request.",
            )
        if fault == 429:
            raise _rate_limited()
        if fault == "lock_timeout":
            raise _StripeError(
                429,
                "invalid_request_error",
                "This object cannot be accessed right now because another API request or "
                "Stripe process is currently accessing it. If you see this error "
                "intermittently, retry the request.",
                code="lock_timeout",
                headers={"Stripe-Should-Retry": "true"},
            )
        if fault == 409:
            raise _StripeError(
                409,
                "invalid_request_error",
                "This object cannot be accessed right now because another API request or "
                "Stripe process is currently accessing it. Retry the request.",
                code="lock_timeout",
            )
        if fault == "drop":
            raise _DroppedConnectionError

    def _match(self, method: str, path: str) -> tuple[_Route, tuple[str, ...]]:
        for route in self._routes:
            if route.method == method:
                found = route.pattern.fullmatch(path)
                if found:
                    return route, found.groups()
        raise _StripeError(
            404,
            "invalid_request_error",
            f"Unrecognized request URL ({method}: {path}). Please see https://stripe.com/docs",
        )

    def _claim(
        self, key: str, fingerprint: tuple[str, str, tuple[tuple[str, str], ...]]
    ) -> _Saved | None:
        """The saved answer for ``key``, or mark ``key`` in flight for this request."""
        with self._lock:
            saved = self._saved.get(key)
            if saved is not None and self.now() - saved.saved_at >= IDEMPOTENCY_KEY_TTL:
                del self._saved[key]  # pruned: the key starts a new request
                saved = None
            if saved is not None:
                if saved.fingerprint[:2] != fingerprint[:2]:
                    raise _StripeError(
                        400,
                        "idempotency_error",
                        "Keys for idempotent requests can only be used for the same endpoint "
                        f"they were first used for ('{saved.fingerprint[0]} "
                        f"{saved.fingerprint[1]}' vs '{fingerprint[0]} {fingerprint[1]}').",
                    )
                if saved.fingerprint != fingerprint:
                    raise _StripeError(
                        400,
                        "idempotency_error",
                        "Keys for idempotent requests can only be used with the same "
                        "parameters they were first used with. Try using a key other than "
                        f"'{key}' if you meant to execute a different request.",
                    )
                return saved
            if key in self._in_flight:
                raise _StripeError(
                    409,
                    "idempotency_error",
                    "There is currently another in-progress request using this Idempotent "
                    f"Key (that probably means you submitted twice, and the other request is "
                    f"still going through): {key}. Please try again later.",
                    code="idempotency_key_in_use",
                )
            self._in_flight.add(key)
            return None

    @staticmethod
    def _replay(saved: _Saved) -> _Reply:
        headers = dict(saved.headers)
        headers["Idempotent-Replayed"] = "true"
        headers["Original-Request"] = saved.request_id
        return _Reply(saved.status, saved.body, headers)

    def _execute(
        self,
        execute: Execute,
        fault: Fault,
        key: str | None,
        fingerprint: tuple[str, str, tuple[tuple[str, str], ...]],
        request_id: str,
    ) -> _Reply:
        if fault == "timeout":
            self._stopping.wait(self.slow_seconds)
        with self._lock:
            try:
                if fault == "500_saved":
                    raise _StripeError(
                        500,
                        "api_error",
                        "An unknown error occurred while processing your request.",
                        headers={"Stripe-Should-Retry": "false"},
                    )
                status, body, headers = 200, json.dumps(execute()).encode(), {}
            except _StripeError as err:
                status, body, headers = err.status, json.dumps(err.body).encode(), err.headers
            if key is not None:
                self._saved[key] = _Saved(
                    fingerprint, status, body, dict(headers), request_id, self.now()
                )
        if fault == "commit_then_500":
            raise _StripeError(
                500, "api_error", "An unknown error occurred while processing your request."
            )
        if fault == "commit_then_drop":
            raise _DroppedConnectionError
        return _Reply(status, body, dict(headers))

    # -- endpoints ---------------------------------------------------------------------

    def _build_routes(self) -> list[_Route]:
        table: list[tuple[str, str, Prepare]] = [
            ("POST", r"/v1/transfers", self._create_transfer),
            ("GET", r"/v1/transfers", self._list_transfers),
            ("GET", rf"/v1/transfers/{_PATH_ID}", self._get_transfer),
            ("POST", rf"/v1/transfers/{_PATH_ID}/reversals", self._create_reversal),
            ("GET", rf"/v1/transfers/{_PATH_ID}/reversals", self._list_reversals),
            ("POST", rf"/v1/customers/{_PATH_ID}/balance_transactions", self._create_credit),
            ("GET", rf"/v1/customers/{_PATH_ID}/balance_transactions", self._list_credits),
            ("POST", r"/v1/coupons", self._create_coupon),
            ("GET", r"/v1/coupons", self._list_coupons),
            ("GET", rf"/v1/coupons/{_PATH_ID}", self._get_coupon),
            ("POST", r"/v1/promotion_codes", self._create_promotion_code),
            ("GET", r"/v1/promotion_codes", self._list_promotion_codes),
            ("GET", rf"/v1/promotion_codes/{_PATH_ID}", self._get_promotion_code),
            ("GET", rf"/v1/charges/{_PATH_ID}", self._get_charge),
            ("GET", rf"/v1/payment_intents/{_PATH_ID}", self._get_payment_intent),
            ("GET", r"/v1/events", self._list_events),
            ("POST", r"/v1/accounts", self._create_account),
            ("GET", rf"/v1/accounts/{_PATH_ID}", self._get_account),
            ("POST", r"/v1/account_links", self._create_account_link),
        ]
        return [_Route(m, re.compile(p), f) for m, p, f in table]

    def _created(self) -> int:
        return int(self.now().timestamp())

    def _emit(self, type_: str, obj: JSON, **extra: Any) -> JSON:
        event: JSON = {
            "id": _new_id("evt"),
            "object": "event",
            "api_version": "2026-10-28.endive",
            "created": self._created(),
            "data": {"object": copy.deepcopy(obj), **extra},
            "livemode": False,
            "pending_webhooks": 0,
            "request": {"id": None, "idempotency_key": None},
            "type": type_,
        }
        self._events.add(event, "type")
        return event

    def _create_transfer(self, params: JSON, args: tuple[str, ...]) -> Execute:
        _reject_unknown(
            params,
            (
                "amount",
                "currency",
                "destination",
                "transfer_group",
                "description",
                "metadata",
                "source_transaction",
                "source_type",
            ),
        )
        amount = _integer(params, "amount", required=True, minimum=1)
        currency = _currency(params)
        destination = _string(params, "destination", required=True)
        group = _string(params, "transfer_group")
        description = _string(params, "description")
        metadata = _metadata(params)
        assert amount is not None
        assert currency is not None
        assert destination is not None

        def execute() -> JSON:
            if destination not in self._accounts:
                raise _missing("destination", destination, status=400, param="destination")
            onboarded = self._connect_accounts.get(destination)
            if onboarded is not None and onboarded["capabilities"]["transfers"] != "active":
                raise _invalid(
                    "Your destination account needs to have at least one of the following "
                    "capabilities enabled: transfers, crypto_transfers, legacy_payments",
                    code="insufficient_capabilities_for_transfer",
                    param="destination",
                )
            if self._available is not None:
                if self._available.get(currency, 0) < amount:
                    raise _invalid(
                        "You have insufficient available funds in your Stripe account. Try "
                        "adding funds directly to your available balance.",
                        code="balance_insufficient",
                    )
                self._available[currency] -= amount
            connected = self._account_balances.get(destination)
            if connected is not None:
                connected[currency] = connected.get(currency, 0) + amount
            transfer_id = _new_id("tr")
            transfer: JSON = {
                "id": transfer_id,
                "object": "transfer",
                "amount": amount,
                "amount_reversed": 0,
                "balance_transaction": _new_id("txn"),
                "created": self._created(),
                "currency": currency,
                "description": description,
                "destination": destination,
                "destination_payment": _new_id("py"),
                "livemode": False,
                "metadata": metadata,
                "reversals": {
                    "object": "list",
                    "data": [],
                    "has_more": False,
                    "total_count": 0,
                    "url": f"/v1/transfers/{transfer_id}/reversals",
                },
                "reversed": False,
                "source_transaction": None,
                "source_type": "card",
                "transfer_group": group,
            }
            self._transfers.add(transfer, "transfer_group", "destination")
            self._emit("transfer.created", transfer)
            return copy.deepcopy(transfer)

        return execute

    def _list_transfers(self, params: JSON, args: tuple[str, ...]) -> Execute:
        _reject_unknown(
            params,
            (
                "created",
                "destination",
                "transfer_group",
                "limit",
                "starting_after",
                "ending_before",
            ),
        )
        group = _string(params, "transfer_group")
        destination = _string(params, "destination")
        created = _created_filter(params)

        def execute() -> JSON:
            if group is not None:
                items = self._transfers.newest_first("transfer_group", group)
            elif destination is not None:
                items = self._transfers.newest_first("destination", destination)
            else:
                items = self._transfers.newest_first()
            items = [
                t
                for t in items
                if (destination is None or t["destination"] == destination)
                and created(t["created"])
            ]
            return _page(items, params, "/v1/transfers", "transfer")

        return execute

    def _get_transfer(self, params: JSON, args: tuple[str, ...]) -> Execute:
        _reject_unknown(params, ())
        (transfer_id,) = args

        def execute() -> JSON:
            transfer = self._transfers.by_id.get(transfer_id)
            if transfer is None:
                raise _missing("transfer", transfer_id)
            return copy.deepcopy(transfer)

        return execute

    def _create_reversal(self, params: JSON, args: tuple[str, ...]) -> Execute:
        _reject_unknown(params, ("amount", "description", "metadata", "refund_application_fee"))
        amount = _integer(params, "amount", minimum=1)
        metadata = _metadata(params)
        (transfer_id,) = args

        def execute() -> JSON:
            transfer = self._transfers.by_id.get(transfer_id)
            if transfer is None:
                raise _missing("transfer", transfer_id)
            remaining = transfer["amount"] - transfer["amount_reversed"]
            if remaining <= 0:
                raise _invalid(
                    f"Transfer {transfer_id} has already been fully reversed.",
                    code="transfer_already_reversed",
                )
            reverse = remaining if amount is None else amount
            if reverse > remaining:
                raise _invalid(
                    f"Reversal amount ({reverse}) is greater than the amount remaining on "
                    f"the transfer ({remaining}).",
                    param="amount",
                )
            connected = self._account_balances.get(transfer["destination"])
            currency = transfer["currency"]
            if connected is not None:
                if connected.get(currency, 0) < reverse:
                    raise _invalid(
                        "The connected account does not have a sufficient balance available "
                        "to cover this transfer reversal.",
                        code="balance_insufficient",
                    )
                connected[currency] -= reverse
            reversal: JSON = {
                "id": _new_id("trr"),
                "object": "transfer_reversal",
                "amount": reverse,
                "balance_transaction": _new_id("txn"),
                "created": self._created(),
                "currency": transfer["currency"],
                "destination_payment_refund": _new_id("pyr"),
                "metadata": metadata,
                "source_refund": None,
                "transfer": transfer_id,
            }
            self._reversals.add(reversal, "transfer")
            transfer["amount_reversed"] += reverse
            transfer["reversed"] = transfer["amount_reversed"] >= transfer["amount"]
            listed = self._reversals.newest_first("transfer", transfer_id)
            transfer["reversals"]["data"] = [copy.deepcopy(r) for r in listed[:10]]
            transfer["reversals"]["total_count"] = len(listed)
            transfer["reversals"]["has_more"] = len(listed) > 10
            if self._available is not None:
                currency = transfer["currency"]
                self._available[currency] = self._available.get(currency, 0) + reverse
            self._emit("transfer.reversed", transfer)
            return copy.deepcopy(reversal)

        return execute

    def _list_reversals(self, params: JSON, args: tuple[str, ...]) -> Execute:
        _reject_unknown(params, ("limit", "starting_after", "ending_before"))
        (transfer_id,) = args

        def execute() -> JSON:
            if transfer_id not in self._transfers.by_id:
                raise _missing("transfer", transfer_id)
            items = self._reversals.newest_first("transfer", transfer_id)
            return _page(items, params, f"/v1/transfers/{transfer_id}/reversals", "reversal")

        return execute

    def _create_credit(self, params: JSON, args: tuple[str, ...]) -> Execute:
        _reject_unknown(params, ("amount", "currency", "description", "metadata"))
        amount = _integer(params, "amount", required=True)
        currency = _currency(params)
        description = _string(params, "description")
        metadata = _metadata(params)
        (customer_id,) = args
        assert amount is not None
        assert currency is not None
        if amount == 0:
            raise _invalid("The amount must not be zero.", param="amount")

        def execute() -> JSON:
            customer = self._customers.get(customer_id)
            if customer is None:
                raise _missing("customer", customer_id)
            if customer["currency"] is None:
                customer["currency"] = currency
            elif customer["currency"] != currency:
                raise _invalid(
                    f"The customer's balance is in {customer['currency']}; a balance "
                    f"transaction in {currency} cannot be added to it.",
                    param="currency",
                )
            customer["balance"] += amount
            txn: JSON = {
                "id": _new_id("cbtxn"),
                "object": "customer_balance_transaction",
                "amount": amount,
                "checkout_session": None,
                "created": self._created(),
                "credit_note": None,
                "currency": currency,
                "customer": customer_id,
                "description": description,
                "ending_balance": customer["balance"],
                "invoice": None,
                "livemode": False,
                "metadata": metadata,
                "type": "adjustment",
            }
            self._balance_txns.add(txn, "customer")
            return copy.deepcopy(txn)

        return execute

    def _list_credits(self, params: JSON, args: tuple[str, ...]) -> Execute:
        _reject_unknown(params, ("limit", "starting_after", "ending_before", "created", "invoice"))
        (customer_id,) = args
        created = _created_filter(params)

        def execute() -> JSON:
            if customer_id not in self._customers:
                raise _missing("customer", customer_id)
            items = [
                t
                for t in self._balance_txns.newest_first("customer", customer_id)
                if created(t["created"])
            ]
            url = f"/v1/customers/{customer_id}/balance_transactions"
            return _page(items, params, url, "customer_balance_transaction")

        return execute

    def _create_coupon(self, params: JSON, args: tuple[str, ...]) -> Execute:
        _reject_unknown(
            params,
            (
                "id",
                "amount_off",
                "currency",
                "duration",
                "duration_in_months",
                "max_redemptions",
                "metadata",
                "name",
                "percent_off",
                "redeem_by",
                "applies_to",
                "currency_options",
            ),
        )
        coupon_id = _string(params, "id")
        amount_off = _integer(params, "amount_off", minimum=1)
        percent_raw = _string(params, "percent_off")
        currency = _currency(params, required=amount_off is not None)
        duration = _string(params, "duration") or "once"
        months = _integer(params, "duration_in_months", minimum=1)
        max_redemptions = _integer(params, "max_redemptions", minimum=1)
        redeem_by = _integer(params, "redeem_by")
        name = _string(params, "name")
        metadata = _metadata(params)
        if (amount_off is None) == (percent_raw is None):
            raise _invalid("You must pass exactly one of percent_off or amount_off.")
        percent_off: float | None = None
        if percent_raw is not None:
            if not re.fullmatch(r"\d+(\.\d+)?", percent_raw) or not 0 < float(percent_raw) <= 100:
                raise _invalid("Invalid percent_off: must be in (0, 100].", param="percent_off")
            percent_off = float(percent_raw)
        if duration not in ("once", "repeating", "forever"):
            raise _invalid(f"Invalid duration: {duration}", param="duration")
        if (duration == "repeating") != (months is not None):
            raise _invalid(
                "duration_in_months is required with, and only with, duration=repeating.",
                param="duration_in_months",
            )

        def execute() -> JSON:
            new_id = coupon_id or uuid.uuid4().hex[:8]
            if new_id in self._coupons.by_id:
                raise _invalid("Coupon already exists.", code="resource_already_exists", param="id")
            coupon: JSON = {
                "id": new_id,
                "object": "coupon",
                "amount_off": amount_off,
                "created": self._created(),
                "currency": currency,
                "duration": duration,
                "duration_in_months": months,
                "livemode": False,
                "max_redemptions": max_redemptions,
                "metadata": metadata,
                "name": name,
                "percent_off": percent_off,
                "redeem_by": redeem_by,
                "times_redeemed": 0,
                "valid": True,
            }
            self._coupons.add(coupon)
            return copy.deepcopy(coupon)

        return execute

    def _create_promotion_code(self, params: JSON, args: tuple[str, ...]) -> Execute:
        _reject_unknown(
            params,
            (
                "promotion",
                "coupon",
                "code",
                "active",
                "customer",
                "expires_at",
                "max_redemptions",
                "metadata",
                "restrictions",
            ),
        )
        promotion = params.get("promotion")
        legacy_coupon = _string(params, "coupon")
        coupon_id: str | None = legacy_coupon
        if isinstance(promotion, dict):
            if promotion.get("type") != "coupon":
                raise _invalid("promotion[type] must be coupon.", param="promotion[type]")
            coupon_id = promotion.get("coupon")
        if not isinstance(coupon_id, str) or not coupon_id:
            raise _invalid(
                "Missing required param: promotion[coupon].",
                code="parameter_missing",
                param="promotion[coupon]",
            )
        code = _string(params, "code") or uuid.uuid4().hex[:8].upper()
        if not re.fullmatch(r"[A-Za-z0-9_\-]{1,500}", code):
            raise _invalid("Invalid code.", param="code")
        active = _string(params, "active") != "false"
        customer = _string(params, "customer")
        expires_at = _integer(params, "expires_at")
        max_redemptions = _integer(params, "max_redemptions", minimum=1)
        metadata = _metadata(params)

        def execute() -> JSON:
            if coupon_id not in self._coupons.by_id:
                raise _missing("coupon", coupon_id, status=400, param="promotion[coupon]")
            if active and any(
                p["active"] and p["code"].lower() == code.lower()
                for p in self._promotion_codes.by_id.values()
            ):
                raise _invalid(
                    f"An active promotion code with `code: {code}` already exists.",
                    code="resource_already_exists",
                    param="code",
                )
            promo: JSON = {
                "id": _new_id("promo"),
                "object": "promotion_code",
                "active": active,
                "code": code,
                "created": self._created(),
                "customer": customer,
                "expires_at": expires_at,
                "livemode": False,
                "max_redemptions": max_redemptions,
                "metadata": metadata,
                "promotion": {"coupon": coupon_id, "type": "coupon"},
                "restrictions": {
                    "currency_options": {},
                    "first_time_transaction": False,
                    "minimum_amount": None,
                    "minimum_amount_currency": None,
                },
                "times_redeemed": 0,
            }
            if legacy_coupon is not None:
                promo["coupon"] = copy.deepcopy(self._coupons.by_id[coupon_id])
            self._promotion_codes.add(promo)
            return copy.deepcopy(promo)

        return execute

    def _list_coupons(self, params: JSON, args: tuple[str, ...]) -> Execute:
        _reject_unknown(params, ("created", "limit", "starting_after", "ending_before"))
        created = _created_filter(params)

        def execute() -> JSON:
            items = [c for c in self._coupons.newest_first() if created(c["created"])]
            return _page(items, params, "/v1/coupons", "coupon")

        return execute

    def _get_coupon(self, params: JSON, args: tuple[str, ...]) -> Execute:
        _reject_unknown(params, ())
        (coupon_id,) = args

        def execute() -> JSON:
            coupon = self._coupons.by_id.get(coupon_id)
            if coupon is None:
                raise _missing("coupon", coupon_id)
            return copy.deepcopy(coupon)

        return execute

    def _list_promotion_codes(self, params: JSON, args: tuple[str, ...]) -> Execute:
        _reject_unknown(
            params,
            (
                "active",
                "code",
                "coupon",
                "created",
                "customer",
                "limit",
                "starting_after",
                "ending_before",
            ),
        )
        active = _string(params, "active")
        if active not in (None, "true", "false"):
            raise _invalid(f"Invalid boolean: {active}", param="active")
        code = _string(params, "code")
        coupon = _string(params, "coupon")
        customer = _string(params, "customer")
        created = _created_filter(params)

        def execute() -> JSON:
            items = [
                p
                for p in self._promotion_codes.newest_first()
                if created(p["created"])
                # Stripe matches the code regardless of case.
                and (code is None or p["code"].lower() == code.lower())
                and (coupon is None or p["promotion"]["coupon"] == coupon)
                and (customer is None or p["customer"] == customer)
                and (active is None or p["active"] == (active == "true"))
            ]
            return _page(items, params, "/v1/promotion_codes", "promotion_code")

        return execute

    def _get_promotion_code(self, params: JSON, args: tuple[str, ...]) -> Execute:
        _reject_unknown(params, ())
        (promo_id,) = args

        def execute() -> JSON:
            promo = self._promotion_codes.by_id.get(promo_id)
            if promo is None:
                raise _missing("promotion_code", promo_id)
            return copy.deepcopy(promo)

        return execute

    def _get_charge(self, params: JSON, args: tuple[str, ...]) -> Execute:
        _reject_unknown(params, ())
        expand = _expansions(params, ("payment_intent",))
        (charge_id,) = args

        def execute() -> JSON:
            charge = self._charges.by_id.get(charge_id)
            if charge is None:
                raise _missing("charge", charge_id)
            found = copy.deepcopy(charge)
            intent = self._payment_intents.by_id.get(found["payment_intent"] or "")
            if "payment_intent" in expand and intent is not None:
                found["payment_intent"] = copy.deepcopy(intent)
            return found

        return execute

    def _get_payment_intent(self, params: JSON, args: tuple[str, ...]) -> Execute:
        _reject_unknown(params, ("client_secret",))
        expand = _expansions(params, ("latest_charge",))
        (intent_id,) = args

        def execute() -> JSON:
            intent = self._payment_intents.by_id.get(intent_id)
            if intent is None:
                raise _missing("payment_intent", intent_id, param="intent")
            found = copy.deepcopy(intent)
            charge = self._charges.by_id.get(found["latest_charge"] or "")
            if "latest_charge" in expand and charge is not None:
                found["latest_charge"] = copy.deepcopy(charge)
            return found

        return execute

    def _list_events(self, params: JSON, args: tuple[str, ...]) -> Execute:
        _reject_unknown(
            params,
            (
                "created",
                "type",
                "types",
                "limit",
                "starting_after",
                "ending_before",
                "delivery_success",
            ),
        )
        type_ = _string(params, "type")
        types = params.get("types")
        if types is not None and (
            not isinstance(types, list) or not all(isinstance(t, str) for t in types)
        ):
            raise _invalid("Invalid array", param="types")
        if type_ is not None and types is not None:
            raise _invalid("You may only specify one of these parameters: type, types.")
        patterns = [type_] if type_ is not None else list(types or [])
        created = _created_filter(params)

        def execute() -> JSON:
            items = [
                e
                for e in self._events.newest_first()
                if created(e["created"])
                and (not patterns or any(fnmatch.fnmatchcase(e["type"], p) for p in patterns))
            ]
            return _page(items, params, "/v1/events", "event")

        return execute

    # -- Connect onboarding ------------------------------------------------------------

    @property
    def connect_accounts(self) -> list[JSON]:
        """Every account made through ``POST /v1/accounts``, in its current state."""
        with self._lock:
            return [copy.deepcopy(a) for a in self._connect_accounts.values()]

    def _create_account(self, params: JSON, args: tuple[str, ...]) -> Execute:
        _reject_unknown(params, ("type", "capabilities", "metadata", "country", "email"))
        kind = _string(params, "type", required=True)
        if kind not in ("express", "standard", "custom"):
            raise _invalid(f"Invalid type: {kind}", param="type")
        capabilities = params.get("capabilities") or {}
        if not isinstance(capabilities, dict):
            raise _invalid("Invalid object", param="capabilities")
        requested = sorted(
            name
            for name, ask in capabilities.items()
            if isinstance(ask, dict) and ask.get("requested") == "true"
        )
        metadata = _metadata(params)
        country = _string(params, "country") or "FR"

        def execute() -> JSON:
            account_id = _new_id("acct")
            account: JSON = {
                "id": account_id,
                "object": "account",
                "type": kind,
                "business_type": None,
                "capabilities": dict.fromkeys(requested, "inactive"),
                "charges_enabled": False,
                "payouts_enabled": False,
                "details_submitted": False,
                "country": country,
                "created": self._created(),
                "default_currency": "eur",
                "metadata": metadata,
                "requirements": {"currently_due": ["external_account", "tos_acceptance.date"]},
            }
            self._connect_accounts[account_id] = account
            self._accounts.add(account_id)
            return copy.deepcopy(account)

        return execute

    def _get_account(self, params: JSON, args: tuple[str, ...]) -> Execute:
        _reject_unknown(params, ())
        (account_id,) = args

        def execute() -> JSON:
            found = self._connect_accounts.get(account_id)
            if found is None:
                raise _missing("account", account_id)
            return copy.deepcopy(found)

        return execute

    def _create_account_link(self, params: JSON, args: tuple[str, ...]) -> Execute:
        _reject_unknown(params, ("account", "type", "return_url", "refresh_url", "collect"))
        account_id = _string(params, "account", required=True)
        kind = _string(params, "type", required=True)
        if kind not in ("account_onboarding", "account_update"):
            raise _invalid(f"Invalid type: {kind}", param="type")
        return_url = _string(params, "return_url", required=True)
        refresh_url = _string(params, "refresh_url", required=True)
        for name, url in (("return_url", return_url), ("refresh_url", refresh_url)):
            if not (url or "").startswith(("http://", "https://")):
                raise _invalid("Not a valid URL", param=name)

        def execute() -> JSON:
            if account_id not in self._connect_accounts:
                raise _missing("account", str(account_id), status=400, param="account")
            link_id = uuid.uuid4().hex
            created = self._created()
            self._account_links[link_id] = {
                "account": account_id,
                "return_url": return_url,
                "refresh_url": refresh_url,
                "expires_at": created + ACCOUNT_LINK_SECONDS,
                "state": "new",
            }
            return {
                "object": "account_link",
                "created": created,
                "expires_at": created + ACCOUNT_LINK_SECONDS,
                "url": f"{self.url}{HOSTED_PREFIX}{link_id}",
            }

        return execute

    def _hosted(self, method: str, link_id: str) -> _Reply:
        """The stand-in for Stripe's hosted onboarding page."""
        with self._lock:
            link = self._account_links.get(link_id)
            if link is None:
                return _html(404, "<h1>Not found</h1>")
            expired = self._created() >= link["expires_at"]
            if method == "GET" and link["state"] == "new" and not expired:
                link["state"] = "opened"
                return _html(200, _HOSTED_FORM.format(link_id=link_id))
            if method == "POST" and link["state"] == "opened" and not expired:
                link["state"] = "used"
                account = self._connect_accounts[link["account"]]
                account.update(
                    details_submitted=True,
                    charges_enabled=True,
                    payouts_enabled=True,
                    requirements={"currently_due": []},
                )
                account["capabilities"] = {**account["capabilities"], "transfers": "active"}
                event = self._emit(
                    "account.updated",
                    account,
                    previous_attributes={"charges_enabled": False, "payouts_enabled": False},
                )
                event["account"] = account["id"]
                target = link["return_url"]
            else:
                return _html(
                    200, _HOSTED_EXPIRED.format(refresh_url=html.escape(link["refresh_url"]))
                )
        self._deliver(event)
        return _Reply(303, b"", {"Location": target, "Content-Type": "text/html"})

    def _deliver(self, event: JSON) -> None:
        """POST the event, signed, to :attr:`webhook_url` (best effort, as Stripe retries)."""
        if self.webhook_url is None:
            return
        payload = json.dumps(event).encode()
        stamp = int(time.time())
        signature = hmac.new(
            self.webhook_secret.encode(), f"{stamp}.".encode() + payload, hashlib.sha256
        ).hexdigest()
        headers = {
            "Content-Type": "application/json",
            "Stripe-Signature": f"t={stamp},v1={signature}",
        }
        with contextlib.suppress(httpx.HTTPError):
            httpx.post(self.webhook_url, content=payload, headers=headers, timeout=5)


HOSTED_PREFIX = "/connect/hosted/"
ACCOUNT_LINK_SECONDS = 300
_HOSTED_FORM = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Set up payouts (test)</title></head>
<body><main><h1>Set up payouts</h1>
<p>Stand-in for Stripe's hosted onboarding: no details are asked in test mode.</p>
<form method="post" action="{link_id}"><button type="submit">Agree and submit</button></form>
</main></body></html>"""
_HOSTED_EXPIRED = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Link expired</title></head>
<body><main><h1>This link has expired</h1>
<p><a href="{refresh_url}">Get a new link</a></p></main></body></html>"""


def _html(status: int, text: str) -> _Reply:
    return _Reply(status, text.encode(), {"Content-Type": "text/html; charset=utf-8"})


def _expansions(params: JSON, expandable: Sequence[str]) -> set[str]:
    """The ``expand[]`` fields asked for, each one the object can expand; Stripe refuses
    any other (a nested path included) before executing."""
    raw = params.get("expand")
    if raw is None:
        return set()
    if not isinstance(raw, list) or not all(isinstance(f, str) for f in raw):
        raise _invalid("Invalid array", param="expand")
    for name in raw:
        if name not in expandable:
            raise _invalid(f"This property cannot be expanded ({name}).", param="expand")
    return set(raw)


class _DroppedConnectionError(Exception):
    """Close the connection without answering."""


def _admit(recent: deque[float], per_second: float) -> None:
    """One more request in a sliding one-second window holding ``recent``, or a 429."""
    now = time.monotonic()
    while recent and now - recent[0] >= 1.0:
        recent.popleft()
    if len(recent) >= per_second:
        raise _rate_limited()
    recent.append(now)


def _rate_limited() -> _StripeError:
    return _StripeError(
        429,
        "invalid_request_error",
        "Too many requests hit the API too quickly. We recommend an exponential backoff of "
        "your requests.",
        code="rate_limit",
        headers={"Retry-After": "1"},
    )


def _created_filter(params: JSON) -> Callable[[int], bool]:
    """The ``created`` list filter: an exact timestamp or ``created[gt|gte|lt|lte]``."""
    raw = params.get("created")
    if raw is None:
        return lambda _created: True
    if isinstance(raw, str):
        exact = _integer(params, "created")
        return lambda created: created == exact
    if not isinstance(raw, dict):
        raise _invalid("Invalid created filter", param="created")
    bounds: dict[str, int] = {}
    for op, value in raw.items():
        if op not in ("gt", "gte", "lt", "lte") or not isinstance(value, str):
            raise _invalid(f"Received unknown parameter: created[{op}]", param=f"created[{op}]")
        if not _INT.fullmatch(value):
            raise _invalid(f"Invalid integer: {value}", param=f"created[{op}]")
        bounds[op] = int(value)

    def accept(created: int) -> bool:
        return (
            ("gt" not in bounds or created > bounds["gt"])
            and ("gte" not in bounds or created >= bounds["gte"])
            and ("lt" not in bounds or created < bounds["lt"])
            and ("lte" not in bounds or created <= bounds["lte"])
        )

    return accept


def _page(items: list[JSON], params: JSON, url: str, kind: str) -> JSON:
    """One page of a newest-first list, with Stripe's cursor rules and ``has_more``."""
    limit = _integer(params, "limit", minimum=1)
    limit = 10 if limit is None else limit
    if limit > 100:
        raise _invalid("This value must be less than or equal to 100.", param="limit")
    after = _string(params, "starting_after")
    before = _string(params, "ending_before")
    if after is not None and before is not None:
        raise _invalid(
            "You may only specify one of these parameters: ending_before, starting_after."
        )
    cursor = after if after is not None else before
    if cursor is None:
        window, has_more = items[:limit], len(items) > limit
    else:
        position = next((i for i, item in enumerate(items) if item["id"] == cursor), None)
        if position is None:
            param = "starting_after" if after is not None else "ending_before"
            raise _missing(kind, cursor, status=400, param=param)
        if after is not None:
            window = items[position + 1 : position + 1 + limit]
            has_more = position + 1 + limit < len(items)
        else:
            start = max(0, position - limit)
            window, has_more = items[start:position], start > 0
    return {
        "object": "list",
        "data": [copy.deepcopy(item) for item in window],
        "has_more": has_more,
        "url": url,
    }
