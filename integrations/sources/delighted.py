"""The Delighted source: NPS survey responses from ``GET /v1/survey_responses.json``.

Each response becomes an ``nps_response`` event (``event_id`` ``response:<id>``) dated
by its ``created_at``, with its 0-10 ``score``. Its contact is the value of a person
property the survey was sent with (``person_properties[contact_id]`` by default: the
CRM's contact id, passed when the survey is requested), else ``delighted:<person id>``,
which names no CRM contact, so such a promoter is counted as an unknown contact rather
than guessed onto someone. The person's email is never requested (no ``expand[]=person``):
the source needs the id only, and an address it never reads cannot leak.

**Incremental reads.** Responses are listed with ``updated_since`` and
``order=asc:updated_at``, so a response edited after it was read (Delighted lets people
change their comment and score) is read again; its event id does not change, so the
ledger keeps the first one. The cursor keeps the newest ``updated_at`` read (falling
back to ``created_at`` when a response has none) and the ids read at exactly that
second. Each page is a new request starting at that time (``updated_since`` is
inclusive) that skips only those ids, rather than ``page=2, 3, ...`` of one listing: a
response updated mid-read leaves a page-numbered listing and shifts the next pages,
which silently skips one. When more responses share one second than fit a page, that
second is listed on its own (``updated_since = updated_until``) page by page. Responses
updated in the last ``settle`` period are left for the next read (``updated_until``).

**Counting.** Every response read is one record: an event or a rejected record naming
``delighted:response:<id>``, the field and the reason (a response of another survey
type than NPS is refused too: this source reads an NPS project). Reasons and raw text
never hold an email address.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import requests

from domain.errors import InputRejected, PermanentIntegrationError, RetryableIntegrationError
from domain.inputs import plain_digits
from domain.models import EventType, Rejected, SourceEvent
from domain.ports import SourceBatch
from integrations.sources.http import JsonHttpClient, Params, RetryPolicy, Sleep, mask_emails

logger = logging.getLogger(__name__)

SOURCE = "delighted"
PATH = "/v1/survey_responses.json"
MAX_PER_PAGE = 100
# Enough of a response to see what was wrong with it; a quarantine row is not a backup.
MAX_RAW_CHARS = 2000
_CURSOR_VERSION = 1


class DelightedSource:
    """:class:`domain.ports.EventSource` on Delighted's NPS survey responses.

    Args:
        api_key: the project's Delighted API key, sent as the HTTP Basic username
            (empty password); never logged.
        api_base: API base URL (tests point it at a local fake).
        contact_property: the ``person_properties`` key holding the CRM contact id.
        account_property: the ``person_properties`` key holding the CRM account id.
        session: a ``requests`` session to use (the caller closes it); by default each
            fetch opens and closes its own.
        sleep: waits that many seconds between retries (tests inject a recorder).
        clock: the current time (timezone-aware), to leave the settle period unread.
        per_page: responses per request, 1 to 100.
        timeout: seconds to wait for each HTTP request.
        max_attempts: attempts per request before the fetch fails as retryable.
        settle: how recent an update must not be to be read now.
    """

    name = SOURCE

    def __init__(
        self,
        api_key: str,
        api_base: str = "https://api.delighted.com",
        *,
        contact_property: str = "contact_id",
        account_property: str | None = "account_id",
        session: requests.Session | None = None,
        sleep: Sleep = time.sleep,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        per_page: int = MAX_PER_PAGE,
        timeout: float = 30.0,
        max_attempts: int = 5,
        settle: timedelta = timedelta(seconds=60),
    ) -> None:
        if not api_key:
            raise ValueError("Delighted needs an API key")
        if not 1 <= per_page <= MAX_PER_PAGE:
            raise ValueError(f"per_page must be 1..{MAX_PER_PAGE}")
        self._key = api_key
        self.api_base = api_base.rstrip("/")
        self.contact_property = contact_property
        self.account_property = account_property
        self._session = session
        self._sleep = sleep
        self._clock = clock
        self.per_page = per_page
        self._timeout = timeout
        self._retry = RetryPolicy(max_attempts=max_attempts)
        self._settle = settle

    def __repr__(self) -> str:
        return f"DelightedSource(api_base={self.api_base!r})"

    def fetch(self, cursor: str | None) -> SourceBatch:
        """Every response created or updated since ``cursor`` (all when ``None``).

        Raises:
            RetryableIntegrationError: Delighted kept failing (429, 5xx, network).
            PermanentIntegrationError: Delighted refused (bad key), or ``cursor`` is
                not one this source wrote.
        """
        since, seen = _load_cursor(cursor)
        upper = int((self._clock() - self._settle).timestamp())
        with JsonHttpClient(
            SOURCE,
            self.api_base,
            auth=(self._key, ""),
            secrets=(self._key,),
            session=self._session,
            timeout=self._timeout,
            retry=self._retry,
            sleep=self._sleep,
        ) as http:
            responses, since, seen = self._changed(http, since, seen, upper)
        logger.info("%s: %d survey responses changed", SOURCE, len(responses))
        events: list[SourceEvent] = []
        rejected: list[Rejected] = []
        for raw in responses:
            try:
                events.append(self._event(raw))
            except InputRejected as exc:
                rejected.append(
                    Rejected(SOURCE, exc.record, exc.field, mask_emails(exc.reason), _raw(raw))
                )
        return SourceBatch(
            source=SOURCE,
            events=events,
            rejected=rejected,
            records_in=len(responses),
            cursor=json.dumps(
                {"v": _CURSOR_VERSION, "since": since, "ids": sorted(seen, key=_id_order)},
                sort_keys=True,
                separators=(",", ":"),
            ),
        )

    def _changed(
        self, http: JsonHttpClient, since: int, seen: set[str], upper: int
    ) -> tuple[list[object], int, set[str]]:
        found: list[object] = []
        read: set[str] = set()
        strictly_after = False
        while True:
            page = self._list(http, since + 1 if strictly_after else since, upper, page=1)
            started_at = since
            for raw in page:
                response_id = _response_id(raw)
                stamp = _updated(raw)
                if stamp is not None and stamp == since and response_id in seen:
                    continue  # read by an earlier page or an earlier fetch
                if response_id is not None and response_id in read:
                    continue
                found.append(raw)
                if stamp is None or response_id is None:
                    continue  # refused below; cannot anchor a page
                read.add(response_id)
                if stamp > since:
                    since, seen, strictly_after = stamp, set(), False
                if stamp == since:
                    seen.add(response_id)
            if len(page) < self.per_page:
                return found, since, seen
            if since > started_at:
                continue
            if strictly_after:
                raise PermanentIntegrationError(
                    f"{SOURCE}: cannot page responses past updated_at {since}: "
                    "a full page without a readable newer time"
                )
            # More responses share the second `since` than fit a page: list that second
            # alone, page by page, then go on strictly after it.
            number, previous = 1, None
            while True:
                same = self._list(http, since, since, page=number)
                ids = [_response_id(raw) for raw in same]
                if ids == previous:
                    raise PermanentIntegrationError(
                        f"{SOURCE}: page {number} of updated_at {since} repeats the one before"
                    )
                previous = ids
                for raw in same:
                    response_id = _response_id(raw)
                    if response_id is not None and (response_id in seen or response_id in read):
                        continue
                    found.append(raw)
                    if response_id is not None:
                        read.add(response_id)
                        seen.add(response_id)
                if len(same) < self.per_page:
                    break
                number += 1
            strictly_after = True

    def _list(self, http: JsonHttpClient, since: int, until: int, *, page: int) -> list[object]:
        params: Params = {
            "per_page": self.per_page,
            "page": page,
            "order": "asc:updated_at",
            "updated_since": since,
            "updated_until": until,
        }
        answer = http.get(PATH, params)
        if not isinstance(answer, list):
            raise RetryableIntegrationError(f"{SOURCE}: the survey responses answer is not a list")
        return answer

    def _event(self, raw: object) -> SourceEvent:
        if not isinstance(raw, dict):
            raise InputRejected(f"{SOURCE}:response:?", None, "not a JSON object")
        response_id = _response_id(raw)
        record = f"{SOURCE}:response:{response_id or '?'}"
        if response_id is None:
            raise InputRejected(record, "id", "missing")
        survey_type = raw.get("survey_type")
        if survey_type is not None and survey_type != "nps":
            raise InputRejected(
                record, "survey_type", f"{str(survey_type)[:20]!r} is not an NPS survey"
            )
        score = raw.get("score")
        # Plain ASCII digits only: str.isdigit() is true of other scripts' digits too.
        if isinstance(score, str) and plain_digits(score.strip()):
            score = int(score)
        if score is None:
            raise InputRejected(record, "score", "missing")
        if isinstance(score, bool) or not isinstance(score, int):
            raise InputRejected(record, "score", f"{str(score)[:20]!r} is not a whole number")
        if not 0 <= score <= 10:
            raise InputRejected(record, "score", f"{score} is outside 0-10")
        created = _epoch(raw.get("created_at"))
        if created is None:
            raise InputRejected(record, "created_at", "missing or not a Unix timestamp")
        properties = raw.get("person_properties")
        properties = properties if isinstance(properties, dict) else {}
        contact_id = _text(properties.get(self.contact_property))
        if contact_id is None:
            person = raw.get("person")
            person_id = _text(person.get("id") if isinstance(person, dict) else person)
            if person_id is None:
                raise InputRejected(record, "person", "missing (no person and no contact id)")
            contact_id = f"{SOURCE}:{person_id}"
        account_id = _text(properties.get(self.account_property)) if self.account_property else None
        return SourceEvent(
            source=SOURCE,
            event_id=f"response:{response_id}",
            type=EventType.NPS_RESPONSE,
            occurred_at=datetime.fromtimestamp(created, UTC),
            account_id=account_id,
            contact_id=contact_id,
            score=score,
        )


def _text(value: object) -> str | None:
    if value is None or isinstance(value, bool | dict | list):
        return None
    text = str(value).strip()
    return text or None


def _id_order(response_id: str) -> tuple[int, int, str]:
    return (0, int(response_id), "") if response_id.isdigit() else (1, 0, response_id)


def _response_id(raw: object) -> str | None:
    return _text(raw.get("id")) if isinstance(raw, dict) else None


def _epoch(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def _updated(raw: object) -> int | None:
    """When a response last changed: ``updated_at``, else ``created_at``."""
    if not isinstance(raw, dict):
        return None
    updated = _epoch(raw.get("updated_at"))
    return updated if updated is not None else _epoch(raw.get("created_at"))


def _raw(raw: object) -> str:
    """The response as compact JSON with every address masked, cut short."""
    try:
        text = json.dumps(raw, sort_keys=True, separators=(",", ":"), default=str)
    except (TypeError, ValueError):
        text = repr(raw)
    text = mask_emails(text)
    return text if len(text) <= MAX_RAW_CHARS else text[: MAX_RAW_CHARS - 3] + "..."


def _load_cursor(cursor: str | None) -> tuple[int, set[str]]:
    if cursor is None:
        return 0, set()
    try:
        data: Mapping[str, Any] = json.loads(cursor)
        if data.get("v") != _CURSOR_VERSION:
            raise ValueError("unknown version")
        since, ids = data["since"], data["ids"]
        if not isinstance(since, int) or not all(isinstance(i, str) for i in ids):
            raise ValueError("wrong types")
    except (ValueError, TypeError, KeyError, AttributeError):
        raise PermanentIntegrationError(
            f"{SOURCE}: the stored cursor is not one this source wrote"
        ) from None
    return since, set(ids)
