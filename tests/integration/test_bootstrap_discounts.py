"""The composition root picks the referee-discount adapter: Stripe with a key, else
ledger-only."""

from __future__ import annotations

from pathlib import Path

from config.settings import load_settings
from flows.bootstrap import build_app
from integrations.payments.ledger_only_discounts import LedgerOnlyDiscounts
from integrations.payments.stripe_discounts import StripeDiscounts


def test_without_a_stripe_key_referee_discounts_are_ledger_only(
    sqlite_url: str, tmp_path: Path
) -> None:
    app = build_app(load_settings(database_url=sqlite_url, inbox_dir=tmp_path))
    assert isinstance(app.discounts, LedgerOnlyDiscounts)
    app.ledger.engine.dispose()


def test_with_a_stripe_key_referee_discounts_are_stripe_promotion_codes(
    sqlite_url: str, tmp_path: Path
) -> None:
    app = build_app(
        load_settings(database_url=sqlite_url, inbox_dir=tmp_path, stripe_api_key="sk_test_x")
    )
    assert isinstance(app.discounts, StripeDiscounts)
    app.ledger.engine.dispose()
