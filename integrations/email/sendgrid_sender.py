"""Sends email through SendGrid's v3 Mail Send API, with the official ``sendgrid`` library.

One request carries up to 1,000 personalizations, one per message, each with the
message's recipient in ``to`` and our opaque ``message_id`` as its only custom arg:
SendGrid stores custom args as non-personal data and echoes them on every webhook
event, so that id (and never an address or a name) is how events find their message.

Outcomes per request:

* 2xx: every message in it is ``ACCEPTED`` with ``provider_ref`` = ``X-Message-Id`` (one
  id per request, shared by its messages), and the request is never sent again.
* 429: wait until ``X-RateLimit-Reset`` (capped), then retry.
* 5xx, timeouts, dropped connections: exponential backoff, then retry.
* retries exhausted: ``RETRYABLE``; the next run sends them again.
* any other 4xx (400, 401, 403, 413, ...): ``FAILED`` at once, never retried, with a
  short error that names neither the API key nor an email address.
"""

from __future__ import annotations

import http.client
import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from python_http_client.exceptions import HTTPError
from sendgrid import SendGridAPIClient

from domain.errors import ConfigError
from domain.models import EmailMessage, EmailOutcome, EmailResult

if TYPE_CHECKING:
    from config.settings import Settings

logger = logging.getLogger(__name__)

# python_http_client logs every request at DEBUG with its headers (the bearer key) and
# its payload (every recipient address). Capping its loggers keeps both out of any log,
# whatever level the application configures.
logging.getLogger("python_http_client").setLevel(logging.WARNING)

MAX_PERSONALIZATIONS = 1000
# SendGrid caps one personalization's substitutions at 10,000 bytes without saying how
# it counts them; staying under 9,000 UTF-8 bytes of compact JSON leaves a margin.
SUBSTITUTIONS_BUDGET_BYTES = 9_000
# Tags the shared content block is made of; each personalization substitutes its own
# rendered body for them. Unlikely to occur in real text, and never nested.
TEXT_TAG = "-referralsTextBody-"
HTML_TAG = "-referralsHtmlBody-"

_EMAIL = re.compile(
    r"^[^@\s<>()\[\],;:\"]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$"
)
# Anything address-shaped in a provider's error text (SendGrid quotes addresses).
_ADDRESS_IN_TEXT = re.compile(r"[^\s@\[\]<>()\"',;:]+@[^\s@\[\]<>()\"',;:]+")
_MAX_ERROR_CHARS = 300


@dataclass
class _Request:
    """One Mail Send body and the messages its personalizations stand for."""

    body: dict[str, Any]
    messages: list[EmailMessage]
    label: str


@dataclass
class _Batch:
    messages: list[EmailMessage] = field(default_factory=list)
    addresses: set[str] = field(default_factory=set)


class SendGridEmailSender:
    """:class:`domain.ports.EmailSender` on SendGrid's Mail Send API.

    Args:
        api_key: the SendGrid API key (``SG....``); sent as a bearer token, never logged
            and never put in an error.
        from_email: sender address of every email (a verified sender at SendGrid).
        from_name: sender display name.
        templates: SendGrid dynamic template id (``d-...``) per template name. A message
            whose template has one is sent with that template and its ``data`` (plus
            ``subject``) as ``dynamic_template_data``; any other message is sent as its
            rendered ``subject`` and ``data["text"]`` / ``data["html"]``.
        asm_group_id: unsubscribe group attached to every email, if any.
        api_host: API base URL (tests point it at a local fake).
        timeout: seconds to wait for SendGrid per request attempt.
        max_attempts: attempts per request, the first included, before ``RETRYABLE``.
        backoff_base: first wait after a 5xx or a connection error, doubled each time.
        backoff_cap: longest wait after a 5xx or a connection error.
        max_rate_limit_wait: longest wait for a rate limit to reset after a 429.
        max_per_request: personalizations per request, 1 to 1,000.
        sleep: waits that many seconds (injected so tests do not really wait).
        clock: epoch seconds now, to turn ``X-RateLimit-Reset`` into a wait.

    Raises:
        ConfigError: a template id is not a dynamic template id, or a limit is out of range.
    """

    name = "sendgrid"

    def __init__(
        self,
        api_key: str,
        *,
        from_email: str,
        from_name: str | None = None,
        templates: Mapping[str, str] | None = None,
        asm_group_id: int | None = None,
        api_host: str = "https://api.sendgrid.com",
        timeout: float = 10.0,
        max_attempts: int = 4,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        max_rate_limit_wait: float = 60.0,
        max_per_request: int = MAX_PERSONALIZATIONS,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not api_key:
            raise ConfigError("SendGrid needs an API key")
        templates = dict(templates or {})
        legacy = sorted(name for name, tid in templates.items() if not tid.startswith("d-"))
        if legacy:
            raise ConfigError(
                "SendGrid template ids must be dynamic templates (d-...); not: " + ", ".join(legacy)
            )
        if not 1 <= max_per_request <= MAX_PERSONALIZATIONS:
            raise ConfigError(f"max_per_request must be 1..{MAX_PERSONALIZATIONS}")
        if max_attempts < 1:
            raise ConfigError("max_attempts must be at least 1")
        if not _EMAIL.match(from_email):
            raise ConfigError("the SendGrid sender address is not a valid email address")
        self._api_key = api_key
        self._from: dict[str, str] = {"email": from_email}
        if from_name:
            self._from["name"] = from_name
        self._templates = templates
        self._asm_group_id = asm_group_id
        self._timeout = timeout
        self._max_attempts = max_attempts
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._max_rate_limit_wait = max_rate_limit_wait
        self._max_per_request = max_per_request
        self._sleep = sleep
        self._clock = clock
        self._client = SendGridAPIClient(api_key=api_key, host=api_host.rstrip("/"))
        # The library builds a fresh python_http_client.Client per call from this one,
        # copying its timeout; without one a stalled connection would hang the run.
        self._client.client.timeout = timeout

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> SendGridEmailSender:
        """The sender the settings describe.

        Raises:
            ConfigError: ``REFERRALS_SENDGRID_API_KEY`` is not set.
        """
        if settings.sendgrid_api_key is None:
            raise ConfigError("REFERRALS_SENDGRID_API_KEY is not set")
        kwargs: dict[str, Any] = {
            "from_email": settings.sendgrid_from_email,
            "from_name": settings.sendgrid_from_name,
            "templates": settings.sendgrid_templates,
            "asm_group_id": settings.sendgrid_asm_group_id,
            "api_host": settings.sendgrid_api_host,
            **overrides,
        }
        return cls(settings.sendgrid_api_key.get_secret_value(), **kwargs)

    def __repr__(self) -> str:
        return f"SendGridEmailSender(from={self._from['email']!r}, host={self._client.host!r})"

    # -- EmailSender -------------------------------------------------------------------

    def send(self, messages: Sequence[EmailMessage]) -> list[EmailResult]:
        """Send ``messages``; one result per message, in input order.

        A ``message_id`` that appears twice is sent once; both get its result.
        """
        results: dict[str, EmailResult] = {}
        unique: dict[str, EmailMessage] = {}
        for message in messages:
            unique.setdefault(message.message_id, message)

        sendable: list[EmailMessage] = []
        for message in unique.values():
            problem = self._local_problem(message)
            if problem is None:
                sendable.append(message)
            else:
                results[message.message_id] = EmailResult(
                    message.message_id, EmailOutcome.FAILED, error=problem
                )

        requests = list(self._requests(sendable))
        if requests:
            logger.info("sendgrid: %d messages in %d requests", len(sendable), len(requests))
        for request in requests:
            for result in self._post(request):
                results[result.message_id] = result
        return [results[message.message_id] for message in messages]

    # -- building requests ---------------------------------------------------------------

    def _local_problem(self, message: EmailMessage) -> str | None:
        # A bad message would make SendGrid refuse its whole request of up to 1,000,
        # so what can be checked here is checked here, for that message alone.
        if not _EMAIL.match(message.to_email):
            return "invalid recipient address"
        if message.template in self._templates:
            return None
        if not message.subject:
            return "empty subject"
        if not (message.data.get("text") or message.data.get("html")):
            return f"no text or html content for template {message.template!r}"
        return None

    def _requests(self, messages: Sequence[EmailMessage]) -> Iterable[_Request]:
        # A dynamic template names one template_id per request, so those messages go
        # by template. Locally rendered ones share nothing but the substitution tags:
        # asks for five different moments still fit in one request.
        by_template: dict[str, list[EmailMessage]] = {}
        rendered: list[EmailMessage] = []
        for message in messages:
            if message.template in self._templates:
                by_template.setdefault(message.template, []).append(message)
            else:
                rendered.append(message)
        for template, group in by_template.items():
            for batch in self._batches(group):
                yield self._template_request(template, self._templates[template], batch)
        if rendered:
            yield from self._content_requests("rendered", rendered)

    def _batches(self, messages: Sequence[EmailMessage]) -> list[list[EmailMessage]]:
        # SendGrid refuses a request naming one address twice in a personalization, and
        # its docs can be read as "in the personalizations array": a second message to
        # the same address goes to another request rather than risk 1,000 at once.
        batches: list[_Batch] = []
        first_open = 0
        for message in messages:
            address = message.to_email.lower()
            index = first_open
            while index < len(batches) and (
                address in batches[index].addresses
                or len(batches[index].messages) >= self._max_per_request
            ):
                index += 1
            if index == len(batches):
                batches.append(_Batch())
            batches[index].messages.append(message)
            batches[index].addresses.add(address)
            while (
                first_open < len(batches)
                and len(batches[first_open].messages) >= self._max_per_request
            ):
                first_open += 1
        return [batch.messages for batch in batches]

    def _envelope(self) -> dict[str, Any]:
        body: dict[str, Any] = {"from": dict(self._from)}
        if self._asm_group_id is not None:
            body["asm"] = {"group_id": self._asm_group_id}
        return body

    @staticmethod
    def _to(message: EmailMessage) -> list[dict[str, str]]:
        person = {"email": message.to_email}
        if message.to_name.strip():
            person["name"] = message.to_name
        return [person]

    def _template_request(
        self, template: str, template_id: str, batch: list[EmailMessage]
    ) -> _Request:
        body = self._envelope()
        body["template_id"] = template_id
        body["personalizations"] = [
            {
                "to": self._to(m),
                "dynamic_template_data": {**m.data, "subject": m.subject},
                "custom_args": {"message_id": m.message_id},
            }
            for m in batch
        ]
        return _Request(body, batch, template)

    def _content_requests(
        self, template: str, messages: Sequence[EmailMessage]
    ) -> Iterable[_Request]:
        # Each message is rendered locally, so every recipient has a body of their own.
        # Mail Send puts content at the message level, shared by all personalizations;
        # one request per message would turn 100,000 emails into 100,000 calls. Instead
        # the shared content is just a substitution tag per MIME type and each
        # personalization substitutes its own rendered text/html (and sets its own
        # subject), so 1,000 different emails still travel in one request. Substitutions
        # are capped at 10,000 bytes per personalization: a larger body is sent in a
        # request of its own with its content inline (no substitutions needed).
        shaped: dict[tuple[bool, bool], list[EmailMessage]] = {}
        for message in messages:
            text, html = message.data.get("text"), message.data.get("html")
            if _over_substitutions_budget(text, html):
                yield self._inline_request(template, message)
            else:
                shaped.setdefault((bool(text), bool(html)), []).append(message)
        for (has_text, has_html), group in shaped.items():
            content: list[dict[str, str]] = []
            if has_text:  # text/plain must come first
                content.append({"type": "text/plain", "value": TEXT_TAG})
            if has_html:
                content.append({"type": "text/html", "value": HTML_TAG})
            for batch in self._batches(group):
                body = self._envelope()
                body["content"] = content
                body["personalizations"] = [
                    {
                        "to": self._to(m),
                        "subject": m.subject,
                        "substitutions": _substitutions(m),
                        "custom_args": {"message_id": m.message_id},
                    }
                    for m in batch
                ]
                yield _Request(body, batch, template)

    def _inline_request(self, template: str, message: EmailMessage) -> _Request:
        body = self._envelope()
        content: list[dict[str, str]] = []
        if message.data.get("text"):
            content.append({"type": "text/plain", "value": message.data["text"]})
        if message.data.get("html"):
            content.append({"type": "text/html", "value": message.data["html"]})
        body["content"] = content
        body["personalizations"] = [
            {
                "to": self._to(message),
                "subject": message.subject,
                "custom_args": {"message_id": message.message_id},
            }
        ]
        return _Request(body, [message], template)

    # -- sending -------------------------------------------------------------------------

    def _post(self, request: _Request) -> list[EmailResult]:
        count = len(request.messages)
        last_problem = "not sent"
        for attempt in range(1, self._max_attempts + 1):
            wait: float
            try:
                response = self._client.client.mail.send.post(
                    request_body=request.body, timeout=self._timeout
                )
            except HTTPError as exc:
                status = int(exc.status_code)
                if status == 429:
                    wait = self._rate_limit_wait(exc.headers, attempt)
                    last_problem = "SendGrid 429 rate limited"
                elif status >= 500:
                    wait = self._backoff(attempt)
                    last_problem = f"SendGrid {status}"
                else:
                    error = self._error_text(status, exc.body)
                    logger.warning(
                        "sendgrid: request of %d (%s) refused with %d, not retried",
                        count,
                        request.label,
                        status,
                    )
                    return _results(request, EmailOutcome.FAILED, error=error)
            except (OSError, http.client.HTTPException) as exc:
                # Timeouts and dropped connections: the request may or may not have
                # reached SendGrid; like a 5xx it is sent again (SendGrid has no
                # idempotency key), which can at worst duplicate one request's emails.
                wait = self._backoff(attempt)
                last_problem = f"connection error ({type(exc).__name__})"
            else:
                provider_ref = response.headers.get("X-Message-Id")
                logger.info(
                    "sendgrid: request of %d (%s) accepted with %d as %s",
                    count,
                    request.label,
                    response.status_code,
                    provider_ref,
                )
                return _results(request, EmailOutcome.ACCEPTED, provider_ref=provider_ref)

            if attempt < self._max_attempts:
                logger.warning(
                    "sendgrid: request of %d (%s) attempt %d/%d: %s; retrying in %.2fs",
                    count,
                    request.label,
                    attempt,
                    self._max_attempts,
                    last_problem,
                    wait,
                )
                self._sleep(wait)
        logger.warning(
            "sendgrid: request of %d (%s) gave up after %d attempts: %s",
            count,
            request.label,
            self._max_attempts,
            last_problem,
        )
        return _results(
            request,
            EmailOutcome.RETRYABLE,
            error=f"{last_problem} after {self._max_attempts} attempts",
        )

    def _backoff(self, attempt: int) -> float:
        return float(min(self._backoff_cap, self._backoff_base * 2 ** (attempt - 1)))

    def _rate_limit_wait(self, headers: Any, attempt: int) -> float:
        # X-RateLimit-Reset is the epoch second the limit resets at, not a delay.
        reset = str(headers.get("X-RateLimit-Reset") or "") if headers is not None else ""
        try:
            until = float(reset)
        except ValueError:
            return self._backoff(attempt)
        return max(0.0, min(self._max_rate_limit_wait, until - self._clock()))

    def _error_text(self, status: int, body: object) -> str:
        detail = ""
        try:
            payload = json.loads(body.decode() if isinstance(body, bytes) else str(body))
            parts = []
            for item in payload.get("errors", [])[:3]:
                message = str(item.get("message") or "").strip()
                where = item.get("field")
                parts.append(f"{where}: {message}" if where else message)
            detail = "; ".join(p for p in parts if p)
        except (ValueError, AttributeError, TypeError):
            detail = ""
        text = f"SendGrid {status}" + (f": {detail}" if detail else "")
        return _redact(text, self._api_key)[:_MAX_ERROR_CHARS]


def _substitutions(message: EmailMessage) -> dict[str, str]:
    subs: dict[str, str] = {}
    if message.data.get("text"):
        subs[TEXT_TAG] = message.data["text"]
    if message.data.get("html"):
        subs[HTML_TAG] = message.data["html"]
    return subs


def _over_substitutions_budget(text: str | None, html: str | None) -> bool:
    # A character takes at most 6 bytes of JSON (\uXXXX; in UTF-8 at most 4): a body
    # that cannot reach the budget even so is not serialized just to be measured.
    most = 6 * (len(text or "") + len(html or "")) + len(TEXT_TAG) + len(HTML_TAG) + 16
    if most <= SUBSTITUTIONS_BUDGET_BYTES:
        return False
    subs = {k: v for k, v in ((TEXT_TAG, text), (HTML_TAG, html)) if v}
    size = len(json.dumps(subs, separators=(",", ":"), ensure_ascii=False).encode())
    return size > SUBSTITUTIONS_BUDGET_BYTES


def _results(
    request: _Request,
    outcome: EmailOutcome,
    *,
    provider_ref: str | None = None,
    error: str | None = None,
) -> list[EmailResult]:
    return [
        EmailResult(m.message_id, outcome, provider_ref=provider_ref, error=error)
        for m in request.messages
    ]


def _redact(text: str, api_key: str) -> str:
    if api_key:
        text = text.replace(api_key, "<api key>")
    return _ADDRESS_IN_TEXT.sub("<address>", text)
