"""Referral-worthy moments, detected from canonical CRM and NPS events.

Detection is a pure pass over events: each event either is a moment of one of the five
types, is a detractor to follow up (NPS 0-6, never asked), or is not a moment. It runs
over millions of events in the benchmark, so it is a single loop with no per-event
allocation beyond the moments it returns.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from domain.models import EventType, Moment, MomentType, SourceEvent
from domain.program import Program

DETRACTOR_MAX_SCORE = 6


@dataclass(slots=True)
class Detection:
    moments: list[Moment] = field(default_factory=list)
    detractors: list[SourceEvent] = field(default_factory=list)
    without_contact: int = 0
    examined: int = 0


def detect(events: Iterable[SourceEvent], program: Program) -> Detection:
    """Find the moments among ``events`` under the program's moment rules.

    An event that would be a moment but names no contact cannot lead to an ask; it is
    counted in ``without_contact`` rather than guessed onto someone. A won deal in
    another currency than the program's cannot be compared with ``min_amount`` (there
    is no exchange rate here), so it counts only when ``min_amount`` is zero.
    """
    rules = program.moments
    result = Detection()
    deal_on = rules.deal_won.enabled
    min_deal = program.money(rules.deal_won.min_amount)
    wanted_milestones = frozenset(rules.usage_milestone.milestones)
    nps_on = rules.nps_promoter.enabled
    nps_min = rules.nps_promoter.min_score
    csat_on = rules.support_resolved.enabled
    csat_min = rules.support_resolved.min_csat
    renewal_on = rules.renewal.enabled
    usage_on = rules.usage_milestone.enabled
    moments = result.moments
    examined = 0
    for event in events:
        examined += 1
        kind = event.type
        moment_type: MomentType | None = None
        detail = ""
        if kind is EventType.NPS_RESPONSE:
            score = event.score
            if score is None:
                continue
            if score <= DETRACTOR_MAX_SCORE:
                result.detractors.append(event)
                continue
            if nps_on and score >= nps_min:
                moment_type, detail = MomentType.NPS_PROMOTER, f"NPS {score}"
        elif kind is EventType.DEAL_WON:
            # A won deal that came through a referral code is the referee's conversion,
            # not the referrer-to-be's moment of success.
            if deal_on and event.referral_code is None:
                amount = event.amount
                if min_deal.is_zero or (
                    amount is not None
                    and amount.currency == min_deal.currency
                    and amount >= min_deal
                ):
                    moment_type, detail = MomentType.DEAL_WON, "closed a deal"
        elif kind is EventType.RENEWAL:
            if renewal_on:
                moment_type, detail = MomentType.RENEWAL, "renewed"
        elif kind is EventType.TICKET_RESOLVED:
            if csat_on and event.csat is not None and event.csat >= csat_min:
                moment_type, detail = MomentType.SUPPORT_RESOLVED, f"CSAT {event.csat}"
        elif kind is EventType.USAGE_MILESTONE and usage_on:
            name = event.milestone or ""
            if not wanted_milestones or name in wanted_milestones:
                moment_type, detail = MomentType.USAGE_MILESTONE, f"reached {name}"
        if moment_type is None:
            continue
        if event.contact_id is None:
            result.without_contact += 1
            continue
        moments.append(Moment.from_event(moment_type, event, event.contact_id, detail))
    result.examined = examined
    return result
