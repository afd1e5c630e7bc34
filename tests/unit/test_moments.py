"""Detecting the five referral-worthy moments from canonical events."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from config.program import parse_program
from domain.models import EventType, MomentType, SourceEvent
from domain.moments import (
    DETRACTOR_MAX_SCORE,
    Absent,
    AmountAtLeast,
    AtLeast,
    AtMost,
    Detail,
    DetectionSpec,
    EventField,
    EventRule,
    MomentRule,
    OneOf,
    detect,
    detection_spec,
)
from domain.money import Money
from domain.program import Program

AT = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def event(type_: EventType, event_id: str = "e1", **fields: Any) -> SourceEvent:
    fields.setdefault("contact_id", "C1")
    fields.setdefault("account_id", "A1")
    return SourceEvent(source="crm", event_id=event_id, type=type_, occurred_at=AT, **fields)


def rules(**moments: Any) -> Program:
    return parse_program({"moments": moments})


CANONICAL = [
    pytest.param(
        event(EventType.DEAL_WON, amount=Money.parse("5000.00", "EUR"), deal_id="D1"),
        MomentType.DEAL_WON,
        id="deal_won",
    ),
    pytest.param(event(EventType.RENEWAL), MomentType.RENEWAL, id="renewal"),
    pytest.param(event(EventType.NPS_RESPONSE, score=10), MomentType.NPS_PROMOTER, id="nps"),
    pytest.param(
        event(EventType.TICKET_RESOLVED, csat=5, ticket_id="T1"),
        MomentType.SUPPORT_RESOLVED,
        id="support",
    ),
    pytest.param(
        event(EventType.USAGE_MILESTONE, milestone="100_projects"),
        MomentType.USAGE_MILESTONE,
        id="usage",
    ),
]


@pytest.mark.parametrize(("source", "expected"), CANONICAL)
def test_each_moment_type_is_detected_from_its_canonical_event(
    source: SourceEvent, expected: MomentType, program: Program
) -> None:
    found = detect([source], program)
    assert [m.type for m in found.moments] == [expected]
    moment = found.moments[0]
    assert moment.contact_id == source.contact_id
    assert moment.account_id == source.account_id
    assert moment.occurred_at == source.occurred_at
    assert moment.source_event == source.key
    assert moment.detail
    assert found.examined == 1
    assert found.detractors == []
    assert found.without_contact == 0


@pytest.mark.parametrize(
    "type_",
    [EventType.SIGNUP, EventType.DEAL_QUALIFIED, EventType.TICKET_OPENED],
)
def test_events_that_are_no_moment_are_examined_but_yield_nothing(
    type_: EventType, program: Program
) -> None:
    found = detect([event(type_)], program)
    assert found.moments == []
    assert found.detractors == []
    assert found.examined == 1


@pytest.mark.parametrize("score", range(0, 7))
def test_a_detractor_is_listed_for_follow_up_and_never_asked(score: int, program: Program) -> None:
    response = event(EventType.NPS_RESPONSE, score=score)
    found = detect([response], program)
    assert found.moments == []
    assert found.detractors == [response]


@pytest.mark.parametrize("score", [7, 8])
def test_a_passive_nps_score_is_neither_a_moment_nor_a_detractor(
    score: int, program: Program
) -> None:
    found = detect([event(EventType.NPS_RESPONSE, score=score)], program)
    assert found.moments == []
    assert found.detractors == []


def test_an_nps_response_without_a_score_is_ignored(program: Program) -> None:
    found = detect([event(EventType.NPS_RESPONSE)], program)
    assert found.moments == []
    assert found.detractors == []
    assert found.examined == 1


def test_min_score_ten_asks_only_perfect_promoters() -> None:
    program = rules(nps_promoter={"min_score": 10})
    nine = event(EventType.NPS_RESPONSE, "nine", score=9)
    ten = event(EventType.NPS_RESPONSE, "ten", score=10)
    found = detect([nine, ten], program)
    assert [m.source_event for m in found.moments] == [ten.key]


def test_detractors_are_listed_even_when_promoter_moments_are_disabled() -> None:
    program = rules(nps_promoter={"enabled": False})
    promoter = event(EventType.NPS_RESPONSE, "p", score=10)
    detractor = event(EventType.NPS_RESPONSE, "d", score=2)
    found = detect([promoter, detractor], program)
    assert found.moments == []
    assert found.detractors == [detractor]


@pytest.mark.parametrize(("csat", "counts"), [(3, False), (4, True), (5, True)])
def test_a_resolved_ticket_counts_only_at_or_above_min_csat(csat: int, counts: bool) -> None:
    program = rules(support_resolved={"min_csat": 4})
    found = detect([event(EventType.TICKET_RESOLVED, csat=csat)], program)
    assert bool(found.moments) is counts


def test_a_resolved_ticket_without_csat_is_not_a_moment(program: Program) -> None:
    assert detect([event(EventType.TICKET_RESOLVED)], program).moments == []


@pytest.mark.parametrize(
    ("amount", "counts"),
    [("999.99", False), ("1000.00", True), ("25000.00", True)],
)
def test_a_won_deal_counts_only_at_or_above_min_amount(amount: str, counts: bool) -> None:
    program = rules(deal_won={"min_amount": "1000.00"})
    won = event(EventType.DEAL_WON, amount=Money.parse(amount, "EUR"))
    assert bool(detect([won], program).moments) is counts


def test_a_won_deal_without_an_amount_does_not_meet_a_min_amount() -> None:
    program = rules(deal_won={"min_amount": "1000.00"})
    assert detect([event(EventType.DEAL_WON)], program).moments == []


def test_a_won_deal_in_another_currency_counts_only_without_a_min_amount() -> None:
    dollars = event(EventType.DEAL_WON, amount=Money.parse("90000.00", "USD"))
    assert detect([dollars], rules(deal_won={"min_amount": "1000.00"})).moments == []
    assert len(detect([dollars], rules(deal_won={"min_amount": "0"})).moments) == 1


def test_usage_milestones_can_be_restricted_to_named_ones() -> None:
    program = rules(usage_milestone={"milestones": ["first_invoice"]})
    wanted = event(EventType.USAGE_MILESTONE, "w", milestone="first_invoice")
    other = event(EventType.USAGE_MILESTONE, "o", milestone="ten_users")
    found = detect([wanted, other], program)
    assert [m.source_event for m in found.moments] == [wanted.key]
    assert "first_invoice" in found.moments[0].detail


def test_an_empty_milestone_list_counts_every_usage_milestone() -> None:
    program = rules(usage_milestone={"milestones": []})
    events = [
        event(EventType.USAGE_MILESTONE, f"u{i}", milestone=name)
        for i, name in enumerate(["a", "b", "c"])
    ]
    assert len(detect(events, program).moments) == 3


@pytest.mark.parametrize(("source", "moment_type"), CANONICAL)
def test_a_disabled_moment_is_not_detected(source: SourceEvent, moment_type: MomentType) -> None:
    settings: dict[str, dict[str, Any]] = {"deal_won": {"min_amount": "0"}}
    enabled = rules(**settings)
    settings.setdefault(moment_type.value, {})["enabled"] = False
    disabled = rules(**settings)
    assert len(detect([source], enabled).moments) == 1
    assert detect([source], disabled).moments == []


def test_a_won_deal_carrying_a_referral_code_is_not_the_referrers_moment(
    program: Program,
) -> None:
    plain = event(EventType.DEAL_WON, "plain", amount=Money.parse("5000.00", "EUR"))
    referred = replace(plain, event_id="referred", referral_code="RAAAAAAAAAAAAAAAAAAAA")
    found = detect([plain, referred], program)
    assert [m.source_event for m in found.moments] == [plain.key]


def test_an_event_with_no_contact_is_counted_not_guessed(program: Program) -> None:
    nobody = event(EventType.RENEWAL, "r1", contact_id=None)
    somebody = event(EventType.RENEWAL, "r2")
    found = detect([nobody, somebody], program)
    assert found.without_contact == 1
    assert [m.source_event for m in found.moments] == [somebody.key]
    assert found.examined == 2


def test_an_event_with_no_contact_that_is_no_moment_is_not_counted_as_without_contact(
    program: Program,
) -> None:
    found = detect([event(EventType.NPS_RESPONSE, score=8, contact_id=None)], program)
    assert found.without_contact == 0


def test_the_same_event_always_yields_the_same_moment_id(program: Program) -> None:
    first = detect([event(EventType.RENEWAL, "r1")], program).moments[0]
    again = detect([event(EventType.RENEWAL, "r1")], program).moments[0]
    assert first.moment_id == again.moment_id
    assert first == again


def test_different_events_yield_different_moment_ids(program: Program) -> None:
    events = [
        event(EventType.RENEWAL, "r1"),
        event(EventType.RENEWAL, "r2"),
        replace(event(EventType.RENEWAL, "r1"), source="nps"),
    ]
    ids = {m.moment_id for m in detect(events, program).moments}
    assert len(ids) == 3


def test_a_moment_id_does_not_depend_on_when_or_in_what_batch_it_is_detected(
    program: Program,
) -> None:
    renewal = event(EventType.RENEWAL, "r1")
    alone = detect([renewal], program).moments[0]
    later = replace(renewal, occurred_at=AT + timedelta(days=1))
    in_batch = detect([event(EventType.RENEWAL, "r0"), later], program).moments[1]
    assert alone.moment_id == in_batch.moment_id


def test_detection_reads_any_iterable_once_and_counts_what_it_examined(
    program: Program,
) -> None:
    events = (event(EventType.RENEWAL, f"r{i}") for i in range(5))
    found = detect(events, program)
    assert found.examined == 5
    assert len(found.moments) == 5


def test_a_moment_id_is_its_source_events_key(program: Program) -> None:
    renewal = event(EventType.RENEWAL, "r1")
    (moment,) = detect([renewal], program).moments
    assert moment.moment_id == renewal.key == "crm:r1"


# -- the rules as data ------------------------------------------------------------------------


def test_the_spec_holds_one_rule_per_enabled_moment_each_from_its_own_event_type() -> None:
    spec = detection_spec(rules(renewal={"enabled": False}))
    assert [(r.moment, r.when.event) for r in spec.moments] == [
        (MomentType.NPS_PROMOTER, EventType.NPS_RESPONSE),
        (MomentType.DEAL_WON, EventType.DEAL_WON),
        (MomentType.SUPPORT_RESOLVED, EventType.TICKET_RESOLVED),
        (MomentType.USAGE_MILESTONE, EventType.USAGE_MILESTONE),
    ]
    assert spec.rule_for(EventType.RENEWAL) is None


def test_the_spec_carries_the_programs_thresholds() -> None:
    spec = detection_spec(
        rules(
            nps_promoter={"min_score": 10},
            support_resolved={"min_csat": 5},
            deal_won={"min_amount": "1000.00"},
            usage_milestone={"milestones": ["api_live"]},
        )
    )

    def conditions(type_: EventType) -> tuple[object, ...]:
        rule = spec.rule_for(type_)
        assert rule is not None
        return rule.when.conditions

    assert conditions(EventType.NPS_RESPONSE) == (AtLeast(EventField.SCORE, 10),)
    assert conditions(EventType.TICKET_RESOLVED) == (AtLeast(EventField.CSAT, 5),)
    assert conditions(EventType.DEAL_WON) == (
        Absent(EventField.REFERRAL_CODE),
        AmountAtLeast(Money.parse("1000.00", "EUR")),
    )
    assert conditions(EventType.USAGE_MILESTONE) == (
        OneOf(EventField.MILESTONE, frozenset({"api_live"})),
    )
    assert spec.detractors == EventRule(
        EventType.NPS_RESPONSE, (AtMost(EventField.SCORE, DETRACTOR_MAX_SCORE),)
    )


def test_a_zero_min_amount_puts_no_amount_condition_on_won_deals() -> None:
    rule = detection_spec(rules(deal_won={"min_amount": "0.00"})).rule_for(EventType.DEAL_WON)
    assert rule is not None
    assert rule.when.conditions == (Absent(EventField.REFERRAL_CODE),)


def test_detect_reads_a_spec_the_same_as_the_program_it_came_from(program: Program) -> None:
    events = [
        event(EventType.NPS_RESPONSE, "n", score=10),
        event(EventType.NPS_RESPONSE, "d", score=1),
        event(EventType.RENEWAL, "r", contact_id=None),
        event(EventType.TICKET_RESOLVED, "t", csat=5),
    ]
    assert detect(events, detection_spec(program)) == detect(events, program)


def test_a_spec_refuses_two_rules_for_one_event_type() -> None:
    renewed = MomentRule(MomentType.RENEWAL, EventRule(EventType.RENEWAL), Detail("renewed"))
    with pytest.raises(ValueError, match="one moment rule per event type"):
        DetectionSpec((renewed, renewed), EventRule(EventType.NPS_RESPONSE))


@dataclass(frozen=True)
class Between:
    """A condition kind neither interpreter knows."""

    field: EventField
    low: int
    high: int


def test_detect_refuses_a_condition_kind_it_does_not_know_rather_than_ignore_it() -> None:
    rule = MomentRule(
        MomentType.NPS_PROMOTER,
        EventRule(EventType.NPS_RESPONSE, (Between(EventField.SCORE, 9, 10),)),  # type: ignore[arg-type]
        Detail("NPS ", EventField.SCORE),
    )
    spec = DetectionSpec((rule,), EventRule(EventType.NPS_RESPONSE))
    with pytest.raises(AssertionError):
        detect([event(EventType.NPS_RESPONSE, score=10)], spec)
