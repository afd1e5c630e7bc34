"""Keeping referrers' connected accounts up to date: the ``account.updated`` webhook
events in the inbox, and a read-back of the accounts still onboarding before payouts."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from domain.connect import ConnectStatus, Onboarding, state_of_account
from domain.errors import IntegrationError
from domain.ports import ConnectOnboarding
from domain.stores.connect import ConnectStore
from tasks._support import run_logger

#: Accounts read back from the provider per payout run, at most.
REFRESH_LIMIT = 100


@task(name="apply-account-updates", cache_policy=NO_CACHE)
def apply_account_updates(
    store: ConnectStore, gateway: ConnectOnboarding, now: datetime, batch_size: int = 500
) -> dict[str, int]:
    """Record the state each ``account.updated`` event in the Stripe inbox carries.

    An account that can now receive transfers becomes its referrer's payout
    destination (see :class:`domain.connect.Onboarding`). Events about accounts that
    are not ours, or carrying no account, are marked processed and counted as ignored.

    Returns:
        Counts of events read, accounts enabled, ignored.
    """
    onboarding = Onboarding(store, gateway, lambda: now)
    counts = {"events": 0, "enabled": 0, "ignored": 0}
    while batch := store.account_updates(batch_size):
        for _event_id, obj in batch:
            state = state_of_account(obj)
            status = None if state is None else onboarding.apply(state, "webhook")
            counts["events"] += 1
            counts["enabled"] += status is ConnectStatus.ENABLED
            counts["ignored"] += status is None
        store.mark_processed([event_id for event_id, _ in batch], now)
    run_logger().info(
        "account updates: %d events, %d accounts enabled, %d ignored",
        counts["events"],
        counts["enabled"],
        counts["ignored"],
    )
    return counts


@task(name="refresh-connected-accounts", cache_policy=NO_CACHE)
def refresh_connected_accounts(
    store: ConnectStore, gateway: ConnectOnboarding, now: datetime, limit: int = REFRESH_LIMIT
) -> dict[str, Any]:
    """Read back the accounts still onboarding, in case a webhook was missed: a referrer
    who finished onboarding is paid in this run, not after the next event.

    A provider failure for one account is counted and left for the next run.

    Returns:
        Counts of accounts read, enabled, and failed reads.
    """
    onboarding = Onboarding(store, gateway, lambda: now)
    counts = {"read": 0, "enabled": 0, "failed": 0}
    for referrer_id in store.unfinished(limit):
        try:
            status = onboarding.refresh(referrer_id, "payout-run")
        except IntegrationError:
            counts["failed"] += 1
            continue
        counts["read"] += 1
        counts["enabled"] += status is ConnectStatus.ENABLED
    run_logger().info(
        "connected accounts: %d read, %d enabled, %d failed",
        counts["read"],
        counts["enabled"],
        counts["failed"],
    )
    return counts
