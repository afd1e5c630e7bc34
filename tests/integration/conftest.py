"""The Stripe fake served over HTTP on 127.0.0.1, and a transfer rail on it.

A test file with other needs (a slower ``"timeout"`` fault, a key of its own) defines
its own ``fake``; pytest prefers the file's fixture to this one.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from integrations.payments.stripe_rail import StripeTransferRail
from integrations.payments.stripe_stand_in import FakeStripe
from tests.conftest import NOW


@pytest.fixture
def fake() -> Iterator[FakeStripe]:
    """The fake, its clock at ``NOW``: holding windows and key lifetimes run on it."""
    with FakeStripe(start=NOW) as server:
        yield server


@pytest.fixture
def rail(fake: FakeStripe) -> Iterator[StripeTransferRail]:
    """The real transfer rail on the fake, without the library's own retries."""
    with StripeTransferRail.connect(
        fake.api_key, api_base=fake.url, max_network_retries=0, clock=fake.now
    ) as made:
        yield made
