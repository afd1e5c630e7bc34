"""What-if: a proposed rules file over the stored history, before it applies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from config.program import load_program
from flows import bootstrap
from tasks.whatif import REFERRER_ROWS, attribution_label, replay_rules, what_if_markdown


@flow(name="what-if")
@bootstrap.one_line_failure
def what_if(rules_file: str) -> dict[str, Any]:
    """Replay every stored conversion under ``rules_file`` and compare with the rules in
    force: rewards, cost, automatic payouts vs approvals, ROI, and (each rules file
    splitting the stored touchpoints by its own attribution model) the cost per
    referrer. Nothing is paid.

    Args:
        rules_file: path of the proposed program rules (validated first; a wrong value
            fails the run with the field's path).

    Returns:
        Rewards and cost under both rules files, with each one's attribution model, and
        the referrers whose rewards move (the largest moves first, at most
        ``REFERRER_ROWS``; ``referrers_changed`` counts them all).
    """
    app = bootstrap.app()
    proposed = load_program(Path(rules_file))
    result = replay_rules(app.ledger, app.program, proposed)
    models = (attribution_label(app.program), attribution_label(proposed))
    create_markdown_artifact(
        key="what-if",
        markdown=what_if_markdown(result, models),
        description="Proposed program rules",
    )
    changes = result.referrer_changes()
    return {
        "current": {
            "rewards": result.current.rewards,
            "cost": str(result.current.cost),
            "attribution": models[0],
        },
        "proposed": {
            "rewards": result.proposed.rewards,
            "cost": str(result.proposed.cost),
            "attribution": models[1],
        },
        "changed_rules": list(result.changed_rules),
        "referrers_changed": len(changes),
        "referrers": [
            {
                "referrer_id": c.referrer_id,
                "current": str(c.current[1]),
                "proposed": str(c.proposed[1]),
                "difference": str(c.difference),
            }
            for c in changes[:REFERRER_ROWS]
        ],
    }
