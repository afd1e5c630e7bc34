"""Rewards for the payout benchmark, written through the ledger's own writes.

Part A needs many small payable rewards, each for a referrer with a Stripe connected
account registered at the fake; part B needs one large reward awaiting approval.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from decimal import Decimal

from domain.codes import new_referral_code
from domain.models import (
    Account,
    Contact,
    Conversion,
    Milestone,
    ReferrerType,
    Reward,
    RewardStatus,
    derived_id,
)
from domain.money import Money
from domain.ports import SourceBatch
from domain.program import Program
from domain.rewards import compute_rewards
from integrations.ledger.sql import SqlLedger
from tasks.use_cases.asks import record_ask_decisions

CURRENCY = "EUR"
SEED_CHUNK = 2000
# Small rewards, all under the approval threshold (500.00 EUR): 10.00 to 59.00 EUR.
SMALL_MIN_MINOR = 1000
SMALL_STEPS = 50
# Part B: a partner's 15% of a 12,300.00 EUR deal, as in test_approval_ui.
LARGE_DEAL_MINOR = 1_230_000


def small_amount(i: int) -> Money:
    return Money(SMALL_MIN_MINOR + 100 * (i % SMALL_STEPS), CURRENCY)


def seed_payable_rewards(
    ledger: SqlLedger, n: int, add_account: Callable[[str], str], now: datetime
) -> dict[str, Money]:
    """``n`` payable rewards (reward id -> amount), one referrer each, with an account.

    Per chunk: the referrers (with ``stripe_account_id``) and their accounts, their
    referral codes, one conversion each, its flat reward (accrued, holding) moved to
    payable, as the cycle would leave them after the holding period.
    """
    rewards: dict[str, Money] = {}
    for first in range(0, n, SEED_CHUNK):
        numbers = range(first, min(first + SEED_CHUNK, n))
        contacts = [
            Contact(
                contact_id=f"BR{i:07d}",
                account_id=f"BA{i:07d}",
                name=f"Referrer {i}",
                email=f"referrer{i}@bench.example",
                referrer_type=ReferrerType.CUSTOMER,
                stripe_account_id=add_account(f"acct_bench{i:07d}"),
            )
            for i in numbers
        ]
        _store_people(ledger, contacts, now)
        codes = ledger.asks.codes_for([c.contact_id for c in contacts])
        conversions = [
            _conversion(f"bench-deal-{i:07d}", codes[c.contact_id], c.contact_id, None, now)
            for i, c in zip(numbers, contacts, strict=True)
        ]
        ledger.conversions.record_conversions([], conversions, [], now)
        batch = [
            Reward(
                reward_id=Reward.derive_id(conv.conversion_id, "bench-flat", conv.referrer_id),
                conversion_id=conv.conversion_id,
                rule_id="bench-flat",
                referrer_id=conv.referrer_id,
                amount=small_amount(i),
                milestone=Milestone.CUSTOMER,
                attribution_model="last_touch",
                payable_at=now - timedelta(days=1),
                explanation="flat reward for a customer (benchmark)",
            )
            for i, conv in zip(numbers, conversions, strict=True)
        ]
        ledger.rewards.record([c.conversion_id for c in conversions], batch, [], now)
        ids = [r.reward_id for r in batch]
        moved = ledger.rewards.move(ids, [RewardStatus.HOLDING], RewardStatus.PAYABLE, now)
        if len(moved) != len(ids):
            raise RuntimeError(f"seeding: {len(ids) - len(moved)} rewards not made payable")
        rewards.update({r.reward_id: r.amount for r in batch})
    return rewards


def seed_awaiting_approval(
    ledger: SqlLedger, program: Program, key: str, account: str, now: datetime
) -> tuple[str, Money]:
    """A partner's reward of 1,845.00 EUR awaiting approval; (reward id, amount).

    ``key`` makes the partner, conversion and reward new for each repeat.
    """
    partner = Contact(
        contact_id=f"BP-{key}",
        account_id=f"BPA-{key}",
        name="Pat Partner",
        email=f"pat-{key}@partner.example",
        referrer_type=ReferrerType.PARTNER,
        stripe_account_id=account,
    )
    _store_people(ledger, [partner], now)
    code = ledger.asks.codes_for([partner.contact_id])[partner.contact_id]
    conversion = _conversion(
        f"bench-approval-{key}",
        code,
        partner.contact_id,
        Money(LARGE_DEAL_MINOR, CURRENCY),
        now,
    )
    ledger.conversions.record_conversions([], [conversion], [], now)
    (reward,) = compute_rewards(conversion, [(partner, Decimal(1))], program)
    ledger.rewards.record([conversion.conversion_id], [reward], [], now)
    moved = ledger.rewards.move(
        [reward.reward_id], [RewardStatus.HOLDING], RewardStatus.AWAITING_APPROVAL, now
    )
    if moved != [reward.reward_id]:
        raise RuntimeError("seeding: the large reward did not reach awaiting approval")
    return reward.reward_id, reward.amount


def _store_people(ledger: SqlLedger, contacts: Sequence[Contact], now: datetime) -> None:
    since = (now - timedelta(days=400)).date()
    accounts = {
        c.account_id: Account(c.account_id, f"Account {c.account_id}", None, since)
        for c in contacts
        if c.account_id
    }
    ledger.sources.record_batch(
        SourceBatch(
            source="bench",
            accounts=list(accounts.values()),
            contacts=list(contacts),
            records_in=len(accounts) + len(contacts),
            reference_only=len(accounts) + len(contacts),
        ),
        now,
    )
    record_ask_decisions(
        ledger, [], {c.contact_id: new_referral_code() for c in contacts}, now, now
    )


def _conversion(
    key: str, code: str, referrer_id: str, amount: Money | None, now: datetime
) -> Conversion:
    return Conversion(
        conversion_id=derived_id("conversion", key),
        source_event=f"bench:{key}",
        referral_code=code,
        referrer_id=referrer_id,
        referee_account_id=f"REF-{key}",
        referee_contact_id=None,
        milestone=Milestone.CUSTOMER,
        occurred_at=now - timedelta(days=60),
        amount=amount,
    )
