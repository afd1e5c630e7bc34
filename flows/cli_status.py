"""``referrals status``: the stack's health in one line per part, in plain words.

What an on-call engineer paged at night wants first: is the server up and does it let
us in, does the worker (which pays approved rewards) run, when did the last cycle run
and how did it end, how many rewards wait for a person and since when, and which runs
failed in the last day. Each probe answers for itself: one that cannot ask says so on
its line and the others still answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from domain.models import WaitingApproval
from domain.plain_words import age_words

#: The flow whose last run the status shows.
CYCLE_FLOW = "referral-cycle"


@dataclass(frozen=True)
class Server:
    """What the API answered: ``up`` to its health check; ``authenticated`` whether
    it took our credentials (None: not asked, the server being down)."""

    api_url: str
    up: bool
    authenticated: bool | None


@dataclass(frozen=True)
class RunSeen:
    """One flow run as the status shows it."""

    flow: str
    state: str
    at: datetime | None


@dataclass(frozen=True)
class Runs:
    """The last cycle run and the runs failed since a day ago (None: not known)."""

    last_cycle: RunSeen | None
    failed: Sequence[RunSeen]


def probe_server(api_url: str, auth_string: str | None) -> Server:
    """Ask the API's health check (open) and its version (behind basic auth)."""
    import httpx

    base = api_url.rstrip("/")
    try:
        up = httpx.get(f"{base}/health", timeout=3).status_code == 200
    except httpx.HTTPError:
        return Server(api_url, False, None)
    if not up:
        return Server(api_url, False, None)
    auth = tuple(auth_string.split(":", 1)) if auth_string and ":" in auth_string else None
    try:
        answer = httpx.get(f"{base}/admin/version", timeout=3, auth=auth)  # type: ignore[arg-type]
    except httpx.HTTPError:
        return Server(api_url, True, None)
    return Server(api_url, True, answer.status_code == 200)


def read_runs(since: datetime, api_url: str, auth_string: str | None) -> Runs:
    """The last referral-cycle run and the runs that failed or crashed after ``since``,
    from the Prefect API at ``api_url`` (named here: Prefect may have read its settings
    before the CLI found the stack)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterId,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterEndTime,
        FlowRunFilterStartTime,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    settings: dict[Any, Any] = {PREFECT_API_URL: api_url}
    if auth_string:
        settings[PREFECT_API_AUTH_STRING] = auth_string
    with temporary_settings(settings), get_client(sync_client=True) as client:
        cycles = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[CYCLE_FLOW])),
            # Started ones only: the schedule keeps the next runs waiting as Scheduled.
            flow_run_filter=FlowRunFilter(start_time=FlowRunFilterStartTime(is_null_=False)),
            sort=FlowRunSort.START_TIME_DESC,
            limit=1,
        )
        failed = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(
                    type=FlowRunFilterStateType(any_=[StateType.FAILED, StateType.CRASHED])
                ),
                end_time=FlowRunFilterEndTime(after_=since),
            ),
            sort=FlowRunSort.END_TIME_DESC,
            limit=200,
        )
        ids = list({r.flow_id for r in failed})
        names = (
            {
                f.id: f.name
                for f in client.read_flows(flow_filter=FlowFilter(id=FlowFilterId(any_=ids)))
            }
            if ids
            else {}
        )
    last = cycles[0] if cycles else None
    return Runs(
        last_cycle=(
            RunSeen(
                CYCLE_FLOW,
                last.state_name or "unknown",
                last.start_time or last.expected_start_time,
            )
            if last is not None
            else None
        ),
        failed=[
            RunSeen(names.get(r.flow_id, "?"), r.state_name or "Failed", r.end_time) for r in failed
        ],
    )


def _when(at: datetime | None, now: datetime) -> str:
    if at is None:
        return "not started"
    return f"{at:%Y-%m-%d %H:%M} UTC ({age_words(now - at)} ago)"


def status_lines(
    server: Server,
    worker_pid: int | None,
    recorded_worker_pid: int | None,
    runs: Runs | str,
    waiting: Sequence[WaitingApproval] | str,
    now: datetime,
    listener_pid: int | None = None,
    recorded_listener_pid: int | None = None,
) -> list[str]:
    """One line per part of the stack, in plain words.

    Args:
        server: what the API answered.
        worker_pid: the worker's PID when it is alive.
        recorded_worker_pid: the PID ``up`` recorded for it, alive or not.
        runs: the runs seen, or why they could not be read.
        waiting: the rewards waiting for a person, or why they could not be read.
        now: ages are measured from it.
        listener_pid: the approval listener's PID when it is alive.
        recorded_listener_pid: the PID ``up`` recorded for it, alive or not.
    """
    if not server.up:
        server_line = f"server: down (no answer at {server.api_url}); start it with `make up`"
    elif server.authenticated:
        server_line = f"server: up at {server.api_url}, authenticated"
    elif server.authenticated is None:
        server_line = f"server: up at {server.api_url}, but did not answer an authenticated call"
    else:
        server_line = (
            f"server: up at {server.api_url}, but it refuses our credentials "
            "(PREFECT_API_AUTH_STRING or the stack's .prefect/api-auth)"
        )
    if worker_pid is not None:
        worker_line = f"worker: running (PID {worker_pid})"
    elif recorded_worker_pid is not None:
        worker_line = (
            f"worker: not running (PID {recorded_worker_pid} is gone): approved rewards are "
            "not paid until `make up` starts it again"
        )
    else:
        worker_line = "worker: not running (none started by `make up` here)"
    if listener_pid is not None:
        listener_line = f"approval listener: running (PID {listener_pid})"
    else:
        # Not a failure: each resumed run applies its answer itself, only later.
        gone = (
            f"PID {recorded_listener_pid} is gone"
            if recorded_listener_pid is not None
            else "none started by `make up` here"
        )
        listener_line = (
            f"approval listener: not running ({gone}): approvals are paid when the worker "
            "starts the resumed run, seconds later"
        )
    if isinstance(runs, str):
        cycle_line = f"last cycle: unknown ({runs})"
        failed_line = f"failed runs in the last day: unknown ({runs})"
    else:
        last = runs.last_cycle
        cycle_line = (
            "last cycle: never run"
            if last is None
            else f"last cycle: {_when(last.at, now)}, {last.state}"
        )
        flows = sorted({r.flow for r in runs.failed})
        failed_line = f"failed runs in the last day: {len(runs.failed)}" + (
            f" ({', '.join(flows)})" if flows else ""
        )
    if isinstance(waiting, str):
        waiting_line = f"waiting approvals: unknown ({waiting})"
    elif not waiting:
        waiting_line = "waiting approvals: none"
    else:
        oldest = min(w.waiting_since for w in waiting)
        waiting_line = (
            f"waiting approvals: {len(waiting)}, the oldest waiting {age_words(now - oldest)}"
        )
    return [server_line, worker_line, listener_line, cycle_line, waiting_line, failed_line]


def healthy(server: Server, worker_pid: int | None, local: bool = True) -> bool:
    """Whether the parts that move money are running: the server and, for the stack
    `make up` started here (``local``), its worker."""
    return server.up and bool(server.authenticated) and (worker_pid is not None or not local)
