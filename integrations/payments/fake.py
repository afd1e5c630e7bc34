"""An in-memory payment rail that records what it paid, for tests and dry runs."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from typing import Literal

from domain.models import PayoutInstruction, PayoutOutcome, PayoutRailKind, PayoutResult
from domain.money import Money

ScriptedOutcome = PayoutOutcome | Literal["lost_response"]
"""What a scripted call does; ``"lost_response"`` pays but answers ``RETRYABLE``."""

_Fingerprint = tuple[str, str, int, str, str | None]


class RecordingRail:
    """A :class:`domain.ports.PaymentRail` that keeps every payment in memory.

    It behaves like a provider with idempotency keys (Stripe's rules): a key that paid,
    or was refused for good, gives the same result again without paying twice; a key
    reused for a different payment is refused. Transient failures save nothing, so the
    same key may succeed later.

    Attributes:
        kind: the rail this fake stands for.
        paid: every instruction that moved money, once each, in order.
        calls: every instruction received, replays included.
    """

    def __init__(self, kind: PayoutRailKind = PayoutRailKind.STRIPE_TRANSFER) -> None:
        self.kind: PayoutRailKind = kind
        self.paid: list[PayoutInstruction] = []
        self.calls: list[PayoutInstruction] = []
        self._by_key: dict[str, tuple[_Fingerprint, PayoutResult]] = {}
        self._scripts: dict[str, deque[ScriptedOutcome]] = {}
        self._lock = threading.Lock()

    def script(self, payout_id: str, outcomes: Sequence[ScriptedOutcome]) -> None:
        """Queue what the next calls for ``payout_id`` do, one outcome per call.

        ``RETRYABLE`` answers a transient failure (nothing paid, nothing saved);
        ``FAILED`` refuses for good (saved under the key, like a provider's refusal);
        ``"lost_response"`` pays and saves the success but answers ``RETRYABLE``, as
        when a response is lost after the provider acted; ``SUCCEEDED`` pays normally.
        Once the queue is empty, calls pay normally.
        """
        with self._lock:
            self._scripts.setdefault(payout_id, deque()).extend(outcomes)

    def total_paid(self, currency: str) -> Money:
        """The sum of everything paid in ``currency``."""
        with self._lock:
            return sum(
                (i.amount for i in self.paid if i.amount.currency == currency),
                Money.zero(currency),
            )

    def pay(self, instructions: Sequence[PayoutInstruction]) -> list[PayoutResult]:
        """Pay each instruction at most once per idempotency key; one result each."""
        with self._lock:
            return [self._pay_one(instruction) for instruction in instructions]

    def _pay_one(self, instruction: PayoutInstruction) -> PayoutResult:
        self.calls.append(instruction)
        payout_id = instruction.payout_id
        if instruction.rail is not self.kind:
            return PayoutResult(
                payout_id,
                PayoutOutcome.FAILED,
                error=f"a {instruction.rail.value} payout sent to the {self.kind.value} rail",
            )
        fingerprint: _Fingerprint = (
            payout_id,
            instruction.reward_id,
            instruction.amount.amount_minor,
            instruction.amount.currency,
            instruction.destination,
        )
        saved = self._by_key.get(instruction.idempotency_key)
        if saved is not None:
            if saved[0] != fingerprint:
                return PayoutResult(
                    payout_id,
                    PayoutOutcome.FAILED,
                    error="idempotency key reused with different parameters",
                )
            return saved[1]
        queue = self._scripts.get(payout_id)
        scripted: ScriptedOutcome = queue.popleft() if queue else PayoutOutcome.SUCCEEDED
        if scripted is PayoutOutcome.RETRYABLE:
            return PayoutResult(payout_id, PayoutOutcome.RETRYABLE, error="scripted: transient")
        if scripted is PayoutOutcome.FAILED:
            result = PayoutResult(payout_id, PayoutOutcome.FAILED, error="scripted: refused")
            self._by_key[instruction.idempotency_key] = (fingerprint, result)
            return result
        self.paid.append(instruction)
        result = PayoutResult(
            payout_id,
            PayoutOutcome.SUCCEEDED,
            provider_ref=f"rec-{self.kind.value}-{len(self.paid)}",
        )
        self._by_key[instruction.idempotency_key] = (fingerprint, result)
        if scripted == "lost_response":
            return PayoutResult(payout_id, PayoutOutcome.RETRYABLE, error="scripted: response lost")
        return result
