"""The program's rules: moments, eligibility, rewards, approvals.

These are frozen pydantic models so a rules file is validated field by field, and a
wrong value is refused with its path (``rewards.2.percent``) and the reason. They hold
no I/O: ``config.program`` reads the YAML file and hands the mapping to
:meth:`Program.model_validate`.

Amounts are written in major units as strings (``"500.00"``) in the program currency
and are checked to have no more decimals than that currency allows.
"""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from domain.errors import InvalidAmount
from domain.models import Milestone, MomentType, ReferrerType
from domain.money import CURRENCY_EXPONENTS, Money

_AmountText = Annotated[
    str,
    Field(pattern=r"^\d+(\.\d+)?$", description="Amount in major units, e.g. '500.00'."),
]


class _Rules(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class MomentRule(_Rules):
    enabled: bool = Field(True, description="Whether this moment triggers asks at all.")


class DealWonMoment(MomentRule):
    min_amount: _AmountText = Field(
        "0", description="Smallest won deal, in program currency, that counts as a win."
    )


class NpsMoment(MomentRule):
    min_score: int = Field(
        9, ge=9, le=10, description="Lowest NPS score asked (promoters are 9-10 only)."
    )


class SupportMoment(MomentRule):
    min_csat: int = Field(
        4, ge=1, le=5, description="Lowest CSAT (1-5) of a resolved ticket that counts."
    )


class UsageMoment(MomentRule):
    milestones: tuple[str, ...] = Field(
        (), description="Milestone names that count; empty means every milestone."
    )


class Moments(_Rules):
    deal_won: DealWonMoment = Field(default_factory=DealWonMoment)
    renewal: MomentRule = Field(default_factory=MomentRule)
    nps_promoter: NpsMoment = Field(default_factory=NpsMoment)
    support_resolved: SupportMoment = Field(default_factory=SupportMoment)
    usage_milestone: UsageMoment = Field(default_factory=UsageMoment)
    max_age_days: int = Field(
        14, ge=1, le=90, description="A moment older than this has passed: no ask."
    )
    priority: tuple[MomentType, ...] = Field(
        (
            MomentType.NPS_PROMOTER,
            MomentType.DEAL_WON,
            MomentType.RENEWAL,
            MomentType.SUPPORT_RESOLVED,
            MomentType.USAGE_MILESTONE,
        ),
        description="When one contact has several moments in a run, the first listed wins.",
    )

    def enabled(self, moment: MomentType) -> bool:
        rule: MomentRule = getattr(self, moment.value)
        return rule.enabled

    @field_validator("priority")
    @classmethod
    def _every_moment_once(cls, value: tuple[MomentType, ...]) -> tuple[MomentType, ...]:
        if sorted(value) != sorted(MomentType):
            raise ValueError(f"must list each of {', '.join(MomentType)} exactly once")
        return value


class Eligibility(_Rules):
    cooldown_days: int = Field(
        90, ge=0, le=730, description="Days after an ask before the same contact is asked again."
    )
    min_tenure_days: int = Field(
        30, ge=0, description="Days a customer must have been a customer before being asked."
    )
    blocking_ticket_priorities: tuple[str, ...] = Field(
        ("high", "urgent"),
        description="An open ticket of one of these priorities on the account blocks asks.",
    )
    detractor_window_days: int = Field(
        90,
        ge=1,
        le=730,
        description="A contact whose latest NPS answer is a detractor's (0-6) and at most "
        "this many days old is asked for no moment at all; a later answer of 7-10, or "
        "the answer growing older than this, ends it.",
    )


class RewardKind(StrEnum):
    """How a rule's amount is found.

    ``percent_of_deal`` is the first name of ``percent_of_first_year`` and still reads
    as it, so rules files written with it keep loading and mean what they meant.
    """

    FLAT = "flat"
    PERCENT_OF_FIRST_PAYMENT = "percent_of_first_payment"
    PERCENT_OF_FIRST_YEAR = "percent_of_first_year"
    PERCENT_OF_DEAL = "percent_of_first_year"  # the old name: the same member
    RECURRING = "recurring"
    TIERED = "tiered"

    @classmethod
    def _missing_(cls, value: object) -> RewardKind | None:
        return cls.PERCENT_OF_FIRST_YEAR if value == "percent_of_deal" else None

    @property
    def is_percent(self) -> bool:
        return self in (
            RewardKind.PERCENT_OF_FIRST_PAYMENT,
            RewardKind.PERCENT_OF_FIRST_YEAR,
            RewardKind.RECURRING,
        )


class Period(StrEnum):
    """A calendar period in UTC: tiers count in one, caps add up in one."""

    MONTH = "month"
    QUARTER = "quarter"
    YEAR = "year"


class Tier(BaseModel):
    """From the ``from``-th successful referral of the period on, a referral earns
    ``amount``."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    from_: int = Field(
        alias="from", ge=1, description="The referral number (1: the first) this tier starts at."
    )
    amount: _AmountText = Field(description="What each referral in this tier earns.")


# Each paid invoice's reward of a recurring rule is stored as '<rule id>@<invoice>', and
# the ledger keeps rule ids in 64 characters.
RECURRING_ID_CHARS = 30


class RewardRule(_Rules):
    id: str = Field(
        pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$",
        description="Stable rule id; recorded on every reward, so never reuse one.",
    )
    referrer_type: ReferrerType = Field(description="Who earns it: customer, partner, employee.")
    milestone: Milestone = Field(description="The referee milestone that earns it.")
    kind: RewardKind = Field(
        description="flat; percent_of_first_payment; percent_of_first_year (alias "
        "percent_of_deal: the deal's first-year value); recurring (a share of each paid "
        "invoice for 'months'); tiered (by the referrer's successful referrals in 'period')."
    )
    amount: _AmountText | None = Field(None, description="For flat rules: the amount.")
    percent: Decimal | None = Field(
        None,
        gt=0,
        le=100,
        description="For percent and recurring rules: the share, in percent.",
    )
    cap: _AmountText | None = Field(
        None, description="For percent and recurring rules: the most one reward can be."
    )
    months: int | None = Field(
        None,
        ge=1,
        le=60,
        description="For recurring rules: invoices paid within this many months after "
        "the conversion earn; later ones do not.",
    )
    tiers: tuple[Tier, ...] | None = Field(
        None,
        description="For tiered rules: the tiers, 'from' ascending, the first from 1.",
    )
    period: Period | None = Field(
        None,
        description="For tiered rules: the calendar period the referrals are counted "
        "in (default quarter).",
    )

    @model_validator(mode="after")
    def _kind_has_its_value(self) -> Self:
        kind = self.kind
        if kind is RewardKind.FLAT and self.amount is None:
            raise ValueError("a flat rule needs 'amount'")
        if kind.is_percent and self.percent is None:
            raise ValueError(f"a {kind.value} rule needs 'percent'")
        if kind is RewardKind.RECURRING:
            if self.months is None:
                raise ValueError("a recurring rule needs 'months'")
            if len(self.id) > RECURRING_ID_CHARS:
                raise ValueError(
                    f"a recurring rule's id is at most {RECURRING_ID_CHARS} characters "
                    "(each invoice's reward is recorded as '<id>@<invoice>')"
                )
        elif self.months is not None:
            raise ValueError("'months' is for recurring rules only")
        if kind is RewardKind.TIERED:
            if not self.tiers:
                raise ValueError("a tiered rule needs 'tiers'")
            starts = [t.from_ for t in self.tiers]
            if starts != sorted(set(starts)):
                raise ValueError("'tiers' must be listed by 'from', ascending, each once")
            # A referral that earned nothing leaves no reward, so it could never be
            # counted: every referral must earn something for the count to go up.
            if starts[0] != 1:
                raise ValueError("the first tier must start 'from' 1")
            if any(Decimal(t.amount) == 0 for t in self.tiers):
                raise ValueError("every tier's 'amount' must be more than zero")
        elif self.tiers is not None or self.period is not None:
            raise ValueError("'tiers' and 'period' are for tiered rules only")
        if kind is not RewardKind.FLAT and self.amount is not None:
            raise ValueError(f"'amount' is for flat rules; a {kind.value} rule does not use it")
        if not kind.is_percent and (self.percent is not None or self.cap is not None):
            raise ValueError(f"'percent' and 'cap' are for percent rules, not {kind.value}")
        return self

    @property
    def tier_period(self) -> Period:
        return self.period or Period.QUARTER


class CapScope(StrEnum):
    REFERRER = "referrer"
    PROGRAM = "program"


class RewardCap(_Rules):
    """The most rewards may add up to in one calendar period: per referrer, or for the
    whole program (a budget). What the ledger has accrued counts, less cancellations;
    a reward that would go past it is reduced to what is left, down to zero."""

    per: CapScope = Field(description="referrer: each referrer's own total; program: all.")
    period: Period = Field(description="The calendar period (UTC) the rewards add up in.")
    amount: _AmountText = Field(description="The most, in the program currency.")


class Approvals(_Rules):
    auto_payout_threshold: _AmountText = Field(
        "500.00",
        description="Rewards below this pay automatically; at or above it a person decides.",
    )
    second_approver_threshold: _AmountText = Field(
        "5000.00", description="At or above this, two different approvers must approve."
    )
    reminder_after_hours: int = Field(
        24, ge=1, description="Remind approvers when a decision waits this long."
    )
    expire_after_hours: int = Field(
        168,
        ge=1,
        description="After this long the paused run ends and the reward returns to "
        "pending approval (never paid or dropped silently).",
    )


class Attribution(_Rules):
    model: str = Field(
        "last_touch",
        pattern=r"^(first_touch|last_touch|linear|time_decay|position_based)$",
        description="How credit is split when several referrers touched one conversion.",
    )
    half_life_days: Decimal = Field(
        Decimal(7),
        gt=0,
        le=365,
        description="For time_decay: a touch this many days before the conversion "
        "weighs half as much as one at the conversion.",
    )


class Clawbacks(_Rules):
    """What a refund, a chargeback or the churn of a referee takes back from a reward.

    Inside the window an unpaid reward is cancelled, and a paid one is clawed back
    (prorated for a partial refund): reversed at the payment provider, or owed by the
    referrer and netted from their next payout. Outside it nothing changes.
    """

    window_days: int = Field(
        90,
        ge=0,
        le=730,
        description="Days after a conversion during which its referee's refund, "
        "chargeback or churn takes the reward back; later ones change nothing.",
    )
    on_refund: bool = Field(True, description="Whether a refund of the referee's payment counts.")
    on_chargeback: bool = Field(
        True, description="Whether a chargeback (dispute) of the referee's payment counts."
    )
    on_churn: bool = Field(
        True, description="Whether the end of the referee's subscription counts."
    )


class Fraud(_Rules):
    """Checks a conversion must pass before its reward may pay automatically; a failed
    check flags the reward, and a flagged reward always waits for a person."""

    max_conversions_per_window: int = Field(
        5,
        ge=1,
        description="Conversions one referrer may be credited with inside the window; "
        "every one beyond this is flagged (velocity).",
    )
    window_hours: int = Field(
        24, ge=1, le=24 * 90, description="The velocity window, in hours (24: per day)."
    )


class CouponDuration(StrEnum):
    ONCE = "once"
    REPEATING = "repeating"
    FOREVER = "forever"


class RefereeDiscount(_Rules):
    """Two-sided rewards: the referee's discount, one Stripe coupon for the whole program
    and one promotion code per referral code (the code itself)."""

    coupon_id: str = Field(
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="The Stripe coupon's id. Coupon terms never change at Stripe: to "
        "change the discount, give a new id.",
    )
    name: str = Field(
        "Referred by a friend",
        min_length=1,
        max_length=40,
        description="Shown to the referee at checkout and on invoices.",
    )
    percent_off: Decimal | None = Field(
        None, gt=0, le=100, decimal_places=2, description="Percent off; or amount_off."
    )
    amount_off: _AmountText | None = Field(
        None, description="Amount off in the program currency; or percent_off."
    )
    duration: CouponDuration = Field(
        CouponDuration.ONCE, description="once, repeating (for duration_in_months), forever."
    )
    duration_in_months: int | None = Field(
        None, ge=1, le=36, description="With duration 'repeating': for how many months."
    )

    @model_validator(mode="after")
    def _one_discount_and_its_duration(self) -> Self:
        if (self.percent_off is None) == (self.amount_off is None):
            raise ValueError("give exactly one of 'percent_off' and 'amount_off'")
        if self.amount_off is not None and Decimal(self.amount_off) == 0:
            raise ValueError("'amount_off' must be more than zero")
        if (self.duration is CouponDuration.REPEATING) != (self.duration_in_months is not None):
            raise ValueError("'duration_in_months' goes with, and only with, duration 'repeating'")
        return self


class RegistrationRules(_Rules):
    """Partner deal registration: how long a partner's claim on a company is protected.

    The first partner to register a company's domain holds it for ``window_days``; a
    sign that the deal progresses (a qualified deal) pushes the expiry out by
    ``extension_days``, never past ``max_total_days`` after the registration.
    """

    window_days: int = Field(
        60, ge=30, le=90, description="Days a new registration is protected (30-90)."
    )
    extension_days: int = Field(
        30, ge=1, le=90, description="Days each sign of deal progress adds to the expiry."
    )
    max_total_days: int = Field(
        180,
        ge=30,
        le=365,
        description="However often it is extended, a registration never runs longer "
        "than this after it was made.",
    )

    @model_validator(mode="after")
    def _room_for_the_window(self) -> Self:
        if self.max_total_days < self.window_days:
            raise ValueError(
                f"max_total_days ({self.max_total_days}) must be at least "
                f"window_days ({self.window_days})"
            )
        return self


class RewardChoice(StrEnum):
    """How a referrer may take a reward: money paid out, or credit on their account."""

    CASH = "cash"
    ACCOUNT_CREDIT = "account_credit"


class Program(_Rules):
    name: str = Field("Referral program", min_length=1, description="Shown in emails.")
    currency: str = Field("EUR", description="ISO 4217 code of every amount in this file.")
    referral_link_base: str = Field(
        "https://example.com/r/",
        pattern=r"^https?://",
        description="Referral links are this base followed by the referrer's code: the "
        "tracked link route (/r/) of `referrals web serve`, which counts the click and "
        "redirects to REFERRALS_LANDING_URL.",
    )
    unsubscribe_url: str = Field(
        "https://example.com/unsubscribe",
        pattern=r"^https?://",
        description="Where the unsubscribe link of every ask points (the message id is added).",
    )
    holding_days: int = Field(
        14,
        ge=0,
        le=180,
        description="Days after a conversion before its reward is payable; keep it at "
        "least as long as the refund window.",
    )
    moments: Moments = Field(default_factory=Moments)
    eligibility: Eligibility = Field(default_factory=Eligibility)
    attribution: Attribution = Field(default_factory=Attribution)
    approvals: Approvals = Field(default_factory=Approvals)
    clawbacks: Clawbacks = Field(default_factory=Clawbacks)
    registration: RegistrationRules = Field(default_factory=RegistrationRules)
    fraud: Fraud = Field(default_factory=Fraud)
    referee_discount: RefereeDiscount | None = Field(
        None,
        description="The referee's discount (two-sided rewards); absent: referrers only "
        "are rewarded.",
    )
    reward_caps: tuple[RewardCap, ...] = Field(
        (),
        description="The most rewards may add up to per calendar period, per referrer "
        "or for the whole program; every cap applies to every rule.",
    )
    rewards: tuple[RewardRule, ...] = Field(
        default_factory=lambda: (
            RewardRule(
                id="customer-closed-deal",
                referrer_type=ReferrerType.CUSTOMER,
                milestone=Milestone.CUSTOMER,
                kind=RewardKind.FLAT,
                amount="200.00",
            ),
        ),
        description="Reward rules; each conversion earns every rule matching its "
        "referrer type and milestone.",
    )

    reward_choices: dict[ReferrerType, tuple[RewardChoice, ...]] = Field(
        default_factory=dict,
        description="The ways each referrer type may take its rewards (cash, "
        "account_credit), chosen on the referrer's page; the first is the default. A "
        "type not listed takes cash only.",
    )

    @field_validator("reward_choices")
    @classmethod
    def _choices_listed_once(
        cls, value: dict[ReferrerType, tuple[RewardChoice, ...]]
    ) -> dict[ReferrerType, tuple[RewardChoice, ...]]:
        for referrer_type, choices in value.items():
            if not choices:
                raise ValueError(f"{referrer_type.value}: list at least one choice")
            if len(set(choices)) != len(choices):
                raise ValueError(f"{referrer_type.value}: a choice is listed twice")
        return value

    @field_validator("currency")
    @classmethod
    def _known_currency(cls, value: str) -> str:
        if value not in CURRENCY_EXPONENTS:
            raise ValueError(f"unsupported currency; use one of {', '.join(CURRENCY_EXPONENTS)}")
        return value

    @model_validator(mode="after")
    def _amounts_fit_currency(self) -> Self:
        def check(path: str, text: str | None) -> None:
            if text is None:
                return
            try:
                Money.parse(text, self.currency)
            except InvalidAmount as exc:
                raise ValueError(f"{path}: {exc}") from None

        check("moments.deal_won.min_amount", self.moments.deal_won.min_amount)
        check("approvals.auto_payout_threshold", self.approvals.auto_payout_threshold)
        check("approvals.second_approver_threshold", self.approvals.second_approver_threshold)
        if self.referee_discount is not None:
            check("referee_discount.amount_off", self.referee_discount.amount_off)
        for i, rule in enumerate(self.rewards):
            check(f"rewards.{i}.amount", rule.amount)
            check(f"rewards.{i}.cap", rule.cap)
            for j, tier in enumerate(rule.tiers or ()):
                check(f"rewards.{i}.tiers.{j}.amount", tier.amount)
        for i, reward_cap in enumerate(self.reward_caps):
            check(f"reward_caps.{i}.amount", reward_cap.amount)
        if self.money(self.approvals.second_approver_threshold) < self.money(
            self.approvals.auto_payout_threshold
        ):
            raise ValueError(
                "approvals.second_approver_threshold must not be below auto_payout_threshold"
            )
        ids = [rule.id for rule in self.rewards]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"rewards: duplicate rule id(s) {', '.join(duplicates)}")
        return self

    def money(self, text: str) -> Money:
        return Money.parse(text, self.currency)

    @property
    def auto_payout_threshold(self) -> Money:
        return self.money(self.approvals.auto_payout_threshold)

    @property
    def second_approver_threshold(self) -> Money:
        return self.money(self.approvals.second_approver_threshold)

    def rules_for(self, referrer_type: ReferrerType, milestone: Milestone) -> list[RewardRule]:
        return [
            r for r in self.rewards if r.referrer_type == referrer_type and r.milestone == milestone
        ]

    def headline_reward(self, referrer_type: ReferrerType) -> RewardRule | None:
        """The rule quoted in asks: the one paid when the referee becomes a customer."""
        rules = self.rules_for(referrer_type, Milestone.CUSTOMER)
        return rules[0] if rules else None

    def choices_for(self, referrer_type: ReferrerType) -> tuple[RewardChoice, ...]:
        """The reward choices open to ``referrer_type``; the first is the default."""
        return self.reward_choices.get(referrer_type, (RewardChoice.CASH,))
