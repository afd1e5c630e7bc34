"""Rows of one read that disagree about one contact or account are all quarantined."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

from domain.fraud import DestinationChange, destination_changes
from domain.models import Account, ReferrerType
from domain.quarantine import CONFLICTING_ROWS, split_conflicts
from tests.conftest import contact

JANE = contact("C1", stripe_customer_id="cus_jane")


def test_rows_for_different_ids_are_all_kept() -> None:
    other = contact("C2")
    split = split_conflicts("files", [], [JANE, other])

    assert split.contacts == (JANE, other)
    assert split.rejected == ()


def test_a_row_said_twice_is_kept_once_and_refuses_nothing() -> None:
    split = split_conflicts("files", [], [JANE, JANE])

    assert split.contacts == (JANE,)
    assert split.rejected == ()
    assert split.duplicates == 1


def test_every_row_of_a_contact_whose_rows_disagree_is_refused_naming_the_fields() -> None:
    attacker = replace(
        JANE,
        email="attacker@evil.example",
        referrer_type=ReferrerType.PARTNER,
        stripe_account_id="acct_attacker",
    )
    other = contact("C2")
    split = split_conflicts("files", [], [JANE, other, attacker])

    assert split.contacts == (other,)
    assert [r.reason for r in split.rejected] == [CONFLICTING_ROWS, CONFLICTING_ROWS]
    assert {r.field for r in split.rejected} == {"email,referrer_type,stripe_account_id"}
    assert len({r.record for r in split.rejected}) == 2
    assert all(r.record.startswith("contact:C1:") for r in split.rejected)
    assert "stripe_account_id=acct_attacker" in split.rejected[1].raw


def test_the_same_conflict_read_again_gets_the_same_records() -> None:
    attacker = replace(JANE, stripe_account_id="acct_attacker")
    first = split_conflicts("files", [], [JANE, attacker])
    again = split_conflicts("files", [], [attacker, JANE])

    assert {r.record for r in first.rejected} == {r.record for r in again.rejected}


def test_accounts_whose_rows_disagree_are_refused_too() -> None:
    acme = Account("A1", "Acme", "acme.example", date(2024, 1, 1))
    split = split_conflicts("files", [acme, replace(acme, domain="evil.example")], [JANE])

    assert split.accounts == ()
    assert split.contacts == (JANE,)
    assert [(r.record[:10], r.field) for r in split.rejected] == [
        ("account:A1", "domain"),
        ("account:A1", "domain"),
    ]


def test_a_new_contact_changes_no_payout_destination() -> None:
    assert destination_changes({}, [replace(JANE, stripe_account_id="acct_1")]) == []


def test_the_same_destinations_read_again_change_nothing() -> None:
    assert destination_changes({"C1": JANE}, [JANE]) == []


def test_a_row_without_destinations_keeps_the_stored_ones_and_changes_nothing() -> None:
    assert destination_changes({"C1": JANE}, [replace(JANE, stripe_customer_id=None)]) == []


def test_a_new_customer_id_and_a_first_connected_account_are_both_changes() -> None:
    moved = replace(JANE, stripe_customer_id="cus_other", stripe_account_id="acct_attacker")

    assert destination_changes({"C1": JANE}, [moved]) == [
        DestinationChange("C1", "stripe_account_id", None, "acct_attacker"),
        DestinationChange("C1", "stripe_customer_id", "cus_jane", "cus_other"),
    ]
