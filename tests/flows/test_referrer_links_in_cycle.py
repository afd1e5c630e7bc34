"""Through the cycle's flows, every ask and every notice carries the referrer's tracked
link and the magic link to their own page, made for that very referrer."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from domain.program import Program
from flows.bootstrap import App, use_app
from integrations.email.fake import RecordingEmailSender
from integrations.ledger.sql import SqlLedger
from integrations.ledger.tables import T_CONTACTS
from integrations.web.magic import MagicLinks, PageLinks
from tests.flows.conftest import make_app
from tests.flows.test_referral_cycle import _run_sample_cycle

BASE = "https://refer.example.com"
MAGIC = MagicLinks(b"a-page-key-of-at-least-32-characters!!", 3600)


@pytest.fixture
def linked_app(sqlite_ledger: SqlLedger, program: Program, inbox: Path) -> Iterator[App]:
    app = dataclasses.replace(
        make_app(sqlite_ledger, program, inbox), page_links=PageLinks(MAGIC, BASE)
    )
    with use_app(app) as used:
        yield used


def test_every_ask_and_notice_of_a_cycle_carries_the_tracked_link_and_its_own_page_link(
    linked_app: App,
) -> None:
    _run_sample_cycle(linked_app)

    assert isinstance(linked_app.email, RecordingEmailSender)
    sent = linked_app.email.sent
    asks = [m for m in sent if m.kind == "ask"]
    notices = [m for m in sent if m.kind != "ask"]
    assert asks
    assert notices
    by_address = _contacts_by_address(linked_app.ledger, {m.to_email for m in sent})
    for message in sent:
        text = message.data["text"]
        assert "/r/" in text, message.template
        token = re.search(rf"{re.escape(BASE)}/p/(\S+)", text)
        assert token is not None, message.template
        assert MAGIC.referrer_of(token.group(1)) == by_address[message.to_email]


def _contacts_by_address(ledger: SqlLedger, addresses: set[str]) -> dict[str, str]:
    """Address -> contact id (the sample's addresses are unique)."""
    with ledger.engine.connect() as conn:
        rows = conn.execute(
            select(T_CONTACTS.c.email, T_CONTACTS.c.contact_id).where(
                T_CONTACTS.c.email.in_(sorted(addresses))
            )
        )
        return {email: contact_id for email, contact_id in rows}
