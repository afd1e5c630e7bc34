"""Flags and waiting times read as words in the live views."""

from __future__ import annotations

import re
from datetime import timedelta

from domain import fraud
from domain.plain_words import age_words, flag_words, flags_in_words


def test_a_self_referral_flag_reads_as_words() -> None:
    assert flag_words("self_referral:same_email_domain") == "self-referral: same email domain"


def test_a_velocity_flag_reads_with_its_numbers() -> None:
    assert flag_words("velocity:over_5_per_24h") == "velocity: more than 5 conversions in 24 h"


def test_a_flag_without_wording_is_shown_as_its_code() -> None:
    assert flag_words("new_check:something") == "new_check:something"


def test_several_flags_are_joined_by_semicolons_and_no_flag_reads_none() -> None:
    assert flags_in_words(["disposable_email_domain", "referral_cycle"]) == (
        "disposable email address; referral cycle: the referee referred the referrer"
    )
    assert flags_in_words([]) == "none"


def test_every_self_referral_flag_the_fraud_module_documents_has_wording() -> None:
    documented = set(re.findall(r"``(self_referral:[a-z_]+)``", fraud.__doc__ or ""))
    documented |= {
        f"self_referral:{w}" for w in re.findall(r"/ ``([a-z_]+)``", fraud.__doc__ or "")
    }

    assert len(documented) == 7
    assert all(flag_words(code) != code for code in documented)


def test_waiting_times_read_in_minutes_hours_and_days() -> None:
    assert age_words(timedelta(minutes=45, seconds=30)) == "45 min"
    assert age_words(timedelta(hours=3, minutes=20)) == "3 h 20 min"
    assert age_words(timedelta(days=2, hours=4, minutes=5)) == "2 days 4 h"
    assert age_words(timedelta(days=1)) == "1 day 0 h"
    assert age_words(timedelta(seconds=-5)) == "0 min"
