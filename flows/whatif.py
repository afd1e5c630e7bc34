"""What-if: a proposed rules file over the stored history, before it applies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from config.program import load_program
from flows import bootstrap
from tasks.whatif import replay_rules, what_if_markdown


@flow(name="what-if")
def what_if(rules_file: str) -> dict[str, Any]:
    """Replay every stored conversion under ``rules_file`` and compare with the rules in
    force: rewards, cost, automatic payouts vs approvals, ROI. Nothing is paid.

    Args:
        rules_file: path of the proposed program rules (validated first; a wrong value
            fails the run with the field's path).

    Returns:
        Rewards and cost under both rules files.
    """
    app = bootstrap.app()
    proposed = load_program(Path(rules_file))
    result = replay_rules(app.ledger, app.program, proposed)
    create_markdown_artifact(
        key="what-if", markdown=what_if_markdown(result), description="Proposed program rules"
    )
    return {
        "current": {"rewards": result.current.rewards, "cost": str(result.current.cost)},
        "proposed": {"rewards": result.proposed.rewards, "cost": str(result.proposed.cost)},
        "changed_rules": list(result.changed_rules),
    }
