"""Revision 0022 on a ledger in use: the detractors already listed are not mailed the
day it ships, and downgrading it leaves the ledger as 0020 made it."""

from __future__ import annotations

import pytest
from alembic import command
from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import IntegrityError

from domain.program import Program
from integrations.email.fake import RecordingEmailSender
from integrations.ledger.migrate import alembic_config, upgrade
from integrations.ledger.sql import SqlLedger
from tasks.detractors import hand_on_detractors
from tests.conftest import NOW
from tests.tasks.test_detractor_handoffs import OWNER, given_detractors


def migrate_to(engine: Engine, revision: str) -> None:
    config = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, revision)


def test_follow_ups_listed_before_0022_are_marked_skipped_and_never_mailed(
    engine: Engine, program: Program
) -> None:
    migrate_to(engine, "0020")
    assert "detractor_handoffs" not in inspect(engine).get_table_names()
    ledger = SqlLedger(engine)
    given_detractors(ledger, "C1")

    upgrade(engine)
    given_detractors(ledger, "C2")
    sender = RecordingEmailSender()
    result = hand_on_detractors.fn(ledger, sender, None, OWNER, program, NOW)

    assert result.handed_on == 1
    assert [m.data["follow_up_id"] for m in sender.sent] == ["test:nps-C2"]
    assert ledger.handoffs.handoff_counts()["email"] == {"accepted": 1, "skipped": 1}


def test_downgrading_0022_drops_the_hand_offs_and_upgrading_brings_back_their_guards(
    engine: Engine, program: Program
) -> None:
    migrate_to(engine, "0020")
    assert "detractor_handoffs" not in inspect(engine).get_table_names()

    upgrade(engine)
    ledger = SqlLedger(engine)
    given_detractors(ledger, "C1")
    hand_on_detractors.fn(ledger, RecordingEmailSender(), None, OWNER, program, NOW)

    with pytest.raises(IntegrityError, match="append-only"), engine.begin() as conn:
        conn.execute(text("DELETE FROM detractor_handoffs"))
    assert ledger.handoffs.handoff_counts()["email"] == {"accepted": 1}
