"""The referrer's own page on the ledger (SQLite, and PostgreSQL when configured): a
magic link opens the page of the referrer it was made for and nobody else's; expired
and tampered links get one plain refusal; the reward choice needs its CSRF token and
decides the rail of rewards not yet paid; a fresh link is asked for by email with the
same answer for every address, within limits."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from domain.links import LinkClick, VisitorKind
from domain.models import Milestone, PayoutRailKind, ReferrerType
from domain.money import Money
from domain.program import Program, RewardChoice
from integrations.email.fake import RecordingEmailSender
from integrations.ledger.engine import make_engine
from integrations.ledger.sql import SqlLedger
from integrations.ledger.tables import T_LINK_CLICKS, T_NOTIFICATIONS, T_PAGE_LINK_REQUESTS
from integrations.payments.fake import RecordingRail
from integrations.web import LinkApp, create_app
from integrations.web.magic import MagicLinks, PageLinks
from integrations.web.pages import PageLimits, ReferrerPages
from tasks.emails import send_notifications
from tasks.payouts import submit_payouts
from tests.conftest import contact
from tests.integration.test_link_clicks import given_code, serving
from tests.integration.test_payout_crashes import seed_payable_reward

KEY = b"a-visitor-key-of-at-least-32-characters"
PAGE_KEY = b"a-page-key-of-at-least-32-characters!!"
BASE = "https://refer.example.com"
STRIPE = {PayoutRailKind.STRIPE_TRANSFER, PayoutRailKind.STRIPE_BALANCE}


def with_choices(program: Program) -> Program:
    return Program.model_validate(
        {
            **program.model_dump(mode="json"),
            "reward_choices": {"customer": ["cash", "account_credit"]},
        }
    )


@pytest.fixture
def magic() -> MagicLinks:
    return MagicLinks(PAGE_KEY, 3600)


def web_app(
    ledger: SqlLedger,
    program: Program,
    magic: MagicLinks,
    now: datetime,
    rails: Any = frozenset(STRIPE),
    limits: PageLimits | None = None,
) -> LinkApp:
    pages = ReferrerPages(
        ledger.referrer_side,
        magic,
        program,
        BASE,
        rails,
        KEY,
        limits or PageLimits(),
        clock=lambda: now,
    )
    return create_app(
        ledger.links,
        landing="https://example.com/join",
        visitor_key=KEY,
        pages=pages,
        clock=lambda: now,
    )


@pytest.fixture
def client(
    ledger: SqlLedger, program: Program, magic: MagicLinks, now: datetime
) -> Iterator[httpx.Client]:
    with serving(web_app(ledger, with_choices(program), magic, now)) as http:
        yield http


@pytest.fixture
def two_referrers(ledger: SqlLedger, now: datetime) -> dict[str, str]:
    """A and B, each with a reward of their own; A with two human clicks and a bot."""
    a = seed_payable_reward(
        ledger, contact("A", "ACC-A", stripe_customer_id="cus_A"), now, key="deal-a"
    )
    b = seed_payable_reward(
        ledger, contact("B", "ACC-B"), now, key="deal-b", amount=Money(777700, "EUR")
    )
    code = ledger.asks.codes_for(["A"])["A"]
    ledger.links.record_link_clicks(
        [
            LinkClick(f"k{i}", code, "A", now, "f" * 64, kind)
            for i, kind in enumerate([VisitorKind.PERSON, VisitorKind.PERSON, VisitorKind.BOT])
        ],
        now,
    )
    return {"A": a, "B": b}


def page_of(client: httpx.Client, magic: MagicLinks, who: str) -> Any:
    return client.get(f"/p/{magic.token_for(who)}")


def test_the_page_shows_the_referrers_own_link_progress_and_reward(
    client: httpx.Client, magic: MagicLinks, ledger: SqlLedger, two_referrers: dict[str, str]
) -> None:
    response = page_of(client, magic, "A")

    assert response.status_code == 200
    html = response.text
    assert "Hi Person" in html
    assert f"{BASE}/r/CODE-A" in html
    assert "25.00 EUR" in html
    assert "Ready to pay" in html
    assert re.search(r"Clicks on your link</dt><dd>2<", html)  # the bot is not counted
    assert re.search(r"Customers</dt><dd>1<", html)
    assert "REF-deal-a" not in html  # the referee's account is never shown
    for share in ("wa.me/?text=", "linkedin.com/sharing", "mailto:?"):
        assert share in html


def test_a_token_for_one_referrer_never_shows_anothers_data(
    client: httpx.Client, magic: MagicLinks, two_referrers: dict[str, str]
) -> None:
    page_a, page_b = page_of(client, magic, "A").text, page_of(client, magic, "B").text

    assert "7,777.00 EUR" in page_b
    assert "CODE-B" in page_b
    for b_only in ("7,777.00 EUR", "CODE-B"):
        assert b_only not in page_a
    for a_only in ("25.00 EUR", "CODE-A"):
        assert a_only not in page_b


def test_page_answers_are_never_cached_framed_or_sent_as_referrer(
    client: httpx.Client, magic: MagicLinks, two_referrers: dict[str, str]
) -> None:
    for response in (page_of(client, magic, "A"), client.get("/p/forged"), client.get("/p/new")):
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert response.headers["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]


def without_nonce(html: str) -> str:
    """The page as a visitor reads it (each answer has a fresh CSP nonce)."""
    return re.sub(r'nonce="[^"]+"', 'nonce=""', html)


def test_expired_tampered_and_unknown_tokens_get_the_same_plain_refusal(
    ledger: SqlLedger,
    program: Program,
    now: datetime,
    two_referrers: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    magic = MagicLinks(PAGE_KEY, 60)
    good = magic.token_for("A")
    tampered = good[:-3] + ("xyz" if good[-3:] != "xyz" else "abc")
    other_key = MagicLinks(b"another-page-key-of-at-least-32-chars!!", 60).token_for("A")
    unknown = magic.token_for("NOBODY")

    with serving(web_app(ledger, program, magic, now)) as http:
        assert http.get(f"/p/{good}").status_code == 200
        answers = [http.get(f"/p/{t}") for t in (tampered, other_key, unknown, "x" * 500)]
        real = time.time
        monkeypatch.setattr("itsdangerous.timed.time", SimpleNamespace(time=lambda: real() + 61))
        answers.append(http.get(f"/p/{good}"))

    for answer in answers:
        assert answer.status_code == 404
        assert without_nonce(answer.text) == without_nonce(answers[0].text)
        assert "expired or is not valid" in answer.text
        assert "CODE-A" not in answer.text


def choose(client: httpx.Client, token: str, **form: str) -> Any:
    return client.post(f"/p/{token}/choice", data=form, follow_redirects=False)


def test_the_reward_choice_is_refused_without_its_csrf_token_or_with_anothers(
    client: httpx.Client, magic: MagicLinks, ledger: SqlLedger, two_referrers: dict[str, str]
) -> None:
    token_a, token_b = magic.token_for("A"), magic.token_for("B")

    missing = choose(client, token_a, choice="account_credit")
    wrong = choose(client, token_a, choice="account_credit", csrf="0" * 64)
    borrowed = choose(client, token_a, choice="account_credit", csrf=magic.csrf_for(token_b, "B"))

    assert [r.status_code for r in (missing, wrong, borrowed)] == [403, 403, 403]
    assert ledger.referrer_side.reward_choices(["A"]) == {}


def test_a_reward_choice_is_recorded_latest_wins_and_is_shown_as_saved(
    client: httpx.Client, magic: MagicLinks, ledger: SqlLedger, two_referrers: dict[str, str]
) -> None:
    token = magic.token_for("A")
    # The form's CSRF token is bound to the page's own token: read that same page.
    csrf = re.search(r'name="csrf" value="([0-9a-f]{64})"', client.get(f"/p/{token}").text)
    assert csrf is not None

    first = choose(client, token, choice="account_credit", csrf=csrf.group(1))
    assert first.status_code == 303
    assert ledger.referrer_side.reward_choices(["A", "B"]) == {"A": RewardChoice.ACCOUNT_CREDIT}
    choose(client, token, choice="cash", csrf=csrf.group(1))
    assert ledger.referrer_side.reward_choices(["A"]) == {"A": RewardChoice.CASH}

    shown = client.get(first.headers["location"])
    assert "Saved: your rewards not yet paid" in shown.text
    assert re.search(r'value="cash" checked', shown.text)
    assert choose(client, token, choice="gift_card", csrf=csrf.group(1)).status_code == 400


def test_no_choice_form_where_the_program_offers_cash_only(
    ledger: SqlLedger, program: Program, magic: MagicLinks, now: datetime, two_referrers: Any
) -> None:
    with serving(web_app(ledger, program, magic, now)) as http:
        page = page_of(http, magic, "A").text
        token = magic.token_for("A")
        refused = choose(http, token, choice="account_credit", csrf=magic.csrf_for(token, "A"))

    assert 'name="choice"' not in page
    assert refused.status_code == 400
    assert ledger.referrer_side.reward_choices(["A"]) == {}


def test_account_credit_chosen_on_the_page_pays_the_unpaid_reward_to_the_customer_balance(
    client: httpx.Client, magic: MagicLinks, ledger: SqlLedger, now: datetime
) -> None:
    referrer = contact("C", "ACC-C", stripe_customer_id="cus_C", stripe_account_id="acct_C")
    reward_id = seed_payable_reward(ledger, referrer, now, key="deal-c")
    token = magic.token_for("C")
    choose(client, token, choice="account_credit", csrf=magic.csrf_for(token, "C"))
    transfer, balance = (
        RecordingRail(PayoutRailKind.STRIPE_TRANSFER),
        RecordingRail(PayoutRailKind.STRIPE_BALANCE),
    )

    report = submit_payouts.fn(
        ledger,
        {PayoutRailKind.STRIPE_TRANSFER: transfer, PayoutRailKind.STRIPE_BALANCE: balance},
        [reward_id],
        now,
    )

    assert report.paid == 1
    assert transfer.paid == []
    assert [(i.reward_id, i.destination) for i in balance.paid] == [(reward_id, "cus_C")]
    assert "Account credit" in page_of(client, magic, "C").text


def test_a_referrer_with_no_payable_rail_is_offered_the_payout_setup(
    client: httpx.Client, magic: MagicLinks, two_referrers: dict[str, str]
) -> None:
    page_b = page_of(client, magic, "B").text  # no Stripe account, not a customer
    page_a = page_of(client, magic, "A").text  # a paying customer: balance credit

    # A token carries its time: the page's own may differ from one made now, so the
    # link is read back from the page and must name B.
    (token_b,) = re.findall(r'href="/p/([^"/]+)/connect"', page_b)
    assert magic.referrer_of(token_b) == "B"
    assert "Once you set up how to get paid" in page_b
    assert "/connect" not in page_a


# -- a fresh link ------------------------------------------------------------------------


def queued_page_links(ledger: SqlLedger) -> list[str]:
    with ledger.engine.connect() as conn:
        return list(
            conn.execute(
                select(T_NOTIFICATIONS.c.contact_id)
                .where(T_NOTIFICATIONS.c.kind == "page_link")
                .order_by(T_NOTIFICATIONS.c.notification_id)
            ).scalars()
        )


def test_a_fresh_link_gets_the_same_answer_for_a_known_and_an_unknown_address(
    client: httpx.Client, ledger: SqlLedger, two_referrers: dict[str, str]
) -> None:
    known = client.post("/p/new", data={"email": "A@acc-a.example"})
    unknown = client.post("/p/new", data={"email": "nobody@nowhere.example"})

    assert known.status_code == unknown.status_code == 200
    assert without_nonce(known.text) == without_nonce(unknown.text)
    assert "If the address is known, a link is on its way" in known.text
    assert queued_page_links(ledger) == ["A"]
    with ledger.engine.connect() as conn:
        stored = [dict(r) for r in conn.execute(select(T_PAGE_LINK_REQUESTS)).mappings()]
    assert len(stored) == 2
    assert not any("acc-a" in str(v) or "nowhere" in str(v) for r in stored for v in r.values())


def test_fresh_links_are_limited_per_address_silently_and_per_visitor_openly(
    ledger: SqlLedger, program: Program, magic: MagicLinks, now: datetime, two_referrers: Any
) -> None:
    limits = PageLimits(per_address=2, per_visitor=4)
    with serving(web_app(ledger, program, magic, now, limits=limits)) as http:
        answers = [http.post("/p/new", data={"email": "a@acc-a.example"}) for _ in range(4)]
        over = http.post("/p/new", data={"email": "b@acc-b.example"})
    with serving(web_app(ledger, program, magic, now + timedelta(hours=2), limits=limits)) as h:
        later = h.post("/p/new", data={"email": "a@acc-a.example"})

    assert [a.status_code for a in answers] == [200] * 4
    assert len({without_nonce(a.text) for a in answers}) == 1
    assert over.status_code == 429
    assert later.status_code == 200
    assert queued_page_links(ledger).count("A") == 3  # two, then one after the window
    assert "B" not in queued_page_links(ledger)


def test_the_requested_link_is_emailed_with_a_working_magic_link_in_the_body_only(
    client: httpx.Client,
    ledger: SqlLedger,
    program: Program,
    magic: MagicLinks,
    now: datetime,
    two_referrers: dict[str, str],
) -> None:
    client.post("/p/new", data={"email": "a@acc-a.example"})
    sender = RecordingEmailSender()

    send_notifications.fn(ledger, sender, program, now, page_link=PageLinks(magic, BASE))

    (message,) = [m for m in sender.sent if m.kind == "page_link"]
    found = re.search(rf"{re.escape(BASE)}/p/(\S+)", message.data["text"])
    assert found is not None
    assert magic.referrer_of(found.group(1)) == "A"
    assert f"{BASE}/r/" not in message.data["text"] or "CODE-A" in message.data["text"]
    assert found.group(1) not in message.message_id


def test_a_malformed_address_is_asked_again_and_nothing_is_queued(
    client: httpx.Client, ledger: SqlLedger
) -> None:
    answer = client.post("/p/new", data={"email": "not an address"})

    assert answer.status_code == 400
    assert 'aria-invalid="true"' in answer.text
    assert queued_page_links(ledger) == []


def test_every_ask_and_notice_carries_the_tracked_link_and_the_page_link(
    ledger: SqlLedger, program: Program, magic: MagicLinks, now: datetime
) -> None:
    from domain.models import Ask, Contact, MomentType
    from tasks.asks import compose_ask, compose_notice

    links = PageLinks(magic, BASE)
    person = Contact("A", "ACC-A", "Ada Example", "a@acc-a.example", ReferrerType.CUSTOMER)
    ask = compose_ask(
        Ask("ask-1", "m-1", "A", "CODE-A", MomentType.NPS_PROMOTER),
        person,
        "NPS 10",
        program,
        links,
    )
    notice = compose_notice(
        "n-1",
        "reward_earned",
        person,
        {"amount": "200.00 EUR", "milestone": Milestone.CUSTOMER.value, "payable_on": "2026-12-01"},
        program,
        "CODE-A",
        links,
    )

    for message in (ask, notice):
        text = message.data["text"]
        assert "https://example.com/r/CODE-A" in text
        token = re.search(rf"{re.escape(BASE)}/p/(\S+)", text)
        assert token is not None
        assert magic.referrer_of(token.group(1)) == "A"


def test_the_served_app_from_the_settings_has_the_pages_signed_with_the_page_key(
    sqlite_url: str, now: datetime, tmp_path: Any
) -> None:
    from config.settings import load_settings
    from flows import bootstrap

    settings = load_settings(
        database_url=sqlite_url,
        page_key_file=tmp_path / "page.key",
        visitor_key_file=tmp_path / "visitor.key",
        public_base_url="http://127.0.0.1:8300",
    )
    ledger = SqlLedger(make_engine(sqlite_url))
    seed_payable_reward(ledger, contact("A", "ACC-A"), now, key="deal-a")
    links = PageLinks(bootstrap.magic_links(settings), settings.public_base_url)

    with serving(bootstrap.web_app(settings)) as http:
        page = http.get(links("A").removeprefix("http://127.0.0.1:8300"))
        fresh = http.get("/p/new")

    assert page.status_code == 200
    assert "25.00 EUR" in page.text
    assert fresh.status_code == 200
    assert (tmp_path / "page.key").stat().st_mode & 0o777 == 0o600


def stored_clicks(ledger: SqlLedger, expected: int) -> list[str]:
    """The kinds of the stored clicks, once ``expected`` of them are (the link app writes
    them a moment after answering), or after five seconds."""
    deadline = time.monotonic() + 5
    while True:
        with ledger.engine.connect() as conn:
            kinds = list(conn.execute(select(T_LINK_CLICKS.c.visitor_kind)).scalars())
        if len(kinds) >= expected or time.monotonic() > deadline:
            return kinds
        time.sleep(0.05)


def test_the_referrers_own_clicks_on_their_link_are_stored_but_never_counted(
    ledger: SqlLedger, program: Program, magic: MagicLinks, now: datetime
) -> None:
    code = given_code(ledger, now, "C1")
    firefox = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101"}
    with serving(web_app(ledger, program, magic, now)) as referrer:
        # C1 tries their link first, then opens their page in the same browser, then
        # clicks their link again; a friend clicks it once.
        assert referrer.get(f"/r/{code}", headers=firefox).status_code == 302
        visitor = referrer.cookies["rv"]
        assert page_of(referrer, magic, "C1").status_code == 200
        assert referrer.cookies["rv"] == visitor  # the link's cookie, kept by the page
        assert referrer.get(f"/r/{code}", headers=firefox).status_code == 302
        with httpx.Client(base_url=str(referrer.base_url)) as friend:
            assert friend.get(f"/r/{code}", headers=firefox).status_code == 302
        stored = stored_clicks(ledger, 3)
        shown = page_of(referrer, magic, "C1").text

    assert stored == ["person"] * 3  # every click is stored, as a person's
    assert re.search(r"Clicks on your link</dt><dd>1<", shown)  # the friend's only
    assert ledger.referrer_side.referrer_facts("C1").clicks == 1  # type: ignore[union-attr]


def test_opening_the_page_without_a_visitor_cookie_sets_the_links_cookie(
    client: httpx.Client, magic: MagicLinks, two_referrers: dict[str, str]
) -> None:
    response = page_of(client, magic, "A")

    cookie = response.headers["set-cookie"]
    assert cookie.startswith("rv=")
    for attribute in ("HttpOnly", "Max-Age=31536000", "Path=/", "SameSite=lax"):
        assert attribute.lower() in cookie.lower()
    assert "secure" not in cookie.lower()  # served over http here
