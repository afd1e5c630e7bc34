"""Where a new conversion goes: one conversion per referral (pure: no I/O).

Conversions come from the CRM (coded events, and events credited through a partner's
registration) and from Stripe (payments and trials). One rule places them all, so
that one referral is never rewarded twice:

**One conversion per (referee, milestone).** The referee is the conversion's CRM
account, else its CRM contact, else (for Stripe) its Stripe customer; a Stripe
customer that a CRM contact names is that contact's account. Before a conversion is
inserted, the ledger is asked for one already recorded:

1. the same *payment* (any of its Stripe ids already owned by a conversion at the same
   milestone): the ids it lacks are added to it (**joined**), or it had them all
   (**duplicate**); nothing else happens. This is how a webhook and a polling
   delivery, or a Checkout Session and its invoice, become one conversion;
2. the same *referee and milestone* with the same code: a **duplicate**. A CRM
   conversion is not recorded again, nor is a later payment (a renewal) of a
   converted referee; but a Stripe first payment at the customer milestone of a
   conversion the CRM recorded (which has no Stripe payment yet) adds its ids to it
   (**join**), so a refund of it finds the reward;
3. the same referee and milestone with *another* code: **refused** (quarantined),
   naming the conversion already recorded; a person decides.

Otherwise the conversion is **inserted**. Placement is order-dependent: within a batch,
each conversion is placed after the ones before it, and sees them.

The use case :func:`tasks.use_cases.conversions.place_conversions` applies these rules
in one unit of work under the conversions lock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from domain.models import Conversion, Milestone, Rejected
from domain.stripe_conversions import StripeConversion


class Placement(StrEnum):
    """What becomes of a conversion whose payment no conversion owns yet."""

    INSERT = "insert"
    JOIN = "join"
    DUPLICATE = "duplicate"
    REFUSE = "refuse"


@dataclass(frozen=True, slots=True)
class EarlierConversion:
    """The earliest conversion of the same referee at the same milestone.

    Attributes:
        conversion_id: its id.
        referral_code: the code it was made with.
        has_stripe: whether a Stripe payment is already linked to it.
    """

    conversion_id: str
    referral_code: str
    has_stripe: bool


@dataclass(slots=True)
class ConversionTally:
    """What one batch of conversions came to: new ids, joined, duplicates, rejected.

    ``touching`` lists the new conversions with their Stripe customer: their touches
    are stored for the whole batch at once, right after it is placed.
    """

    new: list[str] = field(default_factory=list)
    joined: int = 0
    duplicates: int = 0
    rejected: list[Rejected] = field(default_factory=list)
    touching: list[tuple[Conversion, str | None]] = field(default_factory=list)


def placement(
    conversion: Conversion, stripe: StripeConversion | None, earlier: EarlierConversion | None
) -> Placement:
    """Rules 2 and 3 of the module: insert, join the earlier conversion, drop, or refuse.

    Args:
        conversion: the conversion to place.
        stripe: the Stripe payment behind it, for a Stripe conversion.
        earlier: the earliest conversion of the same referee and milestone, if any.
    """
    if earlier is None:
        return Placement.INSERT
    if earlier.referral_code != conversion.referral_code:
        return Placement.REFUSE
    if (
        stripe is not None
        and not earlier.has_stripe
        and stripe.first_payment
        and conversion.milestone is Milestone.CUSTOMER
    ):
        return Placement.JOIN
    return Placement.DUPLICATE


def refusal(conversion: Conversion, earlier: EarlierConversion) -> Rejected:
    """The quarantine row of a referee already converted under another code."""
    return Rejected(
        conversion.source_event.split(":", 1)[0],
        conversion.source_event,
        "referral_code",
        f"referee already converted at milestone {conversion.milestone.value} "
        f"through another referral code (conversion {earlier.conversion_id})",
    )
