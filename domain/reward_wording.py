"""Reward rules in the words a referrer reads.

Asks quote the reward a referral earns, and the notices of a referral's progress quote
the rewards still to come. Each reward kind says what it really pays: a flat amount;
a share of the referee's first payment or first-year value; a share of every invoice
for N months; an amount that depends on how many referrals the referrer made in the
calendar period (tiers). A rule's own cap, the program's caps per referrer and per
program, and an attribution model that may share the credit are said too, so the
sentence is never more than the rules give. Pure: the templates get the text as
``reward_line``.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from domain.models import Milestone, ReferrerType
from domain.program import CapScope, Program, RewardKind, RewardRule

_ORDER = (Milestone.LEAD, Milestone.QUALIFIED, Milestone.CUSTOMER)
_BECOMES = {
    Milestone.LEAD: "a lead",
    Milestone.QUALIFIED: "a qualified lead",
    Milestone.CUSTOMER: "a customer",
}
_SUFFIXES = {1: "st", 2: "nd", 3: "rd"}
_MODEL_WORDS = {
    "first_touch": "first-touch",
    "linear": "linear",
    "time_decay": "time-decay",
    "position_based": "position-based (40/20/40)",
}


def ordinal(n: int) -> str:
    """``1st``, ``2nd``, ``3rd``, ``4th``, ``11th``, ``21st``, ``112th``."""
    # 11th to 13th (and 111th...) break the rule of the last digit.
    teens = 10 <= n % 100 <= 20
    suffix = "th" if teens else _SUFFIXES.get(n % 10, "th")
    return f"{n}{suffix}"


def _percent(value: Decimal | None) -> str:
    assert value is not None  # the program model guarantees it for percent rules
    # normalize() alone turns 10 into 1E+1.
    return f"{value.normalize():f}%"


def _up_to(rule: RewardRule, program: Program, each: str = "") -> str:
    return f" (up to {program.money(rule.cap)}{each})" if rule.cap else ""


def _tiers(rule: RewardRule, program: Program) -> str:
    tiers = rule.tiers or ()
    assert tiers  # the program model guarantees it for tiered rules
    if len(tiers) == 1:
        return str(program.money(tiers[0].amount))
    parts: list[str] = []
    for tier, following in zip(tiers, (*tiers[1:], None), strict=True):
        amount = program.money(tier.amount)
        if following is None:
            parts.append(f"{amount} from your {ordinal(tier.from_)} on")
            continue
        last = following.from_ - 1
        span = (
            ordinal(tier.from_)
            if last == tier.from_
            else f"{ordinal(tier.from_)} to {ordinal(last)}"
        )
        parts.append(f"{amount} for your {span}")
    parts[0] += f" referral in a calendar {rule.tier_period.value}"
    return ", ".join(parts[:-1]) + f", and {parts[-1]}"


def rule_terms(rule: RewardRule, program: Program) -> str:
    """What ``rule`` pays for one referral, after "you earn" ("they" is the referee).

    ``200.00 EUR``; ``10% of their first payment (up to 500.00 EUR)``; ``15% of their
    first-year value``; ``5% of every invoice they pay in their first 12 months (up to
    50.00 EUR per invoice)``; ``100.00 EUR for your 1st to 4th referral in a calendar
    quarter, and 150.00 EUR from your 5th on``.
    """
    kind = rule.kind
    if kind is RewardKind.FLAT:
        assert rule.amount is not None  # the program model guarantees it
        return str(program.money(rule.amount))
    if kind is RewardKind.TIERED:
        return _tiers(rule, program)
    if kind is RewardKind.RECURRING:
        months = "month" if rule.months == 1 else f"{rule.months} months"
        return (
            f"{_percent(rule.percent)} of every invoice they pay in their first {months}"
            f"{_up_to(rule, program, ' per invoice')}"
        )
    if kind is RewardKind.PERCENT_OF_FIRST_PAYMENT:
        return f"{_percent(rule.percent)} of their first payment{_up_to(rule, program)}"
    return f"{_percent(rule.percent)} of their first-year value{_up_to(rule, program)}"


def milestone_reward(rules: Sequence[RewardRule], program: Program, milestone: Milestone) -> str:
    """One sentence for the rules paid at ``milestone``: "When they become a customer,
    you earn 200.00 EUR, plus 5% of every invoice ...". Empty without rules."""
    if not rules:
        return ""
    terms = ", plus ".join(rule_terms(rule, program) for rule in rules)
    return f"When they become {_BECOMES[milestone]}, you earn {terms}."


def caps_sentence(program: Program) -> str:
    """What the program's caps take off, in a sentence or two; empty without caps."""
    sentences: list[str] = []
    mine = [c for c in program.reward_caps if c.per is CapScope.REFERRER]
    budget = [c for c in program.reward_caps if c.per is CapScope.PROGRAM]
    if mine:
        limits = " and ".join(
            f"{program.money(c.amount)} per calendar {c.period.value}" for c in mine
        )
        sentences.append(f"Your rewards add up to at most {limits}.")
    if budget:
        periods = " and ".join(f"calendar {c.period.value}" for c in budget)
        sentences.append(f"Rewards are paid while the program's budget for the {periods} lasts.")
    return " ".join(sentences)


def sharing_sentence(program: Program) -> str:
    """Whether the credit may be shared: under last touch the code used at the
    conversion takes it all; every other model shares it among whoever touched."""
    model = program.attribution.model
    if model == "last_touch":
        return ""
    words = _MODEL_WORDS.get(model, model)
    return f"If others introduced them too, the reward is shared by {words} attribution."


def _with_conditions(sentences: Sequence[str], program: Program) -> str:
    said = [s for s in sentences if s]
    if not said:
        return ""
    conditions = (sharing_sentence(program), caps_sentence(program))
    return " ".join([*said, *(c for c in conditions if c)])


def rewards_to_come(program: Program, referrer_type: ReferrerType, after: Milestone) -> str:
    """The rewards a ``referrer_type`` referrer still earns once the referee, now at
    ``after``, reaches each later milestone, one sentence per milestone, then what may
    share or cap them. Empty when nothing more is to come. (A reward of the milestone
    reached is announced by its own "reward earned" notice.)"""
    later = _ORDER[_ORDER.index(after) + 1 :]
    return _with_conditions(
        [milestone_reward(program.rules_for(referrer_type, m), program, m) for m in later],
        program,
    )


def headline(program: Program, referrer_type: ReferrerType) -> str:
    """The reward quoted in asks: the headline rule (paid when the referee becomes a
    customer) for one referral, then what may share or cap it. Empty without one."""
    rule = program.headline_reward(referrer_type)
    if rule is None:
        return ""
    return _with_conditions(
        [f"For each customer you refer, you earn {rule_terms(rule, program)}."], program
    )
