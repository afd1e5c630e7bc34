"""The referrer's tracked link: what a click on it is, and whether a person made it.

``GET <base>/r/<code>`` (served by :mod:`integrations.web`) redirects to the program's
landing page and records a :class:`LinkClick`. A click keeps no IP address and no user
agent: only when, which code, a keyed hash of the visitor's first-party cookie (so a
later check can tell the referrer's own browser from a referee's without the id
itself being stored), and what kind of visitor it looked like. Link unfurlers (Slack,
LinkedIn, WhatsApp previews), crawlers, command-line clients and browser prefetches
open links no person clicked: their clicks are stored, marked, and never counted.

The referrer's own clicks are not a kind: a browser becomes the referrer's when they
open their own page in it (``referrer_visitors`` in the ledger), which may be after
it clicked, so whether a stored click is the referrer's own is decided when clicks
are read (``integrations.ledger.links.counted_click``), never when one is recorded.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

LINK_PATH = "/r/"
REF_PARAMETER = "ref"

# Substrings (lower case) of the User-Agent of clients that open links by themselves.
# Previewers first (the commonest source of false clicks on a shared link), then
# crawlers and HTTP libraries. A person's browser carries none of them.
_AUTOMATED_AGENTS = (
    "slackbot",
    "slack-imgproxy",
    "facebookexternalhit",
    "facebookcatalog",
    "linkedinbot",
    "whatsapp",
    "telegrambot",
    "twitterbot",
    "discordbot",
    "skypeuripreview",
    "microsoftpreview",
    "embedly",
    "pinterest",
    "redditbot",
    "applebot",
    "googlebot",
    "google-inspectiontool",
    "googleother",
    "adsbot",
    "mediapartners-google",
    "bingbot",
    "bingpreview",
    "yandex",
    "baiduspider",
    "duckduckbot",
    "petalbot",
    "semrushbot",
    "ahrefsbot",
    "mj12bot",
    "dotbot",
    "crawler",
    "spider",
    "bot/",
    "bot;",
    "headlesschrome",
    "curl/",
    "wget/",
    "python-requests",
    "python-httpx",
    "python-urllib",
    "aiohttp",
    "go-http-client",
    "java/",
    "okhttp",
    "libwww-perl",
    "httpie",
    "postmanruntime",
    "axios/",
    "node-fetch",
)
# One pass over the User-Agent: the markers above, or "bot" as a word of its own.
_AUTOMATED = re.compile(
    "|".join([*(re.escape(marker) for marker in _AUTOMATED_AGENTS), r"\bbot\b"])
)


class VisitorKind(StrEnum):
    """What opened the link: only a ``person``'s click counts."""

    PERSON = "person"
    BOT = "bot"
    PREFETCH = "prefetch"


def visitor_kind(
    user_agent: str | None, headers: Mapping[str, str], method: str = "GET"
) -> VisitorKind:
    """Whether a request for the link looks like a person, a bot or a prefetch.

    Args:
        user_agent: the request's ``User-Agent`` (``None`` or blank: no browser sends
            none, so a bot).
        headers: the request's headers, names in lower case (``Purpose``,
            ``Sec-Purpose``, ``X-Purpose``, ``X-Moz`` say a browser fetched the page
            ahead of a click that may never come).
        method: the HTTP method; a ``HEAD`` is a link checker, never a person.

    Returns:
        The kind; a request that is both a prefetch and a bot is a bot.
    """
    agent = (user_agent or "").strip().lower()
    if method.upper() == "HEAD" or not agent or _AUTOMATED.search(agent):
        return VisitorKind.BOT
    for name in ("purpose", "sec-purpose", "x-purpose", "x-moz"):
        value = headers.get(name, "").lower()
        if "prefetch" in value or "preview" in value:
            return VisitorKind.PREFETCH
    return VisitorKind.PERSON


def visitor_hash(key: bytes, visitor_id: str) -> str:
    """The keyed hash (HMAC-SHA256, hex) a visitor id is stored as: the same visitor
    hashes the same under one key, and a leaked table cannot be matched against
    cookies without the key."""
    return hmac.new(key, visitor_id.encode("utf-8"), hashlib.sha256).hexdigest()


def tracked_link(base: str, code: str) -> str:
    """The referrer's tracked link: ``<base>/r/<code>``.

    ``base`` is where the link app is served (``https://example.com``); a base that
    already ends with ``/r`` or ``/r/`` (the program's ``referral_link_base``) is taken
    as the route itself.
    """
    trimmed = base.rstrip("/")
    if trimmed.endswith(LINK_PATH.rstrip("/")):
        return f"{trimmed}/{code}"
    return f"{trimmed}{LINK_PATH}{code}"


def landing_url(landing: str, code: str) -> str:
    """Where a click lands: ``landing`` with ``ref=<code>`` in its query (replacing a
    ``ref`` already there; the rest of the query and the fragment are kept)."""
    parts = urlsplit(landing)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "ref"]
    query.append((REF_PARAMETER, code))
    return urlunsplit(parts._replace(query=urlencode(query)))


@dataclass(frozen=True, slots=True)
class LinkClick:
    """One request for a referrer's link.

    Attributes:
        click_id: unique per request (stored once whatever the retries).
        code: the referral code clicked.
        referrer_id: the code's owner.
        clicked_at: when (UTC).
        visitor_hash: :func:`visitor_hash` of the visitor cookie.
        kind: see :class:`VisitorKind`; only a person's click counts.
    """

    click_id: str
    code: str
    referrer_id: str
    clicked_at: datetime
    visitor_hash: str
    kind: VisitorKind

    @property
    def counted(self) -> bool:
        """A person's click (the ledger also leaves out the referrer's own, when read)."""
        return self.kind is VisitorKind.PERSON
