"""The referral cycle, as Prefect flows.

detect moments -> send asks -> check conversions -> route rewards -> notify referrers.
Each stage is its own flow (and deployment) so revenue ops can schedule and re-run it
alone; ``referral_cycle`` runs them in order as subflows.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from prefect import flow

from flows import bootstrap, heartbeats
from flows.shards import deliver
from flows.subflows import stage_subflows
from tasks.approvals import request_approvals
from tasks.asks import decide_asks
from tasks.cards import learn_card_fingerprints
from tasks.clawbacks import apply_clawbacks
from tasks.connect import apply_account_updates, refresh_connected_accounts
from tasks.conversions import (
    link_stripe_payments,
    record_new_conversions,
    record_stripe_conversions,
)
from tasks.detractors import hand_on_detractors
from tasks.discounts import publish_referee_discounts
from tasks.ingest import ingest_sources
from tasks.moments import detect_new_moments
from tasks.payouts import submit_payouts
from tasks.registrations import intake_registrations, record_registered_conversions
from tasks.reports import plain_summary, publish_cycle_report, read_ledger_totals
from tasks.rewards import compute_new_rewards, plan_routes
from tasks.stripe_events import poll_stripe_events

# The cycle run returns as soon as it ends, not up to a second later (flows/heartbeats.py).
heartbeats.install()


def _moment(as_of: datetime | None) -> datetime:
    """``as_of`` as an aware UTC datetime; now when not given."""
    if as_of is None:
        return datetime.now(UTC)
    return as_of.replace(tzinfo=UTC) if as_of.tzinfo is None else as_of.astimezone(UTC)


@flow(name="detect-moments")
@bootstrap.one_line_failure
def detect_moments() -> dict[str, Any]:
    """Read new CRM and NPS events from every source and find the referral moments.

    Returns:
        Per-source ingest counts and the detection counts.
    """
    app = bootstrap.app()
    now = datetime.now(UTC)
    reports = ingest_sources(app.sources, app.ledger, now, app.settings.ingest_page_records)
    detection = detect_new_moments(app.ledger, app.program, now)
    return {"ingest": [asdict(r) for r in reports], "detection": asdict(detection)}


@flow(name="send-asks")
@bootstrap.one_line_failure
def send_asks(as_of: datetime | None = None) -> dict[str, Any]:
    """Decide who to ask for each pending moment, then send the personalized asks.

    Args:
        as_of: the moment of decision (default: now); cooldowns and moment age are
            measured from it.

    Returns:
        Asks queued, skips per reason, and the delivery counts.
    """
    app = bootstrap.app()
    when, now = _moment(as_of), datetime.now(UTC)
    decisions = decide_asks(app.ledger, app.program, when, now, app.settings.batch_size)
    # Deciding stays in this run: which moment wins depends on what one run has seen.
    # Sending is per ask, so with REFERRALS_SHARDS > 1 workers share it (flows/shards.py).
    delivery = deliver(app, "send-ask-emails", now)
    # The codes just sent become the referee's discount (two-sided rewards).
    discounts = (
        publish_referee_discounts(
            app.ledger.discounts, app.discounts, app.program, now, app.settings.batch_size
        )
        if app.discounts is not None
        else None
    )
    return {
        "decisions": asdict(decisions),
        "delivery": delivery,
        "discounts": asdict(discounts) if discounts else None,
    }


@flow(name="check-conversions")
@bootstrap.one_line_failure
def check_conversions() -> dict[str, Any]:
    """Register the partner registrations the sources hold, attribute new coded
    signups, deals and Stripe payments to referrers, credit uncoded signups and deals
    on a partner's registered company to that partner, read from Stripe the card behind
    payments whose events named it by id only, and compute their rewards.

    CRM conversions are recorded before Stripe's, so when both report the same deal the
    CRM's deal amount is the one kept.

    Returns:
        Registration, conversion and reward counts, with what was quarantined.
    """
    app = bootstrap.app()
    now = datetime.now(UTC)
    ingest_sources(app.sources, app.ledger, now, app.settings.ingest_page_records)
    # After the ingest, so a claim's partner is a known contact; before crediting, so
    # a deal on a company registered in the same drop goes to its partner.
    registrations = intake_registrations(
        app.sources, app.ledger, app.program, now, app.settings.registration_contact_key
    )
    polled = poll_stripe_events(app.stripe_events, app.ledger, now) if app.stripe_events else None
    conversions = record_new_conversions(app.ledger, app.program, now, app.settings.batch_size)
    # After the coded events: a code on the deal decides before a partner's registration.
    registered = record_registered_conversions(
        app.ledger, app.program, now, app.settings.batch_size
    )
    stripe = record_stripe_conversions(app.ledger, app.program, now, app.settings.batch_size)
    linked = link_stripe_payments(app.ledger, now, app.settings.batch_size)
    # The same-card check needs the card behind each payment before the flags are set.
    cards = (
        learn_card_fingerprints(app.ledger, app.cards, now, app.settings.batch_size)
        if app.cards
        else None
    )
    rewards = compute_new_rewards(app.ledger, app.program, now, app.settings.batch_size)
    return {
        "registrations": registrations,
        "conversions": conversions,
        "registered": registered,
        "stripe": {
            "polled": polled,
            "conversions": stripe,
            "payments_linked": linked,
            "cards": cards,
        },
        "rewards": rewards,
    }


@flow(name="poll-stripe-events")
@bootstrap.one_line_failure
def poll_stripe() -> dict[str, Any]:
    """Fetch recent Stripe events into the inbox, so nothing is missed while the webhook
    endpoint is down (events already received are ignored by id).

    Returns:
        How many events were read and stored; nothing without a Stripe key.
    """
    app = bootstrap.app()
    if app.stripe_events is None:
        return {"skipped": "no Stripe key configured"}
    return dict(poll_stripe_events(app.stripe_events, app.ledger, datetime.now(UTC)))


@flow(name="route-rewards")
@bootstrap.one_line_failure
def route_rewards(as_of: datetime | None = None) -> dict[str, Any]:
    """Pay rewards under the threshold now; start a paused approval run for the others.

    Args:
        as_of: the moment of decision (default: now); holding periods end against it.

    Returns:
        What was paid, what waits for approval (reward id -> flow run id).
    """
    app = bootstrap.app()
    when, now = _moment(as_of), datetime.now(UTC)
    # Refunds and churn first: a refunded reward is never paid, and a referrer's debt is
    # known before their next payout is netted against it.
    clawbacks = apply_clawbacks(
        app.ledger, app.rails, app.program, now, app.approvals, app.settings.batch_size
    )
    if app.connect is not None:
        # Referrers who finished Stripe onboarding are paid in this run: the webhook's
        # account.updated events, then the accounts still onboarding read back.
        apply_account_updates(app.ledger.connect, app.connect, now, app.settings.batch_size)
        refresh_connected_accounts(app.ledger.connect, app.connect, now)
    plan = plan_routes(app.ledger, app.program, when, now, app.settings.batch_size)
    payouts = submit_payouts(app.ledger, app.rails, plan.auto_pay, now)
    waiting = request_approvals(app.ledger, app.approvals, plan.approval, now)
    return {"clawbacks": asdict(clawbacks), "payouts": asdict(payouts), "approvals": waiting}


@flow(name="notify-referrers")
@bootstrap.one_line_failure
def notify_referrers() -> dict[str, Any]:
    """Tell referrers what happened to their referrals and rewards (earned, paid, rejected),
    and hand each new detractor on to a person (the owner's email, a CRM task).

    Returns:
        Delivery counts, and the detractor hand-offs under ``detractors``.
    """
    app = bootstrap.app()
    now = datetime.now(UTC)
    delivery = deliver(app, "send-notifications", now)
    detractors = hand_on_detractors(
        app.ledger,
        app.email,
        app.detractor_tasks,
        app.settings.detractor_owner_email,
        app.program,
        now,
        app.settings.batch_size,
    )
    return {**delivery, "detractors": asdict(detractors)}


@flow(name="referral-cycle")
@bootstrap.one_line_failure
def referral_cycle(as_of: datetime | None = None) -> dict[str, Any]:
    """The whole cycle: moments, asks, conversions, rewards, payouts and approvals.

    Args:
        as_of: the moment the cycle decides at (default: now). Set it to replay a past
            day; nothing is sent, rewarded or paid twice either way.

    Returns:
        What each stage reported, the ledger totals after the run (``summary``, money
        in minor units) and ``report``: what this run did beside the totals, money
        formatted (what ``referrals cycle`` prints).
    """
    app = bootstrap.app()
    before = read_ledger_totals(app.ledger)
    # The stages run in this process: under this run's heartbeat, on one client.
    with stage_subflows():
        stages = {
            "detect moments": detect_moments(),
            "send asks": send_asks(as_of),
            "check conversions": check_conversions(),
            "route rewards": route_rewards(as_of),
            "notify referrers": notify_referrers(),
        }
    summary = publish_cycle_report(app.ledger, app.approvals, _brief(stages))
    return {
        "stages": stages,
        "summary": summary,
        "report": plain_summary(stages, before, summary),
    }


def _brief(stages: dict[str, Any]) -> dict[str, str]:
    """One line per stage for the run's markdown artifact."""
    detect, asks = stages["detect moments"], stages["send asks"]
    conv, route = stages["check conversions"], stages["route rewards"]
    notify = stages["notify referrers"]
    ingest = detect["ingest"]
    return {
        "detect moments": (
            f"{sum(r['records_in'] for r in ingest)} records read, "
            f"{sum(r['new_events'] for r in ingest)} new events, "
            f"{sum(r['quarantined'] for r in ingest)} quarantined; "
            f"{detect['detection']['moments']} moments, "
            f"{detect['detection']['detractors']} detractors to follow up"
        ),
        "send asks": (
            f"{asks['decisions']['queued']} asks queued, "
            f"{asks['delivery']['accepted']} accepted by email; skipped: "
            + (", ".join(f"{k} {v}" for k, v in asks["decisions"]["skipped"].items()) or "none")
        ),
        "check conversions": (
            f"{_registrations_read(conv['registrations'])}"
            f"{conv['conversions']['conversions']} conversions, "
            f"{conv['registered']['conversions']} through partner registrations, "
            f"{conv['rewards']['rewards']} rewards, "
            f"{conv['conversions']['quarantined'] + conv['rewards']['quarantined']} quarantined"
        ),
        "route rewards": (
            f"{route['payouts']['paid']} paid automatically, "
            f"{len(route['approvals'])} waiting for approval, "
            f"{len(route['payouts']['no_rail'])} without a payout rail"
        ),
        "notify referrers": (
            f"{notify['accepted']} notifications sent; "
            f"{notify['detractors']['handed_on']} detractors handed on"
            + _not_handed_on(notify["detractors"])
        ),
    }


def _registrations_read(intake: dict[str, Any]) -> str:
    """The partner registrations read from the sources, when there were any."""
    total = {"accepted": 0, "rejected": 0, "quarantined": 0}
    for counts in intake["sources"].values():
        for key in total:
            total[key] += counts[key]
    if not any(total.values()):
        return ""
    return (
        f"partner registrations read: {total['accepted']} accepted, "
        f"{total['rejected']} rejected (company already registered), "
        f"{total['quarantined']} quarantined; "
    )


def _not_handed_on(handoffs: dict[str, int]) -> str:
    """The detractors still waiting for a person, when there are any."""
    waiting = handoffs["not_handed_on"]
    return f", {waiting} not handed on (no owner address set)" if waiting else ""
