"""Partner deal registration rules: first to register wins, the window and its
extensions, and what a claim must hold to be registered at all."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from config.program import parse_program
from domain.errors import ConfigError, InputRejected
from domain.models import Contact, EventType, Milestone, ReferrerType, SourceEvent
from domain.money import Money
from domain.program import Program, RegistrationRules
from domain.registration import (
    Claim,
    Registration,
    RegistrationStatus,
    clean_evidence,
    contact_reference,
    decide_claim,
    email_reference,
    extended,
    normalize_domain,
    parse_claim,
    registered_conversion,
)

NOW = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
RULES = RegistrationRules()
EVIDENCE = "Discovery call on 28 Oct, budget confirmed by the CFO"
CODE = "R" + "P" * 20
PARTNER = Contact("P1", "PA", "Pat Partner", "pat@partner.example", ReferrerType.PARTNER)


def claim(partner: str = "P1", domain: str = "acme.com") -> Claim:
    return Claim(partner, domain, "CRM-77", EVIDENCE)


def registered(partner: str = "P1", at: datetime = NOW, **changes: object) -> Registration:
    decision = decide_claim(None, claim(partner), at, RULES)
    assert decision.registration is not None
    return replace(decision.registration, **changes)  # type: ignore[arg-type]


# -- the rules in program.yaml -------------------------------------------------------------


def test_the_default_window_is_sixty_days_with_thirty_day_extensions() -> None:
    rules = Program().registration
    assert (rules.window_days, rules.extension_days, rules.max_total_days) == (60, 30, 180)


@pytest.mark.parametrize("days", [29, 91])
def test_a_window_outside_thirty_to_ninety_days_is_refused_naming_the_field(days: int) -> None:
    with pytest.raises(ConfigError, match=r"registration\.window_days"):
        parse_program({"registration": {"window_days": days}})


@pytest.mark.parametrize("days", [30, 90])
def test_windows_of_thirty_and_ninety_days_are_accepted(days: int) -> None:
    assert parse_program({"registration": {"window_days": days}}).registration.window_days == days


def test_a_maximum_shorter_than_the_window_is_refused_naming_both_fields() -> None:
    with pytest.raises(ConfigError, match=r"registration: max_total_days.*window_days"):
        parse_program({"registration": {"window_days": 90, "max_total_days": 60}})


# -- first to register wins ----------------------------------------------------------------


def test_the_first_claim_on_a_company_is_accepted_and_locked_for_the_window() -> None:
    decision = decide_claim(None, claim(), NOW, RULES)

    assert decision.accepted
    assert decision.registration is not None
    assert decision.registration.registered_at == NOW
    assert decision.registration.expires_at == NOW + timedelta(days=60)
    assert decision.registration.status is RegistrationStatus.ACTIVE
    assert decision.message().startswith("accepted: acme.com is registered by P1 until 2027-01-01")


def test_the_window_follows_the_program_rules() -> None:
    decision = decide_claim(None, claim(), NOW, RegistrationRules(window_days=90))
    assert decision.registration is not None
    assert decision.registration.expires_at == NOW + timedelta(days=90)


def test_a_second_claim_inside_the_window_is_rejected_with_the_owner_and_expiry() -> None:
    first = registered("P1")

    decision = decide_claim(first, claim("P2"), NOW + timedelta(days=59), RULES)

    assert not decision.accepted
    assert (decision.owner, decision.owner_expires_at) == ("P1", first.expires_at)
    assert decision.message() == "rejected: acme.com is registered by P1 until 2027-01-01"


def test_the_owner_registering_again_inside_the_window_gains_nothing() -> None:
    first = registered("P1")
    decision = decide_claim(first, claim("P1"), NOW + timedelta(days=1), RULES)
    assert (decision.accepted, decision.owner) == (False, "P1")


def test_the_same_claim_replayed_at_the_same_moment_gets_the_same_answer() -> None:
    first = registered("P1")
    decision = decide_claim(first, claim("P1"), NOW, RULES)
    assert (decision.accepted, decision.registration, decision.lapsed) == (True, first, None)


def test_after_the_window_a_new_claim_is_accepted_even_before_the_expiry_run() -> None:
    first = registered("P1")
    later = first.expires_at

    decision = decide_claim(first, claim("P2"), later, RULES)

    assert decision.accepted
    assert decision.lapsed == first  # closed in the same write as the new claim
    assert decision.registration is not None
    assert decision.registration.partner_id == "P2"
    assert decision.registration.expires_at == later + timedelta(days=60)


def test_a_claim_is_never_decided_against_another_domains_registration() -> None:
    with pytest.raises(ValueError, match="another domain"):
        decide_claim(registered(), claim(domain="other.com"), NOW, RULES)


def test_the_same_claim_at_the_same_moment_gets_the_same_id_and_a_later_one_another() -> None:
    assert registered().registration_id == registered().registration_id
    assert registered().registration_id != registered(at=NOW + timedelta(days=61)).registration_id


# -- extensions ----------------------------------------------------------------------------


def test_progress_extends_the_claim_by_the_extension_days() -> None:
    longer = extended(registered(), RULES)

    assert longer is not None
    assert longer.expires_at == NOW + timedelta(days=90)
    assert (longer.status, longer.extensions) == (RegistrationStatus.EXTENDED, 1)


def test_extensions_stop_at_the_maximum_after_registration() -> None:
    current: Registration | None = registered()
    expiries = []
    while current is not None:
        expiries.append(current.expires_at)
        current = extended(current, RULES)

    assert [e - NOW for e in expiries] == [timedelta(days=d) for d in (60, 90, 120, 150, 180)]


def test_the_last_extension_is_cut_to_the_maximum() -> None:
    rules = RegistrationRules(window_days=60, extension_days=30, max_total_days=75)
    longer = extended(registered(), rules)
    assert longer is not None
    assert longer.expires_at == NOW + timedelta(days=75)
    assert extended(longer, rules) is None


@pytest.mark.parametrize("status", [RegistrationStatus.EXPIRED, RegistrationStatus.CONVERTED])
def test_a_closed_registration_is_never_extended(status: RegistrationStatus) -> None:
    assert extended(registered(status=status, closed_at=NOW), RULES) is None


# -- what a claim must hold ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "canonical"),
    [
        ("acme.com", "acme.com"),
        ("  ACME.com ", "acme.com"),
        ("www.acme.com", "acme.com"),
        ("https://www.Acme.co.uk/pricing?x=1", "acme.co.uk"),
        ("acme.com.", "acme.com"),
        ("eu.acme-group.example", "eu.acme-group.example"),
    ],
)
def test_domains_are_normalized(typed: str, canonical: str) -> None:
    assert normalize_domain(typed) == canonical


@pytest.mark.parametrize(
    ("typed", "reason"),
    [
        ("", "missing"),
        ("acme", "not a valid company domain"),
        ("acme..com", "not a valid company domain"),
        ("-acme.com", "not a valid company domain"),
        ("acme.c0m", "not a valid company domain"),
        ("a b.com", "not a valid company domain"),
        ("jane@acme.com", "not an email address"),
        ("gmail.com", "free mailbox provider"),
        ("www.hotmail.com", "free mailbox provider"),
    ],
)
def test_malformed_and_free_mail_domains_are_refused_naming_the_field(
    typed: str, reason: str
) -> None:
    with pytest.raises(InputRejected, match=reason) as refused:
        normalize_domain(typed, "row 3")
    assert (refused.value.record, refused.value.field) == ("row 3", "domain")


KEY = b"k" * 32


def test_an_email_contact_is_kept_only_as_its_keyed_hash() -> None:
    ref = contact_reference(" Jane.Doe@Acme.com ", key=KEY)

    expected = hmac.new(KEY, b"jane.doe@acme.com", hashlib.sha256).hexdigest()
    assert ref == f"hmac-sha256:{expected}"
    assert "jane" not in ref.lower()
    assert ref == contact_reference("jane.doe@acme.com", key=KEY)


def test_the_same_address_under_another_key_or_unkeyed_hashes_differently() -> None:
    # Keyed: a table of hashes cannot be matched against a list of addresses without
    # the key, and no new reference ever equals a legacy unkeyed one.
    address = "jane.doe@acme.com"
    legacy = "sha256:" + hashlib.sha256(address.encode()).hexdigest()

    mine, other = contact_reference(address, key=KEY), contact_reference(address, key=b"o" * 32)

    assert len({mine, other, legacy}) == 3
    assert mine == email_reference(address, KEY)


def test_an_email_contact_without_a_key_is_refused_naming_the_field() -> None:
    with pytest.raises(InputRejected, match="keyed hash") as refused:
        contact_reference("jane.doe@acme.com", "row 2")
    assert (refused.value.record, refused.value.field) == ("row 2", "contact")


def test_a_contact_id_is_kept_as_given() -> None:
    assert contact_reference("hubspot:12345") == "hubspot:12345"


@pytest.mark.parametrize("typed", ["", "not an id", "jane@", "@acme.com"])
def test_a_contact_that_is_neither_id_nor_address_is_refused(typed: str) -> None:
    with pytest.raises(InputRejected) as refused:
        contact_reference(typed)
    assert refused.value.field == "contact"


def test_evidence_is_required_and_addresses_in_it_are_masked() -> None:
    assert clean_evidence("Call with jane@acme.com,  budget  agreed") == (
        "Call with [email], budget agreed"
    )
    with pytest.raises(InputRejected, match="qualification") as refused:
        clean_evidence("lead")
    assert refused.value.field == "evidence"


def test_a_claim_without_a_partner_is_refused_naming_the_field() -> None:
    with pytest.raises(InputRejected) as refused:
        parse_claim("row 1", " ", "acme.com", "C1", EVIDENCE)
    assert refused.value.field == "partner_id"


# -- deals credited through a registration -------------------------------------------------


def deal(type_: EventType, at: datetime, code: str | None = None, **changes: object) -> SourceEvent:
    event = SourceEvent(
        source="crm",
        event_id=f"{type_.value}-{at:%j}",
        type=type_,
        occurred_at=at,
        account_id="ACME",
        contact_id="ACME-1",
        amount=Money(2_000_000, "EUR") if type_ is EventType.DEAL_WON else None,
        referral_code=code,
    )
    return replace(event, **changes)  # type: ignore[arg-type]


def test_an_uncoded_deal_inside_the_window_is_credited_to_the_partner_under_their_code() -> None:
    conversion = registered_conversion(
        deal(EventType.DEAL_WON, NOW + timedelta(days=10)), registered(), PARTNER, CODE, "EUR"
    )

    assert conversion is not None
    assert (conversion.referrer_id, conversion.referral_code) == ("P1", CODE)
    assert (conversion.milestone, conversion.amount) == (
        Milestone.CUSTOMER,
        Money(2_000_000, "EUR"),
    )


@pytest.mark.parametrize(
    "event",
    [
        deal(EventType.DEAL_WON, NOW - timedelta(days=1)),  # before the registration
        deal(EventType.DEAL_WON, NOW + timedelta(days=60)),  # after the window
        deal(EventType.DEAL_WON, NOW + timedelta(days=1), code="R" + "C" * 20),  # its own code
        deal(EventType.RENEWAL, NOW + timedelta(days=1)),  # not a conversion
    ],
)
def test_events_outside_the_window_or_with_a_code_are_not_credited(event: SourceEvent) -> None:
    assert registered_conversion(event, registered(), PARTNER, CODE, "EUR") is None


def test_a_converted_registration_credits_nothing_more() -> None:
    done = registered(status=RegistrationStatus.CONVERTED, closed_at=NOW, conversion_id="x")
    signup = deal(EventType.SIGNUP, NOW + timedelta(days=2))
    assert registered_conversion(signup, done, PARTNER, CODE, "EUR") is None


def test_a_credited_deal_in_another_currency_is_refused_like_a_coded_one() -> None:
    usd = deal(EventType.DEAL_WON, NOW + timedelta(days=1), amount=Money(100, "USD"))
    with pytest.raises(InputRejected) as refused:
        registered_conversion(usd, registered(), PARTNER, CODE, "EUR")
    assert refused.value.field == "amount"


def test_a_claim_read_after_it_was_made_is_timestamped_and_decided_when_it_was_made() -> None:
    made = NOW - timedelta(days=10)
    earlier = replace(claim("P2"), registered_at=made)
    # P1 registered after P2's claim was made, and holds the company now.
    holder = registered("P1", NOW - timedelta(days=2))

    decision = decide_claim(None, earlier, NOW, RULES)
    against_holder = decide_claim(holder, earlier, NOW, RULES)

    assert decision.registration is not None
    assert decision.registration.registered_at == made
    assert decision.registration.expires_at == made + timedelta(days=RULES.window_days)
    assert decision.registration.registration_id == Registration.derive_id("P2", "acme.com", made)
    # First recorded wins: a claim read late does not take over a registration on record.
    assert (against_holder.accepted, against_holder.owner) == (False, "P1")


def test_a_claim_dated_after_it_was_read_is_refused_naming_the_field() -> None:
    with pytest.raises(InputRejected, match="in the future") as refused:
        parse_claim(
            "row 4",
            "P1",
            "acme.com",
            "C1",
            EVIDENCE,
            registered_at=NOW + timedelta(hours=1),
            now=NOW,
        )
    assert (refused.value.record, refused.value.field) == ("row 4", "registered_at")
