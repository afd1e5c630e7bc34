"""The program-metrics flow on the sample company, after two referral cycles."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from domain.metrics import PeriodKind, periods_ending
from domain.models import EventType, Milestone
from domain.program import Program
from flows.bootstrap import App, use_app
from flows.cycle import referral_cycle
from flows.metrics import program_metrics
from integrations.ledger.engine import make_engine
from integrations.ledger.sql import SqlLedger
from integrations.ledger.tables import ConversionRow, SourceEventRow
from integrations.reporting.metrics import CHARTS
from integrations.sources.sample import generate, simulate_referrals
from tasks.metrics import ARTIFACT_KEY
from tests.flows.conftest import make_app
from tests.prefect_artifacts import artifact_texts

Reported = tuple[App, dict[str, Any]]


@pytest.fixture(scope="module")
def reported(
    sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory, program: Program
) -> Iterator[Reported]:
    """The sample company through two cycles, then one monthly metrics run as of now."""
    folder = tmp_path_factory.mktemp("metrics")
    shutil.copy(sqlite_template, folder / "ledger.db")
    (folder / "inbox").mkdir()
    engine = make_engine(f"sqlite:///{folder / 'ledger.db'}")
    with use_app(make_app(SqlLedger(engine), program, folder / "inbox")) as app:
        sample = generate(app.settings.inbox_dir, datetime.now(UTC), accounts=60, seed=11)
        referral_cycle(as_of=sample.first_cycle_at)
        codes = app.ledger.asks.codes_for(
            app.ledger.asks.asked_contacts(until=sample.first_cycle_at)
        )
        contacts = app.ledger.asks.contacts(codes)
        simulate_referrals(
            sample,
            codes,
            {
                c: {"referrer_type": contacts[c].referrer_type.value, "domain": f"{c}.example"}
                for c in codes
            },
        )
        referral_cycle(as_of=datetime.now(UTC))
        yield app, program_metrics(as_of=datetime.now(UTC))
    engine.dispose()


def _artifacts(key: str) -> list[str]:
    return artifact_texts(key)


def _window(result: dict[str, Any], source: str = "all") -> dict[str, Any]:
    row: dict[str, Any] = result["window"]["sources"][source]
    return row


def test_the_metrics_are_published_as_markdown_with_every_chart_and_no_address(
    reported: Reported,
) -> None:
    published = _artifacts(ARTIFACT_KEY)

    assert published
    markdown = published[-1]
    assert markdown.startswith("# Referral program metrics")
    assert markdown.count("](data:image/png;base64,") == len(CHARTS)
    for title in ("### Customers", "### Partners", "### Employees", "### All sources"):
        assert title in markdown
    assert "@" not in "".join(published), "no email address may reach an artifact"
    assert len(markdown) < 400_000, "charts stay small enough for the UI"


def test_the_cost_reported_is_what_the_ledger_paid(reported: Reported) -> None:
    app, result = reported
    paid = app.ledger.metrics.summary()["paid"]

    assert paid.get("EUR", 0) > 0
    assert _window(result)["cost"] == paid["EUR"]
    per_source = sum(_window(result, s)["cost"] for s in ("customer", "partner", "employee"))
    assert per_source == paid["EUR"]
    assert sum(p["sources"]["all"]["cost"] for p in result["periods"]) == paid["EUR"]


def test_the_revenue_reported_is_the_referred_customers_won_deals(reported: Reported) -> None:
    app, result = reported
    with app.ledger.engine.connect() as conn:
        won, deals = conn.execute(
            select(func.sum(ConversionRow.amount_minor), func.count()).where(
                ConversionRow.milestone == Milestone.CUSTOMER.value,
                ConversionRow.currency == "EUR",
            )
        ).one()

    assert _window(result)["revenue"] == won
    assert _window(result)["customers"] == deals


def test_referred_leads_and_other_channels_are_the_coded_and_uncoded_signups(
    reported: Reported,
) -> None:
    app, result = reported
    start = periods_ending(datetime.now(UTC), PeriodKind.MONTH, 6)[0].start
    signups = select(func.count()).where(
        SourceEventRow.type == EventType.SIGNUP.value, SourceEventRow.occurred_at >= start
    )
    with app.ledger.engine.connect() as conn:
        coded = conn.execute(signups.where(SourceEventRow.referral_code.is_not(None))).scalar()
        uncoded = conn.execute(signups.where(SourceEventRow.referral_code.is_(None))).scalar()

    assert coded, "the sample has referred leads"
    assert uncoded, "the sample has leads from other channels"
    assert _window(result)["leads"]["leads"] == coded
    assert result["window"]["other_channels"]["leads"] == uncoded


def test_every_reward_paid_for_a_won_deal_has_its_time_to_reward(reported: Reported) -> None:
    app, result = reported
    statuses = app.ledger.metrics.summary()["rewards"]

    speed = _window(result)["time_to_reward"]

    assert 0 < speed["paid"] <= statuses["paid"]
    # The sample's rewards wait out the 14-day holding period: over the 7-day target.
    assert speed["slow"] is True
    assert float(speed["median_days"]) <= float(speed["p90_days"])


def test_a_weekly_report_adds_the_fixed_cost_once_per_week(reported: Reported) -> None:
    app, monthly = reported

    weekly = program_metrics(period=PeriodKind.WEEK, periods=8, fixed_cost="100.00")

    assert weekly["period"] == "week"
    assert len(weekly["periods"]) == 8
    paid = app.ledger.metrics.summary()["paid"]["EUR"]
    assert _window(weekly)["cost"] == paid + 8 * 10_000
    assert _window(weekly, "customer")["cost"] == _window(monthly, "customer")["cost"]


def test_a_scheduled_report_can_end_with_the_last_closed_month(reported: Reported) -> None:
    now = datetime.now(UTC)
    this_month = datetime(now.year, now.month, 1, tzinfo=UTC)

    closed = program_metrics(as_of=now, closed_only=True)

    assert datetime.fromisoformat(closed["as_of"]) == this_month
    last = closed["periods"][-1]
    assert last["to_date"] is False
    assert datetime.fromisoformat(last["end"]) == this_month
