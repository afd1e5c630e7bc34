"""A flow that cannot start says why in its state message and logs one traceback.

The flow builds its adapters from the environment (no test app in place), as a
worker's flow run process does; the inbox path points at a file.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactCollectionFilter,
    ArtifactCollectionFilterKey,
)
from prefect.flow_engine import run_flow
from prefect.logging.loggers import flow_run_logger

from flows import bootstrap
from flows.bootstrap import STARTUP_ERROR_ARTIFACT as KEY
from flows.cycle import detect_moments


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def inbox_is_a_file(sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    inbox = tmp_path / "inbox"
    inbox.write_text("a file, not a folder", encoding="utf-8")
    monkeypatch.setenv("REFERRALS_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("REFERRALS_INBOX_DIR", str(inbox))
    monkeypatch.setattr(bootstrap, "_current", None)
    return f"REFERRALS_INBOX_DIR ({inbox}) is not a folder: it is a file"


@pytest.fixture
def run_logs() -> Iterator[list[logging.LogRecord]]:
    handler = _Records()
    loggers = [logging.getLogger(name) for name in ("prefect.flow_runs", "prefect.task_runs")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    yield handler.records
    for logger, level in zip(loggers, levels, strict=True):
        logger.removeHandler(handler)
        logger.setLevel(level)


def test_a_flow_that_cannot_start_fails_with_the_one_line_cause_as_its_message(
    inbox_is_a_file: str,
) -> None:
    state = detect_moments(return_state=True)

    assert state.is_failed()
    assert state.message == inbox_is_a_file
    # On-call finds the same line as the flow's latest startup-error artifact.
    with get_client(sync_client=True) as client:
        (artifact,) = client.read_latest_artifacts(
            artifact_filter=ArtifactCollectionFilter(key=ArtifactCollectionFilterKey(any_=[KEY]))
        )
    assert inbox_is_a_file in str(artifact.data)


def test_a_flow_run_by_a_worker_that_fails_logs_its_traceback_once(
    inbox_is_a_file: str, run_logs: list[logging.LogRecord]
) -> None:
    # As prefect.engine runs a worker's flow run: a created run, and its error logger.
    with get_client(sync_client=True) as client:
        flow_run = client.create_flow_run(detect_moments)
    # prefect.engine passes this same adapter, though run_flow is typed for a Logger.
    error_logger: Any = flow_run_logger(flow_run)
    with pytest.raises(Exception, match="is not a folder"):
        run_flow(detect_moments, flow_run=flow_run, error_logger=error_logger)

    # The cause once at ERROR, in one line; its traceback once, at DEBUG.
    errors = [r for r in run_logs if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in errors if "cannot start" in r.getMessage()] == [
        f"cannot start: {inbox_is_a_file}"
    ]
    with_traceback = [r for r in run_logs if r.exc_info]
    assert [r.levelno for r in with_traceback] == [logging.DEBUG]
