"""The conversion use cases on the in-memory ledger: one unit of work per batch, the
domain's placement rules, and nothing kept of a batch that fails."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from domain.models import Conversion, Milestone, derived_id
from domain.money import Money
from domain.placement import EarlierConversion, Placement, placement
from domain.registration import Registration, RegistrationStatus
from domain.stores.partners import RegisteredCredit
from domain.stripe_conversions import StripeConversion
from integrations.ledger.memory import InMemoryLedger
from tasks.use_cases.conversions import (
    record_crm_conversions,
    record_registered_conversions,
    record_stripe_conversions,
)

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
CODE_A = "RAAAAAAAAAAAAAAAAAAAA"
CODE_B = "RBBBBBBBBBBBBBBBBBBBB"


def conversion(
    n: int, account: str, code: str = CODE_A, milestone: Milestone = Milestone.CUSTOMER
) -> Conversion:
    return Conversion(
        conversion_id=derived_id("test-conversion", str(n)),
        source_event=f"crm:evt-{n}",
        referral_code=code,
        referrer_id="P1",
        referee_account_id=account,
        referee_contact_id=None,
        milestone=milestone,
        occurred_at=NOW,
        amount=Money(100_00, "EUR"),
    )


def stripe(conv: Conversion, *refs: str, first: bool = True) -> StripeConversion:
    return StripeConversion("evt", conv, "cus_1", refs, Money(100_00, "EUR"), first)


def registration(registration_id: str = "reg-1") -> Registration:
    return Registration(
        registration_id=registration_id,
        partner_id="P1",
        domain="acme.example",
        contact_ref="CRM-1",
        evidence="met at the fair in May",
        registered_at=NOW - timedelta(days=10),
        expires_at=NOW + timedelta(days=50),
    )


# -- the rule ---------------------------------------------------------------------------------


def test_a_referee_never_converted_is_inserted() -> None:
    assert placement(conversion(1, "ACC-1"), None, None) is Placement.INSERT


def test_a_referee_converted_under_another_code_is_refused() -> None:
    earlier = EarlierConversion("c-0", CODE_B, has_stripe=False)
    assert placement(conversion(1, "ACC-1"), None, earlier) is Placement.REFUSE


def test_a_stripe_first_payment_joins_the_crm_conversion_of_its_referee() -> None:
    earlier = EarlierConversion("c-0", CODE_A, has_stripe=False)
    first = conversion(1, "ACC-1")
    assert placement(first, stripe(first, "in_1"), earlier) is Placement.JOIN
    # A renewal, or a referee whose conversion already has its payment: nothing new.
    assert placement(first, stripe(first, "in_2", first=False), earlier) is Placement.DUPLICATE
    paid = EarlierConversion("c-0", CODE_A, has_stripe=True)
    assert placement(first, stripe(first, "in_2"), paid) is Placement.DUPLICATE


# -- the use cases ----------------------------------------------------------------------------


def test_a_crm_batch_is_placed_in_order_in_one_unit_of_work_under_the_lock() -> None:
    memory = InMemoryLedger()
    batch = [conversion(1, "ACC-1"), conversion(2, "ACC-1"), conversion(3, "ACC-1", CODE_B)]

    result = record_crm_conversions(memory, [7, 8, 9], batch, [], {}, NOW)

    assert result.new == (batch[0].conversion_id,)
    assert (result.duplicates, result.quarantined, result.events_marked) == (1, 1, 3)
    assert memory.committed == 1
    assert memory.conversions.locks == 1
    assert [r.record for r in memory.conversions.quarantined] == ["crm:evt-3"]
    assert "conversion " + batch[0].conversion_id in memory.conversions.quarantined[0].reason
    # The touches of the batch's new conversions are stored once, for the whole batch.
    assert memory.touchpoints.calls == [("record_conversion_touches", [batch[0].conversion_id])]


def test_the_same_stripe_payment_delivered_twice_makes_one_conversion() -> None:
    memory = InMemoryLedger()
    first = conversion(1, "ACC-1")
    again = conversion(2, "ACC-1")

    result = record_stripe_conversions(
        memory, [], [stripe(first, "in_1", "pi_1"), stripe(again, "pi_1", "ch_1")], [], {}, NOW
    )

    assert result.new == (first.conversion_id,)
    assert result.joined == 1  # the second delivery added ch_1
    assert {p.conversion_id for p in memory.conversions.payments.values()} == {first.conversion_id}


def test_a_won_deal_through_a_registration_converts_it_after_its_extension() -> None:
    memory = InMemoryLedger()
    held = registration()
    memory.partners.by_id[held.registration_id] = held
    longer = replace(held, expires_at=held.expires_at + timedelta(days=30), extensions=1)
    won = conversion(1, "ACC-1")

    result = record_registered_conversions(
        memory, [1], [RegisteredCredit(won, held.registration_id)], [longer], [], {}, NOW
    )

    assert (result.extended, result.converted, result.events_marked) == (1, 1, 1)
    kept = memory.partners.by_id[held.registration_id]
    assert (kept.status, kept.conversion_id) == (RegistrationStatus.CONVERTED, won.conversion_id)
    assert kept.extensions == 1
    assert [name for name, _ in memory.partners.calls] == ["extend", "convert"]


class Crash(Exception):
    pass


def test_a_batch_that_fails_leaves_nothing_behind(monkeypatch: pytest.MonkeyPatch) -> None:
    memory = InMemoryLedger()

    def crash(*_: object) -> int:
        raise Crash

    monkeypatch.setattr(memory.conversions, "mark_events_converted", crash)
    with pytest.raises(Crash):
        record_crm_conversions(memory, [1], [conversion(1, "ACC-1")], [], {}, NOW)

    assert memory.conversions.conversions == {}
    assert memory.rolled_back == 1
