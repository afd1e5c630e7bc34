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


class RewardKind(StrEnum):
    FLAT = "flat"
    PERCENT_OF_DEAL = "percent_of_deal"


class RewardRule(_Rules):
    id: str = Field(
        pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$",
        description="Stable rule id; recorded on every reward, so never reuse one.",
    )
    referrer_type: ReferrerType = Field(description="Who earns it: customer, partner, employee.")
    milestone: Milestone = Field(description="The referee milestone that earns it.")
    kind: RewardKind = Field(description="flat amount, or percent_of_deal (first-year value).")
    amount: _AmountText | None = Field(None, description="For flat rules: the amount.")
    percent: Decimal | None = Field(
        None, gt=0, le=100, description="For percent rules: the share of the deal, in percent."
    )
    cap: _AmountText | None = Field(
        None, description="For percent rules: the most one reward can be."
    )

    @model_validator(mode="after")
    def _kind_has_its_value(self) -> Self:
        if self.kind is RewardKind.FLAT and self.amount is None:
            raise ValueError("a flat rule needs 'amount'")
        if self.kind is RewardKind.PERCENT_OF_DEAL and self.percent is None:
            raise ValueError("a percent_of_deal rule needs 'percent'")
        return self


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


class Program(_Rules):
    name: str = Field("Referral program", min_length=1, description="Shown in emails.")
    currency: str = Field("EUR", description="ISO 4217 code of every amount in this file.")
    referral_link_base: str = Field(
        "https://example.com/r/",
        pattern=r"^https?://",
        description="Referral links are this base followed by the referrer's code.",
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
        for i, rule in enumerate(self.rewards):
            check(f"rewards.{i}.amount", rule.amount)
            check(f"rewards.{i}.cap", rule.cap)
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
