"""Revision 0023: the referrer side's tables are append-only on both databases, and
downgrading it drops them with their guards."""

from __future__ import annotations

from datetime import datetime

import pytest
from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import DBAPIError

from domain.program import RewardChoice
from integrations.ledger.migrate import upgrade
from integrations.ledger.sql import SqlLedger
from tests.integration.test_detractor_handoffs_migration import migrate_to


def test_reward_choices_and_link_requests_refuse_updates_and_deletes(
    engine: Engine, now: datetime
) -> None:
    side = SqlLedger(engine).referrer_side
    side.record_reward_choice("C1", RewardChoice.ACCOUNT_CREDIT, now)
    side.record_page_link_request("r" * 32, "a" * 64, "v" * 64, [], now)

    for statement in (
        "UPDATE reward_choices SET choice = 'cash'",
        "DELETE FROM reward_choices",
        "UPDATE page_link_requests SET queued = 5",
        "DELETE FROM page_link_requests",
    ):
        with pytest.raises(DBAPIError, match=r"append-only|refuse"), engine.begin() as conn:
            conn.execute(text(statement))
    assert side.reward_choices(["C1"]) == {"C1": RewardChoice.ACCOUNT_CREDIT}
    assert side.page_link_requests_since("a" * 64, "v" * 64, now) == (1, 1)


def test_downgrading_0023_drops_its_tables_and_upgrading_brings_back_their_guards(
    engine: Engine, now: datetime
) -> None:
    migrate_to(engine, "0022")
    assert "reward_choices" not in inspect(engine).get_table_names()
    assert "page_link_requests" not in inspect(engine).get_table_names()

    upgrade(engine)
    SqlLedger(engine).referrer_side.record_reward_choice("C1", RewardChoice.CASH, now)

    with pytest.raises(DBAPIError, match=r"append-only|refuse"), engine.begin() as conn:
        conn.execute(text("DELETE FROM reward_choices"))
