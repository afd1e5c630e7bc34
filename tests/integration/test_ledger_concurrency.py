"""Racing writers on the same ledger rows: each thread has its own engine and connections.

The Postgres tests need REFERRALS_TEST_POSTGRES_URL (the ``postgres_url`` fixture skips
without it). SQLite serialises writers (every transaction is ``BEGIN IMMEDIATE``), so its
variants check that the loser of a race is refused cleanly rather than that the race
overlaps.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any, TypeVar

import pytest
from sqlalchemy import Engine, event, select

from domain.approvals import CheckedDecision
from domain.errors import DecisionConflict
from domain.models import AskDecision, Decision, PayoutOutcome, PayoutResult, RewardStatus
from integrations.ledger.engine import make_engine
from integrations.ledger.sql import SqlLedger
from integrations.ledger.tables import ApprovalDecisionRow, ApprovalRequestRow, ReferralCodeRow
from tasks.use_cases.approvals import record_decision
from tasks.use_cases.asks import record_ask_decisions
from tests.integration.test_ledger_flow import (
    LEDGER,
    balance,
    count,
    decide,
    entries,
    given_moments,
    given_reward,
    notices,
    payout_rows,
    status,
)

T = TypeVar("T")
TIMEOUT = 20


@pytest.fixture
def ledgers() -> Iterator[Callable[[str, int], list[SqlLedger]]]:
    """``make(url, n)``: n ledgers on n engines of their own, connected, disposed after."""
    engines: list[Engine] = []

    def make(url: str, n: int) -> list[SqlLedger]:
        made = [make_engine(url) for _ in range(n)]
        engines.extend(made)
        for engine in made:
            with engine.connect():  # open the connection now, not inside the race
                pass
        return [SqlLedger(engine) for engine in made]

    yield make
    for engine in engines:
        engine.dispose()


def race(workers: Sequence[Callable[[], T]]) -> list[T | BaseException]:
    """Run ``workers`` in threads released together; each one's result or exception."""
    barrier = threading.Barrier(len(workers))
    results: list[T | BaseException | None] = [None] * len(workers)

    def run(i: int) -> None:
        try:
            barrier.wait(timeout=TIMEOUT)
            results[i] = workers[i]()
        except BaseException as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(workers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=TIMEOUT)
    assert not any(t.is_alive() for t in threads), "a racing thread hung"
    return results  # type: ignore[return-value]


def meet_before_deciding(ledgers: Sequence[SqlLedger]) -> None:
    """Hold each ledger just before it inserts its decision until all have got there.

    Every racer has then read the reward as awaiting approval in its own open
    transaction, so the race is decided by the database, not by who started first.
    """
    barrier = threading.Barrier(len(ledgers))

    def hold(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO APPROVAL_DECISIONS"):
            barrier.wait(timeout=TIMEOUT)

    for ledger in ledgers:
        event.listen(ledger.engine, "before_cursor_execute", hold)


def deciders(
    racers: Sequence[SqlLedger],
    reward_id: str,
    stage: int,
    decisions: Sequence[CheckedDecision],
    stages_needed: int,
    now: datetime,
) -> list[Callable[[], RewardStatus]]:
    def decider(ledger: SqlLedger, checked: CheckedDecision) -> Callable[[], RewardStatus]:
        return lambda: record_decision(
            ledger, reward_id, stage, checked, stages_needed, f"run-{checked.approver}", now
        )

    return [decider(ledger, checked) for ledger, checked in zip(racers, decisions, strict=True)]


def decision_rows(ledger: SqlLedger, reward_id: str) -> list[tuple[int, str, str]]:
    with ledger.engine.connect() as conn:
        return [
            (stage, decision, approver)
            for stage, decision, approver in conn.execute(
                select(
                    ApprovalDecisionRow.stage,
                    ApprovalDecisionRow.decision,
                    ApprovalDecisionRow.approver,
                )
                .where(ApprovalDecisionRow.reward_id == reward_id)
                .order_by(ApprovalDecisionRow.stage)
            )
        ]


def split(outcomes: list[Any]) -> tuple[list[Any], list[BaseException]]:
    won = [o for o in outcomes if not isinstance(o, BaseException)]
    lost = [o for o in outcomes if isinstance(o, BaseException)]
    return won, lost


# -- approvals -----------------------------------------------------------------------------


def test_an_approval_and_a_rejection_racing_on_one_stage_leave_one_decision_and_one_state(
    postgres_url: str, ledgers: Callable[[str, int], list[SqlLedger]], now: datetime
) -> None:
    setup, *racers = ledgers(postgres_url, 3)
    reward = given_reward(setup, now, status=RewardStatus.AWAITING_APPROVAL)
    setup.approvals.open_requests([reward.reward_id], now)
    meet_before_deciding(racers)
    choices = [
        decide(Decision.APPROVE, "Ann Approver", 7_000),
        decide(Decision.REJECT, "Bob Boss", 10_000, "duplicate lead"),
    ]

    outcomes = race(deciders(racers, reward.reward_id, 1, choices, 1, now))

    won, lost = split(outcomes)
    assert len(won) == 1
    assert [type(e) for e in lost] == [DecisionConflict]
    [(stage, decision, approver)] = decision_rows(setup, reward.reward_id)
    assert stage == 1
    assert status(setup, reward.reward_id) is won[0]
    assert count(setup, ApprovalRequestRow, ApprovalRequestRow.status == "waiting") == 0
    if decision == "approve":
        assert (won[0], approver) == (RewardStatus.APPROVED, "Ann Approver")
        assert entries(setup, reward.reward_id) == [("accrued", 10_000), ("adjusted", -3_000)]
        assert notices(setup, "reward_rejected") == []
    else:
        assert (won[0], approver) == (RewardStatus.REJECTED, "Bob Boss")
        assert entries(setup, reward.reward_id) == [("accrued", 10_000), ("cancelled", -10_000)]
        assert notices(setup, "reward_rejected") == [reward.reward_id]


def test_two_approvers_racing_on_the_first_of_two_stages_record_one_decision(
    postgres_url: str, ledgers: Callable[[str, int], list[SqlLedger]], now: datetime
) -> None:
    setup, *racers = ledgers(postgres_url, 3)
    reward = given_reward(setup, now, amount_minor=90_000, status=RewardStatus.AWAITING_APPROVAL)
    meet_before_deciding(racers)
    choices = [
        decide(approver="Ann Approver", amount_minor=90_000),
        decide(approver="Bob Boss", amount_minor=90_000),
    ]

    outcomes = race(deciders(racers, reward.reward_id, 1, choices, 2, now))

    won, lost = split(outcomes)
    assert won == [RewardStatus.AWAITING_APPROVAL]
    assert [type(e) for e in lost] == [DecisionConflict]
    [(stage, _, first_approver)] = decision_rows(setup, reward.reward_id)
    assert stage == 1
    assert entries(setup, reward.reward_id) == [("accrued", 90_000)]
    # The loser can still be the second approver.
    second = "Bob Boss" if first_approver == "Ann Approver" else "Ann Approver"
    after = record_decision(
        setup, reward.reward_id, 2, decide(approver=second, amount_minor=90_000), 2, None, now
    )
    assert after is RewardStatus.APPROVED


def test_on_sqlite_the_later_of_two_racing_approvers_gets_a_decision_conflict(
    sqlite_url: str, ledgers: Callable[[str, int], list[SqlLedger]], now: datetime
) -> None:
    setup, *racers = ledgers(sqlite_url, 3)
    reward = given_reward(setup, now, amount_minor=90_000, status=RewardStatus.AWAITING_APPROVAL)
    choices = [
        decide(approver="Ann Approver", amount_minor=90_000),
        decide(approver="Bob Boss", amount_minor=80_000),
    ]

    outcomes = race(deciders(racers, reward.reward_id, 1, choices, 2, now))

    won, lost = split(outcomes)
    assert won == [RewardStatus.AWAITING_APPROVAL]
    assert [type(e) for e in lost] == [DecisionConflict]
    assert [(stage, d) for stage, d, _ in decision_rows(setup, reward.reward_id)] == [
        (1, "approve")
    ]
    assert status(setup, reward.reward_id) is RewardStatus.AWAITING_APPROVAL
    assert entries(setup, reward.reward_id) == [("accrued", 90_000)]


# -- payouts -------------------------------------------------------------------------------


def prepare_and_settle(ledger: SqlLedger, reward_ids: Sequence[str], now: datetime) -> int:
    """What one payout worker does: prepare, 'pay' every instruction, book the results."""
    instructions = ledger.payouts.prepare([(r, LEDGER, None) for r in reward_ids], now)
    return ledger.payouts.record_results(
        [
            PayoutResult(i.payout_id, PayoutOutcome.SUCCEEDED, provider_ref=f"ref-{i.payout_id}")
            for i in instructions
        ],
        now,
    )


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_racing_payout_workers_pay_each_reward_once(
    backend: str,
    request: pytest.FixtureRequest,
    ledgers: Callable[[str, int], list[SqlLedger]],
    now: datetime,
) -> None:
    url = str(request.getfixturevalue(f"{backend}_url"))
    setup, *workers = ledgers(url, 7)
    rewards = [given_reward(setup, now, n, amount_minor=1_000 * n) for n in range(1, 5)]
    rewards.append(given_reward(setup, now, 5, status=RewardStatus.APPROVED))
    reward_ids = sorted(r.reward_id for r in rewards)

    outcomes = race([functools.partial(prepare_and_settle, w, reward_ids, now) for w in workers])

    assert [o for o in outcomes if isinstance(o, BaseException)] == []
    assert sum(outcomes) == len(rewards)  # type: ignore[arg-type]
    for reward in rewards:
        assert [p["status"] for p in payout_rows(setup, reward.reward_id)] == ["succeeded"]
        assert [k for k, _ in entries(setup, reward.reward_id)] == ["accrued", "paid"]
        assert balance(setup, reward.reward_id) == 0
        assert status(setup, reward.reward_id) is RewardStatus.PAID
    assert notices(setup, "reward_paid") == reward_ids
    assert setup.payouts.pending() == []


# -- referral codes ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_racing_runs_offering_different_codes_mint_one_code_per_contact(
    backend: str,
    request: pytest.FixtureRequest,
    ledgers: Callable[[str, int], list[SqlLedger]],
    now: datetime,
) -> None:
    url = str(request.getfixturevalue(f"{backend}_url"))
    setup, *runs = ledgers(url, 4)
    moments = given_moments(setup, now, ["C1"] * len(runs))

    outcomes = race(
        [
            functools.partial(
                record_ask_decisions,
                run,
                [AskDecision(moments[i])],
                {"C1": f"CODE-{i}"},
                now,
                now,
            )
            for i, run in enumerate(runs)
        ]
    )

    assert [o for o in outcomes if isinstance(o, BaseException)] == []
    [code] = setup.asks.codes_for(["C1"]).values()
    asks = [ask for asks in outcomes for ask in asks]  # type: ignore[union-attr]
    assert len(asks) == len(runs)
    assert {a.referral_code for a in asks} == {code}
    assert count(setup, ReferralCodeRow) == 1
