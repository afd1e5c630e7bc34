"""Who applies an approver's answer, and what came of it, kept on the approval run (Prefect 3.8.8).

Two parties can apply the answer a resume brings: the approval listener (``referrals
approvals listen``, started by ``referrals up``), which follows the runs' resumes as
Prefect events and applies the answer at once, and the resumed run itself, which a worker
starts seconds later. Exactly one of them must judge each answer: a second judgement
would see the one-time code already spent and refuse an answer that counted, or take a
stage-1 approval for a stage-2 one.

The claim is a flow run input of the run, ``answer-claim-<question>``: the server keeps one
input per run and key (a unique constraint; a second create is answered 409), so whoever
creates it first judges the answer. The listener then stores what came of it as
``answer-outcome-<question>``, which the run reads instead of judging again.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

#: Who holds a claim: the listener, or the run itself.
LISTENER = "listener"
RUN = "run"
#: The Prefect event of a suspended run resumed (a Scheduled state named Resuming).
RESUMING_EVENT = "prefect.flow-run.Resuming"


def claim_key(question: str) -> str:
    return f"answer-claim-{question}"


def outcome_key(question: str) -> str:
    return f"answer-outcome-{question}"


@dataclass(frozen=True)
class Claim:
    """Who applies the answer to one question, and whether this call made the claim."""

    holder: str
    made_now: bool


@dataclass(frozen=True)
class ResumedAnswer:
    """The answer a resume brought to a suspended approval run."""

    run_id: str
    run_name: str
    reward_id: str
    question: str
    form: dict[str, Any]
    submitted_at: datetime


class PrefectAnswers:
    """Claims and outcomes of answers, as flow run inputs of the approval runs."""

    def claim(self, run_id: str, question: str, holder: str) -> Claim:
        """Claim the answer to ``question`` of ``run_id`` for ``holder``, unless taken.

        Returns:
            The holder (``holder`` when this call made the claim or made it earlier).
        """
        import httpx
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            try:
                client.create_flow_run_input(
                    UUID(run_id), claim_key(question), json.dumps({"by": holder})
                )
                return Claim(holder, made_now=True)
            except httpx.HTTPStatusError as exc:
                if exc.response.status_code != 409:
                    raise
            found = client.read_flow_run_input(UUID(run_id), claim_key(question))
        return Claim(str(json.loads(found).get("by")), made_now=False)

    def record_outcome(self, run_id: str, question: str, outcome: dict[str, Any]) -> None:
        """Keep what came of the answer, for the run to read rather than judge again."""
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            client.create_flow_run_input(
                UUID(run_id), outcome_key(question), json.dumps(outcome, default=str)
            )

    def outcome(self, run_id: str, question: str) -> dict[str, Any] | None:
        """What came of the answer, once its claimant recorded it."""
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            found = client.filter_flow_run_input(UUID(run_id), outcome_key(question), 1, set())
        value = next((i.value for i in found if i.key == outcome_key(question)), None)
        return None if value is None else dict(json.loads(value))

    def wait_for_outcome(
        self,
        run_id: str,
        question: str,
        timeout: float,
        every: float = 0.2,
        sleep: Callable[[float], None] = time.sleep,
    ) -> dict[str, Any] | None:
        """The outcome, polled until it is there or ``timeout`` seconds passed."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.outcome(run_id, question)
            if found is not None or time.monotonic() >= deadline:
                return found
            sleep(every)

    def resumed_answer(
        self,
        run_id: str,
        is_approval_deployment: Callable[[str | None], bool],
        attempts: int = 10,
        every: float = 0.05,
    ) -> ResumedAnswer | None:
        """The answer the last resume brought to ``run_id``, a run of the deployment
        ``is_approval_deployment`` accepts the id of.

        None when the run is another deployment's or its last suspension asked nothing.
        The server stores the answer in the resume's transaction; the event announcing
        the resume can arrive first, hence a few short retries.
        """
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            run = client.read_flow_run(UUID(run_id))
            deployment_id = None if run.deployment_id is None else str(run.deployment_id)
            if "reward_id" not in run.parameters or not is_approval_deployment(deployment_id):
                return None
            paused = [s for s in client.read_flow_run_states(UUID(run_id)) if s.is_paused()]
            if not paused:
                return None
            last = max(paused, key=lambda s: s.timestamp)
            keyset = last.state_details.run_input_keyset
            question = last.state_details.pause_key
            if not keyset or not question:
                return None
            response = keyset["response"]
            for attempt in range(attempts):
                found = client.filter_flow_run_input(UUID(run_id), response, 1, set())
                stored = [i for i in found if i.key == response and i.created is not None]
                if stored:
                    return ResumedAnswer(
                        run_id=run_id,
                        run_name=run.name,
                        reward_id=str(run.parameters["reward_id"]),
                        question=str(question),
                        form=dict(json.loads(stored[0].value)),
                        submitted_at=stored[0].created,  # type: ignore[arg-type]
                    )
                if attempt + 1 < attempts:
                    time.sleep(every)
        return None

    def deployment_id(self, name: str) -> str:
        """The id of the deployment ``flow-name/deployment-name``."""
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            return str(client.read_deployment_by_name(name).id)


def resumed_run_id(event: Any) -> str | None:
    """The flow run a Resuming event is about (``prefect.flow-run.<id>``), else None."""
    if getattr(event, "event", None) != RESUMING_EVENT:
        return None
    resource_id = str(event.resource.id)
    prefix = "prefect.flow-run."
    return resource_id[len(prefix) :] if resource_id.startswith(prefix) else None


async def resumed_runs() -> AsyncIterator[str]:
    """The ids of flow runs resumed from now on (and in the last minute), as they come.

    Prefect's events websocket, filtered to Resuming events; it reconnects by itself
    and replays the last minute after a reconnection, so a run may come twice.
    """
    from prefect.events.clients import get_events_subscriber
    from prefect.events.filters import EventFilter, EventNameFilter

    event_filter = EventFilter(event=EventNameFilter(name=[RESUMING_EVENT]))
    async with get_events_subscriber(filter=event_filter, reconnection_attempts=1000) as events:
        async for event in events:
            run_id = resumed_run_id(event)
            if run_id is not None:
                yield run_id


def run_log(run_id: str, run_name: str) -> Any:
    """A logger whose lines go to the run's log in the Prefect UI."""
    from prefect.logging.loggers import flow_run_logger

    return flow_run_logger(flow_run_id=UUID(run_id), flow_run_name=run_name)
