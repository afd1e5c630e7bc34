"""``referrals report``: the program metrics in the terminal, charts as PNG files.

    referrals report [--period month] [--as-of ISO] [--out DIR] [--periods 6]
                     [--fixed-cost 1500.00]

Computed straight from the ledger (the composition root's settings pick it): no
Prefect server and no flow run are needed, and nothing is written to the ledger. The
same numbers as the ``program-metrics`` flow's artifact.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from config.settings import DATA_DIR
from domain.metrics import PeriodKind

report_app = typer.Typer(
    add_completion=False, help="Program metrics per period and source, with PNG charts."
)


@report_app.callback(invoke_without_command=True)
def report(
    period: Annotated[
        PeriodKind, typer.Option(help="Calendar period (UTC) of each column.")
    ] = PeriodKind.MONTH,
    as_of: Annotated[
        datetime | None,
        typer.Option(help="Report as of this time (ISO 8601, UTC if no zone); default now."),
    ] = None,
    out: Annotated[Path, typer.Option(help="Folder the PNG charts are written to.")] = (
        DATA_DIR / "report"
    ),
    periods: Annotated[int, typer.Option(min=1, max=60, help="How many periods.")] = 6,
    fixed_cost: Annotated[
        str, typer.Option(help="Fixed program cost per period, e.g. 1500.00.")
    ] = "0",
) -> None:
    """Print referral rate, lead quality against other channels, time to reward, active
    referrers, top-10% share, cost, ROI and payback per period and source; write the
    charts as PNG files."""
    # Imported here: Prefect (under the tasks) is loaded only when a command runs.
    from flows import bootstrap
    from flows.metrics import as_of_or_now
    from integrations.reporting.metrics import metrics_tables
    from tasks.metrics import compute_program_metrics, render_metric_charts

    app = bootstrap.app()
    # The tasks' plain functions: no flow run, so no Prefect server is needed.
    metrics = compute_program_metrics.fn(
        app.ledger,
        app.program,
        period,
        as_of_or_now(as_of),
        periods,
        app.program.money(fixed_cost),
    )
    typer.echo(
        f"Referral program metrics as of {metrics.as_of:%Y-%m-%d %H:%M} UTC, by "
        f"{metrics.kind.value}; amounts in {metrics.currency} (whole units)."
    )
    typer.echo("")
    for line in metrics_tables(metrics, markdown=False):
        typer.echo(line)
    charts = render_metric_charts.fn(metrics, out)
    typer.echo("Charts: " + ", ".join(str(path) for path in charts))
