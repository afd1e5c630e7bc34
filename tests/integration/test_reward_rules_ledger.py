"""Reward rules against the ledger, on SQLite and (with REFERRALS_TEST_POSTGRES_URL)
Postgres: caps counted from what is accrued, under the per-referrer lock when two runs
race; tiers counted from rewarded conversions; touchpoints stored with conversions and
splitting credit; recurring rewards from the referee's paid invoices."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, insert, select

from config.program import parse_program
from domain.models import (
    Conversion,
    EmailEvent,
    EmailEventType,
    Milestone,
    RewardStatus,
    derived_id,
)
from domain.program import Program
from domain.stripe_conversions import INVOICE_PAID
from integrations.ledger.sql import SqlLedger
from integrations.ledger.tables import (
    AskRow,
    Base,
    LedgerEntryRow,
    MomentRow,
    NotificationRow,
    RewardRow,
    RewardTermsRow,
    TouchpointRow,
)
from tasks.conversions import record_stripe_conversions
from tasks.rewards import compute_new_rewards
from tasks.use_cases import conversions as use_cases
from tasks.use_cases.rewards import accrue_conversions
from tests.integration.test_ledger_flow import conversion_for, given_referrer
from tests.stripe_conversion_events import CODE_A, event, given_referrers, invoice

FLAT = {
    "id": "customer-flat",
    "referrer_type": "customer",
    "milestone": "customer",
    "kind": "flat",
    "amount": "800.00",
}
REFERRER_CAP = {"per": "referrer", "period": "year", "amount": "2000.00"}


def program_of(*rules: dict[str, Any], **extra: Any) -> Program:
    return parse_program({"rewards": list(rules), **extra})


def rows(ledger: SqlLedger, table: Any, *where: Any) -> list[dict[str, Any]]:
    with ledger.engine.connect() as conn:
        stmt = select(table.__table__).where(*where)
        return [dict(r) for r in conn.execute(stmt).mappings()]


def rewards_by_conversion(ledger: SqlLedger) -> dict[str, dict[str, Any]]:
    return {r["conversion_id"]: r for r in rows(ledger, RewardRow)}


def convert(ledger: SqlLedger, code: str, referrer: str, ns: range, now: datetime) -> list[str]:
    conversions = [conversion_for(code, referrer, n, now + timedelta(minutes=n)) for n in ns]
    ledger.conversions.record_conversions([], conversions, [], now)
    return [c.conversion_id for c in conversions]


# -- caps -------------------------------------------------------------------------------------


def test_a_referrer_cap_counts_what_the_ledger_accrued_in_earlier_runs(
    ledger: SqlLedger, now: datetime
) -> None:
    program = program_of(FLAT, reward_caps=[REFERRER_CAP])
    code = given_referrer(ledger, now, "C1")
    first = convert(ledger, code, "C1", range(1, 3), now)
    assert compute_new_rewards.fn(ledger, program, now)["capped"] == 0
    later = convert(ledger, code, "C1", range(3, 5), now)
    result = compute_new_rewards.fn(ledger, program, now)
    assert (result["rewards"], result["capped"]) == (2, 2)

    rewards = rewards_by_conversion(ledger)
    assert [rewards[c]["amount_minor"] for c in first + later] == [80_000, 80_000, 40_000, 0]
    nothing = rewards[later[1]]
    assert nothing["status"] == RewardStatus.CANCELLED.value
    assert "capped by the referrer cap of 2,000.00 EUR per year" in nothing["explanation"]
    assert rows(ledger, LedgerEntryRow, LedgerEntryRow.reward_id == nothing["reward_id"]) == []
    assert rows(ledger, NotificationRow, NotificationRow.reward_id == nothing["reward_id"]) == []
    (terms,) = rows(ledger, RewardTermsRow, RewardTermsRow.reward_id == nothing["reward_id"])
    assert (terms["uncapped_minor"], terms["capped_by"]) == (80_000, "referrer/year 2026")
    accrued = sum(e["amount_minor"] for e in rows(ledger, LedgerEntryRow))
    assert accrued == 200_000


def test_a_cancellation_in_the_ledger_gives_its_room_back(ledger: SqlLedger, now: datetime) -> None:
    program = program_of(FLAT, reward_caps=[REFERRER_CAP])
    code = given_referrer(ledger, now, "C1")
    convert(ledger, code, "C1", range(1, 4), now)
    compute_new_rewards.fn(ledger, program, now)
    first = rewards_by_conversion(ledger)[conversion_for(code, "C1", 1, now).conversion_id]
    with ledger.engine.begin() as conn:
        conn.execute(
            insert(LedgerEntryRow).values(
                reward_id=first["reward_id"],
                kind="cancelled",
                amount_minor=-80_000,
                currency="EUR",
                ref="refund-1",
                created_at=now,
            )
        )
    (fourth,) = convert(ledger, code, "C1", range(4, 5), now)
    compute_new_rewards.fn(ledger, program, now)
    # 2,000 - (800 + 800 + 400 - 800 cancelled) = 800 left.
    assert rewards_by_conversion(ledger)[fourth]["amount_minor"] == 80_000


class _SlowRecords:
    """The reward rules' store of a unit of work, pausing before it records: between
    reading what the caps leave and writing the rewards, where a race would double-spend."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def record_accrued(self, *args: Any) -> Any:
        time.sleep(0.3)
        return self._inner.record_accrued(*args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _SlowLedger:
    """The ledger, its units of work recording slowly (:class:`_SlowRecords`)."""

    def __init__(self, ledger: SqlLedger) -> None:
        self._ledger = ledger

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        with self._ledger.transaction() as uow:
            uow.reward_rules = _SlowRecords(uow.reward_rules)  # type: ignore[assignment]
            yield uow


def _racing_runs(
    ledger: SqlLedger,
    program: Program,
    batches: list[tuple[str, list[Conversion]]],
    now: datetime,
) -> None:
    """Each batch accrued by its own thread, all at once, each pausing between reading
    what the caps leave and writing its rewards (where a race would double-spend)."""
    referrers = {
        c.referrer_id: ledger.asks.contacts([c.referrer_id]) for _, b in batches for c in b
    }
    start = threading.Barrier(len(batches))
    errors: list[BaseException] = []
    slow = _SlowLedger(ledger)

    def run(conversions: list[Conversion]) -> None:
        credits = {
            c.conversion_id: [(referrers[c.referrer_id][c.referrer_id], Decimal(1))]
            for c in conversions
        }
        try:
            start.wait()
            accrue_conversions(slow, conversions, credits, {}, {}, program, [], now)
        except BaseException as exc:  # surfaced in the test thread below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(b,)) for _, b in batches]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors


def test_two_runs_at_once_never_pass_a_referrers_cap(ledger: SqlLedger, now: datetime) -> None:
    program = program_of(FLAT, reward_caps=[REFERRER_CAP])
    code = given_referrer(ledger, now, "C1")
    convs = [conversion_for(code, "C1", n, now + timedelta(minutes=n)) for n in range(1, 7)]
    ledger.conversions.record_conversions([], convs, [], now)
    _racing_runs(ledger, program, [("a", convs[:3]), ("b", convs[3:])], now)
    amounts = sorted(r["amount_minor"] for r in rows(ledger, RewardRow))
    assert sum(amounts) == 200_000  # exactly the cap: the second run saw the first's rewards
    # Whichever ran first got 800 + 800 + 400; everything after it was capped to nothing.
    assert amounts[-3:] == [40_000, 80_000, 80_000]
    assert len(amounts) == 6


def test_two_runs_for_different_referrers_at_once_never_pass_the_program_budget(
    ledger: SqlLedger, now: datetime
) -> None:
    budget = {"per": "program", "period": "quarter", "amount": "2000.00"}
    program = program_of(FLAT, reward_caps=[budget])
    one, two = given_referrer(ledger, now, "C1"), given_referrer(ledger, now, "C2")
    a = [conversion_for(one, "C1", n, now + timedelta(minutes=n)) for n in range(1, 4)]
    b = [conversion_for(two, "C2", n, now + timedelta(minutes=n)) for n in range(1, 4)]
    ledger.conversions.record_conversions([], a + b, [], now)
    _racing_runs(ledger, program, [("a", a), ("b", b)], now)
    assert sum(r["amount_minor"] for r in rows(ledger, RewardRow)) == 200_000


# -- tiers ------------------------------------------------------------------------------------


def test_tiers_count_the_conversions_the_ledger_rewarded_in_the_quarter(
    ledger: SqlLedger, now: datetime
) -> None:
    tiered = {
        "id": "customer-tiers",
        "referrer_type": "customer",
        "milestone": "customer",
        "kind": "tiered",
        "tiers": [{"from": 1, "amount": "100.00"}, {"from": 3, "amount": "150.00"}],
    }
    program = program_of(tiered)
    code = given_referrer(ledger, now, "C1")
    convert(ledger, code, "C1", range(1, 3), now)
    compute_new_rewards.fn(ledger, program, now)
    (third,) = convert(ledger, code, "C1", range(3, 4), now)
    compute_new_rewards.fn(ledger, program, now)
    reward = rewards_by_conversion(ledger)[third]
    assert reward["amount_minor"] == 15_000
    assert "(referral #3 in 2026-Q4)" in reward["explanation"]
    (terms,) = rows(ledger, RewardTermsRow, RewardTermsRow.reward_id == reward["reward_id"])
    assert (terms["kind"], terms["period"], terms["referral_number"]) == ("tiered", "2026-Q4", 3)


# -- touchpoints -----------------------------------------------------------------------------


def coded(code: str, referrer: str, milestone: Milestone, at: datetime, key: str) -> Conversion:
    return Conversion(
        conversion_id=derived_id("conversion", key),
        source_event=key,
        referral_code=code,
        referrer_id=referrer,
        referee_account_id="NEWCO",
        referee_contact_id=None,
        milestone=milestone,
        occurred_at=at,
        amount=None,
    )


@pytest.mark.parametrize(
    ("model", "expected"),
    [("linear", {"C1": 10_000, "C2": 10_000}), ("last_touch", {"C2": 20_000})],
)
def test_touchpoints_stored_with_conversions_split_the_credit_by_the_model(
    ledger: SqlLedger, now: datetime, model: str, expected: dict[str, int]
) -> None:
    program = program_of(
        {**FLAT, "amount": "200.00"}, attribution={"model": model, "half_life_days": 7}
    )
    one, two = given_referrer(ledger, now, "C1"), given_referrer(ledger, now, "C2")
    lead = coded(one, "C1", Milestone.LEAD, now - timedelta(days=10), "crm:signup-1")
    won = coded(two, "C2", Milestone.CUSTOMER, now, "crm:won-1")
    use_cases.record_crm_conversions(ledger, [], [lead, won], [], {}, now)
    use_cases.record_crm_conversions(ledger, [], [lead, won], [], {}, now)  # again: nothing new

    touches = rows(ledger, TouchpointRow)
    assert sorted((t["referrer_id"], t["kind"], t["ref"]) for t in touches) == [
        ("C1", "code", lead.conversion_id),
        ("C2", "code", won.conversion_id),
    ]
    assert all(t["referee_account_id"] == "NEWCO" for t in touches)

    compute_new_rewards.fn(ledger, program, now)
    rewards = rows(ledger, RewardRow)
    assert {r["referrer_id"]: r["amount_minor"] for r in rewards} == expected
    for reward in rewards:
        assert reward["attribution_model"] == model
        assert f"{model} credit" in reward["explanation"]


def test_a_click_on_an_ask_carrying_the_code_is_a_touch_before_the_conversion(
    ledger: SqlLedger, now: datetime
) -> None:
    code = given_referrer(ledger, now, "C1")
    clicked = now - timedelta(days=3)
    with ledger.engine.begin() as conn:
        conn.execute(
            insert(MomentRow).values(
                moment_id="test:nps-1",
                type="nps_promoter",
                contact_id="C1",
                account_id="A-C1",
                occurred_at=clicked,
                source_event="test:nps-1",
                detail="NPS 10",
                status="asked",
            )
        )
        conn.execute(
            insert(AskRow).values(
                ask_id="ask-1",
                moment_id="test:nps-1",
                contact_id="C1",
                moment_type="nps_promoter",
                referral_code=code,
                status="accepted",
                created_at=clicked,
            )
        )
    ledger.emails.apply_email_events(
        [
            EmailEvent("sg-click-1", EmailEventType.CLICK, "ask-1", clicked),
            EmailEvent("sg-click-late", EmailEventType.CLICK, "ask-1", now + timedelta(days=1)),
        ],
        now,
    )
    won = coded(code, "C1", Milestone.CUSTOMER, now, "crm:won-1")
    use_cases.record_crm_conversions(ledger, [], [won], [], {}, now)
    touches = {(t["kind"], t["ref"], t["occurred_at"]) for t in rows(ledger, TouchpointRow)}
    assert touches == {("code", won.conversion_id, now), ("ask_click", "sg-click-1", clicked)}
    found = ledger.touchpoints.touchpoints_for([won])[won.conversion_id]
    assert [t.kind.value for t in found] == ["ask_click", "code"]


# -- recurring and first payment ---------------------------------------------------------------


def paid(n: int, at: datetime, *, first: bool = False, amount: int = 10_000) -> dict[str, Any]:
    obj = invoice(
        f"in_{n}",
        amount=amount,
        code=CODE_A if first else None,
        billing_reason="subscription_create" if first else "subscription_cycle",
        legacy=True,
        charge=f"ch_{n}",
        payment_intent=f"pi_{n}",
    )
    return event(f"evt_in_{n}", INVOICE_PAID, int(at.timestamp()), obj)


def test_each_invoice_paid_in_the_months_after_the_conversion_earns_a_recurring_reward(
    ledger: SqlLedger, now: datetime
) -> None:
    recurring = {
        "id": "recurring",
        "referrer_type": "customer",
        "milestone": "customer",
        "kind": "recurring",
        "percent": "10",
        "months": 2,
    }
    first_payment = {
        "id": "first-payment",
        "referrer_type": "customer",
        "milestone": "customer",
        "kind": "percent_of_first_payment",
        "percent": "20",
    }
    program = program_of(recurring, first_payment)
    given_referrers(ledger, now, C1=CODE_A)
    start = now - timedelta(days=70)
    for evt in (
        paid(1, start, first=True),
        paid(2, start + timedelta(days=30)),
        paid(3, start + timedelta(days=59)),
        paid(4, start + timedelta(days=65)),  # past the two months
    ):
        ledger.provider_events.store_stripe_event(evt, now)
    record_stripe_conversions.fn(ledger, program, now)
    result = compute_new_rewards.fn(ledger, program, now)
    assert result["recurring"] == 3

    rewards = {r["rule_id"]: r for r in rows(ledger, RewardRow)}
    assert set(rewards) == {"first-payment", "recurring@in_1", "recurring@in_2", "recurring@in_3"}
    assert rewards["first-payment"]["amount_minor"] == 2_000
    assert {rewards[f"recurring@in_{n}"]["amount_minor"] for n in (1, 2, 3)} == {1_000}
    assert len({r["conversion_id"] for r in rewards.values()}) == 1
    third = rewards["recurring@in_3"]
    assert third["payable_at"] == start + timedelta(days=59, hours=0) + timedelta(days=14)
    (terms,) = rows(ledger, RewardTermsRow, RewardTermsRow.reward_id == third["reward_id"])
    assert (terms["period"], terms["earned_at"]) == ("in_3", start + timedelta(days=59))

    assert compute_new_rewards.fn(ledger, program, now)["rewards"] == 0
    with ledger.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(RewardRow)).scalar_one() == 4


def test_a_partners_registration_of_the_referees_domain_is_a_touch(
    ledger: SqlLedger, now: datetime
) -> None:
    code = given_referrer(ledger, now, "C1")
    given_referrer(ledger, now, "P1")
    registered = now - timedelta(days=20)
    with ledger.engine.begin() as conn:
        conn.execute(
            insert(Base.metadata.tables["partner_registrations"]).values(
                registration_id="reg-1",
                partner_id="P1",
                domain="newco.example",
                contact_ref="lead-1",
                evidence="discovery call booked",
                registered_at=registered,
                expires_at=now + timedelta(days=40),
                status="active",
                extensions=0,
                updated_at=registered,
            )
        )
    won = replace(
        coded(code, "C1", Milestone.CUSTOMER, now, "crm:won-1"),
        referee_email_domain="newco.example",
    )
    use_cases.record_crm_conversions(ledger, [], [won], [], {}, now)
    touches = {(t["referrer_id"], t["kind"], t["ref"]) for t in rows(ledger, TouchpointRow)}
    assert touches == {("C1", "code", won.conversion_id), ("P1", "registration", "reg-1")}
