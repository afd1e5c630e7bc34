"""An in-memory :class:`domain.ports.EmailSender` that records what it "sent"."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from domain.models import EmailMessage, EmailOutcome, EmailResult


@dataclass
class _Scripted:
    outcome: EmailOutcome
    error: str
    remaining: int | None  # None: every time


class RecordingEmailSender:
    """Records every message it accepts, and never the same ``message_id`` twice.

    A message whose id was already sent is answered ``ACCEPTED`` again, with the first
    send's ``provider_ref``, and is not recorded again: the same guarantee the ledger
    must give, so tests that send twice can check nobody got two emails.

    Outcomes can be scripted per message id with :meth:`fail` and :meth:`defer`; a
    scripted message is not recorded (it was not sent).

    Attributes:
        sent: every message sent, in order, each id once.
        calls: how many times :meth:`send` was called.
    """

    name = "recording"

    def __init__(self) -> None:
        self.sent: list[EmailMessage] = []
        self.calls = 0
        self._refs: dict[str, str] = {}
        self._scripted: dict[str, _Scripted] = {}
        self._lock = threading.Lock()

    def fail(
        self, message_ids: Iterable[str], error: str = "refused", times: int | None = None
    ) -> None:
        """Answer these ids ``FAILED`` (``times`` sends, or every time when ``None``)."""
        self._script(message_ids, EmailOutcome.FAILED, error, times)

    def defer(
        self, message_ids: Iterable[str], error: str = "try again later", times: int | None = 1
    ) -> None:
        """Answer these ids ``RETRYABLE`` (once by default, so a retry then succeeds)."""
        self._script(message_ids, EmailOutcome.RETRYABLE, error, times)

    def _script(
        self, message_ids: Iterable[str], outcome: EmailOutcome, error: str, times: int | None
    ) -> None:
        if times is not None and times < 1:
            raise ValueError("times must be at least 1, or None for always")
        with self._lock:
            for message_id in message_ids:
                self._scripted[message_id] = _Scripted(outcome, error, times)

    @property
    def sent_ids(self) -> list[str]:
        """The ids of :attr:`sent`, in order."""
        return [message.message_id for message in self.sent]

    def send(self, messages: Sequence[EmailMessage]) -> list[EmailResult]:
        """Record ``messages``; one result per message, in input order."""
        results: list[EmailResult] = []
        with self._lock:
            self.calls += 1
            for message in messages:
                results.append(self._send_one(message))
        return results

    def _send_one(self, message: EmailMessage) -> EmailResult:
        message_id = message.message_id
        if message_id in self._refs:
            return EmailResult(message_id, EmailOutcome.ACCEPTED, self._refs[message_id])
        scripted = self._scripted.get(message_id)
        if scripted is not None:
            if scripted.remaining is not None:
                scripted.remaining -= 1
                if scripted.remaining == 0:
                    del self._scripted[message_id]
            return EmailResult(message_id, scripted.outcome, error=scripted.error)
        ref = f"recording-{len(self.sent) + 1}"
        self._refs[message_id] = ref
        self.sent.append(message)
        return EmailResult(message_id, EmailOutcome.ACCEPTED, ref)
