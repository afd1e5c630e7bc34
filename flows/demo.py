"""The demo: a sample company through two cycles against the local Prefect server.

1. Generate (once) a sample company into the inbox folder.
2. Run the cycle as of 30 days ago: moments are found and asks go out.
3. Some asked referrers' friends sign up and buy with their codes; some partners'
   deal registrations arrive in the drop, with their registered companies' signups and
   deals (no code: the registration credits the partner).
4. Run the cycle as of now: registrations (first to register wins; wrong rows
   quarantined), conversions, rewards, automatic payouts under the threshold, and one
   paused approval run per large or flagged reward.

Every step is idempotent: running the demo again sends, rewards and pays nothing twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from domain.approvers import make_approver
from domain.models import ReferrerType
from domain.money import Money
from flows import bootstrap
from flows.cycle import referral_cycle
from integrations.sources.sample import (
    Sample,
    load_or_generate,
    simulate_partner_leads,
    simulate_referrals,
)


@dataclass(frozen=True)
class DemoResult:
    sample: Sample
    first: dict[str, Any]
    second: dict[str, Any]
    referrals: int
    registrations: int = 0


# The demo's approvers: newcomers have no authenticator app, so their codes can be
# shown by `referrals approvers demo-code` (which refuses every other approver).
DEMO_APPROVERS = (
    ("maya.chen", "Maya Chen", "maya.chen@approvers.example"),
    ("sam.okafor", "Sam Okafor", "sam.okafor@approvers.example"),
)
DEMO_LIMIT = Money(2_000_000, "EUR")


def enrol_demo_approvers(app: bootstrap.App, now: datetime) -> list[str]:
    """Register and enrol the demo approvers once; their ids."""
    for approver_id, name, email in DEMO_APPROVERS:
        if app.approvers.get(approver_id) is None:
            approver = make_approver(
                approver_id=approver_id,
                display_name=name,
                email=email,
                contact_id=None,
                limit=DEMO_LIMIT,
                demo=True,
            )
            app.approvers.add(approver, "referrals demo", now)
        if not app.approvers.get(approver_id).enrolled:  # type: ignore[union-attr]
            app.codes.enrol(approver_id, "referrals demo", now)
    return [approver_id for approver_id, _, _ in DEMO_APPROVERS]


def run_demo(accounts: int = 300) -> DemoResult:
    app = bootstrap.app()
    enrol_demo_approvers(app, datetime.now(UTC))
    sample = load_or_generate(app.settings.inbox_dir, accounts=accounts)
    first = referral_cycle(as_of=sample.first_cycle_at)
    # Only referrers asked by the first cycle: later cycles mint more codes, and the
    # simulated friends must be the same ones on every run.
    codes = app.ledger.asks.codes_for(app.ledger.asks.asked_contacts(until=sample.first_cycle_at))
    contacts = app.ledger.asks.contacts(codes)
    domains = app.ledger.asks.account_domains(
        c.account_id for c in contacts.values() if c.account_id
    )
    referrals = simulate_referrals(
        sample,
        codes,
        {
            cid: {
                "referrer_type": c.referrer_type.value,
                "domain": domains.get(c.account_id or "", "") or "unknown.example",
            }
            for cid, c in contacts.items()
        },
    )
    partners = [c for c, p in contacts.items() if p.referrer_type is ReferrerType.PARTNER]
    registrations = simulate_partner_leads(sample, partners)
    second = referral_cycle(as_of=datetime.now(UTC))
    return DemoResult(sample, first, second, referrals, registrations)
