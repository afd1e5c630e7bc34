"""The intake of sources in the ledger (the ``sources`` store).

What a source read leaves behind: its reference rows, events and rejects with the
cursor that covers them (one transaction per batch), the quarantine of refused input
and the purge of its excerpts once the retention period is over.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
import polars as pl
from sqlalchemy import Connection, func, select, update

from domain.models import IngestReport, Rejected
from domain.ports import SourceBatch
from integrations.ledger.base import LedgerBase, account_fields, chunks, contact_row, event_row
from integrations.ledger.bulk import AccountColumns, ContactColumns, EventColumns
from integrations.ledger.destinations import record_destination_changes
from integrations.ledger.tables import (
    T_QUARANTINE,
    AccountRow,
    ContactRow,
    QuarantineRow,
    SourceCursorRow,
    SourceEventRow,
)

# What a row already stored does when written in bulk (SourcesStore._bulk): the same
# as _upsert, _upsert_contacts and _insert_ignore say for one row at a time.
_UPSERT_ACCOUNTS = (
    "ON CONFLICT (account_id) DO UPDATE SET name = excluded.name, domain = excluded.domain, "
    "customer_since = excluded.customer_since, updated_at = excluded.updated_at"
)
_UPSERT_CONTACTS = (
    "ON CONFLICT (contact_id) DO UPDATE SET account_id = excluded.account_id, "
    "name = excluded.name, email = excluded.email, referrer_type = excluded.referrer_type, "
    "opted_out = excluded.opted_out, "
    "stripe_customer_id = coalesce(excluded.stripe_customer_id, contacts.stripe_customer_id), "
    "stripe_account_id = coalesce(excluded.stripe_account_id, contacts.stripe_account_id), "
    "updated_at = excluded.updated_at"
)
_IGNORE_EVENTS = "ON CONFLICT DO NOTHING"


def _copy(conn: Connection, table: str, frame: pl.DataFrame, conflict: str) -> int:
    """PostgreSQL: ``frame`` copied (``COPY ... FROM STDIN``, CSV) to a temporary
    table dropped at commit, then inserted from it in the order read; rows written.

    The statements name tables and columns of the ledger's own (no input reaches them).
    """
    columns = ", ".join(frame.columns)
    staging = f"_bulk_{table}"
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        # The table's columns, without its constraints or defaults (no id drawn).
        cursor.execute(
            f"CREATE TEMPORARY TABLE IF NOT EXISTS {staging} ON COMMIT DELETE ROWS AS "  # noqa: S608
            f"SELECT 0::bigint AS _pos, {columns} FROM {table} WITH NO DATA"
        )
        # Strings quoted (an empty one is ''), nulls left empty: COPY's CSV NULL.
        text = frame.with_row_index("_pos").write_csv(
            include_header=False, quote_style="non_numeric", null_value=""
        )
        with cursor.copy(f"COPY {staging} (_pos, {columns}) FROM STDIN (FORMAT csv)") as copy:
            copy.write(text)
        cursor.execute(
            f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {staging} "  # noqa: S608
            f"ORDER BY _pos {conflict}"
        )
        written = int(cursor.rowcount)
        cursor.execute(f"TRUNCATE {staging}")
        return written
    finally:
        cursor.close()


def _nulls_unbound(frame: pl.DataFrame) -> tuple[pl.DataFrame, str]:
    """``frame`` as SQLite's ``executemany`` binds it fastest, and the ``VALUES``
    placeholders that store exactly its rows (nulls included).

    Python's sqlite3 binds a ``None`` about ten times slower than a text or an integer
    (it looks for an adapter first), and most of an event's columns are empty. So a
    column empty on every row is written as ``NULL`` and not bound, and in a column
    with some nulls each null is bound as a value the column holds nowhere (``''`` or
    ``-1``) that ``NULLIF`` turns back into ``NULL``. A column that holds that value
    somewhere is bound as it is.
    """
    marks: list[str] = []
    filled: list[pl.Expr] = []
    for name, dtype in frame.schema.items():
        column = frame.get_column(name)
        nulls = column.null_count()
        stand_in: str | int | None = "" if dtype == pl.String else -1 if dtype == pl.Int64 else None
        if nulls == frame.height:
            marks.append("NULL")
        elif not nulls or stand_in is None or bool((column == stand_in).any()):
            marks.append("?")
            filled.append(pl.col(name))
        else:
            marks.append(f"NULLIF(?, {stand_in!r})")
            filled.append(pl.col(name).fill_null(stand_in))
    return frame.select(filled), ", ".join(marks)


def _literal(text: str) -> str:
    """``text`` as an SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


# Rows purged per transaction: a first purge of a large quarantine holds no long lock.
PURGE_CHUNK = 5_000


class SqlSourcesStore(LedgerBase):
    """The ``sources`` store: what each source read stored, and what it refused."""

    def cursor(self, source: str) -> str | None:
        """Where the last stored read of ``source`` ended (``None`` before the first)."""
        with self._connect() as conn:
            return conn.execute(
                select(SourceCursorRow.cursor).where(SourceCursorRow.source == source)
            ).scalar_one_or_none()

    def record_batch(self, batch: SourceBatch, now: datetime) -> IngestReport:
        """Store one source read atomically: reference rows, events, rejects, cursor.

        The cursor moves in the same transaction as the events it covers, so a crash
        either keeps both or neither: the next run re-reads, and duplicates are ignored.
        A contact stored with another payout destination than before gets its
        ``payout_destination_changes`` rows in the same transaction.
        """
        with self._begin() as conn:
            if isinstance(batch.accounts, AccountColumns):
                self._bulk(conn, "accounts", batch.accounts.frame, now, _UPSERT_ACCOUNTS)
            else:
                self._upsert(
                    conn,
                    AccountRow,
                    [{**account_fields(a), "updated_at": now} for a in batch.accounts],
                    "account_id",
                )
            if isinstance(batch.contacts, ContactColumns):
                self._destination_changes(conn, batch.contacts, batch.source, now)
                self._bulk(conn, "contacts", batch.contacts.frame, now, _UPSERT_CONTACTS)
            else:
                record_destination_changes(conn, batch.contacts, batch.source, now)
                self._upsert_contacts(conn, [contact_row(c, now) for c in batch.contacts])
            if isinstance(batch.events, EventColumns):
                new_events = self._bulk(
                    conn,
                    "source_events",
                    batch.events.frame,
                    now,
                    _IGNORE_EVENTS,
                    {"source": batch.source},
                )
            else:
                new_events = len(
                    self._insert_ignore(
                        conn,
                        SourceEventRow,
                        [event_row(e, now) for e in batch.events],
                        SourceEventRow.id,
                    )
                )
            # A reject delivered again is counted as quarantined all the same.
            self._insert_ignore(
                conn,
                QuarantineRow,
                self._quarantine_rows(batch.rejected, "ingest", now),
                QuarantineRow.id,
            )
            if batch.cursor is not None:
                self._upsert(
                    conn,
                    SourceCursorRow,
                    [{"source": batch.source, "cursor": batch.cursor, "updated_at": now}],
                    "source",
                )
        return IngestReport(
            source=batch.source,
            records_in=batch.records_in,
            new_events=new_events,
            already_seen=len(batch.events) - new_events,
            quarantined=len(batch.rejected),
            reference_rows=batch.reference_only,
        )

    def _destination_changes(
        self, conn: Connection, contacts: ContactColumns, source: str, now: datetime
    ) -> None:
        """:func:`record_destination_changes` for the contacts of a frame: only those
        already stored and naming a destination can change one, so only they are made
        into objects (none, on a first read of a drop)."""
        naming = contacts.frame.filter(
            pl.col("stripe_customer_id").is_not_null() | pl.col("stripe_account_id").is_not_null()
        )
        if not naming.height:
            return
        ids = naming.get_column("contact_id").to_list()
        # One statement with the ids as one parameter (a JSON array on SQLite, an array
        # on PostgreSQL), not a compiled IN list of thousands.
        if self._dialect == "postgresql":
            query = "SELECT contact_id FROM contacts WHERE contact_id = ANY(%s)"
            param: Any = ids
        else:
            query = (
                "SELECT contact_id FROM contacts "
                "WHERE contact_id IN (SELECT value FROM json_each(?))"
            )
            param = orjson.dumps(ids).decode()
        stored = {row[0] for row in conn.exec_driver_sql(query, (param,))}
        if stored:
            known = ContactColumns(naming.filter(pl.col("contact_id").is_in(list(stored))))
            record_destination_changes(conn, list(known), source, now)

    def _bulk(
        self,
        conn: Connection,
        table: str,
        frame: pl.DataFrame,
        now: datetime,
        conflict: str,
        same: Mapping[str, str] | None = None,
    ) -> int:
        """Write ``frame``'s rows to ``table`` (stamped ``now``, with the columns of
        ``same`` the same on every row) in bulk, ``conflict`` deciding what a row whose
        key is stored already does; how many rows were written. SQLite: one
        ``executemany`` of plain tuples in the ledger's own text forms; PostgreSQL:
        ``COPY`` to a temporary table, then one ``INSERT ... SELECT`` in the order read."""
        if not frame.height:
            return 0
        stamp = "ingested_at" if table == "source_events" else "updated_at"
        stamped = now.astimezone(UTC).replace(tzinfo=None)
        if self._dialect == "postgresql":
            constant = {**(same or {}), stamp: stamped}
            frame = frame.with_columns([pl.lit(v).alias(c) for c, v in constant.items()])
            return _copy(conn, table, frame, conflict)
        frame = frame.with_columns(
            [
                pl.col(c).dt.strftime("%Y-%m-%d %H:%M:%S%.6f")
                for c, t in frame.schema.items()
                if t == pl.Datetime
            ]
            + [pl.col(c).dt.strftime("%Y-%m-%d") for c, t in frame.schema.items() if t == pl.Date]
            + [pl.col(c).cast(pl.Int64) for c, t in frame.schema.items() if t == pl.Boolean]
        )
        every = {**(same or {}), stamp: stamped.strftime("%Y-%m-%d %H:%M:%S.%f")}
        columns = ", ".join([*frame.columns, *every])
        frame, marks = _nulls_unbound(frame)
        # The ledger's own table and column names; the values are bound, but for the
        # ones every row shares (the source's name, the time), written once as
        # literals rather than bound on each row.
        shared = ", ".join(_literal(v) for v in every.values())
        insert = f"INSERT INTO {table} ({columns}) VALUES ({marks}, {shared}) {conflict}"  # noqa: S608
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            # Tuples made as they are bound, column by column (faster than rows()); the
            # sqlite3 module takes any iterable of rows.
            rows = zip(*(c.to_list() for c in frame.iter_columns()), strict=True)
            cursor.executemany(insert, rows)  # type: ignore[arg-type]
            return int(cursor.rowcount)
        finally:
            cursor.close()

    def _upsert_contacts(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert or refresh contacts. A source that does not know a contact's Stripe
        ids (sends none) keeps the ids another source set, rather than erasing them."""
        if not rows:
            return
        stmt = self._insert(ContactRow)
        keep = ("stripe_customer_id", "stripe_account_id")
        stmt = stmt.on_conflict_do_update(
            index_elements=["contact_id"],
            set_={
                c: (
                    func.coalesce(getattr(stmt.excluded, c), getattr(ContactRow, c))
                    if c in keep
                    else getattr(stmt.excluded, c)
                )
                for c in rows[0]
                if c != "contact_id"
            },
        )
        conn.execute(stmt, list(rows))

    def quarantine(self, rejected: Sequence[Rejected], stage: str, now: datetime) -> int:
        """Keep refused input with its reason; returns how many were new."""
        with self._begin() as conn:
            return len(
                self._insert_ignore(
                    conn,
                    QuarantineRow,
                    self._quarantine_rows(rejected, stage, now),
                    QuarantineRow.id,
                )
            )

    def quarantined(self, limit: int = 50) -> list[dict[str, Any]]:
        """Quarantined input without its raw text (which may hold personal data)."""
        with self._connect() as conn:
            return [
                dict(r)
                for r in conn.execute(
                    select(
                        QuarantineRow.stage,
                        QuarantineRow.source,
                        QuarantineRow.record,
                        QuarantineRow.field,
                        QuarantineRow.reason,
                    )
                    .order_by(QuarantineRow.id)
                    .limit(limit)
                ).mappings()
            ]

    def purge_quarantine(self, created_before: datetime, now: datetime) -> int:
        """Empty the excerpt of every quarantine row created before ``created_before``
        and not purged yet, keeping the row and its reason; returns how many.

        Unbound, each chunk of rows is its own transaction; bound to a unit of work,
        every chunk runs in that one.
        """
        purged = 0
        while True:
            with self._begin() as conn:
                ids = list(
                    conn.execute(
                        select(T_QUARANTINE.c.id)
                        .where(
                            T_QUARANTINE.c.created_at < created_before,
                            T_QUARANTINE.c.purged_at.is_(None),
                        )
                        .order_by(T_QUARANTINE.c.id)
                        .limit(PURGE_CHUNK)
                    ).scalars()
                )
                for chunk in chunks(ids):
                    conn.execute(
                        update(T_QUARANTINE)
                        .where(T_QUARANTINE.c.id.in_(chunk), T_QUARANTINE.c.purged_at.is_(None))
                        .values(raw="", purged_at=now)
                    )
            purged += len(ids)
            if len(ids) < PURGE_CHUNK:
                return purged
