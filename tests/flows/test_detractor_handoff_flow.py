"""The cycle hands each new detractor on once, and its summary says how many."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from domain.program import Program
from flows.bootstrap import App, use_app
from flows.cycle import referral_cycle
from integrations.email.fake import RecordingEmailSender
from integrations.ledger.sql import SqlLedger
from tasks import reports
from tests.flows.conftest import make_app
from tests.tasks.test_detractor_handoffs import OWNER, given_detractors


@pytest.fixture
def markdown(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The cycle summaries published, in order."""
    published: list[str] = []

    def create(*, markdown: str, **_kwargs: Any) -> None:
        published.append(markdown)

    monkeypatch.setattr(reports, "create_markdown_artifact", create)
    return published


def app_with_owner(ledger: SqlLedger, program: Program, inbox: Path, owner: str | None) -> App:
    app = make_app(ledger, program, inbox)
    settings = app.settings.model_copy(update={"detractor_owner_email": owner})
    return dataclasses.replace(app, settings=settings)


@pytest.fixture
def owner_app(sqlite_ledger: SqlLedger, program: Program, inbox: Path) -> Iterator[App]:
    with use_app(app_with_owner(sqlite_ledger, program, inbox, OWNER)) as app:
        yield app


def owner_emails(app: App) -> list[str]:
    assert isinstance(app.email, RecordingEmailSender)
    return [m.message_id for m in app.email.sent if m.to_email == OWNER]


def test_the_cycle_hands_each_detractor_on_once_and_counts_it_in_its_summary(
    owner_app: App, markdown: list[str]
) -> None:
    given_detractors(owner_app.ledger, "C1", "C2")

    first = referral_cycle()
    second = referral_cycle()

    assert first["stages"]["notify referrers"]["detractors"]["handed_on"] == 2
    assert second["stages"]["notify referrers"]["detractors"]["handed_on"] == 0
    assert len(owner_emails(owner_app)) == 2
    assert second["summary"]["detractors_handed_on"] == {"accepted": 2}
    assert "0 notifications sent; 2 detractors handed on |" in markdown[0]
    assert "0 notifications sent; 0 detractors handed on |" in markdown[1]
    assert "| detractors handed on (owner emails by status) | accepted: 2 |" in markdown[1]
    assert all(OWNER not in page for page in markdown)


def test_without_an_owner_the_cycle_summary_says_how_many_detractors_wait(
    sqlite_ledger: SqlLedger, program: Program, inbox: Path, markdown: list[str]
) -> None:
    given_detractors(sqlite_ledger, "C1", "C2")

    with use_app(app_with_owner(sqlite_ledger, program, inbox, None)) as app:
        result = referral_cycle()

    assert result["stages"]["notify referrers"]["detractors"]["not_handed_on"] == 2
    assert "2 not handed on (no owner address set)" in markdown[0]
    assert owner_emails(app) == []
