"""Who is asked, and the reason every other moment is skipped."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from random import Random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from config.program import parse_program
from domain.eligibility import (
    decide,
    histories_needed,
    latest_nps_answer,
    nps_answers_since,
    recent_detractor,
    skip_counts,
)
from domain.models import (
    AskDecision,
    Contact,
    ContactHistory,
    Moment,
    MomentType,
    NpsAnswer,
    ReferrerType,
    SkipReason,
    derived_id,
)
from domain.program import Program
from tests.conftest import NOW, contact

TENURED = ContactHistory(customer_since=(NOW - timedelta(days=400)).date())


def moment(
    contact_id: str = "C1",
    type_: MomentType = MomentType.RENEWAL,
    *,
    age: timedelta = timedelta(days=1),
    key: str | None = None,
) -> Moment:
    source = key or f"crm:{contact_id}:{type_.value}:{age.total_seconds()}"
    return Moment(
        moment_id=derived_id("moment", source),
        type=type_,
        contact_id=contact_id,
        account_id="A1",
        occurred_at=NOW - age,
        source_event=source,
        detail="test",
    )


def only(decisions: list[AskDecision]) -> AskDecision:
    assert len(decisions) == 1
    return decisions[0]


def decide_one(
    program: Program,
    person: Contact | None = None,
    history: ContactHistory = TENURED,
    the_moment: Moment | None = None,
) -> AskDecision:
    person = person or contact("C1")
    the_moment = the_moment or moment(person.contact_id)
    return only(
        decide(
            [the_moment],
            {person.contact_id: person},
            {person.contact_id: history},
            program,
            NOW,
        )
    )


def test_an_eligible_customer_is_asked(program: Program) -> None:
    decision = decide_one(program)
    assert decision.ask
    assert decision.reason is None


def test_a_contact_who_opted_out_is_not_asked(program: Program) -> None:
    assert decide_one(program, contact("C1", opted_out=True)).reason is SkipReason.OPTED_OUT


def test_a_suppressed_contact_is_not_asked(program: Program) -> None:
    history = ContactHistory(suppressed=True, customer_since=TENURED.customer_since)
    assert decide_one(program, history=history).reason is SkipReason.SUPPRESSED


@pytest.mark.parametrize("email", [None, ""], ids=["none", "blank"])
def test_a_contact_without_an_email_address_is_not_asked(
    email: str | None, program: Program
) -> None:
    person = Contact("C1", "A1", "Person C1", email)
    assert decide_one(program, person).reason is SkipReason.NO_EMAIL


def test_a_customer_of_less_than_the_minimum_tenure_is_not_asked(program: Program) -> None:
    tenure = program.eligibility.min_tenure_days
    recent = ContactHistory(customer_since=(NOW - timedelta(days=tenure - 1)).date())
    assert decide_one(program, history=recent).reason is SkipReason.TENURE_TOO_SHORT


def test_a_customer_of_exactly_the_minimum_tenure_is_asked(program: Program) -> None:
    tenure = program.eligibility.min_tenure_days
    enough = ContactHistory(customer_since=(NOW - timedelta(days=tenure)).date())
    assert decide_one(program, history=enough).ask


def test_a_customer_whose_tenure_is_unknown_is_not_asked(program: Program) -> None:
    assert decide_one(program, history=ContactHistory()).reason is SkipReason.TENURE_TOO_SHORT


@pytest.mark.parametrize("kind", [ReferrerType.PARTNER, ReferrerType.EMPLOYEE])
def test_partners_and_employees_need_no_customer_tenure(
    kind: ReferrerType, program: Program
) -> None:
    assert decide_one(program, contact("C1", kind=kind), history=ContactHistory()).ask


def test_an_open_high_priority_ticket_blocks_the_ask(program: Program) -> None:
    history = ContactHistory(open_high_priority_tickets=1, customer_since=TENURED.customer_since)
    assert decide_one(program, history=history).reason is SkipReason.OPEN_HIGH_PRIORITY_TICKET


def test_a_contact_asked_within_the_cooldown_is_not_asked_again(program: Program) -> None:
    cooldown = timedelta(days=program.eligibility.cooldown_days)
    history = ContactHistory(
        last_asked_at=NOW - cooldown + timedelta(hours=1), customer_since=TENURED.customer_since
    )
    assert decide_one(program, history=history).reason is SkipReason.COOLDOWN


def test_a_contact_is_asked_again_once_the_cooldown_has_passed(program: Program) -> None:
    cooldown = timedelta(days=program.eligibility.cooldown_days)
    history = ContactHistory(last_asked_at=NOW - cooldown, customer_since=TENURED.customer_since)
    assert decide_one(program, history=history).ask


def test_a_moment_older_than_the_maximum_age_has_passed(program: Program) -> None:
    max_age = timedelta(days=program.moments.max_age_days)
    old = moment(age=max_age + timedelta(minutes=1))
    assert decide_one(program, the_moment=old).reason is SkipReason.MOMENT_TOO_OLD


def test_a_moment_exactly_at_the_maximum_age_is_still_asked(program: Program) -> None:
    edge = moment(age=timedelta(days=program.moments.max_age_days))
    assert decide_one(program, the_moment=edge).ask


def test_a_moment_of_an_unknown_contact_is_skipped(program: Program) -> None:
    decision = only(decide([moment("GHOST")], {}, {}, program, NOW))
    assert decision.reason is SkipReason.UNKNOWN_CONTACT


def test_a_moment_of_a_disabled_type_is_skipped() -> None:
    program = parse_program({"moments": {"renewal": {"enabled": False}}})
    decision = decide_one(program, the_moment=moment(type_=MomentType.RENEWAL))
    assert decision.reason is SkipReason.MOMENT_DISABLED


def test_a_contact_with_several_moments_is_asked_once_for_the_highest_priority(
    program: Program,
) -> None:
    priority = program.moments.priority
    person = contact("C1")
    # the lowest-priority moment is the most recent one, the highest the oldest
    moments = [
        moment("C1", t, age=timedelta(hours=1 + i)) for i, t in enumerate(reversed(priority))
    ]
    decisions = decide(moments, {"C1": person}, {"C1": TENURED}, program, NOW)
    asked = [d.moment for d in decisions if d.ask]
    assert [m.type for m in asked] == [priority[0]]
    skipped = [d for d in decisions if not d.ask]
    assert len(skipped) == len(priority) - 1
    assert {d.reason for d in skipped} == {SkipReason.ANOTHER_MOMENT_THIS_RUN}


def test_the_priority_order_comes_from_the_program() -> None:
    order = [
        "usage_milestone",
        "support_resolved",
        "renewal",
        "deal_won",
        "nps_promoter",
    ]
    program = parse_program({"moments": {"priority": order}})
    moments = [
        moment("C1", MomentType.NPS_PROMOTER),
        moment("C1", MomentType.USAGE_MILESTONE, age=timedelta(days=5)),
    ]
    decisions = decide(moments, {"C1": contact("C1")}, {"C1": TENURED}, program, NOW)
    assert [d.moment.type for d in decisions if d.ask] == [MomentType.USAGE_MILESTONE]


def test_among_moments_of_equal_priority_the_most_recent_is_asked(program: Program) -> None:
    older = moment("C1", MomentType.RENEWAL, age=timedelta(days=3))
    newer = moment("C1", MomentType.RENEWAL, age=timedelta(days=1))
    decisions = decide([newer, older], {"C1": contact("C1")}, {"C1": TENURED}, program, NOW)
    assert [d.moment for d in decisions if d.ask] == [newer]
    decisions = decide([older, newer], {"C1": contact("C1")}, {"C1": TENURED}, program, NOW)
    assert [d.moment for d in decisions if d.ask] == [newer]


def test_a_moment_skipped_for_its_own_reason_does_not_use_up_the_contacts_ask() -> None:
    program = parse_program({"moments": {"nps_promoter": {"enabled": False}}})
    disabled = moment("C1", MomentType.NPS_PROMOTER)
    renewal = moment("C1", MomentType.RENEWAL)
    decisions = decide([disabled, renewal], {"C1": contact("C1")}, {"C1": TENURED}, program, NOW)
    by_moment = {d.moment.moment_id: d.reason for d in decisions}
    assert by_moment == {disabled.moment_id: SkipReason.MOMENT_DISABLED, renewal.moment_id: None}


def test_different_contacts_are_each_asked_in_the_same_run(program: Program) -> None:
    people = {c.contact_id: c for c in (contact("C1"), contact("C2", "A2"))}
    history = dict.fromkeys(people, TENURED)
    decisions = decide([moment("C1"), moment("C2")], people, history, program, NOW)
    assert sorted(d.moment.contact_id for d in decisions if d.ask) == ["C1", "C2"]


def test_a_contact_asked_by_an_earlier_batch_of_this_run_is_not_asked_again(
    program: Program,
) -> None:
    people = {c.contact_id: c for c in (contact("C1"), contact("C2", "A2"))}
    history = dict.fromkeys(people, TENURED)
    decisions = decide(
        [moment("C1"), moment("C1", MomentType.NPS_PROMOTER), moment("C2")],
        people,
        history,
        program,
        NOW,
        asked_this_run={"C1"},
    )
    reasons = {(d.moment.contact_id, d.reason) for d in decisions}
    assert reasons == {("C1", SkipReason.ANOTHER_MOMENT_THIS_RUN), ("C2", None)}


def test_moments_after_as_of_get_no_decision_and_stay_pending(program: Program) -> None:
    future = moment("C1", MomentType.NPS_PROMOTER, age=-timedelta(minutes=1))
    present = moment("C1", MomentType.RENEWAL, age=timedelta(0))
    decisions = decide([future, present], {"C1": contact("C1")}, {"C1": TENURED}, program, NOW)
    assert [d.moment for d in decisions] == [present]
    assert decisions[0].ask


def test_skip_counts_counts_skipped_moments_per_reason_and_ignores_asks(
    program: Program,
) -> None:
    people = {
        "OK": contact("OK"),
        "OUT": contact("OUT", opted_out=True),
        "OUT2": contact("OUT2", opted_out=True),
    }
    history = dict.fromkeys(people, TENURED)
    moments = [
        moment("OK"),
        moment("OK", MomentType.USAGE_MILESTONE),
        moment("OUT"),
        moment("OUT2"),
        moment("GHOST"),
    ]
    counts = skip_counts(decide(moments, people, history, program, NOW))
    assert counts == {
        SkipReason.ANOTHER_MOMENT_THIS_RUN.value: 1,
        SkipReason.OPTED_OUT.value: 2,
        SkipReason.UNKNOWN_CONTACT.value: 1,
    }
    assert list(counts) == sorted(counts)


def test_skip_counts_of_only_asks_is_empty(program: Program) -> None:
    assert (
        skip_counts(decide([moment("C1")], {"C1": contact("C1")}, {"C1": TENURED}, program, NOW))
        == {}
    )


# --- property: one decision per past moment, at most one ask per contact -----------------

contact_ids = st.sampled_from(["C1", "C2", "C3", "GHOST"])
moment_specs = st.lists(
    st.tuples(
        contact_ids,
        st.sampled_from(list(MomentType)),
        st.integers(min_value=-3 * 24, max_value=20 * 24),  # age in hours; negative = future
    ),
    max_size=15,
    unique_by=lambda spec: spec,
)


@settings(max_examples=100, deadline=None)
@given(specs=moment_specs, already=st.sets(contact_ids, max_size=2))
def test_every_past_moment_gets_exactly_one_decision_and_each_contact_at_most_one_ask(
    specs: list[tuple[str, MomentType, int]], already: set[str], program: Program
) -> None:
    people = {cid: contact(cid) for cid in ("C1", "C2", "C3")}
    history = dict.fromkeys(people, TENURED)
    moments = [moment(cid, t, age=timedelta(hours=h)) for cid, t, h in specs]
    as_of: datetime = NOW
    decisions = decide(moments, people, history, program, as_of, asked_this_run=already)

    past = [m for m in moments if m.occurred_at <= as_of]
    assert sorted(d.moment.moment_id for d in decisions) == sorted(m.moment_id for m in past)
    asks = Counter(d.moment.contact_id for d in decisions if d.ask)
    assert all(n == 1 for n in asks.values())
    assert not set(asks) & already
    assert "GHOST" not in asks


histories = st.sampled_from(
    [
        TENURED,
        ContactHistory(),  # no tenure known
        ContactHistory(customer_since=TENURED.customer_since, suppressed=True),
        ContactHistory(
            customer_since=TENURED.customer_since, last_asked_at=NOW - timedelta(days=1)
        ),
        ContactHistory(customer_since=TENURED.customer_since, open_high_priority_tickets=1),
        ContactHistory(customer_since=TENURED.customer_since, nps_answers=(NpsAnswer(3, NOW),)),
    ]
)


@settings(max_examples=200, deadline=None)
@given(
    specs=moment_specs,
    pasts=st.fixed_dictionaries({cid: histories for cid in ("C1", "C2", "C3")}),
    opted_out=st.sets(st.sampled_from(["C1", "C2", "C3"]), max_size=2),
    already=st.sets(contact_ids, max_size=1),
)
def test_the_histories_named_as_needed_are_all_a_decision_reads(
    specs: list[tuple[str, MomentType, int]],
    pasts: dict[str, ContactHistory],
    opted_out: set[str],
    already: set[str],
    program: Program,
) -> None:
    """The ledger reads only the histories ``histories_needed`` names: deciding with
    those alone must decide every moment as deciding with all of them does."""
    people = {cid: contact(cid, opted_out=cid in opted_out) for cid in ("C1", "C2", "C3")}
    moments = [moment(cid, t, age=timedelta(hours=h)) for cid, t, h in specs]

    needed = histories_needed(moments, people, program, NOW)
    narrowed = {cid: past for cid, past in pasts.items() if cid in needed}

    assert decide(moments, people, narrowed, program, NOW, asked_this_run=already) == decide(
        moments, people, pasts, program, NOW, asked_this_run=already
    )


def test_no_history_is_needed_for_moments_decided_on_the_moment_and_contact_alone(
    program: Program,
) -> None:
    people = {"C1": contact("C1"), "C2": contact("C2", opted_out=True), "C3": contact("C3")}
    moments = [
        moment("C1", age=timedelta(days=program.moments.max_age_days + 1)),  # too old
        moment("C2"),  # opted out
        moment("GHOST"),  # unknown contact
        moment("C3", age=-timedelta(days=1)),  # after as_of: no decision yet
    ]

    assert histories_needed(moments, people, program, NOW) == set()
    assert histories_needed([*moments, moment("C1")], people, program, NOW) == {"C1"}


# --- recent detractors are asked for no moment at all ------------------------------------

DAY = timedelta(days=1)


def answered(score: int, age: timedelta) -> NpsAnswer:
    """An NPS answer of ``score`` given ``age`` before NOW."""
    return NpsAnswer(score, NOW - age)


def with_answers(*answers: NpsAnswer) -> ContactHistory:
    return ContactHistory(customer_since=TENURED.customer_since, nps_answers=answers)


def reason_for(
    program: Program, *answers: NpsAnswer, type_: MomentType = MomentType.DEAL_WON
) -> SkipReason | None:
    return decide_one(
        program, history=with_answers(*answers), the_moment=moment(type_=type_)
    ).reason


@pytest.mark.parametrize("type_", list(MomentType))
def test_a_contact_who_scored_3_yesterday_is_asked_for_no_moment_of_any_type(
    type_: MomentType, program: Program
) -> None:
    assert reason_for(program, answered(3, DAY), type_=type_) is SkipReason.RECENT_DETRACTOR


@pytest.mark.parametrize("type_", list(MomentType))
@pytest.mark.parametrize(
    ("score", "reason"),
    [(0, SkipReason.RECENT_DETRACTOR), (6, SkipReason.RECENT_DETRACTOR), (7, None), (10, None)],
)
def test_a_score_of_6_or_less_keeps_the_contact_out_and_7_or_more_does_not(
    type_: MomentType, score: int, reason: SkipReason | None, program: Program
) -> None:
    assert reason_for(program, answered(score, 5 * DAY), type_=type_) is reason


@pytest.mark.parametrize("type_", list(MomentType))
def test_a_detractor_answer_exactly_90_days_old_still_counts(
    type_: MomentType, program: Program
) -> None:
    assert program.eligibility.detractor_window_days == 90
    assert reason_for(program, answered(2, 90 * DAY), type_=type_) is SkipReason.RECENT_DETRACTOR


@pytest.mark.parametrize("type_", list(MomentType))
@pytest.mark.parametrize(
    "age", [91 * DAY, 90 * DAY + timedelta(microseconds=1)], ids=["day 91", "just past day 90"]
)
def test_a_detractor_answer_older_than_90_days_no_longer_counts(
    type_: MomentType, age: timedelta, program: Program
) -> None:
    assert reason_for(program, answered(2, age), type_=type_) is None


@pytest.mark.parametrize("type_", list(MomentType))
@pytest.mark.parametrize("later", [9, 7], ids=["promoter", "passive"])
def test_a_later_answer_of_7_or_more_ends_a_detractors_exclusion(
    type_: MomentType, later: int, program: Program
) -> None:
    answers = (answered(3, 10 * DAY), answered(later, 2 * DAY))
    assert reason_for(program, *answers, type_=type_) is None
    assert reason_for(program, *reversed(answers), type_=type_) is None


@pytest.mark.parametrize("type_", list(MomentType))
def test_a_promoter_who_later_scores_4_is_a_recent_detractor(
    type_: MomentType, program: Program
) -> None:
    answers = (answered(10, 10 * DAY), answered(4, 2 * DAY))
    assert reason_for(program, *answers, type_=type_) is SkipReason.RECENT_DETRACTOR


@pytest.mark.parametrize("type_", list(MomentType))
def test_at_equal_times_the_lower_score_counts(type_: MomentType, program: Program) -> None:
    same_time = (answered(9, 2 * DAY), answered(5, 2 * DAY))
    assert reason_for(program, *same_time, type_=type_) is SkipReason.RECENT_DETRACTOR
    assert reason_for(program, *reversed(same_time), type_=type_) is SkipReason.RECENT_DETRACTOR


def test_an_answer_older_than_the_window_neither_keeps_a_contact_out_nor_lets_one_in(
    program: Program,
) -> None:
    # The latest answer inside the window decides; one before it is not weighed at all.
    assert reason_for(program, answered(2, 100 * DAY), answered(9, 80 * DAY)) is None
    assert (
        reason_for(program, answered(9, 100 * DAY), answered(2, 80 * DAY))
        is SkipReason.RECENT_DETRACTOR
    )
    assert reason_for(program, answered(2, 95 * DAY), answered(1, 92 * DAY)) is None


def test_a_detractor_answer_after_as_of_has_not_happened_yet(program: Program) -> None:
    assert reason_for(program, answered(1, -DAY)) is None


def test_a_promoter_answer_after_as_of_does_not_yet_end_a_detractors_exclusion(
    program: Program,
) -> None:
    answers = (answered(1, 3 * DAY), answered(10, -DAY))
    assert reason_for(program, *answers) is SkipReason.RECENT_DETRACTOR


def test_a_detractor_answer_given_after_the_moment_still_keeps_the_contact_out(
    program: Program,
) -> None:
    # The deal was won three days ago, the 3 came yesterday: no congratulations.
    the_moment = moment(type_=MomentType.DEAL_WON, age=3 * DAY)
    decision = decide_one(program, history=with_answers(answered(3, DAY)), the_moment=the_moment)
    assert decision.reason is SkipReason.RECENT_DETRACTOR


def test_the_detractor_window_comes_from_the_program() -> None:
    program = parse_program({"eligibility": {"detractor_window_days": 30}})
    assert reason_for(program, answered(0, 30 * DAY)) is SkipReason.RECENT_DETRACTOR
    assert reason_for(program, answered(0, 31 * DAY)) is None


def test_a_contact_who_never_answered_the_survey_is_asked(program: Program) -> None:
    assert reason_for(program) is None


def test_recent_detractors_are_counted_in_the_skip_counts(program: Program) -> None:
    people = {c: contact(c, f"A-{c}") for c in ("D1", "D2", "P1")}
    history = {
        "D1": with_answers(answered(3, DAY)),
        "D2": with_answers(answered(6, 60 * DAY)),
        "P1": with_answers(answered(9, DAY)),
    }
    moments = [moment("D1"), moment("D1", MomentType.USAGE_MILESTONE), moment("D2"), moment("P1")]
    decisions = decide(moments, people, history, program, NOW)
    assert skip_counts(decisions) == {SkipReason.RECENT_DETRACTOR.value: 3}
    assert [d.moment.contact_id for d in decisions if d.ask] == ["P1"]


def test_the_window_starts_detractor_window_days_before_as_of(program: Program) -> None:
    assert nps_answers_since(program, NOW) == NOW - 90 * DAY


def test_the_latest_answer_is_none_when_none_falls_inside_the_window() -> None:
    since = NOW - 90 * DAY
    assert latest_nps_answer([answered(3, 91 * DAY), answered(9, -DAY)], since, NOW) is None


# --- property: the rule is the latest answer in the window, whatever the order ------------

answers_strategy = st.lists(
    st.builds(
        answered,
        st.integers(min_value=0, max_value=10),
        # ages around both ends of the window, in hours; negative = after as_of
        st.integers(min_value=-48, max_value=95 * 24).map(lambda h: timedelta(hours=h)),
    ),
    max_size=6,
)


@settings(max_examples=200, deadline=None)
@given(answers=answers_strategy, order=st.randoms(use_true_random=False))
def test_whether_a_contact_is_a_recent_detractor_does_not_depend_on_the_order_of_answers(
    answers: list[NpsAnswer], order: Random, program: Program
) -> None:
    shuffled = list(answers)
    order.shuffle(shuffled)
    since = nps_answers_since(program, NOW)
    assert recent_detractor(answers, since, NOW) == recent_detractor(shuffled, since, NOW)
    counted = [a for a in answers if since <= a.answered_at <= NOW]
    if all(a.score <= 6 for a in counted) and counted:
        assert recent_detractor(answers, since, NOW)
    if all(a.score >= 7 for a in counted):
        assert not recent_detractor(answers, since, NOW)
