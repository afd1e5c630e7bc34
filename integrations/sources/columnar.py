"""The file source's checks on a block of rows at once (polars), for the plain rows.

Each check here is stricter than the row-by-row check in :mod:`integrations.sources.files`
it stands for: a row passes only when that check would surely accept it and read it
into exactly these values (a timestamp in the one form ``2026-10-10T08:19:40[.123456]Z``, an
amount of plain digits in a currency of 0 or 2 decimals, ASCII where a value is
lowercased, no space at either end of any field...). Every other row is handed back by
its position and read by the row-by-row checks, which accept it or refuse it with the
reason they always gave: a row never gets another outcome for being checked here.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

import polars as pl

from domain.inputs import InputBounds
from domain.models import EventType, ReferrerType
from domain.money import CURRENCY_EXPONENTS
from integrations.ledger.bulk import ACCOUNT_SCHEMA, CONTACT_SCHEMA, EVENT_SCHEMA

# Space at an end (the row-by-row check strips it), or any control character.
_EDGE_OR_CONTROL = r"^\s|\s$|[\x00-\x1f\x7f-\x9f]"
_ASCII = r"^[\x00-\x7f]*$"
_TIMESTAMP = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$"
_DATE = r"^\d{4}-\d{2}-\d{2}$"
_SMALL_NUMBER = r"^\d{1,2}$"
# Printable ASCII, one at-sign, a domain of dot-separated non-empty labels.
_EMAIL = (
    r"^[\x21-\x3f\x41-\x7e]+@[\x21-\x2d\x2f-\x3f\x41-\x7e]+(\.[\x21-\x2d\x2f-\x3f\x41-\x7e]+)+$"
)
_AMOUNT_2 = r"^\d{1,13}(\.\d{1,2})?$"
_AMOUNT_0 = r"^\d{1,13}$"
_TRUE = ("true", "1", "yes", "y")
_FALSE = ("false", "0", "no", "n")
POS = "_pos"


def _texts_fine(fields: Mapping[str, int]) -> pl.Expr:
    """Every field fits its column and needs no stripping and holds no control character."""
    ok = pl.lit(True)
    for name, limit in fields.items():
        v = pl.col(name)
        ok = ok & (v.is_null() | (~v.str.contains(_EDGE_OR_CONTROL) & (v.str.len_chars() <= limit)))
    return ok


def _lower_ascii(name: str) -> tuple[pl.Expr, pl.Expr]:
    v = pl.col(name)
    return v.is_null() | v.str.contains(_ASCII), v.str.to_lowercase()


def _utc_naive(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


def _timestamp(name: str, window: tuple[datetime, datetime]) -> tuple[pl.Expr, pl.Expr]:
    """Whether the field is a timestamp in the plain form inside the window, and its value."""
    earliest, latest = (_utc_naive(w) for w in window)
    v = pl.col(name)
    parsed = v.str.strptime(pl.Datetime("us"), "%Y-%m-%dT%H:%M:%S%.fZ", strict=False)
    ok = v.str.contains(_TIMESTAMP) & parsed.is_not_null() & parsed.is_between(earliest, latest)
    return ok.fill_null(False), parsed


def _small_int(name: str, low: int, high: int) -> tuple[pl.Expr, pl.Expr]:
    v = pl.col(name)
    number = v.cast(pl.Int64, strict=False)
    ok = v.is_null() | (v.str.contains(_SMALL_NUMBER) & number.is_between(low, high))
    return ok.fill_null(False), number


def split(
    kind: str,
    raw: pl.DataFrame,
    fields: Mapping[str, int],
    bounds: InputBounds,
    window: tuple[datetime, datetime],
) -> tuple[pl.DataFrame, list[int]]:
    """The rows of ``raw`` every check passes, as the ledger stores them (plus their
    position, ``_pos``), and the positions of the rest, for the row-by-row checks.

    Args:
        kind: ``accounts``, ``contacts``, ``events`` or ``nps``.
        raw: one text column per field of the kind (null when absent or empty) and
            ``_pos``.
        fields: the kind's fields and the longest value each may hold.
        bounds: the drop's bounds on input.
        window: the earliest and latest timestamps accepted.
    """
    raw = raw.with_columns(
        [pl.when(pl.col(f) == "").then(None).otherwise(pl.col(f)).alias(f) for f in fields]
    )
    ok = _texts_fine(fields)
    if kind == "accounts":
        domain_ok, domain = _lower_ascii("domain")
        since = pl.col("customer_since")
        since_date = since.str.strptime(pl.Date, "%Y-%m-%d", strict=False)
        # Dates are compared as the row-by-row check does: with each end's own date.
        earliest, latest = (w.date() for w in window)
        since_ok = since.is_null() | (
            since.str.contains(_DATE)
            & since_date.is_not_null()
            & since_date.is_between(earliest, latest)
        )
        ok = ok & pl.col("account_id").is_not_null() & domain_ok & since_ok.fill_null(False)
        values = [
            pl.col("account_id"),
            pl.coalesce(pl.col("name"), pl.col("account_id")).alias("name"),
            domain.alias("domain"),
            since_date.alias("customer_since"),
        ]
        schema = ACCOUNT_SCHEMA
    elif kind == "contacts":
        email = pl.col("email")
        kinds = [t.value for t in ReferrerType]
        referrer = pl.col("referrer_type")
        opted = pl.col("opted_out")
        ok = (
            ok
            & pl.col("contact_id").is_not_null()
            & (email.is_null() | email.str.contains(_EMAIL))
            & (referrer.is_null() | referrer.is_in(kinds))
            & (opted.is_null() | opted.is_in(_TRUE + _FALSE))
        )
        values = [
            pl.col("contact_id"),
            pl.col("account_id"),
            pl.col("name").fill_null(""),
            email,
            referrer.fill_null(ReferrerType.CUSTOMER.value).alias("referrer_type"),
            opted.is_in(_TRUE).fill_null(False).alias("opted_out"),
            pl.col("stripe_customer_id"),
            pl.col("stripe_account_id"),
        ]
        schema = CONTACT_SCHEMA
    elif kind == "events":
        when_ok, when = _timestamp("occurred_at", window)
        score_ok, score = _small_int("score", 0, 10)
        csat_ok, csat = _small_int("csat", 1, 5)
        priority_ok, priority = _lower_ascii("priority")
        referee_ok, referee = _lower_ascii("referee_email_domain")
        type_ = pl.col("type")
        amount, currency = pl.col("amount"), pl.col("currency")
        exponents = {c: e for c, e in CURRENCY_EXPONENTS.items() if e in (0, 2)}
        exponent = currency.replace_strict(exponents, default=None, return_dtype=pl.Int64)
        whole = amount.str.extract(r"^(\d+)", 1).cast(pl.Int64, strict=False)
        cents = amount.str.extract(r"\.(\d+)$", 1).fill_null("").str.pad_end(2, "0")
        minor = (
            pl.when(exponent == 0)
            .then(whole)
            .otherwise(whole * 100 + cents.cast(pl.Int64, strict=False))
        )
        amount_ok = amount.is_null() | (
            currency.is_not_null()
            & (
                ((exponent == 2) & amount.str.contains(_AMOUNT_2))
                | ((exponent == 0) & amount.str.contains(_AMOUNT_0))
            )
            & (minor <= bounds.max_amount_minor)
        )
        nps = EventType.NPS_RESPONSE.value
        ok = (
            ok
            & pl.col("event_id").is_not_null()
            & type_.is_in([t.value for t in EventType])
            & amount_ok.fill_null(False)
            & score_ok
            & ~((type_ == nps) & score.is_null())
            & when_ok
            & csat_ok
            & priority_ok
            & referee_ok
        )
        values = [
            pl.col("event_id"),
            type_,
            when.alias("occurred_at"),
            pl.col("account_id"),
            pl.col("contact_id"),
            pl.when(amount.is_null()).then(None).otherwise(minor).alias("amount_minor"),
            pl.when(amount.is_null()).then(None).otherwise(currency).alias("currency"),
            score.alias("score"),
            csat.alias("csat"),
            priority.alias("priority"),
            pl.col("milestone"),
            pl.col("referral_code"),
            pl.col("deal_id"),
            pl.col("ticket_id"),
            referee.alias("referee_email_domain"),
        ]
        schema = EVENT_SCHEMA
    else:
        when_ok, when = _timestamp("responded_at", window)
        score_ok, score = _small_int("score", 0, 10)
        ok = (
            ok
            & pl.col("response_id").is_not_null()
            & pl.col("contact_id").is_not_null()
            & score.is_not_null()
            & score_ok
            & when_ok
        )
        values = [
            (pl.lit("nps-") + pl.col("response_id")).alias("event_id"),
            pl.lit(EventType.NPS_RESPONSE.value).alias("type"),
            when.alias("occurred_at"),
            pl.col("account_id"),
            pl.col("contact_id"),
            pl.lit(None, pl.Int64).alias("amount_minor"),
            pl.lit(None, pl.String).alias("currency"),
            score.alias("score"),
            *(
                pl.lit(None, dtype).alias(name)
                for name, dtype in EVENT_SCHEMA.items()
                if name
                not in {
                    "event_id",
                    "type",
                    "occurred_at",
                    "account_id",
                    "contact_id",
                    "amount_minor",
                    "currency",
                    "score",
                }
            ),
        ]
        schema = EVENT_SCHEMA
    marked = raw.with_columns(ok.fill_null(False).alias("_ok"))
    good = marked.filter(pl.col("_ok"))
    rest = marked.filter(~pl.col("_ok")).get_column(POS).to_list()
    clean = good.select(
        [v.cast(dtype).alias(name) for v, (name, dtype) in zip(values, schema.items(), strict=True)]
        + [pl.col(POS)]
    )
    return clean, rest
