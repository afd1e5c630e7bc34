"""The program metrics drawn and written: PNG charts and the markdown report.

Rendering only: the numbers come from :mod:`domain.metrics`, computed by the
``compute-program-metrics`` task; the tasks in :mod:`tasks.metrics` call these
functions and publish what they return. Charts are drawn with matplotlib's Agg canvas
(no display, no pyplot state); an outside library, so this lives in ``integrations/``
(the only layer that imports one) and not in a task module. The report carries
counts, rates and money only: no name, no id of a person, never an email address.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import StrMethodFormatter

from domain.metrics import (
    ACTIVE_DAYS,
    ALL,
    LeadQuality,
    PeriodMetrics,
    ProgramMetrics,
    SourceMetrics,
)
from domain.models import ReferrerType
from domain.money import Money

SOURCE_TITLES = {
    ReferrerType.CUSTOMER.value: "Customers",
    ReferrerType.PARTNER.value: "Partners",
    ReferrerType.EMPLOYEE.value: "Employees",
    ALL: "All sources",
}
SOURCE_COLOURS = {
    ReferrerType.CUSTOMER.value: "#4C78A8",
    ReferrerType.PARTNER.value: "#F58518",
    ReferrerType.EMPLOYEE.value: "#54A24B",
}
REFERRED, OTHER = "#4C78A8", "#BAB0AC"
CHART_DPI = 80
SLOW = " ⚠"


# -- charts -------------------------------------------------------------------------------


def _figure() -> Figure:
    figure = Figure(figsize=(7.5, 3.4), dpi=CHART_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _labels(metrics: ProgramMetrics) -> list[str]:
    """Period labels for an axis; ``*`` marks a period still running at ``as_of``."""
    return [p.period.label + (" *" if p.to_date else "") for p in metrics.periods]


def _number(value: Decimal | None) -> float:
    return float("nan") if value is None else float(value)


def referrals_chart(metrics: ProgramMetrics) -> Figure:
    """New referrals per period, stacked by source."""
    figure = _figure()
    axes = figure.add_subplot()
    labels = _labels(metrics)
    bottom = [0] * len(labels)
    for source, colour in SOURCE_COLOURS.items():
        counts = [p.source(source).referrals for p in metrics.periods]
        axes.bar(labels, counts, bottom=bottom, color=colour, label=SOURCE_TITLES[source])
        bottom = [b + c for b, c in zip(bottom, counts, strict=True)]
    axes.set_title(f"Referrals per {metrics.kind.value}, by source")
    axes.set_ylabel("new referrals")
    axes.legend(loc="upper left", frameon=False)
    return figure


def time_to_reward_chart(metrics: ProgramMetrics) -> Figure:
    """Days from conversion to payout of every reward paid in the window."""
    figure = _figure()
    axes = figure.add_subplot()
    values = [float(d) for d in metrics.reward_days]
    speed = metrics.window.source(ALL).time_to_reward
    if values:
        top = max(max(values), metrics.target_days) + 1
        axes.hist(values, bins=[float(b) for b in range(int(top) + 2)], color=REFERRED)
        for value, style, name in (
            (speed.median_days, ":", "median"),
            (speed.p90_days, "-.", "p90"),
        ):
            if value is not None:
                axes.axvline(
                    float(value), color="black", linestyle=style, label=f"{name} {value} d"
                )
    else:
        axes.text(0.5, 0.5, "no reward paid in the window", ha="center", transform=axes.transAxes)
    axes.axvline(
        metrics.target_days,
        color="#E45756",
        linestyle="--",
        label=f"target {metrics.target_days} d",
    )
    axes.set_title("Time to reward (conversion to payout)")
    axes.set_xlabel("days")
    axes.set_ylabel("rewards paid")
    axes.legend(loc="best", frameon=False)
    return figure


def conversion_chart(metrics: ProgramMetrics) -> Figure:
    """Lead conversion per signup period: referred leads against other channels."""
    figure = _figure()
    axes = figure.add_subplot()
    labels = _labels(metrics)
    x = list(range(len(labels)))
    referred = [_number(p.source(ALL).leads.conversion_pct) for p in metrics.periods]
    other = [_number(p.other.conversion_pct) for p in metrics.periods]
    axes.bar([i - 0.2 for i in x], referred, width=0.4, color=REFERRED, label="referred")
    axes.bar([i + 0.2 for i in x], other, width=0.4, color=OTHER, label="other channels")
    axes.set_xticks(x, labels)
    axes.set_ylim(0, 100)
    axes.set_title("Leads converted to customers, by signup period")
    axes.set_ylabel("% of leads")
    axes.legend(loc="upper left", frameon=False)
    return figure


def cost_revenue_chart(metrics: ProgramMetrics) -> Figure:
    """Referred revenue (first-year value) against program cost, per period."""
    figure = _figure()
    axes = figure.add_subplot()
    labels = _labels(metrics)
    x = list(range(len(labels)))
    rows = [p.source(ALL) for p in metrics.periods]
    revenue = [float(r.revenue.to_decimal()) for r in rows]
    cost = [float(r.cost.to_decimal()) for r in rows]
    axes.bar([i - 0.2 for i in x], revenue, width=0.4, color=REFERRED, label="revenue")
    axes.bar([i + 0.2 for i in x], cost, width=0.4, color="#E45756", label="cost")
    axes.set_xticks(x, labels)
    axes.set_title("Referred revenue (first-year value) and program cost")
    axes.set_ylabel(metrics.currency)
    axes.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    axes.legend(loc="upper left", frameon=False)
    return figure


CHARTS: dict[str, tuple[str, Callable[[ProgramMetrics], Figure]]] = {
    "referrals": ("Referrals per period by source", referrals_chart),
    "conversion": ("Referred vs other-channel lead conversion", conversion_chart),
    "time_to_reward": ("Time-to-reward distribution", time_to_reward_chart),
    "cost_revenue": ("Revenue and cost per period", cost_revenue_chart),
}


def draw_charts(metrics: ProgramMetrics, folder: Path) -> list[Path]:
    """Draw the metric charts as PNG files in ``folder`` (created if missing).

    Args:
        metrics: what to draw.
        folder: where the PNGs go; files of the same name are replaced.

    Returns:
        The PNG files written: referrals per period by source, referred vs
        other-channel conversion, time-to-reward distribution, revenue and cost.
    """
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for name, (_, draw) in CHARTS.items():
        path = folder / f"{name}.png"
        # No "Software" stamp: the same numbers give the same bytes.
        draw(metrics).savefig(path, format="png", metadata={"Software": None})
        written.append(path)
    return written


# -- tables and markdown --------------------------------------------------------------------


def _pct(value: Decimal | None) -> str:
    return "n/a" if value is None else f"{value}%"


def _days(value: Decimal | None) -> str:
    return "n/a" if value is None else f"{value}"


def _amount(value: Money | None) -> str:
    """Whole major units for tables (``12,345``); exact amounts stay in the numbers."""
    return "n/a" if value is None else f"{value.to_decimal():,.0f}"


def _source_rows(rows: Sequence[SourceMetrics]) -> list[list[str]]:
    def line(name: str, cell: Callable[[SourceMetrics], str]) -> list[str]:
        return [name, *(cell(r) for r in rows)]

    def speed(r: SourceMetrics) -> str:
        t = r.time_to_reward
        if not t.paid:
            return "n/a"
        return f"{_days(t.median_days)} / {_days(t.p90_days)} ({t.paid}){SLOW if t.slow else ''}"

    return [
        line("referrers / contacts", lambda r: f"{r.referrers} / {r.contacts}"),
        line("referral rate", lambda r: _pct(r.referral_rate_pct)),
        line("new referrals", lambda r: str(r.referrals)),
        line(f"active referrers ({ACTIVE_DAYS} d)", lambda r: str(r.active_referrers)),
        line("top 10% referrers' share", lambda r: _pct(r.top_share_pct)),
        line(
            "referred leads: converted",
            lambda r: f"{r.leads.leads}: {r.leads.converted} ({_pct(r.leads.conversion_pct)})",
        ),
        line("deals won", lambda r: str(r.leads.won)),
        line("sales cycle, median days", lambda r: _days(r.leads.cycle_median_days)),
        line(
            "deal size, median / mean",
            lambda r: f"{_amount(r.leads.deal_median)} / {_amount(r.leads.deal_mean)}",
        ),
        line("time to reward, median / p90 days (paid)", speed),
        line("referred customers", lambda r: str(r.customers)),
        line("revenue (first-year value)", lambda r: _amount(r.revenue)),
        line("cost", lambda r: _amount(r.cost)),
        line("ROI", lambda r: _pct(r.roi_pct)),
        line("payback, months", lambda r: _days(r.payback_months)),
        line("cost per referred customer", lambda r: _amount(r.cost_per_customer)),
    ]


def _comparison_rows(periods: Sequence[PeriodMetrics]) -> list[list[str]]:
    pairs = [(p.source(ALL).leads, p.other) for p in periods]

    def line(name: str, cell: Callable[[LeadQuality], str]) -> list[str]:
        return [name, *(f"{cell(a)} / {cell(b)}" for a, b in pairs)]

    return [
        line("leads signed up", lambda q: str(q.leads)),
        line("converted to customer", lambda q: _pct(q.conversion_pct)),
        line("deals won", lambda q: str(q.won)),
        line("sales cycle, median days", lambda q: _days(q.cycle_median_days)),
        line("deal size, median", lambda q: _amount(q.deal_median)),
        line("deal size, mean", lambda q: _amount(q.deal_mean)),
    ]


def _header(metrics: ProgramMetrics) -> list[str]:
    labels = [p.period.label + (" (to date)" if p.to_date else "") for p in metrics.periods]
    return ["", *labels, f"window {metrics.window.period.label}"]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], markdown: bool) -> list[str]:
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        # "---|" is left-aligned text; the numbers read fine that way in the UI.
        return lines + ["| " + " | ".join(row) + " |" for row in rows]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def fmt(row: Sequence[str]) -> str:
        first = row[0].ljust(widths[0])
        return "  ".join([first, *(c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True))])

    return [fmt(header), "-" * len(fmt(header)), *(fmt(r) for r in rows)]


def metrics_tables(metrics: ProgramMetrics, markdown: bool = True) -> list[str]:
    """The tables: one per source (periods as columns), then referred vs other channels."""
    header = _header(metrics)
    everything = [*metrics.periods, metrics.window]
    heading = "### " if markdown else ""
    lines: list[str] = []
    for source, title in SOURCE_TITLES.items():
        rows = _source_rows([p.source(source) for p in everything])
        lines += [f"{heading}{title}", "", *_table(header, rows, markdown), ""]
    lines += [
        f"{heading}Referred leads / other channels",
        "",
        *_table(header, _comparison_rows(everything), markdown),
        "",
    ]
    return lines


def _intro(metrics: ProgramMetrics) -> list[str]:
    window = metrics.window.source(ALL)
    speed = window.time_to_reward
    other = metrics.window.other
    fixed = (
        f"; cost includes a fixed {_amount(metrics.fixed_cost)} per {metrics.kind.value}"
        if not metrics.fixed_cost.is_zero
        else ""
    )
    lines = [
        f"As of {metrics.as_of:%Y-%m-%d %H:%M} UTC, by calendar {metrics.kind.value} "
        f"(UTC), {len(metrics.periods)} periods. Amounts in {metrics.currency}, whole "
        f"units{fixed}. A period marked *to date* is still running.",
        "",
        f"- **ROI** over the window: {_pct(window.roi_pct)} "
        f"(revenue {_amount(window.revenue)}, cost {_amount(window.cost)}; "
        "healthy programs return 3-5x their cost); "
        f"**payback** {_days(window.payback_months)} months (ideally under 6).",
        f"- **Referred leads converted** {_pct(window.leads.conversion_pct)} against "
        f"{_pct(other.conversion_pct)} from other channels; median sales cycle "
        f"{_days(window.leads.cycle_median_days)} against {_days(other.cycle_median_days)} "
        f"days; median deal {_amount(window.leads.deal_median)} against "
        f"{_amount(other.deal_median)}.",
        f"- **Time to reward** median {_days(speed.median_days)} days, p90 "
        f"{_days(speed.p90_days)} days over {speed.paid} rewards paid (target under "
        f"{metrics.target_days} days)" + (f"{SLOW} p90 is over the target." if speed.slow else "."),
        f"- **Active referrers** ({ACTIVE_DAYS} days): {window.active_referrers}; the top "
        f"10% of referrers made {_pct(window.top_share_pct)} of the referrals.",
    ]
    return lines


DEFINITIONS = (
    "Definitions (full text in `domain/metrics.py`): referral rate = referrers with a "
    "conversion in the period / contacts of that type; lead conversion over leads signed "
    "up in the period, cycle and deal size over deals won in it; time to reward from the "
    "won deal to the first payout; cost = rewards paid minus recovered; revenue = "
    "first-year value of referred customers' won deals; ROI = (revenue - cost) / cost, "
    "n/a without cost; payback = 12 x cost / revenue months. Percentiles are nearest-rank."
)


def metrics_markdown(metrics: ProgramMetrics, charts: Sequence[Path] = ()) -> str:
    """The report as markdown; each chart embedded as a ``data:`` URI PNG image."""
    lines = ["# Referral program metrics", "", *_intro(metrics), ""]
    for path in charts:
        alt = CHARTS.get(path.stem, (path.stem, None))[0]
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        lines += [f"![{alt}](data:image/png;base64,{data})", ""]
    lines += ["## Per source", "", *metrics_tables(metrics), DEFINITIONS]
    return "\n".join(lines)
