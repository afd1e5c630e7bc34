"""The shared HTTP client of the API sources: retries, waits, and what errors say.

A scripted ``requests`` transport stands in for the network, so every answer (429 with
its ``Retry-After``, 5xx, a dropped connection, a body that is not JSON) is exact and no
test waits: the client's ``sleep`` only records.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest
import requests
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict

from domain.errors import PermanentIntegrationError, RetryableIntegrationError
from integrations.sources.http import JsonHttpClient, RetryPolicy, mask_emails

TOKEN = "pat-na1-secret-token-value"
BASE = "https://api.example.test"
NOW = 1_800_000_000.0

Answer = tuple[int, bytes, Mapping[str, str]] | Exception


class ScriptedAdapter(BaseAdapter):
    """Answers each request with the next scripted answer, and records the request."""

    def __init__(self, answers: list[Answer]) -> None:
        super().__init__()
        self.answers = answers
        self.sent: list[requests.PreparedRequest] = []

    def send(  # type: ignore[override]
        self, request: requests.PreparedRequest, **kwargs: object
    ) -> requests.Response:
        self.sent.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        status, body, headers = answer
        response = requests.Response()
        response.status_code = status
        response._content = body
        response.headers = CaseInsensitiveDict(headers)
        response.url = request.url or ""
        response.request = request
        return response

    def close(self) -> None:
        """Nothing to release."""


def ok(body: bytes = b'{"ok": true}') -> Answer:
    return (200, body, {"Content-Type": "application/json"})


def status(code: int, body: bytes = b"{}", **headers: str) -> Answer:
    return (code, body, {k.replace("_", "-"): v for k, v in headers.items()})


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as s:
        yield s


ClientFactory = Callable[..., tuple[JsonHttpClient, ScriptedAdapter]]


@pytest.fixture
def client(session: requests.Session, sleeps: list[float]) -> ClientFactory:
    def make(*answers: Answer, **retry: float) -> tuple[JsonHttpClient, ScriptedAdapter]:
        adapter = ScriptedAdapter(list(answers))
        session.mount(BASE, adapter)
        http = JsonHttpClient(
            "hubspot",
            BASE,
            headers={"Authorization": f"Bearer {TOKEN}"},
            secrets=(TOKEN,),
            session=session,
            retry=RetryPolicy(**retry),  # type: ignore[arg-type]
            sleep=sleeps.append,
            clock=lambda: NOW,
        )
        return http, adapter

    return make


def test_a_json_answer_is_returned_at_the_first_attempt_without_waiting(
    client: ClientFactory, sleeps: list[float]
) -> None:
    http, adapter = client(ok(b'{"results": [1, 2]}'))

    assert http.post("/search", {"limit": 2}) == {"results": [1, 2]}
    assert sleeps == []
    assert adapter.sent[0].headers["Authorization"] == f"Bearer {TOKEN}"
    assert adapter.sent[0].body == b'{"limit": 2}'


def test_a_429_is_retried_after_the_delay_its_retry_after_asks_for(
    client: ClientFactory, sleeps: list[float]
) -> None:
    http, adapter = client(status(429, Retry_After="7"), ok())

    assert http.get("/things") == {"ok": True}
    assert sleeps == [7.0]
    assert len(adapter.sent) == 2


def test_a_retry_after_given_as_an_http_date_is_honoured(
    client: ClientFactory, sleeps: list[float]
) -> None:
    when = format_datetime(datetime.fromtimestamp(NOW + 12, UTC), usegmt=True)
    http, _ = client(status(429, Retry_After=when), ok())

    http.get("/things")

    assert sleeps == [12.0]


def test_a_retry_after_longer_than_the_cap_waits_only_the_cap(
    client: ClientFactory, sleeps: list[float]
) -> None:
    http, _ = client(status(429, Retry_After="3600"), ok(), max_retry_after=30.0)

    http.get("/things")

    assert sleeps == [30.0]


def test_a_429_without_retry_after_backs_off_like_a_server_error(
    client: ClientFactory, sleeps: list[float]
) -> None:
    http, _ = client(status(429), status(429), ok(), backoff_base=0.5)

    http.get("/things")

    assert sleeps == [0.5, 1.0]


def test_server_errors_are_retried_with_growing_backoff_until_success(
    client: ClientFactory, sleeps: list[float]
) -> None:
    http, adapter = client(
        status(500), status(502), status(503), ok(), backoff_base=1.0, backoff_max=3.0
    )

    assert http.get("/things") == {"ok": True}
    assert sleeps == [1.0, 2.0, 3.0]
    assert len(adapter.sent) == 4


@pytest.mark.parametrize(
    "failure",
    [
        requests.ConnectionError("connection reset"),
        requests.ReadTimeout("read timed out"),
        requests.exceptions.ChunkedEncodingError("body cut short"),
    ],
    ids=["dropped connection", "timeout", "truncated body"],
)
def test_network_failures_are_retried(
    client: ClientFactory, sleeps: list[float], failure: Exception
) -> None:
    http, _ = client(failure, ok())

    assert http.get("/things") == {"ok": True}
    assert sleeps == [0.5]


def test_a_2xx_body_that_is_not_json_is_retried(client: ClientFactory, sleeps: list[float]) -> None:
    http, _ = client(ok(b'{"results": [{"id": '), ok(b'{"results": []}'))

    assert http.get("/things") == {"results": []}
    assert sleeps == [0.5]


def test_an_empty_2xx_body_is_none(client: ClientFactory) -> None:
    http, _ = client((204, b"", {}))

    assert http.get("/things") is None


def test_exhausted_retries_raise_a_retryable_error_carrying_the_last_retry_after(
    client: ClientFactory, sleeps: list[float]
) -> None:
    http, adapter = client(
        status(500), status(429, Retry_After="4"), status(429, Retry_After="9"), max_attempts=3
    )

    with pytest.raises(RetryableIntegrationError) as caught:
        http.get("/things")

    assert caught.value.retry_after_seconds == 9.0
    assert "HTTP 429" in str(caught.value)
    assert "after 3 attempts" in str(caught.value)
    assert len(adapter.sent) == 3
    # No wait after the last attempt: the caller decides when to try again.
    assert sleeps == [0.5, 4.0]


@pytest.mark.parametrize("code", [400, 401, 403, 404, 422])
def test_client_errors_are_permanent_and_never_retried(
    client: ClientFactory, sleeps: list[float], code: int
) -> None:
    http, adapter = client(status(code, b'{"message": "refused"}'), ok())

    with pytest.raises(PermanentIntegrationError, match=rf"hubspot GET /things: HTTP {code}"):
        http.get("/things")

    assert len(adapter.sent) == 1
    assert sleeps == []


def test_a_permanent_error_never_carries_the_token_or_an_email_address(
    client: ClientFactory,
) -> None:
    body = b'{"message": "token ' + TOKEN.encode() + b' refused for ada.lovelace@acme.example"}'
    http, _ = client(status(401, body))

    with pytest.raises(PermanentIntegrationError) as caught:
        http.get("/things", {"q": "x"})

    message = str(caught.value)
    assert TOKEN not in message
    assert "@" not in message
    assert "q=x" not in message
    assert message == "hubspot GET /things: HTTP 401: token <secret> refused for <email>"


def test_a_long_provider_message_is_cut_short(client: ClientFactory) -> None:
    http, _ = client(status(400, b'{"message": "' + b"x" * 5000 + b'"}'))

    with pytest.raises(PermanentIntegrationError) as caught:
        http.get("/things")

    assert len(str(caught.value)) < 300


def test_retry_logs_name_the_status_but_never_the_token(
    client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    http, _ = client(status(503), ok())

    with caplog.at_level(logging.DEBUG):
        http.get("/things")

    assert "HTTP 503, retrying in 0.5s (attempt 1 of 5)" in caplog.text
    assert TOKEN not in caplog.text


def test_the_client_closes_a_session_it_made_but_not_one_it_was_given(
    session: requests.Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed: list[requests.Session] = []

    class RecordingSession(requests.Session):
        def close(self) -> None:
            closed.append(self)
            super().close()

    with JsonHttpClient("hubspot", BASE, session=session):
        pass
    assert closed == []

    monkeypatch.setattr(requests, "Session", RecordingSession)
    with JsonHttpClient("hubspot", BASE) as own:
        pass
    assert closed == [own._session]


def test_a_retry_policy_needs_at_least_one_attempt() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        RetryPolicy(max_attempts=0)


def test_mask_emails_replaces_every_address_and_nothing_else() -> None:
    text = "contact ada@acme.example and (bob.smith+x@beta.co.uk), not @handle or a@"

    assert mask_emails(text) == "contact <email> and (<email>), not @handle or a@"
