"""The use case recording a batch of ask decisions, on the in-memory ledger: one unit
of work that mints codes, queues asks and closes moments, or leaves nothing behind."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from domain.models import AskDecision, Moment, MomentType, SkipReason
from integrations.ledger.memory import InMemoryLedger
from tasks.use_cases.asks import record_ask_decisions

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


class Boom(Exception):
    pass


def _ledger_with(*moments: Moment) -> InMemoryLedger:
    ledger = InMemoryLedger()
    for moment in moments:
        ledger.asks.moments[moment.moment_id] = (moment, "new")
    return ledger


def _moment(moment_id: str, contact_id: str) -> Moment:
    return Moment(moment_id, MomentType.RENEWAL, contact_id, None, NOW, moment_id, "renewed")


def test_asks_carry_the_code_the_ledger_holds_and_skips_close_with_their_reason() -> None:
    asked, again, skipped = _moment("m1", "C1"), _moment("m2", "C1"), _moment("m3", "C2")
    ledger = _ledger_with(asked, again, skipped)
    ledger.asks.codes["C1"] = "HELD"
    decisions = [
        AskDecision(asked),
        AskDecision(again, SkipReason.ANOTHER_MOMENT_THIS_RUN),
        AskDecision(skipped, SkipReason.OPTED_OUT),
    ]

    asks = record_ask_decisions(ledger, decisions, {"C1": "MINTED"}, NOW - timedelta(hours=1), NOW)

    assert [(a.moment_id, a.referral_code) for a in asks] == [("m1", "HELD")]
    assert ledger.committed == 1
    assert [name for name, _ in ledger.asks.calls] == [
        "add_codes",
        "codes_for",
        "queue_asks",
        "close_moments",
    ]
    assert {m: status for m, (_, status) in ledger.asks.moments.items()} == {
        "m1": "asked",
        "m2": "skipped",
        "m3": "skipped",
    }
    assert ledger.asks.skip_reasons == {
        "m1": None,
        "m2": "another_moment_this_run",
        "m3": "opted_out",
    }
    (queued,) = ledger.asks.asks.values()
    assert queued[1] == NOW - timedelta(hours=1)  # dated by the decision's time


def test_a_batch_that_fails_half_way_keeps_no_code_and_no_ask(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    moment = _moment("m1", "C1")
    ledger = _ledger_with(moment)

    def fail(*_: object) -> None:
        raise Boom

    monkeypatch.setattr(ledger.asks, "close_moments", fail)
    with pytest.raises(Boom):
        record_ask_decisions(ledger, [AskDecision(moment)], {"C1": "MINTED"}, NOW, NOW)

    assert ledger.rolled_back == 1
    assert ledger.asks.codes == {}
    assert ledger.asks.asks == {}
    assert ledger.asks.moments["m1"][1] == "new"
