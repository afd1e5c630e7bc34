"""`referrals partners`: register a lead, list the registrations, expire lapsed ones."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from config.settings import load_settings
from domain.models import PayoutRailKind, ReferrerType
from domain.program import Program
from domain.registration import Claim, email_reference
from flows.bootstrap import App, use_app
from flows.cli import app as cli
from integrations.approvals.fake import RecordingApprovalRuns
from integrations.email.fake import RecordingEmailSender
from integrations.ledger.sql import SqlLedger
from integrations.payments.fake import RecordingRail
from tests.conftest import approver_ports, contact, people_batch

runner = CliRunner()
EVIDENCE = "Discovery call booked for Nov 4 with the CTO"


@pytest.fixture
def partners_app(
    sqlite_ledger: SqlLedger, program: Program, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[App]:
    for name in ("PREFECT_API_URL", "PREFECT_UI_API_URL", "PREFECT_HOME"):
        monkeypatch.setenv(name, "http://127.0.0.1:1/api" if "URL" in name else str(tmp_path))
    sqlite_ledger.sources.record_batch(
        people_batch(
            contact("P1", "P1-FIRM", kind=ReferrerType.PARTNER),
            contact("P2", "P2-FIRM", kind=ReferrerType.PARTNER),
        ),
        datetime.now(UTC),
    )
    app = App(
        settings=load_settings(inbox_dir=tmp_path),
        program=program,
        ledger=sqlite_ledger,
        sources=(),
        email=RecordingEmailSender(),
        rails={PayoutRailKind.LEDGER_ONLY: RecordingRail(PayoutRailKind.LEDGER_ONLY)},
        approvals=RecordingApprovalRuns(),
        **approver_ports(sqlite_ledger.engine),
    )
    with use_app(app):
        yield app


def register(partner: str, domain: str, contact_: str = "CRM-1") -> list[str]:
    return [
        "partners",
        "register",
        "--partner-id",
        partner,
        "--domain",
        domain,
        "--contact",
        contact_,
        "--evidence",
        EVIDENCE,
    ]


def test_register_accepts_the_first_partner_and_rejects_the_second_naming_the_owner(
    partners_app: App,
) -> None:
    first = runner.invoke(cli, register("P1", "www.Acme.example"))
    second = runner.invoke(cli, register("P2", "acme.example"))

    until = f"{datetime.now(UTC) + timedelta(days=60):%Y-%m-%d}"
    assert first.exit_code == 0, first.output
    assert first.output.startswith(f"accepted: acme.example is registered by P1 until {until}")
    assert second.exit_code == 1
    assert second.output.strip() == f"rejected: acme.example is registered by P1 until {until}"


def test_register_refuses_a_free_mail_domain_naming_the_field(partners_app: App) -> None:
    result = runner.invoke(cli, register("P1", "gmail.com", "jane@gmail.com"))

    assert result.exit_code == 2
    assert "refused: domain: gmail.com is a free mailbox provider" in result.output
    assert "jane@" not in result.output
    assert partners_app.ledger.registrations() == []


def test_list_shows_the_companies_held_and_all_shows_the_expired_too(partners_app: App) -> None:
    rules = partners_app.program.registration
    now = datetime.now(UTC)
    partners_app.ledger.register([Claim("P1", "held.example", "CRM-1", EVIDENCE)], rules, now)
    partners_app.ledger.register(
        [Claim("P2", "gone.example", "CRM-2", EVIDENCE)], rules, now - timedelta(days=90)
    )
    partners_app.ledger.expire_due(now)

    held = runner.invoke(cli, ["partners", "list"])
    everything = runner.invoke(cli, ["partners", "list", "--all"])

    assert held.exit_code == everything.exit_code == 0
    assert "held.example" in held.output
    assert "gone.example" not in held.output
    assert "gone.example" in everything.output
    assert "expired" in everything.output


def test_list_says_when_no_company_is_registered(partners_app: App) -> None:
    result = runner.invoke(cli, ["partners", "list"])
    assert (result.exit_code, result.output.strip()) == (0, "No company is registered.")


def test_expire_closes_the_lapsed_registrations_and_says_how_many(partners_app: App) -> None:
    rules = partners_app.program.registration
    now = datetime.now(UTC)
    partners_app.ledger.register(
        [Claim("P1", "lapsed.example", "CRM-1", EVIDENCE)], rules, now - timedelta(days=61)
    )
    partners_app.ledger.register([Claim("P2", "held.example", "CRM-2", EVIDENCE)], rules, now)

    first = runner.invoke(cli, ["partners", "expire"])
    second = runner.invoke(cli, ["partners", "expire"])

    assert first.exit_code == 0
    assert "expired: lapsed.example registered by P1" in first.output
    assert "1 registration(s) expired" in first.output
    assert "0 registration(s) expired" in second.output
    [closed] = [r for r in partners_app.ledger.registrations() if r.domain == "lapsed.example"]
    assert closed.closed_by == "cli"


def test_an_email_contact_is_registered_as_its_keyed_hash_when_a_key_is_set(
    partners_app: App, tmp_path: Path
) -> None:
    key = "cli-test-key-" + "2" * 32
    keyed = replace(
        partners_app, settings=load_settings(inbox_dir=tmp_path, registration_contact_key=key)
    )
    with use_app(keyed):
        result = runner.invoke(cli, register("P1", "acme.example", "Jane@Acme.example"))

    assert result.exit_code == 0, result.output
    [registration] = partners_app.ledger.registrations()
    assert registration.contact_ref == email_reference("jane@acme.example", key.encode())


def test_an_email_contact_without_a_key_is_refused_naming_the_contact_field(
    partners_app: App,
) -> None:
    result = runner.invoke(cli, register("P1", "acme.example", "jane@acme.example"))

    assert result.exit_code == 2
    assert "refused: contact: an email address is kept only as a keyed hash" in result.output
    assert "jane@" not in result.output
    assert partners_app.ledger.registrations() == []
