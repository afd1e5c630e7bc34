"""`referrals status` reads the last cycle and the day's failed runs from a real Prefect
API (the test harness's server)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from prefect import flow
from prefect.settings import PREFECT_API_URL

from flows.cli_status import CYCLE_FLOW, probe_server, read_runs


@flow(name=CYCLE_FLOW)
def a_cycle() -> str:
    return "done"


@flow(name="status-test-breaks")
def breaks() -> None:
    raise RuntimeError("the inbox is a file")


def test_status_reads_the_last_cycle_and_the_runs_that_failed_in_the_last_day() -> None:
    started = datetime.now(UTC)
    a_cycle()
    with pytest.raises(RuntimeError):
        breaks()

    runs = read_runs(started - timedelta(seconds=1), str(PREFECT_API_URL.value()), None)

    assert runs.last_cycle is not None
    assert runs.last_cycle.state == "Completed"
    assert runs.last_cycle.at is not None
    assert runs.last_cycle.at >= started - timedelta(seconds=5)
    assert "status-test-breaks" in {r.flow for r in runs.failed}
    assert CYCLE_FLOW not in {r.flow for r in runs.failed}


def test_runs_that_failed_before_the_window_are_not_counted() -> None:
    with pytest.raises(RuntimeError):
        breaks()

    runs = read_runs(datetime.now(UTC) + timedelta(minutes=1), str(PREFECT_API_URL.value()), None)

    assert runs.failed == []


def test_the_harness_server_answers_and_takes_our_calls() -> None:
    server = probe_server(str(PREFECT_API_URL.value()), None)

    assert (server.up, server.authenticated) == (True, True)


def test_a_port_nobody_listens_on_reads_as_down() -> None:
    server = probe_server("http://127.0.0.1:1/api", None)

    assert (server.up, server.authenticated) == (False, None)
