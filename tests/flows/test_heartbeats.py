"""Flow run heartbeats: still sent, and their thread stops with the run, not a second later."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import prefect
import pytest
from prefect import flow, flow_engine
from prefect.flow_engine import BaseFlowRunEngine
from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

import flows.cycle  # noqa: F401  (installs the heartbeats, as every cycle process does)
from flows import heartbeats


@pytest.fixture
def beats(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[threading.Thread]]:
    """The threads that sent a heartbeat, with heartbeats on as in production."""
    threads: list[threading.Thread] = []

    def record(self: BaseFlowRunEngine[..., object], *args: object, **kwargs: object) -> None:
        threads.append(threading.current_thread())

    monkeypatch.setattr(BaseFlowRunEngine, "_emit_flow_run_heartbeat", record)
    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: 30}):
        yield threads


@flow(name="heartbeat-stand-in")
def beating() -> int:
    return 1


def test_the_cycle_processes_use_these_heartbeats_on_the_prefect_they_were_written_for() -> None:
    # A Prefect upgrade fails here: check flow_engine._send_heartbeats against this copy.
    assert prefect.__version__ == heartbeats.PREFECT_VERSION
    assert flow_engine._send_heartbeats is heartbeats.send_heartbeats


def test_a_flow_run_still_beats_and_its_heartbeat_thread_never_sleeps(
    beats: list[threading.Thread], monkeypatch: pytest.MonkeyPatch
) -> None:
    slept: list[threading.Thread] = []
    sleep = time.sleep

    def recording_sleep(seconds: float) -> None:
        slept.append(threading.current_thread())
        sleep(seconds)

    monkeypatch.setattr(time, "sleep", recording_sleep)

    assert beating() == 1

    assert len(beats) == 1, "one heartbeat at the start of the run"
    thread = beats[0]
    assert not thread.is_alive()
    assert thread not in slept, "it waits on its stop event, which the run's end sets"


def test_without_a_heartbeat_interval_no_thread_beats(beats: list[threading.Thread]) -> None:
    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        beating()

    assert beats == []


def test_a_failed_run_stops_its_heartbeat_too(beats: list[threading.Thread]) -> None:
    @flow(name="failing-heartbeat-stand-in")
    def failing() -> Any:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        failing()

    assert len(beats) == 1
    assert not beats[0].is_alive()
