"""Referral-worthy moments, detected from canonical CRM and NPS events.

Each event either is a moment of one of the five types, is a detractor to follow up
(NPS 0-6, never asked), or is not a moment.

The rules are data, defined here once: :func:`detection_spec` turns the program's
``moments`` section into a :class:`DetectionSpec`. For each enabled moment type, that
means the event type it comes from, the conditions on the event's fields, and how its
detail reads. It also holds the detractor rule. The spec has two interpreters that must
agree:

* :func:`detect`, here: the reference, over :class:`SourceEvent` objects in memory;
* the ledger's set-based detection (``integrations/ledger/detection.py``), which
  compiles the same spec to ``INSERT ... SELECT`` statements, so millions of stored
  events are examined without being carried through Python.

A condition kind that one interpreter does not know is refused by that interpreter
rather than skipped, so a rule cannot be added to one side and silently ignored by the
other. ``tests/integration/test_detection_sql.py`` checks that both sides find exactly
the same moments.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from operator import attrgetter
from typing import assert_never

from domain.models import EventType, Moment, MomentType, SourceEvent
from domain.money import Money
from domain.program import Program

DETRACTOR_MAX_SCORE = 6


class EventField(StrEnum):
    """The fields of a :class:`SourceEvent` a rule may look at (named as on the event)."""

    SCORE = "score"
    CSAT = "csat"
    MILESTONE = "milestone"
    REFERRAL_CODE = "referral_code"


@dataclass(frozen=True, slots=True)
class AtLeast:
    """The field is present and at least ``value``."""

    field: EventField
    value: int


@dataclass(frozen=True, slots=True)
class AtMost:
    """The field is present and at most ``value``."""

    field: EventField
    value: int


@dataclass(frozen=True, slots=True)
class Absent:
    """The field is missing."""

    field: EventField


@dataclass(frozen=True, slots=True)
class OneOf:
    """The field's text is one of ``values``. A missing field reads as ``""``."""

    field: EventField
    values: frozenset[str]


@dataclass(frozen=True, slots=True)
class AmountAtLeast:
    """The event has an amount in ``minimum``'s currency, and it is at least ``minimum``.

    There is no exchange rate here, so an amount in another currency never meets it.
    """

    minimum: Money


Condition = AtLeast | AtMost | Absent | OneOf | AmountAtLeast


@dataclass(frozen=True, slots=True)
class Detail:
    """How a moment's detail reads: ``text``, then the field's value (``""`` if missing)."""

    text: str
    field: EventField | None = None


@dataclass(frozen=True, slots=True)
class EventRule:
    """Events of type ``event`` that meet every condition."""

    event: EventType
    conditions: tuple[Condition, ...] = ()


@dataclass(frozen=True, slots=True)
class MomentRule:
    """The events that are a moment of type ``moment``, and how its detail reads."""

    moment: MomentType
    when: EventRule
    detail: Detail


@dataclass(frozen=True, slots=True)
class DetectionSpec:
    """Everything detection decides, as data.

    An event that meets ``detractors`` is a detractor and nothing else. Otherwise, it
    is a moment when it meets the rule for its type (at most one rule per event
    type). A moment needs a contact: one without a contact cannot lead to an ask, so
    it is counted in ``without_contact`` rather than guessed onto someone.
    """

    moments: tuple[MomentRule, ...]
    detractors: EventRule

    def __post_init__(self) -> None:
        types = [rule.when.event for rule in self.moments]
        if len(types) != len(set(types)):
            raise ValueError("at most one moment rule per event type")

    def rule_for(self, event: EventType) -> MomentRule | None:
        return next((rule for rule in self.moments if rule.when.event is event), None)


def detection_spec(program: Program) -> DetectionSpec:
    """The program's moment rules as a :class:`DetectionSpec` (enabled moments only)."""
    rules = program.moments
    moments: list[MomentRule] = []
    if rules.nps_promoter.enabled:
        # Promoters start above the detractor range whatever the rules file says: a
        # detractor is never asked.
        lowest = max(rules.nps_promoter.min_score, DETRACTOR_MAX_SCORE + 1)
        moments.append(
            MomentRule(
                MomentType.NPS_PROMOTER,
                EventRule(EventType.NPS_RESPONSE, (AtLeast(EventField.SCORE, lowest),)),
                Detail("NPS ", EventField.SCORE),
            )
        )
    if rules.deal_won.enabled:
        # A won deal that came through a referral code is the referee's conversion,
        # not the referrer-to-be's moment of success.
        deal: tuple[Condition, ...] = (Absent(EventField.REFERRAL_CODE),)
        minimum = program.money(rules.deal_won.min_amount)
        if not minimum.is_zero:
            deal += (AmountAtLeast(minimum),)
        moments.append(
            MomentRule(
                MomentType.DEAL_WON, EventRule(EventType.DEAL_WON, deal), Detail("closed a deal")
            )
        )
    if rules.renewal.enabled:
        moments.append(
            MomentRule(MomentType.RENEWAL, EventRule(EventType.RENEWAL), Detail("renewed"))
        )
    if rules.support_resolved.enabled:
        csat = AtLeast(EventField.CSAT, rules.support_resolved.min_csat)
        moments.append(
            MomentRule(
                MomentType.SUPPORT_RESOLVED,
                EventRule(EventType.TICKET_RESOLVED, (csat,)),
                Detail("CSAT ", EventField.CSAT),
            )
        )
    if rules.usage_milestone.enabled:
        wanted = rules.usage_milestone.milestones
        usage: tuple[Condition, ...] = (
            (OneOf(EventField.MILESTONE, frozenset(wanted)),) if wanted else ()
        )
        moments.append(
            MomentRule(
                MomentType.USAGE_MILESTONE,
                EventRule(EventType.USAGE_MILESTONE, usage),
                Detail("reached ", EventField.MILESTONE),
            )
        )
    detractors = EventRule(EventType.NPS_RESPONSE, (AtMost(EventField.SCORE, DETRACTOR_MAX_SCORE),))
    return DetectionSpec(tuple(moments), detractors)


# -- the reference interpreter -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DetectionCounts:
    """What one detection run in the database did. ``moments`` counts new moments.
    ``detractors`` and ``without_contact`` count the examined events that were
    detractors, or moments naming no contact."""

    examined: int = 0
    moments: int = 0
    detractors: int = 0
    without_contact: int = 0
    chunks: int = 0


@dataclass(slots=True)
class Detection:
    moments: list[Moment] = field(default_factory=list)
    detractors: list[SourceEvent] = field(default_factory=list)
    without_contact: int = 0
    examined: int = 0


def detect(events: Iterable[SourceEvent], rules: Program | DetectionSpec) -> Detection:
    """Find the moments among ``events`` under ``rules`` (a program, or its spec).

    It is a single pass with no per-event allocation beyond what it returns: the spec
    is turned into one predicate per rule before the loop.
    """
    spec = rules if isinstance(rules, DetectionSpec) else detection_spec(rules)
    detractor_type = spec.detractors.event
    is_detractor = _predicate(spec.detractors.conditions)
    by_type = {
        rule.when.event: (rule.moment, _predicate(rule.when.conditions), _detail(rule.detail))
        for rule in spec.moments
    }
    result = Detection()
    moments = result.moments
    detractors = result.detractors
    examined = 0
    for event in events:
        examined += 1
        kind = event.type
        if kind is detractor_type and is_detractor(event):
            detractors.append(event)
            continue
        found = by_type.get(kind)
        if found is None:
            continue
        moment_type, matches, detail = found
        if not matches(event):
            continue
        if event.contact_id is None:
            result.without_contact += 1
            continue
        moments.append(Moment.from_event(moment_type, event, event.contact_id, detail(event)))
    result.examined = examined
    return result


_Check = Callable[[SourceEvent], bool]


def _predicate(conditions: tuple[Condition, ...]) -> _Check:
    """One check for all ``conditions`` (all must hold), chained without a loop per event."""
    combined: _Check = _always
    for i, condition in enumerate(conditions):
        check = _check(condition)
        combined = check if i == 0 else _both(combined, check)
    return combined


def _always(_event: SourceEvent) -> bool:
    return True


def _both(first: _Check, second: _Check) -> _Check:
    return lambda event: first(event) and second(event)


def _check(condition: Condition) -> _Check:
    if isinstance(condition, AmountAtLeast):
        currency = condition.minimum.currency
        least = condition.minimum.amount_minor

        def amount_at_least(event: SourceEvent) -> bool:
            amount = event.amount
            return (
                amount is not None and amount.currency == currency and amount.amount_minor >= least
            )

        return amount_at_least
    get = attrgetter(condition.field.value)
    if isinstance(condition, AtLeast):
        lowest = condition.value
        return lambda event: (value := get(event)) is not None and value >= lowest
    if isinstance(condition, AtMost):
        highest = condition.value
        return lambda event: (value := get(event)) is not None and value <= highest
    if isinstance(condition, Absent):
        return lambda event: get(event) is None
    if isinstance(condition, OneOf):
        values = condition.values
        return lambda event: (value if (value := get(event)) is not None else "") in values
    assert_never(condition)


def _detail(detail: Detail) -> Callable[[SourceEvent], str]:
    text = detail.text
    if detail.field is None:
        return lambda _event: text
    get = attrgetter(detail.field.value)
    return lambda event: text if (value := get(event)) is None else f"{text}{value}"
