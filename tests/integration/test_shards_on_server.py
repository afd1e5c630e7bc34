"""A sharded stage on a real Prefect server (on PostgreSQL) with two process workers
(issue 17): sending the queued asks in 4 shards does each shard exactly once and sends
what the unsharded stage sends, each ask once; and when one worker is killed (SIGKILL
to its process group) while it holds a shard, the other takes the shard over after
the lease, and still every ask is sent exactly once.

The ledger is a PostgreSQL schema of the test's own, shared by the test (which runs the
stage's orchestration, as the cycle's run would) and the workers (which run the
shards). To catch a worker mid-shard the test holds an EXCLUSIVE lock on ``asks``: a
shard run claims its shard, then waits on the lock at its first write to ``asks``,
before any email leaves. No timing is asserted; every wait has a generous deadline.
"""

from __future__ import annotations

import contextvars
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prefect.logging.handlers import APILogWorker
from prefect.settings import PREFECT_HOME, temporary_settings
from sqlalchemy import select, text

from config.settings import load_settings
from domain.program import Program
from domain.shards import ShardState
from flows.bootstrap import App, build_app, use_app
from flows.cycle import send_asks
from integrations.email.fake import RecordingEmailSender
from integrations.ledger.engine import make_engine
from integrations.ledger.sql import SqlLedger
from integrations.ledger.tables import T_ASKS, T_SHARDS
from integrations.prefect_stack import LocalStack
from tasks.emails import send_ask_emails
from tests.conftest import NOW
from tests.fakes.sendgrid_server import FakeSendGrid
from tests.pg_schemas import SchemaPool
from tests.prefect_database import running_stack
from tests.shards_seed import queue_asks

pytestmark = [pytest.mark.server, pytest.mark.slow, pytest.mark.postgres]

SHARDS = 4
LEASE_SECONDS = 20
WORKERS = ("shard-worker-a", "shard-worker-b")
# A busy two-core box starts a flow run process in tens of seconds: wait minutes.
PATIENCE = 600.0


@pytest.fixture(scope="module")
def sendgrid() -> Iterator[FakeSendGrid]:
    with FakeSendGrid() as fake:
        yield fake


@pytest.fixture(scope="module")
def ledger_url(postgres_schemas: SchemaPool) -> Iterator[str]:
    url = postgres_schemas.acquire()
    try:
        yield url
    finally:
        postgres_schemas.release(url)


def _settings_env(ledger_url: str, sendgrid: FakeSendGrid) -> dict[str, str]:
    return {
        "REFERRALS_DATABASE_URL": ledger_url,
        "REFERRALS_SENDGRID_API_KEY": sendgrid.api_key,
        "REFERRALS_SENDGRID_API_HOST": sendgrid.url,
        "REFERRALS_SHARDS": str(SHARDS),
        "REFERRALS_SHARD_LEASE_SECONDS": str(LEASE_SECONDS),
        "REFERRALS_SHARD_DEADLINE_SECONDS": str(int(PATIENCE)),
        "REFERRALS_BATCH_SIZE": "5",
    }


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, ledger_url: str, sendgrid: FakeSendGrid
) -> Iterator[LocalStack]:
    root = tmp_path_factory.mktemp("shards-server")
    with running_stack(root, _settings_env(ledger_url, sendgrid)) as local:
        # Two workers taking one run at a time each, instead of the stack's one
        # unlimited worker: the shards spread over both.
        local.stop("worker")
        for name in WORKERS:
            local.start_worker(name, limit=1)
        try:
            yield local
        finally:
            for name in WORKERS:
                local.stop(name)


@pytest.fixture(scope="module")
def app(stack: LocalStack, ledger_url: str, sendgrid: FakeSendGrid) -> Iterator[App]:
    settings = load_settings(
        database_url=ledger_url,
        sendgrid_api_key=sendgrid.api_key,
        sendgrid_api_host=sendgrid.url,
        shards=SHARDS,
        shard_lease_seconds=LEASE_SECONDS,
        shard_deadline_seconds=int(PATIENCE),
        batch_size=5,
    )
    assert stack.home is not None
    with (
        temporary_settings({**stack.client_settings(), PREFECT_HOME: str(stack.home)}),
        use_app(build_app(settings)) as built,
    ):
        yield built
        APILogWorker.drain_all(timeout=5)
        built.ledger.engine.dispose()


def _wait_for(what: str, check: Callable[[], Any], timeout: float = PATIENCE) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}")


def _asks(ledger: SqlLedger, contacts: list[str]) -> dict[str, str]:
    with ledger.engine.connect() as conn:
        rows = conn.execute(
            select(T_ASKS.c.ask_id, T_ASKS.c.status).where(T_ASKS.c.contact_id.in_(contacts))
        )
        return {r.ask_id: r.status for r in rows}


def _unsharded_outcome(
    tmp_path: Path, sqlite_template: Path, program: Program, contacts: list[str]
) -> tuple[dict[str, str], list[str]]:
    """What sending the same queued asks in one run does: each ask's status, and the
    message ids sent (on a SQLite twin of the ledger, with a recording sender)."""
    path = tmp_path / "twin.db"
    shutil.copy(sqlite_template, path)
    twin = SqlLedger(make_engine(f"sqlite:///{path}"))
    try:
        queue_asks(twin, program, contacts, NOW)
        sender = RecordingEmailSender()
        send_ask_emails.fn(twin, sender, program, NOW, batch_size=5)
        return _asks(twin, contacts), sorted(m.message_id for m in sender.sent)
    finally:
        twin.engine.dispose()


def _runs(ledger: SqlLedger) -> set[str]:
    with ledger.engine.connect() as conn:
        return set(conn.execute(select(T_SHARDS.c.run_key).distinct()).scalars())


def _shards_of_new_run(ledger: SqlLedger, before: set[str]) -> list[ShardState]:
    (key,) = _runs(ledger) - before
    return ledger.shards.shards(key)


def _sent_ids(sendgrid: FakeSendGrid) -> list[str]:
    return [d.custom_args["message_id"] for d in sendgrid.delivered]


def test_four_shards_on_two_workers_send_what_one_run_sends_each_ask_once(
    app: App,
    sendgrid: FakeSendGrid,
    program: Program,
    tmp_path: Path,
    sqlite_template: Path,
) -> None:
    contacts = [f"A{i:03d}" for i in range(40)]
    queue_asks(app.ledger, program, contacts, NOW)
    before = _runs(app.ledger)

    result = send_asks(as_of=NOW)

    statuses, sent = _unsharded_outcome(tmp_path, sqlite_template, program, contacts)
    assert _asks(app.ledger, contacts) == statuses
    assert set(statuses.values()) == {"accepted"}
    assert sorted(_sent_ids(sendgrid)) == sent  # each ask once: none twice, none missing
    shards = _shards_of_new_run(app.ledger, before)
    assert [(s.shard, s.done, s.attempts) for s in shards] == [(i, True, 1) for i in range(SHARDS)]
    assert sum(s.outcome["accepted"] for s in shards) == len(contacts)
    assert result["delivery"]["accepted"] == len(contacts)


def test_a_shard_held_by_a_killed_worker_is_taken_over_after_its_lease_and_done_once(
    app: App, stack: LocalStack, sendgrid: FakeSendGrid, program: Program
) -> None:
    contacts = [f"B{i:03d}" for i in range(40)]
    queue_asks(app.ledger, program, contacts, NOW)
    already_sent = len(sendgrid.delivered)
    before = _runs(app.ledger)
    worker_pids = {stack.running(name) for name in WORKERS}
    assert None not in worker_pids, "both workers run"

    # Shard runs claim their shard, then wait at their first write to asks.
    blocker = app.ledger.engine.connect()
    blocker.begin()
    blocker.execute(text("LOCK TABLE asks IN EXCLUSIVE MODE"))
    outcome: dict[str, Any] = {}
    # The stage runs beside the test, with the test's Prefect settings (context vars,
    # which a new thread does not inherit: it would start a server of its own).
    context = contextvars.copy_context()
    stage = threading.Thread(
        target=lambda: outcome.update(result=context.run(send_asks, as_of=NOW)),
        name="send-asks",
    )
    try:
        stage.start()

        def a_held_shard() -> ShardState | None:
            new = _runs(app.ledger) - before
            if not new:
                return None
            held = [s for s in app.ledger.shards.shards(next(iter(new))) if s.claimed_by]
            return held[0] if held else None

        victim = _wait_for("a worker to claim a shard", a_held_shard)
        assert victim.claimed_by is not None
        pid = int(victim.claimed_by.split(":")[1])
        group = os.getpgid(pid)
        assert group in worker_pids, "the shard runs inside a worker's process group"
        os.killpg(group, signal.SIGKILL)
    finally:
        blocker.rollback()
        blocker.close()
    stage.join(timeout=PATIENCE)
    assert not stage.is_alive(), "the sharded stage finished"

    shards = _shards_of_new_run(app.ledger, before)
    assert all(s.done for s in shards)
    taken = shards[victim.shard]
    assert taken.attempts >= 2
    assert taken.claimed_by != victim.claimed_by
    assert set(_asks(app.ledger, contacts).values()) == {"accepted"}
    new_sends = _sent_ids(sendgrid)[already_sent:]
    assert sorted(new_sends) == sorted(_asks(app.ledger, contacts))  # each exactly once
    assert outcome["result"]["delivery"]["shards_taken_over"] >= 1
