"""Long sends and payouts show a progress artifact in the run, ending at 100 %."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any, cast
from uuid import UUID

import pytest
from prefect import flow
from prefect.artifacts import update_progress_artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterType,
)
from prefect.client.schemas.objects import Artifact

import tasks._support as support
from domain.models import PayoutRailKind
from domain.program import Program
from integrations.email.fake import RecordingEmailSender
from integrations.ledger.sql import SqlLedger
from integrations.payments.ledger_only import LedgerOnlyRail
from tasks._support import Progress
from tasks.emails import Delivery, send_ask_emails
from tasks.payouts import PayoutReport, submit_payouts
from tests.conftest import NOW, contact
from tests.integration.test_payout_crashes import seed_payable_reward
from tests.tasks.test_send_emails import _queue_asks


def progress_artifacts(run: Callable[[], Any]) -> tuple[Any, list[Artifact]]:
    """Run the flow ``run`` and read back the progress artifacts its run left."""
    state = run(return_state=True)  # type: ignore[call-arg]
    run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]),
                type=ArtifactFilterType(any_=["progress"]),
            )
        )
    return state.result(), artifacts


def queue_asks(ledger: SqlLedger, program: Program, count: int) -> None:
    _queue_asks(ledger, program, *(f"C{i:03d}" for i in range(count)))


def test_sending_asks_shows_its_progress_and_ends_at_100(
    sqlite_ledger: SqlLedger, program: Program
) -> None:
    queue_asks(sqlite_ledger, program, 7)

    @flow
    def sending() -> Delivery:
        return send_ask_emails(sqlite_ledger, RecordingEmailSender(), program, NOW, batch_size=2)

    delivery, artifacts = progress_artifacts(sending)

    assert delivery.accepted == 7
    [artifact] = artifacts
    assert artifact.key == "ask-emails-progress"
    assert artifact.data == 100.0
    assert artifact.description == "7 of 7 ask emails handled"


def test_a_long_send_updates_its_progress_a_bounded_number_of_times(
    sqlite_ledger: SqlLedger, program: Program, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue_asks(sqlite_ledger, program, 60)
    shown: list[float] = []
    real_update = update_progress_artifact

    def counted(**kwargs: Any) -> UUID:
        shown.append(kwargs["progress"])
        # Synchronous in a synchronous caller; typed for both.
        return cast(UUID, real_update(**kwargs))

    monkeypatch.setattr(support, "update_progress_artifact", counted)

    @flow
    def sending() -> Delivery:
        # One ask a page: 60 pages, each 1.7 % of the whole.
        return send_ask_emails(sqlite_ledger, RecordingEmailSender(), program, NOW, batch_size=1)

    delivery, [artifact] = progress_artifacts(sending)

    assert delivery.accepted == 60
    # Every 5 points at most (the default step), not once per page.
    assert len(shown) <= 20
    assert shown == sorted(shown)
    assert all(b - a >= 5.0 for a, b in itertools.pairwise(shown[:-1]))
    assert shown[-1] == artifact.data == 100.0


def test_paying_rewards_shows_its_progress_and_ends_at_100(
    sqlite_ledger: SqlLedger,
) -> None:
    rewards = [
        seed_payable_reward(sqlite_ledger, contact(f"C{i}", f"A{i}"), NOW, key=f"deal-{i}")
        for i in range(5)
    ]

    @flow
    def paying() -> PayoutReport:
        rails = {PayoutRailKind.LEDGER_ONLY: LedgerOnlyRail()}
        return submit_payouts(sqlite_ledger, rails, rewards, NOW, chunk=2)

    report, artifacts = progress_artifacts(paying)

    assert report.paid == 5
    [artifact] = artifacts
    assert artifact.key == "payouts-progress"
    assert artifact.data == 100.0
    assert artifact.description == "5 of 5 payouts handled"


def test_paying_one_reward_shows_no_progress(sqlite_ledger: SqlLedger) -> None:
    # An approval run pays one reward: no "1 of 1" artifact, no API calls for it.
    reward = seed_payable_reward(sqlite_ledger, contact("C1", "A1"), NOW)

    @flow
    def paying() -> PayoutReport:
        rails = {PayoutRailKind.LEDGER_ONLY: LedgerOnlyRail()}
        return submit_payouts(sqlite_ledger, rails, [reward], NOW)

    report, artifacts = progress_artifacts(paying)

    assert report.paid == 1
    assert artifacts == []


def test_a_failing_artifact_api_does_not_stop_the_send(
    sqlite_ledger: SqlLedger, program: Program, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue_asks(sqlite_ledger, program, 3)

    def refused(**_: Any) -> UUID:
        raise RuntimeError("the Prefect API is down")

    monkeypatch.setattr(support, "create_progress_artifact", refused)

    @flow
    def sending() -> Delivery:
        return send_ask_emails(sqlite_ledger, RecordingEmailSender(), program, NOW, batch_size=1)

    delivery, artifacts = progress_artifacts(sending)

    assert delivery.accepted == 3
    assert artifacts == []
    assert sqlite_ledger.metrics.summary()["asks"] == {"accepted": 3}


def test_outside_a_run_progress_calls_no_api(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_call(**_: Any) -> UUID:
        raise AssertionError("no Prefect API call outside a run")

    monkeypatch.setattr(support, "create_progress_artifact", no_call)
    monkeypatch.setattr(support, "update_progress_artifact", no_call)

    progress = Progress("things-progress", 10, "things")
    progress.advance(10)
    progress.finish()

    assert progress.artifact_id is None
    assert progress.percent == 100.0
