"""The cycle's stage subflows, run on one shared client, still appear as runs on the server."""

from __future__ import annotations

import time
from typing import Any
from uuid import UUID

import pytest
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.filters import FlowRunFilter, TaskRunFilter
from prefect.context import FlowRunContext
from prefect.events.worker import EventsWorker

from flows.subflows import stage_subflows


@task(name="stage-work", cache_policy=NO_CACHE)
def work() -> int:
    return 1


def _run_id() -> str:
    context = FlowRunContext.get()
    assert context is not None
    assert context.flow_run is not None
    return str(context.flow_run.id)


@flow(name="stage-stand-in")
def stage() -> str:
    work()
    return _run_id()


@flow(name="cycle-stand-in")
def cycle() -> dict[str, Any]:
    with stage_subflows():
        stages = [stage(), stage(), stage()]
    return {"parent": _run_id(), "stages": stages}


def _task_runs(flow_run_id: str, expected: int) -> list[Any]:
    """The flow run's task runs on the server, once the server has recorded them all
    in a final state (task runs reach it as events, recorded in the background)."""
    EventsWorker.drain_all(timeout=5)
    deadline = time.monotonic() + 30
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id={"any_": [UUID(flow_run_id)]})
            )
            done = len(runs) >= expected and all(r.state and r.state.is_final() for r in runs)
            if done or time.monotonic() > deadline:
                return runs
            time.sleep(0.2)


def test_stage_runs_appear_under_their_parent_with_their_tasks_and_states() -> None:
    runs = cycle()

    with get_client(sync_client=True) as client:
        children = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(id={"any_": [UUID(r) for r in runs["stages"]]})
        )
        trackers = client.read_task_runs(
            task_run_filter=TaskRunFilter(
                id={"any_": [c.parent_task_run_id for c in children if c.parent_task_run_id]}
            )
        )
    assert len(children) == 3
    assert all(c.state is not None and c.state.is_completed() for c in children)
    # Each stage run hangs under its own tracking task run of the parent, as in the UI.
    assert len(trackers) == 3
    assert {str(t.flow_run_id) for t in trackers} == {runs["parent"]}
    for stage_run in runs["stages"]:
        tasks = _task_runs(stage_run, expected=1)
        assert [t.name.split("-")[:2] for t in tasks] == [["stage", "work"]]
        assert all(t.state is not None and t.state.is_completed() for t in tasks)


def test_the_stages_tracking_task_runs_share_one_client(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[PrefectClient] = []
    original = PrefectClient.__init__

    def counted(self: PrefectClient, *args: Any, **kwargs: Any) -> None:
        made.append(self)
        original(self, *args, **kwargs)

    cycle()  # Prefect's log and event workers make their clients once per process
    monkeypatch.setattr(PrefectClient, "__init__", counted)

    cycle()

    # Without the block Prefect builds (and loads the CA bundle for) one per stage run.
    assert len(made) == 1
