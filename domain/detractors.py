"""Detractors reach a person: what a hand-off says, and the CRM port it goes through.

A detractor (an NPS answer of 0-6) is never asked to refer; it is listed in the
ledger's follow-ups and handed on once to the detractor owner (an email) and, with a
CRM configured, as a task on the contact. What the hand-off carries is the least a
person needs to act: the contact's name and id, the account, the score and when it was
given. No email address: the owner looks the person up in the CRM.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Literal, Protocol

NO_CONTACT = "no contact on record"


@dataclass(frozen=True, slots=True)
class DetractorFollowUp:
    """One detractor follow-up to hand on.

    Attributes:
        source_event: the follow-up's key (the NPS answer's source event key).
        contact_id: the contact who answered, when the source named one.
        contact_name: their name, when the ledger knows the contact.
        account_id: their account, when known.
        account_name: the account's name, when the ledger knows it.
        score: the NPS score, 0-6.
        occurred_at: when they answered.
    """

    source_event: str
    contact_id: str | None
    contact_name: str | None
    account_id: str | None
    account_name: str | None
    score: int
    occurred_at: datetime

    @property
    def who(self) -> str:
        """The contact by name and id, or what is missing."""
        if self.contact_id is None:
            return NO_CONTACT
        name = (self.contact_name or "").strip() or "unnamed contact"
        return f"{name} ({self.contact_id})"

    @property
    def account(self) -> str:
        """The account by name and id, or ``-``."""
        if self.account_id is None:
            return "-"
        name = (self.account_name or "").strip()
        return f"{name} ({self.account_id})" if name else self.account_id


Channel = Literal["email", "crm"]
# The status a channel of a hand-off ends in when the provider took it.
DONE: dict[Channel, str] = {"email": "accepted", "crm": "created"}


@dataclass(frozen=True, slots=True)
class HandoffResult:
    """How one channel of one hand-off settled.

    Attributes:
        source_event: the hand-off's key (its follow-up's source event key).
        status: the channel's done status (:data:`DONE`), ``failed``, ``queued`` (try
            again next run) or ``unknown``.
        ref: the provider's reference, when it took the hand-off.
        error: why it did not, when it did not.
    """

    source_event: str
    status: str
    ref: str | None = None
    error: str | None = None


def owner_message_data(follow_up: DetractorFollowUp, program_name: str) -> dict[str, str]:
    """The values of the owner's email: who, which account, what score, when."""
    return {
        "who": follow_up.who,
        "account": follow_up.account,
        "score": str(follow_up.score),
        "answered_on": follow_up.occurred_at.date().isoformat(),
        "follow_up_id": follow_up.source_event,
        "program_name": program_name,
    }


class TaskOutcome(StrEnum):
    """What the CRM answered to one task.

    ``UNKNOWN``: the request may have reached the CRM (a timeout after sending), so it
    is not sent again; a person checks.
    """

    CREATED = "created"
    RETRYABLE = "retryable"
    FAILED = "failed"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class CrmTaskResult:
    source_event: str
    outcome: TaskOutcome
    task_id: str | None = None
    error: str | None = None


class CrmTasks(Protocol):
    """Creates a follow-up task on each detractor's contact; one result per follow-up,
    in input order. Never raises for one follow-up's failure."""

    name: str

    def create(self, follow_ups: Sequence[DetractorFollowUp]) -> list[CrmTaskResult]: ...
