"""Set-based detection: the domain's :class:`~domain.moments.DetectionSpec`, run as SQL.

The rules stay in ``domain.moments`` as data. This module only translates them into
SQL, one condition kind at a time, and runs them where the events are. Events are
never carried through Python. Each chunk of event ids is one transaction: one scan of
the chunk copies the events that matter (moments, detractors, moments without a contact)
into a temporary table, ``INSERT INTO moments SELECT ...`` and ``INSERT INTO follow_ups
SELECT ...`` and the counts read that table, and the detection watermark moves. Reading
the chunk's events once instead of three times is about a tenth of the stage's time.

Progress is a watermark, not a mark on every event. The ``__detection__`` row of
``source_cursors`` holds the highest event id examined, and it moves in the same
transaction as the moments it covers. Rewriting every examined event row
(``detected_at``) cost more than detection itself. The watermark is only safe if no
event can appear under it later, so each chunk shuts out inserts first:

* SQLite: every transaction is ``BEGIN IMMEDIATE`` (``engine.py``), which takes the
  database's single write lock. Anything committed before is visible, and nothing
  else commits until the chunk does. Rowids grow, and events are never deleted.
* PostgreSQL: ids come from a sequence, so an ingest that took id 100 may commit after
  one that took 200. Each chunk starts with ``LOCK TABLE source_events IN SHARE ROW
  EXCLUSIVE MODE``. It waits for every transaction that is writing events (those
  hold ROW EXCLUSIVE from their first insert, before any id is drawn) and holds new
  ones off until the chunk commits. The lock conflicts with itself, so two detection
  runs take turns. Reads are never blocked; ingest waits at most one chunk.

Events the previous, row-by-row stage marked (``detected_at``) are skipped, so a
ledger detected before this module existed is neither examined twice nor miscounted.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, assert_never

from sqlalchemy import (
    Column,
    ColumnElement,
    Connection,
    Integer,
    MetaData,
    String,
    Table,
    and_,
    bindparam,
    case,
    cast,
    false,
    func,
    literal,
    not_,
    or_,
    select,
    text,
)

from domain.moments import (
    Absent,
    AmountAtLeast,
    AtLeast,
    AtMost,
    Condition,
    Detail,
    DetectionCounts,
    DetectionSpec,
    EventField,
    EventRule,
    OneOf,
)
from integrations.ledger.base import (
    LedgerBase,
)
from integrations.ledger.tables import (
    T_FOLLOW_UPS,
    T_MOMENTS,
    T_SOURCE_CURSORS,
    T_SOURCE_EVENTS,
)

__all__ = ["DEFAULT_CHUNK", "WATERMARK", "DetectionCounts", "SqlMomentsStore"]

# The source_cursors row that holds the highest event id detection has examined.
# Sources are named after systems (crm, nps, hubspot, ...), never like this.
WATERMARK = "__detection__"
# Event ids per transaction. SQLite writes and checkpoints its WAL at every commit, so
# small chunks cost far more than their work: chunks of 1,000 ids took about four
# times as long as chunks of 200,000. A chunk this size holds the write lock for about
# half a second on an idle machine.
DEFAULT_CHUNK = 200_000
# The page cache detection relies on (the moments indexes are written in contact order,
# and a small cache evicts and re-reads their pages on every chunk) is every SQLite
# ledger connection's: integrations.ledger.engine.SQLITE_CACHE_KIB.

_E = T_SOURCE_EVENTS.c
_FIELDS = {
    EventField.SCORE: _E.score,
    EventField.CSAT: _E.csat,
    EventField.MILESTONE: _E.milestone,
    EventField.REFERRAL_CODE: _E.referral_code,
}


# -- the spec as SQL ---------------------------------------------------------------------
# A condition compiles to an expression that is true exactly where Python's check is
# true, and false or NULL elsewhere (``score >= 9`` is NULL for a missing score). Used
# positively (WHERE, AND, OR, CASE WHEN), NULL acts as false, so that is enough. The one
# negation, "not a detractor", goes through :func:`_none_of`, where NULL must count as
# false before NOT turns it around.


def condition_sql(condition: Condition) -> ColumnElement[bool]:
    """``condition`` as a SQL expression on ``source_events`` (see above for NULL)."""
    if isinstance(condition, AmountAtLeast):
        return and_(
            _E.currency == condition.minimum.currency,
            _E.amount_minor >= condition.minimum.amount_minor,
        )
    column = _FIELDS[condition.field]
    if isinstance(condition, AtLeast):
        return column >= condition.value
    if isinstance(condition, AtMost):
        return column <= condition.value
    if isinstance(condition, Absent):
        return column.is_(None)
    if isinstance(condition, OneOf):
        # Sorted: the same spec always renders the same statement (and cache key).
        return func.coalesce(column, "").in_(sorted(condition.values))
    assert_never(condition)


def _none_of(expression: ColumnElement[bool]) -> ColumnElement[bool]:
    """NOT ``expression``, with NULL counted as false first (as Python would)."""
    return not_(func.coalesce(expression, false()))


def rule_sql(rule: EventRule) -> ColumnElement[bool]:
    """The events ``rule`` selects."""
    return and_(_E.type == rule.event.value, *(condition_sql(c) for c in rule.conditions))


def detractor_sql(spec: DetectionSpec) -> ColumnElement[bool]:
    return rule_sql(spec.detractors)


def _excludes(rule: EventRule, other: EventRule) -> bool:
    """Whether no event can meet both rules: the types differ, or one field must be at
    least a value above the most the other allows (a missing value meets neither)."""
    if rule.event is not other.event:
        return True
    return any(
        isinstance(low, AtLeast)
        and isinstance(high, AtMost)
        and low.field is high.field
        and low.value > high.value
        for mine in rule.conditions
        for theirs in other.conditions
        for low, high in ((mine, theirs), (theirs, mine))
    )


def moment_sql(spec: DetectionSpec) -> ColumnElement[bool]:
    """The events that are moments, contact or not (as in ``detect()``: a detractor is
    never a moment, whatever the rule for its type says). The detractor test is left
    out of a rule that already excludes detractors (promoters start above their
    scores): the database would evaluate it on every row for nothing."""
    detractor = detractor_sql(spec)
    rules = [
        rule_sql(rule.when)
        if _excludes(rule.when, spec.detractors)
        else and_(rule_sql(rule.when), _none_of(detractor))
        for rule in spec.moments
    ]
    return or_(false(), *rules)


def _detail_sql(detail: Detail) -> ColumnElement[str]:
    if detail.field is None:
        return literal(detail.text, String)
    value = func.coalesce(cast(_FIELDS[detail.field], String), "")
    return literal(detail.text, String) + value


def event_key_sql() -> ColumnElement[str]:
    """``SourceEvent.key`` (``<source>:<event_id>``), which is also the moment's id."""
    return _E.source + literal(":", String) + _E.event_id


# -- the statements of one chunk -----------------------------------------------------------


# The chunk's events that detection keeps: what one scan of the chunk wrote, and what the
# moments, the follow-ups and the counts then read instead of scanning the chunk again.
# A table of the connection's own (temporary), created and dropped inside the chunk's
# transaction, so a failed chunk leaves nothing behind. Its column types are those of
# the events it copies, so every value reaches moments and follow-ups unchanged.
_MOMENT, _DETRACTOR, _NO_CONTACT = 0, 1, 2
T_DETECTED = Table(
    "detection_chunk",
    MetaData(),
    Column("event_key", String),
    Column("kind", Integer),
    Column("type", _E.type.type),
    Column("contact_id", _E.contact_id.type),
    Column("account_id", _E.account_id.type),
    Column("occurred_at", _E.occurred_at.type),
    Column("detail", String),
    Column("score", _E.score.type),
    prefixes=["TEMPORARY"],
)
_D = T_DETECTED.c


@dataclass(frozen=True, slots=True)
class _Statements:
    """A spec's statements, compiled once per run. ``low`` and ``high`` are bound per
    chunk: the events with ``low < id <= high`` not marked by the old stage."""

    detected: Any
    moments: Any
    follow_ups: Any
    examined: Any
    leftovers: Any

    @classmethod
    def build(cls, spec: DetectionSpec, insert: Any) -> _Statements:
        chunk = and_(_E.id > bindparam("low"), _E.id <= bindparam("high"), _E.detected_at.is_(None))
        detractor = detractor_sql(spec)
        # Only the types whose moment is named otherwise are mapped; the others keep
        # their name (every moment has one of the rules' types). Detractors and moments
        # without a contact get a type and a detail too: nothing reads them.
        renamed = {
            r.when.event.value: r.moment.value
            for r in spec.moments
            if r.when.event.value != r.moment.value
        }
        moment_type: ColumnElement[str] = (
            case(renamed, value=_E.type, else_=_E.type) if renamed else _E.type
        )
        detail: ColumnElement[str] = (
            case({r.when.event.value: _detail_sql(r.detail) for r in spec.moments}, value=_E.type)
            if spec.moments
            else literal("", String)
        )
        kind = case((detractor, _DETRACTOR), (_E.contact_id.is_(None), _NO_CONTACT), else_=_MOMENT)
        # A detractor is never a moment (moment_sql), so each event has one kind.
        detected = T_DETECTED.insert().from_select(
            [c.name for c in T_DETECTED.columns],
            select(
                event_key_sql(),
                kind,
                moment_type,
                _E.contact_id,
                _E.account_id,
                _E.occurred_at,
                detail,
                _E.score,
            ).where(chunk, or_(moment_sql(spec), detractor)),
        )
        moments = (
            insert(T_MOMENTS)
            .from_select(
                [
                    "moment_id",
                    "type",
                    "contact_id",
                    "account_id",
                    "occurred_at",
                    "source_event",
                    "detail",
                    "status",
                ],
                select(
                    _D.event_key,
                    _D.type,
                    _D.contact_id,
                    _D.account_id,
                    _D.occurred_at,
                    _D.event_key,
                    _D.detail,
                    literal("new", String),
                ).where(_D.kind == _MOMENT),
            )
            .on_conflict_do_nothing()
            # SQLAlchemy keeps an INSERT's rowcount only when asked (Postgres
            # reports -1 otherwise); it is the number of new moments.
            .execution_options(preserve_rowcount=True)
        )
        follow_ups = (
            insert(T_FOLLOW_UPS)
            .from_select(
                ["source_event", "contact_id", "account_id", "score", "occurred_at"],
                select(_D.event_key, _D.contact_id, _D.account_id, _D.score, _D.occurred_at).where(
                    _D.kind == _DETRACTOR
                ),
            )
            .on_conflict_do_nothing()
        )
        # SQLite answers this one from the (detected_at, id) index alone.
        examined = select(func.count()).select_from(T_SOURCE_EVENTS).where(chunk)
        leftovers = select(
            func.count(case((_D.kind == _NO_CONTACT, 1))),
            func.count(case((_D.kind == _DETRACTOR, 1))),
        ).where(_D.kind != _MOMENT)
        return cls(detected, moments, follow_ups, examined, leftovers)


# -- the store -----------------------------------------------------------------------------


class SqlMomentsStore(LedgerBase):
    """The ``moments`` store: detection inside the database, and how far it got.

    :meth:`detect_in_database` commits chunk by chunk on a connection of its own, so
    it runs only unbound (``ledger.moments``); the other methods run either way.
    """

    def detect_in_database(
        self, spec: DetectionSpec, now: datetime, chunk_size: int = DEFAULT_CHUNK
    ) -> DetectionCounts:
        """Examine every event stored before this call and not examined yet, under ``spec``.

        Stores new moments (id: the event key) and detractor follow-ups, chunk by
        chunk. Each chunk is one transaction, with the watermark moved in it. A crash
        loses at most the chunk in progress, which the next run does again. Running
        twice, or two runs at once, stores nothing twice and examines nothing twice.
        Events stored after the call started are left to the next run, so a steady
        stream of new events cannot keep a run going.

        Unbound only: the chunks are the transactions, each committed before the next
        begins, so the call cannot join a unit of work's single transaction.

        Args:
            spec: the rules (``domain.moments.detection_spec(program)``).
            now: when the watermark moved (``source_cursors.updated_at``).
            chunk_size: event ids per transaction.

        Raises:
            ValueError: ``chunk_size`` is below 1.
            RuntimeError: the store is bound to a unit of work.
        """
        if chunk_size < 1:
            raise ValueError("chunk_size must be at least 1")
        if self._conn is not None:
            raise RuntimeError(
                "detect_in_database commits chunk by chunk: call it on ledger.moments, "
                "outside a unit of work"
            )
        statements = _Statements.build(spec, self._insert)
        examined = moments = detractors = without_contact = chunks = 0
        end: int | None = None
        with self._connect() as conn:
            while True:
                with conn.begin():
                    self._hold_off_new_events(conn)
                    low = self._watermark(conn)
                    if end is None:
                        end = conn.execute(select(func.max(_E.id))).scalar_one_or_none() or 0
                    if low >= end:
                        break
                    high = min(low + chunk_size, end)
                    bounds = {"low": low, "high": high}
                    T_DETECTED.create(conn)
                    conn.execute(statements.detected, bounds)
                    moments += conn.execute(statements.moments).rowcount
                    conn.execute(statements.follow_ups)
                    examined += conn.execute(statements.examined, bounds).scalar_one()
                    no_contact, detractor = conn.execute(statements.leftovers).one()
                    T_DETECTED.drop(conn)
                    without_contact += no_contact
                    detractors += detractor
                    self._upsert(
                        conn,
                        T_SOURCE_CURSORS,
                        [{"source": WATERMARK, "cursor": str(high), "updated_at": now}],
                        "source",
                    )
                    chunks += 1
        return DetectionCounts(examined, moments, detractors, without_contact, chunks)

    def detection_watermark(self) -> int:
        """The highest event id detection has examined (0 before the first run)."""
        with self._connect() as conn:
            return self._watermark(conn)

    def events_to_detect(self) -> int:
        """How many stored events detection has not examined yet."""
        with self._connect() as conn:
            low = self._watermark(conn)
            return int(
                conn.execute(
                    select(func.count())
                    .select_from(T_SOURCE_EVENTS)
                    .where(_E.id > low, _E.detected_at.is_(None))
                ).scalar_one()
            )

    # -- helpers ---------------------------------------------------------------------

    @staticmethod
    def _watermark(conn: Connection) -> int:
        value = conn.execute(
            select(T_SOURCE_CURSORS.c.cursor).where(T_SOURCE_CURSORS.c.source == WATERMARK)
        ).scalar_one_or_none()
        return int(value) if value is not None else 0

    def _hold_off_new_events(self, conn: Connection) -> None:
        """Make sure no event can commit under the watermark while the chunk runs (SQLite:
        ``BEGIN IMMEDIATE`` already did; PostgreSQL: see the module docstring)."""
        if self._dialect == "postgresql":
            conn.execute(text(f"LOCK TABLE {T_SOURCE_EVENTS.name} IN SHARE ROW EXCLUSIVE MODE"))
