"""An in-memory payment rail that records what it paid and took back, for tests and dry runs."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from typing import Literal

from domain.clawbacks import ReversalInstruction, ReversalOutcome, ReversalResult
from domain.models import PayoutInstruction, PayoutOutcome, PayoutRailKind, PayoutResult
from domain.money import Money

ScriptedOutcome = PayoutOutcome | Literal["lost_response"]
"""What a scripted call does; ``"lost_response"`` pays but answers ``RETRYABLE``."""

ScriptedReversal = ReversalOutcome | Literal["lost_response"]
"""What a scripted reversal does; ``"lost_response"`` reverses but answers ``RETRYABLE``."""

_Fingerprint = tuple[str, str, int, str, str | None]
_ReversalFingerprint = tuple[str, str, str, int, str]


class RecordingRail:
    """A :class:`domain.ports.PaymentRail` that keeps every payment in memory.

    It behaves like a provider with idempotency keys (Stripe's rules): a key that paid,
    or was refused for good, gives the same result again without paying twice; a key
    reused for a different payment is refused. Transient failures save nothing, so the
    same key may succeed later.

    Reversals (:class:`domain.clawbacks.ReversalRail`) follow the same rules, with
    :meth:`script_reversal`; ``INSUFFICIENT_FUNDS`` is saved under the key, as a
    provider's refusal is.

    Attributes:
        kind: the rail this fake stands for.
        paid: every instruction that moved money, once each, in order.
        calls: every instruction received, replays included.
        reversed: every reversal that took money back, once each, in order.
        reversal_calls: every reversal instruction received, replays included.
    """

    def __init__(self, kind: PayoutRailKind = PayoutRailKind.STRIPE_TRANSFER) -> None:
        self.kind: PayoutRailKind = kind
        self.paid: list[PayoutInstruction] = []
        self.calls: list[PayoutInstruction] = []
        self.reversed: list[ReversalInstruction] = []
        self.reversal_calls: list[ReversalInstruction] = []
        self._by_key: dict[str, tuple[_Fingerprint, PayoutResult]] = {}
        self._reversals_by_key: dict[str, tuple[_ReversalFingerprint, ReversalResult]] = {}
        self._scripts: dict[str, deque[ScriptedOutcome]] = {}
        self._reversal_scripts: dict[str, deque[ScriptedReversal]] = {}
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

    def script_reversal(self, reversal_id: str, outcomes: Sequence[ScriptedReversal]) -> None:
        """Queue what the next calls for ``reversal_id`` do, one outcome per call.

        As :meth:`script`, plus ``INSUFFICIENT_FUNDS``: refused for good (saved under the
        key), nothing taken back.
        """
        with self._lock:
            self._reversal_scripts.setdefault(reversal_id, deque()).extend(outcomes)

    def total_reversed(self, currency: str) -> Money:
        """The sum of everything taken back in ``currency``."""
        with self._lock:
            return sum(
                (i.amount for i in self.reversed if i.amount.currency == currency),
                Money.zero(currency),
            )

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

    def reverse(self, instructions: Sequence[ReversalInstruction]) -> list[ReversalResult]:
        """Take back each instruction at most once per idempotency key; one result each."""
        with self._lock:
            return [self._reverse_one(instruction) for instruction in instructions]

    def _reverse_one(self, instruction: ReversalInstruction) -> ReversalResult:
        self.reversal_calls.append(instruction)
        reversal_id = instruction.reversal_id
        if instruction.rail is not self.kind:
            return ReversalResult(
                reversal_id,
                ReversalOutcome.FAILED,
                error=f"a {instruction.rail.value} reversal sent to the {self.kind.value} rail",
            )
        fingerprint: _ReversalFingerprint = (
            reversal_id,
            instruction.reward_id,
            instruction.payout_id,
            instruction.amount.amount_minor,
            instruction.amount.currency,
        )
        saved = self._reversals_by_key.get(instruction.idempotency_key)
        if saved is not None:
            if saved[0] != fingerprint:
                return ReversalResult(
                    reversal_id,
                    ReversalOutcome.FAILED,
                    error="idempotency key reused with different parameters",
                )
            return saved[1]
        queue = self._reversal_scripts.get(reversal_id)
        scripted: ScriptedReversal = queue.popleft() if queue else ReversalOutcome.SUCCEEDED
        if scripted is ReversalOutcome.RETRYABLE:
            return ReversalResult(
                reversal_id, ReversalOutcome.RETRYABLE, error="scripted: transient"
            )
        if scripted is ReversalOutcome.FAILED or scripted is ReversalOutcome.INSUFFICIENT_FUNDS:
            result = ReversalResult(reversal_id, scripted, error=f"scripted: {scripted.value}")
            self._reversals_by_key[instruction.idempotency_key] = (fingerprint, result)
            return result
        self.reversed.append(instruction)
        result = ReversalResult(
            reversal_id,
            ReversalOutcome.SUCCEEDED,
            provider_ref=f"rec-{self.kind.value}-reversal-{len(self.reversed)}",
        )
        self._reversals_by_key[instruction.idempotency_key] = (fingerprint, result)
        if scripted == "lost_response":
            return ReversalResult(
                reversal_id, ReversalOutcome.RETRYABLE, error="scripted: response lost"
            )
        return result
