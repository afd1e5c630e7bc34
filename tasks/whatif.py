"""Replaying the stored history under proposed program rules (pays nothing)."""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import task
from prefect.cache_policies import NO_CACHE

from domain.models import Contact, Conversion
from domain.money import Money
from domain.program import Program, RewardKind
from domain.rewards import Invoice
from domain.touchpoints import StoredTouchpoint
from domain.whatif import WhatIf, compare
from integrations.ledger.sql import SqlLedger


@task(name="replay-rules", cache_policy=NO_CACHE)
def replay_rules(ledger: SqlLedger, current: Program, proposed: Program) -> WhatIf:
    """Every stored conversion through the current and the proposed rules, with the
    first payments, (for recurring rules) the invoices and the touchpoints recorded
    for them: each rules file splits credit by its own attribution model.

    Args:
        ledger: where the conversion history and referrers are read (never written).
        current: the rules in force.
        proposed: the changed rules file, already validated.

    Returns:
        Both outcomes (rewards, cost per referrer type and per referrer, auto-pay vs
        approval, ROI).
    """
    conversions: list[Conversion] = []
    referrers: dict[str, Contact] = {}
    first_payments: dict[str, Money] = {}
    invoices: dict[str, list[Invoice]] = {}
    touchpoints: dict[str, list[StoredTouchpoint]] = {}
    recurring = {
        r.milestone
        for program in (current, proposed)
        for r in program.rewards
        if r.kind is RewardKind.RECURRING
    }
    for page in ledger.history.conversion_history():
        conversions += page
        touches = ledger.touchpoints.touchpoints_for(page)
        touchpoints.update(touches)
        # Everyone a touch names may be credited under one model or the other.
        named = {c.referrer_id for c in page} | {
            t.referrer_id for found in touches.values() for t in found
        }
        referrers.update(ledger.asks.contacts(named - referrers.keys()))
        first_payments.update(ledger.reward_rules.first_payments(c.conversion_id for c in page))
        paying = [c for c in page if c.milestone in recurring]
        if paying:
            # Every invoice in the inbox: a replay looks at the whole history.
            found, _ = ledger.reward_rules.referee_invoices(
                paying, datetime.max.replace(tzinfo=UTC)
            )
            invoices.update(found)
    return compare(conversions, referrers, current, proposed, first_payments, invoices, touchpoints)


#: Referrers listed in the artifact: the largest moves; the rest are counted.
REFERRER_ROWS = 25


def attribution_label(program: Program) -> str:
    """The program's attribution model, with its half-life when it has one."""
    model = program.attribution.model
    if model != "time_decay":
        return model
    return f"{model} (half-life {program.attribution.half_life_days.normalize():f} days)"


def what_if_markdown(
    result: WhatIf, attribution: tuple[str, str] | None = None, limit: int = REFERRER_ROWS
) -> str:
    """The comparison as a table revenue ops can read, then the referrers whose
    rewards move (the ``limit`` largest moves), with the attribution model of each
    rules file when ``attribution`` (current, proposed) is given."""

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
    changes = result.referrer_changes()
    lines += ["", "## Referrers whose rewards change", ""]
    if attribution is not None:
        lines += [f"Attribution: {attribution[0]} now, {attribution[1]} proposed.", ""]
    if not changes:
        lines.append("No referrer's rewards change.")
        return "\n".join(lines)
    lines += [
        "| referrer | current: rewards, cost | proposed: rewards, cost | difference |",
        "|---|---|---|---|",
    ]
    for change in changes[:limit]:
        (n, cost), (m, other) = change.current, change.proposed
        lines.append(f"| {change.referrer_id} | {n}, {cost} | {m}, {other} | {change.difference} |")
    if len(changes) > limit:
        more = len(changes) - limit
        lines.append(f"| ... and {more} more referrer{'s' if more > 1 else ''} | | | |")
    return "\n".join(lines)
