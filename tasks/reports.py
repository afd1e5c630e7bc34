"""Run artifacts for on-call and revenue ops: what a run did, what waits, what was refused."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from domain.money import Money
from domain.ports import ApprovalRuns
from integrations.ledger.sql import SqlLedger

#: Rows of the waiting-approvals table. The artifact travels in a Prefect event: at
#: 1,000,000 customers (bench/cycle.py) 21,000 waiting rewards made one of 6.6 MB, too
#: big for it. The oldest are the ones to act on; the CLI lists them all.
APPROVALS_SHOWN = 500


def _money(totals: Mapping[str, int]) -> str:
    return ", ".join(Money(v, c).format() for c, v in sorted(totals.items())) or "0"


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
    summary = ledger.summary()
    create_markdown_artifact(
        key="referral-cycle-summary",
        markdown=cycle_markdown(stages, summary),
        description="Counts per stage, skipped by reason, quarantined, money paid and pending",
    )
    waiting = ledger.waiting_approvals()
    shown = waiting[:APPROVALS_SHOWN]
    create_table_artifact(
        key="approvals-waiting",
        table=[
            {
                "reward": w.reward_id,
                "referrer": f"{w.referrer_name} ({w.referrer_id})",
                "amount": w.amount.format(),
                "flags": ", ".join(w.flags) or "-",
                "approvals done": w.stages_done,
                "waiting since": w.waiting_since.isoformat(timespec="minutes"),
                "run": runs.ui_url(w.flow_run_id) if w.flow_run_id else "not started",
            }
            for w in shown
        ],
        description=(
            "Rewards waiting for a person, oldest first"
            if len(shown) == len(waiting)
            else f"The oldest {len(shown):,} of {len(waiting):,} rewards waiting for a person;"
            " `referrals approvals list` shows them all"
        ),
    )
    create_table_artifact(
        key="quarantined-input",
        table=[
            {k: ("" if v is None else str(v)) for k, v in row.items()}
            for row in ledger.quarantined(limit=200)
        ],
        description="Input refused with its reason (raw rows stay in the ledger)",
    )
    return summary
