"""An in-memory reader of payment cards that records what it was asked, for tests."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Literal

from domain.errors import PermanentIntegrationError, RetryableIntegrationError

ScriptedRead = Literal["ok", "retryable", "permanent"]
"""What a scripted read does: answer, fail for now, or be refused for good."""


class RecordingCards:
    """A :class:`domain.ports.PaymentCards` over a fixed map of payments to cards.

    Args:
        cards: payment id (charge or payment intent) -> the fingerprint of the card
            that paid it; ``None`` for a payment made otherwise (a bank debit).

    Attributes:
        calls: every payment id asked about, in order, failed reads included.
    """

    def __init__(self, cards: Mapping[str, str | None] | None = None) -> None:
        self._cards = dict(cards or {})
        self._scripts: dict[str, deque[ScriptedRead]] = {}
        self._lock = threading.Lock()
        self.calls: list[str] = []

    def script(self, payment_ref: str, reads: Sequence[ScriptedRead]) -> None:
        """Queue what the next reads of ``payment_ref`` do, one per read."""
        with self._lock:
            self._scripts.setdefault(payment_ref, deque()).extend(reads)

    def card_fingerprint(self, payment_ref: str) -> str | None:
        with self._lock:
            self.calls.append(payment_ref)
            queued = self._scripts.get(payment_ref)
            read = queued.popleft() if queued else "ok"
        if read == "retryable":
            raise RetryableIntegrationError(f"reading payment {payment_ref}: try again later")
        if read == "permanent":
            raise PermanentIntegrationError(f"reading payment {payment_ref}: refused")
        return self._cards.get(payment_ref)
