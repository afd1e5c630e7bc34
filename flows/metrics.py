"""The program-metrics flow: is the referral program working, and does it pay?

Computes the metrics of :mod:`domain.metrics` per period and source from the ledger,
draws the charts, and publishes both as the ``program-metrics`` markdown artifact.
Read only: running it again changes nothing but the artifact's latest version.
"""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow

from domain.metrics import PeriodKind, period_containing
from flows import bootstrap
from tasks.metrics import compute_program_metrics, publish_program_metrics, render_metric_charts


def as_of_or_now(as_of: datetime | None) -> datetime:
    """``as_of`` as an aware UTC datetime (a naive one is taken as UTC); now if not given."""
    if as_of is None:
        return datetime.now(UTC)
    return as_of.replace(tzinfo=UTC) if as_of.tzinfo is None else as_of.astimezone(UTC)


@flow(name="program-metrics")
@bootstrap.one_line_failure
def program_metrics(
    period: PeriodKind = PeriodKind.MONTH,
    as_of: datetime | None = None,
    periods: int = 6,
    fixed_cost: str = "0",
    closed_only: bool = False,
) -> dict[str, Any]:
    """Compute the referral program's metrics and publish them with charts.

    Per period and per source (customer, partner, employee, all): referral rate,
    referred-lead conversion, sales cycle and deal size against other channels, time
    to reward (median, p90), active referrers, top-10% share, cost, revenue, ROI and
    payback. Definitions: :mod:`domain.metrics`.

    Args:
        period: week, month or quarter (calendar, UTC).
        as_of: the report's moment (default: now); nothing at or after it counts.
        periods: how many periods to show, the one before ``as_of`` last.
        fixed_cost: a fixed program cost per period in the program currency, major
            units as a string (e.g. ``"1500.00"``), added to the cost.
        closed_only: end with the last closed period: ``as_of`` moves back to the
            start of the period holding it (what a monthly schedule wants).

    Returns:
        The numbers (money in minor units, decimals as strings) and the artifact id.
    """
    app = bootstrap.app()
    kind = PeriodKind(period)
    when = as_of_or_now(as_of)
    if closed_only:
        when = period_containing(when, kind).start
    metrics = compute_program_metrics(
        app.ledger, app.program, kind, when, periods, app.program.money(fixed_cost)
    )
    with tempfile.TemporaryDirectory(prefix="program-metrics-") as folder:
        charts = render_metric_charts(metrics, Path(folder))
        artifact = publish_program_metrics(metrics, charts)
    return {**metrics.as_dict(), "artifact_id": artifact}
