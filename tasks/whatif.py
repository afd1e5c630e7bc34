"""Replaying the stored history under proposed program rules (pays nothing)."""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import task
from prefect.cache_policies import NO_CACHE

from domain.models import Contact, Conversion
from domain.money import Money
from domain.program import Program, RewardKind
from domain.rewards import Invoice
from domain.whatif import WhatIf, compare
from integrations.ledger.sql import SqlLedger


@task(name="replay-rules", cache_policy=NO_CACHE)
def replay_rules(ledger: SqlLedger, current: Program, proposed: Program) -> WhatIf:
    """Every stored conversion through the current and the proposed rules, with the
    first payments and (for recurring rules) the invoices recorded for them.

    Args:
        ledger: where the conversion history and referrers are read (never written).
        current: the rules in force.
        proposed: the changed rules file, already validated.

    Returns:
        Both outcomes (rewards, cost per referrer type, auto-pay vs approval, ROI).
    """
    conversions: list[Conversion] = []
    referrers: dict[str, Contact] = {}
    first_payments: dict[str, Money] = {}
    invoices: dict[str, list[Invoice]] = {}
    recurring = {
        r.milestone
        for program in (current, proposed)
        for r in program.rewards
        if r.kind is RewardKind.RECURRING
    }
    for page in ledger.conversion_history():
        conversions += page
        referrers.update(ledger.contacts({c.referrer_id for c in page} - referrers.keys()))
        first_payments.update(ledger.first_payments(c.conversion_id for c in page))
        paying = [c for c in page if c.milestone in recurring]
        if paying:
            # Every invoice in the inbox: a replay looks at the whole history.
            found, _ = ledger.referee_invoices(paying, datetime.max.replace(tzinfo=UTC))
            invoices.update(found)
    return compare(conversions, referrers, current, proposed, first_payments, invoices)


def what_if_markdown(result: WhatIf) -> str:
    """The comparison as a table revenue ops can read."""

    def roi(value: object) -> str:
        return "n/a (nothing paid)" if value is None else f"{value:.2f}x"

    now, then = result.current, result.proposed
    lines = [
        "# What if the proposed rules applied to the whole history?",
        "",
        f"Rules changed: {', '.join(result.changed_rules) or 'none (other settings only)'}",
        "",
        "| | current rules | proposed rules | difference |",
        "|---|---|---|---|",
        f"| rewards | {now.rewards} | {then.rewards} | {then.rewards - now.rewards:+d} |",
        f"| cost | {now.cost} | {then.cost} | {result.cost_difference} |",
        f"| paid automatically | {now.auto_pay} | {then.auto_pay} | "
        f"{then.auto_pay - now.auto_pay:+d} |",
        f"| waiting for a person | {now.approval} | {then.approval} | "
        f"{then.approval - now.approval:+d} |",
        f"| referred revenue | {now.revenue} | {then.revenue} | |",
        f"| program ROI | {roi(now.roi)} | {roi(then.roi)} | |",
    ]
    for kind in sorted(now.by_type.keys() | then.by_type.keys()):
        zero = (0, now.cost - now.cost)
        a, b = now.by_type.get(kind, zero), then.by_type.get(kind, zero)
        lines.append(f"| {kind}: rewards, cost | {a[0]}, {a[1]} | {b[0]}, {b[1]} | {b[1] - a[1]} |")
    return "\n".join(lines)
