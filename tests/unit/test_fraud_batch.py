"""Fraud flags over a batch: same address, Stripe customer or card, velocity and cycles."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from domain.fraud import (
    REFERRAL_CYCLE,
    SAME_CARD,
    SAME_EMAIL,
    SAME_STRIPE_CUSTOMER,
    SELF_REFERRAL_CLICK,
    FirstClicks,
    FraudHistory,
    ReferralEdge,
    flags_for_batch,
    normalize_email,
    only_own_clicks,
    velocity_flag,
)
from domain.models import Contact, Conversion, Milestone
from domain.program import Fraud
from tests.conftest import contact

T0 = datetime(2026, 10, 1, 12, 0, tzinfo=UTC)
REFERRER = contact(
    "REF1", "ACME", email="jane.doe+referrals@gmail.com", stripe_customer_id="cus_jane"
)
CAP = Fraud(max_conversions_per_window=3, window_hours=24)


def conversion(
    conversion_id: str = "conv-1",
    *,
    referrer: str = REFERRER.contact_id,
    referee_contact: str | None = "NEWC1",
    referee_account: str | None = "NEW1",
    at: datetime = T0,
    card: str | None = None,
) -> Conversion:
    return Conversion(
        conversion_id=conversion_id,
        source_event=f"crm:{conversion_id}",
        referral_code="RABCDEFGHIJKLMNOPQRST",
        referrer_id=referrer,
        referee_account_id=referee_account,
        referee_contact_id=referee_contact,
        milestone=Milestone.CUSTOMER,
        occurred_at=at,
        amount=None,
        referee_email_domain="newco.example",
        card_fingerprint=card,
    )


def referee(email: str | None = "ana@newco.example", **kw: Any) -> Contact:
    return contact("NEWC1", "NEW1", email=email, **kw)


def flags(
    *conversions: Conversion,
    history: FraudHistory | None = None,
    referrers: dict[str, Contact] | None = None,
    rules: Fraud = CAP,
) -> dict[str, tuple[str, ...]]:
    return flags_for_batch(
        conversions,
        referrers or {REFERRER.contact_id: REFERRER},
        history or FraudHistory(referees={"NEWC1": referee()}),
        rules,
    )


def test_an_unrelated_referee_raises_no_flag() -> None:
    assert flags(conversion()) == {"conv-1": ()}


def test_the_single_conversion_checks_still_apply_in_a_batch() -> None:
    found = flags(conversion(referee_account=REFERRER.account_id))
    assert found["conv-1"] == ("self_referral:same_account",)


# -- same email address -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("email", "mailbox"),
    [
        ("Jane.Doe@Example.com", "jane.doe@example.com"),
        ("jane+promo@example.com", "jane@example.com"),
        ("j.a.n.e+x@gmail.com", "jane@gmail.com"),
        ("Jane.Doe@googlemail.com", "janedoe@gmail.com"),
        ("jane.doe@outlook.com", "jane.doe@outlook.com"),
        (" jane@example.com ", "jane@example.com"),
        ("+tag@example.com", None),
        ("no-at-sign", None),
        ("jane@", None),
        (None, None),
    ],
)
def test_an_address_is_normalized_to_the_mailbox_it_delivers_to(
    email: str | None, mailbox: str | None
) -> None:
    assert normalize_email(email) == mailbox


@pytest.mark.parametrize(
    "their_email",
    ["jane.doe@gmail.com", "JaneDoe+friend@googlemail.com", "j.a.n.e.d.o.e@gmail.com"],
)
def test_a_referee_with_the_referrers_own_mailbox_is_flagged(their_email: str) -> None:
    history = FraudHistory(referees={"NEWC1": referee(their_email)})
    assert flags(conversion(), history=history)["conv-1"] == (SAME_EMAIL,)


def test_another_mailbox_on_the_same_free_provider_is_not_flagged() -> None:
    history = FraudHistory(referees={"NEWC1": referee("john.roe@gmail.com")})
    assert flags(conversion(), history=history)["conv-1"] == ()


def test_dots_matter_outside_gmail() -> None:
    referrer = contact("REF2", "ACME2", email="jane.doe@outlook.com")
    history = FraudHistory(referees={"NEWC1": referee("janedoe@outlook.com")})
    found = flags(conversion(referrer="REF2"), history=history, referrers={"REF2": referrer})
    assert found["conv-1"] == ()


def test_a_referee_whose_address_is_unknown_is_not_flagged_for_it() -> None:
    history = FraudHistory(referees={"NEWC1": referee(None)})
    assert flags(conversion(), history=history)["conv-1"] == ()
    assert flags(conversion(referee_contact=None), history=FraudHistory())["conv-1"] == ()


def test_no_flag_ever_carries_an_address_a_fingerprint_or_a_customer_id() -> None:
    history = FraudHistory(
        referees={"NEWC1": referee("jane.doe@gmail.com", stripe_customer_id="cus_jane")},
        referrer_cards={REFERRER.contact_id: frozenset({"fpCARD123"})},
    )
    found = flags(conversion(card="fpCARD123"), history=history)["conv-1"]
    assert {SAME_EMAIL, SAME_STRIPE_CUSTOMER, SAME_CARD} <= set(found)
    for flag in found:
        assert "@" not in flag
        assert "jane" not in flag.lower()
        assert "fpCARD123" not in flag
        assert "cus_" not in flag
        assert "," not in flag  # the ledger keeps flags comma-joined


# -- same Stripe customer, same card ---------------------------------------------------


def test_a_referee_paying_as_the_referrers_stripe_customer_is_flagged() -> None:
    history = FraudHistory(
        referees={"NEWC1": referee()}, referee_customers={"conv-1": frozenset({"cus_jane"})}
    )
    assert flags(conversion(), history=history)["conv-1"] == (SAME_STRIPE_CUSTOMER,)


def test_a_referee_contact_on_the_referrers_stripe_customer_is_flagged() -> None:
    history = FraudHistory(referees={"NEWC1": referee(stripe_customer_id="cus_jane")})
    assert flags(conversion(), history=history)["conv-1"] == (SAME_STRIPE_CUSTOMER,)


def test_a_referee_paying_as_another_customer_is_not_flagged() -> None:
    history = FraudHistory(referee_customers={"conv-1": frozenset({"cus_other"})})
    assert flags(conversion(), history=history)["conv-1"] == ()


def test_a_referrer_without_a_stripe_customer_is_never_flagged_for_one() -> None:
    referrer = contact("REF3", "ACME3", email="x@acme3.example")
    history = FraudHistory(referee_customers={"conv-1": frozenset({"cus_x"})})
    assert flags(conversion(referrer="REF3"), history=history, referrers={"REF3": referrer}) == {
        "conv-1": ()
    }


def test_a_referee_paying_with_a_card_the_referrer_paid_with_is_flagged() -> None:
    history = FraudHistory(referrer_cards={REFERRER.contact_id: frozenset({"fpAAA", "fpBBB"})})
    assert flags(conversion(card="fpBBB"), history=history)["conv-1"] == (SAME_CARD,)


def test_another_card_or_an_unknown_one_is_not_flagged() -> None:
    history = FraudHistory(referrer_cards={REFERRER.contact_id: frozenset({"fpAAA"})})
    assert flags(conversion(card="fpZZZ"), history=history)["conv-1"] == ()
    assert flags(conversion(card=None), history=history)["conv-1"] == ()


# -- velocity ------------------------------------------------------------------------------


def _burst(n: int, *, step: timedelta = timedelta(hours=1)) -> list[Conversion]:
    return [
        conversion(f"conv-{i}", referee_contact=f"R{i}", referee_account=f"RA{i}", at=T0 + i * step)
        for i in range(n)
    ]


def test_exactly_the_cap_within_the_window_is_not_flagged() -> None:
    found = flags(*_burst(3), history=FraudHistory())
    assert all(v == () for v in found.values())


def test_the_conversion_beyond_the_cap_is_flagged_and_not_the_ones_before() -> None:
    found = flags(*_burst(4), history=FraudHistory())
    assert [found[f"conv-{i}"] for i in range(4)] == [(), (), (), (velocity_flag(CAP),)]
    assert velocity_flag(CAP) == "velocity:over_3_per_24h"


def test_a_conversion_exactly_one_window_old_no_longer_counts() -> None:
    # 0h, 12h, 23h, then 24h: the first has just left the window.
    times = [T0, T0 + timedelta(hours=12), T0 + timedelta(hours=23), T0 + timedelta(hours=24)]
    batch = [
        conversion(f"conv-{i}", referee_contact=f"R{i}", referee_account=f"RA{i}", at=t)
        for i, t in enumerate(times)
    ]
    assert flags(*batch, history=FraudHistory())["conv-3"] == ()
    # One second earlier, all four are inside one window.
    batch[3] = conversion(
        "conv-3", referee_contact="R3", referee_account="RA3", at=times[3] - timedelta(seconds=1)
    )
    assert flags(*batch, history=FraudHistory())["conv-3"] == (velocity_flag(CAP),)


def test_conversions_already_in_the_ledger_count_once_each() -> None:
    earlier = {f"old-{i}": T0 - timedelta(hours=i + 1) for i in range(3)}
    this = conversion("conv-new", at=T0)
    # The ledger's recent conversions may include the batch's own: counted once.
    history = FraudHistory(recent={REFERRER.contact_id: earlier | {"conv-new": T0}})
    assert flags(this, history=history)["conv-new"] == (velocity_flag(CAP),)
    history = FraudHistory(recent={REFERRER.contact_id: dict(list(earlier.items())[:2])})
    assert flags(this, history=history)["conv-new"] == ()


def test_the_velocity_cap_is_per_referrer() -> None:
    other = contact("REF9", "ACME9", email="o@acme9.example")
    batch = [*_burst(3), conversion("conv-o", referrer="REF9", referee_contact="X", at=T0)]
    found = flags(
        *batch, history=FraudHistory(), referrers={REFERRER.contact_id: REFERRER, "REF9": other}
    )
    assert all(v == () for v in found.values())


# -- referral cycles -----------------------------------------------------------------------

A = contact("A", "ACC-A", email="a@a.example")
B = contact("B", "ACC-B", email="b@b.example")
C = contact("C", "ACC-C", email="c@c.example")
PEOPLE = {p.contact_id: p for p in (A, B, C)}


def referred(conversion_id: str, referee: Contact, referrer: Contact) -> Conversion:
    return conversion(
        conversion_id,
        referrer=referrer.contact_id,
        referee_contact=referee.contact_id,
        referee_account=referee.account_id,
    )


def edge(conversion_id: str, referee: Contact, referrer: Contact) -> ReferralEdge:
    return ReferralEdge(
        conversion_id,
        referee.account_id,
        referee.contact_id,
        referrer.contact_id,
        referrer.account_id,
    )


def test_a_referrer_referred_back_by_their_referee_is_a_cycle() -> None:
    # A referred B earlier; now B refers A.
    history = FraudHistory(edges=[edge("ab", B, A)])
    found = flags(referred("ba", A, B), history=history, referrers=PEOPLE)
    assert found["ba"] == (REFERRAL_CYCLE,)


def test_a_cycle_of_three_is_found() -> None:
    # A referred B, B referred C; now C refers A.
    history = FraudHistory(edges=[edge("ab", B, A), edge("bc", C, B)])
    found = flags(referred("ca", A, C), history=history, referrers=PEOPLE)
    assert found["ca"] == (REFERRAL_CYCLE,)


def test_a_cycle_closed_inside_one_batch_flags_the_conversion_closing_it() -> None:
    batch = [referred("ab", B, A), referred("bc", C, B), referred("ca", A, C)]
    found = flags(*batch, history=FraudHistory(), referrers=PEOPLE)
    # Every edge of a cycle closes it: the whole ring goes to a person.
    assert found == {"ab": (REFERRAL_CYCLE,), "bc": (REFERRAL_CYCLE,), "ca": (REFERRAL_CYCLE,)}


def test_a_chain_without_a_way_back_is_no_cycle() -> None:
    # A referred B, B referred C; now A refers someone new: no way back to them.
    history = FraudHistory(edges=[edge("ab", B, A), edge("bc", C, B)])
    found = flags(referred("cd", contact("D", "ACC-D"), C), history=history, referrers=PEOPLE)
    assert found["cd"] == ()


def test_a_colleague_on_the_referees_account_closes_the_cycle() -> None:
    # A referred B; now B refers A's colleague on A's account: parties are accounts.
    colleague = contact("A2", "ACC-A", email="a2@a.example")
    history = FraudHistory(edges=[edge("ab", B, A)])
    found = flags(
        referred("ba2", colleague, B), history=history, referrers=PEOPLE | {"A2": colleague}
    )
    assert REFERRAL_CYCLE in found["ba2"]


def test_a_referee_known_by_contact_only_is_placed_on_its_account() -> None:
    history = FraudHistory(referees={"A": A}, edges=[edge("ab", B, A)])
    this = conversion("ba", referrer="B", referee_contact="A", referee_account=None)
    assert flags(this, history=history, referrers=PEOPLE)["ba"] == (REFERRAL_CYCLE,)


HOUR = timedelta(hours=1)


@pytest.mark.parametrize(
    ("own", "others", "flagged"),
    [
        (T0 - HOUR, None, True),  # only the referrer clicked, before the conversion
        (T0, None, True),  # at the conversion's time still counts as before it
        (T0 - HOUR, T0 - 2 * HOUR, False),  # someone else clicked first
        (T0 - 2 * HOUR, T0 - HOUR, False),  # someone else clicked too
        (T0 - HOUR, T0 + HOUR, True),  # others' clicks after the conversion led nowhere
        (T0 + HOUR, None, False),  # the referrer's click came after
        (None, T0 - HOUR, False),  # a person's click, none of the referrer's
        (None, None, False),  # the code was typed: no click says anything
    ],
)
def test_a_link_clicked_only_by_its_referrer_before_the_conversion_is_a_self_referral_signal(
    own: datetime | None, others: datetime | None, flagged: bool
) -> None:
    clicks = FirstClicks(own=own, others=others)

    assert only_own_clicks(clicks, T0) is flagged
    history = FraudHistory(
        referees={"NEWC1": referee()}, link_clicks={"RABCDEFGHIJKLMNOPQRST": clicks}
    )
    assert (SELF_REFERRAL_CLICK in flags(conversion(), history=history)["conv-1"]) is flagged


def test_the_own_click_flag_reads_the_clicks_of_the_conversions_code_only() -> None:
    history = FraudHistory(
        referees={"NEWC1": referee()}, link_clicks={"ROTHERCODE": FirstClicks(own=T0 - HOUR)}
    )

    assert SELF_REFERRAL_CLICK not in flags(conversion(), history=history)["conv-1"]
