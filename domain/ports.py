"""The ports: what the referral cycle needs from the outside world.

Each outside system has one Protocol here, one real adapter and one recording fake in
``integrations/``. Tasks receive adapters as parameters, typed by these Protocols.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from domain.models import (
    Account,
    Contact,
    EmailMessage,
    EmailResult,
    PayoutInstruction,
    PayoutRailKind,
    PayoutResult,
    Rejected,
    SourceEvent,
)


@dataclass(frozen=True, slots=True)
class SourceBatch:
    """What one read of a source produced.

    ``records_in`` counts every input record read; the invariant the ingest checks is
    ``records_in == len(events) + len(rejected) + len(reference_only)`` (contacts and
    accounts rows are counted in ``reference_only``).
    """

    source: str
    accounts: Sequence[Account] = ()
    contacts: Sequence[Contact] = ()
    events: Sequence[SourceEvent] = ()
    rejected: Sequence[Rejected] = ()
    records_in: int = 0
    reference_only: int = 0
    cursor: str | None = None


@runtime_checkable
class EventSource(Protocol):
    """A CRM or NPS system read incrementally from a stored cursor."""

    name: str

    def fetch(self, cursor: str | None) -> SourceBatch:
        """Everything new since ``cursor`` (everything when ``None``), with the next cursor."""
        ...


@runtime_checkable
class EmailSender(Protocol):
    """Sends personalized emails; one result per message, in any order."""

    name: str

    def send(self, messages: Sequence[EmailMessage]) -> list[EmailResult]: ...


@runtime_checkable
class PaymentRail(Protocol):
    """Moves money for rewards; every call carries the instruction's idempotency key.

    ``pay`` returns one result per instruction. A result is ``RETRYABLE`` when the
    outcome is unknown or transient (the same key is used next time), ``FAILED`` only
    when the provider refused for good.
    """

    kind: PayoutRailKind

    def pay(self, instructions: Sequence[PayoutInstruction]) -> list[PayoutResult]: ...


@runtime_checkable
class ApprovalRuns(Protocol):
    """Where a person decides on a reward: a paused Prefect flow run per reward."""

    def start(self, requests: Mapping[str, str]) -> dict[str, str]:
        """Start one waiting run per approval request (request id -> reward id).

        Starting the same request again returns the run already started for it (the
        request id is the run's idempotency key). Returns request id -> run id.
        """
        ...

    def resume(self, run_id: str, decision: Mapping[str, object]) -> None:
        """Resume a waiting run with a typed decision.

        Raises:
            domain.errors.PermanentIntegrationError: the run is not waiting, or the
                decision does not match the form.
        """
        ...

    def cancel_waiting(self, run_id: str, reason: str) -> bool:
        """Cancel the run if it still waits for a decision; False if it was resumed
        (or finished) meanwhile, in which case it must be left to finish."""
        ...

    def ui_url(self, run_id: str) -> str: ...
