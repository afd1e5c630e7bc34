"""Reward accrual as a use case, on the in-memory ledger: one unit of work that locks,
reads, applies the reward rules and records, with no callback into the ledger."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from domain.fraud import PAYOUT_DESTINATION_CHANGED
from domain.models import Contact, Conversion, Rejected, RewardStatus
from domain.money import Money
from domain.program import Program
from domain.rewards import Invoice
from integrations.ledger.memory import InMemoryLedger
from tasks.use_cases.rewards import accrue_conversions, accrue_invoices, route_rewards
from tests.conftest import NOW, contact
from tests.integration.test_ledger_flow import conversion_for, reward_for
from tests.integration.test_reward_rules_ledger import FLAT, REFERRER_CAP, program_of

MONTHLY = {
    "id": "partner-monthly",
    "referrer_type": "customer",
    "milestone": "customer",
    "kind": "recurring",
    "percent": "10",
    "months": 12,
}


def _stored(memory: InMemoryLedger, count: int, referrer: str = "C1") -> list[Conversion]:
    found = [
        conversion_for(f"CODE-{referrer}", referrer, n, NOW + timedelta(minutes=n))
        for n in range(1, count + 1)
    ]
    memory.money.conversions.update((c.conversion_id, c) for c in found)
    return found


def _credits(conversions: list[Conversion]) -> dict[str, list[tuple[Contact, Decimal]]]:
    return {
        c.conversion_id: [(contact(c.referrer_id, f"A-{c.referrer_id}"), Decimal(1))]
        for c in conversions
    }


def test_accrual_locks_the_credited_referrers_before_it_reads_and_records_in_one_unit() -> None:
    memory = InMemoryLedger()
    conversions = _stored(memory, 2)

    accrued = accrue_conversions(
        memory, conversions, _credits(conversions), {}, {}, program_of(FLAT), [], NOW
    )

    assert accrued.recorded == 2
    assert [name for name, _ in memory.reward_rules.calls] == [
        "lock",
        "unrewarded",
        "recorded",
        "history",
        "record_accrued",
        "mark_rewarded",
    ]
    assert memory.reward_rules.calls[0][1] == (["C1"], False)
    assert (memory.committed, memory.rolled_back) == (1, 0)
    assert memory.money.rewarded == {c.conversion_id for c in conversions}


def test_a_program_wide_cap_locks_the_programs_budget_as_well() -> None:
    memory = InMemoryLedger()
    conversions = _stored(memory, 1)
    budget = {"per": "program", "period": "quarter", "amount": "2000.00"}

    accrue_conversions(
        memory,
        conversions,
        _credits(conversions),
        {},
        {},
        program_of(FLAT, reward_caps=[budget]),
        [],
        NOW,
    )

    assert memory.reward_rules.calls[0] == ("lock", (["C1"], True))


def test_a_cap_counts_what_an_earlier_accrual_recorded() -> None:
    memory = InMemoryLedger()
    program = program_of(FLAT, reward_caps=[REFERRER_CAP])
    earlier, later = _stored(memory, 2), _stored(memory, 3)[2:]

    accrue_conversions(memory, earlier, _credits(earlier), {}, {}, program, [], NOW)
    accrued = accrue_conversions(memory, later, _credits(later), {}, {}, program, [], NOW)

    assert (accrued.recorded, accrued.capped) == (1, 1)
    assert memory.reward_rules.history("EUR").earned("C1", NOW, NOW + timedelta(days=1)) == (
        Money(200_000, "EUR")
    )


def test_refusals_are_quarantined_with_the_rewards_and_counted_once_new() -> None:
    memory = InMemoryLedger()
    conversions = _stored(memory, 1)
    refused = [Rejected("ledger", "test:deal-x", "referrer_id", "unknown referrer")]

    first = accrue_conversions(memory, conversions, {}, {}, {}, program_of(FLAT), refused, NOW)
    again = accrue_conversions(memory, conversions, {}, {}, {}, program_of(FLAT), refused, NOW)

    assert (first.recorded, first.quarantined, first.refused) == (0, 1, 1)
    assert (again.quarantined, again.refused) == (0, 1)


def test_invoice_rewards_leave_their_long_rewarded_conversions_unmarked() -> None:
    memory = InMemoryLedger()
    conversions = _stored(memory, 1)
    invoice = Invoice(
        ref="in_1",
        record="stripe:evt_1",
        amount=Money(10_000, "EUR"),
        paid_at=NOW + timedelta(days=31),
        of_conversion=False,
    )

    accrued = accrue_invoices(
        memory,
        conversions,
        _credits(conversions),
        {},
        {conversions[0].conversion_id: [invoice]},
        program_of(MONTHLY),
        [],
        NOW,
    )

    assert accrued.recorded == 1
    assert "mark_rewarded" not in [name for name, _ in memory.reward_rules.calls]
    assert memory.money.rewarded == set()


def test_an_accrual_that_fails_keeps_nothing() -> None:
    memory = InMemoryLedger()
    conversions = _stored(memory, 1)

    def fail(*_: object) -> None:
        raise RuntimeError("the database went away")

    memory.reward_rules.mark_rewarded = fail  # type: ignore[method-assign,assignment]
    with pytest.raises(RuntimeError):
        accrue_conversions(
            memory, conversions, _credits(conversions), {}, {}, program_of(FLAT), [], NOW
        )

    assert memory.money.rewards == {}
    assert memory.rolled_back == 1


# -- routing ------------------------------------------------------------------------------


def _holding(memory: InMemoryLedger, amounts: list[int], referrer: str = "C1") -> list[str]:
    conversions = _stored(memory, len(amounts), referrer)
    rewards = [reward_for(c, amount, NOW) for c, amount in zip(conversions, amounts, strict=True)]
    memory.rewards.record([c.conversion_id for c in conversions], rewards, [], NOW)
    return [r.reward_id for r in rewards]


def test_routing_pays_under_the_threshold_and_asks_a_person_at_or_above_it(
    program: Program,
) -> None:
    memory = InMemoryLedger()
    small, large = _holding(memory, [49_999, 50_000])

    plan = route_rewards(memory, program, NOW, NOW, batch_size=10)

    assert (plan.auto_pay, plan.approval) == ([small], [large])
    views = memory.rewards.of([small, large])
    assert views[small].status is RewardStatus.PAYABLE
    assert views[large].status is RewardStatus.AWAITING_APPROVAL


def test_routing_stores_a_changed_destination_flag_with_the_move_one_unit_per_page(
    program: Program,
) -> None:
    memory = InMemoryLedger()
    ids = _holding(memory, [1_000, 2_000, 3_000])
    memory.money.changed_destinations.add("C1")

    plan = route_rewards(memory, program, NOW, NOW, batch_size=2)

    assert sorted(plan.approval) == sorted(ids)
    assert all(
        v.reward.flags == (PAYOUT_DESTINATION_CHANGED,) for v in memory.rewards.of(ids).values()
    )
    assert memory.committed == 3  # two pages, and the empty one that ends the pass
