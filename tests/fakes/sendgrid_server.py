"""A fake of SendGrid's v3 Mail Send API over real HTTP, and a signer for its Event Webhook.

:class:`FakeSendGrid` serves ``POST /v3/mail/send`` on ``127.0.0.1`` (a free port) with
the stdlib's threading HTTP server. It checks the bearer key, validates the body the
way SendGrid documents it (the error texts follow SendGrid's Mail Send error reference),
and answers like SendGrid does:

* ``202`` with an ``X-Message-Id`` header and an empty body when the body is valid;
* ``400`` with ``{"errors": [{"message", "field", "help"}]}`` for an invalid body;
* ``401`` for a missing or wrong key, ``413`` for more than 1,000 personalizations or a
  body over 30 MB (real SendGrid answers the personalization limit with a 400; either
  way nothing is sent and a client must not retry), ``415`` for a non-JSON body.

Faults are scripted per request, in order: ``fake.script([429, 500, "ok"])``. A 429
carries ``X-RateLimit-Limit``, ``X-RateLimit-Remaining: 0`` and ``X-RateLimit-Reset``
(epoch seconds). :class:`Fault` scripts anything else: a delay, custom headers, or a
dropped connection.

:class:`WebhookSigner` makes a P-256 key pair and signs payloads exactly as SendGrid's
Signed Event Webhook does (ECDSA/SHA-256 over ``timestamp + payload``, DER signature,
base64; the public key is base64 DER SubjectPublicKeyInfo).
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

MAIL_SEND_PATH = "/v3/mail/send"
MAX_PERSONALIZATIONS = 1000
MAX_RECIPIENTS = 1000
MAX_BODY_BYTES = 30 * 1024 * 1024
MAX_CUSTOM_ARGS_BYTES = 10_000
MAX_SUBSTITUTIONS_BYTES = 10_000
HELP_URL = "http://sendgrid.com/docs/API_Reference/Web_API_v3/Mail/errors.html#message."

# Deliberately close to what SendGrid accepts: one @, no spaces, a dotted domain.
_EMAIL = re.compile(
    r"^[^@\s<>()\[\],;:\"]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$"
)


@dataclass(frozen=True)
class Fault:
    """One scripted answer that replaces normal processing of a request.

    Attributes:
        status: HTTP status to answer with (ignored when ``disconnect``); ``None``
            processes the request normally after ``delay``: a slow success, which
            SendGrid really sends even if the client gave up waiting.
        headers: extra response headers; a 429 gets SendGrid's rate-limit headers by
            default, which these override.
        body: response body; by default SendGrid's error shape for ``status``.
        delay: seconds to wait before answering (to exercise client timeouts).
        disconnect: close the connection without any answer.
    """

    status: int | None = 500
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | None = None
    delay: float = 0.0
    disconnect: bool = False


ScriptItem = int | str | Fault
"""``"ok"`` (process normally), ``"disconnect"``, an HTTP status, or a :class:`Fault`."""


class Delivered(NamedTuple):
    """One personalization SendGrid accepted: who, with which args, data and template."""

    to_email: str
    custom_args: dict[str, str]
    dynamic_template_data: dict[str, Any] | None
    template_id: str | None


class Rendered(NamedTuple):
    """What a recipient of a non-template send would see, substitutions applied."""

    to_email: str
    to_name: str | None
    subject: str | None
    text: str | None
    html: str | None
    custom_args: dict[str, str]


@dataclass(frozen=True)
class RecordedRequest:
    """An accepted (202) Mail Send request."""

    message_id: str
    body: dict[str, Any]
    headers: dict[str, str]


@dataclass(frozen=True)
class Attempt:
    """Any request that reached the fake, with the status it got (``None``: dropped)."""

    status: int | None
    personalizations: int


class FakeSendGrid:
    """SendGrid's Mail Send endpoint on a local port; see the module docstring.

    Args:
        api_key: the only key accepted (as ``Authorization: Bearer <api_key>``).
        rate_limit: the ``X-RateLimit-Limit`` a 429 reports.
        clock: epoch seconds now; a 429's ``X-RateLimit-Reset`` is ``clock() + 1``
            unless the script sets it.
    """

    def __init__(
        self,
        api_key: str = "SG.fake-key.for-tests",
        *,
        rate_limit: int = 600,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.api_key = api_key
        self.rate_limit = rate_limit
        self.clock = clock
        # Accepted bodies are kept as received and parsed when first looked at: kept
        # parsed, 100,000 personalizations were some 200,000 more objects for the
        # garbage collector to walk while the sender under test ran.
        self._accepted: list[tuple[str, bytes, dict[str, str]]] = []
        self._requests: list[RecordedRequest] = []
        self._delivered: list[Delivered] = []
        self._rendered: list[Rendered] = []
        self.attempts: list[Attempt] = []
        self._script: list[ScriptItem] = []
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> FakeSendGrid:
        """Listen on a free port of 127.0.0.1 and serve in a background thread."""
        if self._server is not None:
            return self
        server = _Server(("127.0.0.1", 0), _Handler)
        server.fake = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, wait for requests in flight, and close the socket."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()
        self._server = None
        self._thread = None

    def __enter__(self) -> FakeSendGrid:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL to give the client as its host, e.g. ``http://127.0.0.1:53211``."""
        if self._server is None:
            raise RuntimeError("FakeSendGrid is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    # -- scripting and inspection ----------------------------------------------------

    def script(self, items: Iterable[ScriptItem]) -> None:
        """Answer the next requests with ``items``, one each, then normally again."""
        with self._lock:
            self._script.extend(items)

    def reset(self) -> None:
        """Forget every recorded request and any script left."""
        with self._lock:
            self._accepted.clear()
            self._requests.clear()
            self._delivered.clear()
            self._rendered.clear()
            self.attempts.clear()
            self._script.clear()

    def _next_script_item(self) -> ScriptItem:
        with self._lock:
            return self._script.pop(0) if self._script else "ok"

    def _record_attempt(self, status: int | None, personalizations: int) -> None:
        with self._lock:
            self.attempts.append(Attempt(status, personalizations))

    @property
    def requests(self) -> list[RecordedRequest]:
        """The accepted requests, in order."""
        return self._parsed()[0]

    @property
    def delivered(self) -> list[Delivered]:
        """Every personalization's recipient the accepted requests carried, in order."""
        return self._parsed()[1]

    @property
    def rendered(self) -> list[Rendered]:
        """What each recipient of a non-template send sees, in order."""
        return self._parsed()[2]

    def _accept(self, raw: bytes, headers: dict[str, str]) -> str:
        message_id = secrets.token_urlsafe(16)[:22]
        with self._lock:
            self._accepted.append((message_id, raw, headers))
        return message_id

    def _parsed(self) -> tuple[list[RecordedRequest], list[Delivered], list[Rendered]]:
        with self._lock:
            for message_id, raw, headers in self._accepted[len(self._requests) :]:
                body = json.loads(raw)
                self._requests.append(RecordedRequest(message_id, body, headers))
                self._delivered.extend(_delivered(body))
                if body.get("template_id") is None:
                    self._rendered.extend(_rendered(body))
            return self._requests, self._delivered, self._rendered

    def rate_limit_headers(self, reset: int | None = None) -> dict[str, str]:
        """SendGrid's headers on a 429, resetting at ``reset`` (epoch seconds)."""
        return {
            "X-RateLimit-Limit": str(self.rate_limit),
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": str(int(self.clock()) + 1 if reset is None else reset),
        }


def _args(body: dict[str, Any], p: dict[str, Any]) -> dict[str, str]:
    found = body.get("custom_args")
    return {**(found if isinstance(found, dict) else {}), **p.get("custom_args", {})}


def _delivered(body: dict[str, Any]) -> Iterator[Delivered]:
    template_id = body.get("template_id")
    for p in body["personalizations"]:
        args = _args(body, p)
        for to in p["to"]:
            yield Delivered(to["email"], args, p.get("dynamic_template_data"), template_id)


def _rendered(body: dict[str, Any]) -> Iterator[Rendered]:
    for p in body["personalizations"]:
        args = _args(body, p)
        for to in p["to"]:
            yield _render(body, p, to, args)


def _render(
    body: dict[str, Any], p: dict[str, Any], to: dict[str, Any], args: dict[str, str]
) -> Rendered:
    subs: dict[str, str] = p.get("substitutions", {})

    def substitute(value: str | None) -> str | None:
        if value is None:
            return None
        for tag, replacement in subs.items():
            value = value.replace(tag, replacement)
        return value

    content = {c["type"]: c["value"] for c in body.get("content", [])}
    return Rendered(
        to_email=to["email"],
        to_name=to.get("name"),
        subject=substitute(p.get("subject", body.get("subject"))),
        text=substitute(content.get("text/plain")),
        html=substitute(content.get("text/html")),
        custom_args=args,
    )


# -- validation ----------------------------------------------------------------------


def _error(message: str, field_: str | None, anchor: str | None = None) -> dict[str, Any]:
    return {
        "message": message,
        "field": field_,
        "help": HELP_URL + anchor if anchor else None,
    }


def _is_email(value: object) -> bool:
    return isinstance(value, str) and len(value) <= 320 and _EMAIL.match(value) is not None


def _size(value: object) -> int:
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


def _over(strings: dict[str, str], limit: int) -> bool:
    """Whether the compact UTF-8 JSON of ``strings`` is longer than ``limit`` bytes."""
    # A character takes at most 6 bytes (\uXXXX), a pair 6 more ("":"",) and the
    # braces 2: what cannot reach the limit even so is not serialized to be measured.
    most = 6 * sum(len(k) + len(v) for k, v in strings.items()) + 6 * len(strings) + 2
    return most > limit and _size(strings) > limit


def validate_mail_send(body: object) -> list[dict[str, Any]]:
    """SendGrid's 400 errors for a Mail Send body (empty when it would be accepted).

    Covers what SendGrid documents for the fields this project uses: ``from``,
    ``personalizations`` (``to``/``cc``/``bcc``, ``subject``, ``substitutions``,
    ``dynamic_template_data``, ``custom_args``, ``send_at``), ``subject``,
    ``content``, ``template_id``, ``custom_args``, ``categories`` and ``asm``.
    """
    if not isinstance(body, dict):
        return [_error("Bad Request", None)]
    errors: list[dict[str, Any]] = []
    template_id = body.get("template_id")
    if template_id is not None and (not isinstance(template_id, str) or not template_id):
        errors.append(_error("The template_id must be a string.", "template_id", "template_id"))
        template_id = None
    dynamic = isinstance(template_id, str) and template_id.startswith("d-")

    sender = body.get("from")
    if not isinstance(sender, dict) or "email" not in sender:
        errors.append(
            _error(
                "The from object must be provided for every email send. It is an object "
                "that requires the email parameter, but may also contain a name parameter.",
                "from",
                "from",
            )
        )
    elif not _is_email(sender["email"]):
        errors.append(
            _error("The from email does not contain a valid address.", "from.email", "from")
        )

    personalizations = body.get("personalizations")
    if not isinstance(personalizations, list) or not personalizations:
        errors.append(
            _error(
                "The personalizations field is required and must have at least one "
                "personalization.",
                "personalizations",
                "personalizations",
            )
        )
        personalizations = []

    top_args = body.get("custom_args")
    if top_args is not None and not isinstance(top_args, dict):
        errors.append(
            _error(
                f"Invalid type. Expected: object, given: {type(top_args).__name__}.",
                "custom_args",
                "custom_args",
            )
        )
        top_args = None

    every_p_has_subject = bool(personalizations)
    recipients = 0
    for i, p in enumerate(personalizations):
        where = f"personalizations.{i}"
        if not isinstance(p, dict):
            errors.append(_error("Each personalization must be an object.", where))
            every_p_has_subject = False
            continue
        seen: set[str] = set()
        to = p.get("to")
        if not isinstance(to, list) or not to:
            errors.append(
                _error(
                    "The to array is required for all personalization objects, and must "
                    "have at least one email object with a valid email address.",
                    f"{where}.to",
                    "personalizations.to",
                )
            )
        for kind in ("to", "cc", "bcc"):
            people = p.get(kind)
            if people is None:
                continue
            if not isinstance(people, list):
                errors.append(_error(f"The {kind} field must be an array.", f"{where}.{kind}"))
                continue
            for j, person in enumerate(people):
                recipients += 1
                email = person.get("email") if isinstance(person, dict) else None
                if not _is_email(email):
                    errors.append(
                        _error(
                            "Does not contain a valid address.",
                            f"{where}.{kind}.{j}.email",
                            f"personalizations.{kind}",
                        )
                    )
                    continue
                name = person.get("name")
                if name is not None and not isinstance(name, str):
                    errors.append(
                        _error(
                            "The name must be a string.",
                            f"{where}.{kind}.{j}.name",
                            f"personalizations.{kind}",
                        )
                    )
                key = str(email).lower()
                if key in seen:
                    # SendGrid's own text names the address; clients must not echo it.
                    errors.append(
                        _error(
                            "Each email address in the personalization block should be "
                            "unique between to, cc, and bcc. We found the first duplicate "
                            f"instance of [{email}] in the {where}.{kind} field.",
                            where,
                            "personalizations",
                        )
                    )
                seen.add(key)
        subject = p.get("subject")
        if subject is None:
            every_p_has_subject = False
        elif not isinstance(subject, str) or not subject:
            errors.append(
                _error(
                    "The subject of a personalization must be a string at least one "
                    "character in length.",
                    f"{where}.subject",
                    "personalizations.subject",
                )
            )
        subs = p.get("substitutions")
        if subs is not None:
            if dynamic:
                errors.append(
                    _error(
                        "Substitutions may not be used with dynamic templating",
                        f"{where}.substitutions",
                        "personalizations.substitutions",
                    )
                )
            elif not isinstance(subs, dict) or not all(isinstance(v, str) for v in subs.values()):
                errors.append(
                    _error(
                        "Substitutions must be an object of string values.",
                        f"{where}.substitutions",
                        "personalizations.substitutions",
                    )
                )
            elif _over(subs, MAX_SUBSTITUTIONS_BYTES):
                errors.append(
                    _error(
                        "The total collective size of your substitutions may not exceed "
                        "10,000 bytes per personalization object.",
                        f"{where}.substitutions",
                        "personalizations.substitutions",
                    )
                )
        data = p.get("dynamic_template_data")
        if data is not None and not isinstance(data, dict):
            errors.append(
                _error(
                    "The dynamic_template_data must be an object.",
                    f"{where}.dynamic_template_data",
                    "personalizations.dynamic_template_data",
                )
            )
        args = p.get("custom_args")
        if args is not None:
            if not isinstance(args, dict) or not all(isinstance(v, str) for v in args.values()):
                errors.append(
                    _error(
                        "Custom args must be an object whose values are strings.",
                        f"{where}.custom_args",
                        "personalizations.custom_args",
                    )
                )
            elif _size({**(top_args or {}), **args}) > MAX_CUSTOM_ARGS_BYTES:
                errors.append(
                    _error(
                        "The total size of custom arguments may not exceed 10,000 bytes.",
                        f"{where}.custom_args",
                        "personalizations.custom_args",
                    )
                )
        send_at = p.get("send_at")
        if send_at is not None and (not isinstance(send_at, int) or isinstance(send_at, bool)):
            errors.append(
                _error(
                    "The send_at must be a unix timestamp (integer).",
                    f"{where}.send_at",
                    "personalizations.send_at",
                )
            )
    if recipients > MAX_RECIPIENTS:
        errors.append(
            _error(
                "There is a limit of 1000 total recipients (to + cc + bcc) per request.",
                "personalizations",
                "personalizations",
            )
        )

    subject = body.get("subject")
    if subject is not None and (not isinstance(subject, str) or not subject):
        errors.append(
            _error(
                "The subject must be a string at least one character in length.",
                "subject",
                "subject",
            )
        )
    if template_id is None:
        if subject is None and not every_p_has_subject:
            errors.append(
                _error(
                    "The subject is required. You can get around this requirement if you "
                    "use a template with a subject defined or if every personalization has "
                    "a subject defined.",
                    "subject",
                    "subject",
                )
            )
        content = body.get("content")
        if not isinstance(content, list) or not content:
            errors.append(
                _error(
                    "Unless a valid template_id is provided, the content parameter is "
                    "required. There must be at least one defined content block. We "
                    "typically suggest both text/plain and text/html blocks are included, "
                    "but only one block is required.",
                    "content",
                    "content",
                )
            )
    content = body.get("content")
    if isinstance(content, list):
        types: list[str] = []
        for k, block in enumerate(content):
            if not isinstance(block, dict):
                errors.append(_error("Each content block must be an object.", f"content.{k}"))
                continue
            if not isinstance(block.get("type"), str) or not block["type"]:
                errors.append(
                    _error(
                        "The content type must be a string at least one character in length.",
                        f"content.{k}.type",
                        "content.type",
                    )
                )
            else:
                types.append(block["type"])
            if not isinstance(block.get("value"), str) or not block["value"]:
                errors.append(
                    _error(
                        "The content value must be a string at least one character in length.",
                        f"content.{k}.value",
                        "content.value",
                    )
                )
        if "text/plain" in types and types.index("text/plain") != 0:
            errors.append(
                _error(
                    "If present, text/plain content must be first, followed by text/html, "
                    "followed by any other content.",
                    "content",
                    "content",
                )
            )

    categories = body.get("categories")
    if categories is not None and (
        not isinstance(categories, list)
        or len(categories) > 10
        or not all(isinstance(c, str) and len(c) <= 255 for c in categories)
    ):
        errors.append(
            _error(
                "Categories must be an array of at most 10 strings of at most 255 characters.",
                "categories",
                "categories",
            )
        )

    if "asm" in body:
        asm = body["asm"]
        group = asm.get("group_id") if isinstance(asm, dict) else None
        if not isinstance(group, int) or isinstance(group, bool):
            errors.append(
                _error(
                    "The asm.group_id is required and must be an integer.",
                    "asm.group_id",
                    "asm.group_id",
                )
            )
        groups = asm.get("groups_to_display") if isinstance(asm, dict) else None
        if groups is not None and (
            not isinstance(groups, list)
            or len(groups) > 25
            or not all(isinstance(g, int) and not isinstance(g, bool) for g in groups)
        ):
            errors.append(
                _error(
                    "The asm.groups_to_display must be an array of at most 25 integers.",
                    "asm.groups_to_display",
                    "asm.groups_to_display",
                )
            )
    return errors


# -- HTTP handler --------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    fake: FakeSendGrid
    # stop() then waits for handlers in flight (a delayed fault included), so no
    # socket outlives the fake.
    daemon_threads = False

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that timed out and hung up is part of the scripts, not a failure.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server_version = "nginx"
    sys_version = ""

    @property
    def fake(self) -> FakeSendGrid:
        server = self.server
        assert isinstance(server, _Server)
        return server.fake

    def log_message(self, format: str, *args: Any) -> None:
        # Silence the default stderr access log: tests stay quiet.
        return

    def _send(
        self, status: int, payload: object | None = None, headers: Mapping[str, str] | None = None
    ) -> None:
        data = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if data:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if data:
            self.wfile.write(data)

    def _errors(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        self._send(status, {"errors": [_error(message, None)]}, headers)

    def do_GET(self) -> None:
        self._errors(405, "method not allowed")

    do_PUT = do_PATCH = do_DELETE = do_GET  # noqa: N815

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        fake = self.fake
        if self.path.rstrip("/") != MAIL_SEND_PATH:
            fake._record_attempt(404, 0)
            self._errors(404, "not found")
            return

        item = fake._next_script_item()
        if isinstance(item, Fault) and item.status is None and not item.disconnect:
            time.sleep(item.delay)
        elif item != "ok":
            self._fault(item)
            return

        status, payload, headers = self._process(raw)
        count = 0
        if status == 202 and isinstance(payload, dict):
            count = len(payload["personalizations"])
            message_id = fake._accept(raw, {k: v for k, v in self.headers.items()})
            fake._record_attempt(202, count)
            self._send(202, None, {"X-Message-Id": message_id, **headers})
            return
        fake._record_attempt(status, count)
        self._send(status, payload, headers)

    def _fault(self, item: ScriptItem) -> None:
        fault = item if isinstance(item, Fault) else None
        if item == "disconnect":
            fault = Fault(disconnect=True)
        elif isinstance(item, int):
            fault = Fault(status=item)
        if fault is None:
            raise ValueError(f"unknown script item {item!r}")
        if fault.delay:
            time.sleep(fault.delay)
        if fault.disconnect or fault.status is None:
            self.fake._record_attempt(None, 0)
            self.close_connection = True
            # No status line at all: the client sees the server hang up.
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        status = fault.status
        headers = dict(fault.headers)
        if status == 429:
            headers = {**self.fake.rate_limit_headers(), **headers}
        self.fake._record_attempt(status, 0)
        if fault.body is not None:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(fault.body)))
            self.end_headers()
            self.wfile.write(fault.body)
            return
        message = {
            429: "too many requests",
            500: "internal server error",
            502: "bad gateway",
            503: "service unavailable",
            504: "gateway timeout",
        }.get(status, "error")
        self._errors(status, message, headers)

    def _process(self, raw: bytes) -> tuple[int, object, dict[str, str]]:
        auth = self.headers.get("Authorization", "")
        if auth != f"Bearer {self.fake.api_key}":
            return (
                401,
                {
                    "errors": [
                        _error(
                            "The provided authorization grant is invalid, expired, or revoked",
                            None,
                        )
                    ]
                },
                {},
            )
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip()
        if content_type != "application/json":
            return 415, {"errors": [_error("Content-Type should be application/json.", None)]}, {}
        if len(raw) > MAX_BODY_BYTES:
            return 413, {"errors": [_error("content too large", None)]}, {}
        try:
            body = json.loads(raw)
        except ValueError:
            return 400, {"errors": [_error("Bad Request", None)]}, {}
        personalizations = body.get("personalizations") if isinstance(body, dict) else None
        if isinstance(personalizations, list) and len(personalizations) > MAX_PERSONALIZATIONS:
            return (
                413,
                {
                    "errors": [
                        _error(
                            "The personalization block is limited to 1000 personalizations "
                            f"per API request. You have provided {len(personalizations)} "
                            "personalizations. Please consider splitting this into multiple "
                            "requests and resending your request.",
                            "personalizations",
                            "personalizations",
                        )
                    ]
                },
                {},
            )
        errors = validate_mail_send(body)
        if errors:
            return 400, {"errors": errors}, {}
        return 202, body, {}


# -- Event Webhook signing -----------------------------------------------------------


class WebhookSigner:
    """A P-256 key pair that signs Event Webhook posts exactly as SendGrid does."""

    SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
    TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"

    def __init__(self) -> None:
        self._private_key = ec.generate_private_key(ec.SECP256R1())

    @property
    def public_key_b64(self) -> str:
        """The verification key as SendGrid shows it: base64 of the DER public key."""
        der = self._private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return base64.b64encode(der).decode()

    def sign(self, payload: bytes, timestamp: str) -> str:
        """Base64 DER ECDSA/SHA-256 signature of ``timestamp`` followed by ``payload``."""
        signature = self._private_key.sign(timestamp.encode() + payload, ec.ECDSA(hashes.SHA256()))
        return base64.b64encode(signature).decode()

    def headers(self, payload: bytes, timestamp: str) -> dict[str, str]:
        """The two headers SendGrid sends with a signed post."""
        return {
            self.SIGNATURE_HEADER: self.sign(payload, timestamp),
            self.TIMESTAMP_HEADER: timestamp,
        }
