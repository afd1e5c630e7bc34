"""Run ``submit_payouts`` for one reward in a real process, optionally killing it mid-way.

Used by ``test_payout_crashes.py`` as a subprocess::

    python -m tests.integration.crash_worker --db URL --stripe URL --reward-id ID \\
        --crash {none,before_call,after_call} [--now ISO-8601] [--api-key KEY] [--standby]

It builds the production pieces (``SqlLedger`` over ``make_engine`` and a real
``StripeTransferRail`` on the ``stripe`` library talking HTTP to the fake) and runs
``submit_payouts.fn``. The crash points are injected here, by wrapping objects, never by
hooks in production code:

* ``before_call``: the rail is wrapped so that its ``pay`` SIGKILLs the process before
  the real rail runs. ``payouts.prepare`` has committed the payout row with its
  idempotency key by then, and Stripe has not been called.
* ``after_call``: the real rail pays and Stripe answers; then the next ledger commit
  (the one of ``payouts.record_results``, after its updates and inserts have executed)
  SIGKILLs the process instead of committing. The database rolls the open transaction
  back: the payout stays pending while the transfer exists at Stripe.

Without a crash it prints the ``PayoutReport`` as one JSON line on stdout.

``--standby`` makes the worker import everything and then wait for a line on stdin
before it touches the ledger or Stripe, so a test can start the restart's interpreter
while the crashing worker still runs (interpreter start-up is most of a run's time).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import stripe
from sqlalchemy import Engine, event

from domain.models import PayoutInstruction, PayoutRailKind, PayoutResult
from domain.ports import PaymentRail
from integrations.ledger.engine import make_engine
from integrations.ledger.sql import SqlLedger
from integrations.payments.stripe_rail import StripeTransferRail
from tasks.payouts import submit_payouts

CRASH_POINTS = ("none", "before_call", "after_call")
DEFAULT_API_KEY = "sk_test_fake"  # FakeStripe's default key


def die() -> None:
    """End this process the way a power cut or an OOM kill would: no cleanup at all."""
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


class CrashingRail:
    """A payment rail that SIGKILLs the process before or after the real rail pays."""

    def __init__(self, inner: StripeTransferRail, crash: str, engine: Engine) -> None:
        self.kind: PayoutRailKind = inner.kind
        self._inner = inner
        self._crash = crash
        self._engine = engine

    def pay(self, instructions: Sequence[PayoutInstruction]) -> list[PayoutResult]:
        if self._crash == "before_call":
            die()
        results = self._inner.pay(instructions)
        if self._crash == "after_call":
            # Stripe has answered; let payouts.record_results run its statements and die
            # at its commit, the last moment before the outcome would be durable.
            event.listen(self._engine, "commit", _die_on_commit)
        return results


def _die_on_commit(_conn: Any) -> None:
    die()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True, help="the ledger's SQLAlchemy URL")
    parser.add_argument("--stripe", required=True, help="base URL of the (fake) Stripe API")
    parser.add_argument("--reward-id", required=True)
    parser.add_argument("--crash", choices=CRASH_POINTS, default="none")
    parser.add_argument(
        "--now",
        type=datetime.fromisoformat,
        default=None,
        help="when this run happens (payout times and the rail's key-age clock)",
    )
    parser.add_argument("--api-key", default=DEFAULT_API_KEY)
    parser.add_argument(
        "--standby", action="store_true", help="wait for a line on stdin before starting"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.standby and not sys.stdin.readline():
        return 1  # the test went away without starting this run
    now: datetime = args.now or datetime.now(UTC)
    # The library's backoff (0.5-5 s) would only slow the tests down.
    stripe.HTTPClient.INITIAL_DELAY = 0.01
    stripe.HTTPClient.MAX_DELAY = 0.02  # type: ignore[assignment]  # declared int
    engine = make_engine(args.db)
    try:
        with StripeTransferRail.connect(
            args.api_key,
            api_base=args.stripe,
            max_network_retries=2,
            timeout=5.0,
            clock=lambda: now,
        ) as stripe_rail:
            rail: PaymentRail = (
                stripe_rail
                if args.crash == "none"
                else CrashingRail(stripe_rail, args.crash, engine)
            )
            report = submit_payouts.fn(SqlLedger(engine), {rail.kind: rail}, [args.reward_id], now)
    finally:
        engine.dispose()
    print(json.dumps(asdict(report)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
