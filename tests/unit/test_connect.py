"""The onboarding rules: when a connected account can be paid, how its status moves,
what a Stripe account object says, and the recording fake's idempotency."""

from __future__ import annotations

import pytest

from domain.connect import (
    AccountState,
    ConnectStatus,
    account_key,
    state_of_account,
    status_after,
)
from domain.errors import PermanentIntegrationError
from integrations.payments.fake_connect import RecordingConnect

READY = AccountState("acct_1", True, True, True, True)
UNFINISHED = AccountState("acct_1", True, False, False, False)
NO_PAYOUTS = AccountState("acct_1", True, True, False, True)


def test_an_account_is_payable_only_with_transfers_active_and_payouts_enabled() -> None:
    assert READY.can_receive_transfers
    assert not UNFINISHED.can_receive_transfers
    assert not NO_PAYOUTS.can_receive_transfers


@pytest.mark.parametrize(
    ("before", "state", "after"),
    [
        (None, UNFINISHED, ConnectStatus.ONBOARDING),
        (ConnectStatus.ONBOARDING, READY, ConnectStatus.ENABLED),
        (ConnectStatus.ENABLED, READY, ConnectStatus.ENABLED),
        # Once enabled, never "onboarding" again: losing transfers is a restriction.
        (ConnectStatus.ENABLED, NO_PAYOUTS, ConnectStatus.RESTRICTED),
        (ConnectStatus.RESTRICTED, UNFINISHED, ConnectStatus.RESTRICTED),
        (ConnectStatus.RESTRICTED, READY, ConnectStatus.ENABLED),
    ],
)
def test_a_status_moves_forward_or_to_restricted_never_back_to_onboarding(
    before: ConnectStatus | None, state: AccountState, after: ConnectStatus
) -> None:
    assert status_after(before, state) is after


def test_a_stripe_account_object_is_read_strictly() -> None:
    obj = {
        "id": "acct_9",
        "object": "account",
        "details_submitted": True,
        "charges_enabled": True,
        "payouts_enabled": "true",  # not a JSON true: not enabled
        "capabilities": {"transfers": "active"},
    }
    assert state_of_account(obj) == AccountState("acct_9", True, True, False, True)
    assert state_of_account({"id": "cus_1", "object": "customer"}) is None
    assert state_of_account({"object": "account"}) is None
    assert state_of_account({"id": "acct_2"}) == AccountState("acct_2", False, False, False, False)


def test_the_creation_key_is_one_per_referrer() -> None:
    assert account_key("C1") == account_key("C1") != account_key("C2")


def test_the_recording_fake_answers_a_key_again_with_the_same_account() -> None:
    fake = RecordingConnect()
    first = fake.create_account("C1", account_key("C1"))

    assert fake.create_account("C1", account_key("C1")) == first
    assert list(fake.accounts) == [first]
    with pytest.raises(PermanentIntegrationError):
        fake.create_account("C2", account_key("C1"))
    assert not fake.retrieve(first).can_receive_transfers
    assert fake.complete(first).can_receive_transfers
