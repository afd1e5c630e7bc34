"""Learning which card paid a conversion, before its reward's fraud flags are decided.

The same-card check (``self_referral:same_card``) compares Stripe's card fingerprints.
An event carries one only when its charge is expanded; most name their charge by id,
or only their payment intent. This stage reads those charges from Stripe, so the
check knows the card when the conversion's rewards are computed.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State

from domain.errors import PermanentIntegrationError, RetryableIntegrationError
from domain.ports import PaymentCards
from domain.stores.fraud import FraudStore
from integrations.payments.stripe_payloads import card_sources
from tasks._support import run_logger


class CardLedger(Protocol):
    """What this stage needs of the ledger: its ``fraud`` store."""

    @property
    def fraud(self) -> FraudStore: ...


def _worth_retrying(_task: object, _run: object, state: State[Any]) -> bool:
    """Try again when Stripe could not be read for now, not when it refused us."""
    if not state.is_failed():
        return False
    try:
        state.result()
    except RetryableIntegrationError:
        return True
    except Exception:
        return False
    return False


@task(
    name="learn-card-fingerprints",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=10,
    retry_condition_fn=_worth_retrying,
)
def learn_card_fingerprints(
    ledger: CardLedger, cards: PaymentCards, now: datetime, batch_size: int = 200
) -> dict[str, int]:
    """Read from Stripe the card of each conversion about to be rewarded, when unknown.

    For each conversion not rewarded yet, paid through Stripe and without a card
    fingerprint: the charges its event or its payment ids name are read, then its
    payment intents (their latest charge), until one gives a card. Run it after the
    payment links and before the rewards are computed. Only the fingerprint is kept,
    on the conversion; nothing else of the card is stored or logged.

    A payment Stripe cannot be read for now (network, 429, 5xx, after the client's own
    retries) fails the task once every other conversion is done, so that Prefect tries
    it again and, if Stripe is still unreachable, the flow stops before computing any
    reward: a reward is never decided without its card check while the card can still
    be known. A refused read (key, permissions) leaves that conversion's card unknown.

    Args:
        ledger: the conversions, and where their fingerprints go.
        cards: Stripe's charges and payment intents.
        now: the run's time (for the log).
        batch_size: conversions per batch.

    Returns:
        Counts: conversions examined, cards learned, payments without a card (another
        payment method, or nothing to read), reads refused.

    Raises:
        RetryableIntegrationError: some payments could not be read now.
    """
    log = run_logger()
    counts = dict.fromkeys(("examined", "learned", "no_card", "refused"), 0)
    unreachable = 0
    after = ""
    while batch := ledger.fraud.conversions_without_card(after, batch_size):
        after = batch[-1].conversion_id
        found: dict[str, str] = {}
        for item in batch:
            counts["examined"] += 1
            try:
                fingerprint = _first_card(cards, card_sources(item.event_object, item.payment_refs))
            except RetryableIntegrationError:
                unreachable += 1
                continue
            except PermanentIntegrationError as exc:
                counts["refused"] += 1
                log.warning("card of conversion %s not read: %s", item.conversion_id, exc)
                continue
            if fingerprint is None:
                counts["no_card"] += 1
            else:
                found[item.conversion_id] = fingerprint
        counts["learned"] += ledger.fraud.record_card_fingerprints(found)
    log.info(
        "cards of conversions as of %s: %s, %d unreachable",
        now.isoformat(),
        ", ".join(f"{k}={v}" for k, v in counts.items()),
        unreachable,
    )
    if unreachable:
        raise RetryableIntegrationError(
            f"the card of {unreachable} conversions could not be read from Stripe now; "
            "their rewards wait for a run that can"
        )
    return counts


def _first_card(cards: PaymentCards, sources: Sequence[str]) -> str | None:
    """The first fingerprint one of ``sources`` gives (a charge may be no card's)."""
    for ref in sources:
        fingerprint = cards.card_fingerprint(ref)
        if fingerprint is not None:
            return fingerprint
    return None
