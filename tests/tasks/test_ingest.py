"""Reading sources: every record accounted for; only passing failures are retried."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from prefect.client.schemas.objects import State
from prefect.states import Completed, Failed

from domain.errors import PermanentIntegrationError, RetryableIntegrationError
from domain.ports import SourceBatch
from integrations.ledger.sql import SqlLedger
from integrations.sources.files import FileSource
from tasks.ingest import UnbalancedIngest, _worth_retrying, ingest_sources
from tests.conftest import NOW


class _Lossy:
    """A source whose counts do not add up: one record vanished."""

    name = "lossy"

    def fetch(self, cursor: str | None) -> SourceBatch:
        return SourceBatch(source=self.name, records_in=1)


def test_reading_a_drop_twice_stores_its_events_once(
    sqlite_ledger: SqlLedger, tmp_path: Path
) -> None:
    (tmp_path / "events.csv").write_text(
        "event_id,type,occurred_at,account_id,contact_id,score\n"
        "E1,nps_response,2026-10-01T10:00:00Z,A1,C1,10\n"
        "E2,nps_response,not-a-date,A1,C1,9\n"
    )
    source = FileSource(tmp_path)
    (first,) = ingest_sources.fn([source], sqlite_ledger, NOW)
    (second,) = ingest_sources.fn([source], sqlite_ledger, NOW)
    assert (first.records_in, first.new_events, first.quarantined) == (2, 1, 1)
    assert second.records_in == 0  # unchanged file: not read again
    assert sqlite_ledger.metrics.summary()["events"] == 1


def test_a_source_whose_counts_do_not_add_up_stops_the_run(sqlite_ledger: SqlLedger) -> None:
    with pytest.raises(UnbalancedIngest, match="lossy"):
        ingest_sources.fn([_Lossy()], sqlite_ledger, NOW)


def test_a_refusal_by_the_provider_is_not_retried_but_a_passing_failure_is() -> None:
    refused: State[Any] = Failed(data=PermanentIntegrationError("401: bad token"))
    passing: State[Any] = Failed(data=RetryableIntegrationError("503"))
    assert _worth_retrying(None, None, refused) is False
    assert _worth_retrying(None, None, passing) is True
    assert _worth_retrying(None, None, Completed()) is False
