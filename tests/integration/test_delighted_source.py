"""The Delighted source over real HTTP, against the local fake of Delighted's API."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from domain.errors import PermanentIntegrationError, RetryableIntegrationError
from domain.models import EventType, SourceEvent
from domain.ports import EventSource, SourceBatch
from integrations.sources.delighted import DelightedSource
from integrations.sources.http import EMAIL_PATTERN
from tests.fakes.delighted_server import PATH, FakeDelighted

NOW = 1_793_000_000
LIST = f"GET {PATH}"

SourceFactory = Callable[..., DelightedSource]


@pytest.fixture
def fake() -> Iterator[FakeDelighted]:
    with FakeDelighted(now=NOW) as server:
        yield server


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def make_source(fake: FakeDelighted, sleeps: list[float]) -> SourceFactory:
    def make(**overrides: Any) -> DelightedSource:
        kwargs: dict[str, Any] = {
            # Two minutes after the fake's now: past the default one-minute settle.
            "clock": lambda: datetime.fromtimestamp(fake.now + 120, UTC),
            "sleep": sleeps.append,
            "timeout": 5.0,
        }
        kwargs.update(overrides)
        key = kwargs.pop("api_key", fake.api_key)
        return DelightedSource(key, fake.url, **kwargs)

    return make


def balanced(batch: SourceBatch) -> SourceBatch:
    """``batch``, after checking that every response read is accounted for."""
    assert batch.records_in == len(batch.events) + len(batch.rejected) + batch.reference_only
    assert batch.reference_only == 0
    return batch


def ids(batch: SourceBatch) -> list[str]:
    return sorted(e.event_id for e in batch.events)


def test_the_source_is_an_event_source_named_delighted(make_source: SourceFactory) -> None:
    source = make_source()

    assert isinstance(source, EventSource)
    assert source.name == "delighted"


def test_a_response_is_an_nps_response_with_its_score_contact_and_account(
    fake: FakeDelighted, make_source: SourceFactory
) -> None:
    created = NOW - 3600
    response = fake.add_response(
        score=10,
        created_at=created,
        person_properties={"contact_id": "c-0042", "account_id": "a-0007", "plan": "pro"},
    )

    batch = balanced(make_source().fetch(None))

    assert batch.events == [
        SourceEvent(
            source="delighted",
            event_id=f"response:{response}",
            type=EventType.NPS_RESPONSE,
            occurred_at=datetime.fromtimestamp(created, UTC),
            account_id="a-0007",
            contact_id="c-0042",
            score=10,
        )
    ]


def test_without_a_contact_property_the_contact_is_the_delighted_person(
    fake: FakeDelighted, make_source: SourceFactory
) -> None:
    person = fake.add_person("777")
    response = fake.add_response(person_id=person, score=3)

    [event] = balanced(make_source().fetch(None)).events

    assert (event.event_id, event.contact_id, event.account_id, event.score) == (
        f"response:{response}",
        "delighted:777",
        None,
        3,
    )


def test_the_contact_property_names_are_configurable(
    fake: FakeDelighted, make_source: SourceFactory
) -> None:
    fake.add_response(person_properties={"HubSpot ID": "501", "Company": "77"})

    source = make_source(contact_property="HubSpot ID", account_property="Company")
    [event] = balanced(source.fetch(None)).events

    assert (event.contact_id, event.account_id) == ("501", "77")


def test_requests_use_basic_auth_and_never_ask_for_the_persons_email(
    fake: FakeDelighted, make_source: SourceFactory
) -> None:
    fake.add_response()

    make_source().fetch(None)

    [request] = fake.requests
    expected = base64.b64encode(f"{fake.api_key}:".encode()).decode()
    assert request.headers["authorization"] == f"Basic {expected}"
    assert "expand[]" not in request.query
    assert request.query["order"] == ["asc:updated_at"]
    assert request.query["per_page"] == ["100"]


# -- paging and the cursor --------------------------------------------------------------


def test_paging_reads_every_response_across_several_pages(
    fake: FakeDelighted, make_source: SourceFactory
) -> None:
    responses = []
    for _ in range(7):
        responses.append(fake.add_response())
        fake.advance(1)

    batch = balanced(make_source(per_page=3).fetch(None))

    assert ids(batch) == sorted(f"response:{r}" for r in responses)
    assert fake.count(LIST) == 4
    assert all(r.query["per_page"] == ["3"] for r in fake.requests)


def test_a_second_fetch_with_the_returned_cursor_reads_only_what_changed(
    fake: FakeDelighted, make_source: SourceFactory
) -> None:
    source = make_source()
    kept, edited = fake.add_response(score=9), fake.add_response(score=5)
    first = source.fetch(None)
    fake.advance(600)
    fake.touch(edited, comment="changed my mind")
    added = fake.add_response(score=10)

    second = balanced(source.fetch(first.cursor))

    assert ids(second) == sorted([f"response:{edited}", f"response:{added}"])
    assert f"response:{kept}" not in ids(second)
    assert fake.requests[-1].query["updated_since"] == [str(NOW)]


def test_a_fetch_when_nothing_changed_reads_nothing_and_keeps_the_cursor(
    fake: FakeDelighted, make_source: SourceFactory
) -> None:
    source = make_source()
    fake.add_response()
    fake.add_response()
    first = source.fetch(None)
    fake.advance(3600)

    second = balanced(source.fetch(first.cursor))

    assert second.records_in == 0
    assert second.cursor == first.cursor


def test_a_response_updated_in_the_very_second_of_the_cursor_is_not_lost(
    fake: FakeDelighted, make_source: SourceFactory
) -> None:
    source = make_source()
    fake.add_response(created_at=NOW - 100)
    first = source.fetch(None)
    assert json.loads(first.cursor or "")["since"] == NOW - 100

    late = fake.add_response(created_at=NOW - 100)
    second = balanced(source.fetch(first.cursor))

    assert ids(second) == [f"response:{late}"]
    assert balanced(source.fetch(second.cursor)).records_in == 0


def test_more_responses_in_one_second_than_fit_a_page_are_all_read_once(
    fake: FakeDelighted, make_source: SourceFactory
) -> None:
    source = make_source(per_page=3)
    same = [fake.add_response() for _ in range(8)]
    fake.advance(1)
    after = fake.add_response()

    first = balanced(source.fetch(None))

    assert ids(first) == sorted(f"response:{r}" for r in [*same, after])
    assert len(first.events) == 9
    assert balanced(source.fetch(first.cursor)).records_in == 0
    alone = [r for r in fake.requests if r.query["updated_since"] == r.query["updated_until"]]
    assert [r.query["page"] for r in alone][:3] == [["1"], ["2"], ["3"]]


def test_updates_in_the_settle_period_wait_for_the_next_fetch(
    fake: FakeDelighted, make_source: SourceFactory
) -> None:
    clock = {"now": NOW + 30}
    source = make_source(
        clock=lambda: datetime.fromtimestamp(clock["now"], UTC), settle=timedelta(minutes=1)
    )
    response = fake.add_response()

    early = balanced(source.fetch(None))
    clock["now"] = NOW + 300
    later = balanced(source.fetch(early.cursor))

    assert early.events == []
    assert ids(later) == [f"response:{response}"]
    assert fake.requests[0].query["updated_until"] == [str(NOW - 30)]


def test_a_stored_cursor_this_source_did_not_write_is_refused(
    make_source: SourceFactory,
) -> None:
    with pytest.raises(PermanentIntegrationError, match="cursor"):
        make_source().fetch("not json")


# -- HTTP failures ----------------------------------------------------------------------


def test_a_429_is_retried_after_the_delay_retry_after_asks_for(
    fake: FakeDelighted, make_source: SourceFactory, sleeps: list[float]
) -> None:
    response = fake.add_response()
    fake.retry_after = "5"
    fake.script(LIST, [429])

    batch = balanced(make_source().fetch(None))

    assert ids(batch) == [f"response:{response}"]
    assert sleeps == [5.0]


def test_server_errors_are_retried_with_backoff_then_the_fetch_succeeds(
    fake: FakeDelighted, make_source: SourceFactory, sleeps: list[float]
) -> None:
    response = fake.add_response()
    fake.script(LIST, [500, 502, "malformed_json"])

    batch = balanced(make_source().fetch(None))

    assert ids(batch) == [f"response:{response}"]
    assert sleeps == [0.5, 1.0, 2.0]


def test_exhausted_retries_fail_the_fetch_as_retryable(
    fake: FakeDelighted, make_source: SourceFactory, sleeps: list[float]
) -> None:
    fake.add_response()
    fake.script(LIST, [429, 503, "drop"])

    with pytest.raises(RetryableIntegrationError, match="after 3 attempts"):
        make_source(max_attempts=3).fetch(None)

    assert sleeps == [2.0, 1.0]


def test_a_refused_key_is_a_permanent_error_that_does_not_name_the_key(
    fake: FakeDelighted, make_source: SourceFactory, sleeps: list[float]
) -> None:
    wrong = "dlg_live_ffffffffffffffffffffffffff"

    with pytest.raises(PermanentIntegrationError, match="HTTP 401") as caught:
        make_source(api_key=wrong).fetch(None)

    assert wrong not in str(caught.value)
    assert fake.api_key not in str(caught.value)
    assert fake.count() == 1
    assert sleeps == []


# -- malformed rows ---------------------------------------------------------------------


MALFORMED: list[tuple[dict[str, Any], str, str]] = [
    ({"score": 11}, "score", "11 is outside 0-10"),
    ({"score": -1}, "score", "-1 is outside 0-10"),
    ({"score": "nine"}, "score", "'nine' is not a whole number"),
    ({"score": 8.5}, "score", "'8.5' is not a whole number"),
    ({"score": "\u0669"}, "score", "'\u0669' is not a whole number"),
    ({"score": True}, "score", "'True' is not a whole number"),
    ({"score": None}, "score", "missing"),
    ({"created_at": "yesterday"}, "created_at", "missing or not a Unix timestamp"),
    ({"survey_type": "csat"}, "survey_type", "'csat' is not an NPS survey"),
    (
        {"person": None, "person_properties": None},
        "person",
        "missing (no person and no contact id)",
    ),
]


@pytest.mark.parametrize(
    ("changes", "field", "reason"), MALFORMED, ids=[f"{m[1]}:{m[2]}" for m in MALFORMED]
)
def test_a_malformed_response_is_quarantined_with_its_field_while_the_page_goes_on(
    fake: FakeDelighted,
    make_source: SourceFactory,
    changes: dict[str, Any],
    field: str,
    reason: str,
) -> None:
    before = fake.add_response()
    bad = fake.add_response()
    fake.touch(bad, at=NOW, **changes)
    after = fake.add_response()

    batch = balanced(make_source(per_page=2).fetch(None))

    [rejected] = batch.rejected
    assert (rejected.source, rejected.record, rejected.field, rejected.reason) == (
        "delighted",
        f"delighted:response:{bad}",
        field,
        reason,
    )
    assert ids(batch) == sorted([f"response:{before}", f"response:{after}"])


def test_a_response_without_an_id_is_quarantined(
    fake: FakeDelighted, make_source: SourceFactory
) -> None:
    fake.add_raw({"person": "1", "score": 9, "created_at": NOW, "updated_at": NOW})
    good = fake.add_response()

    batch = balanced(make_source().fetch(None))

    assert [(r.record, r.field) for r in batch.rejected] == [("delighted:response:?", "id")]
    assert ids(batch) == [f"response:{good}"]


def test_no_rejected_reason_or_raw_text_holds_an_email_address(
    fake: FakeDelighted, make_source: SourceFactory
) -> None:
    for changes in (
        {"score": "ada@acme.example"},
        {"survey_type": "bob@beta.example"},
        {"score": 12, "person_properties": {"email": "cy@gamma.example"}},
        {"score": 12, "comment": "write to dee@delta.example"},
    ):
        response = fake.add_response()
        fake.touch(response, at=NOW, **changes)

    batch = balanced(make_source().fetch(None))

    assert len(batch.rejected) == 4
    for rejected in batch.rejected:
        assert EMAIL_PATTERN.search(rejected.reason) is None, rejected.reason
        assert EMAIL_PATTERN.search(rejected.raw) is None, rejected.raw
