"""Program metrics: computed from the ledger, drawn as charts, published as an artifact.

The numbers come from :mod:`domain.metrics` (definitions there); the charts and the
markdown are rendered by :mod:`integrations.reporting.metrics`. These tasks read the
ledger, call them, and publish the result. Artifacts carry counts, rates and money
only: no name, no id of a person, never an email address.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from domain.metrics import (
    ACTIVE_DAYS,
    MetricInputs,
    PeriodKind,
    ProgramMetrics,
    compute_metrics,
    periods_ending,
)
from domain.money import Money
from domain.program import Program
from domain.stores.metrics import WithMetrics
from integrations.reporting.metrics import draw_charts, metrics_markdown
from tasks._support import run_logger

ARTIFACT_KEY = "program-metrics"


@task(name="compute-program-metrics", cache_policy=NO_CACHE)
def compute_program_metrics(
    ledger: WithMetrics,
    program: Program,
    period: PeriodKind,
    as_of: datetime,
    periods: int = 6,
    fixed_cost: Money | None = None,
) -> ProgramMetrics:
    """Read what the metrics need from the ledger and compute them per period and source.

    Args:
        ledger: the ledger (its ``metrics`` store, read only).
        program: for the program currency.
        period: week, month or quarter (calendar, UTC).
        as_of: nothing at or after it counts; the last period holds the instant before.
        periods: how many periods, the last one included.
        fixed_cost: a fixed program cost per period, added to the total cost.

    Returns:
        Every metric of each period and of the window over them.
    """
    spans = periods_ending(as_of, period, periods)
    start = spans[0].start
    inputs = MetricInputs(
        contacts=ledger.metrics.contact_counts(),
        leads=ledger.metrics.leads(start, as_of),
        conversions=ledger.metrics.conversions(start - timedelta(days=ACTIVE_DAYS), as_of),
        referrals=ledger.metrics.referrals(start, as_of),
        paid_rewards=ledger.metrics.paid_rewards(start, as_of),
        costs=ledger.metrics.costs(spans, as_of, program.currency),
    )
    metrics = compute_metrics(inputs, spans, as_of, period, program.currency, fixed_cost)
    run_logger().info(
        "program metrics for %d %s periods: %d leads, %d conversions, %d rewards paid",
        len(spans),
        period.value,
        len(inputs.leads),
        len(inputs.conversions),
        len(inputs.paid_rewards),
    )
    return metrics


@task(name="render-metric-charts", cache_policy=NO_CACHE)
def render_metric_charts(metrics: ProgramMetrics, folder: Path) -> list[Path]:
    """Draw the metric charts as PNG files in ``folder`` (:func:`draw_charts`).

    Args:
        metrics: what to draw.
        folder: where the PNGs go (created if missing); files of the same name are
            replaced.

    Returns:
        The PNG files written.
    """
    written = draw_charts(metrics, folder)
    run_logger().info("drew %d metric charts", len(written))
    return written


@task(name="publish-program-metrics", cache_policy=NO_CACHE)
def publish_program_metrics(metrics: ProgramMetrics, charts: Sequence[Path]) -> str:
    """Publish the report as the ``program-metrics`` markdown artifact.

    The charts are embedded in the markdown as ``data:`` URI images, which the Prefect
    UI renders as they are (an artifact cannot link files on the worker's disk).

    Args:
        metrics: the numbers.
        charts: PNG files from :func:`render_metric_charts`.

    Returns:
        The id of the artifact created.
    """
    markdown = metrics_markdown(metrics, charts)
    artifact_id = create_markdown_artifact(
        key=ARTIFACT_KEY,
        markdown=markdown,
        description=(
            f"Referral program metrics by {metrics.kind.value}, as of "
            f"{metrics.as_of:%Y-%m-%d %H:%M} UTC"
        ),
    )
    run_logger().info("published the program metrics (%d characters)", len(markdown))
    return str(artifact_id)
