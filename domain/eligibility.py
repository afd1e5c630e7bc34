"""Who is asked, and why everyone else is not.

Every moment gets exactly one decision: ask, or skip with a :class:`SkipReason` the
operator sees counted in the run's artifact. Nobody is asked twice in a run, nobody who
opted out or is on the suppression list, no recent detractor, nobody inside the
cooldown, nobody whose account has an open high-priority ticket, and no customer
before the minimum tenure.

A recent detractor is a contact whose latest NPS answer, as of the decision, is 0-6
and at most ``eligibility.detractor_window_days`` old: they are asked for no moment at
all, whatever the moment is. A later answer of 7-10 ends it, and so does time. This is
the rule's one definition (:func:`recent_detractor`); the ledger only gathers the
answers (:func:`nps_answers_since` gives it the oldest one that can count).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime, timedelta

from domain.models import (
    AskDecision,
    Contact,
    ContactHistory,
    EventType,
    Moment,
    MomentType,
    NpsAnswer,
    ReferrerType,
    SkipReason,
    SourceEvent,
)
from domain.moments import DETRACTOR_MAX_SCORE
from domain.program import Program

_NO_HISTORY = ContactHistory()


def decide(
    moments: Sequence[Moment],
    contacts: Mapping[str, Contact],
    history: Mapping[str, ContactHistory],
    program: Program,
    as_of: datetime,
    asked_this_run: Collection[str] = (),
) -> list[AskDecision]:
    """Decide, for each moment that has happened by ``as_of``, whether to ask.

    Moments after ``as_of`` get no decision: they stay pending for a later run.
    ``asked_this_run`` names contacts already asked by an earlier batch of this run.
    """
    rules = program.moments
    max_age = timedelta(days=rules.max_age_days)
    cooldown = timedelta(days=program.eligibility.cooldown_days)
    min_tenure = timedelta(days=program.eligibility.min_tenure_days)
    nps_since = nps_answers_since(program, as_of)
    rank = {moment_type: i for i, moment_type in enumerate(rules.priority)}
    enabled = _enabled(program)

    decisions: list[AskDecision] = []
    candidates: dict[str, list[Moment]] = {}
    for moment in moments:
        if moment.occurred_at > as_of:
            continue
        reason = _skip_reason(
            moment, contacts, history, enabled, as_of, max_age, cooldown, min_tenure, nps_since
        )
        if reason is None and moment.contact_id in asked_this_run:
            reason = SkipReason.ANOTHER_MOMENT_THIS_RUN
        if reason is None:
            candidates.setdefault(moment.contact_id, []).append(moment)
        else:
            decisions.append(AskDecision(moment, reason))

    for contact_moments in candidates.values():
        # The highest-priority moment wins; among equals, the most recent one.
        contact_moments.sort(key=lambda m: (rank[m.type], -m.occurred_at.timestamp(), m.moment_id))
        decisions.append(AskDecision(contact_moments[0]))
        decisions.extend(
            AskDecision(m, SkipReason.ANOTHER_MOMENT_THIS_RUN) for m in contact_moments[1:]
        )
    return decisions


def _skip_reason(
    moment: Moment,
    contacts: Mapping[str, Contact],
    history: Mapping[str, ContactHistory],
    enabled: Collection[MomentType],
    as_of: datetime,
    max_age: timedelta,
    cooldown: timedelta,
    min_tenure: timedelta,
    nps_since: datetime,
) -> SkipReason | None:
    contact = contacts.get(moment.contact_id)
    reason = _skip_reason_before_history(moment, contact, enabled, as_of, max_age)
    if reason is not None or contact is None:
        return reason
    past = history.get(contact.contact_id, _NO_HISTORY)
    if past.suppressed:
        return SkipReason.SUPPRESSED
    if recent_detractor(past.nps_answers, nps_since, as_of):
        return SkipReason.RECENT_DETRACTOR
    if not contact.email:
        return SkipReason.NO_EMAIL
    if contact.referrer_type is ReferrerType.CUSTOMER and (
        past.customer_since is None or as_of.date() - past.customer_since < min_tenure
    ):
        return SkipReason.TENURE_TOO_SHORT
    if past.open_high_priority_tickets > 0:
        return SkipReason.OPEN_HIGH_PRIORITY_TICKET
    if past.last_asked_at is not None and as_of - past.last_asked_at < cooldown:
        return SkipReason.COOLDOWN
    return None


def _enabled(program: Program) -> frozenset[MomentType]:
    """The moment types the program asks for (looked up once per call, not per moment)."""
    return frozenset(t for t in MomentType if program.moments.enabled(t))


def _skip_reason_before_history(
    moment: Moment,
    contact: Contact | None,
    enabled: Collection[MomentType],
    as_of: datetime,
    max_age: timedelta,
) -> SkipReason | None:
    """The reasons that come first, told by the moment and its contact alone."""
    if moment.type not in enabled:
        return SkipReason.MOMENT_DISABLED
    if contact is None:
        return SkipReason.UNKNOWN_CONTACT
    if as_of - moment.occurred_at > max_age:
        return SkipReason.MOMENT_TOO_OLD
    if contact.opted_out:
        return SkipReason.OPTED_OUT
    return None


def histories_needed(
    moments: Iterable[Moment],
    contacts: Mapping[str, Contact],
    program: Program,
    as_of: datetime,
) -> set[str]:
    """The contacts whose history :func:`decide` reads to decide ``moments``.

    A moment skipped for what it and its contact alone tell (its type disabled, an
    unknown contact, too old, opted out) is decided before any history is looked at,
    so only the contacts of the other moments need one: the ledger reads no more.
    Most pending moments of a first cycle are too old, so this is most of the reading
    saved. Moments after ``as_of`` get no decision and need nothing.
    """
    max_age = timedelta(days=program.moments.max_age_days)
    enabled = _enabled(program)
    return {
        moment.contact_id
        for moment in moments
        if moment.occurred_at <= as_of
        and _skip_reason_before_history(
            moment, contacts.get(moment.contact_id), enabled, as_of, max_age
        )
        is None
    }


def nps_answers_since(program: Program, as_of: datetime) -> datetime:
    """The oldest time an NPS answer may have and still count as of ``as_of``.

    An answer exactly ``detractor_window_days`` old still counts, as a moment exactly
    ``max_age_days`` old still does.
    """
    return as_of - timedelta(days=program.eligibility.detractor_window_days)


def nps_answer(event: SourceEvent) -> NpsAnswer | None:
    """The NPS answer ``event`` is: an NPS response that carries a score (one without a
    score says nothing about the contact). The ledger reads the same events in SQL."""
    if event.type is not EventType.NPS_RESPONSE or event.score is None:
        return None
    return NpsAnswer(event.score, event.occurred_at)


def latest_nps_answer(
    answers: Iterable[NpsAnswer], since: datetime, as_of: datetime
) -> NpsAnswer | None:
    """The answer that speaks for the contact: the latest one from ``since`` to ``as_of``.

    Answers after ``as_of`` have not happened yet for this decision. Of answers given at
    the same time the lowest score counts: nothing tells which came last, and asking
    a detractor is the worse mistake than missing a promoter.
    """
    counted = [a for a in answers if since <= a.answered_at <= as_of]
    if not counted:
        return None
    return max(counted, key=lambda a: (a.answered_at, -a.score))


def recent_detractor(answers: Iterable[NpsAnswer], since: datetime, as_of: datetime) -> bool:
    """Whether the latest answer from ``since`` to ``as_of`` is a detractor's (0-6).

    With no answer in that time there is nothing against asking: the latest answer
    may be older (it no longer counts) or there may be none.
    """
    latest = latest_nps_answer(answers, since, as_of)
    return latest is not None and latest.score <= DETRACTOR_MAX_SCORE


def skip_counts(decisions: Iterable[AskDecision]) -> dict[str, int]:
    """Skipped moments per reason, for the run's summary."""
    counts = Counter(d.reason.value for d in decisions if d.reason is not None)
    return dict(sorted(counts.items()))
