"""The approvers' store: the registry, its change log, spent codes and refused decisions.

A store of its own, bound to the ledger's engine (not another mixin of ``SqlLedger``):
every change to an approver and its change-log entry are written in one transaction.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError

from domain.approvers import Approver, ApproverAction, Identity, party_identities
from domain.money import Money
from integrations.ledger.base import LedgerBase
from integrations.ledger.tables import (
    T_APPROVAL_ATTEMPTS,
    T_APPROVER_CODES_USED,
    T_APPROVER_EVENTS,
    T_APPROVERS,
    ContactRow,
)


class ApproverExists(ValueError):
    """An approver with this id or this email is already registered."""


class UnknownApprover(LookupError):
    """No approver has this id."""


class SqlApprovers(LedgerBase):
    """Approvers in the ledger database (the ``approvers`` store).

    Args:
        engine: the ledger's engine (migrated to revision 0018 or later).
        conn: the unit of work's connection, when bound to one.
    """

    # -- the registry ------------------------------------------------------------------

    def add(self, approver: Approver, actor: str, now: datetime) -> None:
        """Register an approver (not yet enrolled), logged as ``added``.

        Raises:
            ApproverExists: the id or the email is taken.
        """
        try:
            with self._begin() as conn:
                conn.execute(
                    insert(T_APPROVERS).values(
                        approver_id=approver.approver_id,
                        display_name=approver.display_name,
                        email=approver.email,
                        contact_id=approver.contact_id,
                        limit_minor=approver.limit.amount_minor,
                        limit_currency=approver.limit.currency,
                        active=approver.active,
                        demo=approver.demo,
                        secret_encrypted=None,
                        created_at=now,
                        updated_at=now,
                    )
                )
                self._log(
                    conn,
                    approver.approver_id,
                    ApproverAction.ADDED,
                    actor,
                    {
                        "display_name": approver.display_name,
                        "contact_id": approver.contact_id,
                        "limit": approver.limit.format(),
                        "demo": approver.demo,
                    },
                    now,
                )
        except IntegrityError:
            raise ApproverExists(
                f"an approver with the id {approver.approver_id!r} or that email exists"
            ) from None

    def enrol(self, approver_id: str, secret_encrypted: str, actor: str, now: datetime) -> None:
        """Store a new (encrypted) one-time-code secret; earlier codes stop working."""
        self._change(
            approver_id,
            {"secret_encrypted": secret_encrypted},
            ApproverAction.ENROLLED,
            actor,
            {},
            now,
        )

    def set_active(self, approver_id: str, active: bool, actor: str, now: datetime) -> None:
        """Disable (or enable again) an approver, logged."""
        action = ApproverAction.ENABLED if active else ApproverAction.DISABLED
        self._change(approver_id, {"active": active}, action, actor, {}, now)

    def get(self, approver_id: str) -> Approver | None:
        with self._connect() as conn:
            row = (
                conn.execute(select(T_APPROVERS).where(T_APPROVERS.c.approver_id == approver_id))
                .mappings()
                .first()
            )
        return _approver(row) if row else None

    def all(self) -> list[Approver]:
        with self._connect() as conn:
            rows = conn.execute(select(T_APPROVERS).order_by(T_APPROVERS.c.approver_id))
            return [_approver(row) for row in rows.mappings()]

    def history(self, approver_id: str) -> list[dict[str, Any]]:
        """The approver's change log, oldest first."""
        with self._connect() as conn:
            rows = conn.execute(
                select(
                    T_APPROVER_EVENTS.c.action,
                    T_APPROVER_EVENTS.c.actor,
                    T_APPROVER_EVENTS.c.details,
                    T_APPROVER_EVENTS.c.at,
                )
                .where(T_APPROVER_EVENTS.c.approver_id == approver_id)
                .order_by(T_APPROVER_EVENTS.c.at, T_APPROVER_EVENTS.c.event_id)
            ).mappings()
            return [dict(row) | {"details": json.loads(row["details"])} for row in rows]

    def secret(self, approver_id: str) -> str | None:
        """The encrypted one-time-code secret, or None when not enrolled."""
        with self._connect() as conn:
            value = conn.execute(
                select(T_APPROVERS.c.secret_encrypted).where(
                    T_APPROVERS.c.approver_id == approver_id
                )
            ).scalar_one_or_none()
        return str(value) if value else None

    # -- identities --------------------------------------------------------------------

    def identities(
        self, approver: Approver, parties: Mapping[str, str | None]
    ) -> tuple[Identity, dict[str, Identity]]:
        """The approver's identity and each party's (role -> contact id), from the CRM
        contacts in the ledger: contact ids, email addresses and accounts."""
        wanted = {c for c in [approver.contact_id, *parties.values()] if c}
        with self._connect() as conn:
            known = {
                row.contact_id: (row.email, row.account_id)
                for row in conn.execute(
                    select(ContactRow.contact_id, ContactRow.email, ContactRow.account_id).where(
                        ContactRow.contact_id.in_(sorted(wanted))
                    )
                )
            }

        return party_identities(approver, parties, known)

    # -- one-time codes and refusals -----------------------------------------------------

    def last_step(self, approver_id: str) -> int | None:
        """The latest time step of a code this approver spent."""
        with self._connect() as conn:
            value = conn.execute(
                select(func.max(T_APPROVER_CODES_USED.c.time_step)).where(
                    T_APPROVER_CODES_USED.c.approver_id == approver_id
                )
            ).scalar_one_or_none()
        return int(value) if value is not None else None

    def spend(self, approver_id: str, time_step: int, now: datetime) -> bool:
        """Mark a code's time step spent; False if it was spent already (a replay)."""
        try:
            with self._begin() as conn:
                conn.execute(
                    insert(T_APPROVER_CODES_USED).values(
                        approver_id=approver_id, time_step=time_step, used_at=now
                    )
                )
        except IntegrityError:
            return False
        return True

    def record_refusal(
        self,
        attempt_id: str,
        reward_id: str,
        claimed_approver_id: str,
        reason: str,
        wrong_code: bool,
        flow_run_id: str | None,
        now: datetime,
    ) -> None:
        """Keep a refused decision for the auditors (and the wrong-code lockout); an
        attempt already kept under ``attempt_id`` is not kept twice."""
        if self.refusal(attempt_id) is not None:
            return
        with self._begin() as conn:
            conn.execute(
                insert(T_APPROVAL_ATTEMPTS).values(
                    attempt_id=attempt_id,
                    reward_id=reward_id,
                    claimed_approver_id=claimed_approver_id[:64],
                    wrong_code=wrong_code,
                    reason=reason,
                    flow_run_id=flow_run_id,
                    at=now,
                )
            )

    def refusal(self, attempt_id: str) -> str | None:
        with self._connect() as conn:
            reason = conn.execute(
                select(T_APPROVAL_ATTEMPTS.c.reason).where(
                    T_APPROVAL_ATTEMPTS.c.attempt_id == attempt_id
                )
            ).scalar_one_or_none()
        return str(reason) if reason is not None else None

    def wrong_codes_since(self, approver_id: str, since: datetime) -> int:
        with self._connect() as conn:
            return int(
                conn.execute(
                    select(func.count()).where(
                        T_APPROVAL_ATTEMPTS.c.claimed_approver_id == approver_id,
                        T_APPROVAL_ATTEMPTS.c.wrong_code.is_(True),
                        T_APPROVAL_ATTEMPTS.c.at >= since,
                    )
                ).scalar_one()
            )

    def refusals(self, reward_id: str) -> list[dict[str, Any]]:
        """The refused decisions on one reward, oldest first."""
        with self._connect() as conn:
            rows = conn.execute(
                select(
                    T_APPROVAL_ATTEMPTS.c.claimed_approver_id,
                    T_APPROVAL_ATTEMPTS.c.reason,
                    T_APPROVAL_ATTEMPTS.c.wrong_code,
                    T_APPROVAL_ATTEMPTS.c.at,
                )
                .where(T_APPROVAL_ATTEMPTS.c.reward_id == reward_id)
                .order_by(T_APPROVAL_ATTEMPTS.c.at)
            ).mappings()
            return [dict(row) for row in rows]

    # -- internals ---------------------------------------------------------------------

    def _change(
        self,
        approver_id: str,
        values: Mapping[str, Any],
        action: ApproverAction,
        actor: str,
        details: Mapping[str, Any],
        now: datetime,
    ) -> None:
        with self._begin() as conn:
            known = conn.execute(
                select(T_APPROVERS.c.approver_id).where(T_APPROVERS.c.approver_id == approver_id)
            ).first()
            if known is None:
                raise UnknownApprover(f"no approver has the id {approver_id!r}")
            # The log row first: the database refuses the change without it (0025).
            self._log(conn, approver_id, action, actor, details, now)
            conn.execute(
                update(T_APPROVERS)
                .where(T_APPROVERS.c.approver_id == approver_id)
                .values(**values, updated_at=now)
            )

    @staticmethod
    def _log(
        conn: Any,
        approver_id: str,
        action: ApproverAction,
        actor: str,
        details: Mapping[str, Any],
        now: datetime,
    ) -> None:
        conn.execute(
            insert(T_APPROVER_EVENTS).values(
                event_id=str(uuid.uuid4()),
                approver_id=approver_id,
                action=action.value,
                actor=actor[:200],
                details=json.dumps(dict(details), sort_keys=True),
                at=now,
            )
        )


def _approver(row: Any) -> Approver:
    return Approver(
        approver_id=row["approver_id"],
        display_name=row["display_name"],
        email=row["email"],
        contact_id=row["contact_id"],
        limit=Money(int(row["limit_minor"]), row["limit_currency"]),
        active=bool(row["active"]),
        demo=bool(row["demo"]),
        enrolled=row["secret_encrypted"] is not None,
    )
