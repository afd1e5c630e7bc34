"""SqlLedger, stage by stage, on SQLite and (with REFERRALS_TEST_POSTGRES_URL) Postgres.

Every write the referral cycle makes must be safe to repeat: a re-run lands on the same
rows, books no money twice and sends nothing twice. Test data is built through the
ledger's own methods; the few raw reads look at what the database holds.

The helpers at the top (``given_referrer``, ``given_reward``, ``pay`` ...) are shared with
``test_ledger_constraints`` and ``test_ledger_concurrency``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event as sa_event
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from domain.approvals import CheckedDecision
from domain.errors import DecisionConflict, InvalidDecision
from domain.models import (
    MAX_PAYOUT_ATTEMPTS,
    AskDecision,
    Conversion,
    Decision,
    EmailOutcome,
    EmailResult,
    EventType,
    Milestone,
    Moment,
    MomentType,
    PayoutInstruction,
    PayoutOutcome,
    PayoutRailKind,
    PayoutResult,
    Rejected,
    Reward,
    RewardStatus,
    SkipReason,
    SourceEvent,
    derived_id,
)
from domain.money import Money
from domain.ports import SourceBatch
from integrations.ledger.sql import SqlLedger
from integrations.ledger.tables import (
    ApprovalDecisionRow,
    ApprovalRequestRow,
    AskRow,
    LedgerEntryRow,
    NotificationRow,
    PayoutRow,
    QuarantineRow,
    RewardRow,
)
from tasks.use_cases.approvals import record_decision
from tasks.use_cases.asks import record_ask_decisions
from tests.conftest import contact, people_batch
from tests.moments_seed import record_detection, undetected_events

RULE = "customer-flat"
LEDGER = PayoutRailKind.LEDGER_ONLY


# -- helpers (shared with the other ledger test modules) ---------------------------------


def event(
    event_id: str,
    type_: EventType = EventType.DEAL_WON,
    *,
    at: datetime,
    contact_id: str | None = "C1",
    account_id: str | None = "A1",
    **extra: Any,
) -> SourceEvent:
    return SourceEvent(
        source="test",
        event_id=event_id,
        type=type_,
        occurred_at=at,
        account_id=account_id,
        contact_id=contact_id,
        **extra,
    )


def events_batch(
    *events: SourceEvent, rejected: Sequence[Rejected] = (), cursor: str | None = None
) -> SourceBatch:
    return SourceBatch(
        source="test",
        events=list(events),
        rejected=list(rejected),
        records_in=len(events) + len(rejected),
        cursor=cursor,
    )


def given_referrer(ledger: SqlLedger, now: datetime, contact_id: str = "C1") -> str:
    """A known contact holding a referral code; returns the code (minted once)."""
    ledger.sources.record_batch(people_batch(contact(contact_id, f"A-{contact_id}")), now)
    record_ask_decisions(ledger, [], {contact_id: f"CODE-{contact_id}"}, now, now)
    return ledger.asks.codes_for([contact_id])[contact_id]


def conversion_for(code: str, referrer: str, n: int, now: datetime) -> Conversion:
    key = f"test:deal-{referrer}-{n}"
    return Conversion(
        conversion_id=derived_id("conversion", key),
        source_event=key,
        referral_code=code,
        referrer_id=referrer,
        referee_account_id=f"NEW-{referrer}-{n}",
        referee_contact_id=None,
        milestone=Milestone.CUSTOMER,
        occurred_at=now,
        amount=Money(1_200_000, "EUR"),
    )


def reward_for(conv: Conversion, amount_minor: int, now: datetime) -> Reward:
    return Reward(
        reward_id=Reward.derive_id(conv.conversion_id, RULE, conv.referrer_id),
        conversion_id=conv.conversion_id,
        rule_id=RULE,
        referrer_id=conv.referrer_id,
        amount=Money(amount_minor, "EUR"),
        milestone=conv.milestone,
        attribution_model="last_touch",
        payable_at=now,
        explanation="flat reward for a new customer",
    )


def given_reward(
    ledger: SqlLedger,
    now: datetime,
    n: int = 1,
    *,
    amount_minor: int = 10_000,
    status: RewardStatus = RewardStatus.PAYABLE,
    referrer: str = "C1",
) -> Reward:
    """A converted referral with its reward accrued and moved to ``status``."""
    code = given_referrer(ledger, now, referrer)
    conv = conversion_for(code, referrer, n, now)
    ledger.conversions.record_conversions([], [conv], [], now)
    reward = reward_for(conv, amount_minor, now)
    ledger.rewards.record([conv.conversion_id], [reward], [], now)
    if status in DECIDED:
        # The database moves a reward to approved or rejected only on a recorded
        # decision, as the approval flow does: awaiting approval first, then decided.
        ledger.rewards.move(
            [reward.reward_id], [RewardStatus.HOLDING], RewardStatus.AWAITING_APPROVAL, now
        )
        checked = decide(DECIDED[status], amount_minor=amount_minor)
        record_decision(ledger, reward.reward_id, 1, checked, 1, None, now)
    elif status is RewardStatus.PAID:
        # Paid from payable (as a balance netted away entirely is), never from holding.
        ledger.rewards.move([reward.reward_id], [RewardStatus.HOLDING], RewardStatus.PAYABLE, now)
        ledger.rewards.move([reward.reward_id], [RewardStatus.PAYABLE], status, now)
    elif status is not RewardStatus.HOLDING:
        ledger.rewards.move([reward.reward_id], [RewardStatus.HOLDING], status, now)
    return reward


DECIDED = {RewardStatus.APPROVED: Decision.APPROVE, RewardStatus.REJECTED: Decision.REJECT}


def pay(
    ledger: SqlLedger,
    reward_ids: Sequence[str],
    now: datetime,
    outcome: PayoutOutcome = PayoutOutcome.SUCCEEDED,
) -> list[PayoutInstruction]:
    """Prepare payouts for ``reward_ids`` and settle each with ``outcome``."""
    instructions = ledger.payouts.prepare([(r, LEDGER, None) for r in reward_ids], now)
    ledger.payouts.record_results(
        [
            PayoutResult(i.payout_id, outcome, provider_ref=f"ref-{i.payout_id[:8]}", error=None)
            for i in instructions
        ],
        now,
    )
    return instructions


def decide(
    decision: Decision = Decision.APPROVE,
    approver: str = "Ann Approver",
    amount_minor: int = 10_000,
    reason: str = "looks right",
) -> CheckedDecision:
    return CheckedDecision(
        decision=decision,
        approver_id=approver.lower().replace(" ", "."),
        approver=approver,
        reason=reason,
        amount=Money(amount_minor, "EUR"),
    )


def entries(ledger: SqlLedger, reward_id: str) -> list[tuple[str, int]]:
    with ledger.engine.connect() as conn:
        return [
            (kind, amount)
            for kind, amount in conn.execute(
                select(LedgerEntryRow.kind, LedgerEntryRow.amount_minor)
                .where(LedgerEntryRow.reward_id == reward_id)
                .order_by(LedgerEntryRow.entry_id)
            )
        ]


def payout_rows(ledger: SqlLedger, reward_id: str) -> list[dict[str, Any]]:
    with ledger.engine.connect() as conn:
        return [
            dict(r)
            for r in conn.execute(
                select(PayoutRow.__table__)
                .where(PayoutRow.reward_id == reward_id)
                .order_by(PayoutRow.attempt)
            ).mappings()
        ]


def notices(ledger: SqlLedger, kind: str) -> list[str | None]:
    """The reward ids of the notifications of ``kind``."""
    with ledger.engine.connect() as conn:
        return list(
            conn.execute(
                select(NotificationRow.reward_id)
                .where(NotificationRow.kind == kind)
                .order_by(NotificationRow.reward_id)
            ).scalars()
        )


def count(ledger: SqlLedger, row: Any, *where: Any) -> int:
    with ledger.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(row).where(*where)).scalar_one())


def balance(ledger: SqlLedger, reward_id: str) -> int:
    return ledger.rewards.of([reward_id])[reward_id].balance.amount_minor


def status(ledger: SqlLedger, reward_id: str) -> RewardStatus:
    return ledger.rewards.of([reward_id])[reward_id].status


# -- ingest ------------------------------------------------------------------------------


def test_recording_the_same_batch_twice_counts_its_events_as_already_seen(
    ledger: SqlLedger, now: datetime
) -> None:
    ledger.sources.record_batch(people_batch(contact("C1")), now)
    reject = Rejected("test", "events.csv:4", "occurred_at", "not a date", raw="e9,??")
    batch = events_batch(
        event("e1", at=now),
        event("e2", EventType.RENEWAL, at=now),
        rejected=[reject],
        cursor="after-e2",
    )

    first = ledger.sources.record_batch(batch, now)
    second = ledger.sources.record_batch(batch, now + timedelta(hours=1))

    assert (first.new_events, first.already_seen, first.quarantined) == (2, 0, 1)
    assert (second.new_events, second.already_seen, second.quarantined) == (0, 2, 1)
    assert first.balanced
    assert second.balanced
    assert ledger.sources.cursor("test") == "after-e2"
    assert len(undetected_events(ledger.engine, 0, 10)) == 2
    assert ledger.metrics.summary()["quarantine"] == {"ingest": 1}


def test_a_batch_that_fails_to_store_keeps_neither_its_events_nor_its_cursor(
    ledger: SqlLedger, now: datetime
) -> None:
    ledger.sources.record_batch(events_batch(event("e0", at=now), cursor="after-e0"), now)
    # A reject without a source breaks a NOT NULL column: the last write before the
    # cursor fails, after the events of the same batch were inserted.
    broken = Rejected(None, "events.csv:9", None, "bad row")  # type: ignore[arg-type]
    batch = events_batch(event("e1", at=now), rejected=[broken], cursor="after-e1")

    with pytest.raises(IntegrityError, match=r"(?i)not null|null value"):
        ledger.sources.record_batch(batch, now)

    assert ledger.sources.cursor("test") == "after-e0"
    assert [e.event_id for _, e in undetected_events(ledger.engine, 0, 10)] == ["e0"]
    # The next run reads the same batch again (fixed) and loses nothing.
    fixed = events_batch(event("e1", at=now), cursor="after-e1")
    assert ledger.sources.record_batch(fixed, now).new_events == 1
    assert ledger.sources.cursor("test") == "after-e1"


def test_quarantine_keeps_each_reject_once_without_exposing_its_raw_text(
    ledger: SqlLedger, now: datetime
) -> None:
    reject = Rejected("crm", "deal 17", "amount", "negative amount", raw="jane@example.com,-5")

    assert ledger.sources.quarantine([reject], "conversion", now) == 1
    assert ledger.sources.quarantine([reject], "conversion", now) == 0
    assert ledger.sources.quarantine([reject], "reward", now) == 1  # another stage refused it too

    assert ledger.sources.quarantined() == [
        {
            "stage": "conversion",
            "source": "crm",
            "record": "deal 17",
            "field": "amount",
            "reason": "negative amount",
        },
        {
            "stage": "reward",
            "source": "crm",
            "record": "deal 17",
            "field": "amount",
            "reason": "negative amount",
        },
    ]


# -- detection -----------------------------------------------------------------------------


def test_detection_examines_each_event_once_and_keeps_moments_and_detractors(
    ledger: SqlLedger, now: datetime
) -> None:
    ledger.sources.record_batch(people_batch(contact("C1")), now)
    won = event("e1", at=now)
    detractor = event("n1", EventType.NPS_RESPONSE, at=now, score=3)
    ticket = event("t1", EventType.TICKET_OPENED, at=now, ticket_id="T1", priority="high")
    ledger.sources.record_batch(events_batch(won, detractor, ticket), now)

    page = undetected_events(ledger.engine, 0, 2)
    rest = undetected_events(ledger.engine, page[-1][0], 10)
    assert [e.event_id for _, e in page] == ["e1", "n1"]
    assert [e.event_id for _, e in rest] == ["t1"]
    assert page[0][1] == won

    moment = Moment.from_event(MomentType.DEAL_WON, won, "C1", "won a deal")
    examined = [event_id for event_id, _ in page]
    assert record_detection(ledger.engine, examined, [moment], [detractor], now) == 1
    assert record_detection(ledger.engine, examined, [moment], [detractor], now) == 0

    assert [e.event_id for _, e in undetected_events(ledger.engine, 0, 10)] == ["t1"]
    assert ledger.asks.pending_moments(now, 10) == [moment]
    summary = ledger.metrics.summary()
    assert summary["moments"] == {"deal_won": 1}
    assert summary["follow_ups"] == 1
    assert summary["events"] == 3


# -- asks ----------------------------------------------------------------------------------


def given_moments(ledger: SqlLedger, now: datetime, contacts: Sequence[str]) -> list[Moment]:
    """One deal-won moment per entry of ``contacts`` (a contact may appear twice)."""
    ledger.sources.record_batch(
        people_batch(*(contact(c, f"A-{c}") for c in sorted(set(contacts)))), now
    )
    events = [
        event(f"m{i}", at=now - timedelta(minutes=len(contacts) - i), contact_id=c)
        for i, c in enumerate(contacts)
    ]
    ledger.sources.record_batch(events_batch(*events), now)
    moments = [Moment.from_event(MomentType.DEAL_WON, e, e.contact_id or "", "won") for e in events]
    ids = [event_id for event_id, _ in undetected_events(ledger.engine, 0, 100)]
    record_detection(ledger.engine, ids, moments, [], now)
    return moments


def test_a_code_is_minted_once_per_contact_even_when_two_batches_offer_different_codes(
    ledger: SqlLedger, now: datetime
) -> None:
    first_moment, second_moment, other = given_moments(ledger, now, ["C1", "C1", "C2"])

    first = record_ask_decisions(ledger, [AskDecision(first_moment)], {"C1": "CODE-A"}, now, now)
    # A second run that decided before the first committed proposes its own code.
    second = record_ask_decisions(
        ledger, [AskDecision(first_moment), AskDecision(second_moment)], {"C1": "CODE-B"}, now, now
    )
    third = record_ask_decisions(ledger, [AskDecision(other)], {"C2": "CODE-C"}, now, now)

    assert [(a.moment_id, a.referral_code) for a in first] == [(first_moment.moment_id, "CODE-A")]
    assert [(a.moment_id, a.referral_code) for a in second] == [(second_moment.moment_id, "CODE-A")]
    assert [a.referral_code for a in third] == ["CODE-C"]
    assert ledger.asks.codes_for(["C1", "C2"]) == {"C1": "CODE-A", "C2": "CODE-C"}
    assert ledger.conversions.code_owners(["CODE-A", "CODE-B"]).keys() == {"CODE-A"}


def test_asks_are_queued_once_per_moment_and_skipped_moments_are_closed_with_their_reason(
    ledger: SqlLedger, now: datetime
) -> None:
    asked, skipped = given_moments(ledger, now, ["C1", "C2"])
    decisions = [AskDecision(asked), AskDecision(skipped, SkipReason.COOLDOWN)]

    first = record_ask_decisions(ledger, decisions, {"C1": "CODE-1"}, now, now)
    again = record_ask_decisions(ledger, decisions, {"C1": "CODE-1"}, now, now)

    assert [a.ask_id for a in first] == [derived_id("ask", asked.moment_id)]
    assert again == []
    assert ledger.asks.pending_moments(now, 10) == []
    summary = ledger.metrics.summary()
    assert summary["asks"] == {"queued": 1}
    assert summary["skipped"] == {"cooldown": 1}
    assert ledger.asks.asked_contacts(now) == ["C1"]
    [(ask, who, detail)] = ledger.asks.asks_to_send("", 10)
    assert (ask, who.contact_id, detail) == (first[0], "C1", "won")


# -- email state machine -------------------------------------------------------------------


def given_asks(ledger: SqlLedger, now: datetime, n: int) -> list[str]:
    moments = given_moments(ledger, now, [f"C{i}" for i in range(1, n + 1)])
    codes = {m.contact_id: f"CODE-{m.contact_id}" for m in moments}
    asks = record_ask_decisions(ledger, [AskDecision(m) for m in moments], codes, now, now)
    return sorted(a.ask_id for a in asks)


def ask_states(ledger: SqlLedger) -> dict[str, tuple[str, datetime | None, str | None]]:
    with ledger.engine.connect() as conn:
        return {
            r.ask_id: (r.status, r.sent_at, r.error or r.provider_ref)
            for r in conn.execute(
                select(
                    AskRow.ask_id, AskRow.status, AskRow.sent_at, AskRow.error, AskRow.provider_ref
                )
            )
        }


def test_a_queued_message_is_claimed_for_sending_by_one_caller_only(
    ledger: SqlLedger, now: datetime
) -> None:
    ids = given_asks(ledger, now, 2)

    claimed = ledger.emails.mark_sending("ask", ids, now)
    claimed_again = ledger.emails.mark_sending("ask", ids, now + timedelta(seconds=1))

    assert sorted(claimed) == ids
    assert claimed_again == []
    assert {s for s, _, _ in ask_states(ledger).values()} == {"sending"}
    assert ledger.asks.asks_to_send("", 10) == []


def test_email_results_settle_only_messages_being_sent(ledger: SqlLedger, now: datetime) -> None:
    accepted, retried, failed = given_asks(ledger, now, 3)
    ledger.emails.mark_sending("ask", [accepted, retried, failed], now)
    later = now + timedelta(minutes=1)

    ledger.emails.record_email_results(
        "ask",
        [
            EmailResult(accepted, EmailOutcome.ACCEPTED, provider_ref="sg-1"),
            EmailResult(retried, EmailOutcome.RETRYABLE, error="429 slow down"),
            EmailResult(failed, EmailOutcome.FAILED, error="invalid address"),
        ],
        later,
    )
    # A late duplicate result for a settled message changes nothing.
    ledger.emails.record_email_results(
        "ask", [EmailResult(accepted, EmailOutcome.FAILED, error="late")], later
    )

    states = ask_states(ledger)
    assert states[accepted] == ("accepted", later, "sg-1")
    assert states[retried] == ("queued", None, "429 slow down")
    assert states[failed] == ("failed", None, "invalid address")
    assert ledger.emails.mark_sending("ask", [accepted, retried, failed], later) == [retried]


def test_a_message_left_sending_by_a_crash_expires_to_unknown_and_is_never_resent(
    ledger: SqlLedger, now: datetime
) -> None:
    [ask_id] = given_asks(ledger, now, 1)
    ledger.emails.mark_sending("ask", [ask_id], now)

    assert ledger.emails.expire_sending("ask", claimed_before=now) == 0  # claimed at, not before
    assert ledger.emails.expire_sending("ask", claimed_before=now + timedelta(minutes=30)) == 1
    ledger.emails.record_email_results(
        "ask", [EmailResult(ask_id, EmailOutcome.ACCEPTED, provider_ref="sg-late")], now
    )

    assert ask_states(ledger)[ask_id][0] == "unknown"
    assert ledger.emails.mark_sending("ask", [ask_id], now + timedelta(hours=1)) == []
    assert ledger.metrics.summary()["asks"] == {"unknown": 1}


def test_notifications_share_the_email_state_machine(ledger: SqlLedger, now: datetime) -> None:
    reward = given_reward(ledger, now)
    [(notice_id, kind, who, data)] = ledger.emails.notifications_to_send("", 10)
    assert (kind, who.contact_id, data["amount"]) == ("reward_earned", "C1", "100.00 EUR")

    assert ledger.emails.mark_sending("notification", [notice_id], now) == [notice_id]
    ledger.emails.record_email_results(
        "notification", [EmailResult(notice_id, EmailOutcome.ACCEPTED, provider_ref="sg")], now
    )

    assert ledger.emails.notifications_to_send("", 10) == []
    assert ledger.metrics.summary()["notifications"] == {"accepted": 1}
    assert notices(ledger, "reward_earned") == [reward.reward_id]


# -- conversions and rewards ---------------------------------------------------------------


def test_a_conversion_is_stored_once_and_its_event_is_not_converted_again(
    ledger: SqlLedger, now: datetime
) -> None:
    code = given_referrer(ledger, now, "C1")
    signup = event(
        "s1", EventType.SIGNUP, at=now, contact_id=None, account_id="NEW-1", referral_code=code
    )
    ledger.sources.record_batch(events_batch(signup), now)
    [(event_id, stored)] = ledger.conversions.events_to_convert(0, 10)
    assert stored == signup
    conv = conversion_for(code, "C1", 1, now)

    assert ledger.conversions.record_conversions([event_id], [conv], [], now) == 1
    assert ledger.conversions.record_conversions([event_id], [conv], [], now) == 0

    assert ledger.conversions.events_to_convert(0, 10) == []
    assert ledger.rewards.conversions_to_reward(10) == [conv]
    assert ledger.conversions.code_owners([code])[code].contact_id == "C1"
    assert ledger.metrics.summary()["conversions"] == {"customer": 1}


def test_on_sqlite_coded_events_to_convert_are_found_by_the_index_of_those_not_examined(
    sqlite_ledger: SqlLedger, now: datetime
) -> None:
    """Not by reading the events table from its start: coded events are a few among
    every event of the company."""
    code = given_referrer(sqlite_ledger, now, "C1")
    signup = event(
        "s1", EventType.SIGNUP, at=now, contact_id=None, account_id="NEW-1", referral_code=code
    )
    sqlite_ledger.sources.record_batch(events_batch(signup), now)
    selects: list[tuple[str, Any]] = []

    def seen(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.startswith("SELECT") and "FROM source_events" in statement:
            selects.append((statement, parameters))

    sa_event.listen(sqlite_ledger.engine, "before_cursor_execute", seen)
    try:
        [(_, stored)] = sqlite_ledger.conversions.events_to_convert(0, 10)
    finally:
        sa_event.remove(sqlite_ledger.engine, "before_cursor_execute", seen)

    assert stored == signup
    [(statement, parameters)] = selects
    with sqlite_ledger.engine.connect() as conn:
        plan = [
            row[-1] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
        ]
    assert len(plan) == 1
    assert "USING INDEX ix_source_events_unconverted" in plan[0]


def test_recording_rewards_twice_adds_one_reward_one_accrual_and_one_notice(
    ledger: SqlLedger, now: datetime
) -> None:
    code = given_referrer(ledger, now, "C1")
    conv = conversion_for(code, "C1", 1, now)
    ledger.conversions.record_conversions([], [conv], [], now)
    reward = reward_for(conv, 25_000, now)

    assert ledger.rewards.record([conv.conversion_id], [reward], [], now) == 1
    assert ledger.rewards.record([conv.conversion_id], [reward], [], now) == 0

    assert entries(ledger, reward.reward_id) == [("accrued", 25_000)]
    view = ledger.rewards.of([reward.reward_id])[reward.reward_id]
    assert (view.reward, view.status, view.balance) == (
        reward,
        RewardStatus.HOLDING,
        Money(25_000, "EUR"),
    )
    assert notices(ledger, "reward_earned") == [reward.reward_id]
    assert ledger.rewards.conversions_to_reward(10) == []


def test_moving_rewards_moves_only_rewards_still_in_an_expected_status(
    ledger: SqlLedger, now: datetime
) -> None:
    one = given_reward(ledger, now, 1, status=RewardStatus.HOLDING)
    two = given_reward(ledger, now, 2, status=RewardStatus.HOLDING)
    assert {v.reward.reward_id for v in ledger.rewards.to_route(now, "", 10)} == {
        one.reward_id,
        two.reward_id,
    }

    moved = ledger.rewards.move([one.reward_id], [RewardStatus.HOLDING], RewardStatus.PAYABLE, now)
    # A second router that read both as holding moves only the one still holding.
    raced = ledger.rewards.move(
        [one.reward_id, two.reward_id],
        [RewardStatus.HOLDING],
        RewardStatus.AWAITING_APPROVAL,
        now,
    )

    assert moved == [one.reward_id]
    assert raced == [two.reward_id]
    assert status(ledger, one.reward_id) is RewardStatus.PAYABLE
    assert status(ledger, two.reward_id) is RewardStatus.AWAITING_APPROVAL
    assert [v.reward.reward_id for v in ledger.rewards.to_route(now, "", 10)] == [one.reward_id]
    assert ledger.rewards.to_route(now - timedelta(days=1), "", 10) == []  # not payable yet


# -- payouts -------------------------------------------------------------------------------


def test_preparing_payouts_stores_the_payout_and_its_key_before_any_rail_is_called(
    ledger: SqlLedger, now: datetime
) -> None:
    reward = given_reward(ledger, now, amount_minor=12_345)

    [instruction] = ledger.payouts.prepare([(reward.reward_id, LEDGER, "acct_1")], now)

    [row] = payout_rows(ledger, reward.reward_id)
    assert row["payout_id"] == instruction.payout_id
    assert row["status"] == "pending"
    assert row["idempotency_key"] == f"reward:{reward.reward_id}:ledger"
    assert row["idempotency_key"] == instruction.idempotency_key
    assert (row["amount_minor"], row["currency"], row["attempt"]) == (12_345, "EUR", 1)
    assert instruction.amount == Money(12_345, "EUR")
    assert instruction.destination == "acct_1"
    assert instruction.key_created_at == now
    assert ledger.payouts.pending() == [instruction]
    assert entries(ledger, reward.reward_id) == [("accrued", 12_345)]  # no money moved yet


def test_a_second_prepare_returns_the_same_pending_payout(ledger: SqlLedger, now: datetime) -> None:
    reward = given_reward(ledger, now)

    first = ledger.payouts.prepare([(reward.reward_id, LEDGER, None)], now)
    second = ledger.payouts.prepare([(reward.reward_id, LEDGER, None)], now + timedelta(minutes=5))

    assert second == first
    assert len(payout_rows(ledger, reward.reward_id)) == 1


def test_a_reward_neither_payable_nor_approved_gets_no_payout(
    ledger: SqlLedger, now: datetime
) -> None:
    unpayable = [
        RewardStatus.HOLDING,
        RewardStatus.AWAITING_APPROVAL,
        RewardStatus.REJECTED,
        RewardStatus.CANCELLED,
        RewardStatus.PAID,
    ]
    refused = {s: given_reward(ledger, now, n, status=s) for n, s in enumerate(unpayable)}
    payable = given_reward(ledger, now, 10, status=RewardStatus.PAYABLE)
    approved = given_reward(ledger, now, 11, status=RewardStatus.APPROVED)
    plans = [(r.reward_id, LEDGER, None) for r in (*refused.values(), payable, approved)]

    instructions = ledger.payouts.prepare([*plans, ("no-such-reward", LEDGER, None)], now)

    assert sorted(i.reward_id for i in instructions) == sorted(
        [payable.reward_id, approved.reward_id]
    )
    assert {s: payout_rows(ledger, r.reward_id) for s, r in refused.items()} == {
        s: [] for s in unpayable
    }


def test_after_a_failed_attempt_the_next_attempt_has_its_own_key(
    ledger: SqlLedger, now: datetime
) -> None:
    reward = given_reward(ledger, now)
    [first] = pay(ledger, [reward.reward_id], now, PayoutOutcome.FAILED)

    [second] = ledger.payouts.prepare([(reward.reward_id, LEDGER, None)], now)

    assert second.attempt == 2
    assert second.idempotency_key == f"{first.idempotency_key}:2"
    assert second.payout_id != first.payout_id
    assert [r["status"] for r in payout_rows(ledger, reward.reward_id)] == ["failed", "pending"]
    assert balance(ledger, reward.reward_id) == 10_000
    assert status(ledger, reward.reward_id) is RewardStatus.PAYABLE


def test_a_reward_gets_no_more_than_the_maximum_number_of_payout_attempts(
    ledger: SqlLedger, now: datetime
) -> None:
    reward = given_reward(ledger, now)
    keys = [
        pay(ledger, [reward.reward_id], now, PayoutOutcome.FAILED)[0].idempotency_key
        for _ in range(MAX_PAYOUT_ATTEMPTS)
    ]

    assert ledger.payouts.prepare([(reward.reward_id, LEDGER, None)], now) == []
    assert len(set(keys)) == MAX_PAYOUT_ATTEMPTS
    assert keys[-1].endswith(f":{MAX_PAYOUT_ATTEMPTS}")
    assert [r["status"] for r in payout_rows(ledger, reward.reward_id)] == ["failed"] * 3
    assert balance(ledger, reward.reward_id) == 10_000


def test_a_retryable_result_keeps_the_payout_pending_under_the_same_key(
    ledger: SqlLedger, now: datetime
) -> None:
    reward = given_reward(ledger, now)
    [first] = pay(ledger, [reward.reward_id], now, PayoutOutcome.RETRYABLE)

    [again] = ledger.payouts.prepare([(reward.reward_id, LEDGER, None)], now)

    assert again.payout_id == first.payout_id
    assert again.idempotency_key == first.idempotency_key
    [row] = payout_rows(ledger, reward.reward_id)
    assert (row["status"], row["tries"]) == ("pending", 1)


def test_settling_a_payout_twice_books_one_paid_entry_and_one_notice(
    ledger: SqlLedger, now: datetime
) -> None:
    reward = given_reward(ledger, now, amount_minor=40_000)
    [instruction] = ledger.payouts.prepare([(reward.reward_id, LEDGER, None)], now)
    success = PayoutResult(instruction.payout_id, PayoutOutcome.SUCCEEDED, provider_ref="tr_1")

    first = ledger.payouts.record_results([success], now)
    second = ledger.payouts.record_results([success], now + timedelta(minutes=1))

    assert (first, second) == (1, 0)
    assert entries(ledger, reward.reward_id) == [("accrued", 40_000), ("paid", -40_000)]
    assert balance(ledger, reward.reward_id) == 0
    assert status(ledger, reward.reward_id) is RewardStatus.PAID
    assert notices(ledger, "reward_paid") == [reward.reward_id]
    [row] = payout_rows(ledger, reward.reward_id)
    assert (row["status"], row["provider_ref"], row["tries"]) == ("succeeded", "tr_1", 1)
    assert ledger.payouts.prepare([(reward.reward_id, LEDGER, None)], now) == []
    assert ledger.payouts.pending() == []


# -- approvals -----------------------------------------------------------------------------


def test_open_approval_requests_returns_the_same_waiting_request_twice(
    ledger: SqlLedger, now: datetime
) -> None:
    reward = given_reward(ledger, now, status=RewardStatus.AWAITING_APPROVAL)

    first = ledger.approvals.open_requests([reward.reward_id], now)
    request_id, run_id = first[reward.reward_id]
    ledger.approvals.attach_flow_runs({request_id: "run-1"})
    second = ledger.approvals.open_requests([reward.reward_id], now + timedelta(hours=1))

    assert run_id is None
    assert second == {reward.reward_id: (request_id, "run-1")}
    assert ledger.approvals.reward_of_run("run-1") == reward.reward_id
    assert count(ledger, ApprovalRequestRow) == 1


def test_approving_a_reduced_amount_books_an_adjusted_entry_and_pays_only_that(
    ledger: SqlLedger, now: datetime
) -> None:
    reward = given_reward(ledger, now, status=RewardStatus.AWAITING_APPROVAL)
    ledger.approvals.open_requests([reward.reward_id], now)

    result = record_decision(
        ledger, reward.reward_id, 1, decide(amount_minor=6_000), 1, "run-1", now
    )

    assert result is RewardStatus.APPROVED
    assert entries(ledger, reward.reward_id) == [("accrued", 10_000), ("adjusted", -4_000)]
    assert ledger.approvals.waiting() == []
    [instruction] = pay(ledger, [reward.reward_id], now)
    assert instruction.amount == Money(6_000, "EUR")
    assert entries(ledger, reward.reward_id)[-1] == ("paid", -6_000)
    assert balance(ledger, reward.reward_id) == 0


def test_approving_the_full_amount_books_no_adjustment(ledger: SqlLedger, now: datetime) -> None:
    reward = given_reward(ledger, now, status=RewardStatus.AWAITING_APPROVAL)

    assert record_decision(ledger, reward.reward_id, 1, decide(), 1, None, now) is (
        RewardStatus.APPROVED
    )

    assert entries(ledger, reward.reward_id) == [("accrued", 10_000)]


def test_rejecting_cancels_the_balance_and_queues_a_reward_rejected_notice(
    ledger: SqlLedger, now: datetime
) -> None:
    reward = given_reward(ledger, now, status=RewardStatus.AWAITING_APPROVAL)
    ledger.approvals.open_requests([reward.reward_id], now)

    result = record_decision(
        ledger, reward.reward_id, 1, decide(Decision.REJECT, reason="self-referral"), 1, None, now
    )

    assert result is RewardStatus.REJECTED
    assert entries(ledger, reward.reward_id) == [("accrued", 10_000), ("cancelled", -10_000)]
    assert balance(ledger, reward.reward_id) == 0
    assert notices(ledger, "reward_rejected") == [reward.reward_id]
    assert ledger.approvals.waiting() == []
    assert count(ledger, ApprovalRequestRow, ApprovalRequestRow.status == "decided") == 1
    assert ledger.payouts.prepare([(reward.reward_id, LEDGER, None)], now) == []


def test_a_two_stage_approval_waits_for_the_second_approver(
    ledger: SqlLedger, now: datetime
) -> None:
    reward = given_reward(ledger, now, amount_minor=90_000, status=RewardStatus.AWAITING_APPROVAL)
    ledger.approvals.open_requests([reward.reward_id], now)

    after_first = record_decision(
        ledger, reward.reward_id, 1, decide(amount_minor=90_000), 2, None, now
    )
    [waiting] = ledger.approvals.waiting()
    after_second = record_decision(
        ledger, reward.reward_id, 2, decide(approver="Bob Boss", amount_minor=90_000), 2, None, now
    )

    assert after_first is RewardStatus.AWAITING_APPROVAL
    assert (waiting.reward_id, waiting.stages_done) == (reward.reward_id, 1)
    assert after_second is RewardStatus.APPROVED
    view = ledger.approvals.view(reward.reward_id)
    assert [(d.stage, d.approver) for d in view.decisions] == [
        (1, "Ann Approver"),
        (2, "Bob Boss"),
    ]
    assert entries(ledger, reward.reward_id) == [("accrued", 90_000)]
    assert ledger.approvals.waiting() == []


def test_a_reduction_approved_at_the_first_of_two_stages_is_not_undone_by_the_second(
    ledger: SqlLedger, now: datetime
) -> None:
    """Four eyes: what is paid must have been approved by both approvers."""
    reward = given_reward(ledger, now, amount_minor=90_000, status=RewardStatus.AWAITING_APPROVAL)
    record_decision(ledger, reward.reward_id, 1, decide(amount_minor=60_000), 2, None, now)

    # The second approver is shown the balance (still 900.00) and approves it as is.
    record_decision(
        ledger, reward.reward_id, 2, decide(approver="Bob Boss", amount_minor=90_000), 2, None, now
    )

    assert balance(ledger, reward.reward_id) == 60_000


def test_deciding_a_stage_already_decided_raises_decision_conflict(
    ledger: SqlLedger, now: datetime
) -> None:
    reward = given_reward(ledger, now, amount_minor=90_000, status=RewardStatus.AWAITING_APPROVAL)
    record_decision(ledger, reward.reward_id, 1, decide(amount_minor=90_000), 2, None, now)

    with pytest.raises(DecisionConflict):
        record_decision(
            ledger,
            reward.reward_id,
            1,
            decide(Decision.REJECT, "Bob Boss", 90_000, "no"),
            2,
            None,
            now,
        )

    assert status(ledger, reward.reward_id) is RewardStatus.AWAITING_APPROVAL
    assert entries(ledger, reward.reward_id) == [("accrued", 90_000)]
    assert count(ledger, ApprovalDecisionRow) == 1
    assert notices(ledger, "reward_rejected") == []


def test_a_decision_on_a_reward_no_longer_awaiting_approval_is_refused(
    ledger: SqlLedger, now: datetime
) -> None:
    reward = given_reward(ledger, now, status=RewardStatus.AWAITING_APPROVAL)
    record_decision(ledger, reward.reward_id, 1, decide(), 1, None, now)

    with pytest.raises(InvalidDecision, match="not awaiting approval"):
        record_decision(
            ledger,
            reward.reward_id,
            2,
            decide(Decision.REJECT, "Bob Boss", reason="late"),
            1,
            None,
            now,
        )

    assert status(ledger, reward.reward_id) is RewardStatus.APPROVED
    assert count(ledger, ApprovalDecisionRow) == 1


def test_waiting_approvals_lists_the_oldest_request_first(ledger: SqlLedger, now: datetime) -> None:
    rewards = [
        given_reward(ledger, now, n, amount_minor=50_000 + n, status=RewardStatus.AWAITING_APPROVAL)
        for n in (1, 2, 3)
    ]
    # Requests opened in the order 3, 1, 2.
    for offset, reward in zip((1, 2, 0), rewards, strict=True):
        ledger.approvals.open_requests([reward.reward_id], now + timedelta(hours=offset))
    given_reward(ledger, now, 4, status=RewardStatus.AWAITING_APPROVAL)  # no request yet

    waiting = ledger.approvals.waiting()

    assert [w.reward_id for w in waiting] == [
        rewards[2].reward_id,
        rewards[0].reward_id,
        rewards[1].reward_id,
    ]
    assert [w.amount.amount_minor for w in waiting] == [50_003, 50_001, 50_002]
    assert [w.waiting_since for w in waiting] == [
        now,
        now + timedelta(hours=1),
        now + timedelta(hours=2),
    ]
    assert {(w.referrer_name, w.stages_done, w.flow_run_id) for w in waiting} == {
        ("Person C1", 0, None)
    }


# -- reporting ----------------------------------------------------------------------------


def test_summary_counts_rewards_money_and_payouts_by_stage(
    ledger: SqlLedger, now: datetime
) -> None:
    paid = given_reward(ledger, now, 1, amount_minor=10_000)
    rejected = given_reward(
        ledger, now, 2, amount_minor=20_000, status=RewardStatus.AWAITING_APPROVAL
    )
    given_reward(ledger, now, 3, amount_minor=5_000, status=RewardStatus.HOLDING)
    reduced = given_reward(
        ledger, now, 4, amount_minor=30_000, status=RewardStatus.AWAITING_APPROVAL
    )
    pay(ledger, [paid.reward_id], now)
    record_decision(
        ledger, rejected.reward_id, 1, decide(Decision.REJECT, reason="fraud"), 1, None, now
    )
    record_decision(ledger, reduced.reward_id, 1, decide(amount_minor=25_000), 1, None, now)
    ledger.sources.quarantine([Rejected("crm", "r1", None, "bad")], "reward", now)

    summary = ledger.metrics.summary()

    assert summary["rewards"] == {"paid": 1, "rejected": 1, "holding": 1, "approved": 1}
    assert summary["reward_amounts"] == {
        "EUR": {"paid": 10_000, "rejected": 0, "holding": 5_000, "approved": 25_000}
    }
    assert summary["paid"] == {"EUR": 10_000}
    assert summary["payouts"] == {"ledger_only": 1}
    assert summary["conversions"] == {"customer": 4}
    assert summary["notifications"] == {"queued": 4 + 1 + 1}  # earned x4, paid, rejected
    assert summary["quarantine"] == {"reward": 1}
    assert count(ledger, RewardRow) == 4
    assert count(ledger, QuarantineRow) == 1


def test_a_source_without_stripe_ids_keeps_those_another_source_set(
    ledger: SqlLedger, now: datetime
) -> None:
    ledger.sources.record_batch(people_batch(contact("C7", "A7", stripe_customer_id="cus_7")), now)
    ledger.sources.record_batch(people_batch(contact("C7", "A7", email="new@a7.example")), now)
    refreshed = ledger.asks.contacts(["C7"])["C7"]
    assert (refreshed.email, refreshed.stripe_customer_id) == ("new@a7.example", "cus_7")
