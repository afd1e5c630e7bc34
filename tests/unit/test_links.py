"""The tracked link's pure rules: who is a person, the visitor's keyed hash, the URLs."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from domain.links import VisitorKind, landing_url, tracked_link, visitor_hash, visitor_kind

FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"
SAFARI_PHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1"
)


@pytest.mark.parametrize("agent", [FIREFOX, SAFARI_PHONE])
def test_a_browser_click_is_a_persons(agent: str) -> None:
    assert visitor_kind(agent, {}) is VisitorKind.PERSON


@pytest.mark.parametrize(
    "agent",
    [
        "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
        "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
        "LinkedInBot/1.0 (compatible; Mozilla/5.0; Apache-HttpClient +http://www.linkedin.com)",
        "WhatsApp/2.23.20.0",
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        "curl/8.5.0",
        "python-requests/2.32.3",
        "TelegramBot (like TwitterBot)",
        "Mozilla/5.0 (compatible; SomeNewCrawlerBot/0.1)",
        "Mozilla/5.0 (compatible; Discordbot/2.0; +https://discordapp.com)",
        "",
    ],
)
def test_link_previewers_crawlers_and_http_clients_are_bots(agent: str) -> None:
    assert visitor_kind(agent, {}) is VisitorKind.BOT


def test_a_request_without_a_user_agent_is_a_bot() -> None:
    assert visitor_kind(None, {}) is VisitorKind.BOT


@pytest.mark.parametrize(
    "headers",
    [{"purpose": "prefetch"}, {"sec-purpose": "prefetch;prerender"}, {"x-moz": "prefetch"}],
)
def test_a_browser_prefetch_is_not_a_click(headers: dict[str, str]) -> None:
    assert visitor_kind(FIREFOX, headers) is VisitorKind.PREFETCH


def test_a_head_request_is_a_link_checker_not_a_person() -> None:
    assert visitor_kind(FIREFOX, {}, "HEAD") is VisitorKind.BOT


def test_the_visitor_hash_is_an_hmac_under_the_key_never_the_id_itself() -> None:
    key = b"k" * 32
    hashed = visitor_hash(key, "visitor-1")
    assert hashed == hmac.new(key, b"visitor-1", hashlib.sha256).hexdigest()
    assert hashed == visitor_hash(key, "visitor-1")
    assert hashed != visitor_hash(b"j" * 32, "visitor-1")
    assert hashed != hashlib.sha256(b"visitor-1").hexdigest()
    assert "visitor-1" not in hashed


@pytest.mark.parametrize(
    "base", ["https://go.example.com", "https://go.example.com/", "https://go.example.com/r/"]
)
def test_the_tracked_link_is_the_base_the_route_and_the_code(base: str) -> None:
    assert tracked_link(base, "RCODE") == "https://go.example.com/r/RCODE"


def test_a_click_lands_with_the_code_and_keeps_the_landing_pages_own_query() -> None:
    assert landing_url("https://example.com/", "RC") == "https://example.com/?ref=RC"
    assert (
        landing_url("https://example.com/join?utm_source=referral&ref=old#form", "RC")
        == "https://example.com/join?utm_source=referral&ref=RC#form"
    )
