"""The referrer's own page, reached by a magic link (issue 15).

Routes (mounted by :func:`integrations.web.app.create_app`):

* ``GET /p/<token>``: the page of the referrer the token was signed for: their tracked
  link with a copy button, ready-made share texts, their referrals' progress, their
  rewards and payouts, and the reward choice where the program offers one. A tampered,
  expired or malformed token, and a token for a contact no longer in the ledger, get
  the same plain page (``404``), which offers a fresh link.
  The browser that opens it is remembered as the referrer's (the keyed hash of the
  link app's visitor cookie ``rv``, set here if absent): its clicks on their own link
  are stored but never counted nor taken as a touch.
* ``POST /p/<token>/choice``: the reward choice; refused (``403``) without the form's
  CSRF token (an HMAC of the page token and the referrer, see
  :meth:`integrations.web.magic.MagicLinks.csrf_for`).
* ``GET``/``POST /p/new``: ask for a fresh link by email. The answer is the same
  whether the address is known or not; a known address gets a ``page_link`` notice
  queued in the ledger (sent by the cycle's email task). Requests are limited per
  address (the excess is answered the same, and nothing is queued) and per visitor
  (answered ``429``); the counts are in the ledger, so the limits hold across
  processes.

Every page answer carries ``Cache-Control: no-store`` and ``Referrer-Policy:
no-referrer`` (the token is in the URL), and refuses framing. Tokens are never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

from anyio import to_thread
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from domain import links
from domain.links import tracked_link
from domain.models import PayoutRailKind
from domain.program import Program, RewardChoice
from domain.referrer_page import (
    CHOICE_WORDS,
    needs_payout_setup,
    payout_rows,
    progress,
    referrals,
    reward_rows,
)
from domain.reward_wording import headline
from domain.stores.referrer_side import ReferrerSideStore
from integrations.web.magic import PAGE_PATH, MagicLinks

TEMPLATES = Path(__file__).with_name("templates")
MAX_EMAIL_CHARS = 320
MAX_FORM_BYTES = 4096
_FORM_TYPE = "application/x-www-form-urlencoded"
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
VISITOR_COOKIE = "rv"
_VISITOR_ID = re.compile(r"^[A-Za-z0-9_-]{16,64}$")


@lru_cache(maxsize=1)
def _env() -> Environment:
    return Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html", "j2"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )


@dataclass(frozen=True)
class PageLimits:
    """How often a fresh link may be asked for, per ``window``."""

    per_address: int = 3
    per_visitor: int = 10
    window: timedelta = timedelta(hours=1)


def _utc_now() -> datetime:
    return datetime.now(UTC)


class ReferrerPages:
    """The page routes, over the referrer side's store.

    Args:
        store: the ledger's referrer-side store.
        magic: checks page tokens and CSRF tokens.
        program: the program's name, rewards and reward choices.
        public_base_url: where this app is reached; the tracked link shown is
            ``<public_base_url>/r/<code>``.
        payout_rails: the payment rails configured (whether a referrer needs to set
            up a way to be paid depends on them).
        visitor_key: the key of the visitor cookie's and the typed address's hashes.
        limits: the fresh-link rate limits.
        clock: now (tests pin it).
    """

    def __init__(
        self,
        store: ReferrerSideStore,
        magic: MagicLinks,
        program: Program,
        public_base_url: str,
        payout_rails: Collection[PayoutRailKind],
        visitor_key: bytes,
        limits: PageLimits = PageLimits(),
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self._store = store
        self._magic = magic
        self._program = program
        self._base = public_base_url.rstrip("/")
        self._rails = frozenset(payout_rails)
        self._key = visitor_key
        self._limits = limits
        self._clock = clock

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/p/new", self.new_link, methods=["GET", "POST"]),
            Route("/p/{token}", self.page, methods=["GET"]),
            Route("/p/{token}/choice", self.choose, methods=["POST"]),
        ]

    # -- the page ---------------------------------------------------------------------

    async def page(self, request: Request) -> Response:
        token = request.path_params["token"]
        referrer_id = self._magic.referrer_of(token)
        if referrer_id is None:
            return self._refused()
        # This browser is the referrer's (the token was signed for them): its clicks on
        # their own link are theirs, recorded before the facts so the count shown
        # already leaves out a click made from it earlier.
        cookie = _visitor_from(request.cookies.get(VISITOR_COOKIE))
        visitor = cookie or secrets.token_urlsafe(18)
        await to_thread.run_sync(
            self._store.record_referrer_visitor,
            referrer_id,
            links.visitor_hash(self._key, visitor),
            self._clock(),
        )
        facts = await to_thread.run_sync(self._store.referrer_facts, referrer_id)
        if facts is None:
            return self._refused()
        contact = facts.contact
        choices = self._program.choices_for(contact.referrer_type)
        choice = facts.choice if facts.choice in choices else choices[0]
        setup = needs_payout_setup(contact, self._rails, facts.choice)
        link = tracked_link(self._base, facts.code) if facts.code else None
        share = _share_texts(self._program.name, link) if link else None
        today = self._clock().date()
        response = self._html(
            "page.html.j2",
            {
                "first_name": contact.first_name,
                "program_name": self._program.name,
                "reward_line": headline(self._program, contact.referrer_type),
                "link": link,
                "code": facts.code,
                "opted_out": contact.opted_out,
                "share": share,
                "progress": progress(facts.clicks, facts.steps),
                "referrals": referrals(facts.steps),
                "rewards": reward_rows(facts.rewards, not setup, today),
                "payouts": payout_rows(facts.payouts),
                "choices": [
                    {"value": c.value, "label": CHOICE_WORDS[c], "checked": c is choice}
                    for c in choices
                ]
                if len(choices) > 1
                else [],
                "choice_label": CHOICE_WORDS[choice],
                "csrf": self._magic.csrf_for(token, referrer_id),
                "choice_url": f"{PAGE_PATH}{token}/choice",
                "connect_url": f"{PAGE_PATH}{token}/connect",
                "needs_payout_setup": setup,
                "saved": request.query_params.get("saved") == "1",
            },
        )
        if cookie is None:
            _set_visitor_cookie(response, request, visitor)
        return response

    async def choose(self, request: Request) -> Response:
        token = request.path_params["token"]
        referrer_id = self._magic.referrer_of(token)
        if referrer_id is None:
            return self._refused()
        form = await _form(request)
        if not self._magic.csrf_ok(token, referrer_id, form.get("csrf")):
            return self._plain(
                403,
                "This form has expired",
                "Open your page again from your latest link and choose once more.",
            )
        facts = await to_thread.run_sync(self._store.referrer_facts, referrer_id)
        if facts is None:
            return self._refused()
        offered = self._program.choices_for(facts.contact.referrer_type)
        try:
            choice = RewardChoice(form.get("choice", ""))
        except ValueError:
            choice = None
        if choice is None or choice not in offered or len(offered) < 2:
            return self._plain(
                400, "That choice is not offered", "Go back and pick one of those listed."
            )
        await to_thread.run_sync(
            self._store.record_reward_choice, referrer_id, choice, self._clock()
        )
        return RedirectResponse(
            f"{PAGE_PATH}{token}?saved=1#reward-choice", status_code=303, headers=_HEADERS
        )

    # -- a fresh link -------------------------------------------------------------------

    async def new_link(self, request: Request) -> Response:
        if request.method == "GET":
            return self._html("new_link.html.j2", {"sent": False, "error": None})
        form = await _form(request)
        email = form.get("email", "").strip()
        if len(email) > MAX_EMAIL_CHARS or not _EMAIL.match(email):
            return self._html(
                "new_link.html.j2",
                {"sent": False, "error": "Please enter an email address, like name@example.com."},
                status=400,
            )
        visitor = _visitor_from(request.cookies.get(VISITOR_COOKIE))
        fresh_visitor = visitor is None
        visitor = visitor or secrets.token_urlsafe(18)
        address_hash = self._hash("address", email.lower())
        visitor_hash = self._hash("visitor", visitor)
        queued_ok = await to_thread.run_sync(self._request_link, email, address_hash, visitor_hash)
        if queued_ok is None:
            response = self._plain(
                429,
                "Too many requests",
                "You asked for several links in a short time. Please try again in an hour.",
            )
        else:
            response = self._html("new_link.html.j2", {"sent": True, "error": None})
        if fresh_visitor:
            _set_visitor_cookie(response, request, visitor)
        return response

    def _request_link(self, email: str, address_hash: str, visitor_hash: str) -> int | None:
        """Queue the link if the limits allow; ``None`` when this visitor asked too
        often (the address's own limit is answered like a success: the answer must not
        tell whether that address was asked for before)."""
        now = self._clock()
        by_address, by_visitor = self._store.page_link_requests_since(
            address_hash, visitor_hash, now - self._limits.window
        )
        if by_visitor >= self._limits.per_visitor:
            return None
        referrers: Sequence[str] = ()
        if by_address < self._limits.per_address:
            referrers = self._store.contacts_with_email(email)
        return self._store.record_page_link_request(
            uuid.uuid4().hex, address_hash, visitor_hash, referrers, now
        )

    def _hash(self, purpose: str, value: str) -> str:
        return hmac.new(self._key, f"{purpose}\x00{value}".encode(), hashlib.sha256).hexdigest()

    # -- answers --------------------------------------------------------------------------

    def _refused(self) -> Response:
        return self._plain(
            404,
            "This link has expired or is not valid",
            "Links to your page work for a limited time. Ask for a fresh one below.",
            new_link=True,
        )

    def _plain(self, status: int, title: str, text: str, new_link: bool = False) -> Response:
        return self._html(
            "message.html.j2", {"title": title, "text": text, "new_link": new_link}, status
        )

    def _html(self, template: str, context: dict[str, Any], status: int = 200) -> Response:
        nonce = secrets.token_urlsafe(16)
        body = _env().get_template(template).render(**context, nonce=nonce)
        headers = {
            **_HEADERS,
            "Content-Security-Policy": (
                f"default-src 'none'; style-src 'nonce-{nonce}'; script-src 'nonce-{nonce}'; "
                "img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; "
                "base-uri 'none'"
            ),
        }
        return HTMLResponse(body, status_code=status, headers=headers)


_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
}


async def _form(request: Request) -> dict[str, str]:
    """The fields of a small url-encoded form (the page's forms are; anything else,
    or anything longer than :data:`MAX_FORM_BYTES`, reads as an empty form)."""
    if request.headers.get("content-type", "").split(";")[0].strip() != _FORM_TYPE:
        return {}
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return {}
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=8)
    except (UnicodeDecodeError, ValueError):
        return {}
    return dict(pairs)


def _set_visitor_cookie(response: Response, request: Request, visitor: str) -> None:
    """The link app's first-party visitor cookie, with its attributes (one year,
    HttpOnly, SameSite=Lax, Secure over https)."""
    response.set_cookie(
        VISITOR_COOKIE,
        visitor,
        max_age=365 * 24 * 3600,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )


def _visitor_from(value: str | None) -> str | None:
    return value if value and _VISITOR_ID.match(value) else None


def _share_texts(program_name: str, link: str) -> dict[str, str]:
    """Ready-made messages, each with the link: email, LinkedIn, WhatsApp."""
    message = (
        f"I use {program_name.removesuffix(' referral program')} and think it would suit "
        f"you too. Have a look: {link}"
    )
    subject = "A recommendation for you"
    return {
        "message": message,
        "email": "mailto:?" + urlencode({"subject": subject, "body": message}, quote_via=quote),
        "linkedin": "https://www.linkedin.com/sharing/share-offsite/?"
        + urlencode({"url": link}, quote_via=quote),
        "whatsapp": "https://wa.me/?" + urlencode({"text": message}, quote_via=quote),
    }
