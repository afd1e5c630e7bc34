"""Suspending an approval run with a state message (Prefect 3.8.8).

Prefect's ``suspend_flow_run`` proposes a ``Suspended`` state without a message. After
a refused decision the run must say why where on-call and approvers look first (the
run list and the run page show the state's message), so this does what
``suspend_flow_run`` does for the current run, step for step, with a message. Pinned
to the Prefect version in pyproject.toml, whose internals it names.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeVar, cast

from prefect._flow_run_suspension import mark_flow_run_suspension_requested
from prefect.client.orchestration import get_client
from prefect.context import FlowRunContext
from prefect.exceptions import Abort, Pause
from prefect.input import RunInput, keyset_from_paused_state
from prefect.input.run_input import keyset_from_base_key, run_input_subclass_from_type
from prefect.states import Suspended
from prefect.utilities.engine import propose_state_sync

T = TypeVar("T", bound=RunInput)


def suspend_with_message(form: type[T], key: str, timeout: int, message: str) -> T:
    """Suspend the current flow run until it is resumed with ``form`` filled in.

    Returns the input when the run was already resumed for ``key`` (the run replays
    from the top after each resume); otherwise the run's process ends here (``Pause``),
    as with ``suspend_flow_run``.
    """
    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        raise RuntimeError("Flow runs can only be suspended from within a flow run.")
    flow_run_id = context.flow_run.id
    proposed: Any = Suspended(timeout_seconds=timeout, pause_key=key, message=message[:500])
    model: Any = run_input_subclass_from_type(cast(Any, form))
    keyset: Any = keyset_from_paused_state(proposed)
    proposed.state_details.run_input_keyset = keyset
    with get_client(sync_client=True) as client:
        try:
            state = propose_state_sync(client=client, state=proposed, flow_run_id=flow_run_id)
        except Abort as exc:
            raise RuntimeError(f"Flow run cannot be suspended: {exc}") from exc
        if state.is_running():
            # Resumed already for this key: the orchestrator refused the suspension.
            return cast(T, model.load(keyset))
        if not state.is_paused():
            raise RuntimeError(f"Flow run cannot be suspended; the API answered {state}")
        model.save(keyset)
    mark_flow_run_suspension_requested(flow_run_id, state)
    raise Pause(state=state)


def received_at(key: str) -> datetime | None:
    """When the current run's answer to the question ``key`` reached the server.

    The server stamps a run input when it stores it (the resume), so this is the time
    the approver submitted the form, whatever the worker's delay in running the flow
    again: a one-time code is checked at that time, not minutes later. None outside a
    run or when there is no answer.
    """
    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        return None
    response = keyset_from_base_key(f"suspended-{key}")["response"]
    with get_client(sync_client=True) as client:
        found = client.filter_flow_run_input(context.flow_run.id, response, 1, set())
    stamped = [i.created for i in found if i.key == response and i.created is not None]
    return stamped[0] if stamped else None
