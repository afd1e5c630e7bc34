"""Plain words for on-call and approvers: fraud flags and waiting times as people say them.

The ledger keeps flags as fixed codes (``self_referral:same_email_domain``); tables and
status lines show them in words. A code without wording here is shown as it is, so a
new flag is never hidden.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import timedelta

from domain.fraud import PAYOUT_DESTINATION_CHANGED, SELF_REFERRAL_CLICK

FLAG_WORDS: dict[str, str] = {
    "self_referral:same_contact": "self-referral: the referee is the referrer",
    "self_referral:same_account": "self-referral: same CRM account",
    "self_referral:same_email_domain": "self-referral: same email domain",
    "self_referral:same_email": "self-referral: same email address",
    "self_referral:same_stripe_customer": "self-referral: same Stripe customer",
    "self_referral:same_card": "self-referral: same payment card",
    SELF_REFERRAL_CLICK: "self-referral: only the referrer's own clicks on their link",
    "disposable_email_domain": "disposable email address",
    "referral_cycle": "referral cycle: the referee referred the referrer",
    PAYOUT_DESTINATION_CHANGED: "payout destination changed since the last approval",
}

_VELOCITY = re.compile(r"^velocity:over_(\d+)_per_(\d+)h$")


def flag_words(flag: str) -> str:
    """One fraud flag in words; the code itself when it has none."""
    if flag in FLAG_WORDS:
        return FLAG_WORDS[flag]
    velocity = _VELOCITY.match(flag)
    if velocity:
        return f"velocity: more than {velocity[1]} conversions in {velocity[2]} h"
    return flag


def flags_in_words(flags: Iterable[str]) -> str:
    """Every flag in words, separated by semicolons (a comma is inside some wordings);
    "none" when there is none: a lone "-" renders as a bullet in a markdown table."""
    return "; ".join(flag_words(f) for f in flags) or "none"


def age_words(age: timedelta) -> str:
    """A waiting time as a person reads it: "45 min", "3 h 20 min", "2 days 4 h"."""
    minutes = max(int(age.total_seconds() // 60), 0)
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    if days:
        return f"{days} day{'s' if days > 1 else ''} {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min"
