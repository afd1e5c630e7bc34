"""Partner registrations in the ledger, on SQLite and Postgres: first to register a
company wins, even when two partners register it at the same instant; expiry closes
a registration once, recording when and by whom; the database itself refuses a second
holding registration of a domain and the deletion of any."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, event, insert, select, text
from sqlalchemy.exc import IntegrityError

from domain.models import ReferrerType
from domain.program import RegistrationRules
from domain.registration import Claim, ClaimDecision, RegistrationStatus, extended
from integrations.ledger.engine import make_engine
from integrations.ledger.sql import SqlLedger
from integrations.ledger.tables import T_PARTNER_REGISTRATIONS as T_REG
from integrations.ledger.tables import ReferralCodeRow
from tests.conftest import contact, people_batch
from tests.integration.test_ledger_concurrency import TIMEOUT, race

RULES = RegistrationRules()
EVIDENCE = "Discovery call held, budget owner identified"


def given_partners(ledger: SqlLedger, now: datetime, *ids: str) -> None:
    partners = [contact(p, f"{p}-FIRM", kind=ReferrerType.PARTNER) for p in ids]
    ledger.sources.record_batch(people_batch(*partners), now)


def claim(partner: str, domain: str = "acme.example") -> Claim:
    return Claim(partner, domain, f"CRM-{partner}", EVIDENCE)


def register_one(ledger: SqlLedger, c: Claim, now: datetime) -> ClaimDecision:
    [decision] = ledger.partners.register([c], RULES, now)
    return decision


def rows(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [
            dict(r)
            for r in conn.execute(
                select(T_REG).order_by(T_REG.c.registered_at, T_REG.c.partner_id)
            ).mappings()
        ]


def raw_registration(partner: str, now: datetime, **changes: Any) -> dict[str, Any]:
    return {
        "registration_id": f"raw-{partner}-{changes.get('status', 'active')}",
        "partner_id": partner,
        "domain": "acme.example",
        "contact_ref": "CRM-1",
        "evidence": EVIDENCE,
        "registered_at": now,
        "expires_at": now + timedelta(days=60),
        "status": "active",
        "extensions": 0,
        "closed_at": None,
        "closed_by": None,
        "conversion_id": None,
        "updated_at": now,
    } | changes


# -- first to register wins ----------------------------------------------------------------


def test_the_first_partner_to_register_a_company_holds_it_and_the_second_is_told_who(
    ledger: SqlLedger, now: datetime
) -> None:
    given_partners(ledger, now, "P1", "P2")

    first = register_one(ledger, claim("P1"), now)
    second = register_one(ledger, claim("P2"), now + timedelta(days=10))

    assert first.accepted
    assert (second.accepted, second.owner) == (False, "P1")
    assert second.owner_expires_at == now + timedelta(days=60)
    assert second.message() == (
        f"rejected: acme.example is registered by P1 until {now + timedelta(days=60):%Y-%m-%d}"
    )
    assert [(r["partner_id"], r["status"]) for r in rows(ledger.engine)] == [("P1", "active")]
    assert list(
        ledger.partners.active_registration_for_domains(["acme.example", "other.example"])
    ) == ["acme.example"]


def test_two_claims_on_one_company_in_a_batch_go_to_the_first_listed(
    ledger: SqlLedger, now: datetime
) -> None:
    given_partners(ledger, now, "P1", "P2")

    decisions = ledger.partners.register(
        [claim("P2", "zeta.example"), claim("P2"), claim("P1"), claim("P1", "beta.example")],
        RULES,
        now,
    )

    assert [(d.accepted, d.owner) for d in decisions] == [
        (True, None),
        (True, None),
        (False, "P2"),
        (True, None),
    ]


def test_registering_the_same_batch_again_at_the_same_moment_writes_nothing_new(
    ledger: SqlLedger, now: datetime
) -> None:
    given_partners(ledger, now, "P1")
    first = register_one(ledger, claim("P1"), now)

    again = register_one(ledger, claim("P1"), now)

    assert again.accepted
    assert again.registration == first.registration
    assert len(rows(ledger.engine)) == 1


def test_a_partner_without_a_code_gets_one_with_their_registration(
    ledger: SqlLedger, now: datetime
) -> None:
    given_partners(ledger, now, "P1")
    code = "R" + "Q" * 20

    ledger.partners.register([claim("P1")], RULES, now, new_codes={"P1": code})

    assert ledger.asks.codes_for(["P1"]) == {"P1": code}


# -- the window ends -----------------------------------------------------------------------


def test_after_the_window_a_new_claim_wins_and_closes_the_lapsed_one_with_who_and_when(
    ledger: SqlLedger, now: datetime
) -> None:
    given_partners(ledger, now, "P1", "P2")
    first = register_one(ledger, claim("P1"), now)
    later = now + timedelta(days=60)

    second = register_one(ledger, claim("P2"), later)

    assert second.accepted
    assert second.registration is not None
    old, new = rows(ledger.engine)
    assert (old["status"], old["closed_at"]) == ("expired", later)
    assert old["closed_by"] == f"claim:{second.registration.registration_id}"
    assert (new["partner_id"], new["status"]) == ("P2", "active")
    assert first.registration is not None
    assert old["registration_id"] == first.registration.registration_id


def test_expiry_closes_each_lapsed_registration_once_recording_when_and_by_whom(
    ledger: SqlLedger, now: datetime
) -> None:
    given_partners(ledger, now, "P1", "P2")
    register_one(ledger, claim("P1", "old.example"), now - timedelta(days=61))
    register_one(ledger, claim("P2", "new.example"), now - timedelta(days=10))

    expired = ledger.partners.expire_due(now, "expire-registrations:run-1")
    again = ledger.partners.expire_due(now, "expire-registrations:run-2")

    assert [(r.domain, r.status, r.closed_at) for r in expired] == [
        ("old.example", RegistrationStatus.EXPIRED, now)
    ]
    assert expired[0].closed_by == "expire-registrations:run-1"
    assert again == []
    assert ledger.partners.registration_counts() == {
        "active": 1,
        "extended": 0,
        "expired": 1,
        "converted": 0,
    }
    # The company is free again.
    assert register_one(ledger, claim("P2", "old.example"), now).accepted


def test_an_extension_moves_the_expiry_out_once_and_never_for_a_closed_registration(
    ledger: SqlLedger, now: datetime
) -> None:
    given_partners(ledger, now, "P1", "P2")
    decision = register_one(ledger, claim("P1"), now)
    assert decision.registration is not None
    longer = extended(decision.registration, RULES)
    assert longer is not None

    assert ledger.partners.extend(longer, now + timedelta(days=5)) is True
    assert ledger.partners.extend(longer, now + timedelta(days=5)) is False  # already there
    [held] = ledger.partners.active_registration_for_domains(["acme.example"]).values()
    assert (held.expires_at, held.status, held.extensions) == (
        now + timedelta(days=90),
        RegistrationStatus.EXTENDED,
        1,
    )

    ledger.partners.expire_due(now + timedelta(days=90))
    further = extended(held, RULES)
    assert further is not None
    assert ledger.partners.extend(further, now + timedelta(days=91)) is False


def test_listing_shows_the_soonest_expiry_first_and_filters_by_status(
    ledger: SqlLedger, now: datetime
) -> None:
    given_partners(ledger, now, "P1")
    register_one(ledger, claim("P1", "late.example"), now)
    register_one(ledger, claim("P1", "early.example"), now - timedelta(days=50))
    register_one(ledger, claim("P1", "gone.example"), now - timedelta(days=70))
    ledger.partners.expire_due(now)

    holding = ledger.partners.registrations(
        [RegistrationStatus.ACTIVE, RegistrationStatus.EXTENDED]
    )
    soon = ledger.partners.registrations(
        [RegistrationStatus.ACTIVE], expiring_before=now + timedelta(days=15)
    )

    assert [r.domain for r in holding] == ["early.example", "late.example"]
    assert [r.domain for r in soon] == ["early.example"]
    assert [r.domain for r in ledger.partners.registrations()] == [
        "gone.example",
        "early.example",
        "late.example",
    ]


# -- the database's own guards -------------------------------------------------------------


def test_a_claim_read_late_is_registered_at_its_own_moment_with_the_cursor_it_came_with(
    ledger: SqlLedger, now: datetime
) -> None:
    given_partners(ledger, now, "P1", "P2")
    made = now - timedelta(days=70)  # its 60-day window ended before it was read
    late = replace(claim("P1"), registered_at=made)

    [decision] = ledger.partners.register([late], RULES, now, cursor=("files:registrations", "c1"))
    # A lapsed claim holds nothing: the next partner's claim wins and closes it.
    rival = register_one(ledger, claim("P2"), now)

    assert decision.registration is not None
    assert (decision.registration.registered_at, decision.registration.expires_at) == (
        made,
        made + timedelta(days=60),
    )
    assert ledger.sources.cursor("files:registrations") == "c1"
    assert rival.accepted
    assert [(r["partner_id"], r["status"]) for r in rows(ledger.engine)] == [
        ("P1", "expired"),
        ("P2", "active"),
    ]


def test_a_claim_read_again_after_its_registration_closed_is_that_registration(
    ledger: SqlLedger, now: datetime
) -> None:
    given_partners(ledger, now, "P1", "P2")
    late = replace(claim("P1"), registered_at=now - timedelta(days=70))
    [first] = ledger.partners.register([late], RULES, now)
    register_one(ledger, claim("P2"), now)  # closes P1's lapsed claim, holds the company

    [again] = ledger.partners.register([late], RULES, now + timedelta(days=1), cursor=("f", "c2"))

    # Not "rejected: held by P2": the file was read again, the claim was not made again.
    assert again.accepted
    assert again.registration is not None
    assert first.registration is not None
    assert again.registration.registration_id == first.registration.registration_id
    assert again.registration.status is RegistrationStatus.EXPIRED
    assert len(rows(ledger.engine)) == 2


def test_the_database_refuses_a_second_holding_registration_of_a_domain(
    engine: Engine, ledger: SqlLedger, now: datetime
) -> None:
    given_partners(ledger, now, "P1", "P2")
    with engine.begin() as conn:
        conn.execute(insert(T_REG), raw_registration("P1", now))

    for status in ("active", "extended"):
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(insert(T_REG), raw_registration("P2", now, status=status))

    # Closed registrations of the domain are history, as many as there were.
    with engine.begin() as conn:
        conn.execute(
            insert(T_REG),
            raw_registration("P2", now, status="expired", closed_at=now, closed_by="test"),
        )
    assert len(rows(engine)) == 2


@pytest.mark.parametrize(
    "changes",
    [
        {"status": "pending"},
        {"status": "expired"},  # closed without saying when
        {"closed_at": "now"},  # open but closed
        {"status": "converted", "closed_at": "now", "closed_by": "x"},  # by no conversion
        {"expires_at": "now"},
        {"partner_id": "NOBODY"},
    ],
)
def test_the_database_refuses_registrations_that_break_its_checks(
    engine: Engine, ledger: SqlLedger, now: datetime, changes: dict[str, Any]
) -> None:
    given_partners(ledger, now, "P1")
    row = raw_registration("P1", now, **{k: now if v == "now" else v for k, v in changes.items()})

    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(insert(T_REG), row)


def test_registrations_are_never_deleted(engine: Engine, ledger: SqlLedger, now: datetime) -> None:
    given_partners(ledger, now, "P1")
    register_one(ledger, claim("P1"), now)

    with pytest.raises(IntegrityError, match="append-only"), engine.begin() as conn:
        conn.execute(text("DELETE FROM partner_registrations"))

    assert len(rows(engine)) == 1


# -- races ---------------------------------------------------------------------------------


@pytest.fixture
def racing_ledgers() -> Iterator[Callable[[str, int], list[SqlLedger]]]:
    engines: list[Engine] = []

    def make(url: str, n: int) -> list[SqlLedger]:
        made = [make_engine(url) for _ in range(n)]
        engines.extend(made)
        for engine in made:
            with engine.connect():  # open the connection now, not inside the race
                pass
        return [SqlLedger(engine) for engine in made]

    yield make
    for engine in engines:
        engine.dispose()


def meet_before_inserting(ledgers: list[SqlLedger]) -> None:
    """Hold each racer just before its insert until all have got there: each has then
    found the company free in its own open transaction, so the database decides."""
    barrier = threading.Barrier(len(ledgers))

    def hold(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO PARTNER_REGISTRATIONS"):
            barrier.wait(timeout=TIMEOUT)

    for ledger in ledgers:
        event.listen(ledger.engine, "before_cursor_execute", hold)


def test_two_partners_registering_one_company_at_once_on_postgres_exactly_one_wins(
    postgres_url: str, racing_ledgers: Callable[[str, int], list[SqlLedger]], now: datetime
) -> None:
    setup, *racers = racing_ledgers(postgres_url, 3)
    given_partners(setup, now, "P1", "P2")
    meet_before_inserting(racers)

    outcomes = race(
        [
            lambda: register_one(racers[0], claim("P1"), now),
            lambda: register_one(racers[1], claim("P2"), now + timedelta(seconds=1)),
        ]
    )

    assert not [o for o in outcomes if isinstance(o, BaseException)], outcomes
    decisions = [o for o in outcomes if isinstance(o, ClaimDecision)]
    [won] = [d for d in decisions if d.accepted]
    [lost] = [d for d in decisions if not d.accepted]
    assert won.registration is not None
    assert (lost.owner, lost.owner_expires_at) == (
        won.registration.partner_id,
        won.registration.expires_at,
    )
    assert [(r["partner_id"], r["status"]) for r in rows(setup.engine)] == [
        (won.registration.partner_id, "active")
    ]


def test_two_batches_racing_on_the_same_companies_on_postgres_split_them_without_deadlock(
    postgres_url: str, racing_ledgers: Callable[[str, int], list[SqlLedger]], now: datetime
) -> None:
    setup, *racers = racing_ledgers(postgres_url, 3)
    given_partners(setup, now, "P1", "P2")
    domains = [f"co{i}.example" for i in range(20)]

    outcomes = race(
        [
            lambda: racers[0].partners.register([claim("P1", d) for d in domains], RULES, now),
            # The other batch lists the companies in the opposite order.
            lambda: racers[1].partners.register(
                [claim("P2", d) for d in reversed(domains)], RULES, now
            ),
        ]
    )

    assert not [o for o in outcomes if isinstance(o, BaseException)], outcomes
    accepted = [d for batch in outcomes if isinstance(batch, list) for d in batch if d.accepted]
    assert sorted(d.claim.domain for d in accepted) == sorted(domains)
    assert len(rows(setup.engine)) == len(domains)


def test_codes_minted_by_two_racing_registrations_leave_one_code_per_partner(
    ledger: SqlLedger, now: datetime
) -> None:
    given_partners(ledger, now, "P1")
    ledger.partners.register(
        [claim("P1", "a.example")], RULES, now, new_codes={"P1": "R" + "A" * 20}
    )
    ledger.partners.register(
        [claim("P1", "b.example")], RULES, now, new_codes={"P1": "R" + "B" * 20}
    )

    with ledger.engine.connect() as conn:
        codes = conn.execute(select(ReferralCodeRow.code)).scalars().all()
    assert codes == ["R" + "A" * 20]
