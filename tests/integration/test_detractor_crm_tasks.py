"""Detractors become HubSpot tasks on their contact, over real HTTP against the fake:
once each, retried only when HubSpot surely created nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import select

from domain.models import EventType, SourceEvent
from domain.program import Program
from integrations.crm.hubspot_tasks import HubSpotTasks
from integrations.email.fake import RecordingEmailSender
from integrations.ledger.sql import SqlLedger
from integrations.ledger.tables import T_DETRACTOR_HANDOFFS
from tasks.detractors import Handoffs, hand_on_detractors
from tests.conftest import NOW, contact, people_batch
from tests.fakes.hubspot_server import TASK_TO_CONTACT, FakeHubSpot
from tests.moments_seed import record_detection

OWNER = "owner@company.example"
TASKS = "POST /crm/v3/objects/tasks"


@pytest.fixture
def fake() -> Iterator[FakeHubSpot]:
    with FakeHubSpot(now=NOW) as server:
        yield server


def given_detractors(ledger: SqlLedger, fake: FakeHubSpot | None, *contact_ids: str) -> None:
    """Contacts (in HubSpot too, when ``fake`` is given) who answered NPS 4 yesterday."""
    for c in contact_ids:
        if fake is not None:
            fake.add_contact(c, email=f"{c}@customer.example", firstname="Ada", lastname=c)
    ledger.sources.record_batch(people_batch(*(contact(c, "A1") for c in contact_ids)), NOW)
    events = [
        SourceEvent(
            "hubspot",
            f"nps-{c}",
            EventType.NPS_RESPONSE,
            NOW - timedelta(days=1),
            account_id="A1",
            contact_id=c,
            score=4,
        )
        for c in contact_ids
    ]
    record_detection(ledger.engine, [], [], events, NOW)


def hand_on(ledger: SqlLedger, program: Program, crm: HubSpotTasks) -> Handoffs:
    return hand_on_detractors.fn(ledger, RecordingEmailSender(), crm, OWNER, program, NOW)


def tasks_of(fake: FakeHubSpot, **overrides: object) -> HubSpotTasks:
    options: dict[str, object] = {"owner_id": "7001", "timeout": 5.0} | overrides
    return HubSpotTasks(fake.access_token, fake.url, **options)  # type: ignore[arg-type]


def crm_rows(ledger: SqlLedger) -> dict[str, tuple[str, str | None, str | None]]:
    h = T_DETRACTOR_HANDOFFS.c
    with ledger.engine.connect() as conn:
        return {
            key: (status, ref, error)
            for key, status, ref, error in conn.execute(
                select(h.source_event, h.crm_status, h.crm_ref, h.crm_error)
            )
        }


def test_a_detractor_becomes_one_task_on_their_contact_however_often_it_runs(
    ledger: SqlLedger, program: Program, fake: FakeHubSpot
) -> None:
    given_detractors(ledger, fake, "301")

    first = hand_on(ledger, program, tasks_of(fake))
    second = hand_on(ledger, program, tasks_of(fake))

    assert (first.crm_tasks, second.crm_tasks) == (1, 0)
    assert fake.count(TASKS) == 1
    (task,) = fake.tasks
    assert task["contacts"] == ["301"]
    properties = task["properties"]
    assert properties["hubspot_owner_id"] == "7001"
    assert (properties["hs_task_status"], properties["hs_task_priority"]) == ("NOT_STARTED", "HIGH")
    assert "Person 301 (301)" in properties["hs_task_subject"]
    assert "NPS 4" in properties["hs_task_subject"]
    (request,) = [r for r in fake.requests if r.route == TASKS]
    assert request.body["associations"][0]["types"] == [
        {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": TASK_TO_CONTACT}
    ]
    # The contact's address is HubSpot's to know; the request never carries one.
    assert "@" not in json.dumps(request.body)
    assert crm_rows(ledger) == {"hubspot:nps-301": ("created", task["id"], None)}


def test_a_contact_hubspot_does_not_know_fails_for_good_and_is_not_retried(
    ledger: SqlLedger, program: Program, fake: FakeHubSpot
) -> None:
    given_detractors(ledger, None, "999")

    first = hand_on(ledger, program, tasks_of(fake))
    second = hand_on(ledger, program, tasks_of(fake))

    assert (first.crm_failed, first.handed_on) == (1, 1)
    assert second == Handoffs()
    assert fake.count(TASKS) == 1
    ((status, ref, error),) = crm_rows(ledger).values()
    assert (status, ref) == ("failed", None)
    assert error is not None
    assert error.startswith("HTTP 400")


def test_a_rate_limited_batch_waits_for_the_next_run_without_hammering_hubspot(
    ledger: SqlLedger, program: Program, fake: FakeHubSpot
) -> None:
    given_detractors(ledger, fake, "301", "302", "303")
    fake.script(TASKS, [429])

    first = hand_on(ledger, program, tasks_of(fake))
    second = hand_on(ledger, program, tasks_of(fake))

    assert (first.crm_tasks, first.crm_retry_later) == (0, 3)
    assert second.crm_tasks == 3
    # One refused request, then one per task: the two left untried were not sent.
    assert fake.count(TASKS) == 4
    assert sorted(c for t in fake.tasks for c in t["contacts"]) == ["301", "302", "303"]


def test_a_server_error_is_retried_but_a_dropped_connection_is_never_sent_again(
    ledger: SqlLedger, program: Program, fake: FakeHubSpot
) -> None:
    given_detractors(ledger, fake, "301", "302")
    fake.script(TASKS, [500, "drop"])

    first = hand_on(ledger, program, tasks_of(fake))
    second = hand_on(ledger, program, tasks_of(fake))
    third = hand_on(ledger, program, tasks_of(fake))

    assert (first.crm_retry_later, first.crm_unknown) == (1, 1)
    assert (second.crm_tasks, third.crm_tasks) == (1, 0)
    assert [t["contacts"] for t in fake.tasks] == [["301"]]
    assert crm_rows(ledger)["hubspot:nps-302"][0] == "unknown"


def test_a_refused_token_is_recorded_without_the_token(
    sqlite_ledger: SqlLedger, program: Program, fake: FakeHubSpot
) -> None:
    given_detractors(sqlite_ledger, fake, "301")
    wrong = "pat-na1-00000000-0000-0000-0000-000000000000"

    result = hand_on(sqlite_ledger, program, HubSpotTasks(wrong, fake.url))

    assert result.crm_failed == 1
    ((_, _, error),) = crm_rows(sqlite_ledger).values()
    assert error is not None
    assert error.startswith("HTTP 401")
    assert wrong not in error
