"""The quarantine keeps masked excerpts for a while; payout destinations change visibly.

On SQLite and PostgreSQL: what the quarantine's writer stores, its purge and guards;
the ``payout_destination_changes`` audit rows written with the contacts, its guards,
and the ``payout_destination_changed`` flag that sends the referrer's rewards to a
person until one so flagged is approved.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, delete, insert, select, update
from sqlalchemy.exc import DBAPIError

from domain.fraud import PAYOUT_DESTINATION_CHANGED
from domain.models import Rejected, RewardStatus
from domain.ports import SourceBatch
from domain.quarantine import CONFLICTING_ROWS, EXCERPT_CHARS
from integrations.ledger.sql import SqlLedger
from integrations.ledger.tables import (
    T_PAYOUT_DESTINATION_CHANGES,
    T_QUARANTINE,
)
from integrations.sources.files import FileSource
from tasks.ingest import ingest_sources
from tasks.quarantine import purge_quarantine_excerpts
from tasks.use_cases.approvals import record_decision
from tests.conftest import contact, people_batch
from tests.integration.test_ledger_flow import decide, given_reward


def quarantined(ledger: SqlLedger) -> list[dict[str, Any]]:
    with ledger.engine.connect() as conn:
        return [
            dict(r)
            for r in conn.execute(select(T_QUARANTINE).order_by(T_QUARANTINE.c.id)).mappings()
        ]


def rejects(*rejected: Rejected) -> SourceBatch:
    return SourceBatch(
        source="files", rejected=list(rejected), records_in=len(rejected), reference_only=0
    )


def changes(ledger: SqlLedger, contact_id: str) -> list[tuple[Any, ...]]:
    return [
        (c["field"], c["old_value"], c["new_value"], c["source"])
        for c in ledger.destinations.destination_changes_of(contact_id)
    ]


# -- the quarantine --------------------------------------------------------------------


def test_the_quarantine_keeps_a_masked_capped_excerpt_and_escapes_what_no_database_stores(
    ledger: SqlLedger, now: datetime
) -> None:
    long_row = "e1,deal_won,jane.doe@acme.com,+33 6 12 34 56 78," + "x" * 5_000
    ledger.sources.record_batch(
        rejects(
            Rejected("files", "events.csv:2", "amount", "1e30 is too large", long_row),
            Rejected("files", "events.csv:3", "name", "control character", "a\x00b\udc80"),
            Rejected("files", "events.csv:4", "email", "'jane@acme.com' is not valid", "x"),
        ),
        now,
    )

    long_kept, nul_kept, reason_kept = quarantined(ledger)
    assert long_kept["raw"].startswith("e1,deal_won,<email>,<phone>,xxx")
    assert len(long_kept["raw"]) == EXCERPT_CHARS
    assert long_kept["reason"] == "1e30 is too large"
    assert nul_kept["raw"] == "a\\x00b\\udc80"
    assert reason_kept["reason"] == "'<email>' is not valid"


def test_the_purge_empties_excerpts_past_retention_keeps_younger_ones_and_every_row(
    ledger: SqlLedger, now: datetime
) -> None:
    old, young = now - timedelta(days=31), now - timedelta(days=29)
    ledger.sources.record_batch(rejects(Rejected("files", "old.csv:2", "x", "bad", "old row")), old)
    ledger.sources.record_batch(
        rejects(Rejected("files", "young.csv:2", "x", "bad", "young row")), young
    )

    assert purge_quarantine_excerpts.fn(ledger, 30, now) == 1
    assert purge_quarantine_excerpts.fn(ledger, 30, now) == 0  # nothing left to purge

    purged, kept = quarantined(ledger)
    assert (purged["record"], purged["reason"], purged["raw"]) == ("old.csv:2", "bad", "")
    assert purged["purged_at"] == now
    assert (kept["raw"], kept["purged_at"]) == ("young row", None)


def test_the_quarantine_refuses_deleting_rows_and_any_update_but_the_purge(
    ledger: SqlLedger, engine: Engine, now: datetime
) -> None:
    ledger.sources.record_batch(rejects(Rejected("files", "a.csv:2", "x", "bad", "row")), now)
    where = T_QUARANTINE.c.record == "a.csv:2"
    for statement in (
        delete(T_QUARANTINE).where(where),
        update(T_QUARANTINE).where(where).values(reason="fine"),
        update(T_QUARANTINE).where(where).values(raw="other", purged_at=now),
        update(T_QUARANTINE).where(where).values(raw="", purged_at=now, stage="other"),
    ):
        with pytest.raises(DBAPIError), engine.begin() as conn:
            conn.execute(statement)

    ledger.sources.purge_quarantine(now + timedelta(seconds=1), now)
    with pytest.raises(DBAPIError), engine.begin() as conn:  # purged once, for good
        conn.execute(update(T_QUARANTINE).where(where).values(raw="", purged_at=now))
    assert [(r["reason"], r["raw"]) for r in quarantined(ledger)] == [("bad", "")]


def test_conflicting_rows_of_one_drop_are_quarantined_and_the_rest_of_the_page_stored(
    ledger: SqlLedger, now: datetime, tmp_path: Path
) -> None:
    (tmp_path / "contacts.csv").write_text(
        "contact_id,account_id,name,email,referrer_type,stripe_account_id\n"
        "C1,A1,Jane,jane@acme.example,customer,\n"
        "C2,A1,Bob,bob@acme.example,customer,\n"
        "C1,A1,Jane,attacker@evil.example,partner,acct_attacker\n"
        "C3,A1,Ann,ann@acme.example,customer,\n"
        "C3,A1,Ann,ann@acme.example,customer,\n"
    )

    (report,) = ingest_sources.fn([FileSource(tmp_path)], ledger, now)

    assert (report.records_in, report.quarantined, report.reference_rows) == (5, 2, 3)
    assert set(ledger.asks.contacts(["C1", "C2", "C3"])) == {"C2", "C3"}
    rows = quarantined(ledger)
    assert [(r["reason"], r["field"]) for r in rows] == [
        (CONFLICTING_ROWS, "email,referrer_type,stripe_account_id")
    ] * 2
    assert all(r["record"].startswith("contact:C1:") for r in rows)
    assert "stripe_account_id=acct_attacker" in rows[1]["raw"]
    assert "@" not in "".join(r["raw"] for r in rows)


# -- payout destination changes --------------------------------------------------------


def test_a_destination_change_between_two_drops_is_recorded_and_the_same_values_are_not(
    ledger: SqlLedger, now: datetime
) -> None:
    jane = contact("C1", stripe_customer_id="cus_jane")
    ledger.sources.record_batch(people_batch(jane), now)  # new: nothing to compare with
    ledger.sources.record_batch(people_batch(jane), now + timedelta(days=1))
    ledger.sources.record_batch(people_batch(replace(jane, stripe_customer_id=None)), now)
    assert changes(ledger, "C1") == []

    later = now + timedelta(days=2)
    moved = replace(jane, stripe_customer_id="cus_other", stripe_account_id="acct_attacker")
    ledger.sources.record_batch(people_batch(moved), later)
    ledger.sources.record_batch(people_batch(moved), later + timedelta(days=1))

    assert changes(ledger, "C1") == [
        ("stripe_account_id", None, "acct_attacker", "test"),
        ("stripe_customer_id", "cus_jane", "cus_other", "test"),
    ]
    assert {c["seen_at"] for c in ledger.destinations.destination_changes_of("C1")} == {later}
    assert ledger.asks.contacts(["C1"])["C1"].stripe_account_id == "acct_attacker"


def test_the_destination_audit_refuses_updates_and_deletes(
    ledger: SqlLedger, engine: Engine, now: datetime
) -> None:
    ledger.sources.record_batch(people_batch(contact("C1", stripe_account_id="acct_1")), now)
    ledger.sources.record_batch(people_batch(contact("C1", stripe_account_id="acct_2")), now)
    for statement in (
        update(T_PAYOUT_DESTINATION_CHANGES).values(new_value="acct_1"),
        delete(T_PAYOUT_DESTINATION_CHANGES),
    ):
        with pytest.raises(DBAPIError), engine.begin() as conn:
            conn.execute(statement)
    with pytest.raises(DBAPIError), engine.begin() as conn:  # only the two payout fields
        conn.execute(
            insert(T_PAYOUT_DESTINATION_CHANGES).values(
                contact_id="C1", field="email", new_value="x", source="test", seen_at=now
            )
        )
    assert changes(ledger, "C1") == [("stripe_account_id", "acct_1", "acct_2", "test")]


def _route(ledger: SqlLedger, as_of: datetime) -> dict[str, tuple[str, ...]]:
    return {v.reward.reward_id: v.reward.flags for v in ledger.rewards.to_route(as_of, "", 100)}


def test_a_changed_destination_flags_every_reward_routed_until_one_so_flagged_is_approved(
    ledger: SqlLedger, now: datetime
) -> None:
    before = given_reward(ledger, now, 1, status=RewardStatus.PAYABLE)  # payable, unpaid
    other = given_reward(ledger, now, 1, referrer="C9", status=RewardStatus.PAYABLE)
    assert _route(ledger, now) == {before.reward_id: (), other.reward_id: ()}

    ledger.sources.record_batch(
        people_batch(contact("C1", "A-C1", stripe_account_id="acct_new")), now
    )

    flags = _route(ledger, now)
    assert flags[before.reward_id] == (PAYOUT_DESTINATION_CHANGED,)
    assert flags[other.reward_id] == ()
    assert ledger.rewards.add_flag([before.reward_id], PAYOUT_DESTINATION_CHANGED, now) == 1
    assert ledger.rewards.add_flag([before.reward_id], PAYOUT_DESTINATION_CHANGED, now) == 0
    ledger.rewards.move(
        [before.reward_id], [RewardStatus.PAYABLE], RewardStatus.AWAITING_APPROVAL, now
    )
    assert ledger.rewards.of([before.reward_id])[before.reward_id].reward.flags == (
        PAYOUT_DESTINATION_CHANGED,
    )
    next_one = given_reward(ledger, now, 2, status=RewardStatus.HOLDING)
    assert _route(ledger, now)[next_one.reward_id] == (PAYOUT_DESTINATION_CHANGED,)

    later = now + timedelta(hours=1)
    record_decision(ledger, before.reward_id, 1, decide(), 1, None, later)

    assert _route(ledger, later)[next_one.reward_id] == ()
    assert ledger.destinations.referrers_with_changed_destination(["C1", "C9"]) == set()
