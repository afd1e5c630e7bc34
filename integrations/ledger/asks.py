"""The ``asks`` store: the moments waiting for a decision, what deciding them reads,
and the asks queued.

Typed by :class:`domain.stores.asks.AskStore`. Deciding a batch is the use case
:func:`tasks.use_cases.asks.record_ask_decisions`: in one unit of work it mints the
missing codes (:meth:`SqlAskStore.add_codes`), queues the asks
(:meth:`SqlAskStore.queue_asks`) and closes the moments
(:meth:`SqlAskStore.close_moments`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

from sqlalchemy import Connection, exists, func, literal_column, or_, select, update

from domain.models import (
    Ask,
    AskDecision,
    Contact,
    ContactHistory,
    EventType,
    Moment,
    MomentType,
    NpsAnswer,
    ReferrerType,
    SkipReason,
)
from domain.shards import Shard
from integrations.ledger.base import LedgerBase, chunks, contact_from_row, not_indexed, pairs
from integrations.ledger.shards import in_shard
from integrations.ledger.tables import (
    T_CONTACTS,
    T_MOMENTS,
    T_SOURCE_EVENTS,
    AccountRow,
    AskRow,
    ContactRow,
    MomentRow,
    ReferralCodeRow,
    SuppressionRow,
)

#: Moment ids per ``UPDATE`` when closing: sent as one parameter, so any size works;
#: bounded only to keep a statement's parameter a few hundred KB.
CLOSE_CHUNK = 20_000


class SqlAskStore(LedgerBase):
    """Moments to decide, contacts and their history, codes, and queued asks."""

    def pending_moments(
        self, as_of: datetime, limit: int, after: tuple[datetime, str] | None = None
    ) -> list[Moment]:
        m = T_MOMENTS.c
        # The status as a literal: only then do SQLite and PostgreSQL see that the
        # partial index ix_moments_pending (occurred_at, moment_id) holds every row
        # asked for, already in that order.
        query = select(
            m.moment_id, m.type, m.contact_id, m.account_id, m.occurred_at, m.source_event, m.detail
        ).where(m.status == literal_column("'new'"), m.occurred_at <= as_of)
        if after is not None:
            # Written so that the index still bounds the range.
            at, moment_id = after
            query = query.where(
                m.occurred_at >= at, or_(m.occurred_at > at, m.moment_id > moment_id)
            )
        with self._connect() as conn:
            rows = conn.execute(query.order_by(m.occurred_at, m.moment_id).limit(limit))
            # Only the columns a moment has, fetched at once (fetchall) as plain rows:
            # the per-row fetch and mapping were most of the cost of a page.
            return [
                Moment(
                    moment_id=moment_id,
                    type=MomentType(type_),
                    contact_id=contact_id,
                    account_id=account_id,
                    occurred_at=occurred_at,
                    source_event=source_event,
                    detail=detail,
                )
                for (
                    moment_id,
                    type_,
                    contact_id,
                    account_id,
                    occurred_at,
                    source_event,
                    detail,
                ) in rows.all()
            ]

    def contacts(self, contact_ids: Iterable[str]) -> dict[str, Contact]:
        ids = sorted(set(contact_ids))
        found: dict[str, Contact] = {}
        # What a Contact holds (not updated_at: a datetime to convert per row for nothing).
        columns = [c for c in T_CONTACTS.c if c.name != "updated_at"]
        with self._connect() as conn:
            for chunk in chunks(ids):
                query = select(*columns).where(self._among(ContactRow.contact_id, chunk))
                for row in conn.execute(query).mappings().all():
                    found[row["contact_id"]] = contact_from_row(row)
        return found

    def histories(
        self,
        contact_ids: Iterable[str],
        as_of: datetime,
        blocking_priorities: Sequence[str],
        nps_since: datetime | None = None,
    ) -> dict[str, ContactHistory]:
        """Last ask, suppression, open blocking tickets, tenure and NPS answers, per contact.

        Args:
            contact_ids: the contacts.
            as_of: the decision's time: later tickets and answers have not happened yet.
            blocking_priorities: ticket priorities that block an ask while open.
            nps_since: the oldest NPS answer worth reading
                (``domain.eligibility.nps_answers_since``); None reads every answer up
                to ``as_of``. Which answer counts is the domain's to decide, so this
                only ever narrows what is read, never what the rule sees inside it.
        """
        ids = sorted(set(contact_ids))
        result: dict[str, ContactHistory] = {}
        with self._connect() as conn:
            for chunk in chunks(ids):
                answers = self._nps_answers(conn, chunk, as_of, nps_since)
                last_asked = pairs(
                    conn,
                    select(AskRow.contact_id, func.max(AskRow.created_at))
                    .where(self._among(AskRow.contact_id, chunk), AskRow.status != "failed")
                    .group_by(AskRow.contact_id),
                )
                suppressed = set(
                    conn.execute(
                        select(SuppressionRow.contact_id).where(
                            self._among(SuppressionRow.contact_id, chunk)
                        )
                    ).scalars()
                )
                accounts = pairs(
                    conn,
                    select(ContactRow.contact_id, ContactRow.account_id).where(
                        self._among(ContactRow.contact_id, chunk)
                    ),
                )
                account_ids = sorted({a for a in accounts.values() if a})
                since = pairs(
                    conn,
                    select(AccountRow.account_id, AccountRow.customer_since).where(
                        self._among(AccountRow.account_id, account_ids)
                    ),
                )
                opened = T_SOURCE_EVENTS.alias("opened")
                resolved = T_SOURCE_EVENTS.alias("resolved")
                open_tickets = pairs(
                    conn,
                    select(opened.c.account_id, func.count())
                    .where(
                        opened.c.type == EventType.TICKET_OPENED.value,
                        opened.c.priority.in_(list(blocking_priorities)),
                        self._among(opened.c.account_id, account_ids),
                        opened.c.occurred_at <= as_of,
                        ~exists().where(
                            resolved.c.type == EventType.TICKET_RESOLVED.value,
                            resolved.c.account_id == opened.c.account_id,
                            resolved.c.ticket_id == opened.c.ticket_id,
                            resolved.c.occurred_at <= as_of,
                        ),
                    )
                    .group_by(opened.c.account_id),
                )
                for contact_id in chunk:
                    account = accounts.get(contact_id)
                    result[contact_id] = ContactHistory(
                        last_asked_at=last_asked.get(contact_id),
                        suppressed=contact_id in suppressed,
                        open_high_priority_tickets=open_tickets.get(account, 0) if account else 0,
                        customer_since=since.get(account) if account else None,
                        nps_answers=tuple(answers.get(contact_id, ())),
                    )
        return result

    def _nps_answers(
        self, conn: Connection, contact_ids: Sequence[str], as_of: datetime, since: datetime | None
    ) -> dict[str, list[NpsAnswer]]:
        """The NPS answers of ``contact_ids`` from ``since`` to ``as_of``: the events
        ``domain.eligibility.nps_answer`` reads as answers (scored NPS responses).

        Every answer in the span, not only the latest: picking the one that counts
        (latest, and at equal times the lowest score) is the domain's rule.
        ``tests/integration/test_detractor_asks.py`` checks on random answers that the
        decisions made on these are the domain's on every event.
        """
        e = T_SOURCE_EVENTS.c
        query = select(e.contact_id, e.score, e.occurred_at).where(
            self._among(e.contact_id, contact_ids),
            # A literal, not a parameter: only then do SQLite and PostgreSQL see that
            # the partial index ix_source_events_nps_answers holds every row asked for.
            e.type == literal_column(f"'{EventType.NPS_RESPONSE.value}'"),
            e.score.is_not(None),
            e.occurred_at <= as_of,
        )
        if since is not None:
            query = query.where(e.occurred_at >= since)
        found: dict[str, list[NpsAnswer]] = {}
        for contact_id, score, answered_at in conn.execute(query):
            found.setdefault(contact_id, []).append(NpsAnswer(score, answered_at))
        return found

    def codes_for(self, contact_ids: Iterable[str]) -> dict[str, str]:
        ids = sorted(set(contact_ids))
        codes: dict[str, str] = {}
        with self._connect() as conn:
            for chunk in chunks(ids):
                codes.update(
                    pairs(
                        conn,
                        select(ReferralCodeRow.contact_id, ReferralCodeRow.code).where(
                            self._among(ReferralCodeRow.contact_id, chunk)
                        ),
                    )
                )
        return codes

    def asked_contacts(self, until: datetime) -> list[str]:
        """Contacts asked at or before ``until`` (asks are dated by their decision time)."""
        with self._connect() as conn:
            return list(
                conn.execute(
                    select(AskRow.contact_id)
                    .where(AskRow.created_at <= until)
                    .distinct()
                    .order_by(AskRow.contact_id)
                ).scalars()
            )

    def account_domains(self, account_ids: Iterable[str]) -> dict[str, str]:
        ids = sorted(set(account_ids))
        found: dict[str, str] = {}
        with self._connect() as conn:
            for chunk in chunks(ids):
                for account_id, domain in conn.execute(
                    select(AccountRow.account_id, AccountRow.domain).where(
                        AccountRow.account_id.in_(chunk)
                    )
                ).all():
                    if domain:
                        found[account_id] = domain
        return found

    def add_codes(self, new_codes: Mapping[str, str], now: datetime) -> int:
        """Store new referral codes (contact id -> code); a contact's code minted
        concurrently by another run wins (one code per contact). How many were new."""
        with self._begin() as conn:
            return len(
                self._insert_ignore(
                    conn,
                    ReferralCodeRow,
                    [
                        {"code": code, "contact_id": contact, "created_at": now}
                        for contact, code in new_codes.items()
                    ],
                    ReferralCodeRow.code,
                )
            )

    def queue_asks(self, asks: Sequence[Ask], as_of: datetime) -> list[str]:
        """Queue asks, dated ``as_of`` (the decision's time), each once by its id; the
        ids queued now."""
        # In id order: asks are sent by id, a page of 1,000 at a time, and each is
        # updated twice (claimed, then settled). Rows lie in the order they were
        # inserted, so a batch inserted in id order puts the asks one page sends
        # side by side, a few per batch: claiming 1,000 of 100,000 asks queued in
        # batches of 1,000 wrote 435 pages to SQLite's log instead of 1,145.
        with self._begin() as conn:
            return self._insert_ignore(
                conn,
                AskRow,
                [
                    {
                        "ask_id": a.ask_id,
                        "moment_id": a.moment_id,
                        "contact_id": a.contact_id,
                        "moment_type": a.moment_type.value,
                        "referral_code": a.referral_code,
                        "status": "queued",
                        "created_at": as_of,
                    }
                    for a in sorted(asks, key=lambda a: a.ask_id)
                ],
                AskRow.ask_id,
            )

    def close_moments(self, decisions: Sequence[AskDecision], now: datetime) -> None:
        """Mark each decided moment still ``new`` as ``asked`` or ``skipped`` (with the
        reason); only the first decision of a moment counts."""
        # One UPDATE per outcome and chunk rather than per moment: a statement per
        # decided moment was most of the stage's time at scale. Only the first
        # decision of a moment counts, as when each moment was updated in turn (the
        # later updates found it no longer "new").
        outcomes: dict[str, tuple[str, str | None]] = {}
        for decision in decisions:
            outcomes.setdefault(
                decision.moment.moment_id,
                (
                    "asked" if decision.ask else "skipped",
                    decision.reason.value if decision.reason else None,
                ),
            )
        closing: dict[tuple[str, str | None], list[str]] = {}
        for moment_id, outcome in outcomes.items():
            closing.setdefault(outcome, []).append(moment_id)
        self._close(closing, now)

    def skip_moments(self, skipped: Mapping[SkipReason, Sequence[str]], now: datetime) -> None:
        """Mark the moments still ``new`` among ``skipped`` (reason -> moment ids)
        ``skipped`` with their reason: decided moments held by id only, to close many
        at once.

        In one transaction: its changed pages are written once, at its end. Closing
        650,000 moments a commit per 20,000 wrote 2.6 GB where one commit wrote 413 MB
        (six times the time): each commit rewrote most of ix_moments_pending.
        """
        self._close({("skipped", r.value): list(ids) for r, ids in skipped.items()}, now)

    def _close(
        self, closing: Mapping[tuple[str, str | None], Sequence[str]], now: datetime
    ) -> None:
        """Set (status, skip reason) on the moments listed under it that are still new."""
        # Kept off ix_moments_pending (the moments whose status is 'new') on SQLite:
        # without statistics its planner may prefer such an index to the primary
        # key for an IN list, and then walk every pending moment for each chunk
        # (38 s of a 48 s stage, at 80,000 pending moments, with the index of
        # migration 0001). See not_indexed.
        still_new = not_indexed(T_MOMENTS.c.status) == "new"
        with self._begin() as conn:
            for (moment_status, reason), moment_ids in closing.items():
                # In id order, in large chunks (one parameter each): a large close
                # then rewrites each page of the table once, in order.
                for chunk in chunks(sorted(moment_ids), CLOSE_CHUNK):
                    conn.execute(
                        update(T_MOMENTS)
                        .where(self._among(T_MOMENTS.c.moment_id, chunk), still_new)
                        .values(status=moment_status, skip_reason=reason, decided_at=now)
                    )

    def asks_to_send(
        self, after: str, limit: int, shard: Shard | None = None
    ) -> list[tuple[Ask, Contact, str]]:
        """Queued asks with their contact and the moment's detail, by id after ``after``.

        Paging by id lets one pass visit each queued ask once even when some go back
        to ``queued`` for a retry in a later run.
        """
        with self._connect() as conn:
            # Only the columns an ask email needs, read by position: this runs for every
            # ask sent, and mappings of whole rows cost more than the query itself (as
            # do enum lookups by value, hence the dicts).
            moment_types = {t.value: t for t in MomentType}
            referrer_types = {t.value: t for t in ReferrerType}
            rows = conn.execute(
                select(
                    AskRow.ask_id,
                    AskRow.moment_id,
                    AskRow.contact_id,
                    AskRow.referral_code,
                    AskRow.moment_type,
                    ContactRow.account_id,
                    ContactRow.name,
                    ContactRow.email,
                    ContactRow.referrer_type,
                    ContactRow.opted_out,
                    ContactRow.stripe_customer_id,
                    ContactRow.stripe_account_id,
                    MomentRow.detail,
                )
                .join(ContactRow, ContactRow.contact_id == AskRow.contact_id)
                .join(MomentRow, MomentRow.moment_id == AskRow.moment_id)
                .where(AskRow.status == "queued", AskRow.ask_id > after)
                .where(in_shard(AskRow.contact_id, shard))
                .order_by(AskRow.ask_id)
                .limit(limit)
            ).tuples()
            return [
                (
                    Ask(ask_id, moment_id, contact_id, code, moment_types[moment_type]),
                    Contact(
                        contact_id=contact_id,
                        account_id=account_id,
                        name=name,
                        email=email,
                        referrer_type=referrer_types[referrer_type],
                        opted_out=bool(opted_out),
                        stripe_customer_id=customer,
                        stripe_account_id=connected,
                    ),
                    detail,
                )
                for (
                    ask_id,
                    moment_id,
                    contact_id,
                    code,
                    moment_type,
                    account_id,
                    name,
                    email,
                    referrer_type,
                    opted_out,
                    customer,
                    connected,
                    detail,
                ) in rows
            ]
