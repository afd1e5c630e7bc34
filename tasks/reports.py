"""Run artifacts for on-call and revenue ops: what a run did, what waits, what was refused."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from domain.models import WaitingApproval
from domain.money import Money
from domain.plain_words import age_words, flags_in_words
from domain.ports import ApprovalRuns
from integrations.ledger.sql import SqlLedger

#: Rows of the waiting-approvals table. The artifact travels in a Prefect event: at
#: 1,000,000 customers (bench/cycle.py) 21,000 waiting rewards made one of 6.6 MB, too
#: big for it. The oldest are the ones to act on; the CLI lists them all.
APPROVALS_SHOWN = 500
#: The one waiting-approvals artifact, rewritten by the cycle, after every recorded
#: decision and when an approval run expires: the UI shows its latest version.
APPROVALS_KEY = "approvals-waiting"


def _money(totals: Mapping[str, int]) -> str:
    return ", ".join(Money(v, c).format() for c, v in sorted(totals.items())) or "0"


def _paid_between(before: Mapping[str, int], after: Mapping[str, int]) -> dict[str, int]:
    return {c: after[c] - before.get(c, 0) for c in after if after[c] != before.get(c, 0)}


def plain_summary(
    stages: Mapping[str, Any], before: Mapping[str, Any], after: Mapping[str, Any]
) -> dict[str, Any]:
    """What a cycle run did, beside the ledger totals, in words and formatted money.

    Counts of this run come from its stages. The money paid now is the ledger's paid
    total after the run less the total before it, so it also holds what approval runs
    paid meanwhile: money that left while this run ran, all the same.

    Args:
        stages: what each stage of the run reported (``referral_cycle``'s stages).
        before: the ledger summary when the run started.
        after: the ledger summary when it ended.

    Returns:
        ``this run`` and ``totals``, ready to print as JSON.
    """
    asks, conv = stages["send asks"], stages["check conversions"]
    route = stages["route rewards"]
    stripe = (conv.get("stripe") or {}).get("conversions") or {}
    paid_now = _paid_between(before.get("paid") or {}, after.get("paid") or {})
    payouts = route["payouts"]["paid"]
    pending: dict[str, str] = {}
    for currency, by_status in sorted((after.get("reward_amounts") or {}).items()):
        for status in ("holding", "payable", "awaiting_approval", "approved"):
            if by_status.get(status):
                pending[status] = _join(pending.get(status), Money(by_status[status], currency))
    return {
        "this run": {
            "new asks": asks["decisions"]["queued"],
            "new conversions": conv["conversions"]["conversions"]
            + conv["registered"]["conversions"]
            + stripe.get("conversions", 0),
            "new rewards": conv["rewards"]["rewards"],
            "paid now": (
                f"{payouts} payout{'' if payouts == 1 else 's'}, {_money(paid_now)}"
                if payouts or paid_now
                else "nothing"
            ),
            "sent for approval": len(route["approvals"]),
        },
        "totals": {
            "events read": after.get("events", 0),
            "asks": dict(sorted((after.get("asks") or {}).items())),
            "conversions": dict(sorted((after.get("conversions") or {}).items())),
            "rewards": dict(sorted((after.get("rewards") or {}).items())),
            "paid": _money(after.get("paid") or {}) if after.get("paid") else "nothing",
            "pending": pending or "nothing",
            "detractors to follow up": after.get("follow_ups", 0),
            "quarantined": sum((after.get("quarantine") or {}).values()),
        },
    }


def _join(shown: str | None, amount: Money) -> str:
    return amount.format() if shown is None else f"{shown}, {amount.format()}"


def cycle_markdown(stages: Mapping[str, Any], summary: Mapping[str, Any]) -> str:
    """The run summary: counts per stage, skips per reason, quarantine, money."""
    lines = ["# Referral cycle", "", "## This run", "", "| stage | result |", "|---|---|"]
    for stage, result in stages.items():
        lines.append(f"| {stage} | {result} |")
    lines += ["", "## Ledger totals", "", "| what | count |", "|---|---|"]
    for label, key in (
        ("moments by type", "moments"),
        ("skipped by reason", "skipped"),
        ("asks by status", "asks"),
        ("conversions by milestone", "conversions"),
        ("rewards by status", "rewards"),
        ("payouts by rail", "payouts"),
        ("notifications by status", "notifications"),
        ("quarantined by stage", "quarantine"),
    ):
        values = summary.get(key) or {}
        shown = ", ".join(f"{k}: {v}" for k, v in sorted(values.items())) or "none"
        lines.append(f"| {label} | {shown} |")
    lines.append(f"| detractors to follow up | {summary.get('follow_ups', 0)} |")
    handed = summary.get("detractors_handed_on") or {}
    lines.append(
        "| detractors handed on (owner emails by status) | "
        + (", ".join(f"{k}: {v}" for k, v in sorted(handed.items())) or "none")
        + " |"
    )
    lines.append(f"| money paid | {_money(summary.get('paid') or {})} |")
    for currency, by_status in sorted((summary.get("reward_amounts") or {}).items()):
        waiting = {
            s: v
            for s, v in by_status.items()
            if s in ("holding", "payable", "awaiting_approval", "approved")
        }
        lines.append(
            f"| money pending ({currency}) | "
            + (", ".join(f"{s}: {Money(v, currency)}" for s, v in sorted(waiting.items())) or "0")
            + " |"
        )
    return "\n".join(lines)


@task(name="read-ledger-totals", cache_policy=NO_CACHE)
def read_ledger_totals(ledger: SqlLedger) -> dict[str, Any]:
    """The ledger's totals before a cycle, so its report can say what the cycle added.

    A task, not a line of the flow: reading the totals is ledger work that grows with
    the ledger, and on-call sees its time beside the stages'.

    Args:
        ledger: where the totals are read.

    Returns:
        The ledger summary (counts, and money in minor units per currency).
    """
    return ledger.metrics.summary()


@task(name="publish-cycle-report", cache_policy=NO_CACHE)
def publish_cycle_report(
    ledger: SqlLedger, runs: ApprovalRuns, stages: Mapping[str, Any]
) -> dict[str, Any]:
    """Publish the run's summary, the approvals waiting, and the quarantined input.

    Artifacts carry ids, names, counts and reasons; never an email address and never
    the raw text of a quarantined row.

    Args:
        ledger: where the totals are read.
        runs: to link each waiting approval to its run in the UI.
        stages: what each stage of this run reported.

    Returns:
        The ledger summary the markdown was built from.
    """
    summary = ledger.metrics.summary()
    create_markdown_artifact(
        key="referral-cycle-summary",
        markdown=cycle_markdown(stages, summary),
        description="Counts per stage, skipped by reason, quarantined, money paid and pending",
    )
    publish_waiting_approvals.fn(ledger, runs, datetime.now(UTC))
    create_table_artifact(
        key="quarantined-input",
        table=[
            {k: ("" if v is None else str(v)) for k, v in row.items()}
            for row in ledger.sources.quarantined(limit=200)
        ],
        description="Input refused with its reason (raw rows stay in the ledger)",
    )
    return summary


class RunLinks(Protocol):
    """What the table needs of the approval runs: the UI address of one."""

    def ui_url(self, run_id: str) -> str: ...


def waiting_rows(
    waiting: Sequence[WaitingApproval], runs: RunLinks, now: datetime
) -> list[dict[str, str]]:
    """The rows of the waiting-approvals table, as an approver reads them.

    The run link is a markdown link with short text: the raw URL made the column too
    wide to show whole. Flags are in words, and "none" rather than "-", which the UI
    renders as a bullet.
    """
    return [
        {
            "amount": w.amount.format(),
            "waiting": age_words(now - w.waiting_since),
            "referrer": f"{w.referrer_name} ({w.referrer_id})",
            "flags": flags_in_words(w.flags),
            "approvals done": str(w.stages_done),
            "run": f"[open]({runs.ui_url(w.flow_run_id)})" if w.flow_run_id else "not started",
            "reward": w.reward_id,
            "waiting since": w.waiting_since.strftime("%Y-%m-%d %H:%M UTC"),
        }
        for w in waiting
    ]


@task(name="publish-waiting-approvals", cache_policy=NO_CACHE)
def publish_waiting_approvals(ledger: SqlLedger, runs: ApprovalRuns, now: datetime) -> int:
    """Rewrite the waiting-approvals table from the ledger as it is now.

    Args:
        ledger: where the waiting rewards are read.
        runs: to link each waiting reward to its run in the UI.
        now: the ages are measured from it.

    Returns:
        How many rewards wait in all.
    """
    waiting = ledger.approvals.waiting()
    shown = waiting[:APPROVALS_SHOWN]
    at = now.strftime("%Y-%m-%d %H:%M UTC")
    create_table_artifact(
        key=APPROVALS_KEY,
        table=waiting_rows(shown, runs, now),
        description=(
            f"Rewards waiting for a person, oldest first (as of {at})"
            if len(shown) == len(waiting)
            else f"The oldest {len(shown):,} of {len(waiting):,} rewards waiting for a person"
            f" (as of {at}); `referrals approvals list` shows them all"
        ),
    )
    return len(waiting)
