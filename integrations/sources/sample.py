"""A realistic sample company, written as canonical exports for the file source.

The demo's data: a few hundred accounts and contacts (customers, partner firms and the
company's own employees) with six months of CRM events (won deals, renewals, support
tickets with CSAT, usage milestones) and NPS responses, plus a handful of malformed
rows that must end up quarantined, and leads from other channels (signups without a
referral code, some of them won) for the program metrics to compare referrals with.
Everything derives from a seed and an anchor date kept in ``manifest.json``, so
generating again reproduces the same files and a second demo run changes nothing.

:func:`simulate_referrals` plays the referred friends: after the first cycle has sent
asks, some referrers' codes come back on signups, qualified deals and won deals.
:func:`simulate_partner_leads` plays the partners: deal registrations in the drop
(``registrations.csv``, a few of them wrong or too late), and the registered companies'
signups and deals, which carry no code and are credited to the registering partner.
Domains use the reserved ``.example`` TLD; no real person or company is named.
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
FIRST = [
    "Ada",
    "Bruno",
    "Chloé",
    "Dmitri",
    "Elif",
    "Farah",
    "Gaspard",
    "Hana",
    "Ines",
    "Jonas",
    "Kenji",
    "Lena",
    "Mateo",
    "Nora",
    "Omar",
    "Priya",
    "Quentin",
    "Rosa",
    "Siti",
    "Tomás",
    "Uma",
    "Victor",
    "Wen",
    "Yusuf",
    "Zoé",
    "Aminah",
    "Bao",
    "Camille",
    "Dara",
    "Emeka",
]
LAST = [
    "Martin",
    "Bernard",
    "Rahman",
    "Tan",
    "Okafor",
    "Lindqvist",
    "Moreau",
    "Ibrahim",
    "Novak",
    "Costa",
    "Schmidt",
    "Haddad",
    "Nguyen",
    "Fischer",
    "Laurent",
    "Aziz",
    "Rossi",
    "Kowalski",
    "Dubois",
    "Yamamoto",
    "Lim",
    "Petit",
    "Silva",
    "Meyer",
]
WORDS = [
    "Northwind",
    "Bluebird",
    "Cedar",
    "Atlas",
    "Harbor",
    "Quartz",
    "Summit",
    "Lumen",
    "Orchid",
    "Pioneer",
    "Beacon",
    "Granite",
    "Nimbus",
    "Vertex",
    "Willow",
    "Zephyr",
    "Kestrel",
    "Meridian",
    "Solace",
    "Tidal",
]
TRADES = [
    "Logistics",
    "Analytics",
    "Foods",
    "Health",
    "Robotics",
    "Studio",
    "Retail",
    "Energy",
    "Legal",
    "Travel",
    "Finance",
    "Labs",
]
MILESTONES = [
    "100 projects",
    "1,000 API calls a day",
    "50 active seats",
    "first automation",
    "10,000 invoices",
]
EVENT_FIELDS = [
    "event_id",
    "type",
    "occurred_at",
    "account_id",
    "contact_id",
    "amount",
    "currency",
    "score",
    "csat",
    "priority",
    "milestone",
    "referral_code",
    "deal_id",
    "ticket_id",
    "referee_email_domain",
]


@dataclass(frozen=True)
class Sample:
    folder: Path
    anchor: datetime
    seed: int

    @property
    def first_cycle_at(self) -> datetime:
        """The first cycle runs 30 days before the anchor, so referrals have time."""
        return self.anchor - timedelta(days=30)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _write_csv(path: Path, fields: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(fields))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in fields})


def load_or_generate(folder: Path, accounts: int = 300, seed: int = 7) -> Sample:
    """The sample in ``folder``: generated once, then reused as it is."""
    manifest = folder / MANIFEST
    if manifest.exists():
        meta = json.loads(manifest.read_text(encoding="utf-8"))
        return Sample(folder, datetime.fromisoformat(meta["anchor"]), int(meta["seed"]))
    anchor = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    return generate(folder, anchor, accounts=accounts, seed=seed)


def generate(folder: Path, anchor: datetime, accounts: int = 300, seed: int = 7) -> Sample:
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    sample = Sample(folder, anchor, seed)
    ask_window = (sample.first_cycle_at - timedelta(days=13), sample.first_cycle_at)
    account_rows: list[dict[str, Any]] = []
    contact_rows: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    nps: list[dict[str, Any]] = []
    counter = iter(range(1, 10**9))

    def when(start: datetime, end: datetime) -> datetime:
        span = (end - start).total_seconds()
        return (start + timedelta(seconds=rng.uniform(0, span))).replace(microsecond=0)

    def person(account_id: str, domain: str, kind: str) -> dict[str, Any]:
        first, last = rng.choice(FIRST), rng.choice(LAST)
        n = next(counter)
        email = f"{first.lower()}.{last.lower()}{n}@{domain}".encode("ascii", "ignore").decode()
        row = {
            "contact_id": f"C{n:05d}",
            "account_id": account_id,
            "name": f"{first} {last}",
            "email": email if rng.random() > 0.03 else "",
            "referrer_type": kind,
            "opted_out": "true" if rng.random() < 0.05 else "false",
            "stripe_customer_id": f"cus_demo{n:05d}" if kind == "customer" else "",
            "stripe_account_id": f"acct_demo{n:05d}" if kind == "partner" else "",
        }
        contact_rows.append(row)
        return row

    def event(kind: str, at: datetime, account: str, contact: str | None, **extra: Any) -> None:
        events.append(
            {
                "event_id": f"E{next(counter):07d}",
                "type": kind,
                "occurred_at": _iso(at),
                "account_id": account,
                "contact_id": contact,
                **extra,
            }
        )

    start = anchor - timedelta(days=180)
    for i in range(accounts):
        name = f"{rng.choice(WORDS)} {rng.choice(TRADES)}"
        domain = f"{name.lower().replace(' ', '-')}-{i}.example"
        partner = i % 15 == 0
        account_id = f"A{i:04d}"
        tenure_days = rng.randint(10, 45) if rng.random() < 0.08 else rng.randint(90, 1500)
        account_rows.append(
            {
                "account_id": account_id,
                "name": name,
                "domain": domain,
                "customer_since": (anchor - timedelta(days=tenure_days)).date(),
            }
        )
        people = [
            person(account_id, domain, "partner" if partner else "customer")
            for _ in range(1 if partner else rng.choice((1, 1, 2, 2, 3)))
        ]
        champion = people[0]["contact_id"]
        if partner:
            # Partners are the program's heaviest referrers: make sure they are asked.
            nps.append(
                {
                    "response_id": f"N{next(counter):06d}",
                    "contact_id": champion,
                    "account_id": account_id,
                    "score": 10,
                    "responded_at": _iso(when(*ask_window)),
                }
            )
            continue
        if rng.random() < 0.35:
            event(
                "deal_won",
                when(start, anchor),
                account_id,
                champion,
                amount=f"{rng.randint(20, 400) * 100}.00",
                currency="EUR",
                deal_id=f"D{i:04d}",
            )
        if rng.random() < 0.25:
            event("renewal", when(start, anchor), account_id, champion)
        for _ in range(rng.choice((0, 1, 1, 2))):
            opened = when(start, anchor)
            ticket = f"T{next(counter):06d}"
            priority = rng.choices(["low", "normal", "high", "urgent"], [30, 50, 15, 5])[0]
            event(
                "ticket_opened", opened, account_id, champion, priority=priority, ticket_id=ticket
            )
            if rng.random() < 0.85:
                # Never after the anchor (now): an export holds no future events, and
                # the file source refuses them (date_out_of_range).
                event(
                    "ticket_resolved",
                    min(opened + timedelta(hours=rng.randint(2, 96)), anchor),
                    account_id,
                    champion,
                    priority=priority,
                    ticket_id=ticket,
                    csat=rng.choices([1, 2, 3, 4, 5], [5, 5, 15, 35, 40])[0],
                )
        if rng.random() < 0.4:
            event(
                "usage_milestone",
                when(start, anchor),
                account_id,
                rng.choice(people)["contact_id"],
                milestone=rng.choice(MILESTONES),
            )
        for contact in people:
            if rng.random() < 0.6:
                score = rng.choices(range(11), [2, 1, 1, 2, 2, 3, 4, 12, 18, 25, 30])[0]
                window = ask_window if rng.random() < 0.35 else (start, anchor)
                nps.append(
                    {
                        "response_id": f"N{next(counter):06d}",
                        "contact_id": contact["contact_id"],
                        "account_id": account_id,
                        "score": score,
                        "responded_at": _iso(when(*window)),
                    }
                )

    # The company's own employees refer too; they are asked after an internal survey.
    account_rows.append(
        {
            "account_id": "INTERNAL",
            "name": "Our company",
            "domain": "our-company.example",
            "customer_since": "",
        }
    )
    for _ in range(8):
        row = person("INTERNAL", "our-company.example", "employee")
        nps.append(
            {
                "response_id": f"N{next(counter):06d}",
                "contact_id": row["contact_id"],
                "account_id": "INTERNAL",
                "score": 9,
                "responded_at": _iso(when(*ask_window)),
            }
        )

    # What real exports contain sooner or later: each of these must be quarantined.
    events += [
        {"event_id": "", "type": "renewal", "occurred_at": _iso(anchor), "account_id": "A0001"},
        {
            "event_id": "BAD-TYPE",
            "type": "deal_lost",
            "occurred_at": _iso(anchor),
            "account_id": "A0001",
        },
        {
            "event_id": "BAD-DATE",
            "type": "renewal",
            "occurred_at": "31/12/2025",
            "account_id": "A0002",
        },
        {
            "event_id": "BAD-AMOUNT",
            "type": "deal_won",
            "occurred_at": _iso(anchor),
            "account_id": "A0003",
            "amount": "12,50",
            "currency": "EUR",
        },
        dict(events[0]),  # a row exported twice
    ]
    nps.append(
        {
            "response_id": "BAD-SCORE",
            "contact_id": "C00001",
            "account_id": "A0000",
            "score": 11,
            "responded_at": _iso(anchor),
        }
    )

    _write_csv(
        folder / "accounts.csv", ["account_id", "name", "domain", "customer_since"], account_rows
    )
    _write_csv(folder / "contacts.csv", list(contact_rows[0]), contact_rows)
    _write_csv(folder / "events.csv", EVENT_FIELDS, events)
    _write_csv(
        folder / "nps.csv",
        ["response_id", "contact_id", "account_id", "score", "responded_at"],
        nps,
    )
    with (folder / "nps.csv").open("ab") as handle:
        # One response exported in a legacy encoding (Latin-1 "é").
        handle.write(b"BAD-BYTES,C00002,A0000,9," + _iso(anchor).encode() + b"\xe9\n")
    _write_other_channel_leads(folder, anchor, seed, accounts)
    (folder / MANIFEST).write_text(
        json.dumps({"anchor": anchor.isoformat(), "seed": seed, "accounts": accounts}),
        encoding="utf-8",
    )
    return sample


def _write_other_channel_leads(folder: Path, anchor: datetime, seed: int, accounts: int) -> None:
    """Leads from other channels (ads, search, events): signups without a referral code
    over the six months, about a fifth of them won after a one-to-three-month cycle.

    The program metrics compare referred leads with these. They have their own random
    stream and their own files (``accounts-other-channels.csv``,
    ``events-other-channels.csv``), so every other file of the sample, and so the
    cycle's asks, rewards and payouts, stay exactly as without them. Their won deals
    name no contact: they become nobody's moment to be asked (detection counts them
    as moments without a contact).
    """
    rng = random.Random(seed * 104_729 + 1)
    start = anchor - timedelta(days=180)
    span = (anchor - timedelta(days=3) - start).total_seconds()
    account_rows: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    for n in range(max(10, accounts // 3)):
        account = f"L{n:04d}"
        signup = (start + timedelta(seconds=rng.uniform(0, span))).replace(microsecond=0)
        won = signup + timedelta(days=rng.uniform(18, 75), hours=rng.randint(0, 23))
        converts = rng.random() < 0.22 and won < anchor
        deal = rng.randint(20, 300) * 100
        account_rows.append(
            {
                "account_id": account,
                "name": f"{rng.choice(WORDS)} {rng.choice(TRADES)} (inbound)",
                "domain": f"inbound-{n}.example",
                "customer_since": won.date() if converts else "",
            }
        )
        common = {"account_id": account, "deal_id": f"LD{n:04d}"}
        events.append(
            {
                "event_id": f"LEAD-{n}-signup",
                "type": "signup",
                "occurred_at": _iso(signup),
                **common,
            }
        )
        if converts:
            events.append(
                {
                    "event_id": f"LEAD-{n}-won",
                    "type": "deal_won",
                    "occurred_at": _iso(won),
                    "amount": f"{deal}.00",
                    "currency": "EUR",
                    **common,
                }
            )
    _write_csv(
        folder / "accounts-other-channels.csv",
        ["account_id", "name", "domain", "customer_since"],
        account_rows,
    )
    _write_csv(folder / "events-other-channels.csv", EVENT_FIELDS, events)


def simulate_referrals(
    sample: Sample, codes: Mapping[str, str], contacts: Mapping[str, Mapping[str, str]]
) -> int:
    """Write the referred friends' signups and deals that carry referrers' codes.

    ``codes`` maps referrer contact id to code; ``contacts`` gives each referrer's
    ``referrer_type`` and ``domain``. Returns how many referrals were written.
    """
    rng = random.Random(sample.seed * 7919)
    base = sample.first_cycle_at
    accounts: list[dict[str, Any]] = []
    people: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    referrers = sorted(codes)
    chosen = [c for c in referrers if rng.random() < 0.45]
    for n, referrer in enumerate(chosen):
        kind = contacts[referrer]["referrer_type"]
        account = f"R{n:04d}"
        name = f"{rng.choice(WORDS)} {rng.choice(TRADES)} (referred)"
        domain = f"referred-{n}.example"
        if n == 0:
            domain = contacts[referrer]["domain"]  # a colleague "referring" their own firm
        accounts.append(
            {"account_id": account, "name": name, "domain": domain, "customer_since": ""}
        )
        people.append(
            {
                "contact_id": f"RC{n:04d}",
                "account_id": account,
                "name": f"{rng.choice(FIRST)} {rng.choice(LAST)}",
                "email": "",
                "referrer_type": "customer",
                "opted_out": "false",
            }
        )
        signup = base + timedelta(days=rng.uniform(0.5, 4))
        qualified = signup + timedelta(days=rng.uniform(1, 4))
        won = qualified + timedelta(days=rng.uniform(1, 5))
        deal = rng.randint(20, 700) * 100 if kind == "partner" else rng.randint(30, 400) * 100
        common = {
            "account_id": account,
            "contact_id": f"RC{n:04d}",
            "referral_code": codes[referrer],
            "deal_id": f"RD{n:04d}",
            "referee_email_domain": domain,
        }
        events.append(
            {"event_id": f"REF-{n}-signup", "type": "signup", "occurred_at": _iso(signup), **common}
        )
        events.append(
            {
                "event_id": f"REF-{n}-qualified",
                "type": "deal_qualified",
                "occurred_at": _iso(qualified),
                **common,
            }
        )
        if rng.random() < 0.8:
            events.append(
                {
                    "event_id": f"REF-{n}-won",
                    "type": "deal_won",
                    "occurred_at": _iso(won),
                    "amount": f"{deal}.00",
                    "currency": "EUR",
                    **common,
                }
            )
    events.append(
        {
            "event_id": "REF-unknown-code",
            "type": "signup",
            "occurred_at": _iso(base + timedelta(days=2)),
            "account_id": "R9999",
            "referral_code": "RAAAAAAAAAAAAAAAAAAAA",
        }
    )
    if chosen:
        events.append(
            {
                "event_id": "REF-usd",
                "type": "deal_won",
                "occurred_at": _iso(base + timedelta(days=3)),
                "account_id": "R9998",
                "amount": "1000.00",
                "currency": "USD",
                "referral_code": codes[chosen[-1]],
            }
        )
    _write_csv(
        sample.folder / "accounts-referred.csv",
        ["account_id", "name", "domain", "customer_since"],
        accounts,
    )
    _write_csv(
        sample.folder / "contacts-referred.csv",
        ["contact_id", "account_id", "name", "email", "referrer_type", "opted_out"],
        people,
    )
    _write_csv(sample.folder / "events-referrals.csv", EVENT_FIELDS, events)
    return len(chosen)


REGISTRATION_FIELDS = ["partner_id", "domain", "contact", "evidence", "registered_at"]
EVIDENCE = [
    "Discovery call with the CFO, budget approved for next quarter",
    "On-site demo booked for 40 seats, IT sponsor identified",
    "Workshop held with the operations team, pilot scope agreed",
    "Budget conversation with procurement, shortlist of two vendors",
]


def simulate_partner_leads(sample: Sample, partners: Sequence[str]) -> int:
    """Write the partners' deal registrations and the leads they registered.

    Up to six partners (of ``partners``, contact ids) each register a prospect company
    (``partner-lead-<n>.example``) 5 to 20 days before the first cycle, with a CRM
    contact id and qualification evidence, in ``registrations.csv``. The prospects
    then sign up, qualify and mostly win, on their own accounts and without a referral
    code (``accounts-partner-leads.csv``, ``events-partner-leads.csv``): the cycle
    credits them to the registering partner. A second partner claims the first
    prospect a few days after the first one did (rejected: the company is held), and
    three rows are wrong (a free-mail domain, an unknown partner, evidence too thin to
    be any): they are quarantined, and the rest goes on.

    Its own random stream and files: the other files of the sample, and so the asks
    and referrals, stay exactly as without it. Returns how many registrations were
    written (the rival and the wrong rows not counted).
    """
    rng = random.Random(sample.seed * 15_485_863 + 3)
    base = sample.first_cycle_at
    chosen = sorted(partners)[:6]
    registrations: list[dict[str, Any]] = []
    accounts: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    for n, partner in enumerate(chosen):
        account, domain = f"PL{n:04d}", f"partner-lead-{n}.example"
        registered = (base - timedelta(days=rng.uniform(5, 20))).replace(microsecond=0)
        registrations.append(
            {
                "partner_id": partner,
                "domain": domain,
                "contact": f"PLC{n:04d}",
                "evidence": rng.choice(EVIDENCE),
                "registered_at": _iso(registered),
            }
        )
        accounts.append(
            {
                "account_id": account,
                "name": f"{rng.choice(WORDS)} {rng.choice(TRADES)} (partner lead)",
                "domain": domain,
                "customer_since": "",
            }
        )
        signup = registered + timedelta(days=rng.uniform(1, 5))
        qualified = signup + timedelta(days=rng.uniform(2, 6))
        won = qualified + timedelta(days=rng.uniform(2, 10))
        # No contact on the events: the prospect is nobody the program asks.
        common = {"account_id": account, "deal_id": f"PLD{n:04d}"}
        events.append(
            {"event_id": f"PL-{n}-signup", "type": "signup", "occurred_at": _iso(signup), **common}
        )
        events.append(
            {
                "event_id": f"PL-{n}-qualified",
                "type": "deal_qualified",
                "occurred_at": _iso(qualified),
                **common,
            }
        )
        if rng.random() < 0.7 or n == 0:
            events.append(
                {
                    "event_id": f"PL-{n}-won",
                    "type": "deal_won",
                    "occurred_at": _iso(won),
                    "amount": f"{rng.randint(50, 600) * 100}.00",
                    "currency": "EUR",
                    **common,
                }
            )
    written = len(registrations)
    if len(chosen) > 1:
        # Too late: the first partner holds this company.
        registrations.append(
            dict(
                registrations[0],
                partner_id=chosen[1],
                contact="PLC9000",
                registered_at=_iso(
                    datetime.fromisoformat(registrations[0]["registered_at"]) + timedelta(days=2)
                ),
            )
        )
    if chosen:
        at = _iso(base - timedelta(days=4))
        registrations += [
            {
                "partner_id": chosen[0],
                "domain": "gmail.com",
                "contact": "PLC9001",
                "evidence": EVIDENCE[0],
                "registered_at": at,
            },
            {
                "partner_id": "P-UNKNOWN",
                "domain": "partner-lead-99.example",
                "contact": "PLC9002",
                "evidence": EVIDENCE[1],
                "registered_at": at,
            },
            {
                "partner_id": chosen[-1],
                "domain": "partner-lead-98.example",
                "contact": "PLC9003",
                "evidence": "call",
                "registered_at": at,
            },
        ]
    _write_csv(sample.folder / "registrations.csv", REGISTRATION_FIELDS, registrations)
    _write_csv(
        sample.folder / "accounts-partner-leads.csv",
        ["account_id", "name", "domain", "customer_since"],
        accounts,
    )
    _write_csv(sample.folder / "events-partner-leads.csv", EVENT_FIELDS, events)
    return written
