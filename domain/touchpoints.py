"""Touchpoints: each time a referrer touched a referee before a conversion, and the credit
each referrer gets for the conversion under the program's attribution model.

A touch is one of: the referral code used at a conversion (the lead's signup, the
qualified deal, the customer's payment), a click on an ask (a SendGrid click event on
an ask carrying the code the referee later used, or the last person's click on the
referrer's tracked link before the conversion: :mod:`domain.links`), or a partner's
registration of the referee's company. The conversion's own code always counts as a
touch at the moment of the conversion, whether or not it was stored (conversions
recorded before touchpoints were), so under ``last_touch`` the code the referee
converted with wins, as it always did.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from domain.attribution import Touchpoint, credit_weights
from domain.models import Conversion


class TouchpointKind(StrEnum):
    CODE = "code"
    ASK_CLICK = "ask_click"
    REGISTRATION = "registration"


@dataclass(frozen=True, slots=True)
class StoredTouchpoint:
    """One touch of a referee by a referrer.

    Attributes:
        referrer_id: who touched.
        at: when.
        kind: see :class:`TouchpointKind`.
        ref: what it was: the conversion id (code), the SendGrid event id or
            ``link:<click id>`` (click),
            the registration id (registration). One touch per (kind, ref, referrer).
    """

    referrer_id: str
    at: datetime
    kind: TouchpointKind
    ref: str


def own_touch(conversion: Conversion) -> StoredTouchpoint:
    """The touch a conversion is by itself: its code's owner, at the conversion."""
    return StoredTouchpoint(
        conversion.referrer_id,
        conversion.occurred_at,
        TouchpointKind.CODE,
        conversion.conversion_id,
    )


def touches_before(
    conversion: Conversion, touches: Sequence[StoredTouchpoint]
) -> list[StoredTouchpoint]:
    """The touches that count for ``conversion``: at or before it, each once, in time
    order, the conversion's own code last among touches of the same instant."""
    mine = own_touch(conversion)
    unique: dict[tuple[str, str, str], StoredTouchpoint] = {}
    for touch in touches:
        if touch.at <= conversion.occurred_at:
            unique.setdefault((touch.kind.value, touch.ref, touch.referrer_id), touch)
    unique[(mine.kind.value, mine.ref, mine.referrer_id)] = mine
    return sorted(
        unique.values(),
        key=lambda t: (t.at, t == mine, t.kind.value, t.ref, t.referrer_id),
    )


def credits_for(
    conversion: Conversion,
    touches: Sequence[StoredTouchpoint],
    model: str,
    half_life_days: Decimal,
) -> list[tuple[str, Decimal]]:
    """(referrer id, weight) for ``conversion`` under ``model``, from its touches."""
    ordered = touches_before(conversion, touches)
    return credit_weights(
        [Touchpoint(t.referrer_id, t.at) for t in ordered],
        model,
        conversion.occurred_at,
        half_life_days,
    )
