"""The cycle's stage subflows beat under their parent's heartbeat, not their own."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from prefect import flow
from prefect.context import FlowRunContext
from prefect.flow_engine import BaseFlowRunEngine
from prefect.settings import (
    PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
    get_current_settings,
    temporary_settings,
)

from flows.subflows import stage_subflows


@pytest.fixture
def heartbeats(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The flow runs that sent a heartbeat, with heartbeats on as in production (the
    tests turn them off for speed)."""
    beat: list[str] = []
    lock = threading.Lock()

    def record(self: BaseFlowRunEngine[..., object], *args: object, **kwargs: object) -> None:
        with lock:
            beat.append(str(self.flow_run.id) if self.flow_run else "?")

    monkeypatch.setattr(BaseFlowRunEngine, "_emit_flow_run_heartbeat", record)
    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: 30}):
        yield beat


def _run_id() -> str:
    context = FlowRunContext.get()
    assert context is not None
    assert context.flow_run is not None
    return str(context.flow_run.id)


@flow(name="stage-stand-in")
def stage() -> tuple[str, int | None]:
    """The run's id, and the heartbeat interval its engine read when it started."""
    return _run_id(), get_current_settings().flows.heartbeat_frequency


@flow(name="cycle-stand-in")
def cycle() -> dict[str, tuple[str, int | None]]:
    with stage_subflows():
        stages = [stage(), stage()]
    after = stage()
    return {"parent": (_run_id(), None), "stage": stages[0], "other": stages[1], "after": after}


def test_stages_run_inside_the_block_send_no_heartbeat_while_their_parent_keeps_its_own(
    heartbeats: list[str],
) -> None:
    runs = cycle()

    assert runs["parent"][0] in heartbeats
    for name in ("stage", "other"):
        run_id, every = runs[name]
        assert every is None
        assert run_id not in heartbeats
    # Outside the block a subflow is as Prefect makes it: a heartbeat of its own.
    assert runs["after"][1] == 30
