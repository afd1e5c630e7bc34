"""Getting paid from the referrer's page: Stripe Connect onboarding behind a magic link.

Routes (Starlette), mounted beside the referrer's page ``GET /p/<token>``:

* ``GET /p/<token>/connect``: the token must name a referrer (else the same plain
  ``404`` page the link app answers). A referrer with no payable rail, or one whose
  account we are onboarding, gets their Express account (made once: the key is stored
  before Stripe is called) and a fresh Account Link, and is sent there (``303``);
  anyone else is sent back to their page. Stripe sends an expired or reused link to
  this same URL (the link's ``refresh_url``), which makes a fresh one.
* ``GET /p/<token>/connect/return``: Stripe's ``return_url``. Coming back proves
  nothing, so the account is read back from Stripe and its state recorded (once it can
  receive transfers it becomes the referrer's payout destination), then ``303`` to the
  page, which shows the new state.

The token is a credential: it is never logged nor sent to Stripe (the account's
metadata holds the referrer's contact id only), and neither are the Account Link's URL
nor any address. A provider failure answers a plain ``503`` page asking to try again;
the stored key makes the retry safe.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from domain.connect import Onboarding
from domain.errors import IntegrationError
from integrations.web.app import NOT_FOUND_PAGE

logger = logging.getLogger(__name__)

UNAVAILABLE_PAGE = (
    "<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
    "<meta name=viewport content='width=device-width,initial-scale=1'>"
    "<title>Try again in a minute</title></head>"
    "<body><h1>Try again in a minute</h1><p>We could not reach our payment provider. "
    "Nothing was lost: go back to your page and try again.</p></body></html>\n"
)
_NO_STORE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


def connect_routes(
    *,
    referrer_of: Callable[[str], str | None],
    onboarding: Onboarding,
    public_base_url: str,
) -> list[BaseRoute]:
    """The onboarding routes.

    Args:
        referrer_of: the referrer a page token names, or ``None`` (tampered, expired).
        onboarding: the use case (ledger's connect store and the Stripe adapter).
        public_base_url: where referrers reach this app (``https://refer.example.com``),
            for the URLs Stripe sends them back to.

    Returns:
        The routes, to add to the web app.
    """
    base = public_base_url.rstrip("/")

    def not_found() -> Response:
        return HTMLResponse(NOT_FOUND_PAGE, status_code=404, headers=_NO_STORE)

    def unavailable(referrer_id: str, exc: IntegrationError) -> Response:
        # The error text is already stripped of keys and addresses; never the token.
        logger.warning("connect onboarding for referrer %s failed: %s", referrer_id, exc)
        return HTMLResponse(UNAVAILABLE_PAGE, status_code=503, headers=_NO_STORE)

    async def start(request: Request) -> Response:
        token = request.path_params["token"]
        referrer_id = referrer_of(token)
        if referrer_id is None:
            return not_found()
        page = f"{base}/p/{token}"
        try:
            if not await run_in_threadpool(onboarding.may_start, referrer_id):
                return RedirectResponse(page, status_code=303, headers=_NO_STORE)
            link = await run_in_threadpool(
                onboarding.start, referrer_id, f"{page}/connect/return", f"{page}/connect"
            )
        except IntegrationError as exc:
            return unavailable(referrer_id, exc)
        return RedirectResponse(link.url, status_code=303, headers=_NO_STORE)

    async def back(request: Request) -> Response:
        token = request.path_params["token"]
        referrer_id = referrer_of(token)
        if referrer_id is None:
            return not_found()
        try:
            status = await run_in_threadpool(onboarding.refresh, referrer_id, "return")
        except IntegrationError as exc:
            return unavailable(referrer_id, exc)
        logger.info(
            "connect onboarding: referrer %s came back, account %s",
            referrer_id,
            "none" if status is None else status.value,
        )
        return RedirectResponse(f"{base}/p/{token}", status_code=303, headers=_NO_STORE)

    return [
        Route("/p/{token}/connect", start, methods=["GET"]),
        Route("/p/{token}/connect/return", back, methods=["GET"]),
    ]
