"""A local fake of the HubSpot CRM endpoints the HubSpot source reads, over real HTTP.

:class:`FakeHubSpot` serves on a free port of ``127.0.0.1`` (the stdlib's threading HTTP
server) what HubSpot documents for:

* ``POST /crm/v3/objects/{companies|contacts|deals|tickets}/search``: ``filterGroups``
  (OR of groups, AND within one; at most 5 groups, 10 filters per group, 25 in all),
  operators ``EQ NEQ LT LTE GT GTE BETWEEN IN NOT_IN HAS_PROPERTY NOT_HAS_PROPERTY``
  (datetime properties compare as epoch milliseconds, as filter values are written),
  at most one sort, ``limit`` 1-100, ``properties``, and ``after`` offsets. The answer is
  ``{"total", "results", "paging": {"next": {"after"}}}``; a search never returns more
  than 10,000 results (``max_results``): asking ``after`` beyond that is a 400.
* ``POST /crm/v4/associations/{from}/{to}/batch/read``: ``{"results": [{"from": {"id"},
  "to": [{"toObjectId", "associationTypes": [{"category", "typeId", "label"}]}]}]}``,
  207 with ``errors`` when some ids have no associations.
* ``POST /crm/v3/objects/contacts/batch/read``: contacts by id with the asked properties.
* ``POST /crm/v3/objects/tasks``: creates a task (``properties`` with the required
  ``hs_timestamp``; ``associations`` to existing contacts, HubSpot-defined type 204),
  answered 201 with the task; an association to a missing contact is a 400. Created
  tasks are kept in :attr:`FakeHubSpot.tasks`.

Records carry HubSpot's default properties (``hs_object_id``, ``createdate``, and the
modification time: ``lastmodifieddate`` on contacts, ``hs_lastmodifieddate`` elsewhere)
as ISO 8601 strings in UTC. The fake's clock (:attr:`FakeHubSpot.now`) only moves when a
test moves it; a record added or touched is modified "now" unless told otherwise.

Every request needs ``Authorization: Bearer <access_token>``, else 401 with HubSpot's
error body (``{"status": "error", "message", "correlationId", "category"}``), which never
echoes the token.

Faults are scripted per route, one consumed per matching request:
``fake.script("POST /crm/v3/objects/deals/search", [429, 500, "ok"])``. See
:data:`FAULTS`. A 429 carries ``Retry-After`` (``retry_after`` seconds) and HubSpot's
rate-limit body (``"policyName": "SECONDLY"``).

:class:`LocalHTTPFake` is the serving, recording and fault machinery; the Delighted fake
is built on it too.
"""

from __future__ import annotations

import contextlib
import copy
import fnmatch
import json
import socket
import sys
import threading
import traceback
import uuid
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

JSON = dict[str, Any]
Fault = int | str

FAULTS: frozenset[Fault] = frozenset({"ok", 429, 500, 502, 503, 504, "malformed_json", "drop"})
"""``"ok"`` lets a request through; ``429`` rate-limits it (with ``Retry-After``); a 5xx
answers that error; ``"malformed_json"`` answers 200 with a truncated JSON body;
``"drop"`` closes the connection without answering."""

OBJECT_TYPES = ("companies", "contacts", "deals", "tickets")
MODIFIED = {
    "companies": "hs_lastmodifieddate",
    "contacts": "lastmodifieddate",
    "deals": "hs_lastmodifieddate",
    "tickets": "hs_lastmodifieddate",
}
OPERATORS = frozenset(
    {"EQ", "NEQ", "LT", "LTE", "GT", "GTE", "BETWEEN", "IN", "NOT_IN"}
    | {"HAS_PROPERTY", "NOT_HAS_PROPERTY"}
)
MAX_FILTER_GROUPS = 5
MAX_FILTERS_PER_GROUP = 10
MAX_FILTERS = 25
MAX_SEARCH_LIMIT = 100
MAX_SEARCH_RESULTS = 10_000
MAX_BATCH_INPUTS = 100
# Shaped like a private app token (pat-<region>-<uuid>); only ever valid here.
TEST_ACCESS_TOKEN = "pat-na1-11111111-2222-3333-4444-555555555555"

# HubSpot-defined association type ids (from -> to), the primary company ones included.
DEAL_TO_PRIMARY_COMPANY = 5
DEAL_TO_COMPANY = 341
DEAL_TO_CONTACT = 3
TICKET_TO_PRIMARY_COMPANY = 26
TICKET_TO_COMPANY = 339
TICKET_TO_CONTACT = 16
TASK_TO_CONTACT = 204
TASK_STATUSES = frozenset({"NOT_STARTED", "COMPLETED"})
TASK_PRIORITIES = frozenset({"LOW", "MEDIUM", "HIGH"})


# -- the shared machinery ---------------------------------------------------------------


class FakeHTTPError(Exception):
    """An error answer, raised anywhere in request handling."""

    def __init__(self, status: int, body: JSON, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(str(body))
        self.status = status
        self.body = body
        self.headers = dict(headers or {})


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request the fake answered (``status`` 0: the connection was dropped)."""

    method: str
    path: str
    query: dict[str, list[str]]
    body: Any
    headers: dict[str, str]
    status: int
    fault: Fault | None = None

    @property
    def route(self) -> str:
        return f"{self.method} {self.path}"


@dataclass(slots=True)
class Reply:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False

    @classmethod
    def json(cls, status: int, payload: object, headers: Mapping[str, str] | None = None) -> Reply:
        return cls(status, json.dumps(payload).encode(), dict(headers or {}))


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, fake: LocalHTTPFake) -> None:
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
        # A client that hung up, or a stop() mid-request, is expected here.
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a requests session expects
    server: _Server
    timeout = 30
    # Headers and body go out in two writes; with Nagle on, the client's delayed ACK
    # would stall every keep-alive response by ~40 ms.
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

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        reply = self.server.fake.handle(method, self.path, headers, body)
        if reply.drop:
            self.close_connection = True
            return
        try:
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json;charset=utf-8")
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)
        except ConnectionError:
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the per-request stderr line."""


class LocalHTTPFake:
    """A provider fake served on ``127.0.0.1`` with recorded requests and scripted faults.

    Subclasses implement :meth:`authenticate`, :meth:`route` and :meth:`error_body`.

    Args:
        retry_after: the ``Retry-After`` value a scripted 429 carries, in seconds.
    """

    name = "fake"

    def __init__(self, *, retry_after: str = "2") -> None:
        self.retry_after = retry_after
        self._lock = threading.RLock()
        self._scripts: list[tuple[str, deque[Fault]]] = []
        self._requests: list[RecordedRequest] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> Self:
        """Serve on a free port of 127.0.0.1 in a background thread."""
        if self._server is None:
            self._server = _Server(self)
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.01},
                name=f"fake-{self.name}",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close every connection and join the serving thread."""
        server, thread = self._server, self._thread
        if server is None:
            return
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
        """Base address, e.g. ``http://127.0.0.1:54321``."""
        if self._server is None:
            raise RuntimeError(f"the {self.name} fake is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    # -- test controls --------------------------------------------------------------

    def script(self, route: str, faults: Sequence[Fault]) -> None:
        """Queue faults for requests matching ``route``, one consumed per request.

        Args:
            route: ``"METHOD /path"``; ``*`` matches anything.
            faults: see :data:`FAULTS`.
        """
        unknown = [f for f in faults if f not in FAULTS]
        if unknown:
            raise ValueError(f"unknown faults {unknown!r}; known: {sorted(map(str, FAULTS))}")
        with self._lock:
            self._scripts.append((route, deque(faults)))

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request answered (or dropped), in the order of the answers."""
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

    # -- what subclasses provide ----------------------------------------------------

    def authenticate(self, headers: Mapping[str, str]) -> None:
        """Raise :class:`FakeHTTPError` (401) unless the request is authenticated."""
        raise NotImplementedError

    def route(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> Reply:
        """Answer an authenticated, unfaulted request."""
        raise NotImplementedError

    def error_body(self, status: int, message: str) -> JSON:
        """The provider's error body for ``status``."""
        raise NotImplementedError

    # -- request handling -----------------------------------------------------------

    def handle(self, method: str, target: str, headers: Mapping[str, str], raw: bytes) -> Reply:
        parts = urlsplit(target)
        query = parse_qs(parts.query, keep_blank_values=True)
        fault: Fault | None = None
        body: Any = None
        try:
            if raw:
                try:
                    body = json.loads(raw)
                except ValueError:
                    raise FakeHTTPError(400, self.error_body(400, "Invalid input JSON")) from None
            self.authenticate(headers)
            fault = self._next_fault(method, parts.path)
            if fault == "drop":
                reply = Reply(0, drop=True)
            elif isinstance(fault, int):
                reply = self._fault_reply(fault)
            else:
                with self._lock:
                    reply = self.route(method, parts.path, query, body)
                if fault == "malformed_json":
                    reply = Reply(200, reply.body[: max(1, len(reply.body) // 2)], reply.headers)
        except FakeHTTPError as err:
            reply = Reply.json(err.status, err.body, err.headers)
        except Exception:
            # A bug in the fake: say so loudly rather than look like a provider fault.
            traceback.print_exc()
            reply = Reply.json(500, self.error_body(500, "fake crashed"))
        with self._lock:
            self._requests.append(
                RecordedRequest(method, parts.path, query, body, dict(headers), reply.status, fault)
            )
        return reply

    def _fault_reply(self, status: int) -> Reply:
        if status == 429:
            return Reply.json(429, self.rate_limit_body(), {"Retry-After": self.retry_after})
        return Reply.json(status, self.error_body(status, "internal error"))

    def rate_limit_body(self) -> JSON:
        return self.error_body(429, "rate limited")

    def _next_fault(self, method: str, path: str) -> Fault | None:
        route = f"{method} {path}"
        with self._lock:
            for pattern, faults in self._scripts:
                if faults and fnmatch.fnmatchcase(route, pattern):
                    return faults.popleft()
        return None


# -- HubSpot ----------------------------------------------------------------------------


def iso(moment: datetime | date) -> str:
    """HubSpot's datetime form: ``2026-11-02T09:00:00.000Z`` (dates: ``2026-11-02``)."""
    if not isinstance(moment, datetime):
        return moment.isoformat()
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def _comparable(value: object) -> tuple[int, Any]:
    """Numbers and times compare as numbers (times as epoch ms), anything else as text."""
    if isinstance(value, bool):
        return (1, str(value).lower())
    if isinstance(value, int | float):
        return (0, float(value))
    text = str(value).strip()
    try:
        return (0, float(text))
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return (1, text.lower())
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (0, moment.timestamp() * 1000)


@dataclass(slots=True)
class _Stored:
    """One record as served (``record`` may lack an id: malformed on purpose)."""

    object_type: str
    record: JSON
    order: int

    def value(self, name: str) -> Any:
        if name == "hs_object_id":
            return self.record.get("id")
        properties = self.record.get("properties")
        return properties.get(name) if isinstance(properties, dict) else None


class FakeHubSpot(LocalHTTPFake):
    """The fake HubSpot CRM; see the module docstring for what it reproduces.

    Example::

        with FakeHubSpot() as fake:
            company = fake.add_company(name="Acme")
            fake.add_deal(stage="closedwon", amount="12000.00", company_id=company)
            source = HubSpotSource(fake.access_token, fake.url, clock=...)

    Args:
        access_token: the only bearer token the fake accepts.
        now: the fake's clock at start.
        max_results: results one search can page through (HubSpot: 10,000).
        retry_after: ``Retry-After`` seconds on a scripted 429.
    """

    name = "hubspot"

    def __init__(
        self,
        *,
        access_token: str = TEST_ACCESS_TOKEN,
        now: datetime | None = None,
        max_results: int = MAX_SEARCH_RESULTS,
        retry_after: str = "2",
    ) -> None:
        super().__init__(retry_after=retry_after)
        self.access_token = access_token
        self.now = now or datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
        self.max_results = max_results
        self._stored: dict[str, dict[str, _Stored]] = {t: {} for t in OBJECT_TYPES}
        self._associations: dict[tuple[str, str, str], list[tuple[str, list[int]]]] = {}
        self._order = 0
        self._next_id = 101
        # Tasks created through the API, in order (``id``, ``properties``, ``contacts``).
        self.tasks: list[JSON] = []

    # -- seeding --------------------------------------------------------------------

    def advance(self, **delta: float) -> datetime:
        """Move the fake's clock forward (``timedelta`` keywords); returns the new now."""
        with self._lock:
            self.now += timedelta(**delta)
            return self.now

    def add_company(
        self,
        company_id: str | None = None,
        *,
        name: str | None = "Acme GmbH",
        domain: str | None = "acme.example",
        customer_since: datetime | date | None = None,
        modified_at: datetime | None = None,
        **properties: object,
    ) -> str:
        """Add a company; ``customer_since`` fills ``hs_lifecyclestage_customer_date``."""
        return self._add(
            "companies",
            company_id,
            modified_at,
            {
                "name": name,
                "domain": domain,
                "hs_lifecyclestage_customer_date": iso(customer_since) if customer_since else None,
                **properties,
            },
        )

    def add_contact(
        self,
        contact_id: str | None = None,
        *,
        email: str | None = "ada@acme.example",
        firstname: str | None = "Ada",
        lastname: str | None = "Martin",
        company_id: str | None = None,
        opted_out: bool | None = False,
        referrer_type: str | None = None,
        modified_at: datetime | None = None,
        **properties: object,
    ) -> str:
        """Add a contact; ``company_id`` becomes its ``associatedcompanyid``."""
        return self._add(
            "contacts",
            contact_id,
            modified_at,
            {
                "email": email,
                "firstname": firstname,
                "lastname": lastname,
                "associatedcompanyid": company_id,
                "hs_email_optout": None if opted_out is None else str(opted_out).lower(),
                "referrer_type": referrer_type,
                **properties,
            },
        )

    def add_deal(
        self,
        deal_id: str | None = None,
        *,
        stage: str = "closedwon",
        amount: str | None = "12000.00",
        currency: str | None = "EUR",
        closedate: datetime | None = None,
        pipeline: str = "default",
        dealtype: str | None = "newbusiness",
        referral_code: str | None = None,
        company_id: str | None = None,
        primary_company: bool = True,
        contact_ids: Sequence[str] = (),
        modified_at: datetime | None = None,
        **properties: object,
    ) -> str:
        """Add a deal associated with ``company_id`` (labelled primary unless told
        otherwise) and ``contact_ids``; ``closedate`` defaults to now."""
        deal = self._add(
            "deals",
            deal_id,
            modified_at,
            {
                "dealstage": stage,
                "amount": amount,
                "deal_currency_code": currency,
                "closedate": iso(closedate or self.now),
                "pipeline": pipeline,
                "dealtype": dealtype,
                "referral_code": referral_code,
                **properties,
            },
        )
        if company_id is not None:
            types = [DEAL_TO_COMPANY] + ([DEAL_TO_PRIMARY_COMPANY] if primary_company else [])
            self.associate("deals", deal, "companies", company_id, types)
        for contact in contact_ids:
            self.associate("deals", deal, "contacts", contact, [DEAL_TO_CONTACT])
        return deal

    def add_ticket(
        self,
        ticket_id: str | None = None,
        *,
        priority: str | None = "MEDIUM",
        createdate: datetime | None = None,
        closed_date: datetime | None = None,
        csat: object = None,
        company_id: str | None = None,
        contact_ids: Sequence[str] = (),
        modified_at: datetime | None = None,
        **properties: object,
    ) -> str:
        """Add a ticket (open unless ``closed_date``); ``csat`` fills ``csat_score``."""
        ticket = self._add(
            "tickets",
            ticket_id,
            modified_at,
            {
                "hs_ticket_priority": priority,
                "createdate": iso(createdate or self.now),
                "closed_date": iso(closed_date) if closed_date else None,
                "csat_score": None if csat is None else str(csat),
                "hs_pipeline": "0",
                "hs_pipeline_stage": "4" if closed_date else "1",
                **properties,
            },
        )
        if company_id is not None:
            types = [TICKET_TO_COMPANY, TICKET_TO_PRIMARY_COMPANY]
            self.associate("tickets", ticket, "companies", company_id, types)
        for contact in contact_ids:
            self.associate("tickets", ticket, "contacts", contact, [TICKET_TO_CONTACT])
        return ticket

    def add_raw(self, object_type: str, record: JSON) -> None:
        """Serve ``record`` as-is among ``object_type``'s search results (it should
        carry the modification property, or no time filter will match it)."""
        with self._lock:
            self._order += 1
            key = str(record.get("id") or f"raw-{self._order}")
            self._stored[object_type][key] = _Stored(
                object_type, copy.deepcopy(record), self._order
            )

    def associate(
        self, from_type: str, from_id: str, to_type: str, to_id: str, type_ids: Iterable[int]
    ) -> None:
        """Associate two records with HubSpot-defined association ``type_ids``."""
        with self._lock:
            self._associations.setdefault((from_type, from_id, to_type), []).append(
                (to_id, list(type_ids))
            )

    def touch(
        self, object_type: str, object_id: str, *, at: datetime | None = None, **properties: object
    ) -> None:
        """Change ``properties`` (``None`` clears one) and the modification time
        (``at``, default now) of a record."""
        with self._lock:
            stored = self._stored[object_type][object_id]
            props = stored.record["properties"]
            for name, value in properties.items():
                props[name] = None if value is None else str(value)
            moment = at or self.now
            props[MODIFIED[object_type]] = iso(moment)
            stored.record["updatedAt"] = iso(moment)
            # HubSpot's search index moves a modified record to its new place in time.
            self._order += 1
            stored.order = self._order

    def record(self, object_type: str, object_id: str) -> JSON:
        """A copy of a stored record."""
        with self._lock:
            return copy.deepcopy(self._stored[object_type][object_id].record)

    def _add(
        self,
        object_type: str,
        object_id: str | None,
        modified_at: datetime | None,
        properties: Mapping[str, object],
    ) -> str:
        with self._lock:
            if object_id is None:
                object_id = str(self._next_id)
                self._next_id += 1
            moment = modified_at or self.now
            props: dict[str, str | None] = {
                name: None if value is None else str(value) for name, value in properties.items()
            }
            props.setdefault("createdate", iso(self.now))
            props["hs_object_id"] = object_id
            props[MODIFIED[object_type]] = iso(moment)
            self._order += 1
            self._stored[object_type][object_id] = _Stored(
                object_type,
                {
                    "id": object_id,
                    "properties": props,
                    "createdAt": props["createdate"],
                    "updatedAt": iso(moment),
                    "archived": False,
                },
                self._order,
            )
            return object_id

    # -- the API --------------------------------------------------------------------

    def authenticate(self, headers: Mapping[str, str]) -> None:
        if headers.get("authorization") != f"Bearer {self.access_token}":
            raise FakeHTTPError(
                401,
                {
                    **self.error_body(
                        401,
                        "Authentication credentials not found. This API supports OAuth 2.0 "
                        "authentication and you can find more details at "
                        "https://developers.hubspot.com/docs/methods/auth/oauth-overview",
                    ),
                    "category": "INVALID_AUTHENTICATION",
                },
            )

    def error_body(self, status: int, message: str) -> JSON:
        category = {400: "VALIDATION_ERROR", 404: "OBJECT_NOT_FOUND"}.get(status, "ERROR")
        return {
            "status": "error",
            "message": message,
            "correlationId": str(uuid.uuid4()),
            "category": category,
        }

    def rate_limit_body(self) -> JSON:
        return {
            "status": "error",
            "message": "You have reached your secondly limit.",
            "errorType": "RATE_LIMIT",
            "correlationId": str(uuid.uuid4()),
            "policyName": "SECONDLY",
        }

    def route(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> Reply:
        parts = path.strip("/").split("/")
        if method == "POST" and parts[:3] == ["crm", "v3", "objects"] and len(parts) == 5:
            object_type, action = parts[3], parts[4]
            if object_type in OBJECT_TYPES and action == "search":
                return Reply.json(200, self._search(object_type, body))
        if method == "POST" and path == "/crm/v3/objects/contacts/batch/read":
            return self._batch_read("contacts", body)
        if method == "POST" and path == "/crm/v3/objects/tasks":
            return self._create_task(body)
        if (
            method == "POST"
            and parts[:3] == ["crm", "v4", "associations"]
            and parts[5:] == ["batch", "read"]
            and len(parts) == 7
        ):
            return self._associations_read(parts[3], parts[4], body)
        raise FakeHTTPError(404, self.error_body(404, f"No route for {method} {path}"))

    def _create_task(self, body: Any) -> Reply:
        """``POST /crm/v3/objects/tasks``: validated as HubSpot documents, then kept."""
        properties = body.get("properties") if isinstance(body, dict) else None
        if not isinstance(properties, dict) or not properties.get("hs_timestamp"):
            raise self._invalid("Property values were not valid: hs_timestamp is required")
        if properties.get("hs_task_status", "NOT_STARTED") not in TASK_STATUSES:
            raise self._invalid("Property values were not valid: hs_task_status")
        if properties.get("hs_task_priority", "LOW") not in TASK_PRIORITIES:
            raise self._invalid("Property values were not valid: hs_task_priority")
        contacts: list[str] = []
        for association in body.get("associations") or []:
            to = association.get("to") if isinstance(association, dict) else None
            types = association.get("types") if isinstance(association, dict) else None
            if not isinstance(to, dict) or not isinstance(types, list) or not types:
                raise self._invalid("Each association needs 'to' and 'types'")
            if any(
                t.get("associationCategory") != "HUBSPOT_DEFINED"
                or t.get("associationTypeId") != TASK_TO_CONTACT
                for t in types
            ):
                raise self._invalid("Unsupported association type for task to contact")
            contact_id = str(to.get("id"))
            if contact_id not in self._stored["contacts"]:
                raise self._invalid(f"One or more associations are invalid: {contact_id}")
            contacts.append(contact_id)
        task_id = str(self._next_id)
        self._next_id += 1
        stamp = iso(self.now)
        self.tasks.append({"id": task_id, "properties": dict(properties), "contacts": contacts})
        return Reply.json(
            201,
            {
                "id": task_id,
                "properties": {**properties, "hs_object_id": task_id, "hs_createdate": stamp},
                "createdAt": stamp,
                "updatedAt": stamp,
                "archived": False,
            },
        )

    def _invalid(self, message: str) -> FakeHTTPError:
        return FakeHTTPError(400, self.error_body(400, message))

    def _search(self, object_type: str, body: Any) -> JSON:
        if not isinstance(body, dict):
            raise self._invalid("Invalid input JSON: the body must be an object")
        groups = body.get("filterGroups") or []
        if not isinstance(groups, list) or len(groups) > MAX_FILTER_GROUPS:
            raise self._invalid(f"At most {MAX_FILTER_GROUPS} filterGroups are allowed")
        total_filters = 0
        for group in groups:
            filters = group.get("filters") if isinstance(group, dict) else None
            if not isinstance(filters, list) or len(filters) > MAX_FILTERS_PER_GROUP:
                raise self._invalid(f"A filterGroup has at most {MAX_FILTERS_PER_GROUP} filters")
            total_filters += len(filters)
            for item in filters:
                if not isinstance(item, dict) or item.get("operator") not in OPERATORS:
                    raise self._invalid(f"Unknown filter operator in {item!r}")
        if total_filters > MAX_FILTERS:
            raise self._invalid(f"At most {MAX_FILTERS} filters are allowed")
        sorts = body.get("sorts") or []
        if not isinstance(sorts, list) or len(sorts) > 1:
            raise self._invalid("Only one sort is allowed")
        limit = body.get("limit", 10)
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 100:
            raise self._invalid(f"limit must be between 1 and {MAX_SEARCH_LIMIT}")
        after_text = body.get("after") or "0"
        if not str(after_text).isdigit():
            raise self._invalid(f"Invalid after: {after_text!r}")
        after = int(after_text)
        if after >= self.max_results:
            raise self._invalid(f"Cannot page beyond {self.max_results} results; refine the search")
        wanted = body.get("properties")
        matched = [
            stored
            for stored in self._stored[object_type].values()
            if not groups or any(self._matches(stored, g["filters"]) for g in groups)
        ]
        matched.sort(key=lambda s: s.order)
        if sorts:
            sort = sorts[0]
            if isinstance(sort, str):
                name, descending = sort.lstrip("-"), sort.startswith("-")
            else:
                name = sort.get("propertyName")
                descending = sort.get("direction") == "DESCENDING"
            present = [s for s in matched if s.value(name) is not None]
            absent = [s for s in matched if s.value(name) is None]
            present.sort(key=lambda s: _comparable(s.value(name)), reverse=descending)
            matched = present + absent
        reachable = matched[: self.max_results]
        window = reachable[after : after + limit]
        answer: JSON = {
            "total": len(matched),
            "results": [self._served(s, wanted, object_type) for s in window],
        }
        if after + limit < len(reachable):
            answer["paging"] = {
                "next": {
                    "after": str(after + limit),
                    "link": f"?after={after + limit}",
                }
            }
        return answer

    def _matches(self, stored: _Stored, filters: Sequence[JSON]) -> bool:
        return all(self._passes(stored, f) for f in filters)

    def _passes(self, stored: _Stored, item: JSON) -> bool:
        operator: str = item["operator"]
        value = stored.value(item.get("propertyName", ""))
        if operator == "HAS_PROPERTY":
            return value is not None
        if operator == "NOT_HAS_PROPERTY":
            return value is None
        if operator in ("IN", "NOT_IN"):
            values = {_comparable(v) for v in item.get("values") or []}
            inside = value is not None and _comparable(value) in values
            return inside if operator == "IN" else not inside
        if value is None:
            return operator == "NEQ"
        mine, theirs = _comparable(value), _comparable(item.get("value"))
        if mine[0] != theirs[0]:
            return operator == "NEQ"
        if operator == "BETWEEN":
            high = _comparable(item.get("highValue"))
            return bool(theirs <= mine <= high)
        return bool(
            {
                "EQ": mine == theirs,
                "NEQ": mine != theirs,
                "LT": mine < theirs,
                "LTE": mine <= theirs,
                "GT": mine > theirs,
                "GTE": mine >= theirs,
            }[operator]
        )

    def _served(self, stored: _Stored, wanted: object, object_type: str) -> JSON:
        record = copy.deepcopy(stored.record)
        properties = record.get("properties")
        if isinstance(properties, dict) and isinstance(wanted, list):
            keep = {*wanted, "hs_object_id", "createdate", MODIFIED[object_type]}
            # HubSpot answers every asked property, null when the record has none.
            record["properties"] = {name: properties.get(name) for name in sorted(keep)}
        return record

    def _inputs(self, body: Any) -> list[str]:
        inputs = body.get("inputs") if isinstance(body, dict) else None
        if not isinstance(inputs, list) or not inputs:
            raise self._invalid("inputs must be a non-empty list")
        if len(inputs) > MAX_BATCH_INPUTS:
            raise self._invalid(f"At most {MAX_BATCH_INPUTS} inputs per batch")
        ids = [str(i.get("id")) for i in inputs if isinstance(i, dict) and i.get("id")]
        if len(ids) != len(inputs):
            raise self._invalid("every input needs an id")
        return ids

    def _batch_read(self, object_type: str, body: Any) -> Reply:
        ids = self._inputs(body)
        wanted = body.get("properties")
        results, missing = [], []
        for object_id in ids:
            stored = self._stored[object_type].get(object_id)
            if stored is None:
                missing.append(object_id)
            else:
                results.append(self._served(stored, wanted, object_type))
        return self._batch_answer(results, missing, "OBJECT_NOT_FOUND")

    def _associations_read(self, from_type: str, to_type: str, body: Any) -> Reply:
        if from_type not in OBJECT_TYPES or to_type not in OBJECT_TYPES:
            raise self._invalid(f"Unknown object type in {from_type}/{to_type}")
        ids = self._inputs(body)
        results, missing = [], []
        for object_id in ids:
            pairs = self._associations.get((from_type, object_id, to_type))
            if not pairs:
                missing.append(object_id)
                continue
            results.append(
                {
                    "from": {"id": object_id},
                    "to": [
                        {
                            "toObjectId": int(to_id) if to_id.isdigit() else to_id,
                            "associationTypes": [
                                {
                                    "category": "HUBSPOT_DEFINED",
                                    "typeId": type_id,
                                    "label": "Primary"
                                    if type_id
                                    in (DEAL_TO_PRIMARY_COMPANY, TICKET_TO_PRIMARY_COMPANY)
                                    else None,
                                }
                                for type_id in type_ids
                            ],
                        }
                        for to_id, type_ids in pairs
                    ],
                }
            )
        return self._batch_answer(results, missing, "NO_ASSOCIATIONS_FOUND")

    def _batch_answer(self, results: list[JSON], missing: list[str], category: str) -> Reply:
        stamp = iso(self.now)
        answer: JSON = {
            "status": "COMPLETE",
            "results": results,
            "startedAt": stamp,
            "completedAt": stamp,
        }
        if not missing:
            return Reply.json(200, answer)
        answer["numErrors"] = len(missing)
        answer["errors"] = [
            {
                "status": "error",
                "category": category,
                "message": f"No result for id {object_id}",
                "context": {"id": [object_id]},
            }
            for object_id in missing
        ]
        return Reply.json(207, answer)
