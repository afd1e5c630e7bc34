"""The money stores' contract: the same scenarios on the SQL stores (SQLite and
PostgreSQL) and on their in-memory fakes, with the same outcomes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Protocol

import pytest

from domain.fraud import PAYOUT_DESTINATION_CHANGED
from domain.models import (
    Conversion,
    PayoutInstruction,
    PayoutOutcome,
    PayoutRailKind,
    PayoutResult,
    Reward,
    RewardStatus,
)
from domain.money import Money
from domain.stores.payouts import PayoutsStore
from domain.stores.rewards import RewardsStore, RewardStores
from integrations.ledger.engine import make_engine
from integrations.ledger.memory import InMemoryLedger
from integrations.ledger.sql import SqlLedger
from tasks.use_cases.rewards import accrue_conversions
from tests.conftest import NOW, contact
from tests.integration.test_ledger_flow import conversion_for, given_referrer, reward_for
from tests.integration.test_reward_rules_ledger import FLAT, REFERRER_CAP, program_of

LEDGER = PayoutRailKind.LEDGER_ONLY


class MoneyLedger(Protocol):
    """What the contract uses of a ledger: the money stores, and units of work."""

    @property
    def rewards(self) -> RewardsStore: ...

    @property
    def payouts(self) -> PayoutsStore: ...

    def transaction(self) -> AbstractContextManager[RewardStores]: ...


class Books:
    """One backend of the contract: a ledger, and how a test puts conversions in it."""

    def __init__(self, ledger: MoneyLedger, sql: SqlLedger | None) -> None:
        self.ledger = ledger
        self._sql = sql
        self._codes: dict[str, str] = {}

    def conversions(self, referrer_id: str, count: int, now: datetime) -> list[Conversion]:
        """``count`` conversions by ``referrer_id``'s code, a minute apart, stored."""
        code = f"CODE-{referrer_id}"
        if self._sql is not None and referrer_id not in self._codes:
            self._codes[referrer_id] = given_referrer(self._sql, now, referrer_id)
        code = self._codes.get(referrer_id, code)
        found = [
            conversion_for(code, referrer_id, n, now + timedelta(minutes=n))
            for n in range(1, count + 1)
        ]
        if self._sql is not None:
            self._sql.record_conversions([], found, [], now)
        else:
            assert isinstance(self.ledger, InMemoryLedger)
            self.ledger.money.conversions.update((c.conversion_id, c) for c in found)
        return found


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def books(request: pytest.FixtureRequest) -> Iterator[Books]:
    if request.param == "memory":
        yield Books(InMemoryLedger(), None)
        return
    engine = make_engine(str(request.getfixturevalue(f"{request.param}_url")))
    sql = SqlLedger(engine)
    yield Books(sql, sql)
    engine.dispose()


def test_accrual_pays_a_referrer_up_to_the_cap_and_accrues_each_conversion_once(
    books: Books,
) -> None:
    program = program_of(FLAT, reward_caps=[REFERRER_CAP])
    conversions = books.conversions("C1", 3, NOW)
    credits = {c.conversion_id: [(contact("C1", "A-C1"), Decimal(1))] for c in conversions}

    first = accrue_conversions(books.ledger, conversions, credits, {}, {}, program, [], NOW)
    again = accrue_conversions(books.ledger, conversions, credits, {}, {}, program, [], NOW)

    assert (first.recorded, first.capped, again.recorded) == (3, 1, 0)
    views = books.ledger.rewards.of(
        Reward.derive_id(c.conversion_id, FLAT["id"], "C1") for c in conversions
    )
    assert sorted(v.balance.amount_minor for v in views.values()) == [40_000, 80_000, 80_000]
    assert {v.status for v in views.values()} == {RewardStatus.HOLDING}
    assert books.ledger.rewards.conversions_to_reward(10) == []


def test_a_payable_reward_is_prepared_with_its_key_claimed_by_one_worker_and_paid_once(
    books: Books,
) -> None:
    (conversion,) = books.conversions("C1", 1, NOW)
    reward = reward_for(conversion, 2_500, NOW)
    rewards, payouts = books.ledger.rewards, books.ledger.payouts
    assert rewards.record([conversion.conversion_id], [reward], [], NOW) == 1
    assert rewards.move([reward.reward_id], [RewardStatus.HOLDING], RewardStatus.PAYABLE, NOW)

    (prepared,) = payouts.prepare([(reward.reward_id, LEDGER, None)], NOW)
    assert prepared.idempotency_key == PayoutInstruction.key_for(reward.reward_id, LEDGER)
    assert prepared.amount == Money(2_500, "EUR")
    assert payouts.prepare([(reward.reward_id, LEDGER, None)], NOW) == [prepared]
    lease = timedelta(minutes=5)
    (claimed,) = payouts.claim("w1", NOW, lease, reward_ids=[reward.reward_id])
    assert payouts.claim("w2", NOW, lease, reward_ids=[reward.reward_id]) == []

    done = PayoutResult(claimed.payout_id, PayoutOutcome.SUCCEEDED, "ref-1")
    assert payouts.record_results([done], NOW) == 1
    assert payouts.record_results([done], NOW) == 0
    view = rewards.of([reward.reward_id])[reward.reward_id]
    assert (view.status, view.balance) == (RewardStatus.PAID, Money.zero("EUR"))
    assert payouts.pending() == []
    assert payouts.prepare([(reward.reward_id, LEDGER, None)], NOW) == []


def test_a_reward_past_its_holding_period_is_routed_once_and_flagged_once(
    books: Books,
) -> None:
    (conversion,) = books.conversions("C1", 1, NOW)
    reward = reward_for(conversion, 2_500, NOW)
    rewards = books.ledger.rewards
    rewards.record([conversion.conversion_id], [reward], [], NOW)

    assert rewards.to_route(NOW - timedelta(days=1), "", 10) == []
    (routed,) = rewards.to_route(NOW, "", 10)
    assert routed.reward.reward_id == reward.reward_id
    assert rewards.to_route(NOW, reward.reward_id, 10) == []
    assert rewards.add_flag([reward.reward_id], PAYOUT_DESTINATION_CHANGED, NOW) == 1
    assert rewards.add_flag([reward.reward_id], PAYOUT_DESTINATION_CHANGED, NOW) == 0
    stored = rewards.of([reward.reward_id])[reward.reward_id].reward
    assert stored.flags == (PAYOUT_DESTINATION_CHANGED,)
