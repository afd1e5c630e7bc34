"""The approvers store and its in-memory fake keep one contract: the same scenarios on
SqlApprovers (SQLite and PostgreSQL) and on InMemoryApproversStore give the same
results, so a use case tested on the fake behaves the same on the ledger."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from domain.approvers import Approver, make_approver
from domain.money import Money
from domain.ports import ApproverRegistry
from integrations.ledger.approvers import ApproverExists, SqlApprovers, UnknownApprover
from integrations.ledger.engine import make_engine
from integrations.ledger.memory import InMemoryStores
from integrations.ledger.memory.approvers import InMemoryApproversStore
from integrations.ledger.migrate import upgrade
from integrations.ledger.sql import SqlLedger
from tests.conftest import contact, people_batch

Store = SqlApprovers | InMemoryApproversStore


@dataclass
class Side:
    """One implementation of the store, and how its CRM contacts are made known."""

    store: Store
    know: Callable[..., object]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres), "memory"])
def side(request: pytest.FixtureRequest, now: datetime) -> Iterator[Side]:
    """The SQL store on SQLite and PostgreSQL (as the ``ledger`` fixture makes them), and
    the fake."""
    if request.param == "memory":
        fake = InMemoryApproversStore()
        yield Side(fake, lambda *cs: fake.contacts.update({c.contact_id: c for c in cs}))
        return
    engine = make_engine(str(request.getfixturevalue(f"{request.param}_url")))
    ledger = SqlLedger(engine)
    upgrade(ledger.engine)
    yield Side(
        SqlApprovers(ledger.engine),
        lambda *cs: ledger.sources.record_batch(people_batch(*cs), now),
    )
    engine.dispose()


@pytest.fixture
def store(side: Side) -> Store:
    return side.store


def _approver(approver_id: str, email: str | None = None) -> Approver:
    return make_approver(
        approver_id=approver_id,
        display_name=approver_id.title(),
        email=email or f"{approver_id}@corp.example",
        contact_id=f"C-{approver_id}",
        limit=Money.parse("5000.00", "EUR"),
    )


def _at(value: datetime) -> datetime:
    # The databases may hand back a naive UTC time; the contract is about the instant.
    return value.replace(tzinfo=None)


def _raised(call: Callable[[], Any]) -> type[BaseException] | None:
    try:
        call()
    except (ApproverExists, UnknownApprover) as exc:
        return type(exc)
    return None


def test_an_approver_is_registered_enrolled_disabled_and_enabled_each_change_logged(
    store: Store, now: datetime
) -> None:
    store.add(_approver("maya"), "ops@host", now)
    assert store.secret("maya") is None
    assert store.get("maya").enrolled is False  # type: ignore[union-attr]

    store.enrol("maya", "encrypted-secret", "ops@host", now + timedelta(seconds=1))
    store.set_active("maya", False, "ops@host", now + timedelta(minutes=1))
    store.set_active("maya", True, "lead@host", now + timedelta(minutes=2))

    (maya,) = store.all()
    assert (maya.approver_id, maya.email, maya.active, maya.enrolled, maya.limit) == (
        "maya",
        "maya@corp.example",
        True,
        True,
        Money.parse("5000.00", "EUR"),
    )
    assert store.get("maya") == maya
    assert store.get("nobody") is None
    assert store.secret("maya") == "encrypted-secret"
    assert [
        (e["action"], e["actor"], e["details"], _at(e["at"])) for e in store.history("maya")
    ] == [
        (
            "added",
            "ops@host",
            {
                "contact_id": "C-maya",
                "demo": False,
                "display_name": "Maya",
                "limit": "5,000.00 EUR",
            },
            _at(now),
        ),
        ("enrolled", "ops@host", {}, _at(now + timedelta(seconds=1))),
        ("disabled", "ops@host", {}, _at(now + timedelta(minutes=1))),
        ("enabled", "lead@host", {}, _at(now + timedelta(minutes=2))),
    ]
    assert [sorted(e) for e in store.history("maya")] == [["action", "actor", "at", "details"]] * 4


def test_all_lists_approvers_by_id(store: Store, now: datetime) -> None:
    for approver_id in ("zoe", "ana", "maya"):
        store.add(_approver(approver_id), "ops@host", now)
    assert [a.approver_id for a in store.all()] == ["ana", "maya", "zoe"]


def test_a_taken_id_or_mailbox_is_refused_and_nothing_is_logged_for_it(
    store: Store, now: datetime
) -> None:
    store.add(_approver("maya"), "ops@host", now)

    assert _raised(lambda: store.add(_approver("maya", "other@corp.example"), "x", now)) is (
        ApproverExists
    )
    # The same mailbox under another spelling (make_approver normalises it).
    assert _raised(lambda: store.add(_approver("maya2", "MAYA+two@Corp.example"), "x", now)) is (
        ApproverExists
    )
    assert [a.approver_id for a in store.all()] == ["maya"]
    assert [e["action"] for e in store.history("maya")] == ["added"]
    assert store.history("maya2") == []


def test_changes_to_an_unknown_approver_are_refused_and_nothing_is_logged(
    store: Store, now: datetime
) -> None:
    assert _raised(lambda: store.enrol("nobody", "s", "ops@host", now)) is UnknownApprover
    assert _raised(lambda: store.set_active("nobody", False, "ops@host", now)) is UnknownApprover
    assert store.history("nobody") == []
    assert store.get("nobody") is None


def test_a_time_step_is_spent_once(store: Store, now: datetime) -> None:
    store.add(_approver("maya"), "ops@host", now)
    assert store.last_step("maya") is None

    assert [
        store.spend("maya", 100, now),
        store.spend("maya", 100, now + timedelta(seconds=5)),
        store.spend("maya", 99, now),
        store.spend("maya", 101, now),
    ] == [True, False, True, True]
    assert store.last_step("maya") == 101
    # A code of nobody registered is never spent.
    assert store.spend("nobody", 100, now) is False
    assert store.last_step("nobody") is None


def test_a_refusal_is_kept_once_per_attempt(store: Store, now: datetime) -> None:
    store.record_refusal("a-1", "r-1", "maya", "wrong code", True, "run-1", now)
    store.record_refusal("a-1", "r-1", "maya", "said again", False, "run-2", now)
    store.record_refusal("a-2", "r-1", "x" * 80, "not an approver", False, None, now + timedelta(1))
    store.record_refusal("a-3", "r-2", "maya", "disabled", False, None, now)

    assert store.refusal("a-1") == "wrong code"
    assert store.refusal("a-9") is None
    assert [{**r, "at": _at(r["at"])} for r in store.refusals("r-1")] == [
        {"claimed_approver_id": "maya", "reason": "wrong code", "wrong_code": True, "at": _at(now)},
        {
            "claimed_approver_id": "x" * 64,
            "reason": "not an approver",
            "wrong_code": False,
            "at": _at(now + timedelta(1)),
        },
    ]
    assert store.refusals("r-9") == []


def test_wrong_codes_are_counted_from_a_time_on(store: Store, now: datetime) -> None:
    minute = timedelta(minutes=1)
    store.record_refusal("a-1", "r-1", "maya", "wrong code", True, None, now)
    store.record_refusal("a-2", "r-1", "maya", "wrong code", True, None, now + minute)
    store.record_refusal("a-3", "r-2", "maya", "wrong code", True, None, now + 2 * minute)
    store.record_refusal("a-4", "r-2", "maya", "disabled", False, None, now + 3 * minute)
    store.record_refusal("a-5", "r-2", "ana", "wrong code", True, None, now + 3 * minute)
    store.record_refusal("a-3", "r-2", "maya", "wrong code", True, None, now + 4 * minute)

    assert [store.wrong_codes_since("maya", now + k * minute) for k in range(5)] == [3, 2, 1, 0, 0]
    assert store.wrong_codes_since("ana", now) == 1
    assert store.wrong_codes_since("nobody", now) == 0


def test_identities_come_from_the_approver_and_the_parties_crm_contacts(
    side: Side, now: datetime
) -> None:
    side.know(contact("C1", "ACME", email="Jane@Acme.example"), contact("C2", "ACME", email=None))
    jane = make_approver(
        approver_id="jane",
        display_name="Jane",
        email="jane.work@corp.example",
        contact_id="C1",
        limit=Money.parse("5000.00", "EUR"),
    )
    side.store.add(jane, "ops@host", now)

    own, parties = side.store.identities(
        jane, {"referrer": "C1", "colleague": "C2", "referee": "X", "nobody": None}
    )
    assert (own.contact_ids, own.emails, own.accounts) == (
        frozenset({"C1"}),
        frozenset({"jane.work@corp.example", "jane@acme.example"}),
        frozenset({"ACME"}),
    )
    assert {role: (i.contact_ids, i.emails, i.accounts) for role, i in parties.items()} == {
        "referrer": (frozenset({"C1"}), frozenset({"jane@acme.example"}), frozenset({"ACME"})),
        "colleague": (frozenset({"C2"}), frozenset(), frozenset({"ACME"})),
        "referee": (frozenset({"X"}), frozenset(), frozenset()),
        "nobody": (frozenset(), frozenset(), frozenset()),
    }
    assert [own.shared_with(parties[r]) for r in ("referrer", "colleague", "referee")] == [
        "contact",
        "account",
        None,
    ]


def test_the_fake_types_as_the_approver_registry_and_sits_in_the_stores() -> None:
    registry: ApproverRegistry = InMemoryApproversStore()
    assert isinstance(InMemoryStores().approvers, InMemoryApproversStore)
    registry.record_refusal(
        "a-1", "r-1", "maya", "wrong code", True, None, datetime(2026, 1, 1, tzinfo=UTC)
    )
    assert registry.refusal("a-1") == "wrong code"
