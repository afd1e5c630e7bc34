"""Rows held in columns: a page of a file drop as the ledger stores it in bulk.

A file drop of a million customers is seven million records; made into one Python
object each and stored through SQLAlchemy one parameter set at a time, most of the
time goes to the objects. The file source hands the rows it checked column-wise as
these sequences instead: each is a :class:`~collections.abc.Sequence` of the domain
rows (built one at a time when something iterates it: the in-memory ledger, a test,
the split of a refused page), and the SQL ``sources`` store writes its frame in bulk
(``executemany`` of plain tuples on SQLite, ``COPY`` on PostgreSQL).

Every value in a frame is already what the ledger stores: text stripped and checked,
timestamps in UTC without their zone (``occurred_at``), amounts in minor units.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import UTC
from typing import Any, Generic, TypeVar, overload

import polars as pl

from domain.models import Account, Contact, EventType, ReferrerType, SourceEvent
from domain.money import Money
from integrations.ledger.base import event_fields

# The columns of each frame, in the order of the ledger's tables.
ACCOUNT_SCHEMA: dict[str, Any] = {
    "account_id": pl.String,
    "name": pl.String,
    "domain": pl.String,
    "customer_since": pl.Date,
}
CONTACT_SCHEMA: dict[str, Any] = {
    "contact_id": pl.String,
    "account_id": pl.String,
    "name": pl.String,
    "email": pl.String,
    "referrer_type": pl.String,
    "opted_out": pl.Boolean,
    "stripe_customer_id": pl.String,
    "stripe_account_id": pl.String,
}
EVENT_SCHEMA: dict[str, Any] = {
    "event_id": pl.String,
    "type": pl.String,
    "occurred_at": pl.Datetime("us"),
    "account_id": pl.String,
    "contact_id": pl.String,
    "amount_minor": pl.Int64,
    "currency": pl.String,
    "score": pl.Int64,
    "csat": pl.Int64,
    "priority": pl.String,
    "milestone": pl.String,
    "referral_code": pl.String,
    "deal_id": pl.String,
    "ticket_id": pl.String,
    "referee_email_domain": pl.String,
}

T = TypeVar("T")


class Columns(Sequence[T], Generic[T]):
    """Rows of one kind held as a polars frame; a sequence of domain rows.

    Args:
        frame: the rows, with exactly the columns of the kind's schema.
    """

    schema: dict[str, Any] = {}
    key = ""

    def __init__(self, frame: pl.DataFrame) -> None:
        self.frame = frame

    def __len__(self) -> int:
        return self.frame.height

    @overload
    def __getitem__(self, index: int) -> T: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[T]: ...

    def __getitem__(self, index: int | slice) -> T | Sequence[T]:
        if isinstance(index, slice):
            return list(self)[index]
        return self._make(self.frame.row(index, named=True))

    def __iter__(self) -> Iterator[T]:
        make = self._make
        for row in self.frame.iter_rows(named=True):
            yield make(row)

    def unique_keys(self) -> bool:
        """Whether no two rows share an id (so no two rows can disagree)."""
        return bool(self.frame.get_column(self.key).is_unique().all())

    def _make(self, row: dict[str, Any]) -> T:
        raise NotImplementedError

    @classmethod
    def of(cls, rows: Sequence[Any], to_row: Callable[[Any], dict[str, Any]]) -> pl.DataFrame:
        """A frame of ``rows`` (domain objects), in this kind's schema."""
        return pl.DataFrame([to_row(r) for r in rows], schema=cls.schema, orient="row")


class AccountColumns(Columns[Account]):
    schema = ACCOUNT_SCHEMA
    key = "account_id"

    def _make(self, row: dict[str, Any]) -> Account:
        return Account(**row)


class ContactColumns(Columns[Contact]):
    schema = CONTACT_SCHEMA
    key = "contact_id"

    def _make(self, row: dict[str, Any]) -> Contact:
        return Contact(**{**row, "referrer_type": ReferrerType(row["referrer_type"])})


class EventColumns(Columns[SourceEvent]):
    """Events of one source held as a frame (``source`` is the same for all)."""

    schema = EVENT_SCHEMA
    key = "event_id"

    def __init__(self, frame: pl.DataFrame, source: str) -> None:
        super().__init__(frame)
        self.source = source

    def _make(self, row: dict[str, Any]) -> SourceEvent:
        minor, currency = row.pop("amount_minor"), row.pop("currency")
        return SourceEvent(
            source=self.source,
            **{
                **row,
                "type": EventType(row["type"]),
                "occurred_at": row["occurred_at"].replace(tzinfo=UTC),
            },
            amount=None if minor is None else Money(minor, currency),
        )


def event_values(e: SourceEvent) -> dict[str, Any]:
    """:func:`event_fields`, the time as naive UTC (how the frames hold it)."""
    return {**event_fields(e), "occurred_at": e.occurred_at.astimezone(UTC).replace(tzinfo=None)}
