"""Stages spread over workers as shards (issue 17).

With ``REFERRALS_SHARDS`` = N > 1, a sharded stage does not do its work in its own run:
:func:`run_stage_sharded` opens N shards of the stage run, submits one ``run-shard``
deployment run per shard on the work pool, and waits (watching the shard table) until
every shard is done, submitting again any shard whose lease ran out unfinished. Each
:func:`run_shard` run claims its shard, does the stage's work on the shard's rows only,
and marks the shard done. With N = 1 nothing here runs.

Sharded today, both keyed by the contact id:

* ``send-ask-emails``: sending the queued asks (the send-asks stage's delivery);
* ``send-notifications``: sending the referrer notifications (notify-referrers').

Their work is per row exactly once by itself: a message is claimed (``sending``) before
the provider call, and only a ``queued`` one can be. A shard's work therefore needs no
transaction with its done mark: a shard taken over after its worker died sends only
what the dead worker had not claimed, and what it had claimed but not settled becomes
``unknown`` after 30 minutes, never sent twice (as without shards).
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

from prefect import flow
from prefect.context import get_run_context

from domain.shards import Shard, run_key, worker_identity
from flows import bootstrap
from flows.bootstrap import App
from tasks.emails import send_ask_emails, send_notifications
from tasks.shards import claim_shard, complete_shard, lease_kept, run_sharded


def _send_ask_emails(app: App, shard: Shard | None, now: datetime) -> Mapping[str, int]:
    return asdict(
        send_ask_emails(
            app.ledger,
            app.email,
            app.program,
            now,
            app.settings.batch_size,
            app.page_links,
            shard=shard,
        )
    )


def _send_notifications(app: App, shard: Shard | None, now: datetime) -> Mapping[str, int]:
    return asdict(
        send_notifications(
            app.ledger,
            app.email,
            app.program,
            now,
            app.settings.batch_size,
            app.page_links,
            payout_rails=frozenset(app.rails) if app.connect is not None else None,
            shard=shard,
        )
    )


#: The work of each sharded stage on one shard; it returns counts (added up over shards).
SHARD_WORK: dict[str, Callable[[App, Shard | None, datetime], Mapping[str, int]]] = {
    "send-ask-emails": _send_ask_emails,
    "send-notifications": _send_notifications,
}


def deliver(app: App, stage: str, now: datetime) -> dict[str, int]:
    """A sharded stage's work: spread over the workers when ``REFERRALS_SHARDS`` > 1,
    else done here, in this run, on every row (shard ``None``)."""
    if app.settings.shards > 1:
        return run_stage_sharded(app, stage, now)
    return dict(SHARD_WORK[stage](app, None, now))


def _run_id() -> str | None:
    flow_run = getattr(get_run_context(), "flow_run", None)
    return str(flow_run.id) if flow_run is not None else None


def _aware(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@flow(name="run-shard")
@bootstrap.one_line_failure
def run_shard(stage: str, key: str, shard: int, of_shards: int, now: datetime) -> dict[str, Any]:
    """Do one shard of a stage run, unless it is done or another worker holds it.

    Args:
        stage: which stage's work (``send-ask-emails``, ``send-notifications``).
        key: the stage run's key (its shards' rows in the shard table).
        shard: this shard's number, from 0.
        of_shards: how many shards the stage run has.
        now: the stage's time, as its work records it.

    Returns:
        The shard's outcome (counts) and whether this run marked it done; ``skipped``
        when it had nothing to do.
    """
    if stage not in SHARD_WORK:
        raise ValueError(f"no sharded stage {stage!r}; known: {', '.join(sorted(SHARD_WORK))}")
    app = bootstrap.app()
    part = Shard(shard, of_shards)
    worker = worker_identity(socket.gethostname(), os.getpid(), _run_id() or "")
    lease = timedelta(seconds=app.settings.shard_lease_seconds)
    state = claim_shard(app.ledger.shards, key, part, worker, datetime.now(UTC), lease)
    if state is None:
        return {"shard": shard, "skipped": "done, or held by another worker"}
    with lease_kept(app.ledger.shards, key, part, worker, lease):
        outcome = SHARD_WORK[stage](app, part, _aware(now))
    marked = complete_shard(app.ledger.shards, key, part, worker, datetime.now(UTC), outcome)
    return {"shard": shard, "outcome": dict(outcome), "completed": marked}


def run_stage_sharded(app: App, stage: str, now: datetime) -> dict[str, int]:
    """Run ``stage`` as ``app.settings.shards`` shard runs and wait for all of them.

    The stage run's key is the calling flow run's id: a retry of that run finds its
    shards and does not redo those done.

    Returns:
        The shards' outcomes added up (the same counts the unsharded stage reports),
        with ``shard_runs`` and ``shards_taken_over``.
    """
    if stage not in SHARD_WORK:
        raise ValueError(f"no sharded stage {stage!r}")
    if app.shard_runs is None:
        raise ValueError("sharded stages need shard runs (App.shard_runs)")
    settings = app.settings
    return run_sharded(
        app.ledger.shards,
        app.shard_runs,
        stage,
        run_key(stage, _run_id() or f"local-{uuid.uuid4()}"),
        settings.shards,
        now,
        timedelta(seconds=settings.shard_lease_seconds),
        timedelta(seconds=settings.shard_deadline_seconds),
    )
