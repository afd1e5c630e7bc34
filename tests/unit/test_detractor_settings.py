"""Who is told of detractors: the settings, the CRM adapter they choose, the message."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from config.settings import load_settings
from domain.detractors import NO_CONTACT, DetractorFollowUp, owner_message_data
from domain.errors import ConfigError
from flows.bootstrap import _detractor_tasks
from integrations.crm.hubspot_tasks import HubSpotTasks, task_properties

TOKEN = "pat-na1-11111111-2222-3333-4444-555555555555"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No REFERRALS_* variables from the machine and no .env file in the working dir."""
    for name in list(os.environ):
        if name.startswith("REFERRALS_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def follow_up(contact_id: str | None = "301", name: str | None = "Ada Martin") -> DetractorFollowUp:
    return DetractorFollowUp(
        source_event="hubspot:nps-1",
        contact_id=contact_id,
        contact_name=name,
        account_id="A1",
        account_name="Acme GmbH",
        score=3,
        occurred_at=datetime(2026, 11, 1, 17, 30, tzinfo=UTC),
    )


def test_a_mistyped_owner_address_is_refused_naming_the_variable_not_the_value(
    clean_env: pytest.MonkeyPatch,
) -> None:
    clean_env.setenv("REFERRALS_DETRACTOR_OWNER_EMAIL", "care-team.example.com")

    with pytest.raises(ConfigError) as info:
        load_settings()

    assert "REFERRALS_DETRACTOR_OWNER_EMAIL" in str(info.value)
    assert "care-team.example.com" not in str(info.value)


def test_hubspot_tasks_need_a_token_an_owner_address_and_not_being_turned_off(
    clean_env: pytest.MonkeyPatch,
) -> None:
    owner = "care@company.example"

    assert _detractor_tasks(load_settings(detractor_owner_email=owner)) is None
    assert _detractor_tasks(load_settings(hubspot_access_token=TOKEN)) is None
    assert (
        _detractor_tasks(
            load_settings(
                hubspot_access_token=TOKEN,
                detractor_owner_email=owner,
                detractor_hubspot_tasks=False,
            )
        )
        is None
    )
    tasks = _detractor_tasks(
        load_settings(
            hubspot_access_token=TOKEN,
            detractor_owner_email=owner,
            detractor_hubspot_owner_id="7001",
        )
    )
    assert isinstance(tasks, HubSpotTasks)
    assert tasks.owner_id == "7001"
    assert TOKEN not in repr(tasks)


def test_the_owner_message_names_the_contact_account_score_and_day() -> None:
    data = owner_message_data(follow_up(), "Acme referrals")

    assert data["who"] == "Ada Martin (301)"
    assert data["account"] == "Acme GmbH (A1)"
    assert (data["score"], data["answered_on"]) == ("3", "2026-11-01")


def test_a_detractor_without_a_contact_or_a_name_is_still_described() -> None:
    assert follow_up(contact_id=None).who == NO_CONTACT
    assert follow_up(name="  ").who == "unnamed contact (301)"


def test_a_task_is_due_when_it_is_created_and_assigned_only_when_an_owner_is_set() -> None:
    due = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)

    assigned = task_properties(follow_up(), due, "7001")
    unassigned = task_properties(follow_up(), due, None)

    assert assigned["hs_timestamp"] == "2026-11-02T09:00:00.000Z"
    assert assigned["hubspot_owner_id"] == "7001"
    assert "hubspot_owner_id" not in unassigned
