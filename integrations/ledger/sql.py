"""The ledger on SQLAlchemy: every stage's reads and writes, each write one transaction.

Writes are idempotent: inserts ignore rows that already exist (the unique constraints
in :mod:`integrations.ledger.tables` decide what "already" means), and status changes
are conditional (``... WHERE status IN (expected)``) so two runs racing on the same row
cannot both move it. Money only ever enters through ``ledger_entries`` inserts.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Table,
    bindparam,
    exists,
    func,
    literal_column,
    select,
    update,
)

from domain.models import (
    Ask,
    AskDecision,
    Contact,
    ContactHistory,
    EmailOutcome,
    EmailResult,
    EventType,
    Moment,
    MomentType,
    NpsAnswer,
)
from integrations.ledger.base import (
    LedgerBase,
    chunks,
    contact_from_row,
    pairs,
)
from integrations.ledger.discounts import DiscountLedger
from integrations.ledger.links import LinkLedger
from integrations.ledger.tables import (
    T_ASKS,
    T_MOMENTS,
    T_NOTIFICATIONS,
    T_SOURCE_EVENTS,
    AccountRow,
    AskRow,
    ContactRow,
    EmailOutboxRow,
    MomentRow,
    NotificationRow,
    ReferralCodeRow,
    SuppressionRow,
)
from integrations.ledger.uow import SqlStores
from integrations.ledger.webhooks import WebhookLedger

_MESSAGE_TABLES: dict[str, Table] = {"ask": T_ASKS, "notification": T_NOTIFICATIONS}


class SqlLedger(
    SqlStores,
    WebhookLedger,
    DiscountLedger,
    LinkLedger,
    LedgerBase,
):
    """The ledger database behind SQLAlchemy (SQLite or PostgreSQL).

    The ledger is becoming a factory of area stores (:mod:`domain.stores`): each store
    is an attribute (``ledger.approvers``), each call its own transaction, and
    :meth:`transaction` yields the same stores bound to one transaction. The areas not
    yet moved into stores are still mixins of :class:`LedgerBase` among the bases.
    """

    def __init__(self, engine: Engine) -> None:
        LedgerBase.__init__(self, engine)
        SqlStores.__init__(self, engine)

    @contextmanager
    def transaction(self) -> Iterator[SqlStores]:
        """One unit of work: the stores it yields share one transaction, committed when
        the block ends, rolled back when it raises."""
        with self.engine.begin() as conn:
            yield SqlStores(self.engine, conn)

    # -- asks ------------------------------------------------------------------------

    def pending_moments(self, as_of: datetime, limit: int) -> list[Moment]:
        with self._connect() as conn:
            rows = conn.execute(
                select(T_MOMENTS)
                .where(T_MOMENTS.c.status == "new", T_MOMENTS.c.occurred_at <= as_of)
                .order_by(T_MOMENTS.c.occurred_at, T_MOMENTS.c.moment_id)
                .limit(limit)
            ).mappings()
            return [
                Moment(
                    moment_id=r["moment_id"],
                    type=MomentType(r["type"]),
                    contact_id=r["contact_id"],
                    account_id=r["account_id"],
                    occurred_at=r["occurred_at"],
                    source_event=r["source_event"],
                    detail=r["detail"],
                )
                for r in rows
            ]

    def contacts(self, contact_ids: Iterable[str]) -> dict[str, Contact]:
        ids = sorted(set(contact_ids))
        found: dict[str, Contact] = {}
        with self._connect() as conn:
            for chunk in chunks(ids):
                for row in conn.execute(
                    select(ContactRow.__table__).where(ContactRow.contact_id.in_(chunk))
                ).mappings():
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
                    .where(AskRow.contact_id.in_(chunk), AskRow.status != "failed")
                    .group_by(AskRow.contact_id),
                )
                suppressed = set(
                    conn.execute(
                        select(SuppressionRow.contact_id).where(
                            SuppressionRow.contact_id.in_(chunk)
                        )
                    ).scalars()
                )
                accounts = pairs(
                    conn,
                    select(ContactRow.contact_id, ContactRow.account_id).where(
                        ContactRow.contact_id.in_(chunk)
                    ),
                )
                account_ids = sorted({a for a in accounts.values() if a})
                since = pairs(
                    conn,
                    select(AccountRow.account_id, AccountRow.customer_since).where(
                        AccountRow.account_id.in_(account_ids)
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
                        opened.c.account_id.in_(account_ids),
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

    @staticmethod
    def _nps_answers(
        conn: Connection, contact_ids: Sequence[str], as_of: datetime, since: datetime | None
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
            e.contact_id.in_(contact_ids),
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
                            ReferralCodeRow.contact_id.in_(chunk)
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

    def record_ask_decisions(
        self,
        decisions: Sequence[AskDecision],
        new_codes: Mapping[str, str],
        as_of: datetime,
        now: datetime,
    ) -> list[Ask]:
        """Mint missing codes, queue asks, and close every decided moment, atomically.

        A code minted concurrently by another run wins (one code per contact); the asks
        use whatever code the ledger holds after the insert.
        """
        with self._begin() as conn:
            self._insert_ignore(
                conn,
                ReferralCodeRow,
                [
                    {"code": code, "contact_id": contact, "created_at": now}
                    for contact, code in new_codes.items()
                ],
                ReferralCodeRow.code,
            )
            asking = [d.moment for d in decisions if d.ask]
            contact_ids = sorted({m.contact_id for m in asking})
            codes: dict[str, str] = {}
            for chunk in chunks(contact_ids):
                codes.update(
                    pairs(
                        conn,
                        select(ReferralCodeRow.contact_id, ReferralCodeRow.code).where(
                            ReferralCodeRow.contact_id.in_(chunk)
                        ),
                    )
                )
            asks = [Ask.for_moment(m, codes[m.contact_id]) for m in asking]
            inserted = set(
                self._insert_ignore(
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
                        for a in asks
                    ],
                    AskRow.ask_id,
                )
            )
            # One UPDATE per outcome and chunk rather than per moment: a statement per
            # decided moment was most of the stage's time at scale. Only the first
            # decision of a moment counts, as when each moment was updated in turn (the
            # later updates found it no longer "new").
            #
            # The status test is written ``status || '' = 'new'`` so that SQLite cannot
            # serve it from ix_moments_status (status, occurred_at): without statistics
            # its planner prefers that index to the primary key for an IN list, and
            # then walks every pending moment for each chunk (38 s of a 48 s stage, at
            # 80,000 pending moments). Postgres looks the ids up by primary key anyway.
            still_new = T_MOMENTS.c.status.concat("") == "new"
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
            for (moment_status, reason), moment_ids in closing.items():
                for chunk in chunks(moment_ids):
                    conn.execute(
                        update(T_MOMENTS)
                        .where(T_MOMENTS.c.moment_id.in_(chunk), still_new)
                        .values(status=moment_status, skip_reason=reason, decided_at=now)
                    )
        return [a for a in asks if a.ask_id in inserted]

    def asks_to_send(self, after: str, limit: int) -> list[tuple[Ask, Contact, str]]:
        """Queued asks with their contact and the moment's detail, by id after ``after``.

        Paging by id lets one pass visit each queued ask once even when some go back
        to ``queued`` for a retry in a later run.
        """
        with self._connect() as conn:
            rows = conn.execute(
                select(AskRow.__table__, ContactRow.__table__, MomentRow.detail)
                .join(ContactRow, ContactRow.contact_id == AskRow.contact_id)
                .join(MomentRow, MomentRow.moment_id == AskRow.moment_id)
                .where(AskRow.status == "queued", AskRow.ask_id > after)
                .order_by(AskRow.ask_id)
                .limit(limit)
            ).mappings()
            return [
                (
                    Ask(
                        ask_id=r["ask_id"],
                        moment_id=r["moment_id"],
                        contact_id=r["contact_id"],
                        referral_code=r["referral_code"],
                        moment_type=MomentType(r["moment_type"]),
                    ),
                    contact_from_row(r),
                    r["detail"],
                )
                for r in rows
            ]

    # -- email bookkeeping (asks and notifications share one status machine) ---------

    def write_outbox(self, rows: Sequence[Mapping[str, Any]]) -> int:
        """The local email backend: keep each message once, by its message id."""
        with self._begin() as conn:
            return len(self._insert_ignore(conn, EmailOutboxRow, rows, EmailOutboxRow.message_id))

    def outbox(self, limit: int = 20) -> list[dict[str, Any]]:
        with self._connect() as conn:
            return [
                dict(r)
                for r in conn.execute(
                    select(
                        EmailOutboxRow.message_id,
                        EmailOutboxRow.kind,
                        EmailOutboxRow.to_name,
                        EmailOutboxRow.subject,
                        EmailOutboxRow.body,
                    )
                    .order_by(EmailOutboxRow.created_at, EmailOutboxRow.message_id)
                    .limit(limit)
                ).mappings()
            ]

    def mark_sending(self, kind: str, message_ids: Sequence[str], now: datetime) -> list[str]:
        """Claim queued messages for sending; returns those this caller claimed.

        A message left in ``sending`` by a crash is never sent again automatically:
        :meth:`expire_sending` marks it ``unknown`` for a person to check, because the
        email may already have gone out and a second ask is worse than a missing one.
        ``sent_at`` holds the claim time while the message is ``sending``.
        """
        table = _MESSAGE_TABLES[kind]
        pk = table.primary_key.columns.values()[0]
        claimed: list[str] = []
        with self._begin() as conn:
            for chunk in chunks(message_ids):
                claimed += (
                    conn.execute(
                        update(table)
                        .where(pk.in_(chunk), table.c.status == "queued")
                        .values(status="sending", sent_at=now)
                        .returning(pk)
                    )
                    .scalars()
                    .all()
                )
        return claimed

    def expire_sending(self, kind: str, claimed_before: datetime) -> int:
        """Mark ``unknown`` the messages claimed before ``claimed_before`` and never
        settled: their sender died between the call and the commit."""
        table = _MESSAGE_TABLES[kind]
        with self._begin() as conn:
            return conn.execute(
                update(table)
                .where(table.c.status == "sending", table.c.sent_at < claimed_before)
                .values(status="unknown")
            ).rowcount

    def record_email_results(
        self, kind: str, results: Sequence[EmailResult], now: datetime
    ) -> None:
        table = _MESSAGE_TABLES[kind]
        pk = table.primary_key.columns.values()[0]
        status = {
            EmailOutcome.ACCEPTED: "accepted",
            EmailOutcome.FAILED: "failed",
            EmailOutcome.RETRYABLE: "queued",
        }
        if not results:
            return
        # One statement run for every row (executemany), not one statement per row.
        stmt = (
            update(table)
            .where(pk == bindparam("m_id"), table.c.status == "sending")
            .values(
                status=bindparam("m_status"),
                provider_ref=bindparam("m_ref"),
                error=bindparam("m_error"),
                sent_at=bindparam("m_sent"),
            )
        )
        rows = [
            {
                "m_id": r.message_id,
                "m_status": status[r.outcome],
                "m_ref": r.provider_ref,
                "m_error": r.error[:512] if r.error else None,
                "m_sent": now if r.outcome is EmailOutcome.ACCEPTED else None,
            }
            for r in results
        ]
        with self._begin() as conn:
            conn.execute(stmt, rows)

    def queue_notifications(self, rows: Sequence[Mapping[str, Any]], now: datetime) -> int:
        with self._begin() as conn:
            return self._queue_notifications(conn, rows, now)

    def notifications_to_send(
        self, after: str, limit: int
    ) -> list[tuple[str, str, Contact, dict[str, Any]]]:
        """Queued notifications (id, kind, contact, data), by id after ``after``."""
        with self._connect() as conn:
            rows = conn.execute(
                select(NotificationRow.__table__, ContactRow.__table__)
                .join(ContactRow, ContactRow.contact_id == NotificationRow.contact_id)
                .where(
                    NotificationRow.status == "queued",
                    NotificationRow.notification_id > after,
                )
                .order_by(NotificationRow.notification_id)
                .limit(limit)
            ).mappings()
            return [
                (r["notification_id"], r["kind"], contact_from_row(r), dict(r["data"]))
                for r in rows
            ]

    def queued_emails(self, kind: str) -> int:
        """How many asks (``kind`` ``"ask"``) or notifications (any other) wait to be sent."""
        row = AskRow if kind == "ask" else NotificationRow
        with self._connect() as conn:
            return int(
                conn.execute(
                    select(func.count()).select_from(row).where(row.status == "queued")
                ).scalar_one()
            )

    def suppressed(self, contact_ids: Iterable[str]) -> set[str]:
        """Those of ``contact_ids`` on the suppression list."""
        ids = sorted(set(contact_ids))
        found: set[str] = set()
        with self._connect() as conn:
            for chunk in chunks(ids):
                found.update(
                    conn.execute(
                        select(SuppressionRow.contact_id).where(
                            SuppressionRow.contact_id.in_(chunk)
                        )
                    ).scalars()
                )
        return found

    def suppress(self, contact_ids: Sequence[str], reason: str, now: datetime) -> int:
        with self._begin() as conn:
            return len(
                self._insert_ignore(
                    conn,
                    SuppressionRow,
                    [{"contact_id": c, "reason": reason, "created_at": now} for c in contact_ids],
                    SuppressionRow.contact_id,
                )
            )
