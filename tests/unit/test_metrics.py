"""Program metrics as pure functions over hand-built records."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.metrics import (
    ALL,
    ConversionRecord,
    CostRecord,
    LeadRecord,
    MetricInputs,
    PaidRewardRecord,
    PeriodKind,
    ReferralRecord,
    active_referrers,
    compute_metrics,
    cost_per_customer,
    lead_quality,
    median,
    other_channels,
    payback_months,
    percentile,
    period_containing,
    periods_ending,
    referral_counts,
    referral_rate,
    referred_from,
    referred_revenue,
    reward_cost,
    reward_seconds,
    reward_speed,
    roi,
    top_share,
)
from domain.models import Milestone, ReferrerType
from domain.money import Money

CUSTOMER, PARTNER, EMPLOYEE = ReferrerType.CUSTOMER, ReferrerType.PARTNER, ReferrerType.EMPLOYEE
OCT, NOV = datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC)
AS_OF = datetime(2026, 11, 15, tzinfo=UTC)
DAY = 86_400


def at(month: int, day: int, hour: int = 12) -> datetime:
    return datetime(2026, month, day, hour, tzinfo=UTC)


def eur(major: int) -> Money:
    return Money(major * 100, "EUR")


def conversion(
    referrer: str,
    when: datetime,
    milestone: Milestone = Milestone.LEAD,
    source: ReferrerType = CUSTOMER,
    referee: str | None = None,
    amount: Money | None = None,
) -> ConversionRecord:
    return ConversionRecord(
        referrer, source, referee or f"a:{referrer}-friend", milestone, when, amount
    )


# -- periods ------------------------------------------------------------------------------


def test_a_month_runs_from_its_first_day_to_the_next_in_utc() -> None:
    period = period_containing(datetime(2026, 12, 31, 23, 59, tzinfo=UTC), PeriodKind.MONTH)

    assert period.label == "2026-12"
    assert (period.start, period.end) == (
        datetime(2026, 12, 1, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC),
    )


def test_a_time_in_another_zone_falls_in_its_utc_month() -> None:
    # Half past midnight on 1 November in Paris is still 31 October in UTC.
    paris = datetime(2026, 11, 1, 0, 30, tzinfo=ZoneInfo("Europe/Paris"))

    assert period_containing(paris, PeriodKind.MONTH).label == "2026-10"


def test_a_week_is_an_iso_week_starting_on_monday() -> None:
    # 1 January 2026 is a Thursday: its ISO week 1 starts on Monday 29 December 2025.
    week = period_containing(datetime(2026, 1, 1, 8, tzinfo=UTC), PeriodKind.WEEK)

    assert week.label == "2026-W01"
    assert week.start == datetime(2025, 12, 29, tzinfo=UTC)
    assert week.end - week.start == timedelta(days=7)


def test_a_quarter_is_three_calendar_months() -> None:
    quarter = period_containing(at(11, 15), PeriodKind.QUARTER)

    assert quarter.label == "2026-Q4"
    assert (quarter.start, quarter.end) == (
        datetime(2026, 10, 1, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC),
    )


def test_the_report_ends_with_the_period_before_as_of_oldest_first() -> None:
    running = periods_ending(AS_OF, PeriodKind.MONTH, 3)
    on_the_first = periods_ending(NOV, PeriodKind.MONTH, 2)

    assert [p.label for p in running] == ["2026-09", "2026-10", "2026-11"]
    # As of midnight on the 1st, the month just closed is the last one.
    assert [p.label for p in on_the_first] == ["2026-09", "2026-10"]
    assert all(a.end == b.start for a, b in itertools.pairwise(running))


def test_a_report_needs_at_least_one_period() -> None:
    with pytest.raises(ValueError, match="at least one period"):
        periods_ending(AS_OF, PeriodKind.MONTH, 0)


# -- percentiles --------------------------------------------------------------------------


def test_percentiles_are_nearest_rank_values_of_the_data() -> None:
    values = [50, 15, 40, 20, 35]

    assert percentile(values, 30) == 20
    assert percentile(values, 40) == 20
    assert percentile(values, 50) == 35
    assert percentile(values, 100) == 50
    assert percentile(range(1, 11), 90) == 9


def test_the_median_of_an_even_count_is_the_lower_middle_value() -> None:
    assert median([4, 1, 3, 2]) == 2
    assert median([7]) == 7


def test_no_values_have_no_percentile() -> None:
    assert percentile([], 90) is None
    assert median([]) is None


@pytest.mark.parametrize("p", [0, -5, 101])
def test_a_percentile_outside_zero_to_a_hundred_is_refused(p: int) -> None:
    with pytest.raises(ValueError, match="percentile"):
        percentile([1, 2], p)


@given(values=st.lists(st.integers(-(10**9), 10**9), min_size=1), p=st.integers(1, 100))
def test_a_percentile_is_an_observed_value_that_order_does_not_change(
    values: list[int], p: int
) -> None:
    found = percentile(values, p)

    assert found is not None
    assert found in values
    assert percentile(list(reversed(values)), p) == found
    below = sum(1 for v in values if v <= found)
    assert Fraction(below, len(values)) >= Fraction(p, 100)


# -- referral rate, referrals, active referrers, top 10% ----------------------------------


def test_the_referral_rate_is_referrers_with_a_conversion_over_contacts_of_their_type() -> None:
    conversions = [
        conversion("C1", at(10, 3)),
        conversion("C1", at(10, 20), Milestone.CUSTOMER),
        conversion("C2", at(10, 9), Milestone.QUALIFIED),
        conversion("C3", at(9, 30)),  # the month before
        conversion("P1", at(10, 4), source=PARTNER),
    ]
    contacts = {CUSTOMER: 8, PARTNER: 4}

    assert referral_rate(conversions, contacts, OCT, NOV, CUSTOMER.value) == Decimal("25.0")
    assert referral_rate(conversions, contacts, OCT, NOV, PARTNER.value) == Decimal("25.0")
    assert referral_rate(conversions, contacts, OCT, NOV, ALL) == Decimal("25.0")


def test_there_is_no_referral_rate_without_contacts_of_that_type() -> None:
    assert referral_rate([], {CUSTOMER: 3}, OCT, NOV, EMPLOYEE.value) is None
    assert referral_rate([], {CUSTOMER: 3}, OCT, NOV, CUSTOMER.value) == Decimal("0.0")


def test_active_referrers_are_those_with_a_conversion_in_the_90_days_before() -> None:
    end = at(11, 1)
    conversions = [
        conversion("C1", end - timedelta(days=90)),  # first instant of the window
        conversion("C2", end - timedelta(days=90, seconds=1)),  # just before it
        conversion("C3", end - timedelta(seconds=1)),
        conversion("C4", end),  # at the end: not yet
        conversion("P1", end - timedelta(days=3), source=PARTNER),
    ]

    assert active_referrers(conversions, end) == 3
    assert active_referrers(conversions, end, CUSTOMER.value) == 2


def test_referrals_are_counted_per_referrer_in_the_period() -> None:
    referrals = [
        ReferralRecord("C1", CUSTOMER, "a:R1", at(10, 2)),
        ReferralRecord("C1", CUSTOMER, "a:R2", at(10, 5)),
        ReferralRecord("P1", PARTNER, "a:R3", at(10, 7)),
        ReferralRecord("C2", CUSTOMER, "a:R4", at(11, 2)),
    ]

    assert referral_counts(referrals, OCT, NOV) == {"C1": 2, "P1": 1}
    assert referral_counts(referrals, OCT, NOV, PARTNER.value) == {"P1": 1}


def test_the_top_tenth_of_referrers_is_rounded_up_to_at_least_one() -> None:
    assert top_share({"C1": 3}) == Decimal("100.0")
    # 12 referrers: the top 10% is 2 of them (5 + 4 of 19 referrals).
    counts = {"C1": 5, "C2": 4, **{f"X{i}": 1 for i in range(10)}}
    assert top_share(counts) == Decimal("47.4")


def test_referrers_tied_at_the_top_boundary_give_the_same_share_whichever_is_taken() -> None:
    # 20 referrers: the top 10% is 2; three are tied for second place.
    counts = {"C1": 5, "C2": 3, "C3": 3, "C4": 3, **{f"X{i}": 1 for i in range(16)}}
    renamed = {"C1": 5, "Z2": 3, "A3": 3, "M4": 3, **{f"X{i}": 1 for i in range(16)}}

    assert top_share(counts) == Decimal("26.7")  # (5 + 3) / 30
    assert top_share(renamed) == top_share(counts)


def test_no_referrals_have_no_top_share() -> None:
    assert top_share({}) is None


# -- lead quality -------------------------------------------------------------------------


LEADS = [
    # referred, October cohort: R1 won in October after 10 days, R2 won after as_of.
    LeadRecord("a:R1", at(10, 3), True, CUSTOMER, at(10, 13), eur(12_000)),
    LeadRecord("a:R2", at(10, 5), True, PARTNER, AS_OF + timedelta(days=1), eur(40_000)),
    LeadRecord("a:R3", at(10, 8), True, None),  # a code nobody could be credited with
    # referred in September, won in October after 30 days.
    LeadRecord("a:R4", at(9, 10), True, CUSTOMER, at(10, 10), eur(9_001)),
    # other channels
    LeadRecord("a:O1", at(9, 1), False, None, at(10, 20), eur(8_000)),
    LeadRecord("a:O2", at(10, 1), False),
    LeadRecord("a:O3", at(10, 2), False, None, at(10, 30), Money(500_000, "USD")),
]


def test_lead_conversion_is_over_the_leads_signed_up_in_the_period() -> None:
    referred = lead_quality(LEADS, OCT, NOV, AS_OF, "EUR", referred_from(ALL))
    other = lead_quality(LEADS, OCT, NOV, AS_OF, "EUR", other_channels)

    # R1 converted; R2 only after as_of; R3 not at all.
    assert (referred.leads, referred.converted, referred.conversion_pct) == (3, 1, Decimal("33.3"))
    assert (other.leads, other.converted, other.conversion_pct) == (2, 1, Decimal("50.0"))


def test_cycle_and_deal_size_are_over_the_leads_won_in_the_period() -> None:
    referred = lead_quality(LEADS, OCT, NOV, AS_OF, "EUR", referred_from(ALL))

    assert referred.won == 2  # R1 and R4 (signed up in September)
    assert referred.cycle_median_days == Decimal("10.00")  # lower middle of 10 and 30
    assert referred.deal_median == eur(9_001)
    assert referred.deal_mean == Money(1_050_050, "EUR")  # (12,000 + 9,001) / 2


@pytest.mark.parametrize(("cents", "mean"), [((1, 2), 2), ((0, 1), 0), ((1, 1, 2), 1)])
def test_the_mean_deal_is_rounded_half_even_to_the_cent(cents: tuple[int, ...], mean: int) -> None:
    leads = [
        LeadRecord(f"a:{i}", at(10, 1), True, CUSTOMER, at(10, 2), Money(c, "EUR"))
        for i, c in enumerate(cents)
    ]

    quality = lead_quality(leads, OCT, NOV, AS_OF, "EUR", referred_from(ALL))

    assert quality.deal_mean == Money(mean, "EUR")


def test_a_deal_in_another_currency_counts_as_won_but_not_in_deal_size() -> None:
    other = lead_quality(LEADS, OCT, NOV, AS_OF, "EUR", other_channels)

    assert other.won == 2  # O1 and O3
    assert other.deal_median == eur(8_000)
    assert other.deal_mean == eur(8_000)


def test_leads_of_one_source_leave_out_uncredited_referrals() -> None:
    customers = lead_quality(LEADS, OCT, NOV, AS_OF, "EUR", referred_from(CUSTOMER.value))

    assert (customers.leads, customers.converted, customers.won) == (1, 1, 2)


def test_a_period_without_leads_has_counts_of_zero_and_no_rates() -> None:
    empty = lead_quality(LEADS, at(6, 1), at(7, 1), AS_OF, "EUR", referred_from(ALL))

    assert (empty.leads, empty.converted, empty.won) == (0, 0, 0)
    assert empty.conversion_pct is None
    assert empty.cycle_median_days is None
    assert empty.deal_median is None
    assert empty.deal_mean is None


# -- time to reward -----------------------------------------------------------------------


def paid_after(
    days: float, reward: str, milestone: Milestone = Milestone.CUSTOMER
) -> PaidRewardRecord:
    paid = at(10, 20)
    return PaidRewardRecord(reward, CUSTOMER, milestone, paid - timedelta(days=days), paid)


def test_time_to_reward_has_a_median_and_a_p90_in_days() -> None:
    paid = [paid_after(d, f"r{d}") for d in (1, 2, 3, 4, 5, 6, 6.5, 2, 3, 1)]

    speed = reward_speed(reward_seconds(paid, OCT, NOV))

    assert speed.paid == 10
    assert speed.median_days == Decimal("3.00")
    assert speed.p90_days == Decimal("6.00")
    assert not speed.slow


def test_a_p90_of_seven_days_or_more_is_slow() -> None:
    seven = reward_speed([6 * DAY, 7 * DAY])
    under = reward_speed([6 * DAY, 7 * DAY - 1])

    assert seven.slow
    assert seven.p90_days == Decimal("7.00")
    assert not under.slow


def test_time_to_reward_counts_the_customer_milestone_by_default() -> None:
    paid = [paid_after(2, "deal"), paid_after(30, "lead", Milestone.QUALIFIED)]

    assert reward_seconds(paid, OCT, NOV) == [2 * DAY]
    assert sorted(reward_seconds(paid, OCT, NOV, milestones=tuple(Milestone))) == [
        2 * DAY,
        30 * DAY,
    ]


def test_no_reward_paid_is_neither_fast_nor_slow() -> None:
    speed = reward_speed([])

    assert (speed.paid, speed.median_days, speed.p90_days, speed.slow) == (0, None, None, False)


# -- money: cost, revenue, ROI, payback ---------------------------------------------------


def test_cost_is_rewards_paid_net_of_what_was_recovered() -> None:
    costs = [
        CostRecord(OCT, CUSTOMER, eur(600), eur(100)),
        CostRecord(OCT, PARTNER, eur(1_500), eur(0)),
        CostRecord(NOV, CUSTOMER, eur(200), eur(0)),
    ]

    assert reward_cost(costs, OCT, NOV, "EUR") == eur(2_000)
    assert reward_cost(costs, OCT, NOV, "EUR", CUSTOMER.value) == eur(500)
    assert reward_cost(costs, OCT, AS_OF, "EUR") == eur(2_200)
    assert reward_cost([], OCT, NOV, "EUR") == eur(0)


def test_revenue_is_the_first_year_value_of_referred_customers_won() -> None:
    conversions = [
        conversion("C1", at(10, 3), referee="a:R1"),
        conversion("C1", at(10, 13), Milestone.CUSTOMER, referee="a:R1", amount=eur(12_000)),
        conversion("P1", at(10, 20), Milestone.CUSTOMER, PARTNER, "a:R2", eur(30_000)),
        conversion("P1", at(10, 21), Milestone.CUSTOMER, PARTNER, "a:R3", Money(1, "USD")),
        conversion("C2", at(11, 2), Milestone.CUSTOMER, referee="a:R4", amount=eur(5_000)),
    ]

    assert referred_revenue(conversions, OCT, NOV, "EUR") == (eur(42_000), 3)
    assert referred_revenue(conversions, OCT, NOV, "EUR", CUSTOMER.value) == (eur(12_000), 1)


def test_roi_is_revenue_less_cost_over_cost() -> None:
    assert roi(eur(1_000), eur(250)) == 3
    assert roi(eur(100), eur(250)) == Fraction(-3, 5)


def test_roi_is_undefined_when_nothing_was_spent() -> None:
    assert roi(eur(1_000), eur(0)) is None


def test_payback_is_the_months_of_referred_revenue_that_repay_the_cost() -> None:
    # 12,000 a year is 1,000 a month: a cost of 3,000 pays back in 3 months.
    assert payback_months(eur(12_000), eur(3_000)) == 3
    assert payback_months(eur(0), eur(3_000)) is None


def test_cost_per_referred_customer_rounds_half_even_and_needs_a_customer() -> None:
    assert cost_per_customer(Money(5, "EUR"), 2) == Money(2, "EUR")
    assert cost_per_customer(Money(7, "EUR"), 2) == Money(4, "EUR")
    assert cost_per_customer(eur(100), 0) is None


# -- the whole report ---------------------------------------------------------------------


INPUTS = MetricInputs(
    contacts={CUSTOMER: 10, PARTNER: 2, EMPLOYEE: 1},
    leads=LEADS,
    conversions=[
        conversion("C1", at(10, 3), referee="a:R1"),
        conversion("C1", at(10, 13), Milestone.CUSTOMER, referee="a:R1", amount=eur(12_000)),
        conversion("P1", at(10, 5), source=PARTNER, referee="a:R2"),
    ],
    referrals=[
        ReferralRecord("C1", CUSTOMER, "a:R1", at(10, 3)),
        ReferralRecord("P1", PARTNER, "a:R2", at(10, 5)),
    ],
    paid_rewards=[
        PaidRewardRecord("w1", CUSTOMER, Milestone.CUSTOMER, at(10, 13), at(11, 2)),
    ],
    costs=[CostRecord(NOV, CUSTOMER, eur(200), eur(0))],
)


def test_the_report_has_a_row_per_source_and_period_and_a_window() -> None:
    periods = periods_ending(AS_OF, PeriodKind.MONTH, 2)

    report = compute_metrics(INPUTS, periods, AS_OF, PeriodKind.MONTH, "EUR", eur(1_000))

    october, november = report.periods
    assert [s.source for s in october.sources] == ["customer", "partner", "employee", "all"]
    assert not october.to_date
    assert november.to_date
    assert october.source("all").revenue == eur(12_000)
    assert october.source("all").cost == eur(1_000)  # the fixed cost alone
    assert october.source("customer").cost == eur(0)
    assert october.source("customer").roi_pct is None
    assert november.source("customer").cost == eur(200)
    assert november.source("all").cost == eur(1_200)
    assert november.source("all").time_to_reward.slow
    whole = report.window.source("all")
    assert whole.cost == eur(2_200)  # two periods of fixed cost
    assert whole.roi_pct == Decimal("445.5")  # (12,000 - 2,200) / 2,200
    assert whole.payback_months == Decimal("2.20")
    assert whole.referral_rate_pct == Decimal("15.4")  # 2 of 13 contacts
    assert report.reward_days == (Decimal("20.00"),)


def test_an_empty_ledger_gives_zeros_and_undefined_ratios_without_failing() -> None:
    periods = periods_ending(AS_OF, PeriodKind.WEEK, 4)

    report = compute_metrics(MetricInputs(), periods, AS_OF, PeriodKind.WEEK, "EUR")

    for row in [*report.periods, report.window]:
        for source in row.sources:
            assert (source.referrers, source.referrals, source.customers) == (0, 0, 0)
            assert source.cost == eur(0)
            assert source.revenue == eur(0)
            assert source.referral_rate_pct is None
            assert source.roi_pct is None
            assert source.payback_months is None
            assert source.top_share_pct is None
            assert not source.time_to_reward.slow
    assert report.reward_days == ()


def test_the_report_as_plain_values_is_json_with_money_in_minor_units() -> None:
    periods = periods_ending(AS_OF, PeriodKind.MONTH, 2)
    report = compute_metrics(INPUTS, periods, AS_OF, PeriodKind.MONTH, "EUR")

    plain = json.loads(json.dumps(report.as_dict()))

    october = plain["periods"][0]
    assert october["label"] == "2026-10"
    assert october["sources"]["all"]["revenue"] == 1_200_000
    assert october["sources"]["all"]["leads"]["conversion_pct"] == "33.3"
    assert plain["window"]["sources"]["all"]["roi_pct"] == "5900.0"
    assert october["other_channels"]["won"] == 2


def test_a_fixed_cost_in_another_currency_is_refused() -> None:
    periods = periods_ending(AS_OF, PeriodKind.MONTH, 1)

    with pytest.raises(ValueError, match="USD"):
        compute_metrics(INPUTS, periods, AS_OF, PeriodKind.MONTH, "EUR", Money(100, "USD"))
