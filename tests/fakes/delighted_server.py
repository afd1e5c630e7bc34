"""A local fake of Delighted's survey responses listing, over real HTTP.

:class:`FakeDelighted` serves ``GET /v1/survey_responses.json`` on a free port of
``127.0.0.1`` as Delighted documents it: a JSON array of responses (``id``, ``person``,
``survey_type``, ``score``, ``comment``, ``permalink``, ``created_at``, ``updated_at``,
``person_properties``, ``notes``, ``tags``, ``additional_answers``; times are Unix
seconds), paged by page number (``page`` from 1, ``per_page`` default 20, at most 100),
filtered by ``since``/``until`` (creation) and ``updated_since``/``updated_until``
(last update; all four inclusive), ``person_id`` and ``person_email``, and ordered by
``order`` = ``asc`` (the default, oldest created first), ``desc``, ``asc:updated_at`` or
``desc:updated_at``. ``expand[]=person`` replaces the person id by the person object
(``id``, ``email``, ``name``, ``created_at``, ...).

Authentication is HTTP Basic with the API key as the username and an empty password;
anything else is a 401 whose body never echoes the key.

Faults are scripted per route as in :class:`tests.fakes.hubspot_server.LocalHTTPFake`:
``fake.script("GET /v1/survey_responses.json", [429, 500, "ok"])``; a 429 carries
``Retry-After``.
"""

from __future__ import annotations

import base64
import copy
from collections.abc import Mapping
from typing import Any

from tests.fakes.hubspot_server import JSON, FakeHTTPError, LocalHTTPFake, Reply

PATH = "/v1/survey_responses.json"
MAX_PER_PAGE = 100
DEFAULT_PER_PAGE = 20
ORDERS = ("asc", "desc", "asc:updated_at", "desc:updated_at")
# Shaped like a Delighted API key; only ever valid here.
TEST_API_KEY = "dlg_test_0123456789abcdef0123456789"


class FakeDelighted(LocalHTTPFake):
    """The fake Delighted API; see the module docstring for what it reproduces.

    Args:
        api_key: the only API key the fake accepts.
        now: the fake's clock (Unix seconds) at start; it moves only with
            :meth:`advance`.
        retry_after: ``Retry-After`` seconds on a scripted 429.
    """

    name = "delighted"

    def __init__(
        self, *, api_key: str = TEST_API_KEY, now: int = 1_793_000_000, retry_after: str = "2"
    ) -> None:
        super().__init__(retry_after=retry_after)
        self.api_key = api_key
        self.now = now
        self._people: dict[str, JSON] = {}
        self._responses: dict[str, JSON] = {}
        self._order: dict[str, int] = {}
        self._next_id = 1

    # -- seeding --------------------------------------------------------------------

    def advance(self, seconds: int) -> int:
        """Move the fake's clock forward; returns the new now."""
        with self._lock:
            self.now += seconds
            return self.now

    def add_person(
        self, person_id: str | None = None, *, email: str = "ada@acme.example", name: str = "Ada"
    ) -> str:
        """Add a person (what ``expand[]=person`` shows); returns the id."""
        with self._lock:
            person_id = person_id or self._new_id()
            self._people[person_id] = {
                "id": person_id,
                "email": email,
                "name": name,
                "created_at": self.now,
                "phone_number": None,
                "last_sent_at": None,
                "last_responded_at": self.now,
                "next_survey_scheduled_at": None,
            }
            return person_id

    def add_response(
        self,
        response_id: str | None = None,
        *,
        person_id: str | None = None,
        score: object = 9,
        survey_type: str = "nps",
        created_at: int | None = None,
        updated_at: int | None = None,
        person_properties: Mapping[str, object] | None = None,
        comment: str | None = None,
    ) -> str:
        """Add a response (a new person when ``person_id`` is not given); ``updated_at``
        defaults to ``created_at``, which defaults to now, as Delighted sets it."""
        with self._lock:
            person_id = person_id or self.add_person(email=f"person{self._next_id}@acme.example")
            response_id = response_id or self._new_id()
            created = self.now if created_at is None else created_at
            self.add_raw(
                {
                    "id": response_id,
                    "person": person_id,
                    "survey_type": survey_type,
                    "score": score,
                    "comment": comment,
                    "permalink": f"https://app.delighted.com/r/{response_id}",
                    "created_at": created,
                    "updated_at": created if updated_at is None else updated_at,
                    "person_properties": dict(person_properties)
                    if person_properties is not None
                    else None,
                    "notes": [],
                    "tags": [],
                    "additional_answers": [],
                }
            )
            return response_id

    def add_raw(self, record: JSON) -> None:
        """Serve ``record`` as-is (malformed on purpose, say) in the listing."""
        with self._lock:
            key = str(record.get("id") or f"raw-{len(self._responses) + 1}")
            self._responses[key] = copy.deepcopy(record)
            self._order[key] = len(self._order)

    def touch(self, response_id: str, *, at: int | None = None, **changes: object) -> None:
        """Update a response: apply ``changes`` and set ``updated_at`` (default now)."""
        with self._lock:
            response = self._responses[response_id]
            response.update(changes)
            response["updated_at"] = self.now if at is None else at

    def _new_id(self) -> str:
        value = str(self._next_id)
        self._next_id += 1
        return value

    # -- the API --------------------------------------------------------------------

    def authenticate(self, headers: Mapping[str, str]) -> None:
        expected = "Basic " + base64.b64encode(f"{self.api_key}:".encode()).decode()
        if headers.get("authorization") != expected:
            raise FakeHTTPError(401, self.error_body(401, "Invalid API key"))

    def error_body(self, status: int, message: str) -> JSON:
        return {"status": status, "message": message}

    def rate_limit_body(self) -> JSON:
        return self.error_body(429, "Too Many Requests")

    def route(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> Reply:
        if method != "GET" or path != PATH:
            raise FakeHTTPError(404, self.error_body(404, "Not found"))
        return Reply.json(200, self._list(query))

    def _int(self, query: dict[str, list[str]], name: str, default: int | None) -> int | None:
        values = query.get(name)
        if not values:
            return default
        text = values[-1]
        if not text.lstrip("-").isdigit():
            raise FakeHTTPError(422, self.error_body(422, f"{name} must be an integer"))
        return int(text)

    def _list(self, query: dict[str, list[str]]) -> list[JSON]:
        per_page = self._int(query, "per_page", DEFAULT_PER_PAGE) or DEFAULT_PER_PAGE
        per_page = max(1, min(MAX_PER_PAGE, per_page))
        page = max(1, self._int(query, "page", 1) or 1)
        order = (query.get("order") or ["asc"])[-1]
        if order not in ORDERS:
            raise FakeHTTPError(422, self.error_body(422, f"order must be one of {ORDERS}"))
        bounds = {
            name: self._int(query, name, None)
            for name in ("since", "until", "updated_since", "updated_until")
        }
        person_id = query["person_id"][-1] if query.get("person_id") else None
        person_email = query["person_email"][-1] if query.get("person_email") else None
        expand = query.get("expand[]", [])

        def updated(response: JSON) -> int:
            value = response.get("updated_at")
            return value if isinstance(value, int) else int(response.get("created_at") or 0)

        def keep(response: JSON) -> bool:
            created_at = response.get("created_at")
            created = created_at if isinstance(created_at, int) else 0
            low, high = bounds["since"], bounds["until"]
            if (low is not None and created < low) or (high is not None and created > high):
                return False
            low, high = bounds["updated_since"], bounds["updated_until"]
            last = updated(response)
            if (low is not None and last < low) or (high is not None and last > high):
                return False
            if person_id is not None and str(response.get("person")) != person_id:
                return False
            if person_email is not None:
                person = self._people.get(str(response.get("person")), {})
                return bool(person.get("email") == person_email)
            return True

        by_update = order.endswith("updated_at")
        chosen = [
            response
            for _, response in sorted(
                ((k, r) for k, r in self._responses.items() if keep(r)),
                key=lambda kr: (
                    updated(kr[1]) if by_update else int(kr[1].get("created_at") or 0),
                    self._order[kr[0]],
                ),
                reverse=order.startswith("desc"),
            )
        ]
        window = chosen[(page - 1) * per_page : page * per_page]
        served = copy.deepcopy(window)
        if "person" in expand:
            for response in served:
                person = self._people.get(str(response.get("person")))
                if person is not None:
                    response["person"] = copy.deepcopy(person)
        return served
