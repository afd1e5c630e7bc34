"""The unit of work, on SQLite and PostgreSQL: the stores it yields share one
transaction, kept when the block ends and undone, all of it, when the block raises."""

from __future__ import annotations

from datetime import datetime

import pytest

from domain.approvers import Approver, make_approver
from domain.money import Money
from integrations.ledger.memory import InMemoryLedger
from integrations.ledger.migrate import upgrade
from integrations.ledger.sql import SqlLedger


def _approver(approver_id: str) -> Approver:
    return make_approver(
        approver_id=approver_id,
        display_name=approver_id.title(),
        email=f"{approver_id}@corp.example",
        contact_id=None,
        limit=Money(500_000, "EUR"),
    )


class Boom(Exception):
    pass


def test_a_unit_of_work_keeps_every_write_of_its_block(ledger: SqlLedger, now: datetime) -> None:
    upgrade(ledger.engine)
    with ledger.transaction() as uow:
        uow.approvers.add(_approver("ana.diaz"), "test", now)
        uow.approvers.enrol("ana.diaz", "secret", "test", now)
        # Reads in the block see the block's own writes.
        assert uow.approvers.secret("ana.diaz") == "secret"
    assert ledger.approvers.get("ana.diaz") is not None
    assert sorted(e["action"] for e in ledger.approvers.history("ana.diaz")) == [
        "added",
        "enrolled",
    ]


def test_a_unit_of_work_that_raises_leaves_nothing_behind(ledger: SqlLedger, now: datetime) -> None:
    upgrade(ledger.engine)

    def add_enrol_and_fail() -> None:
        with ledger.transaction() as uow:
            uow.approvers.add(_approver("ana.diaz"), "test", now)
            uow.approvers.enrol("ana.diaz", "secret", "test", now)
            raise Boom

    with pytest.raises(Boom):
        add_enrol_and_fail()
    assert ledger.approvers.get("ana.diaz") is None
    assert ledger.approvers.history("ana.diaz") == []


def test_stores_outside_a_unit_of_work_commit_each_call(ledger: SqlLedger, now: datetime) -> None:
    upgrade(ledger.engine)
    ledger.approvers.add(_approver("ana.diaz"), "test", now)
    with pytest.raises(Boom), ledger.transaction():
        raise Boom
    assert ledger.approvers.get("ana.diaz") is not None


def test_the_in_memory_ledger_undoes_a_block_that_raises() -> None:
    memory = InMemoryLedger()
    memory.marker = ["kept"]  # type: ignore[attr-defined]

    def append_and_fail() -> None:
        with memory.transaction() as uow:
            uow.marker.append("undone")  # type: ignore[attr-defined]
            raise Boom

    with pytest.raises(Boom):
        append_and_fail()
    assert memory.marker == ["kept"]  # type: ignore[attr-defined]
    assert (memory.committed, memory.rolled_back) == (0, 1)
    with memory.transaction() as uow:
        uow.marker.append("kept too")  # type: ignore[attr-defined]
    assert memory.marker == ["kept", "kept too"]  # type: ignore[attr-defined]
    assert memory.committed == 1
