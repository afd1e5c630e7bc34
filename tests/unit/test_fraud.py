"""Fraud flags: self-referrals and throwaway addresses go to a person, not to auto-pay."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from domain.fraud import DISPOSABLE_DOMAINS, FREE_MAIL_DOMAINS, email_domain, flags_for
from domain.models import Contact, Conversion, Milestone
from tests.conftest import contact

REFERRER = contact("REF1", "ACME", email="jane@acme.example")


def conversion(
    *,
    referee_contact: str | None = "NEWC1",
    referee_account: str | None = "NEW1",
    domain: str | None = "newco.example",
) -> Conversion:
    return Conversion(
        conversion_id="conv-1",
        source_event="crm:e1",
        referral_code="RABCDEFGHIJKLMNOPQRST",
        referrer_id=REFERRER.contact_id,
        referee_account_id=referee_account,
        referee_contact_id=referee_contact,
        milestone=Milestone.CUSTOMER,
        occurred_at=datetime(2026, 10, 1, tzinfo=UTC),
        amount=None,
        referee_email_domain=domain,
    )


def test_an_unrelated_referee_raises_no_flag() -> None:
    assert flags_for(conversion(), REFERRER) == ()


def test_referring_yourself_is_flagged() -> None:
    flags = flags_for(conversion(referee_contact=REFERRER.contact_id), REFERRER)
    assert "self_referral:same_contact" in flags


def test_referring_your_own_account_is_flagged() -> None:
    flags = flags_for(conversion(referee_account=REFERRER.account_id), REFERRER)
    assert flags == ("self_referral:same_account",)


def test_a_referrer_without_an_account_is_not_flagged_for_a_referee_without_one() -> None:
    lone = Contact("REF2", None, "Lone Wolf", "lone@solo.example")
    assert flags_for(conversion(referee_account=None), lone) == ()


def test_a_referee_on_the_referrers_company_domain_is_flagged() -> None:
    flags = flags_for(conversion(domain="acme.example"), REFERRER)
    assert flags == ("self_referral:same_email_domain",)


def test_the_email_domain_comparison_ignores_case() -> None:
    shouting = contact("REF3", "ACME", email="Jane@ACME.Example")
    assert flags_for(conversion(domain="Acme.EXAMPLE"), shouting) == (
        "self_referral:same_email_domain",
    )


@pytest.mark.parametrize("domain", ["gmail.com", "outlook.com", "gmx.de"])
def test_sharing_a_free_mail_domain_is_not_flagged(domain: str) -> None:
    assert domain in FREE_MAIL_DOMAINS
    referrer = contact("REF4", "ACME", email=f"jane@{domain}")
    assert flags_for(conversion(domain=domain), referrer) == ()


@pytest.mark.parametrize("domain", ["mailinator.com", "yopmail.com", "MAILINATOR.COM"])
def test_a_referee_on_a_disposable_email_domain_is_flagged(domain: str) -> None:
    assert domain.lower() in DISPOSABLE_DOMAINS
    assert flags_for(conversion(domain=domain), REFERRER) == ("disposable_email_domain",)


def test_a_referrer_on_a_disposable_domain_referring_the_same_domain_gets_both_flags() -> None:
    referrer = contact("REF5", "X", email="a@mailinator.com")
    flags = flags_for(conversion(domain="mailinator.com"), referrer)
    assert flags == ("disposable_email_domain", "self_referral:same_email_domain")


def test_every_matching_flag_is_reported_sorted() -> None:
    flags = flags_for(
        conversion(
            referee_contact=REFERRER.contact_id,
            referee_account=REFERRER.account_id,
            domain="acme.example",
        ),
        REFERRER,
    )
    assert flags == (
        "self_referral:same_account",
        "self_referral:same_contact",
        "self_referral:same_email_domain",
    )
    assert list(flags) == sorted(flags)


def test_a_referee_without_a_known_domain_is_not_flagged_for_domains() -> None:
    assert flags_for(conversion(domain=None), REFERRER) == ()
    assert flags_for(conversion(domain=""), REFERRER) == ()


def test_a_referrer_without_an_email_is_not_flagged_for_domains() -> None:
    no_email = contact("REF6", "ACME", email=None)
    assert flags_for(conversion(domain="acme.example"), no_email) == ()


@pytest.mark.parametrize(
    ("email", "domain"),
    [
        ("jane@acme.example", "acme.example"),
        ("Jane@ACME.example ", "acme.example"),
        ("odd@name@acme.example", "acme.example"),
        ("no-at-sign", None),
        ("jane@", None),
        (None, None),
        ("", None),
    ],
)
def test_email_domain_is_the_lowercased_part_after_the_last_at(
    email: str | None, domain: str | None
) -> None:
    assert email_domain(email) == domain
