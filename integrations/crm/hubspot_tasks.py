"""Detractor follow-up tasks in HubSpot: ``POST /crm/v3/objects/tasks``, one per
follow-up, associated with the contact (HubSpot-defined association type 204, task to
contact) and assigned to an owner when one is configured.

Writes are never retried here: a task is created at most once per call, and the
ledger decides what happens next from the outcome (:class:`domain.detractors.TaskOutcome`):

* 201/200 with the task's id: ``CREATED``.
* 429: ``RETRYABLE``, and the rest of the batch is not tried (it waits for the next run).
* 5xx, or a connection that never opened: ``RETRYABLE``; HubSpot created nothing.
* a timeout or a connection dropped after the request went out: ``UNKNOWN``; the task
  may exist, so it is not sent again and a person checks.
* any other 4xx (a contact that does not exist, a token without the write scope):
  ``FAILED``, with HubSpot's message cut short and cleaned of addresses and the token.

The token needs the ``crm.objects.contacts.write`` scope (HubSpot's tasks guide).
Request bodies name the contact by name and id and the score; never an email address.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import requests
from urllib3.exceptions import NewConnectionError

from domain.detractors import CrmTaskResult, DetractorFollowUp, TaskOutcome
from integrations.sources.http import mask_emails

logger = logging.getLogger(__name__)

TASKS_PATH = "/crm/v3/objects/tasks"
TASK_TO_CONTACT = 204
_MAX_DETAIL_CHARS = 200
RATE_LIMITED = "HTTP 429 (rate limited)"


def task_properties(
    follow_up: DetractorFollowUp, due: datetime, owner_id: str | None
) -> dict[str, str]:
    """The task's HubSpot properties: due now, high priority, not started."""
    properties = {
        "hs_timestamp": due.astimezone(UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z"),
        "hs_task_subject": f"Follow up with a detractor: {follow_up.who}, NPS {follow_up.score}",
        "hs_task_body": (
            f"{follow_up.who} gave an NPS score of {follow_up.score} on "
            f"{follow_up.occurred_at.date().isoformat()} (account: {follow_up.account}). "
            "They are not asked to refer; please reach out. "
            f"Referral program follow-up id: {follow_up.source_event}"
        ),
        "hs_task_status": "NOT_STARTED",
        "hs_task_priority": "HIGH",
        "hs_task_type": "TODO",
    }
    if owner_id:
        properties["hubspot_owner_id"] = owner_id
    return properties


class HubSpotTasks:
    """:class:`domain.detractors.CrmTasks` on HubSpot.

    Args:
        access_token: a private app token with ``crm.objects.contacts.write``; sent as
            a bearer token, never logged.
        api_base: API base URL (tests point it at a local fake).
        owner_id: the HubSpot owner the tasks are assigned to; unassigned when None.
        session: a ``requests`` session (the caller closes it); one per call otherwise.
        timeout: seconds to wait for each request.
        clock: now (timezone-aware), the tasks' due time.
    """

    name = "hubspot"

    def __init__(
        self,
        access_token: str,
        api_base: str = "https://api.hubapi.com",
        *,
        owner_id: str | None = None,
        session: requests.Session | None = None,
        timeout: float = 30.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if not access_token:
            raise ValueError("HubSpot needs an access token")
        self._token = access_token
        self.api_base = api_base.rstrip("/")
        self.owner_id = owner_id
        self._session = session
        self._timeout = timeout
        self._clock = clock

    def __repr__(self) -> str:
        return f"HubSpotTasks(api_base={self.api_base!r})"

    def create(self, follow_ups: Sequence[DetractorFollowUp]) -> list[CrmTaskResult]:
        """One task per follow-up with a contact; one result per follow-up, in order."""
        session = self._session or requests.Session()
        results: list[CrmTaskResult] = []
        limited = False
        try:
            for follow_up in follow_ups:
                if limited:
                    results.append(
                        CrmTaskResult(
                            follow_up.source_event,
                            TaskOutcome.RETRYABLE,
                            error="not tried: rate limited",
                        )
                    )
                elif follow_up.contact_id is None:
                    results.append(
                        CrmTaskResult(
                            follow_up.source_event,
                            TaskOutcome.FAILED,
                            error="no contact on record to attach the task to",
                        )
                    )
                else:
                    results.append(self._create_one(session, follow_up))
                    # Rate limited: more requests now would only be refused too.
                    limited = results[-1].error == RATE_LIMITED
        finally:
            if self._session is None:
                session.close()
        return results

    def _create_one(self, session: requests.Session, follow_up: DetractorFollowUp) -> CrmTaskResult:
        key = follow_up.source_event
        body: dict[str, Any] = {
            "properties": task_properties(follow_up, self._clock(), self.owner_id),
            "associations": [
                {
                    "to": {"id": follow_up.contact_id},
                    "types": [
                        {
                            "associationCategory": "HUBSPOT_DEFINED",
                            "associationTypeId": TASK_TO_CONTACT,
                        }
                    ],
                }
            ],
        }
        try:
            response = session.post(
                self.api_base + TASKS_PATH,
                json=body,
                headers={
                    "Authorization": f"Bearer {self._token}",
                    "Accept": "application/json",
                },
                timeout=self._timeout,
            )
        except requests.ConnectionError as exc:
            # The exception text can hold the URL; its type is enough.
            if _never_sent(exc):
                return CrmTaskResult(key, TaskOutcome.RETRYABLE, error=type(exc).__name__)
            return CrmTaskResult(key, TaskOutcome.UNKNOWN, error=type(exc).__name__)
        except requests.Timeout as exc:
            return CrmTaskResult(key, TaskOutcome.UNKNOWN, error=type(exc).__name__)
        except requests.RequestException as exc:
            return CrmTaskResult(key, TaskOutcome.FAILED, error=type(exc).__name__)
        with response:
            status = response.status_code
            if 200 <= status < 300:
                task_id = _task_id(response)
                if task_id is None:
                    return CrmTaskResult(
                        key, TaskOutcome.UNKNOWN, error=f"HTTP {status} without a task id"
                    )
                return CrmTaskResult(key, TaskOutcome.CREATED, task_id=task_id)
            if status == 429:
                return CrmTaskResult(key, TaskOutcome.RETRYABLE, error=RATE_LIMITED)
            if status >= 500:
                return CrmTaskResult(key, TaskOutcome.RETRYABLE, error=f"HTTP {status}")
            return CrmTaskResult(
                key, TaskOutcome.FAILED, error=f"HTTP {status}{self._detail(response)}"
            )

    def _detail(self, response: requests.Response) -> str:
        """HubSpot's own message, short, without the token or any address."""
        try:
            body = json.loads(response.content) if response.content else None
        except ValueError:
            return ""
        message = body.get("message") if isinstance(body, dict) else None
        if not isinstance(message, str) or not message:
            return ""
        message = mask_emails(" ".join(message.replace(self._token, "<secret>").split()))
        if len(message) > _MAX_DETAIL_CHARS:
            message = message[: _MAX_DETAIL_CHARS - 3] + "..."
        return f": {message}"


def _never_sent(exc: requests.ConnectionError) -> bool:
    """Whether the connection failed before the request could reach HubSpot."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(reason, NewConnectionError)


def _task_id(response: requests.Response) -> str | None:
    try:
        body = json.loads(response.content) if response.content else None
    except ValueError:
        return None
    task_id = body.get("id") if isinstance(body, dict) else None
    return str(task_id) if isinstance(task_id, (str, int)) and str(task_id) else None
