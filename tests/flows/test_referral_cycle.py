"""The whole cycle as Prefect flows, on a small sample company, with recording adapters."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.logging.handlers import APILogWorker

from domain.models import EmailMessage, RewardStatus
from domain.money import Money
from domain.program import Program
from flows.bootstrap import App, use_app
from flows.cycle import referral_cycle
from integrations.approvals.fake import RecordingApprovalRuns
from integrations.email.fake import RecordingEmailSender
from integrations.ledger.engine import make_engine
from integrations.ledger.sql import SqlLedger
from integrations.payments.fake import RecordingRail
from integrations.sources.sample import Sample, generate, simulate_referrals
from tests.flows.conftest import make_app
from tests.prefect_artifacts import keyed_artifacts

Cycled = tuple[App, dict[str, Any], dict[str, Any]]


def _run_sample_cycle(app: App) -> tuple[Sample, dict[str, Any], dict[str, Any]]:
    # Seed 12: among its few referrers a partner wins a deal large enough to wait for
    # approval, and one customer is a recent detractor. Which asked contacts refer is
    # drawn over the asked ones, so each skip shifts it (seed 11 lost its partner deal
    # when a detractor stopped being asked).
    sample = generate(app.settings.inbox_dir, datetime.now(UTC), accounts=60, seed=12)
    first = referral_cycle(as_of=sample.first_cycle_at)
    asked = app.ledger.asks.asked_contacts(until=sample.first_cycle_at)
    codes = app.ledger.asks.codes_for(asked)
    contacts = app.ledger.asks.contacts(codes)
    simulate_referrals(
        sample,
        codes,
        {
            c: {"referrer_type": contacts[c].referrer_type.value, "domain": f"{c}.example"}
            for c in codes
        },
    )
    second = referral_cycle(as_of=datetime.now(UTC))
    return sample, first, second


@pytest.fixture(scope="module")
def cycled(
    sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory, program: Program
) -> Iterator[Cycled]:
    """One sample company through two cycles, shared by the tests that only read."""
    folder = tmp_path_factory.mktemp("cycle")
    shutil.copy(sqlite_template, folder / "ledger.db")
    (folder / "inbox").mkdir()
    engine = make_engine(f"sqlite:///{folder / 'ledger.db'}")
    with use_app(make_app(SqlLedger(engine), program, folder / "inbox")) as app:
        _, first, second = _run_sample_cycle(app)
        yield app, first, second
    engine.dispose()


def _emails(app: App) -> list[EmailMessage]:
    assert isinstance(app.email, RecordingEmailSender)
    return list(app.email.sent)


def test_the_cycle_asks_rewards_pays_small_rewards_and_pauses_large_ones(cycled: Cycled) -> None:
    test_app, first, second = cycled

    asks = [m for m in _emails(test_app) if m.kind == "ask"]
    assert first["stages"]["send asks"]["decisions"]["queued"] > 0
    assert len(asks) == test_app.ledger.metrics.summary()["asks"]["accepted"]
    # The ask is personal: the person's name, the moment, a concrete reward, their link.
    sample_ask = asks[0]
    assert sample_ask.data["first_name"] in sample_ask.data["text"]
    assert sample_ask.data["link"].endswith(sample_ask.data["code"])
    assert "EUR" in sample_ask.data["reward_line"] or "%" in sample_ask.data["reward_line"]

    rail = test_app.rails[next(iter(test_app.rails))]
    assert isinstance(rail, RecordingRail)
    routed = second["stages"]["route rewards"]
    assert routed["payouts"]["paid"] == len(rail.paid) > 0
    threshold = test_app.program.auto_payout_threshold
    assert all(i.amount < threshold for i in rail.paid)

    runs = test_app.approvals
    assert isinstance(runs, RecordingApprovalRuns)
    waiting = test_app.ledger.approvals.waiting()
    assert waiting, "the sample has partner deals large enough to need approval"
    assert {w.reward_id for w in waiting} == set(runs.rewards.values())
    assert all(w.amount >= threshold or w.flags for w in waiting)
    assert {w.flow_run_id for w in waiting} == set(runs.rewards)


def test_a_recent_detractor_is_counted_among_the_skips_of_the_cycle_summary(
    cycled: Cycled,
) -> None:
    test_app, first, _ = cycled
    assert first["stages"]["send asks"]["decisions"]["skipped"]["recent_detractor"] >= 1
    assert test_app.ledger.metrics.summary()["skipped"]["recent_detractor"] >= 1


def test_running_the_cycle_again_sends_rewards_and_pays_nothing_twice(test_app: App) -> None:
    _run_sample_cycle(test_app)
    rail = test_app.rails[next(iter(test_app.rails))]
    assert isinstance(rail, RecordingRail)
    runs = test_app.approvals
    assert isinstance(runs, RecordingApprovalRuns)
    emails, payments, started = len(_emails(test_app)), len(rail.paid), dict(runs.started)
    summary = test_app.ledger.metrics.summary()

    again = referral_cycle(as_of=datetime.now(UTC))

    assert len(_emails(test_app)) == emails
    assert len(rail.paid) == payments
    assert runs.started == started
    assert test_app.ledger.metrics.summary() == summary
    assert again["stages"]["route rewards"]["payouts"]["paid"] == 0
    assert again["report"]["this run"] == {
        "new asks": 0,
        "new conversions": 0,
        "new rewards": 0,
        "paid now": "nothing",
        "sent for approval": 0,
    }
    assert again["report"]["totals"]["asks"] == summary["asks"]


def test_the_cycle_report_shows_what_the_run_paid_in_formatted_money(cycled: Cycled) -> None:
    test_app, _, second = cycled
    rail = test_app.rails[next(iter(test_app.rails))]
    assert isinstance(rail, RecordingRail)
    paid = sum(i.amount.amount_minor for i in rail.paid)

    shown = second["report"]["this run"]["paid now"]

    assert shown == f"{len(rail.paid)} payouts, {Money(paid, 'EUR').format()}"
    assert second["report"]["totals"]["paid"] == Money(paid, "EUR").format()


def test_bad_input_is_quarantined_with_its_reason_and_the_batch_goes_on(cycled: Cycled) -> None:
    test_app, first, _ = cycled

    ingest = first["stages"]["detect moments"]["ingest"][0]
    assert ingest["quarantined"] >= 7
    assert ingest["records_in"] == (
        ingest["new_events"]
        + ingest["already_seen"]
        + ingest["quarantined"]
        + ingest["reference_rows"]
    )
    refused = {
        (q["record"], q["field"]): q["reason"] for q in test_app.ledger.sources.quarantined()
    }
    files = {(record.split(":")[0], field) for record, field in refused}
    assert ("nps.csv", "score") in files
    assert ("events.csv", "type") in files
    # Coded events are refused at the conversion stage, named by their event key.
    assert refused[("files:REF-unknown-code", "referral_code")] == "unknown referral code"
    assert "USD" in refused[("files:REF-usd", "amount")]


def test_detractors_are_listed_for_follow_up_and_never_asked(cycled: Cycled) -> None:
    test_app = cycled[0]
    summary = test_app.ledger.metrics.summary()
    assert summary["follow_ups"] > 0
    asked_moments = {m.data["moment"] for m in _emails(test_app) if m.kind == "ask"}
    assert asked_moments <= {
        "deal_won",
        "renewal",
        "nps_promoter",
        "support_resolved",
        "usage_milestone",
    }
    for message in _emails(test_app):
        detail = message.data.get("moment_detail", "")
        if detail.startswith("NPS "):
            assert int(detail.removeprefix("NPS ")) >= 9


def test_referrers_are_told_their_rewards_were_earned_and_paid(cycled: Cycled) -> None:
    test_app = cycled[0]
    kinds = {m.kind for m in _emails(test_app)}
    assert {"ask", "reward_earned", "reward_paid"} <= kinds
    paid = [m for m in _emails(test_app) if m.kind == "reward_paid"]
    assert all("EUR" in m.subject for m in paid)


def test_the_cycle_publishes_its_summary_and_waiting_approvals_as_artifacts(
    cycled: Cycled,
) -> None:
    waiting_ids = [w.reward_id for w in cycled[0].ledger.approvals.waiting()]
    artifacts = keyed_artifacts()
    by_key: dict[str, list[str]] = {}
    for artifact in artifacts:
        by_key.setdefault(str(artifact.key), []).append(str(artifact.data))
    assert any("skipped by reason" in s for s in by_key["referral-cycle-summary"])
    everything = "".join(text for texts in by_key.values() for text in texts)
    assert "@" not in everything, "no email address may reach an artifact"
    assert any(all(r in t for r in waiting_ids) for t in by_key["approvals-waiting"])
    assert any("unknown referral code" in t for t in by_key["quarantined-input"])


def test_rewards_past_the_threshold_wait_in_awaiting_approval(cycled: Cycled) -> None:
    test_app = cycled[0]
    statuses = test_app.ledger.metrics.summary()["rewards"]
    assert statuses.get(RewardStatus.AWAITING_APPROVAL.value, 0) == len(
        test_app.ledger.approvals.waiting()
    )
    assert statuses.get(RewardStatus.PAID.value, 0) > 0


def test_no_email_address_or_key_reaches_the_run_logs(cycled: Cycled) -> None:
    app = cycled[0]
    addresses = {
        c.email
        for c in app.ledger.asks.contacts(
            app.ledger.asks.asked_contacts(datetime.now(UTC))
        ).values()
        if c.email
    }
    assert addresses, "the sample has people with addresses"
    APILogWorker.drain_all(timeout=5)  # logs are shipped to the API in batches
    with get_client(sync_client=True) as client:
        logs = client.read_logs(limit=200)
        offset = 200
        while batch := client.read_logs(limit=200, offset=offset):
            logs += batch
            offset += 200
    assert len(logs) > 50
    text = "\n".join(log.message for log in logs)
    assert "@" not in text
    assert not any(address in text for address in addresses)
