"""The ``approvers`` store in memory: the registry, its change log, spent codes and
refused decisions."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from domain.approvers import Approver, ApproverAction, Identity, party_identities
from domain.models import Contact
from integrations.ledger.approvers import ApproverExists, UnknownApprover


class InMemoryApproversStore:
    """Approvers, as the SQL store (:class:`~integrations.ledger.approvers.SqlApprovers`)
    keeps them.

    ``contacts`` stands in for the CRM contacts the SQL store reads for ``identities``
    (contact id -> contact); a test sets it. Emails arrive normalised
    (:func:`domain.approvers.make_approver`) and, like the SQL column, are unique as given.

    Attributes:
        calls: every call made, as ``(method, arguments...)``.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.approvers: dict[str, Approver] = {}
        self.secrets: dict[str, str] = {}
        self.events: list[dict[str, Any]] = []  # approver_id, action, actor, details, at
        self.codes_used: dict[tuple[str, int], datetime] = {}
        self.attempts: dict[str, dict[str, Any]] = {}
        self.contacts: dict[str, Contact] = {}

    # -- the registry ------------------------------------------------------------------

    def add(self, approver: Approver, actor: str, now: datetime) -> None:
        """Register an approver (not yet enrolled), logged as ``added``.

        Raises:
            ApproverExists: the id or the email is taken.
        """
        self.calls.append(("add", approver, actor, now))
        taken = approver.approver_id in self.approvers or any(
            a.email == approver.email for a in self.approvers.values()
        )
        if taken:
            raise ApproverExists(
                f"an approver with the id {approver.approver_id!r} or that email exists"
            )
        # The SQL store keeps no secret on add: the approver is enrolled only by enrol.
        self.approvers[approver.approver_id] = dataclasses.replace(approver, enrolled=False)
        self._log(
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

    def enrol(self, approver_id: str, secret_encrypted: str, actor: str, now: datetime) -> None:
        """Store a new (encrypted) one-time-code secret; earlier codes stop working."""
        self.calls.append(("enrol", approver_id, actor, now))
        approver = self._known(approver_id)
        self._log(approver_id, ApproverAction.ENROLLED, actor, {}, now)
        self.secrets[approver_id] = secret_encrypted
        self.approvers[approver_id] = dataclasses.replace(
            approver, enrolled=secret_encrypted is not None
        )

    def set_active(self, approver_id: str, active: bool, actor: str, now: datetime) -> None:
        """Disable (or enable again) an approver, logged."""
        self.calls.append(("set_active", approver_id, active, actor, now))
        approver = self._known(approver_id)
        action = ApproverAction.ENABLED if active else ApproverAction.DISABLED
        self._log(approver_id, action, actor, {}, now)
        self.approvers[approver_id] = dataclasses.replace(approver, active=active)

    def get(self, approver_id: str) -> Approver | None:
        self.calls.append(("get", approver_id))
        return self.approvers.get(approver_id)

    def all(self) -> list[Approver]:
        self.calls.append(("all",))
        return [self.approvers[k] for k in sorted(self.approvers)]

    def history(self, approver_id: str) -> list[dict[str, Any]]:
        """The approver's change log, oldest first."""
        self.calls.append(("history", approver_id))
        mine = [e for e in self.events if e["approver_id"] == approver_id]
        return [
            {"action": e["action"], "actor": e["actor"], "details": e["details"], "at": e["at"]}
            for e in sorted(mine, key=lambda e: e["at"])
        ]

    def secret(self, approver_id: str) -> str | None:
        """The encrypted one-time-code secret, or None when not enrolled."""
        self.calls.append(("secret", approver_id))
        return self.secrets.get(approver_id) or None

    # -- identities --------------------------------------------------------------------

    def identities(
        self, approver: Approver, parties: Mapping[str, str | None]
    ) -> tuple[Identity, dict[str, Identity]]:
        """The approver's identity and each party's (role -> contact id), from
        ``contacts``: contact ids, email addresses and accounts."""
        self.calls.append(("identities", approver.approver_id, dict(parties)))

        known = {c: (row.email, row.account_id) for c, row in self.contacts.items()}
        return party_identities(approver, parties, known)

    # -- one-time codes and refusals -----------------------------------------------------

    def last_step(self, approver_id: str) -> int | None:
        """The latest time step of a code this approver spent."""
        self.calls.append(("last_step", approver_id))
        steps = [step for who, step in self.codes_used if who == approver_id]
        return max(steps) if steps else None

    def spend(self, approver_id: str, time_step: int, now: datetime) -> bool:
        """Mark a code's time step spent; False if it was spent already (a replay).

        Like the SQL store (whose foreign key refuses the row), a code of nobody
        registered is not spent either.
        """
        self.calls.append(("spend", approver_id, time_step, now))
        key = (approver_id, time_step)
        if approver_id not in self.approvers or key in self.codes_used:
            return False
        self.codes_used[key] = now
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
        """Keep a refused decision; an attempt already kept under ``attempt_id`` is not
        kept twice."""
        self.calls.append(
            ("record_refusal", attempt_id, reward_id, claimed_approver_id, wrong_code, now)
        )
        if attempt_id in self.attempts:
            return
        self.attempts[attempt_id] = {
            "reward_id": reward_id,
            "claimed_approver_id": claimed_approver_id[:64],
            "wrong_code": wrong_code,
            "reason": reason,
            "flow_run_id": flow_run_id,
            "at": now,
        }

    def refusal(self, attempt_id: str) -> str | None:
        self.calls.append(("refusal", attempt_id))
        attempt = self.attempts.get(attempt_id)
        return str(attempt["reason"]) if attempt else None

    def wrong_codes_since(self, approver_id: str, since: datetime) -> int:
        self.calls.append(("wrong_codes_since", approver_id, since))
        return sum(
            1
            for a in self.attempts.values()
            if a["claimed_approver_id"] == approver_id and a["wrong_code"] and a["at"] >= since
        )

    def refusals(self, reward_id: str) -> list[dict[str, Any]]:
        """The refused decisions on one reward, oldest first."""
        self.calls.append(("refusals", reward_id))
        mine = [a for a in self.attempts.values() if a["reward_id"] == reward_id]
        return [
            {k: a[k] for k in ("claimed_approver_id", "reason", "wrong_code", "at")}
            for a in sorted(mine, key=lambda a: a["at"])
        ]

    # -- internals ---------------------------------------------------------------------

    def _known(self, approver_id: str) -> Approver:
        approver = self.approvers.get(approver_id)
        if approver is None:
            raise UnknownApprover(f"no approver has the id {approver_id!r}")
        return approver

    def _log(
        self,
        approver_id: str,
        action: ApproverAction,
        actor: str,
        details: Mapping[str, Any],
        now: datetime,
    ) -> None:
        # Through JSON, as the SQL store keeps details: what comes back is what a
        # database would give back, not the caller's objects.
        self.events.append(
            {
                "approver_id": approver_id,
                "action": action.value,
                "actor": actor[:200],
                "details": json.loads(json.dumps(dict(details), sort_keys=True)),
                "at": now,
            }
        )
