"""The ledger-only rail: used when no Stripe key is configured."""

from __future__ import annotations

from collections.abc import Sequence

from domain.clawbacks import ReversalInstruction, ReversalOutcome, ReversalResult
from domain.models import PayoutInstruction, PayoutOutcome, PayoutRailKind, PayoutResult


class LedgerOnlyRail:
    """A payment rail that PAYS NOTHING: no money moves, no provider is called.

    It marks ledger-only payouts as settled so the referral cycle can run end to end
    without a payment provider; the money is owed and must be paid by other means
    (the ``provider_ref`` ``ledger-only:<payout_id>`` says so wherever it is shown).
    An instruction meant for a real rail is refused (``FAILED``) instead of being marked
    paid here by mistake.
    """

    kind: PayoutRailKind = PayoutRailKind.LEDGER_ONLY

    def pay(self, instructions: Sequence[PayoutInstruction]) -> list[PayoutResult]:
        """Settle each ledger-only instruction without moving money.

        Returns:
            ``SUCCEEDED`` with ``provider_ref="ledger-only:<payout_id>"`` for each
            ledger-only instruction; ``FAILED`` for one addressed to another rail.
        """
        results: list[PayoutResult] = []
        for instruction in instructions:
            if instruction.rail is not PayoutRailKind.LEDGER_ONLY:
                results.append(
                    PayoutResult(
                        instruction.payout_id,
                        PayoutOutcome.FAILED,
                        error=f"a {instruction.rail.value} payout sent to the ledger-only "
                        "rail, which moves no money",
                    )
                )
            else:
                results.append(
                    PayoutResult(
                        instruction.payout_id,
                        PayoutOutcome.SUCCEEDED,
                        provider_ref=f"ledger-only:{instruction.payout_id}",
                    )
                )
        return results

    def reverse(self, instructions: Sequence[ReversalInstruction]) -> list[ReversalResult]:
        """Record a clawback as recovered without moving money (nothing was paid out).

        Returns:
            ``SUCCEEDED`` with ``provider_ref="ledger-only:<reversal_id>"`` for each
            ledger-only instruction; ``FAILED`` for one addressed to another rail.
        """
        return [
            ReversalResult(
                i.reversal_id,
                ReversalOutcome.SUCCEEDED,
                provider_ref=f"ledger-only:{i.reversal_id}",
            )
            if i.rail is PayoutRailKind.LEDGER_ONLY
            else ReversalResult(
                i.reversal_id,
                ReversalOutcome.FAILED,
                error=f"a {i.rail.value} reversal sent to the ledger-only rail",
            )
            for i in instructions
        ]
