"""The cycle's artifacts stay small enough for a Prefect event, whatever waits."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from domain.models import WaitingApproval
from domain.money import Money
from integrations.ledger.memory import InMemoryLedger
from tasks import reports

SINCE = datetime(2026, 11, 1, tzinfo=UTC)


class Ledger:
    def __init__(self, waiting: int) -> None:
        self.waiting = [
            WaitingApproval(
                reward_id=f"reward-{i:05d}",
                referrer_id=f"contact-{i}",
                referrer_name=f"Referrer {i}",
                amount=Money(60_000, "EUR"),
                flags=(),
                flow_run_id=None,
                waiting_since=SINCE + timedelta(minutes=i),
                stages_done=0,
            )
            for i in range(waiting)
        ]
        self.sources = InMemoryLedger().sources  # nothing quarantined

    def summary(self) -> dict[str, Any]:
        return {}

    def waiting_approvals(self) -> list[WaitingApproval]:
        return self.waiting


class Runs:
    def ui_url(self, flow_run_id: str) -> str:
        return f"http://127.0.0.1:4200/runs/flow-run/{flow_run_id}"


@pytest.fixture
def tables(monkeypatch: pytest.MonkeyPatch) -> dict[str, dict[str, Any]]:
    made: dict[str, dict[str, Any]] = {}

    def table(*, key: str, table: list[dict[str, Any]], description: str) -> None:
        made[key] = {"rows": table, "description": description}

    monkeypatch.setattr(reports, "create_table_artifact", table)
    monkeypatch.setattr(reports, "create_markdown_artifact", lambda **_kwargs: None)
    return made


def test_the_approvals_table_shows_the_oldest_and_says_how_many_wait_in_all(
    tables: dict[str, dict[str, Any]],
) -> None:
    waiting = reports.APPROVALS_SHOWN + 250

    reports.publish_cycle_report.fn(Ledger(waiting), Runs(), {})  # type: ignore[arg-type]

    shown = tables["approvals-waiting"]
    assert [r["reward"] for r in shown["rows"]] == [
        f"reward-{i:05d}" for i in range(reports.APPROVALS_SHOWN)
    ]
    assert f"{reports.APPROVALS_SHOWN:,} of {waiting:,}" in shown["description"]
    assert "referrals approvals list" in shown["description"]


def test_a_short_approvals_table_is_shown_whole(tables: dict[str, dict[str, Any]]) -> None:
    reports.publish_cycle_report.fn(Ledger(3), Runs(), {})  # type: ignore[arg-type]

    shown = tables["approvals-waiting"]
    assert len(shown["rows"]) == 3
    assert shown["description"].startswith("Rewards waiting for a person, oldest first (as of ")


def test_a_waiting_row_shows_amount_age_referrer_flags_in_words_and_a_short_link() -> None:
    waiting = replace(
        Ledger(1).waiting[0],
        flags=("self_referral:same_email_domain", "velocity:over_5_per_24h"),
        flow_run_id="run-1",
    )

    (row,) = reports.waiting_rows([waiting], Runs(), SINCE + timedelta(hours=26, minutes=3))

    assert row["amount"] == "600.00 EUR"
    assert row["waiting"] == "1 day 2 h"
    assert row["referrer"] == "Referrer 0 (contact-0)"
    assert row["flags"] == (
        "self-referral: same email domain; velocity: more than 5 conversions in 24 h"
    )
    assert row["run"] == "[open](http://127.0.0.1:4200/runs/flow-run/run-1)"
    assert row["waiting since"] == "2026-11-01 00:00 UTC"


def test_a_reward_without_flags_or_run_says_so_in_words() -> None:
    (row,) = reports.waiting_rows(Ledger(1).waiting, Runs(), SINCE)

    assert (row["flags"], row["run"]) == ("none", "not started")


def _stages(queued: int, conversions: int, rewards: int, paid: int) -> dict[str, Any]:
    return {
        "send asks": {"decisions": {"queued": queued}},
        "check conversions": {
            "conversions": {"conversions": conversions},
            "registered": {"conversions": 1},
            "stripe": {"conversions": {"conversions": 2}},
            "rewards": {"rewards": rewards},
        },
        "route rewards": {"payouts": {"paid": paid}, "approvals": {"reward-1": "run-1"}},
    }


def test_the_plain_summary_shows_what_this_run_did_beside_the_totals_in_formatted_money() -> None:
    before = {"paid": {"EUR": 60_000}, "asks": {"accepted": 19}}
    after = {
        "events": 40,
        "paid": {"EUR": 120_000, "USD": 5_000},
        "asks": {"accepted": 21},
        "reward_amounts": {"EUR": {"awaiting_approval": 184_500, "paid": 120_000}},
        "follow_ups": 2,
        "quarantine": {"ingest": 3, "reward": 1},
    }

    shown = reports.plain_summary(_stages(2, 3, 4, 2), before, after)

    assert shown["this run"] == {
        "new asks": 2,
        "new conversions": 6,
        "new rewards": 4,
        "paid now": "2 payouts, 600.00 EUR, 50.00 USD",
        "sent for approval": 1,
    }
    totals = shown["totals"]
    assert totals["paid"] == "1,200.00 EUR, 50.00 USD"
    assert totals["pending"] == {"awaiting_approval": "1,845.00 EUR"}
    assert totals["asks"] == {"accepted": 21}
    assert (totals["detractors to follow up"], totals["quarantined"]) == (2, 4)


def test_a_run_that_did_nothing_says_so_beside_unchanged_totals() -> None:
    ledger = {"paid": {"EUR": 60_000}, "asks": {"accepted": 19}}

    shown = reports.plain_summary(_stages(0, 0, 0, 0), ledger, ledger)

    assert shown["this run"]["paid now"] == "nothing"
    assert shown["this run"]["new asks"] == 0
    assert shown["totals"]["asks"] == {"accepted": 19}
    assert shown["totals"]["paid"] == "600.00 EUR"
