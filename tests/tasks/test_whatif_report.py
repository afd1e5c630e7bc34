"""The what-if report names each rules file's attribution model and lists the
referrers whose rewards move, the largest move first, without growing unbounded."""

from __future__ import annotations

from domain.models import ReferrerType
from domain.money import Money
from domain.program import Program
from domain.whatif import Outcome, WhatIf
from tasks.whatif import attribution_label, what_if_markdown


def _outcome(by_referrer: dict[str, int]) -> Outcome:
    zero = Money.zero("EUR")
    total = Money(sum(by_referrer.values()), "EUR")
    return Outcome(
        rewards=len(by_referrer),
        cost=total,
        by_type={ReferrerType.PARTNER.value: (len(by_referrer), total)},
        auto_pay=0,
        approval=0,
        refused=0,
        revenue=zero,
        by_referrer={r: (1, Money(v, "EUR")) for r, v in by_referrer.items()},
    )


def test_the_report_lists_the_largest_moves_first_and_counts_the_rest() -> None:
    result = WhatIf(
        current=_outcome({"A": 100_000, "B": 50_000, "C": 10_000, "D": 500}),
        proposed=_outcome({"A": 40_000, "B": 60_000, "C": 10_000, "D": 50_500}),
        changed_rules=("attribution",),
    )

    text = what_if_markdown(result, ("last_touch", "linear"), limit=2)

    assert "Attribution: last_touch now, linear proposed." in text
    lines = text.splitlines()
    first = lines.index("| A | 1, 1,000.00 EUR | 1, 400.00 EUR | -600.00 EUR |")
    assert lines[first + 1] == "| D | 1, 5.00 EUR | 1, 505.00 EUR | 500.00 EUR |"
    assert lines[first + 2] == "| ... and 1 more referrer | | | |"
    assert "| C |" not in text, "an unchanged referrer is not listed"


def test_a_time_decay_model_is_named_with_its_half_life() -> None:
    decaying = Program.model_validate(
        {"attribution": {"model": "time_decay", "half_life_days": "10.5"}}
    )

    assert attribution_label(decaying) == "time_decay (half-life 10.5 days)"
    assert attribution_label(Program()) == "last_touch"
