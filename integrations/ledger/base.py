"""What every part of the ledger shares: the engine, idempotent writes, row mapping.

The ledger on SQLAlchemy: every stage's reads and writes, each write one transaction.

Writes are idempotent: inserts ignore rows that already exist (the unique constraints
in :mod:`integrations.ledger.tables` decide what "already" means), and status changes
are conditional (``... WHERE status IN (expected)``) so two runs racing on the same row
cannot both move it. Money only ever enters through ``ledger_entries`` inserts.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    String,
    any_,
    bindparam,
    func,
    literal_column,
    select,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from domain.models import (
    Account,
    Contact,
    Conversion,
    EventType,
    Milestone,
    ReferrerType,
    Rejected,
    Reward,
    RewardStatus,
    RewardView,
    SourceEvent,
)
from domain.money import Money
from domain.quarantine import quarantine_excerpt, storable
from integrations.ledger.notifications import queue_notifications
from integrations.ledger.tables import (
    T_LEDGER_ENTRIES,
    T_REWARDS,
)

CHUNK = 500  # ids per IN (...) list: far under every backend's parameter limit


class _NotIndexed(FunctionElement[Any]):
    """A column, compared without its own index on SQLite (see :func:`not_indexed`)."""

    inherit_cache = True
    name = "not_indexed"

    def __init__(self, column: ColumnElement[Any]) -> None:
        super().__init__(column)
        self.type = column.type


@compiles(_NotIndexed, "sqlite")
def _not_indexed_sqlite(element: _NotIndexed, compiler: Any, **kw: Any) -> str:
    # Unary + returns its operand unchanged (text stays text) and makes the term
    # unusable for an index: SQLite's documented way to steer its planner.
    return f"+{compiler.process(element.clauses, **kw)}"


@compiles(_NotIndexed)
def _not_indexed_default(element: _NotIndexed, compiler: Any, **kw: Any) -> str:
    return str(compiler.process(element.clauses, **kw))


def not_indexed(column: ColumnElement[Any]) -> ColumnElement[Any]:
    """``column`` for a condition that must not pick the rows by its index on SQLite.

    For ``id IN (...) AND status = ?`` SQLite, which has no statistics (no ANALYZE),
    prefers the index on ``status`` to the primary key's lookups: it then reads every
    row in that status for each batch of ids, a cost that grows with the ledger and
    makes a stage quadratic (found at 1,000,000 customers: ``rewarded_at IS NULL``,
    reward and payout statuses). Wrapping the other column leaves the key's index the
    only choice. PostgreSQL plans from statistics and gets the column as it is.
    """
    return _NotIndexed(column)


def pairs(conn: Connection, stmt: Any) -> dict[Any, Any]:
    """The first two columns of each row of ``stmt``, as a dict."""
    return {row[0]: row[1] for row in conn.execute(stmt)}


def chunks(items: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class LedgerBase:
    """The engine and the idempotent-write helpers every ledger area uses."""

    def __init__(self, engine: Engine, conn: Connection | None = None) -> None:
        self.engine = engine
        self._dialect = engine.dialect.name
        # Bound to a unit of work's connection, every method runs inside that one
        # transaction (the unit of work commits or rolls back); unbound, each method
        # is its own transaction, as a standalone store.
        self._conn = conn

    @contextmanager
    def _begin(self) -> Iterator[Connection]:
        """A connection in a transaction: the unit of work's, or a new one committed on exit."""
        if self._conn is not None:
            yield self._conn
        else:
            with self.engine.begin() as conn:
                yield conn

    @contextmanager
    def _connect(self) -> Iterator[Connection]:
        """A connection to read with: the unit of work's, or a new one."""
        if self._conn is not None:
            yield self._conn
        else:
            with self.engine.connect() as conn:
                yield conn

    # -- helpers -------------------------------------------------------------------

    def _insert(self, table: Any) -> Any:
        return (pg_insert if self._dialect == "postgresql" else sqlite_insert)(table)

    def _among(self, column: Any, values: Sequence[str]) -> ColumnElement[bool]:
        """``column IN values`` for string keys, sent as ONE bound parameter.

        ``column.in_(values)`` costs SQLAlchemy a bound parameter per value, made and
        rendered anew at every execution: for the pages of a thousand ids that
        deciding asks reads, that was a large part of the stage's own time. Here the
        values travel as one JSON array (SQLite: ``IN (SELECT value FROM
        json_each(?))``) or one array (PostgreSQL: ``= ANY(?)``), and both planners
        still look each value up in the column's index.
        """
        among: ColumnElement[bool]
        if self._dialect == "postgresql":
            among = column == any_(bindparam(None, list(values), type_=ARRAY(String)))
        else:
            listed = func.json_each(bindparam(None, json.dumps(list(values)), type_=String))
            among = column.in_(select(literal_column("value")).select_from(listed))
        return among

    def _insert_ignore(
        self, conn: Connection, table: Any, rows: Sequence[Mapping[str, Any]], returning: Any
    ) -> list[Any]:
        """Insert ``rows``, skipping any that hit a unique constraint; the keys inserted."""
        if not rows:
            return []
        stmt = self._insert(table).on_conflict_do_nothing().returning(returning)
        return list(conn.execute(stmt, list(rows)).scalars().all())

    def _upsert(
        self, conn: Connection, table: Any, rows: Sequence[Mapping[str, Any]], key: str
    ) -> None:
        if not rows:
            return
        stmt = self._insert(table)
        columns = [c for c in rows[0] if c != key]
        stmt = stmt.on_conflict_do_update(
            index_elements=[key], set_={c: getattr(stmt.excluded, c) for c in columns}
        )
        conn.execute(stmt, list(rows))

    @staticmethod
    def _quarantine_rows(
        rejected: Iterable[Rejected], stage: str, now: datetime
    ) -> list[dict[str, Any]]:
        # The raw text is kept as a masked, capped excerpt (no personal data beyond
        # what an operator needs); the reason may quote a value, so it is masked too.
        return [
            {
                "source": r.source,
                "record": storable(r.record, 512),
                "field": None if r.field is None else storable(r.field, 128),
                "reason": quarantine_excerpt(r.reason, 512),
                "raw": quarantine_excerpt(r.raw),
                "stage": stage,
                "created_at": now,
            }
            for r in rejected
        ]

    def _queue_notifications(
        self, conn: Connection, rows: Sequence[Mapping[str, Any]], now: datetime
    ) -> int:
        # Kept for the areas not yet moved into stores: a store calls
        # integrations.ledger.notifications.queue_notifications itself.
        return queue_notifications(conn, rows, now)

    def _reward_views(
        self, conn: Connection, where: Any, limit: int | None, order_by_id: bool = False
    ) -> list[RewardView]:
        balance = (
            select(func.coalesce(func.sum(T_LEDGER_ENTRIES.c.amount_minor), 0))
            .where(T_LEDGER_ENTRIES.c.reward_id == T_REWARDS.c.reward_id)
            .scalar_subquery()
        )
        order = (
            (T_REWARDS.c.reward_id,)
            if order_by_id
            else (T_REWARDS.c.payable_at, T_REWARDS.c.reward_id)
        )
        stmt = select(T_REWARDS, balance.label("balance")).where(where).order_by(*order)
        if limit is not None:
            stmt = stmt.limit(limit)
        return [
            RewardView(
                reward=reward_from_row(r),
                status=RewardStatus(r["status"]),
                balance=Money(int(r["balance"]), r["currency"]),
            )
            for r in conn.execute(stmt).mappings()
        ]

    def _entry(
        self,
        conn: Connection,
        reward_id: str,
        kind: str,
        amount_minor: int,
        currency: str,
        ref: str,
        now: datetime,
    ) -> None:
        if amount_minor == 0:
            return
        conn.execute(
            self._insert(T_LEDGER_ENTRIES),
            {
                "reward_id": reward_id,
                "kind": kind,
                "amount_minor": amount_minor,
                "currency": currency,
                "ref": ref,
                "created_at": now,
            },
        )


# -- row mapping -------------------------------------------------------------------------


def account_fields(a: Account) -> dict[str, Any]:
    """An account's own columns (not when it was stored), as one ``accounts`` row holds
    them; the bulk reader's frames share this mapping."""
    return {
        "account_id": a.account_id,
        "name": a.name,
        "domain": a.domain,
        "customer_since": a.customer_since,
    }


def contact_fields(c: Contact) -> dict[str, Any]:
    """A contact's own columns (not when it was stored), as one ``contacts`` row holds
    them; the bulk reader's frames share this mapping."""
    return {
        "contact_id": c.contact_id,
        "account_id": c.account_id,
        "name": c.name,
        "email": c.email,
        "referrer_type": c.referrer_type.value,
        "opted_out": c.opted_out,
        "stripe_customer_id": c.stripe_customer_id,
        "stripe_account_id": c.stripe_account_id,
    }


def contact_row(c: Contact, now: datetime) -> dict[str, Any]:
    return {**contact_fields(c), "updated_at": now}


def contact_from_row(r: RowMapping) -> Contact:
    return Contact(
        contact_id=r["contact_id"],
        account_id=r["account_id"],
        name=r["name"],
        email=r["email"],
        referrer_type=ReferrerType(r["referrer_type"]),
        opted_out=bool(r["opted_out"]),
        stripe_customer_id=r["stripe_customer_id"],
        stripe_account_id=r["stripe_account_id"],
    )


def event_fields(e: SourceEvent) -> dict[str, Any]:
    """An event's own columns (not its source or when it was stored), as one
    ``source_events`` row holds them; the bulk reader's frames share this mapping."""
    return {
        "event_id": e.event_id,
        "type": e.type.value,
        "occurred_at": e.occurred_at,
        "account_id": e.account_id,
        "contact_id": e.contact_id,
        "amount_minor": e.amount.amount_minor if e.amount else None,
        "currency": e.amount.currency if e.amount else None,
        "score": e.score,
        "csat": e.csat,
        "priority": e.priority,
        "milestone": e.milestone,
        "referral_code": e.referral_code,
        "deal_id": e.deal_id,
        "ticket_id": e.ticket_id,
        "referee_email_domain": e.referee_email_domain,
    }


def event_row(e: SourceEvent, now: datetime) -> dict[str, Any]:
    return {"source": e.source, **event_fields(e), "ingested_at": now}


def event_from_row(r: RowMapping) -> SourceEvent:
    amount = r["amount_minor"]
    return SourceEvent(
        source=r["source"],
        event_id=r["event_id"],
        type=EventType(r["type"]),
        occurred_at=r["occurred_at"],
        account_id=r["account_id"],
        contact_id=r["contact_id"],
        amount=Money(amount, r["currency"]) if amount is not None else None,
        score=r["score"],
        csat=r["csat"],
        priority=r["priority"],
        milestone=r["milestone"],
        referral_code=r["referral_code"],
        deal_id=r["deal_id"],
        ticket_id=r["ticket_id"],
        referee_email_domain=r["referee_email_domain"],
    )


def conversion_row(c: Conversion, now: datetime) -> dict[str, Any]:
    """The ``conversions`` row of ``c`` (as :func:`conversion_from_row` reads it back)."""
    return {
        "conversion_id": c.conversion_id,
        "source_event": c.source_event,
        "referral_code": c.referral_code,
        "referrer_id": c.referrer_id,
        "referee_account_id": c.referee_account_id,
        "referee_contact_id": c.referee_contact_id,
        "referee_email_domain": c.referee_email_domain,
        "card_fingerprint": c.card_fingerprint,
        "milestone": c.milestone.value,
        "occurred_at": c.occurred_at,
        "amount_minor": c.amount.amount_minor if c.amount else None,
        "currency": c.amount.currency if c.amount else None,
        "created_at": now,
    }


def conversion_from_row(r: RowMapping) -> Conversion:
    amount = r["amount_minor"]
    return Conversion(
        conversion_id=r["conversion_id"],
        source_event=r["source_event"],
        referral_code=r["referral_code"],
        referrer_id=r["referrer_id"],
        referee_account_id=r["referee_account_id"],
        referee_contact_id=r["referee_contact_id"],
        milestone=Milestone(r["milestone"]),
        occurred_at=r["occurred_at"],
        amount=Money(amount, r["currency"]) if amount is not None else None,
        referee_email_domain=r["referee_email_domain"],
        card_fingerprint=r["card_fingerprint"],
    )


def reward_row(r: Reward, status: RewardStatus, now: datetime) -> dict[str, Any]:
    """The ``rewards`` row of a reward computed now."""
    return {
        "reward_id": r.reward_id,
        "conversion_id": r.conversion_id,
        "rule_id": r.rule_id,
        "referrer_id": r.referrer_id,
        "amount_minor": r.amount.amount_minor,
        "currency": r.amount.currency,
        "milestone": r.milestone.value,
        "attribution_model": r.attribution_model,
        "explanation": r.explanation[:512],
        "flags": ",".join(r.flags),
        "payable_at": r.payable_at,
        "status": status.value,
        "created_at": now,
        "updated_at": now,
    }


def reward_from_row(r: RowMapping) -> Reward:
    return Reward(
        reward_id=r["reward_id"],
        conversion_id=r["conversion_id"],
        rule_id=r["rule_id"],
        referrer_id=r["referrer_id"],
        amount=Money(r["amount_minor"], r["currency"]),
        milestone=Milestone(r["milestone"]),
        attribution_model=r["attribution_model"],
        payable_at=r["payable_at"],
        explanation=r["explanation"],
        flags=tuple(f for f in r["flags"].split(",") if f),
    )
