"""The detractor owner's emails through SendGrid (the local fake): every detractor
reaches the one owner address, once, however many there are in a run."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from domain.program import Program
from integrations.email.sendgrid_sender import SendGridEmailSender
from integrations.ledger.sql import SqlLedger
from tasks.detractors import hand_on_detractors
from tests.conftest import NOW
from tests.fakes.sendgrid_server import FakeSendGrid
from tests.tasks.test_detractor_handoffs import OWNER, given_detractors, message_id


@pytest.fixture
def fake() -> Iterator[FakeSendGrid]:
    with FakeSendGrid(clock=NOW.timestamp) as server:
        yield server


def test_every_detractor_of_a_run_reaches_the_one_owner_once_through_sendgrid(
    sqlite_ledger: SqlLedger, program: Program, fake: FakeSendGrid
) -> None:
    given_detractors(sqlite_ledger, "C1", "C2", "C3")
    sender = SendGridEmailSender(
        fake.api_key,
        from_email="referrals@company.example",
        api_host=fake.url,
        sleep=lambda _seconds: None,
        timeout=5.0,
    )

    first = hand_on_detractors.fn(sqlite_ledger, sender, None, OWNER, program, NOW)
    second = hand_on_detractors.fn(sqlite_ledger, sender, None, OWNER, program, NOW)

    assert (first.handed_on, second.handed_on) == (3, 0)
    assert [r.to_email for r in fake.rendered] == [OWNER] * 3
    assert sorted(r.custom_args["message_id"] for r in fake.rendered) == sorted(
        map(message_id, ["C1", "C2", "C3"])
    )
    assert all("Person C" in (r.text or "") for r in fake.rendered)
