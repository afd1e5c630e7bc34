"""The tracked link end to end on the ledger (SQLite, and PostgreSQL when configured):
``GET /r/<code>`` redirects, sets the visitor cookie, stores the click once with a keyed
hash of the visitor and nothing else about them, and a conversion after a person's
click counts it as a touch of the referrer."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import uvicorn
from sqlalchemy import delete, select, update
from sqlalchemy.exc import SQLAlchemyError

from domain.codes import new_referral_code
from domain.links import LinkClick, VisitorKind, visitor_hash
from domain.models import Conversion, Milestone, derived_id
from integrations.ledger.sql import SqlLedger
from integrations.ledger.tables import LinkClickRow, TouchpointRow
from integrations.web import ClickRecorder, LinkApp, create_app
from integrations.web.app import NOT_FOUND_PAGE, VISITOR_COOKIE
from tasks.use_cases import conversions as use_cases
from tasks.use_cases.asks import record_ask_decisions
from tests.conftest import contact, people_batch

KEY = b"a-visitor-key-of-at-least-32-characters"
LANDING = "https://example.com/join"
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"


def given_code(ledger: SqlLedger, now: datetime, contact_id: str, **extra: Any) -> str:
    """A referrer holding a real referral code."""
    ledger.sources.record_batch(people_batch(contact(contact_id, f"A-{contact_id}", **extra)), now)
    record_ask_decisions(ledger, [], {contact_id: new_referral_code()}, now, now)
    return ledger.asks.codes_for([contact_id])[contact_id]


def link_app(ledger: SqlLedger, now: datetime, **options: Any) -> LinkApp:
    return create_app(ledger.links, landing=LANDING, visitor_key=KEY, clock=lambda: now, **options)


@contextmanager
def serving(app: LinkApp, **client: Any) -> Iterator[httpx.Client]:
    """``app`` under uvicorn on 127.0.0.1 (a free port, its lifespan on) in a thread, and
    a client of it; leaving stops the server gracefully, as SIGTERM does."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, log_config=None, lifespan="on", ws="none"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="links-test-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", **client) as http:
            yield http
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def stored(ledger: SqlLedger) -> list[dict[str, Any]]:
    with ledger.engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(LinkClickRow.__table__)).mappings()]


def test_a_click_redirects_to_the_landing_page_with_the_code_and_sets_the_visitor_cookie(
    ledger: SqlLedger, now: datetime
) -> None:
    code = given_code(ledger, now, "C1")
    with serving(link_app(ledger, now)) as client:
        answer = client.get(f"/r/{code}", headers={"User-Agent": FIREFOX})

    assert answer.status_code == 302
    target = urlsplit(answer.headers["location"])
    assert (target.scheme, target.netloc, target.path) == ("https", "example.com", "/join")
    assert parse_qs(target.query) == {"ref": [code]}
    assert answer.headers["cache-control"] == "no-store"
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith(f"{VISITOR_COOKIE}=")
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie
    assert "Path=/" in cookie
    assert f"Max-Age={365 * 24 * 3600}" in cookie
    assert "Secure" not in cookie  # plain http here: a Secure cookie would never return


def test_the_cookie_is_secure_when_the_link_is_served_over_https(
    ledger: SqlLedger, now: datetime
) -> None:
    code = given_code(ledger, now, "C1")
    # Behind a TLS proxy on the same host: uvicorn trusts its X-Forwarded-Proto.
    with serving(link_app(ledger, now)) as client:
        answer = client.get(
            f"/r/{code}", headers={"User-Agent": FIREFOX, "X-Forwarded-Proto": "https"}
        )
    assert answer.status_code == 302
    assert "; Secure" in answer.headers["set-cookie"]


def test_a_click_is_stored_with_a_keyed_hash_of_the_visitor_and_no_address_or_agent(
    ledger: SqlLedger, now: datetime
) -> None:
    code = given_code(ledger, now, "C1")
    with serving(link_app(ledger, now)) as client:
        first = client.get(f"/r/{code}", headers={"User-Agent": FIREFOX})
        visitor = first.cookies[VISITOR_COOKIE]
        again = client.get(f"/r/{code.lower()}", headers={"User-Agent": FIREFOX})

    assert again.cookies[VISITOR_COOKIE] == visitor  # the returning visitor keeps their id
    rows = stored(ledger)
    assert len(rows) == 2
    assert len({r["click_id"] for r in rows}) == 2
    for row in rows:
        assert set(row) == {
            "click_id",
            "code",
            "referrer_id",
            "clicked_at",
            "visitor_hash",
            "visitor_kind",
            "created_at",
        }
        assert (row["code"], row["referrer_id"], row["visitor_kind"]) == (code, "C1", "person")
        assert row["visitor_hash"] == visitor_hash(KEY, visitor)
        assert row["clicked_at"] == now
        text = repr(row)
        assert visitor not in text
        assert "Firefox" not in text
        assert "127.0.0.1" not in text


def test_bots_previewers_and_prefetches_are_stored_but_not_counted(
    ledger: SqlLedger, now: datetime
) -> None:
    code = given_code(ledger, now, "C1")
    with serving(link_app(ledger, now)) as client:
        previews = [
            client.get(f"/r/{code}", headers={"User-Agent": "Slackbot-LinkExpanding 1.0"}),
            client.get(f"/r/{code}", headers={"User-Agent": "WhatsApp/2.23.20.0"}),
            client.get(f"/r/{code}", headers={"User-Agent": FIREFOX, "Sec-Purpose": "prefetch"}),
            client.head(f"/r/{code}", headers={"User-Agent": FIREFOX}),
        ]
    assert [p.status_code for p in previews] == [302] * 4
    assert sorted(r["visitor_kind"] for r in stored(ledger)) == ["bot", "bot", "bot", "prefetch"]

    won = conversion(code, "C1", now + timedelta(hours=1), "crm:won-after-previews")
    use_cases.record_crm_conversions(ledger, [], [won], [], {}, now)
    touches = ledger.touchpoints.touchpoints_for([won])[won.conversion_id]
    assert [t.kind.value for t in touches] == ["code"]


def test_unknown_revoked_and_malformed_codes_answer_the_same_plain_page(
    ledger: SqlLedger, now: datetime
) -> None:
    given_code(ledger, now, "C1")
    revoked = given_code(ledger, now, "C2", opted_out=True)
    unknown = new_referral_code()
    with serving(link_app(ledger, now)) as client:
        answers = [
            client.get(f"/r/{c}", headers={"User-Agent": FIREFOX})
            for c in (unknown, revoked, "not-a-code", "")
        ]
    for answer in answers:
        assert answer.status_code == 404
        assert answer.text == NOT_FOUND_PAGE
        assert "set-cookie" not in answer.headers
        assert without_date(answer.headers) == without_date(answers[0].headers)
    assert stored(ledger) == []


def without_date(headers: httpx.Headers) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k != "date"}


def test_a_code_revoked_while_served_stops_once_the_cache_lets_it_go(
    ledger: SqlLedger, now: datetime
) -> None:
    code = given_code(ledger, now, "C1")
    app = link_app(ledger, now, code_cache_seconds=0)
    with serving(app) as client:
        assert client.get(f"/r/{code}", headers={"User-Agent": FIREFOX}).status_code == 302
        ledger.sources.record_batch(people_batch(contact("C1", "A-C1", opted_out=True)), now)
        assert client.get(f"/r/{code}", headers={"User-Agent": FIREFOX}).status_code == 404


def conversion(code: str, referrer: str, at: datetime, key: str) -> Conversion:
    return Conversion(
        conversion_id=derived_id("conversion", key),
        source_event=key,
        referral_code=code,
        referrer_id=referrer,
        referee_account_id="NEWCO",
        referee_contact_id=None,
        milestone=Milestone.CUSTOMER,
        occurred_at=at,
        amount=None,
    )


def test_a_conversion_after_a_persons_click_has_the_last_click_before_it_as_a_touch(
    ledger: SqlLedger, now: datetime
) -> None:
    code = given_code(ledger, now, "C1")
    clicked = [now - timedelta(days=3), now - timedelta(days=1), now + timedelta(days=1)]
    times = iter(clicked)

    def clock() -> datetime:
        return next(times)

    app = create_app(ledger.links, landing=LANDING, visitor_key=KEY, clock=clock)
    with serving(app) as client:
        for _ in range(3):
            assert client.get(f"/r/{code}", headers={"User-Agent": FIREFOX}).status_code == 302
    by_time = {r["clicked_at"]: r["click_id"] for r in stored(ledger)}

    won = conversion(code, "C1", now, "crm:won-after-click")
    use_cases.record_crm_conversions(ledger, [], [won], [], {}, now)
    use_cases.record_crm_conversions(ledger, [], [won], [], {}, now)  # again: nothing new

    with ledger.engine.connect() as conn:
        touches = {
            (r.referrer_id, r.kind, r.ref, r.occurred_at)
            for r in conn.execute(select(TouchpointRow.__table__))
        }
    last_before = clicked[1]
    assert touches == {
        ("C1", "code", won.conversion_id, now),
        ("C1", "ask_click", f"link:{by_time[last_before]}", last_before),
    }
    found = ledger.touchpoints.touchpoints_for([won])[won.conversion_id]
    assert [(t.kind.value, t.at) for t in found] == [("ask_click", last_before), ("code", now)]


def test_clicks_waiting_in_memory_are_stored_on_a_graceful_stop(
    ledger: SqlLedger, now: datetime
) -> None:
    code = given_code(ledger, now, "C1")
    # Nothing would be written for a minute, or before 1,000 clicks: only the stop does.
    app = link_app(ledger, now, flush_clicks=1000, flush_seconds=60)
    with serving(app) as client:
        for _ in range(25):
            assert client.get(f"/r/{code}", headers={"User-Agent": FIREFOX}).status_code == 302
        assert stored(ledger) == []
        assert app.recorder.pending == 25
    assert len(stored(ledger)) == 25
    assert app.recorder.pending == 0


def test_a_full_batch_is_written_without_waiting_for_the_interval(
    ledger: SqlLedger, now: datetime
) -> None:
    code = given_code(ledger, now, "C1")
    app = link_app(ledger, now, flush_clicks=5, flush_seconds=60)
    with serving(app) as client:
        for _ in range(5):
            client.get(f"/r/{code}", headers={"User-Agent": FIREFOX})
        for _ in range(200):
            if len(stored(ledger)) == 5:
                break
            client.get("/healthz")  # the background task writes between requests
            time.sleep(0.01)
        assert len(stored(ledger)) == 5


def test_the_ledger_refuses_to_change_or_delete_a_stored_click(
    ledger: SqlLedger, now: datetime
) -> None:
    code = given_code(ledger, now, "C1")
    with serving(link_app(ledger, now)) as client:
        client.get(f"/r/{code}", headers={"User-Agent": FIREFOX})
    for statement in (update(LinkClickRow).values(visitor_kind="bot"), delete(LinkClickRow)):
        with pytest.raises(SQLAlchemyError), ledger.engine.begin() as conn:
            conn.execute(statement)
    assert [r["visitor_kind"] for r in stored(ledger)] == ["person"]


class FlakyStore:
    """Fails the first write, then stores: what a database restart looks like."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.failures = 1

    def live_referrer(self, code: str) -> str | None:
        return "C1"

    def record_link_clicks(self, clicks: Sequence[LinkClick], now: datetime) -> int:
        if self.failures:
            self.failures -= 1
            raise SQLAlchemyError("the database is restarting")
        self.batches.append([c.click_id for c in clicks])
        return len(clicks)


def test_a_failed_write_keeps_its_clicks_for_the_next_attempt(now: datetime) -> None:
    store = FlakyStore()
    recorder = ClickRecorder(store, flush_clicks=1000, flush_seconds=60)
    clicks = [
        LinkClick(f"click-{i}", "RCODE", "C1", now, "0" * 64, VisitorKind.PERSON) for i in range(3)
    ]

    async def scenario() -> tuple[bool, bool]:
        for click in clicks[:2]:
            recorder.add(click)
        first = await recorder.flush()
        recorder.add(clicks[2])
        second = await recorder.flush()
        return first, second

    assert asyncio.run(scenario()) == (False, True)
    assert store.batches == [["click-0", "click-1", "click-2"]]
    assert recorder.pending == 0
