"""The messages group's stores behave alike on SQL (SQLite, PostgreSQL) and in memory:
each scenario runs on the SQL store and on its recording in-memory fake."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import insert

from domain.discounts import (
    CouponInstruction,
    DiscountOutcome,
    DiscountRail,
    DiscountResult,
)
from domain.links import LinkClick, VisitorKind
from integrations.ledger.engine import make_engine
from integrations.ledger.memory import InMemoryLedger
from integrations.ledger.sql import SqlLedger
from integrations.ledger.tables import ContactRow, ReferralCodeRow

Given = Callable[..., None]


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> Iterator[tuple[Any, Given]]:
    """A ledger (SQL or in memory) and a way to give it referrers with codes."""
    if request.param == "memory":
        memory = InMemoryLedger()

        def given_memory(contact_id: str, code: str, *, opted_out: bool = False) -> None:
            memory.links.owners[code] = contact_id
            memory.discounts.referral_codes[code] = contact_id
            if opted_out:
                memory.links.opted_out.add(contact_id)

        yield memory, given_memory
        return
    engine = make_engine(str(request.getfixturevalue(f"{request.param}_url")))
    ledger = SqlLedger(engine)

    def given_sql(contact_id: str, code: str, *, opted_out: bool = False) -> None:
        when = datetime(2026, 1, 1, tzinfo=UTC)
        with engine.begin() as conn:
            conn.execute(
                insert(ContactRow),
                {
                    "contact_id": contact_id,
                    "name": contact_id,
                    "referrer_type": "customer",
                    "opted_out": opted_out,
                    "updated_at": when,
                },
            )
            conn.execute(
                insert(ReferralCodeRow),
                {"code": code, "contact_id": contact_id, "created_at": when},
            )

    yield ledger, given_sql
    engine.dispose()


def _click(click_id: str, code: str, at: datetime) -> LinkClick:
    return LinkClick(click_id, code, "C1", at, "0" * 64, VisitorKind.PERSON)


def test_a_code_leads_to_its_owner_only_while_the_owner_is_in_the_program(
    backend: tuple[Any, Given],
) -> None:
    ledger, given = backend
    given("C1", "LIVECODE")
    given("C2", "GONECODE", opted_out=True)
    assert ledger.links.live_referrer("LIVECODE") == "C1"
    assert ledger.links.live_referrer("GONECODE") is None
    assert ledger.links.live_referrer("NOSUCHCODE") is None


def test_a_batch_of_clicks_written_twice_is_stored_once(
    backend: tuple[Any, Given], now: datetime
) -> None:
    ledger, given = backend
    given("C1", "LIVECODE")
    first = [_click(f"k{i}", "LIVECODE", now + timedelta(seconds=i)) for i in range(3)]
    assert ledger.links.record_link_clicks(first, now) == 3
    assert ledger.links.record_link_clicks([*first, _click("k3", "LIVECODE", now)], now) == 1


def test_the_coupon_key_is_stored_once_and_each_code_is_queued_once_until_settled(
    backend: tuple[Any, Given], now: datetime
) -> None:
    ledger, given = backend
    given("C1", "CODEONE")
    given("C2", "CODETWO")
    rail = DiscountRail.STRIPE
    coupon = CouponInstruction(
        coupon_id="friend-10",
        name="Friend",
        percent_off=Decimal("10"),
        amount_off=None,
        duration="once",
        duration_in_months=None,
        rail=rail,
        idempotency_key=CouponInstruction.key_for("friend-10", rail),
    )
    first = ledger.discounts.prepare_coupon(coupon, now)
    again = ledger.discounts.prepare_coupon(coupon, now + timedelta(hours=1))
    assert (first.status, again.status) == ("pending", "pending")
    assert again.instruction.idempotency_key == "program:friend-10:coupon"
    assert again.instruction.key_created_at == now
    ledger.discounts.record_coupon_result(
        coupon, DiscountResult("friend-10", DiscountOutcome.SUCCEEDED, "co_1"), now
    )
    assert ledger.discounts.prepare_coupon(coupon, now).provider_ref == "co_1"

    assert ledger.discounts.queue_promotion_codes("friend-10", rail, now) == 2
    assert ledger.discounts.queue_promotion_codes("friend-10", rail, now) == 0
    pending = ledger.discounts.pending_promotion_codes(rail, "", 10)
    assert [(p.code, p.idempotency_key) for p in pending] == [
        ("CODEONE", "code:CODEONE:promotion_code"),
        ("CODETWO", "code:CODETWO:promotion_code"),
    ]
    assert [p.code for p in ledger.discounts.pending_promotion_codes(rail, "CODEONE", 10)] == [
        "CODETWO"
    ]
    ledger.discounts.record_promotion_code_results(
        rail,
        [
            DiscountResult("CODEONE", DiscountOutcome.SUCCEEDED, "promo_1"),
            DiscountResult("CODETWO", DiscountOutcome.RETRYABLE, error="timeout"),
        ],
        now,
    )
    assert ledger.discounts.referee_discounts(rail) == {"pending": 1, "succeeded": 1, "failed": 0}
    assert [p.code for p in ledger.discounts.pending_promotion_codes(rail, "", 10)] == ["CODETWO"]
