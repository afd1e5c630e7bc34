"""The shards store and its in-memory fake keep the same promises (issue 17).

Every scenario runs on the SQL store (SQLite, and PostgreSQL when configured) and on the
fake of :mod:`integrations.ledger.memory`: a shard is claimed by one worker at a time,
taken over only after its lease, done once, and never touched again once done. On the
databases, triggers refuse what the store never does (un-doing, re-claiming or deleting
a shard), and the shard a query picks a row by is the domain's ``shard_of``.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import delete, select, text, update
from sqlalchemy.exc import DBAPIError

from domain.program import Program
from domain.shards import Shard, all_shards, shard_of
from integrations.ledger.engine import make_engine
from integrations.ledger.memory import InMemoryLedger
from integrations.ledger.shards import shard_sql
from integrations.ledger.sql import SqlLedger
from integrations.ledger.tables import T_SHARDS
from tests.conftest import NOW
from tests.shards_seed import queue_asks

LEASE = timedelta(minutes=15)
KEY = "send-ask-emails/run-1"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres), "memory"])
def ledger(request: pytest.FixtureRequest) -> Iterator[Any]:
    """The SQL ledger (as the ``ledger`` fixture builds it) or the in-memory one."""
    if request.param == "memory":
        yield InMemoryLedger()
        return
    url = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "postgres_url")
    engine = make_engine(str(url))
    yield SqlLedger(engine)
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def sql_ledger(request: pytest.FixtureRequest) -> Iterator[SqlLedger]:
    url = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "postgres_url")
    engine = make_engine(str(url))
    yield SqlLedger(engine)
    engine.dispose()


def test_opening_a_stage_run_makes_each_shard_once(ledger: Any) -> None:
    ledger.shards.open(KEY, 3, NOW)
    ledger.shards.open(KEY, 3, NOW + timedelta(minutes=1))  # a retry of the stage run

    states = ledger.shards.shards(KEY)
    assert [(s.shard, s.of_shards, s.claimed_by, s.attempts, s.done) for s in states] == [
        (0, 3, None, 0, False),
        (1, 3, None, 0, False),
        (2, 3, None, 0, False),
    ]
    with pytest.raises(ValueError, match="another shard count"):
        ledger.shards.open(KEY, 4, NOW)
    assert ledger.shards.shards("another/run") == []


def test_a_shard_is_held_by_one_worker_until_its_lease_runs_out_then_taken_over(
    ledger: Any,
) -> None:
    ledger.shards.open(KEY, 2, NOW)

    first = ledger.shards.claim(KEY, 0, "w1", NOW, LEASE)
    assert (first.claimed_by, first.lease_until, first.attempts) == ("w1", NOW + LEASE, 1)
    assert ledger.shards.claim(KEY, 0, "w2", NOW + LEASE - timedelta(seconds=1), LEASE) is None
    assert ledger.shards.claim(KEY, 9, "w2", NOW, LEASE) is None  # never opened

    later = NOW + LEASE
    taken = ledger.shards.claim(KEY, 0, "w2", later, LEASE)
    assert (taken.claimed_by, taken.lease_until, taken.attempts) == ("w2", later + LEASE, 2)
    # The lost worker comes back: its claim is gone, so is its right to mark it done.
    assert not ledger.shards.complete(KEY, 0, "w1", later, {"accepted": 5})
    assert ledger.shards.complete(KEY, 0, "w2", later, {"accepted": 3})

    (done, untouched) = ledger.shards.shards(KEY)
    assert (done.claimed_by, done.done_at, dict(done.outcome)) == ("w2", later, {"accepted": 3})
    assert (untouched.claimed_by, untouched.attempts) == (None, 0)


def test_the_holder_keeps_its_shard_by_renewing_its_lease_and_a_taken_shard_is_not_renewed(
    ledger: Any,
) -> None:
    ledger.shards.open(KEY, 1, NOW)
    ledger.shards.claim(KEY, 0, "w1", NOW, LEASE)

    assert ledger.shards.renew(KEY, 0, "w1", NOW + LEASE / 2, LEASE)
    # Where the first lease would have run out, the renewed one still holds.
    assert ledger.shards.claim(KEY, 0, "w2", NOW + LEASE, LEASE) is None
    assert not ledger.shards.renew(KEY, 0, "w2", NOW + LEASE, LEASE)
    (state,) = ledger.shards.shards(KEY)
    assert (state.claimed_by, state.lease_until, state.attempts) == ("w1", NOW + LEASE * 3 / 2, 1)

    later = NOW + LEASE * 2
    assert ledger.shards.claim(KEY, 0, "w2", later, LEASE) is not None
    assert not ledger.shards.renew(KEY, 0, "w1", later, LEASE)  # taken over: lost
    assert ledger.shards.complete(KEY, 0, "w2", later, {"accepted": 1})
    assert not ledger.shards.renew(KEY, 0, "w2", later, LEASE)  # done: nothing to keep


def test_a_done_shard_is_never_claimed_or_done_again(ledger: Any) -> None:
    ledger.shards.open(KEY, 1, NOW)
    ledger.shards.claim(KEY, 0, "w1", NOW, LEASE)
    assert ledger.shards.complete(KEY, 0, "w1", NOW, {"accepted": 2})

    much_later = NOW + timedelta(days=1)
    assert ledger.shards.claim(KEY, 0, "w1", much_later, LEASE) is None
    assert ledger.shards.claim(KEY, 0, "w2", much_later, LEASE) is None
    assert not ledger.shards.complete(KEY, 0, "w1", much_later, {"accepted": 9})
    (state,) = ledger.shards.shards(KEY)
    assert (state.done_at, state.attempts, dict(state.outcome)) == (NOW, 1, {"accepted": 2})


def test_work_and_its_done_mark_in_one_unit_of_work_roll_back_together(ledger: Any) -> None:
    ledger.shards.open(KEY, 1, NOW)
    ledger.shards.claim(KEY, 0, "w1", NOW, LEASE)

    def work_fails_after_the_mark() -> None:
        with ledger.transaction() as uow:
            assert uow.shards.complete(KEY, 0, "w1", NOW, {"moved": 1})
            raise RuntimeError("the work failed after the mark, before the commit")

    with pytest.raises(RuntimeError, match="before the commit"):
        work_fails_after_the_mark()

    (state,) = ledger.shards.shards(KEY)
    assert not state.done
    with ledger.transaction() as uow:
        assert uow.shards.complete(KEY, 0, "w1", NOW, {"moved": 1})
    assert ledger.shards.shards(KEY)[0].done


def test_the_database_refuses_to_undo_reclaim_or_delete_a_done_shard(
    sql_ledger: SqlLedger,
) -> None:
    sql_ledger.shards.open(KEY, 2, NOW)
    sql_ledger.shards.claim(KEY, 0, "w1", NOW, LEASE)
    sql_ledger.shards.complete(KEY, 0, "w1", NOW, {"accepted": 1})
    c = T_SHARDS.c
    this = (c.run_key == KEY) & (c.shard == 0)
    refused = [
        update(T_SHARDS).where(this).values(done_at=None),
        update(T_SHARDS).where(this).values(claimed_by="w2", lease_until=None),
        update(T_SHARDS).where(this).values(outcome={"accepted": 100}),
        delete(T_SHARDS).where(this),
        # An open shard: attempts never go back, and no one marks it done unclaimed.
        update(T_SHARDS).where((c.run_key == KEY) & (c.shard == 1)).values(attempts=-1),
        update(T_SHARDS).where((c.run_key == KEY) & (c.shard == 1)).values(done_at=NOW),
        delete(T_SHARDS).where((c.run_key == KEY) & (c.shard == 1)),
    ]
    for statement in refused:
        with pytest.raises(DBAPIError), sql_ledger.engine.begin() as conn:
            conn.execute(statement)
    with sql_ledger.engine.connect() as conn:
        rows = conn.execute(select(c.shard, c.claimed_by, c.done_at).order_by(c.shard)).all()
    assert [(r.shard, r.claimed_by, r.done_at is not None) for r in rows] == [
        (0, "w1", True),
        (1, None, False),
    ]


def test_the_database_puts_a_key_in_the_domains_shard(sql_ledger: SqlLedger) -> None:
    keys = ["C1", "C2", "", "Zoë", "contact-0042", "x" * 128, "Ωmega ü 漢字"]
    with sql_ledger.engine.connect() as conn:
        for of in (1, 2, 3, 4, 7, 256):
            found = [
                conn.execute(select(shard_sql(text(":k").bindparams(k=k), of))).scalar_one()
                for k in keys
            ]
            assert found == [shard_of(k, of) for k in keys]


def _all_pages(read: Any) -> list[str]:
    """Every id the paged read returns, page by page as the senders read them."""
    ids: list[str] = []
    after = ""
    while page := read(after):
        ids += page
        after = page[-1]
    return ids


def test_the_shards_of_the_asks_to_send_split_them_whole_and_without_overlap(
    sql_ledger: SqlLedger, program: Program
) -> None:
    contacts = [f"C{i:03d}" for i in range(40)]
    queue_asks(sql_ledger, program, contacts, NOW)

    def asks(shard: Shard | None) -> list[str]:
        return _all_pages(
            lambda after: [a.ask_id for a, _, _ in sql_ledger.asks.asks_to_send(after, 3, shard)]
        )

    everything = asks(None)
    parts = {s.index: asks(s) for s in all_shards(4)}
    assert len(everything) == 40
    assert sorted(i for ids in parts.values() for i in ids) == sorted(everything)
    owner = {a.ask_id: a.contact_id for a, _, _ in sql_ledger.asks.asks_to_send("", 100)}
    for index, ids in parts.items():
        assert ids, "40 contacts leave no shard of 4 empty"
        assert all(shard_of(owner[i], 4) == index for i in ids)
