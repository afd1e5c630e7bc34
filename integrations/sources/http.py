"""A small JSON-over-HTTP client for the read-only API sources (HubSpot, Delighted).

Every request goes through one ``requests.Session`` with a timeout, and is retried a
bounded number of times:

* **429**: wait what ``Retry-After`` asks (delta-seconds or an HTTP date), capped at
  ``max_retry_after``; without the header, back off as for a 5xx.
* **5xx, 408, connection errors, timeouts, and 2xx bodies that are not JSON**: wait
  ``backoff_base * 2 ** (attempt - 1)`` seconds, capped at ``backoff_max``.
* attempts exhausted: :class:`~domain.errors.RetryableIntegrationError`, so the ingest
  task fails without moving the source's cursor and the next run reads the same again.
* **400, 401, 403, 404** and every other 4xx: :class:`~domain.errors.PermanentIntegrationError`
  at once; retrying a refused token or a malformed request changes nothing.

Every request is retried, including POSTs: this client is for reads only (HubSpot's
search is a POST that changes nothing). Never use it to write.

Errors and log lines name the provider, the method, the path and the status. They never
carry a header (the token), a query string, or provider text that was not first cut
short and cleaned of the secrets and of anything shaped like an email address.
"""

from __future__ import annotations

import email.utils
import json
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import requests

from domain.errors import PermanentIntegrationError, RetryableIntegrationError

logger = logging.getLogger(__name__)

Sleep = Callable[[float], None]
Params = Mapping[str, str | int | Sequence[str]]

# Anything address-shaped in a provider's error text or in a quarantined record. A
# match may only start where a run of address characters starts (the lookbehind):
# without it, a long run with no "@" is rescanned from every position (quadratic time).
_ADDRESS_CHAR = r"[^\s@\"'<>(),;:\[\]{}]"
EMAIL_PATTERN = re.compile(rf"(?<!{_ADDRESS_CHAR}){_ADDRESS_CHAR}+@{_ADDRESS_CHAR}+")
_MAX_DETAIL_CHARS = 200
_RETRYABLE_STATUSES = frozenset({408, 429})


def mask_emails(text: str) -> str:
    """``text`` with every address-shaped substring replaced by ``<email>``."""
    return EMAIL_PATTERN.sub("<email>", text)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard a client tries before giving up on one request.

    Attributes:
        max_attempts: attempts per request, the first included (at least 1).
        backoff_base: first wait after a 5xx or a connection error, doubled each time.
        backoff_max: longest wait after a 5xx or a connection error.
        max_retry_after: longest wait a ``Retry-After`` header can impose.
    """

    max_attempts: int = 5
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    max_retry_after: float = 60.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")

    def backoff(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        return float(min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1)))


class JsonHttpClient:
    """Sends JSON requests to one provider's API with timeouts and bounded retries.

    Args:
        provider: the provider's name for messages and logs, e.g. ``"hubspot"``.
        base_url: the API's base URL, e.g. ``https://api.hubapi.com``.
        headers: headers sent on every request (e.g. ``Authorization``).
        auth: HTTP Basic ``(username, password)`` sent on every request.
        secrets: values that must never appear in an error message (the token).
        session: a session to use; the caller keeps ownership and closes it. Without
            one the client makes its own and :meth:`close` closes it.
        timeout: seconds to wait for a connection and for each read.
        retry: how many attempts, and how long to wait between them.
        sleep: waits that many seconds (tests inject a recorder).
        clock: epoch seconds now, to turn an HTTP-date ``Retry-After`` into a wait.
    """

    def __init__(
        self,
        provider: str,
        base_url: str,
        *,
        headers: Mapping[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        secrets: Sequence[str] = (),
        session: requests.Session | None = None,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        sleep: Sleep = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.provider = provider
        self.base_url = base_url.rstrip("/")
        self._headers = {"Accept": "application/json", **dict(headers or {})}
        self._auth = auth
        self._secrets = tuple(s for s in secrets if s)
        self._owns_session = session is None
        self._session = session if session is not None else requests.Session()
        self._timeout = timeout
        self._retry = retry or RetryPolicy()
        self._sleep = sleep
        self._clock = clock

    def __repr__(self) -> str:
        return f"JsonHttpClient(provider={self.provider!r}, base_url={self.base_url!r})"

    def close(self) -> None:
        """Close the session if this client made it."""
        if self._owns_session:
            self._session.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def get(self, path: str, params: Params | None = None) -> Any:
        """``GET base_url + path`` and return the decoded JSON body."""
        return self.request("GET", path, params=params)

    def post(self, path: str, body: Mapping[str, Any]) -> Any:
        """``POST`` ``body`` as JSON to ``base_url + path``; return the decoded body."""
        return self.request("POST", path, json_body=body)

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Params | None = None,
        json_body: Mapping[str, Any] | None = None,
    ) -> Any:
        """Send one request, retrying as the module docstring says.

        Returns:
            The decoded JSON body (``None`` for an empty 2xx body).

        Raises:
            RetryableIntegrationError: every attempt met a 429, a 5xx, a timeout, a
                dropped connection or a body that was not JSON.
            PermanentIntegrationError: the provider refused the request (4xx).
        """
        where = f"{self.provider} {method} {path}"
        retry_after: float | None = None
        problem = "no attempt made"
        for attempt in range(1, self._retry.max_attempts + 1):
            wait: float
            try:
                response = self._session.request(
                    method,
                    self.base_url + path,
                    params=params,
                    json=json_body,
                    headers=self._headers,
                    auth=self._auth,
                    timeout=self._timeout,
                )
            except (
                requests.ConnectionError,
                requests.Timeout,
                requests.exceptions.ChunkedEncodingError,
            ) as exc:
                # The exception text can hold the full URL; its type is enough here.
                problem = type(exc).__name__
                wait = self._retry.backoff(attempt)
            except requests.RequestException as exc:
                raise PermanentIntegrationError(
                    f"{where}: request failed ({type(exc).__name__})"
                ) from None
            else:
                with response:
                    status = response.status_code
                    if 200 <= status < 300:
                        try:
                            return json.loads(response.content) if response.content else None
                        except ValueError:
                            problem = f"HTTP {status} with a body that is not JSON"
                            wait = self._retry.backoff(attempt)
                    elif status == 429:
                        retry_after = self._retry_after(response.headers.get("Retry-After"))
                        problem = "HTTP 429 (rate limited)"
                        wait = self._retry.backoff(attempt) if retry_after is None else retry_after
                    elif status >= 500 or status in _RETRYABLE_STATUSES:
                        problem = f"HTTP {status}"
                        wait = self._retry.backoff(attempt)
                    else:
                        raise PermanentIntegrationError(
                            f"{where}: HTTP {status}{self._detail(response)}"
                        )
            if attempt == self._retry.max_attempts:
                break
            logger.warning(
                "%s: %s, retrying in %.1fs (attempt %d of %d)",
                where,
                problem,
                wait,
                attempt,
                self._retry.max_attempts,
            )
            self._sleep(wait)
        raise RetryableIntegrationError(
            f"{where}: {problem} after {self._retry.max_attempts} attempts",
            retry_after_seconds=retry_after,
        )

    def _retry_after(self, value: str | None) -> float | None:
        """Seconds a ``Retry-After`` value asks for, capped; ``None`` when unreadable."""
        if value is None or not value.strip():
            return None
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(text)
            except (TypeError, ValueError):
                return None
            seconds = when.timestamp() - self._clock()
        if seconds != seconds:  # NaN
            return None
        return max(0.0, min(self._retry.max_retry_after, seconds))

    def _detail(self, response: requests.Response) -> str:
        """A short, cleaned excerpt of the provider's own error text, or nothing."""
        try:
            body = json.loads(response.content) if response.content else None
        except ValueError:
            return ""
        message = None
        if isinstance(body, dict):
            for key in ("message", "error", "errors"):
                if isinstance(body.get(key), str):
                    message = body[key]
                    break
        if not message:
            return ""
        for secret in self._secrets:
            message = message.replace(secret, "<secret>")
        message = mask_emails(" ".join(message.split()))
        if len(message) > _MAX_DETAIL_CHARS:
            message = message[: _MAX_DETAIL_CHARS - 3] + "..."
        return f": {message}"
