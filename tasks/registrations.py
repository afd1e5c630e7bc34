"""Partner deal registration: claims on company domains, their expiry, and the deals
credited through them.

Four batch operations: registering a batch of claims (first to register wins; a
claim on a domain another partner holds is rejected with the owner and the expiry; a
malformed claim is quarantined with its field), the same for the claims the sources
hold (a file drop, CRM properties), expiring the registrations whose window has
passed, and crediting the signups and deals that carry no referral code but happened
on a registered company to the registering partner.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import SecretStr

from domain.codes import new_referral_code
from domain.errors import InputRejected
from domain.models import ReferrerType, Rejected
from domain.ports import ClaimRow, RegistrationSource
from domain.program import Program
from domain.registration import (
    CONVERTING_EVENT,
    HOLDING,
    PROGRESS_EVENT,
    Claim,
    ClaimDecision,
    Registration,
    RegistrationStatus,
    extended,
    parse_claim,
    registered_conversion,
)
from domain.stores.partners import RegisteredCredit
from integrations.ledger.sql import SqlLedger
from tasks._support import run_logger
from tasks.conversions import conversion_notices
from tasks.use_cases import conversions as use_cases

SOURCE = "partners"
# A source's registrations keep a cursor of their own: "<source>:registrations".
CURSOR_SUFFIX = ":registrations"
QUARANTINE_STAGE = "registration"
EXPIRED_BY = "expire-registrations"
REPORT_KEY = "partner-registrations"
TABLE_KEY = "partner-registrations-changes"


@dataclass(frozen=True)
class RegistrationBatch:
    """What became of a batch of claims: every claim is in exactly one list."""

    accepted: list[ClaimDecision] = field(default_factory=list)
    rejected: list[ClaimDecision] = field(default_factory=list)
    quarantined: list[Rejected] = field(default_factory=list)
    # (record, decision) of each rejected claim: where it came from, for the report.
    rejected_records: list[tuple[str, ClaimDecision]] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {
            "accepted": len(self.accepted),
            "rejected": len(self.rejected),
            "quarantined": len(self.quarantined),
        }


@task(name="register-leads", cache_policy=NO_CACHE)
def register_leads(
    ledger: SqlLedger,
    program: Program,
    claims: Sequence[Mapping[str, Any]],
    now: datetime,
    source: str = SOURCE,
    contact_key: SecretStr | None = None,
) -> RegistrationBatch:
    """Register a batch of partner leads; first to register a company wins.

    Each claim is a mapping with ``partner_id``, ``domain``, ``contact`` (a CRM
    contact id, or an email address that is stored only as its keyed hash) and
    ``evidence`` (the qualification: a meeting booked, a discovery call, a budget
    conversation), and optionally ``record`` (where it came from, e.g. a file and
    line) and ``registered_at`` (when it was made, if before now). A malformed claim,
    or one by someone who is not a known partner, is quarantined with its field and
    reason and the batch goes on. Partners without a referral code get one, so what
    is credited through their registrations carries it.

    Args:
        ledger: where registrations are kept.
        program: the registration rules (window, extensions).
        claims: the claims, in the order they were made (earlier wins a tie).
        now: when the claims are registered.
        source: the quarantine source of refused claims.
        contact_key: the key of the contact email's hash (the setting
            ``registration_contact_key``); without it, a claim naming its contact by
            email is quarantined (a contact id needs none).

    Returns:
        The accepted claims (with their registrations), the rejected ones (with the
        partner holding the domain and until when), and those quarantined.
    """
    rows = [
        ClaimRow(
            # The batch's moment makes a record unnamed by its source unique in quarantine.
            record=str(raw.get("record") or f"claim {i} of {now.isoformat(timespec='seconds')}"),
            partner_id=_text(raw.get("partner_id")),
            domain=_text(raw.get("domain")),
            contact=_text(raw.get("contact")),
            evidence=_text(raw.get("evidence")),
            registered_at=raw.get("registered_at"),
        )
        for i, raw in enumerate(claims, start=1)
    ]
    batch = _register(ledger, program, rows, now, source, _key(contact_key))
    run_logger().info(
        "registered partner leads: %s", ", ".join(f"{k}={v}" for k, v in batch.counts().items())
    )
    return batch


@task(name="intake-registrations", cache_policy=NO_CACHE)
def intake_registrations(
    sources: Sequence[object],
    ledger: SqlLedger,
    program: Program,
    now: datetime,
    contact_key: SecretStr | None = None,
) -> dict[str, Any]:
    """Register the partner registrations the sources hold (a file drop's
    ``registrations*`` files, a CRM's registration properties), new since each
    source's registrations cursor.

    Each claim is decided at the moment it says it was made, first to register wins,
    as :func:`register_leads` does; a row that cannot be a claim, or a malformed or
    unknown-partner claim, is quarantined naming record and field and the batch goes
    on. The cursor moves in the transaction that records the registrations; a claim
    read again (its file changed) is the registration it made, and writes nothing.
    Sources without registrations are skipped.

    Args:
        sources: the cycle's sources; those with ``fetch_registrations`` are read.
        ledger: where registrations, quarantined rows and cursors are kept.
        program: the registration rules.
        now: when the claims are read.
        contact_key: the key of the contact email's hash (see :func:`register_leads`).

    Returns:
        Per source, the counts of claims accepted, rejected (another partner holds
        the company) and quarantined; and each rejected claim's record with the owner
        and expiry.
    """
    counts: dict[str, dict[str, int]] = {}
    refused: list[str] = []
    key = _key(contact_key)
    for source in sources:
        if not isinstance(source, RegistrationSource):
            continue
        name = f"{source.name}{CURSOR_SUFFIX}"
        read = source.fetch_registrations(ledger.sources.cursor(name))
        batch = _register(
            ledger,
            program,
            read.claims,
            now,
            source.name,
            key,
            refused_rows=read.rejected,
            cursor=(name, read.cursor) if read.cursor is not None else None,
        )
        counts[source.name] = batch.counts()
        refused += [f"{record}: {d.message()}" for record, d in batch.rejected_records]
    log = run_logger()
    for line in refused:
        log.info("partner registration %s", line)
    log.info(
        "partner registrations read: %s",
        "; ".join(
            f"{name} " + ", ".join(f"{k}={v}" for k, v in c.items()) for name, c in counts.items()
        )
        or "no source holds any",
    )
    return {"sources": counts, "rejected": refused}


def _register(
    ledger: SqlLedger,
    program: Program,
    rows: Sequence[ClaimRow],
    now: datetime,
    source: str,
    key: bytes | None,
    refused_rows: Sequence[Rejected] = (),
    cursor: tuple[str, str] | None = None,
) -> RegistrationBatch:
    """Check ``rows``, quarantine what is wrong, register the rest (with ``cursor``)."""
    parsed: list[tuple[str, Claim]] = []
    quarantined: list[Rejected] = list(refused_rows)
    for row in rows:
        try:
            claim = parse_claim(
                row.record,
                row.partner_id,
                row.domain,
                row.contact,
                row.evidence,
                key=key,
                registered_at=row.registered_at,
                now=now,
            )
        except InputRejected as exc:
            # Never the raw row: it may hold the contact's address.
            quarantined.append(Rejected(source, exc.record, exc.field, exc.reason))
            continue
        parsed.append((row.record, claim))
    partners = ledger.asks.contacts(c.partner_id for _, c in parsed)
    valid: list[tuple[str, Claim]] = []
    for record, claim in parsed:
        partner = partners.get(claim.partner_id)
        if partner is None:
            quarantined.append(Rejected(source, record, "partner_id", "unknown partner"))
        elif partner.referrer_type is not ReferrerType.PARTNER:
            quarantined.append(
                Rejected(
                    source,
                    record,
                    "partner_id",
                    f"{claim.partner_id} is a {partner.referrer_type.value}, not a partner",
                )
            )
        else:
            valid.append((record, claim))
    # Quarantined before the cursor moves: a crash in between reads the rows again, and
    # the quarantine keeps one row per record.
    if quarantined:
        ledger.sources.quarantine(quarantined, QUARANTINE_STAGE, now)
    claims = [c for _, c in valid]
    codes = ledger.asks.codes_for(c.partner_id for c in claims)
    new_codes = {c.partner_id: new_referral_code() for c in claims if c.partner_id not in codes}
    decisions = (
        ledger.partners.register(claims, program.registration, now, new_codes, cursor)
        if claims or cursor
        else []
    )
    paired = list(zip((r for r, _ in valid), decisions, strict=True))
    return RegistrationBatch(
        accepted=[d for _, d in paired if d.accepted],
        rejected=[d for _, d in paired if not d.accepted],
        quarantined=quarantined,
        rejected_records=[(r, d) for r, d in paired if not d.accepted],
    )


def _key(contact_key: SecretStr | None) -> bytes | None:
    return contact_key.get_secret_value().encode("utf-8") if contact_key is not None else None


@task(name="expire-registrations", cache_policy=NO_CACHE)
def expire_registrations(
    ledger: SqlLedger, now: datetime, by: str = EXPIRED_BY
) -> list[Registration]:
    """Expire every active or extended registration whose window has passed.

    The registration's row records the expiry (status ``expired``, when, by whom);
    its domain is free for the next claim. Running it again expires nothing twice.

    Args:
        ledger: where registrations are kept.
        now: the moment of expiry.
        by: who expires them, recorded on each row (the flow run, or a person).

    Returns:
        The registrations expired by this run.
    """
    expired = ledger.partners.expire_due(now, by)
    run_logger().info("expired %d partner registrations", len(expired))
    return expired


def registrations_markdown(
    counts: Mapping[str, int],
    expired: Sequence[Registration],
    expiring: Sequence[Registration],
    now: datetime,
    within_days: int,
) -> str:
    """The expiry run's summary: what it expired, what holds, what expires soon."""
    lines = [
        "# Partner registrations",
        "",
        f"Expiry run at {now:%Y-%m-%d %H:%M} UTC.",
        "",
        "| what | count |",
        "|---|---|",
        f"| expired by this run | {len(expired)} |",
        f"| expiring within {within_days} days | {len(expiring)} |",
    ]
    lines += [f"| registrations {status} | {n} |" for status, n in counts.items()]
    return "\n".join(lines)


def registration_table_row(r: Registration, change: str) -> dict[str, str]:
    """One registration for the table artifact: ids, dates and status only (never
    the contact or the evidence)."""
    return {
        "change": change,
        "registration": r.registration_id,
        "partner": r.partner_id,
        "domain": r.domain,
        "status": r.status.value,
        "registered": r.registered_at.isoformat(timespec="minutes"),
        "expires": r.expires_at.isoformat(timespec="minutes"),
        "extensions": str(r.extensions),
    }


@task(name="publish-registration-report", cache_policy=NO_CACHE)
def publish_registration_report(
    ledger: SqlLedger, expired: Sequence[Registration], now: datetime, within_days: int = 7
) -> dict[str, Any]:
    """Publish the expiry run as the ``partner-registrations`` markdown artifact (counts)
    and the ``partner-registrations-changes`` table artifact (the registrations this
    run expired, then those expiring within ``within_days``, soonest first).

    Args:
        ledger: where the counts and the registrations expiring soon are read.
        expired: what this run expired.
        now: the moment of the run.
        within_days: how far ahead "expiring soon" looks.

    Returns:
        The counts published: expired by this run, expiring soon, and per status.
    """
    counts = ledger.partners.registration_counts()
    expiring = ledger.partners.registrations(
        statuses=list(HOLDING), expiring_before=now + timedelta(days=within_days)
    )
    create_markdown_artifact(
        key=REPORT_KEY,
        markdown=registrations_markdown(counts, expired, expiring, now, within_days),
        description="Partner registrations expired by this run and expiring soon",
    )
    create_table_artifact(
        key=TABLE_KEY,
        table=[registration_table_row(r, "expired") for r in expired]
        + [registration_table_row(r, "expiring soon") for r in expiring],
        description="Registrations this run expired, then those expiring soon",
    )
    return {"expired_this_run": len(expired), "expiring_soon": len(expiring), "by_status": counts}


@task(name="record-registered-conversions", cache_policy=NO_CACHE)
def record_registered_conversions(
    ledger: SqlLedger, program: Program, now: datetime, batch_size: int = 1000
) -> dict[str, int]:
    """Credit signups and deals without a referral code to the partner who registered
    their company.

    An event counts when its account's domain was registered and it happened inside
    that registration's window; it is attributed as if it carried the partner's
    code, by the same rules (one conversion per referee and milestone; the amount in
    the program currency). A qualified deal extends the registration; a won deal
    converts it. Events carrying a code are left to ``record-conversions`` alone.

    Args:
        ledger: where events are read and conversions stored.
        program: the currency, the registration rules and the reward quoted in notices.
        now: when conversions are recorded.
        batch_size: events per batch.

    Returns:
        Counts of events examined, conversions recorded, duplicates, quarantined,
        notices queued, registrations extended and converted.
    """
    totals = dict.fromkeys(
        (
            "examined",
            "conversions",
            "duplicates",
            "quarantined",
            "notices",
            "extended",
            "converted",
        ),
        0,
    )
    after = 0
    while batch := ledger.partners.registered_events_to_convert(after, batch_size):
        after = batch[-1][0]
        partner_ids = {r.partner_id for _, _, r in batch}
        partners = ledger.asks.contacts(partner_ids)
        codes = ledger.asks.codes_for(partner_ids)
        state: dict[str, Registration] = {}
        extensions: dict[str, Registration] = {}
        credits: list[RegisteredCredit] = []
        rejected: list[Rejected] = []
        for _, event, found in batch:
            registration = state.get(found.registration_id, found)
            partner = partners.get(registration.partner_id)
            code = codes.get(registration.partner_id)
            if partner is None or code is None:
                rejected.append(
                    Rejected(
                        event.source,
                        event.key,
                        "account_id",
                        f"the registering partner {registration.partner_id} has no "
                        "referral code to credit",
                    )
                )
                continue
            try:
                conversion = registered_conversion(
                    event, registration, partner, code, program.currency
                )
            except InputRejected as exc:
                rejected.append(Rejected(event.source, exc.record, exc.field, exc.reason))
                continue
            if conversion is None:
                continue
            credits.append(RegisteredCredit(conversion, registration.registration_id))
            if event.type is PROGRESS_EVENT and registration.holds(now):
                longer = extended(registration, program.registration)
                if longer is not None:
                    registration = extensions[registration.registration_id] = longer
            if event.type is CONVERTING_EVENT:
                registration = replace(registration, status=RegistrationStatus.CONVERTED)
            state[registration.registration_id] = registration
        notices = conversion_notices([c.conversion for c in credits], partners.values(), program)
        result = use_cases.record_registered_conversions(
            ledger,
            [i for i, _, _ in batch],
            credits,
            list(extensions.values()),
            rejected,
            notices,
            now,
        )
        totals["examined"] += len(batch)
        totals["conversions"] += len(result.new)
        totals["duplicates"] += result.duplicates
        totals["quarantined"] += result.quarantined
        totals["notices"] += result.notices
        totals["extended"] += result.extended
        totals["converted"] += result.converted
    run_logger().info(
        "registered-lead conversions: %s", ", ".join(f"{k}={v}" for k, v in totals.items())
    )
    return totals


def _text(value: Any) -> str | None:
    return None if value is None else str(value)
