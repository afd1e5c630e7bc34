"""``publish_referee_discounts`` over the real ledger: the coupon once, each code once,
whatever crashes in between (SQLite, and Postgres when configured)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import requests
from sqlalchemy import select

from domain.discounts import (
    CouponInstruction,
    DiscountOutcome,
    DiscountRail,
    DiscountResult,
    PromotionCodeInstruction,
)
from domain.program import Program
from integrations.ledger.memory.discounts import InMemoryDiscountStore
from integrations.ledger.sql import SqlLedger
from integrations.ledger.tables import DiscountCouponRow, RefereeDiscountRow
from integrations.payments.fake_discounts import RecordingDiscounts
from integrations.payments.ledger_only_discounts import LedgerOnlyDiscounts
from integrations.payments.stripe_discounts import StripeDiscounts
from integrations.payments.stripe_rail import build_stripe_client
from integrations.payments.stripe_stand_in import FakeStripe
from tasks.discounts import publish_referee_discounts
from tasks.use_cases.asks import record_ask_decisions
from tests.conftest import contact, people_batch

STRIPE = DiscountRail.STRIPE


class Crash(Exception):
    """The process dies here."""


def given_codes(ledger: SqlLedger, now: datetime, *contact_ids: str) -> dict[str, str]:
    """Referrers holding codes; contact id -> code."""
    ledger.sources.record_batch(people_batch(*(contact(c, f"A-{c}") for c in contact_ids)), now)
    codes = {c: f"R{c:0>20}" for c in contact_ids}
    record_ask_decisions(ledger, [], codes, now, now)
    return codes


def rows(ledger: SqlLedger, table: Any) -> list[dict[str, Any]]:
    with ledger.engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(table.__table__)).mappings()]


def publish(
    ledger: SqlLedger, discounts: Any, program: Program, now: datetime, batch_size: int = 1000
) -> Any:
    return publish_referee_discounts.fn(ledger.discounts, discounts, program, now, batch_size)


def test_the_coupon_then_every_code_is_published_once_with_the_keys_stored_first(
    ledger: SqlLedger, now: datetime, program: Program
) -> None:
    codes = given_codes(ledger, now, "C1", "C2", "C3")
    fake = RecordingDiscounts()

    report = publish(ledger, fake, program, now, batch_size=2)

    assert (report.coupon, report.queued, report.published) == ("succeeded", 3, 3)
    (made,) = fake.coupons
    assert made.idempotency_key == "program:referral-friend-10:coupon"
    assert sorted(p.code for p in fake.promotion_codes) == sorted(codes.values())
    stored = {r["code"]: r for r in rows(ledger, RefereeDiscountRow)}
    for contact_id, code in codes.items():
        assert stored[code]["idempotency_key"] == f"code:{code}:promotion_code"
        assert stored[code]["contact_id"] == contact_id
        assert stored[code]["status"] == "succeeded"
        assert stored[code]["provider_ref"] == f"promo_{code}"
    assert ledger.discounts.referee_discounts(STRIPE) == {"pending": 0, "succeeded": 3, "failed": 0}


def test_running_again_sends_nothing_and_new_codes_are_published_alone(
    ledger: SqlLedger, now: datetime, program: Program
) -> None:
    given_codes(ledger, now, "C1", "C2")
    fake = RecordingDiscounts()
    publish(ledger, fake, program, now)
    calls = len(fake.calls)

    again = publish(ledger, fake, program, now)
    assert (again.queued, again.published) == (0, 0)
    assert len(fake.calls) == calls

    (late,) = given_codes(ledger, now, "C9").values()
    later = publish(ledger, fake, program, now)
    assert (later.queued, later.published) == (1, 1)
    assert [p.code for p in fake.promotion_codes].count(late) == 1
    assert len(fake.promotion_codes) == 3
    assert len(fake.coupons) == 1


class CrashingDiscounts(RecordingDiscounts):
    """Dies once, before or after the provider acted on the codes."""

    def __init__(self, when: str) -> None:
        super().__init__()
        self.when = when

    def create_promotion_codes(
        self, codes: Sequence[PromotionCodeInstruction]
    ) -> list[DiscountResult]:
        if self.when == "before":
            self.when = "done"
            raise Crash
        results = super().create_promotion_codes(codes)
        if self.when == "after":
            self.when = "done"
            raise Crash
        return results


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_crash_between_storing_the_keys_and_recording_the_answer_creates_nothing_twice(
    ledger: SqlLedger, now: datetime, program: Program, when: str
) -> None:
    codes = given_codes(ledger, now, "C1", "C2")
    provider = CrashingDiscounts(when)
    with pytest.raises(Crash):
        publish(ledger, provider, program, now)
    # The keys were committed before the call: the rows wait, pending, for the next run.
    assert ledger.discounts.referee_discounts(STRIPE)["pending"] == 2

    report = publish(ledger, provider, program, now + timedelta(minutes=5))

    assert report.published == 2
    assert sorted(p.code for p in provider.promotion_codes) == sorted(codes.values())
    # The rerun sent the keys stored before the crash.
    assert set(provider.calls[-2:]) == {f"code:{c}:promotion_code" for c in codes.values()}
    assert ledger.discounts.referee_discounts(STRIPE) == {"pending": 0, "succeeded": 2, "failed": 0}


def test_a_lost_answer_stays_pending_and_the_same_key_settles_it(
    ledger: SqlLedger, now: datetime, program: Program
) -> None:
    (code,) = given_codes(ledger, now, "C1").values()
    provider = RecordingDiscounts()
    provider.script(code, ["lost_response"])

    first = publish(ledger, provider, program, now)
    assert (first.published, first.retry_later) == (0, 1)
    (row,) = rows(ledger, RefereeDiscountRow)
    assert (row["status"], row["tries"], row["error"]) == ("pending", 1, "response lost")

    second = publish(ledger, provider, program, now)
    assert second.published == 1
    assert len(provider.promotion_codes) == 1
    (row,) = rows(ledger, RefereeDiscountRow)
    assert (row["status"], row["tries"]) == ("succeeded", 2)


def test_no_code_is_published_until_the_coupon_exists(
    ledger: SqlLedger, now: datetime, program: Program
) -> None:
    given_codes(ledger, now, "C1")
    provider = RecordingDiscounts()
    provider.script("referral-friend-10", [DiscountOutcome.RETRYABLE])

    waiting = publish(ledger, provider, program, now)
    assert (waiting.coupon, waiting.queued) == ("pending", 0)
    assert provider.promotion_codes == []

    done = publish(ledger, provider, program, now)
    assert (done.coupon, done.published) == ("succeeded", 1)


def test_a_code_refused_for_good_is_reported_and_not_sent_again(
    ledger: SqlLedger, now: datetime, program: Program
) -> None:
    codes = given_codes(ledger, now, "C1", "C2")
    provider = RecordingDiscounts()
    provider.script(codes["C1"], [DiscountOutcome.FAILED])

    report = publish(ledger, provider, program, now)
    assert (report.published, report.failed) == (1, 1)
    calls = len(provider.calls)
    publish(ledger, provider, program, now)
    assert len(provider.calls) == calls
    assert ledger.discounts.referee_discounts(STRIPE) == {"pending": 0, "succeeded": 1, "failed": 1}


def test_changed_coupon_terms_stop_publishing_with_a_message_naming_the_fix(
    ledger: SqlLedger, now: datetime, program: Program
) -> None:
    given_codes(ledger, now, "C1")
    provider = RecordingDiscounts()
    publish(ledger, provider, program, now)
    assert program.referee_discount is not None
    richer = program.model_copy(
        update={
            "referee_discount": program.referee_discount.model_copy(
                update={"percent_off": Decimal("20")}
            )
        }
    )
    given_codes(ledger, now, "C2")

    report = publish(ledger, provider, richer, now)

    assert report.coupon == "failed"
    assert "new coupon_id" in (report.error or "")
    assert len(provider.promotion_codes) == 1


def test_a_program_without_a_referee_discount_publishes_nothing(
    ledger: SqlLedger, now: datetime, program: Program
) -> None:
    given_codes(ledger, now, "C1")
    provider = RecordingDiscounts()
    report = publish(ledger, provider, program.model_copy(update={"referee_discount": None}), now)
    assert report.coupon == "none"
    assert provider.calls == []
    assert rows(ledger, RefereeDiscountRow) == []


def test_without_a_stripe_key_discounts_are_ledger_only_and_stripe_publishes_them_later(
    ledger: SqlLedger, now: datetime, program: Program
) -> None:
    (code,) = given_codes(ledger, now, "C1").values()

    report = publish(ledger, LedgerOnlyDiscounts(), program, now)

    assert (report.rail, report.published) == ("ledger_only", 1)
    (coupon_row,) = rows(ledger, DiscountCouponRow)
    assert coupon_row["provider_ref"] == "ledger-only:referral-friend-10"
    assert coupon_row["idempotency_key"] == "program:referral-friend-10:coupon:ledger"
    (row,) = rows(ledger, RefereeDiscountRow)
    assert (row["rail"], row["provider_ref"]) == ("ledger_only", f"ledger-only:{code}")

    # A Stripe key is configured later: the code is published at Stripe, under its key.
    stripe_side = RecordingDiscounts()
    publish(ledger, stripe_side, program, now)
    assert [p.idempotency_key for p in stripe_side.promotion_codes] == [
        f"code:{code}:promotion_code"
    ]
    assert {r["rail"] for r in rows(ledger, RefereeDiscountRow)} == {"ledger_only", "stripe"}


# -- over real HTTP, against the fake Stripe ----------------------------------------------


@pytest.fixture
def fake_stripe() -> Iterator[FakeStripe]:
    with FakeStripe(api_key="sk_test_discounts") as server:
        yield server


@pytest.fixture
def stripe_discounts(fake_stripe: FakeStripe) -> Iterator[StripeDiscounts]:
    session = requests.Session()
    client = build_stripe_client("sk_test_discounts", fake_stripe.url, 0, session=session)
    yield StripeDiscounts(client, clock=fake_stripe.now)
    session.close()


def test_at_stripe_a_rerun_after_lost_answers_creates_nothing_twice(
    ledger: SqlLedger,
    now: datetime,
    program: Program,
    fake_stripe: FakeStripe,
    stripe_discounts: StripeDiscounts,
) -> None:
    codes = given_codes(ledger, now, "C1", "C2")
    # Stripe creates the coupon and the first code, but both answers are lost.
    fake_stripe.script("POST /v1/coupons", ["commit_then_drop"])

    first = publish(ledger, stripe_discounts, program, now)
    assert first.coupon == "pending"
    fake_stripe.script("POST /v1/promotion_codes", ["commit_then_500"])
    second = publish(ledger, stripe_discounts, program, now)
    assert (second.coupon, second.published, second.retry_later) == ("succeeded", 1, 1)
    third = publish(ledger, stripe_discounts, program, now)
    assert third.published == 1
    publish(ledger, stripe_discounts, program, now)

    assert len(fake_stripe.coupons) == 1
    assert sorted(p["code"] for p in fake_stripe.promotion_codes) == sorted(codes.values())
    assert all(p["metadata"] == {"referral_code": p["code"]} for p in fake_stripe.promotion_codes)
    stored = {r["code"]: r["provider_ref"] for r in rows(ledger, RefereeDiscountRow)}
    assert stored == {p["code"]: p["id"] for p in fake_stripe.promotion_codes}
    assert CouponInstruction.key_for("referral-friend-10") in {
        r.idempotency_key for r in fake_stripe.requests
    }


def test_on_the_in_memory_store_each_key_is_stored_before_its_provider_call(
    now: datetime, program: Program
) -> None:
    store = InMemoryDiscountStore()
    store.referral_codes.update({"RCODE1": "C1", "RCODE2": "C2"})
    fake = RecordingDiscounts()

    report = publish_referee_discounts.fn(store, fake, program, now, 1)

    assert (report.coupon, report.queued, report.published) == ("succeeded", 2, 2)
    assert [name for name, _ in store.calls] == [
        "prepare_coupon",
        "record_coupon_result",
        "queue_promotion_codes",
        "pending_promotion_codes",
        "record_promotion_code_results",
        "pending_promotion_codes",
        "record_promotion_code_results",
        "pending_promotion_codes",
    ]
    assert store.referee_discounts(STRIPE) == {"pending": 0, "succeeded": 2, "failed": 0}
