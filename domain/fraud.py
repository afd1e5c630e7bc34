"""Fraud and quality checks on a conversion before its reward is routed.

A flag never blocks a reward by itself: it sends the reward to a person, with the flags
shown, instead of paying it automatically.
"""

from __future__ import annotations

from domain.models import Contact, Conversion

# Free mailbox providers: two people sharing one of these share nothing else.
FREE_MAIL_DOMAINS = frozenset(
    {
        "gmail.com",
        "googlemail.com",
        "outlook.com",
        "hotmail.com",
        "live.com",
        "yahoo.com",
        "icloud.com",
        "me.com",
        "aol.com",
        "proton.me",
        "protonmail.com",
        "gmx.de",
        "gmx.net",
        "web.de",
        "orange.fr",
        "free.fr",
        "laposte.net",
        "yahoo.fr",
    }
)
DISPOSABLE_DOMAINS = frozenset(
    {
        "mailinator.com",
        "guerrillamail.com",
        "10minutemail.com",
        "tempmail.com",
        "trashmail.com",
        "yopmail.com",
        "sharklasers.com",
        "getnada.com",
        "dispostable.com",
        "maildrop.cc",
        "throwawaymail.com",
        "temp-mail.org",
    }
)


def email_domain(email: str | None) -> str | None:
    if not email or "@" not in email:
        return None
    return email.rsplit("@", 1)[1].strip().lower() or None


def flags_for(conversion: Conversion, referrer: Contact) -> tuple[str, ...]:
    """The fraud flags of ``conversion`` credited to ``referrer``, sorted."""
    flags: set[str] = set()
    if conversion.referee_contact_id and conversion.referee_contact_id == referrer.contact_id:
        flags.add("self_referral:same_contact")
    if (
        conversion.referee_account_id
        and referrer.account_id
        and conversion.referee_account_id == referrer.account_id
    ):
        flags.add("self_referral:same_account")
    referee_domain = (conversion.referee_email_domain or "").lower() or None
    referrer_domain = email_domain(referrer.email)
    if (
        referee_domain
        and referee_domain == referrer_domain
        and referee_domain not in FREE_MAIL_DOMAINS
    ):
        flags.add("self_referral:same_email_domain")
    if referee_domain in DISPOSABLE_DOMAINS:
        flags.add("disposable_email_domain")
    return tuple(sorted(flags))
