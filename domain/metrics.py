"""Program metrics: is the referral program working, and is it worth what it costs?

Pure functions over plain frozen records (the ledger's
:class:`~integrations.ledger.metrics.SqlMetricsStore` builds them; nothing here touches a
database). Every figure is computed per **period** and per **source** (the referrer
type: customer, partner, employee, plus ``all``), and lead quality is compared with
**other channels** (leads that came without a referral code).

Conventions, shared by every metric:

* **Period**: a calendar week (ISO, Monday 00:00), month or quarter in UTC, half-open
  ``[start, end)``. The report covers the ``count`` periods ending with the one that
  holds the instant just before ``as_of``, plus a **window** column spanning them all.
* **As of**: nothing at or after ``as_of`` counts. A period still running is measured
  up to ``as_of`` (its ``stop``) and marked *to date*.
* **Money** is integer minor units (:class:`~domain.money.Money`) in the program
  currency. Amounts in another currency are left out of sums, medians and means (there
  is no exchange rate here); the deals they belong to still count as won.
* **Ratios** are exact fractions, shown as decimals rounded half-even (percentages to
  one decimal, days, ROI and months to two).
* **Percentiles** use the nearest-rank method: the p-th percentile of ``n`` values is
  the ``ceil(p * n / 100)``-th smallest. It is exact, always one of the observed
  values, and deterministic; the median is the 50th percentile (for an even count, the
  lower of the two middle values). Durations are measured in whole seconds.

Definitions (each function below repeats its own):

* **Referral rate** = referrers with at least one conversion (milestone lead or later)
  credited to them in the period / contacts of that referrer type x 100. The ledger
  keeps no history of contacts, so the denominator is the number of contacts of that
  type it holds now.
* **Referral**: one referred party (account, else contact, else event) per referrer,
  dated by its first conversion. Referrals per period feed the chart and the top-10%
  share.
* **Referred-lead conversion** = referred leads (a ``signup`` event carrying a referral
  code) signed up in the period that reached customer (a ``deal_won`` event for the
  same account, else the same deal id, at or after the signup) before ``as_of`` /
  referred leads signed up in the period. **Other channels**: the same for signups
  without a code. Recent cohorts are still maturing, so their rates are lower bounds.
* **Sales-cycle length**: days from signup to the first win, median, over leads won
  in the period (whenever they signed up).
* **Deal size**: median and mean of the first won deal of the leads won in the
  period.
* **Time to reward**: days from the conversion that earned a reward (by default the
  ``customer`` milestone: the won deal) to the reward's first ``paid`` ledger entry,
  median and p90, over rewards paid in the period. ``slow`` when p90 >= the 7-day
  target. Note the program's holding period (refund window) is part of it.
* **Active referrers**: distinct referrers with a conversion in the 90 days before the
  period's stop.
* **Top 10% share** = referrals made by the top 10% of the period's referrers
  (``ceil(n / 10)`` of them, by referrals made) / all referrals of the period x 100.
  Referrers tied at the boundary have the same count, so which of them is taken does
  not change the share.
* **Cost** = rewards paid in the period (the ``paid`` ledger entries, negated) minus
  what was recovered (``reversed`` entries), by the day the entry was booked; plus an
  optional fixed program cost per period, which belongs to no source and is added to
  the ``all`` row only.
* **Revenue** = first-year value of referred customers' won deals: the amounts of the
  ``customer``-milestone conversions in the period (a won deal's amount is its
  first-year value, as the reward rules read it).
* **Referred customers**: distinct referred parties with a ``customer`` conversion in
  the period.
* **ROI** = (revenue - cost) / cost, shown as a percentage. Undefined (``None``, shown
  as "n/a") when the cost is zero: nothing was spent, so there is no return to speak
  of. Healthy programs return 3-5x their cost (ROI 200-400%); under 2x is a problem.
* **Payback months** = cost / monthly revenue of the period's referred customers, where
  monthly revenue is their first-year value / 12; i.e. ``12 x cost / revenue``. The
  number of months of those customers' revenue that pays back what the period cost;
  undefined when there is no revenue. Ideally under 6.
* **Cost per referred customer** = cost / referred customers; undefined with none.

Cost is booked when paid and revenue when won, so one period's ROI can mix rewards
for last month's deals with this month's revenue; the window column evens that out.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from fractions import Fraction
from typing import Any

from domain.models import Milestone, ReferrerType
from domain.money import Money

TIME_TO_REWARD_TARGET_DAYS = 7
ACTIVE_DAYS = 90
TOP_SHARE = Fraction(1, 10)
ALL = "all"
SOURCES: tuple[str, ...] = (*(t.value for t in ReferrerType), ALL)
DAY_SECONDS = 86_400


class PeriodKind(StrEnum):
    """How the report is cut: calendar weeks (ISO), months or quarters, in UTC."""

    WEEK = "week"
    MONTH = "month"
    QUARTER = "quarter"


@dataclass(frozen=True, slots=True)
class Period:
    """A half-open span of time ``[start, end)`` with its label, e.g. ``2026-05``."""

    label: str
    start: datetime
    end: datetime

    def holds(self, at: datetime) -> bool:
        return self.start <= at < self.end

    def stop(self, as_of: datetime) -> datetime:
        """Where measuring ends: the period's end, or ``as_of`` if that comes first."""
        return min(self.end, max(as_of, self.start))

    def to_date(self, as_of: datetime) -> bool:
        """True while the period is still running at ``as_of``."""
        return as_of < self.end


def period_containing(at: datetime, kind: PeriodKind) -> Period:
    """The calendar period of ``kind`` (in UTC) that holds ``at``."""
    at = at.astimezone(UTC)
    if kind is PeriodKind.WEEK:
        start = datetime(at.year, at.month, at.day, tzinfo=UTC) - timedelta(days=at.weekday())
        year, week, _ = start.isocalendar()
        return Period(f"{year}-W{week:02d}", start, start + timedelta(days=7))
    if kind is PeriodKind.MONTH:
        start = datetime(at.year, at.month, 1, tzinfo=UTC)
        return Period(f"{at.year}-{at.month:02d}", start, _add_months(start, 1))
    quarter = (at.month - 1) // 3
    start = datetime(at.year, quarter * 3 + 1, 1, tzinfo=UTC)
    return Period(f"{at.year}-Q{quarter + 1}", start, _add_months(start, 3))


def _add_months(start: datetime, months: int) -> datetime:
    index = start.year * 12 + start.month - 1 + months
    return start.replace(year=index // 12, month=index % 12 + 1)


def periods_ending(as_of: datetime, kind: PeriodKind, count: int) -> tuple[Period, ...]:
    """The ``count`` periods of ``kind`` up to ``as_of``, oldest first.

    The last one holds the instant just before ``as_of`` (``as_of`` itself is never
    counted), so a report as of the first of a month ends with the month just closed.

    Raises:
        ValueError: ``count`` is below 1.
    """
    if count < 1:
        raise ValueError("a report needs at least one period")
    last = period_containing(as_of - timedelta(microseconds=1), kind)
    periods = [last]
    while len(periods) < count:
        periods.append(period_containing(periods[-1].start - timedelta(microseconds=1), kind))
    return tuple(reversed(periods))


def window_of(periods: Sequence[Period]) -> Period:
    """One span covering ``periods`` (oldest first), labelled ``first..last``."""
    first, last = periods[0], periods[-1]
    label = first.label if len(periods) == 1 else f"{first.label}..{last.label}"
    return Period(label, first.start, last.end)


# -- records the ledger hands in ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LeadRecord:
    """A lead: the first signup of an account (else a deal id), and its first win.

    ``referred`` when a signup of that account carried a referral code; ``source`` is
    then the type of the referrer the code was attributed to (``None`` when no
    referrer could be credited, e.g. an unknown code).
    """

    lead_id: str
    signed_up_at: datetime
    referred: bool
    source: ReferrerType | None = None
    won_at: datetime | None = None
    won_amount: Money | None = None


@dataclass(frozen=True, slots=True)
class ConversionRecord:
    """A referred party reaching a milestone, credited to one referrer."""

    referrer_id: str
    source: ReferrerType
    referee: str
    milestone: Milestone
    occurred_at: datetime
    amount: Money | None = None


@dataclass(frozen=True, slots=True)
class ReferralRecord:
    """One referred party per referrer, dated by its first conversion."""

    referrer_id: str
    source: ReferrerType
    referee: str
    first_at: datetime


@dataclass(frozen=True, slots=True)
class PaidRewardRecord:
    """A reward with the time of the conversion that earned it and of its first payout."""

    reward_id: str
    source: ReferrerType
    milestone: Milestone
    converted_at: datetime
    paid_at: datetime


@dataclass(frozen=True, slots=True)
class CostRecord:
    """Reward money booked in one report period for one source: paid out, and
    recovered. ``period_start`` is the start of that period (the ledger sums by the
    report's own periods)."""

    period_start: datetime
    source: ReferrerType
    paid: Money
    reversed: Money


@dataclass(frozen=True, slots=True)
class MetricInputs:
    """Everything the metrics are computed from, as the ledger returns it."""

    contacts: Mapping[ReferrerType, int] = field(default_factory=dict)
    leads: Sequence[LeadRecord] = ()
    conversions: Sequence[ConversionRecord] = ()
    referrals: Sequence[ReferralRecord] = ()
    paid_rewards: Sequence[PaidRewardRecord] = ()
    costs: Sequence[CostRecord] = ()


# -- results ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LeadQuality:
    """How one channel's leads did in a period.

    ``leads``/``converted``/``conversion_pct`` are over the leads that signed up in the
    period; ``won``, the cycle and the deal sizes over the leads won in it.
    """

    leads: int = 0
    converted: int = 0
    conversion_pct: Decimal | None = None
    won: int = 0
    cycle_median_days: Decimal | None = None
    deal_median: Money | None = None
    deal_mean: Money | None = None


@dataclass(frozen=True, slots=True)
class RewardSpeed:
    """Time to reward over the rewards paid in a period."""

    paid: int = 0
    median_days: Decimal | None = None
    p90_days: Decimal | None = None
    slow: bool = False


@dataclass(frozen=True, slots=True)
class SourceMetrics:
    """Every metric of one source (or ``all``) in one period."""

    source: str
    contacts: int
    referrers: int
    referral_rate_pct: Decimal | None
    referrals: int
    active_referrers: int
    top_share_pct: Decimal | None
    leads: LeadQuality
    time_to_reward: RewardSpeed
    customers: int
    revenue: Money
    cost: Money
    roi_pct: Decimal | None
    payback_months: Decimal | None
    cost_per_customer: Money | None


@dataclass(frozen=True, slots=True)
class PeriodMetrics:
    """One period: a row per source (customer, partner, employee, all) and other channels."""

    period: Period
    to_date: bool
    sources: tuple[SourceMetrics, ...]
    other: LeadQuality

    def source(self, name: str) -> SourceMetrics:
        return next(s for s in self.sources if s.source == name)


@dataclass(frozen=True, slots=True)
class ProgramMetrics:
    """The whole report: each period, the window over all of them, and raw reward times."""

    kind: PeriodKind
    as_of: datetime
    currency: str
    fixed_cost: Money
    periods: tuple[PeriodMetrics, ...]
    window: PeriodMetrics
    reward_days: tuple[Decimal, ...] = ()
    target_days: int = TIME_TO_REWARD_TARGET_DAYS

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values: money in minor units, decimals as strings."""
        return {
            "period": self.kind.value,
            "as_of": self.as_of.isoformat(),
            "currency": self.currency,
            "fixed_cost_minor": self.fixed_cost.amount_minor,
            "time_to_reward_target_days": self.target_days,
            "periods": [_period_dict(p) for p in self.periods],
            "window": _period_dict(self.window),
        }


def _plain(value: Any) -> Any:
    if isinstance(value, Money):
        return value.amount_minor
    if isinstance(value, Decimal):
        return str(value)
    return value


def _fields(obj: Any) -> dict[str, Any]:
    return {f.name: _plain(getattr(obj, f.name)) for f in fields(obj)}


def _period_dict(p: PeriodMetrics) -> dict[str, Any]:
    sources: dict[str, Any] = {}
    for s in p.sources:
        row = _fields(s)
        row["leads"] = _fields(s.leads)
        row["time_to_reward"] = _fields(s.time_to_reward)
        del row["source"]
        sources[s.source] = row
    return {
        "label": p.period.label,
        "start": p.period.start.isoformat(),
        "end": p.period.end.isoformat(),
        "to_date": p.to_date,
        "sources": sources,
        "other_channels": _fields(p.other),
    }


# -- exact arithmetic ---------------------------------------------------------------------


def percentile(values: Iterable[int], p: int) -> int | None:
    """The nearest-rank ``p``-th percentile (0 < p <= 100); ``None`` for no values.

    Exact and deterministic: the ``ceil(p * n / 100)``-th smallest value.
    """
    if not 0 < p <= 100:
        raise ValueError("a percentile is above 0 and at most 100")
    ordered = sorted(values)
    if not ordered:
        return None
    rank = -(-p * len(ordered) // 100)
    return ordered[rank - 1]


def median(values: Iterable[int]) -> int | None:
    """The 50th nearest-rank percentile: for an even count, the lower middle value."""
    return percentile(values, 50)


def _decimal(value: Fraction, places: int) -> Decimal:
    """``value`` rounded half-even to ``places`` decimals, exactly (no float, no
    intermediate rounding: ``round`` of a Fraction is exact)."""
    scaled = Decimal(round(value * 10**places)).scaleb(-places)
    return scaled.quantize(Decimal(1).scaleb(-places))  # exact: only sets the exponent


def ratio(numerator: int, denominator: int, scale: int = 1, places: int = 2) -> Decimal | None:
    """``numerator / denominator x scale`` rounded half-even; ``None`` when dividing by 0."""
    if denominator == 0:
        return None
    return _decimal(Fraction(numerator * scale, denominator), places)


def days(seconds: int | None) -> Decimal | None:
    """Whole seconds as days, to two decimals."""
    return None if seconds is None else _decimal(Fraction(seconds, DAY_SECONDS), 2)


def _seconds(delta: timedelta) -> int:
    return delta.days * DAY_SECONDS + delta.seconds


def _in_currency(amounts: Iterable[Money | None], currency: str) -> list[int]:
    return [a.amount_minor for a in amounts if a is not None and a.currency == currency]


def mean_money(amounts: Sequence[int], currency: str) -> Money | None:
    """The mean of minor-unit amounts, rounded half-even to the minor unit."""
    if not amounts:
        return None
    return Money(round(Fraction(sum(amounts), len(amounts))), currency)


# -- the metrics, one function each -------------------------------------------------------


def _matches(source: ReferrerType | None, wanted: str) -> bool:
    return wanted == ALL or (source is not None and source.value == wanted)


def referrers_in(
    conversions: Iterable[ConversionRecord], start: datetime, stop: datetime, source: str = ALL
) -> set[str]:
    """Distinct referrers credited with a conversion (any milestone) in ``[start, stop)``."""
    return {
        c.referrer_id
        for c in conversions
        if start <= c.occurred_at < stop and _matches(c.source, source)
    }


def contacts_of(contacts: Mapping[ReferrerType, int], source: str = ALL) -> int:
    """Contacts of the source's referrer type (every contact for ``all``)."""
    if source == ALL:
        return sum(contacts.values())
    return contacts.get(ReferrerType(source), 0)


def referral_rate(
    conversions: Iterable[ConversionRecord],
    contacts: Mapping[ReferrerType, int],
    start: datetime,
    stop: datetime,
    source: str = ALL,
) -> Decimal | None:
    """Referrers with >= 1 conversion in ``[start, stop)`` / contacts of the type x 100.

    ``None`` when the ledger holds no contact of that type.
    """
    referrers = referrers_in(conversions, start, stop, source)
    return ratio(len(referrers), contacts_of(contacts, source), 100, 1)


def referral_counts(
    referrals: Iterable[ReferralRecord], start: datetime, stop: datetime, source: str = ALL
) -> dict[str, int]:
    """Referrals first seen in ``[start, stop)``, per referrer."""
    counts: dict[str, int] = {}
    for r in referrals:
        if start <= r.first_at < stop and _matches(r.source, source):
            counts[r.referrer_id] = counts.get(r.referrer_id, 0) + 1
    return counts


def top_share(counts: Mapping[str, int], share: Fraction = TOP_SHARE) -> Decimal | None:
    """Percent of referrals made by the top ``share`` of referrers; ``None`` with none.

    The top group is ``ceil(share x referrers)`` referrers (at least one), taken by
    referrals made. Referrers tied at the boundary have equal counts, so the share is
    the same whichever of them is taken.
    """
    total = sum(counts.values())
    if total == 0:
        return None
    ranked = sorted(counts.values(), reverse=True)
    top = max(1, math.ceil(share * len(ranked)))
    return ratio(sum(ranked[:top]), total, 100, 1)


def active_referrers(
    conversions: Iterable[ConversionRecord],
    at: datetime,
    source: str = ALL,
    window_days: int = ACTIVE_DAYS,
) -> int:
    """Distinct referrers with a conversion in the ``window_days`` before ``at``."""
    return len(referrers_in(conversions, at - timedelta(days=window_days), at, source))


def lead_quality(
    leads: Iterable[LeadRecord],
    start: datetime,
    stop: datetime,
    as_of: datetime,
    currency: str,
    keep: Callable[[LeadRecord], bool],
) -> LeadQuality:
    """Conversion of the leads signed up in ``[start, stop)`` (won before ``as_of``),
    and the cycle and deal size of the leads won in ``[start, stop)``; over the leads
    ``keep`` selects (a channel, a source)."""
    chosen = [lead for lead in leads if keep(lead)]
    cohort = [lead for lead in chosen if start <= lead.signed_up_at < stop]
    converted = [lead for lead in cohort if lead.won_at is not None and lead.won_at < as_of]
    won = [lead for lead in chosen if lead.won_at is not None and start <= lead.won_at < stop]
    cycles = [_seconds(lead.won_at - lead.signed_up_at) for lead in won if lead.won_at]
    amounts = _in_currency((lead.won_amount for lead in won), currency)
    deal_median = median(amounts)
    return LeadQuality(
        leads=len(cohort),
        converted=len(converted),
        conversion_pct=ratio(len(converted), len(cohort), 100, 1),
        won=len(won),
        cycle_median_days=days(median(cycles)),
        deal_median=None if deal_median is None else Money(deal_median, currency),
        deal_mean=mean_money(amounts, currency),
    )


def referred_from(source: str) -> Callable[[LeadRecord], bool]:
    """Selects referred leads of ``source`` (every referred lead for ``all``)."""
    return lambda lead: lead.referred and _matches(lead.source, source)


def other_channels(lead: LeadRecord) -> bool:
    """Selects leads that came without a referral code."""
    return not lead.referred


def reward_seconds(
    paid: Iterable[PaidRewardRecord],
    start: datetime,
    stop: datetime,
    source: str = ALL,
    milestones: Sequence[Milestone] = (Milestone.CUSTOMER,),
) -> list[int]:
    """Seconds from conversion to first payout of the rewards paid in ``[start, stop)``."""
    return [
        _seconds(r.paid_at - r.converted_at)
        for r in paid
        if start <= r.paid_at < stop and r.milestone in milestones and _matches(r.source, source)
    ]


def reward_speed(
    seconds: Sequence[int], target_days: int = TIME_TO_REWARD_TARGET_DAYS
) -> RewardSpeed:
    """Median and p90 time to reward; ``slow`` when p90 reaches ``target_days``."""
    p90 = percentile(seconds, 90)
    return RewardSpeed(
        paid=len(seconds),
        median_days=days(median(seconds)),
        p90_days=days(p90),
        slow=p90 is not None and p90 >= target_days * DAY_SECONDS,
    )


def reward_cost(
    costs: Iterable[CostRecord], start: datetime, stop: datetime, currency: str, source: str = ALL
) -> Money:
    """Rewards paid minus recovered, booked in the periods starting in ``[start, stop)``."""
    total = 0
    for c in costs:
        in_span = start <= c.period_start < stop and _matches(c.source, source)
        if in_span and c.paid.currency == currency and c.reversed.currency == currency:
            total += c.paid.amount_minor - c.reversed.amount_minor
    return Money(total, currency)


def referred_revenue(
    conversions: Iterable[ConversionRecord],
    start: datetime,
    stop: datetime,
    currency: str,
    source: str = ALL,
) -> tuple[Money, int]:
    """First-year value of the ``customer`` conversions in ``[start, stop)``, and the
    number of distinct referred customers they are."""
    won = [
        c
        for c in conversions
        if c.milestone is Milestone.CUSTOMER
        and start <= c.occurred_at < stop
        and _matches(c.source, source)
    ]
    total = sum(_in_currency((c.amount for c in won), currency))
    return Money(total, currency), len({c.referee for c in won})


def roi(revenue: Money, cost: Money) -> Fraction | None:
    """(revenue - cost) / cost; ``None`` (undefined) when the cost is zero."""
    if cost.is_zero:
        return None
    return Fraction((revenue - cost).amount_minor, cost.amount_minor)


def payback_months(revenue: Money, cost: Money) -> Fraction | None:
    """cost / (revenue / 12): months of the referred customers' revenue that repay the
    cost; ``None`` (undefined) without revenue."""
    if revenue.is_zero:
        return None
    return Fraction(12 * cost.amount_minor, revenue.amount_minor)


def cost_per_customer(cost: Money, customers: int) -> Money | None:
    """cost / referred customers, rounded half-even; ``None`` with no customer."""
    if customers == 0:
        return None
    return Money(round(Fraction(cost.amount_minor, customers)), cost.currency)


# -- putting it together ------------------------------------------------------------------


def _source_metrics(
    inputs: MetricInputs,
    period: Period,
    source: str,
    as_of: datetime,
    currency: str,
    fixed_cost: Money,
    target_days: int,
) -> SourceMetrics:
    start, stop = period.start, period.stop(as_of)
    revenue, customers = referred_revenue(inputs.conversions, start, stop, currency, source)
    cost = reward_cost(inputs.costs, start, stop, currency, source)
    if source == ALL:
        cost = cost + fixed_cost
    gain = roi(revenue, cost)
    months = payback_months(revenue, cost)
    return SourceMetrics(
        source=source,
        contacts=contacts_of(inputs.contacts, source),
        referrers=len(referrers_in(inputs.conversions, start, stop, source)),
        referral_rate_pct=referral_rate(inputs.conversions, inputs.contacts, start, stop, source),
        referrals=sum(referral_counts(inputs.referrals, start, stop, source).values()),
        active_referrers=active_referrers(inputs.conversions, stop, source),
        top_share_pct=top_share(referral_counts(inputs.referrals, start, stop, source)),
        leads=lead_quality(inputs.leads, start, stop, as_of, currency, referred_from(source)),
        time_to_reward=reward_speed(
            reward_seconds(inputs.paid_rewards, start, stop, source), target_days
        ),
        customers=customers,
        revenue=revenue,
        cost=cost,
        roi_pct=None if gain is None else _decimal(gain * 100, 1),
        payback_months=None if months is None else _decimal(months, 2),
        cost_per_customer=cost_per_customer(cost, customers),
    )


def _period_metrics(
    inputs: MetricInputs,
    period: Period,
    as_of: datetime,
    currency: str,
    fixed_cost: Money,
    target_days: int,
) -> PeriodMetrics:
    return PeriodMetrics(
        period=period,
        to_date=period.to_date(as_of),
        sources=tuple(
            _source_metrics(inputs, period, s, as_of, currency, fixed_cost, target_days)
            for s in SOURCES
        ),
        other=lead_quality(
            inputs.leads, period.start, period.stop(as_of), as_of, currency, other_channels
        ),
    )


def compute_metrics(
    inputs: MetricInputs,
    periods: Sequence[Period],
    as_of: datetime,
    kind: PeriodKind,
    currency: str,
    fixed_cost: Money | None = None,
    target_days: int = TIME_TO_REWARD_TARGET_DAYS,
) -> ProgramMetrics:
    """Every metric for each of ``periods`` (oldest first) and for the window over them.

    Args:
        inputs: the ledger's records (see :class:`MetricInputs`).
        periods: consecutive periods, e.g. from :func:`periods_ending`.
        as_of: nothing at or after it counts.
        kind: how the periods were cut (reported back).
        currency: the program currency; amounts in others are left out of sums.
        fixed_cost: a fixed program cost per period (tooling, people), added to the
            ``all`` row's cost once per period; zero when not given.
        target_days: the time-to-reward target; p90 at or above it is ``slow``.

    Raises:
        ValueError: no periods, or a fixed cost in another currency.
    """
    if not periods:
        raise ValueError("a report needs at least one period")
    fixed = fixed_cost if fixed_cost is not None else Money.zero(currency)
    if fixed.currency != currency:
        raise ValueError(f"the fixed cost is in {fixed.currency}, the program in {currency}")
    window = window_of(periods)
    rows = tuple(_period_metrics(inputs, p, as_of, currency, fixed, target_days) for p in periods)
    whole_fixed = Money(fixed.amount_minor * len(periods), currency)
    whole = _period_metrics(inputs, window, as_of, currency, whole_fixed, target_days)
    seconds = reward_seconds(inputs.paid_rewards, window.start, window.stop(as_of))
    return ProgramMetrics(
        kind=kind,
        as_of=as_of,
        currency=currency,
        fixed_cost=fixed,
        periods=rows,
        window=whole,
        reward_days=tuple(d for d in (days(s) for s in sorted(seconds)) if d is not None),
        target_days=target_days,
    )
