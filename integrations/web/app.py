"""The tracked link: an ASGI app (Starlette) that redirects, then stores the click later.

Routes:

* ``GET /r/<code>``: the referrer's link. A live code answers ``302`` to the landing
  URL with ``?ref=<code>``, sets the first-party visitor cookie (a random id; HttpOnly,
  SameSite=Lax, Secure when the request came over https, one year) and queues the click
  (:class:`domain.links.LinkClick`: the code, its owner, the time, the keyed hash of the
  visitor id, and whether it looked like a person, a bot or a prefetch). An unknown
  code, a revoked one (its owner opted out) and a malformed one answer the same plain
  ``404`` page: the answer tells nothing about which codes exist.
* ``GET /healthz``: ``200``.
* ``/p/...``: the referrer's own page, reached by a magic link, with its forms (see
  :mod:`integrations.web.pages`), when the app is built with ``pages``.
* Any ``extra_routes`` the composition root adds (Stripe Connect onboarding).

Clicks are not written one transaction per request: :class:`ClickRecorder` keeps them
in memory and stores them in batches (every ``flush_clicks`` clicks or ``flush_seconds``,
whichever is first), in a worker thread so the event loop keeps answering; a graceful
stop (SIGTERM, Ctrl-C: uvicorn's lifespan shutdown, after the requests in flight) writes
what is left. A failed write keeps its batch for the next attempt; each click has its id,
so a batch written twice is stored once. A hard kill loses at most the clicks of the
last ``flush_seconds``.

Nothing identifying a visitor is kept or logged: no IP address, no user agent, no
cookie value (only its keyed hash). ``referrals web serve`` turns uvicorn's access log
off, which would print the client's address.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from anyio import to_thread
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from domain.codes import normalize_code
from domain.links import LINK_PATH, LinkClick, landing_url, visitor_hash, visitor_kind
from domain.stores.links import LinkStore

if TYPE_CHECKING:
    from integrations.web.pages import ReferrerPages

logger = logging.getLogger(__name__)

VISITOR_COOKIE = "rv"
VISITOR_COOKIE_SECONDS = 365 * 24 * 3600
# A visitor id this app minted (secrets.token_urlsafe(18): 24 characters); anything
# else in the cookie is replaced by a fresh id.
_VISITOR_ID = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
CODE_CACHE_SECONDS = 30.0
CODE_CACHE_ENTRIES = 100_000
RETRY_SECONDS = 1.0
STOP_ATTEMPTS = 5

NOT_FOUND_PAGE = (
    "<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
    "<meta name=viewport content='width=device-width,initial-scale=1'>"
    "<title>Page not found</title></head>"
    "<body><h1>Page not found</h1><p>This link does not lead anywhere.</p></body></html>\n"
)


def _utc_now() -> datetime:
    return datetime.now(UTC)


class ClickRecorder:
    """Clicks kept in memory and stored in batches by a background task.

    Args:
        store: where batches are written.
        flush_clicks: a batch is written as soon as this many clicks wait.
        flush_seconds: and at the latest this long after the previous write.
        clock: the time stored as each batch's ``created_at``.
    """

    def __init__(
        self,
        store: LinkStore,
        *,
        flush_clicks: int = 500,
        flush_seconds: float = 0.2,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self._store = store
        self._flush_clicks = flush_clicks
        self._flush_seconds = flush_seconds
        self._clock = clock
        self._pending: list[LinkClick] = []
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.stored = 0
        self.batches = 0

    @property
    def pending(self) -> int:
        return len(self._pending)

    def add(self, click: LinkClick) -> None:
        """Queue ``click`` (never blocks: the write happens in the background)."""
        self._pending.append(click)
        if len(self._pending) >= self._flush_clicks and self._wake is not None:
            self._wake.set()

    async def start(self) -> None:
        self._wake = asyncio.Event()
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="link-click-recorder")

    async def stop(self) -> None:
        """Write every queued click, then end the background task."""
        if self._task is None or self._wake is None:
            return
        self._stopping = True
        self._wake.set()
        await self._task
        self._task = None

    async def _run(self) -> None:
        assert self._wake is not None
        while not self._stopping:
            with suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._flush_seconds)
            self._wake.clear()
            if not await self.flush():
                await asyncio.sleep(RETRY_SECONDS)
        for _ in range(STOP_ATTEMPTS):
            if await self.flush() and not self._pending:
                break
            await asyncio.sleep(RETRY_SECONDS)
        if self._pending:
            logger.error("stopping with %d link clicks not stored", len(self._pending))

    async def flush(self) -> bool:
        """Write the clicks queued now, in a worker thread. Returns whether the write
        succeeded (a failed batch stays queued, ahead of the clicks queued since)."""
        if not self._pending:
            return True
        batch, self._pending = self._pending, []
        try:
            stored = await to_thread.run_sync(self._write, batch)
        except Exception as exc:  # the batch is kept: any failure is retried
            # The class only: a database error's text can quote the rows.
            logger.error(
                "storing %d link clicks failed (%s); kept for the next attempt",
                len(batch),
                type(exc).__name__,
            )
            self._pending[:0] = batch
            return False
        self.stored += stored
        self.batches += 1
        return True

    def _write(self, batch: list[LinkClick]) -> int:
        return self._store.record_link_clicks(batch, self._clock())


class _CodeCache:
    """Code -> (owner or ``None``, landing URL, expiry): a click on a hot code reads no
    database. Unknown and revoked codes are cached alike, so neither answers faster."""

    def __init__(self, store: LinkStore, landing: str, seconds: float, entries: int) -> None:
        self._store = store
        self._landing = landing
        self._seconds = seconds
        self._entries = entries
        self._found: dict[str, tuple[str | None, str, float]] = {}

    async def get(self, code: str) -> tuple[str | None, str]:
        now = time.monotonic()
        hit = self._found.get(code)
        if hit is not None and hit[2] > now:
            return hit[0], hit[1]
        referrer = await to_thread.run_sync(self._store.live_referrer, code)
        if len(self._found) >= self._entries:
            # Bounded memory under a flood of made-up codes: start over.
            self._found.clear()
        target = landing_url(self._landing, code)
        self._found[code] = (referrer, target, now + self._seconds)
        return referrer, target


_NOT_FOUND_HEADERS = [
    (b"content-type", b"text/html; charset=utf-8"),
    (b"content-length", str(len(NOT_FOUND_PAGE.encode())).encode()),
    (b"cache-control", b"no-store"),
    (b"referrer-policy", b"no-referrer"),
]
_COOKIE_ATTRIBUTES = f"; Max-Age={VISITOR_COOKIE_SECONDS}; Path=/; HttpOnly; SameSite=Lax"
_COOKIE_PREFIX = VISITOR_COOKIE + "="


def _visitor_from(cookie_header: str) -> str | None:
    for part in cookie_header.split(";"):
        name, _, value = part.strip().partition("=")
        if name == VISITOR_COOKIE and _VISITOR_ID.match(value):
            return value
    return None


class LinkApp:
    """The ASGI app: ``GET``/``HEAD /r/<code>`` answered here, without a framework's
    request and response objects (the link is the one hot path: about a fifth of the
    time per click); everything else, and the lifespan, by the inner Starlette app.

    Attributes:
        recorder: the clicks waiting to be stored.
    """

    def __init__(
        self,
        inner: Starlette,
        codes: _CodeCache,
        recorder: ClickRecorder,
        visitor_key: bytes,
        clock: Callable[[], datetime],
    ) -> None:
        self.inner = inner
        self.recorder = recorder
        self._codes = codes
        self._key = visitor_key
        self._clock = clock
        # Click ids: a random prefix per process and a counter, unique across processes
        # and restarts; a uuid4 per click cost a getrandom() call on the hot path.
        self._ids = itertools.count()
        self._id_prefix = secrets.token_hex(12)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] in ("GET", "HEAD")
            and scope["path"].startswith(LINK_PATH)
        ):
            await self._link(scope, send)
        else:
            await self.inner(scope, receive, send)

    async def _link(self, scope: Scope, send: Send) -> None:
        code = normalize_code(scope["path"][len(LINK_PATH) :])
        referrer, target = (None, "") if code is None else await self._codes.get(code)
        if code is None or referrer is None:
            # A malformed code is answered without the lookup: no code could look like
            # it, so that answer's timing tells nothing about which codes exist.
            await _answer(send, 404, _NOT_FOUND_HEADERS, NOT_FOUND_PAGE.encode())
            return
        headers = {
            name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]
        }
        visitor = _visitor_from(headers.get("cookie", "")) or secrets.token_urlsafe(18)
        self.recorder.add(
            LinkClick(
                click_id=f"{self._id_prefix}-{next(self._ids):011x}",
                code=code,
                referrer_id=referrer,
                clicked_at=self._clock(),
                visitor_hash=visitor_hash(self._key, visitor),
                kind=visitor_kind(headers.get("user-agent"), headers, scope["method"]),
            )
        )
        cookie = _COOKIE_PREFIX + visitor + _COOKIE_ATTRIBUTES
        if scope.get("scheme") == "https":
            cookie += "; Secure"
        await _answer(
            send,
            302,
            [
                (b"location", target.encode("latin-1")),
                (b"set-cookie", cookie.encode("latin-1")),
                (b"content-length", b"0"),
                (b"cache-control", b"no-store"),
                (b"referrer-policy", b"no-referrer"),
            ],
            b"",
        )


async def _answer(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def create_app(
    store: LinkStore,
    *,
    landing: str,
    visitor_key: bytes,
    flush_clicks: int = 500,
    flush_seconds: float = 0.2,
    clock: Callable[[], datetime] = _utc_now,
    code_cache_seconds: float = CODE_CACHE_SECONDS,
    pages: ReferrerPages | None = None,
    extra_routes: Sequence[BaseRoute] = (),
) -> LinkApp:
    """Build the link app.

    Args:
        store: where codes are looked up and clicks stored.
        landing: the landing URL a click is sent to (``?ref=<code>`` is added).
        visitor_key: the key of the visitor id's keyed hash.
        flush_clicks: clicks per stored batch, at most.
        flush_seconds: longest a click waits before it is stored.
        clock: the time of a click, timezone-aware (tests pin it).
        code_cache_seconds: how long a code's owner (or its absence) is remembered: a
            revoked code's link stops within this time.
        pages: the referrers' pages (``/p/...``); ``None`` serves links only.
        extra_routes: more routes, mounted after the pages (the composition root
            passes Stripe Connect onboarding's, ``/p/<token>/connect``, here).

    Returns:
        The ASGI app; its lifespan starts the recorder and stores what is left at stop.
    """
    # The batches' created_at is the real time of the write, whatever ``clock`` says.
    recorder = ClickRecorder(store, flush_clicks=flush_clicks, flush_seconds=flush_seconds)
    codes = _CodeCache(store, landing, code_cache_seconds, CODE_CACHE_ENTRIES)

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok", headers={"Cache-Control": "no-store"})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await recorder.start()
        try:
            yield
        finally:
            await recorder.stop()

    routes: list[BaseRoute] = [Route("/healthz", healthz)]
    if pages is not None:
        routes += pages.routes()
    routes += extra_routes
    inner = Starlette(routes=routes, lifespan=lifespan)
    return LinkApp(inner, codes, recorder, visitor_key, clock)
