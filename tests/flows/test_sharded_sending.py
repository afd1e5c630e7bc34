"""Sending asks as shards (issue 17), under Prefect's test harness with the shard runs
started in this process: the outcome is the unsharded run's, each shard is done once,
and a shard whose worker was lost after claiming it is taken over after its lease."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from config.settings import load_settings
from domain.models import EmailMessage, EmailResult
from domain.program import Program
from domain.shards import Shard, ShardState
from flows.bootstrap import App, use_app
from flows.cycle import send_asks
from flows.shards import run_shard
from integrations.email.fake import RecordingEmailSender
from integrations.ledger.engine import make_engine
from integrations.ledger.sql import SqlLedger
from integrations.ledger.tables import T_ASKS, T_SHARDS
from tests.conftest import NOW
from tests.flows.conftest import make_app
from tests.shards_seed import queue_asks

CONTACTS = [f"C{i:03d}" for i in range(30)]
LEASE = timedelta(seconds=5)


class CountingSender(RecordingEmailSender):
    """Records every message offered to the provider, repeats included."""

    def __init__(self) -> None:
        super().__init__()
        self.offered: list[str] = []

    def send(self, messages: Sequence[EmailMessage]) -> list[EmailResult]:
        self.offered += [m.message_id for m in messages]
        return super().send(messages)


class InProcessShardRuns:
    """Runs each submitted shard at once, here, as the run-shard flow; the shards named
    in ``lose`` are claimed on their first submission by a worker that then dies."""

    def __init__(self, ledger: SqlLedger, lose: frozenset[int] = frozenset()) -> None:
        self.ledger = ledger
        self.lose = lose
        self.submitted: list[tuple[int, int]] = []

    def submit(self, stage: str, key: str, shard: Shard, now: datetime, attempt: int) -> str:
        self.submitted.append((shard.index, attempt))
        if shard.index in self.lose and attempt == 1:
            # Claimed for the test's 5 s lease, then nothing: the worker is gone.
            self.ledger.shards.claim(key, shard.index, "lost:1", datetime.now(UTC), LEASE)
            return "lost"
        run_shard(stage, key, shard.index, shard.of, now)
        return f"run-{shard.index}-{attempt}"


def _ledger(tmp_path: Path, name: str, sqlite_template: Path) -> SqlLedger:
    path = tmp_path / f"{name}.db"
    shutil.copy(sqlite_template, path)
    return SqlLedger(make_engine(f"sqlite:///{path}"))


def _app(ledger: SqlLedger, program: Program, inbox: Path, shards: int) -> App:
    base = make_app(ledger, program, inbox)
    settings = load_settings(
        database_url=ledger.engine.url.render_as_string(hide_password=False),
        inbox_dir=inbox,
        batch_size=7,  # several pages per shard
        shards=shards,
        shard_lease_seconds=5,
    )
    return dataclasses.replace(base, settings=settings, email=CountingSender())


def _asks(ledger: SqlLedger) -> dict[str, str]:
    with ledger.engine.connect() as conn:
        return {r.ask_id: r.status for r in conn.execute(select(T_ASKS.c.ask_id, T_ASKS.c.status))}


def _shards(ledger: SqlLedger) -> list[ShardState]:
    with ledger.engine.connect() as conn:
        key = conn.execute(select(T_SHARDS.c.run_key).distinct()).scalar_one()
    return ledger.shards.shards(key)


@pytest.fixture
def twins(
    tmp_path: Path, sqlite_template: Path, program: Program
) -> Iterator[tuple[SqlLedger, SqlLedger]]:
    """Two ledgers holding the same queued asks."""
    ledgers = (
        _ledger(tmp_path, "plain", sqlite_template),
        _ledger(tmp_path, "sharded", sqlite_template),
    )
    for ledger in ledgers:
        queue_asks(ledger, program, CONTACTS, NOW)
    yield ledgers
    for ledger in ledgers:
        ledger.engine.dispose()


def test_sending_in_three_shards_sends_what_one_run_sends_each_ask_once(
    twins: tuple[SqlLedger, SqlLedger], program: Program, inbox: Path
) -> None:
    plain, sharded = twins
    with use_app(_app(plain, program, inbox, shards=1)) as one:
        alone = send_asks(as_of=NOW)
    runs = InProcessShardRuns(sharded)
    app = dataclasses.replace(_app(sharded, program, inbox, shards=3), shard_runs=runs)
    with use_app(app):
        split = send_asks(as_of=NOW)

    assert _asks(sharded) == _asks(plain)
    assert set(_asks(sharded).values()) == {"accepted"}
    assert isinstance(one.email, CountingSender)
    assert isinstance(app.email, CountingSender)
    assert sorted(app.email.offered) == sorted(one.email.offered)
    assert len(set(app.email.offered)) == len(CONTACTS) == len(app.email.offered)
    delivery = dict(split["delivery"])
    assert (delivery.pop("shard_runs"), delivery.pop("shards_taken_over")) == (3, 0)
    assert delivery == alone["delivery"]
    assert sorted(runs.submitted) == [(0, 1), (1, 1), (2, 1)]
    assert [(s.shard, s.attempts, s.done) for s in _shards(sharded)] == [
        (0, 1, True),
        (1, 1, True),
        (2, 1, True),
    ]


def test_a_shard_whose_worker_died_after_claiming_it_is_taken_over_after_the_lease(
    twins: tuple[SqlLedger, SqlLedger], program: Program, inbox: Path
) -> None:
    _, sharded = twins
    runs = InProcessShardRuns(sharded, lose=frozenset({1}))
    app = dataclasses.replace(_app(sharded, program, inbox, shards=3), shard_runs=runs)
    with use_app(app):
        split = send_asks(as_of=NOW)

    assert set(_asks(sharded).values()) == {"accepted"}
    assert isinstance(app.email, CountingSender)
    assert len(app.email.offered) == len(set(app.email.offered)) == len(CONTACTS)
    assert split["delivery"]["accepted"] == len(CONTACTS)
    assert split["delivery"]["shards_taken_over"] == 1
    assert sorted(runs.submitted) == [(0, 1), (1, 1), (1, 2), (2, 1)]
    states = _shards(sharded)
    assert [(s.shard, s.attempts, s.done) for s in states] == [
        (0, 1, True),
        (1, 2, True),
        (2, 1, True),
    ]
    assert states[1].claimed_by != "lost:1"
