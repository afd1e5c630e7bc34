"""The what-if flow publishes its comparison and pays nothing."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from config.settings import PROJECT_ROOT
from domain.models import ReferrerType
from domain.touchpoints import StoredTouchpoint, TouchpointKind
from flows.bootstrap import App
from flows.whatif import what_if
from integrations.ledger.touchpoints import Referee
from tests.conftest import NOW, contact, people_batch
from tests.flows.test_payout_approval import _reward_awaiting_approval
from tests.prefect_artifacts import artifact_texts


def test_the_comparison_is_published_as_an_artifact(test_app: App, tmp_path: Path) -> None:
    _reward_awaiting_approval(test_app, deal_minor=1_230_000)
    proposed = tmp_path / "proposed.yaml"
    proposed.write_text(
        (PROJECT_ROOT / "config/program.yaml").read_text().replace("percent: 15", "percent: 10")
    )
    before = test_app.ledger.metrics.summary()

    result = what_if(str(proposed))

    assert result["current"]["cost"] == "1,845.00 EUR"
    assert result["proposed"]["cost"] == "1,230.00 EUR"
    assert test_app.ledger.metrics.summary() == before
    assert any("1,230.00 EUR" in t for t in artifact_texts("what-if"))


def test_a_wrong_rules_file_fails_the_run_naming_the_field(test_app: App, tmp_path: Path) -> None:
    proposed = tmp_path / "proposed.yaml"
    proposed.write_text("holding_days: -1\n")
    state = what_if(str(proposed), return_state=True)

    assert state.is_failed()
    # The whole state message is the one line naming the field: the alert's text.
    assert (state.message or "").startswith(f"{proposed}: invalid program rules: holding_days")


def test_a_proposed_attribution_model_shows_the_changed_split_per_referrer(
    test_app: App, tmp_path: Path
) -> None:
    _reward_awaiting_approval(test_app, deal_minor=1_230_000)  # P1's code: 1,845.00 EUR
    ledger = test_app.ledger
    # P2, another partner, registered the referee's company before the deal.
    ledger.sources.record_batch(people_batch(contact("P2", "PB", kind=ReferrerType.PARTNER)), NOW)
    registered = StoredTouchpoint(
        "P2", NOW - timedelta(days=40), TouchpointKind.REGISTRATION, "reg-p2"
    )
    ledger.touchpoints.record_touchpoints([(registered, Referee("RA", "RC", None))], NOW)
    proposed = tmp_path / "proposed.yaml"
    proposed.write_text(
        (PROJECT_ROOT / "config/program.yaml")
        .read_text()
        .replace("model: last_touch", "model: linear")
    )

    result = what_if(str(proposed))

    assert (result["current"]["attribution"], result["proposed"]["attribution"]) == (
        "last_touch",
        "linear",
    )
    assert result["current"]["cost"] == result["proposed"]["cost"] == "1,845.00 EUR"
    assert "attribution" in result["changed_rules"]
    assert result["referrers"] == [
        {
            "referrer_id": "P1",
            "current": "1,845.00 EUR",
            "proposed": "922.50 EUR",
            "difference": "-922.50 EUR",
        },
        {
            "referrer_id": "P2",
            "current": "0.00 EUR",
            "proposed": "922.50 EUR",
            "difference": "922.50 EUR",
        },
    ]
    texts = artifact_texts("what-if")
    assert any("| P2 | 0, 0.00 EUR | 1, 922.50 EUR | 922.50 EUR |" in t for t in texts)
