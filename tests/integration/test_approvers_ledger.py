"""The approvers in the ledger, on SQLite and PostgreSQL: the registry and its change
log, one-time codes spent once, refusals kept once, and what the database refuses."""

from __future__ import annotations

from datetime import datetime, timedelta

import pyotp
import pytest
from sqlalchemy import Engine, delete, text, update
from sqlalchemy.exc import DBAPIError

from domain.approvers import CodeCheck, make_approver
from domain.money import Money
from integrations.approvers.totp import STEP_SECONDS, TotpCodes, new_key
from integrations.ledger.approvers import ApproverExists, SqlApprovers, UnknownApprover
from integrations.ledger.migrate import upgrade
from integrations.ledger.sql import SqlLedger
from integrations.ledger.tables import (
    ApprovalAttemptRow,
    ApproverCodeRow,
    ApproverEventRow,
    ApproverRow,
)
from tests.conftest import contact, people_batch

KEY = new_key()


@pytest.fixture
def codes(ledger: SqlLedger) -> TotpCodes:
    upgrade(ledger.engine)
    return TotpCodes(SqlApprovers(ledger.engine), KEY)


def _add(codes: TotpCodes, approver_id: str, now: datetime, **extra: object) -> pyotp.TOTP:
    fields: dict[str, object] = {
        "approver_id": approver_id,
        "display_name": approver_id.title(),
        "email": f"{approver_id}@corp.example",
        "contact_id": None,
        "limit": Money.parse("5000.00", "EUR"),
    }
    codes.store.add(make_approver(**fields | extra), "ops@host", now)  # type: ignore[arg-type]
    enrolment = codes.enrol(approver_id, "ops@host", now + timedelta(seconds=1))
    return pyotp.parse_uri(enrolment.uri)  # type: ignore[return-value]


def test_an_approver_is_registered_enrolled_and_disabled_each_change_logged(
    codes: TotpCodes, now: datetime
) -> None:
    _add(codes, "maya", now)
    codes.store.set_active("maya", False, "ops@host", now + timedelta(minutes=1))

    (maya,) = codes.store.all()
    assert (maya.approver_id, maya.active, maya.enrolled, maya.limit.format()) == (
        "maya",
        False,
        True,
        "5,000.00 EUR",
    )
    assert [(e["action"], e["actor"]) for e in codes.store.history("maya")] == [
        ("added", "ops@host"),
        ("enrolled", "ops@host"),
        ("disabled", "ops@host"),
    ]
    with pytest.raises(UnknownApprover):
        codes.store.set_active("nobody", True, "ops@host", now)


def test_one_mailbox_is_one_approver(codes: TotpCodes, now: datetime) -> None:
    _add(codes, "maya", now)
    with pytest.raises(ApproverExists):
        _add(codes, "maya2", now, email="MAYA+second@corp.example")


def test_the_secret_is_stored_encrypted_never_in_the_clear(codes: TotpCodes, now: datetime) -> None:
    totp = _add(codes, "maya", now)
    stored = codes.store.secret("maya")
    assert stored is not None
    assert totp.secret not in stored
    assert TotpCodes(codes.store, KEY)._totp("maya") is not None


def test_a_code_is_accepted_once_within_one_step_of_drift(codes: TotpCodes, now: datetime) -> None:
    totp = _add(codes, "maya", now)
    late = now + timedelta(seconds=STEP_SECONDS)
    assert codes.check("maya", totp.at(now), late) is CodeCheck.OK, "checking spends nothing"
    assert codes.verify("maya", totp.at(now), late) is CodeCheck.OK
    assert codes.verify("maya", totp.at(now), late) is CodeCheck.REPLAYED
    # An older code, never used, is refused too once a later one was spent.
    earlier = now - timedelta(seconds=STEP_SECONDS)
    assert codes.verify("maya", totp.at(earlier), now) is CodeCheck.REPLAYED
    too_old = now - timedelta(seconds=3 * STEP_SECONDS)
    assert codes.verify("maya", totp.at(too_old), now) is CodeCheck.WRONG


@pytest.mark.parametrize("code", ["", "12345", "1234567", "١٢٣٤٥٦", "12 456", "abcdef"])
def test_anything_but_six_ascii_digits_is_a_wrong_code(
    codes: TotpCodes, now: datetime, code: str
) -> None:
    _add(codes, "maya", now)
    assert codes.verify("maya", code, now) is CodeCheck.WRONG


def test_an_approver_without_a_secret_has_no_code(codes: TotpCodes, now: datetime) -> None:
    codes.store.add(
        make_approver(
            approver_id="sam",
            display_name="Sam",
            email="sam@corp.example",
            contact_id=None,
            limit=Money.parse("1.00", "EUR"),
        ),
        "ops@host",
        now,
    )
    assert codes.verify("sam", "123456", now) is CodeCheck.NOT_ENROLLED


def test_demo_codes_exist_for_demo_approvers_only(codes: TotpCodes, now: datetime) -> None:
    _add(codes, "demo.maya", now, demo=True)
    _add(codes, "maya", now)
    assert codes.demo_code("demo.maya", now) == codes._totp("demo.maya").at(now)  # type: ignore[union-attr]
    with pytest.raises(PermissionError):
        codes.demo_code("maya", now)


def test_a_refusal_is_kept_once_per_attempt_and_counts_wrong_codes(
    codes: TotpCodes, now: datetime
) -> None:
    for attempt in ("a1", "a1", "a2"):
        codes.store.record_refusal(attempt, "r1", "maya", "wrong code", True, "run", now)
    codes.store.record_refusal("a3", "r1", "maya", "over limit", False, "run", now)
    assert codes.store.refusal("a1") == "wrong code"
    assert codes.store.wrong_codes_since("maya", now - timedelta(minutes=1)) == 2
    assert codes.store.wrong_codes_since("maya", now + timedelta(minutes=1)) == 0
    assert [r["reason"] for r in codes.store.refusals("r1")] == [
        "wrong code",
        "wrong code",
        "over limit",
    ]


def test_identities_come_from_the_crm_contacts(
    codes: TotpCodes, ledger: SqlLedger, now: datetime
) -> None:
    ledger.record_batch(people_batch(contact("C1", "ACME", email="Jane@Acme.example")), now)
    _add(codes, "jane", now, contact_id="C1", email="jane.work@corp.example")
    approver = codes.store.get("jane")
    assert approver is not None
    own, parties = codes.store.identities(approver, {"referrer": "C1", "referee": "X"})
    assert own.contact_ids == {"C1"}
    assert own.emails == {"jane.work@corp.example", "jane@acme.example"}
    assert own.accounts == {"ACME"}
    assert own.shared_with(parties["referrer"]) == "contact"
    assert own.shared_with(parties["referee"]) is None


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("email", "attacker@evil.example"),
        ("limit_minor", 999_999_999),
        ("demo", True),
        ("contact_id", "C-OTHER"),
        ("display_name", "Someone Else"),
    ],
)
def test_the_database_refuses_to_change_who_an_approver_is_or_their_limit(
    codes: TotpCodes, engine: Engine, now: datetime, column: str, value: object
) -> None:
    _add(codes, "maya", now)
    with pytest.raises(DBAPIError), engine.begin() as conn:
        conn.execute(
            update(ApproverRow).where(ApproverRow.approver_id == "maya").values({column: value})
        )


@pytest.mark.parametrize(
    "table", [ApproverRow, ApproverEventRow, ApproverCodeRow, ApprovalAttemptRow]
)
def test_the_database_refuses_to_delete_approvers_their_log_codes_or_refusals(
    codes: TotpCodes, engine: Engine, now: datetime, table: type
) -> None:
    totp = _add(codes, "maya", now)
    assert codes.verify("maya", totp.at(now), now) is CodeCheck.OK
    codes.store.record_refusal("a1", "r1", "maya", "wrong code", True, None, now)
    with pytest.raises(DBAPIError), engine.begin() as conn:
        conn.execute(delete(table))


@pytest.mark.parametrize(
    ("table", "column"),
    [
        ("approver_events", "actor"),
        ("approver_codes_used", "time_step"),
        ("approval_attempts", "reason"),
    ],
)
def test_the_database_refuses_to_rewrite_the_log_codes_or_refusals(
    codes: TotpCodes, engine: Engine, now: datetime, table: str, column: str
) -> None:
    totp = _add(codes, "maya", now)
    assert codes.verify("maya", totp.at(now), now) is CodeCheck.OK
    codes.store.record_refusal("a1", "r1", "maya", "wrong code", True, None, now)
    value = "0" if column == "time_step" else "'forged'"
    with pytest.raises(DBAPIError), engine.begin() as conn:
        conn.execute(text(f"UPDATE {table} SET {column} = {value}"))


@pytest.mark.parametrize(("column", "value"), [("active", True), ("secret_encrypted", "forged")])
def test_the_database_refuses_to_reenable_or_rekey_an_approver_without_a_log_row(
    codes: TotpCodes, engine: Engine, now: datetime, column: str, value: object
) -> None:
    _add(codes, "maya", now)
    codes.store.set_active("maya", False, "ops@host", now + timedelta(minutes=1))
    with pytest.raises(DBAPIError), engine.begin() as conn:
        conn.execute(
            update(ApproverRow)
            .where(ApproverRow.approver_id == "maya")
            .values({column: value, "updated_at": now + timedelta(minutes=2)})
        )
    (maya,) = codes.store.all()
    assert maya.active is False


def test_an_old_log_row_cannot_be_reused_to_reenable_an_approver(
    codes: TotpCodes, engine: Engine, now: datetime
) -> None:
    # "added" at now, "enrolled" at now + 1 s (by _add): re-enabling needs an
    # "enabled" row at the new time, and the time never moves back to an older row.
    _add(codes, "maya", now)
    codes.store.set_active("maya", False, "ops@host", now + timedelta(minutes=1))
    codes.store.set_active("maya", True, "ops@host", now + timedelta(minutes=2))
    codes.store.set_active("maya", False, "ops@host", now + timedelta(minutes=3))
    with pytest.raises(DBAPIError), engine.begin() as conn:
        conn.execute(
            update(ApproverRow)
            .where(ApproverRow.approver_id == "maya")
            .values(active=True, updated_at=now + timedelta(minutes=2))
        )
    assert [e["action"] for e in codes.store.history("maya")][-1] == "disabled"
    assert codes.store.get("maya").active is False  # type: ignore[union-attr]


def test_a_logged_change_goes_through_and_leaves_its_row(codes: TotpCodes, now: datetime) -> None:
    _add(codes, "maya", now)
    codes.store.set_active("maya", False, "ops@host", now + timedelta(minutes=1))
    codes.store.set_active("maya", True, "ops@host", now + timedelta(minutes=2))
    assert codes.store.get("maya").active is True  # type: ignore[union-attr]
    assert [e["action"] for e in codes.store.history("maya")] == [
        "added",
        "enrolled",
        "disabled",
        "enabled",
    ]
