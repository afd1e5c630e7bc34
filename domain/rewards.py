"""Reward rules: what a conversion earns, when it becomes payable, and where it goes.

The kinds (:class:`~domain.program.RewardKind`): a flat amount; a percentage of the
first payment or of the first-year value (``percent_of_deal``, its old name); a
percentage of each invoice the referee pays for N months after the conversion
(recurring: one reward per invoice, its rule recorded as ``<rule id>@<invoice>``); and
tiers by the referrer's successful referrals in a calendar period. Each rule's amount
is split among the credited referrers by their attribution weights, exactly (largest
remainder), then held to the program's caps per referrer and per program per period.

What depends on rewards already recorded (the tier a referral falls in, the room left
under a cap) is read through a :class:`RewardBook`, which the ledger fills under its
per-referrer lock and which adds what the run itself computes, in order.
"""

from __future__ import annotations

import calendar
import hashlib
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from domain.attribution import split
from domain.errors import InputRejected
from domain.models import Contact, Conversion, Milestone, PayoutRailKind, Reward, Route
from domain.money import Money
from domain.ports import RewardHistory
from domain.program import CapScope, Period, Program, RewardChoice, RewardKind, RewardRule

# The longest invoice id kept as is in a recurring reward's rule id (64 characters in
# the ledger, the rule's own id at most 30); a longer one is replaced by its digest.
_INVOICE_REF_CHARS = 33


# -- periods ----------------------------------------------------------------------------


def period_of(at: datetime, period: Period) -> tuple[str, datetime, datetime]:
    """(label, start, end) of the calendar period (UTC) holding ``at``: ``2026``,
    ``2026-Q4`` or ``2026-11``; ``end`` is the start of the next one."""
    at = at.astimezone(UTC)
    if period is Period.YEAR:
        start = datetime(at.year, 1, 1, tzinfo=UTC)
        return f"{at.year}", start, datetime(at.year + 1, 1, 1, tzinfo=UTC)
    if period is Period.QUARTER:
        quarter = (at.month - 1) // 3
        start = datetime(at.year, quarter * 3 + 1, 1, tzinfo=UTC)
        return f"{at.year}-Q{quarter + 1}", start, add_months(start, 3)
    start = datetime(at.year, at.month, 1, tzinfo=UTC)
    return f"{at.year}-{at.month:02d}", start, add_months(start, 1)


def add_months(at: datetime, months: int) -> datetime:
    """``at`` moved ``months`` calendar months on; a day the month lacks becomes its last
    (31 January + 1 month is 28 or 29 February)."""
    index = at.month - 1 + months
    year, month = at.year + index // 12, index % 12 + 1
    return at.replace(year=year, month=month, day=min(at.day, calendar.monthrange(year, month)[1]))


def month_number(start: datetime, at: datetime) -> int:
    """Which month after ``start`` ``at`` falls in: 1 for the first month."""
    months = (at.year - start.year) * 12 + at.month - start.month
    while months > 0 and add_months(start, months) > at:
        months -= 1
    return max(months, 0) + 1


# -- one rule ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Invoice:
    """An invoice the referee paid, for recurring rules.

    Attributes:
        ref: the provider's invoice id (``in_...``).
        record: where it was read, for quarantine (``stripe:<event id>``).
        amount: what was paid.
        paid_at: when.
        of_conversion: the conversion's own payment (it counts even when its event is
            a moment older than the conversion's).
    """

    ref: str
    record: str
    amount: Money
    paid_at: datetime
    of_conversion: bool = False


def tier_amount(rule: RewardRule, referral_number: int, program: Program) -> Money:
    """What the ``referral_number``-th referral of the period earns under a tiered rule."""
    assert rule.tiers  # the program model guarantees it
    earned = Money.zero(program.currency)
    for tier in rule.tiers:
        if referral_number >= tier.from_:
            earned = program.money(tier.amount)
    return earned


def first_payment_of(conversion: Conversion, first_payment: Money | None) -> Money | None:
    """The referee's first payment: the one recorded with the conversion, else, for a
    conversion read from Stripe, the payment it is."""
    if first_payment is not None:
        return first_payment
    if conversion.source_event.startswith("stripe:"):
        return conversion.amount
    return None


def rule_amount(
    rule: RewardRule,
    conversion: Conversion,
    program: Program,
    *,
    first_payment: Money | None = None,
    referral_number: int = 1,
    invoice: Invoice | None = None,
) -> Money:
    """What ``rule`` pays for the whole of ``conversion``, before any split or cap.

    Args:
        rule: the rule.
        conversion: the conversion.
        program: for the currency.
        first_payment: the referee's first payment, when recorded (percent of the
            first payment; a conversion read from Stripe is its own first payment).
        referral_number: for tiered rules, which successful referral of the period
            this is (1: the first).
        invoice: for recurring rules, the invoice paid.

    Raises:
        InputRejected: a percentage rule met a conversion without the amount it needs.
    """
    kind = rule.kind
    if kind is RewardKind.FLAT:
        assert rule.amount is not None  # the program model guarantees it
        return program.money(rule.amount)
    if kind is RewardKind.TIERED:
        return tier_amount(rule, referral_number, program)
    if kind is RewardKind.RECURRING:
        if invoice is None:
            raise InputRejected(
                conversion.source_event, "invoice", f"rule {rule.id} pays a share of invoices"
            )
        basis = invoice.amount
    elif kind is RewardKind.PERCENT_OF_FIRST_PAYMENT:
        found = first_payment_of(conversion, first_payment)
        if found is None:
            raise InputRejected(
                conversion.source_event,
                "amount",
                f"rule {rule.id} needs the first payment; none is recorded for this conversion",
            )
        basis = found
    else:
        if conversion.amount is None:
            raise InputRejected(
                conversion.source_event, "amount", f"rule {rule.id} needs the deal amount"
            )
        basis = conversion.amount
    assert rule.percent is not None
    earned = basis.percent(rule.percent)
    if rule.cap is not None:
        earned = earned.min(program.money(rule.cap))
    return earned


def describe(rule: RewardRule, program: Program) -> str:
    """The rule in a few words, as asks and explanations quote it."""
    cap = f", at most {program.money(rule.cap)}" if rule.cap else ""
    kind = rule.kind
    if kind is RewardKind.FLAT:
        assert rule.amount is not None
        return f"{program.money(rule.amount)} per {rule.milestone.value}"
    if kind is RewardKind.TIERED:
        assert rule.tiers
        steps = ", ".join(f"{program.money(t.amount)} from #{t.from_}" for t in rule.tiers)
        return f"by referrals per {rule.tier_period.value}: {steps}"
    if kind is RewardKind.RECURRING:
        return f"{rule.percent}% of each invoice for {rule.months} months{cap}"
    if kind is RewardKind.PERCENT_OF_FIRST_PAYMENT:
        return f"{rule.percent}% of the first payment{cap}"
    return f"{rule.percent}% of the deal{cap}"


def recurring_rule_id(rule: RewardRule, invoice_ref: str) -> str:
    """The rule id a recurring rule's reward for one invoice is recorded under."""
    if len(invoice_ref) > _INVOICE_REF_CHARS:
        invoice_ref = "h" + hashlib.sha256(invoice_ref.encode()).hexdigest()[:24]
    return f"{rule.id}@{invoice_ref}"


# -- what earlier rewards change: tiers and caps -----------------------------------------


@dataclass(frozen=True, slots=True)
class RewardTerms:
    """How one reward was reached, beyond its explanation: what caps count it under,
    and what was taken off.

    Attributes:
        reward_id: the reward.
        kind: the rule's kind.
        earned_at: when it was earned (the conversion, or the invoice paid): the
            period caps count it in.
        period: the tier period (``2026-Q4``) or the invoice id, if any.
        referral_number: for tiered rules, which referral of the period it was.
        uncapped: the amount before the program's caps.
        capped_by: the cap that reduced it (``referrer/year 2026``), or None.
    """

    reward_id: str
    kind: RewardKind
    earned_at: datetime
    period: str | None
    referral_number: int | None
    uncapped: Money
    capped_by: str | None = None

    @property
    def capped(self) -> bool:
        return self.capped_by is not None


_Referral = tuple[datetime, str]  # (occurred at, conversion id)


class _NoHistory:
    """A ledger with nothing in it (what-if replays build their history as they go)."""

    def referrals(
        self, referrer_id: str, milestone: Milestone, start: datetime, end: datetime
    ) -> Sequence[tuple[datetime, str]]:
        return ()

    def earned(self, referrer_id: str | None, start: datetime, end: datetime) -> Money:
        raise LookupError  # the book counts from zero


class RewardBook:
    """Successful referrals and earned totals: the ledger's (read once per referrer and
    period) plus what this run has computed, so tiers and caps see each reward once.

    One book serves one run, in the order the run settles rewards: a reward settled
    earlier takes room under a cap before one settled later. It is the only mutable
    thing in the reward rules; every rule stays a pure function of it.

    Args:
        program: the caps and currency.
        history: the ledger's view (``None``: an empty ledger).
        recorded: ids of rewards already in the ledger: computing one again changes
            nothing (their amounts are already in ``history``).
    """

    def __init__(
        self,
        program: Program,
        history: RewardHistory | None = None,
        recorded: Collection[str] = (),
    ) -> None:
        self.program = program
        self._history: RewardHistory = history or _NoHistory()
        self._recorded = set(recorded)
        self._ledger_referrals: dict[
            tuple[str, Milestone, datetime], set[tuple[datetime, str]]
        ] = {}
        self._run_referrals: dict[tuple[str, Milestone], set[tuple[datetime, str]]] = {}
        self._used: dict[tuple[str | None, datetime, datetime], int] = {}
        self.terms: dict[str, RewardTerms] = {}

    def is_recorded(self, reward_id: str) -> bool:
        return reward_id in self._recorded

    # tiers

    def referral_number(
        self, referrer_id: str, conversion: Conversion, period: Period
    ) -> tuple[int, str]:
        """(which successful referral of its period ``conversion`` is for ``referrer_id``,
        the period's label). Earlier means (occurred at, conversion id) smaller: the
        same answer whatever order conversions are read in."""
        label, start, end = period_of(conversion.occurred_at, period)
        key = (referrer_id, conversion.milestone, start)
        if key not in self._ledger_referrals:
            self._ledger_referrals[key] = set(
                self._history.referrals(referrer_id, conversion.milestone, start, end)
            )
        run = self._run_referrals.get((referrer_id, conversion.milestone), set())
        me = (conversion.occurred_at, conversion.conversion_id)
        earlier = {
            conversion_id
            for at, conversion_id in self._ledger_referrals[key] | run
            if start <= at < end and (at, conversion_id) < me
        }
        return len(earlier) + 1, label

    def note_referral(self, referrer_id: str, conversion: Conversion) -> None:
        """``conversion`` earned ``referrer_id`` a reward in this run."""
        self._run_referrals.setdefault((referrer_id, conversion.milestone), set()).add(
            (conversion.occurred_at, conversion.conversion_id)
        )

    # caps

    def _earned(self, key: tuple[str | None, datetime, datetime]) -> int:
        if key not in self._used:
            try:
                earned = self._history.earned(*key)
            except LookupError:
                earned = Money.zero(self.program.currency)
            self._used[key] = earned.amount_minor
        return self._used[key]

    def settle(self, reward: Reward, terms: RewardTerms) -> Reward | None:
        """``reward`` held to the program's caps, and counted under them; ``None`` when
        it is already recorded.

        Each cap leaves (its amount - what its scope earned in the reward's period),
        never below zero; the reward becomes the smallest of those and its own amount.
        A reward reduced to nothing is still returned (amount zero), explaining the
        cap: a referral that was capped is not a referral that was forgotten.
        """
        if reward.reward_id in self._recorded:
            return None
        amount = reward.amount.amount_minor
        binding: str | None = None
        note = ""
        keys: list[tuple[str | None, datetime, datetime]] = []
        for cap in self.program.reward_caps:
            label, start, end = period_of(terms.earned_at, cap.period)
            key = (reward.referrer_id if cap.per is CapScope.REFERRER else None, start, end)
            keys.append(key)
            limit = self.program.money(cap.amount)
            used = self._earned(key)
            left = max(0, limit.amount_minor - used)
            if amount > left:
                amount = left
                binding = f"{cap.per.value}/{cap.period.value} {label}"
                note = (
                    f"; capped by the {cap.per.value} cap of {limit} per {cap.period.value} "
                    f"({label}: {Money(used, limit.currency)} earned before)"
                )
        for key in set(keys):
            self._used[key] = self._earned(key) + amount
        self._recorded.add(reward.reward_id)
        self.terms[reward.reward_id] = replace(terms, capped_by=binding)
        if binding is None:
            return reward
        return replace(
            reward,
            amount=Money(amount, reward.amount.currency),
            explanation=f"{reward.explanation}{note}",
        )


# -- a conversion's rewards ---------------------------------------------------------------


def _share_text(model: str, weight: Decimal, total: Decimal, part: Money, whole: Money) -> str:
    share = (weight / total * 100).quantize(Decimal("0.01")).normalize()
    text = f"; {model} credit {share:f}%"
    return text if part == whole else f"{text} ({part} of {whole})"


def _by_type(
    credits: Sequence[tuple[Contact, Decimal]],
) -> list[list[tuple[Contact, Decimal]]]:
    groups: dict[str, list[tuple[Contact, Decimal]]] = {}
    for contact, weight in credits:
        groups.setdefault(contact.referrer_type.value, []).append((contact, weight))
    return list(groups.values())


def _parts(
    wholes: dict[str, Money], group: Sequence[tuple[Contact, Decimal]]
) -> list[tuple[str, Money, Money]]:
    """(referrer, part, whole): each referrer's part of its whole, split by the group's
    weights; referrers sharing a whole get parts that add up to it exactly."""
    weights = [(c.contact_id, w) for c, w in group]
    parts: dict[str, Money] = {}
    for whole in {*wholes.values()}:
        for referrer_id, part in split(whole, weights):
            if wholes[referrer_id] == whole:
                parts[referrer_id] = part
    return [(c.contact_id, parts[c.contact_id], wholes[c.contact_id]) for c, _ in group]


def compute_rewards(
    conversion: Conversion,
    credits: Sequence[tuple[Contact, Decimal]],
    program: Program,
    flags_of: dict[str, tuple[str, ...]] | None = None,
    *,
    book: RewardBook | None = None,
    first_payment: Money | None = None,
) -> list[Reward]:
    """The rewards ``conversion`` earns, one per (rule, credited referrer).

    Each rule matching a referrer's type and the conversion's milestone is split among
    the referrers of that type by their credit weights; the parts add up to the rule's
    amount exactly. Recurring rules earn nothing here: their rewards come with each
    invoice (:func:`recurring_rewards`). A tiered rule pays each referrer by their own
    count of successful referrals in the period. Then every reward is held to the caps
    (``book``; without one, the caps count from zero).

    Args:
        conversion: the conversion.
        credits: (referrer, weight) from the attribution model.
        program: the rules.
        flags_of: fraud flags per referrer id.
        book: the run's view of earlier rewards (tiers, caps).
        first_payment: the referee's first payment, when recorded.

    Raises:
        InputRejected: a rule lacks the amount it needs.
    """
    book = book or RewardBook(program)
    payable_at = conversion.occurred_at + timedelta(days=program.holding_days)
    model = program.attribution.model
    drafts: list[tuple[Reward, RewardTerms]] = []
    for group in _by_type(credits):
        total = sum((w for _, w in group), Decimal(0))
        weight_of = {c.contact_id: w for c, w in group}
        for rule in program.rules_for(group[0][0].referrer_type, conversion.milestone):
            if rule.kind is RewardKind.RECURRING:
                continue
            numbers: dict[str, tuple[int, str]] = {}
            if rule.kind is RewardKind.TIERED:
                numbers = {
                    c.contact_id: book.referral_number(c.contact_id, conversion, rule.tier_period)
                    for c, _ in group
                }
                wholes = {r: tier_amount(rule, n, program) for r, (n, _) in numbers.items()}
            else:
                whole = rule_amount(rule, conversion, program, first_payment=first_payment)
                wholes = {c.contact_id: whole for c, _ in group}
            for referrer_id, part, whole in _parts(wholes, group):
                if part.amount_minor <= 0:
                    continue
                reward_id = Reward.derive_id(conversion.conversion_id, rule.id, referrer_id)
                if book.is_recorded(reward_id):
                    continue
                number, label = numbers.get(referrer_id, (None, None))
                said = describe(rule, program)
                if rule.kind is RewardKind.TIERED:
                    assert number is not None
                    tier = max(t.from_ for t in rule.tiers or () if t.from_ <= number)
                    said = (
                        f"tier from referral #{tier} per {rule.tier_period.value}: {whole} "
                        f"(referral #{number} in {label})"
                    )
                elif rule.kind is not RewardKind.FLAT:
                    said = f"{said} = {whole}"
                reward = Reward(
                    reward_id=reward_id,
                    conversion_id=conversion.conversion_id,
                    rule_id=rule.id,
                    referrer_id=referrer_id,
                    amount=part,
                    milestone=conversion.milestone,
                    attribution_model=model,
                    payable_at=payable_at,
                    explanation=said
                    + _share_text(model, weight_of[referrer_id], total, part, whole),
                    flags=(flags_of or {}).get(referrer_id, ()),
                )
                terms = RewardTerms(
                    reward_id, rule.kind, conversion.occurred_at, label, number, part
                )
                drafts.append((reward, terms))
    return _settle(book, drafts, conversion)


def _settle(
    book: RewardBook, drafts: Iterable[tuple[Reward, RewardTerms]], conversion: Conversion | None
) -> list[Reward]:
    rewards = [r for r in (book.settle(*draft) for draft in drafts) if r is not None]
    if conversion is not None:
        for referrer_id in dict.fromkeys(r.referrer_id for r in rewards):
            book.note_referral(referrer_id, conversion)
    return rewards


def recurring_rewards(
    conversion: Conversion,
    credits: Sequence[tuple[Contact, Decimal]],
    invoices: Sequence[Invoice],
    program: Program,
    flags_of: dict[str, tuple[str, ...]] | None = None,
    *,
    book: RewardBook | None = None,
) -> list[Reward]:
    """The rewards of recurring rules for the invoices the referee of ``conversion``
    paid: each invoice paid within the rule's months after the conversion earns its own
    reward (per credited referrer), recorded under ``<rule id>@<invoice>`` so its id
    (conversion, rule, referrer, invoice) is distinct and stable; later invoices earn
    nothing. Each is payable ``holding_days`` after its invoice and held to the caps in
    the invoice's period.

    Raises:
        InputRejected: an invoice is not in the program currency.
    """
    book = book or RewardBook(program)
    model = program.attribution.model
    drafts: list[tuple[Reward, RewardTerms]] = []
    for group in _by_type(credits):
        total = sum((w for _, w in group), Decimal(0))
        weight_of = {c.contact_id: w for c, w in group}
        for rule in program.rules_for(group[0][0].referrer_type, conversion.milestone):
            if rule.kind is not RewardKind.RECURRING:
                continue
            assert rule.months is not None
            until = add_months(conversion.occurred_at, rule.months)
            for invoice in sorted(invoices, key=lambda i: (i.paid_at, i.ref)):
                started = invoice.of_conversion or invoice.paid_at >= conversion.occurred_at
                if not started or invoice.paid_at >= until:
                    continue
                if invoice.amount.currency != program.currency:
                    raise InputRejected(
                        invoice.record,
                        "currency",
                        f"invoice in {invoice.amount.currency}, program pays in {program.currency}",
                    )
                whole = rule_amount(rule, conversion, program, invoice=invoice)
                month = month_number(conversion.occurred_at, invoice.paid_at)
                rule_id = recurring_rule_id(rule, invoice.ref)
                wholes = {c.contact_id: whole for c, _ in group}
                for referrer_id, part, _ in _parts(wholes, group):
                    if part.amount_minor <= 0:
                        continue
                    reward_id = Reward.derive_id(conversion.conversion_id, rule_id, referrer_id)
                    if book.is_recorded(reward_id):
                        continue
                    reward = Reward(
                        reward_id=reward_id,
                        conversion_id=conversion.conversion_id,
                        rule_id=rule_id,
                        referrer_id=referrer_id,
                        amount=part,
                        milestone=conversion.milestone,
                        attribution_model=model,
                        payable_at=invoice.paid_at + timedelta(days=program.holding_days),
                        explanation=f"{rule.percent}% of invoice {invoice.ref} "
                        f"({invoice.amount}, month {month} of {rule.months}"
                        f"{_cap_text(rule, program)}) = {whole}"
                        f"{_share_text(model, weight_of[referrer_id], total, part, whole)}",
                        flags=(flags_of or {}).get(referrer_id, ()),
                    )
                    terms = RewardTerms(
                        reward_id, rule.kind, invoice.paid_at, invoice.ref, None, part
                    )
                    drafts.append((reward, terms))
    return _settle(book, drafts, None)


def _cap_text(rule: RewardRule, program: Program) -> str:
    return f", at most {program.money(rule.cap)}" if rule.cap else ""


def route(
    amount: Money, flags: Sequence[str], payable_at: datetime, program: Program, as_of: datetime
) -> Route:
    """Hold until payable; then a person decides on large or flagged rewards."""
    if as_of < payable_at:
        return Route.HOLD
    if flags or amount >= program.auto_payout_threshold:
        return Route.APPROVAL
    return Route.AUTO_PAY


def choose_rail(
    referrer: Contact,
    available: Collection[PayoutRailKind],
    choice: RewardChoice | None = None,
) -> tuple[PayoutRailKind, str | None] | None:
    """How ``referrer`` is paid: (rail, destination), or ``None`` when no rail fits.

    Without a payment provider every payout is ledger-only. With Stripe, a referrer with
    a connected account gets a transfer; a paying customer gets a balance credit; anyone
    else keeps the reward payable and is listed until their profile says how to pay.

    A referrer's ``choice`` (made on their page, where the program offers more than
    one) comes first: account credit goes to the balance of a paying customer (one
    who is not falls back to the order above); cash goes by transfer only, so a
    referrer who chose cash and has no connected account waits for one rather than
    being paid in credit they declined.
    """
    if PayoutRailKind.LEDGER_ONLY in available:
        return PayoutRailKind.LEDGER_ONLY, None
    if (
        choice is RewardChoice.ACCOUNT_CREDIT
        and referrer.stripe_customer_id
        and PayoutRailKind.STRIPE_BALANCE in available
    ):
        return PayoutRailKind.STRIPE_BALANCE, referrer.stripe_customer_id
    if referrer.stripe_account_id and PayoutRailKind.STRIPE_TRANSFER in available:
        return PayoutRailKind.STRIPE_TRANSFER, referrer.stripe_account_id
    if choice is RewardChoice.CASH:
        return None
    if referrer.stripe_customer_id and PayoutRailKind.STRIPE_BALANCE in available:
        return PayoutRailKind.STRIPE_BALANCE, referrer.stripe_customer_id
    return None
