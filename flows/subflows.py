"""Subflows run inside their parent's process: under the parent's heartbeat, on one client.

Two costs Prefect 3.8.8 adds to every subflow run buy nothing for the cycle's stages,
which run in the parent's process, on the parent's thread:

* Every flow run gets a heartbeat thread of its own (``flow_engine._send_heartbeats``),
  joined when the run ends; the thread sleeps in 1 s steps, so every flow run ends up
  to a second late. The parent's own heartbeat thread, started before its stages and
  not touched here, keeps beating for that process, so a crashed process still shows
  as the parent's missing heartbeats, and Prefect's engine still marks a stage run
  Crashed when the process is interrupted.
* Before creating a subflow run the engine records it in the parent as a tracking task
  run, through an async client it builds, connects (a new connection, a CSRF token)
  and closes again for that one call (``FlowRunEngine.create_flow_run``,
  ``Task.create_run``): about 0.1 s per stage run on a local server. Here every stage
  run's tracking task run goes through one async client, opened once for the block.

The stage runs keep everything on-call sees in the UI: their runs under the parent,
with the same tracking task runs, task runs, states, logs and artifacts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from prefect.client.orchestration import PrefectClient, get_client
from prefect.context import AsyncClientContext, SettingsContext, get_settings_context
from prefect.utilities.asyncutils import run_coro_as_sync

logger = logging.getLogger(__name__)


@contextmanager
def stage_subflows() -> Iterator[None]:
    """Subflow runs started inside this block share the parent's heartbeat and one
    async client for their tracking task runs.

    Only the context of this block changes: flow runs elsewhere (deployments run by the
    worker) are not affected.
    """
    with ExitStack() as stack:
        stack.enter_context(under_parent_heartbeat())
        stack.enter_context(one_async_client())
        yield


@contextmanager
def under_parent_heartbeat() -> Iterator[None]:
    """Subflow runs started inside this block send no heartbeats of their own.

    Only the setting the engine reads when a flow run starts is changed, and only in
    this block's context: the parent run's heartbeat thread, already running, goes on.
    The settings are copied with the one field changed rather than with
    ``temporary_settings``, which validates them all again from the environment and
    the profile files (about 75 ms a call here).
    """
    current = get_settings_context()
    settings = current.settings
    quiet = settings.model_copy(
        update={"flows": settings.flows.model_copy(update={"heartbeat_frequency": None})}
    )
    with SettingsContext(profile=current.profile, settings=quiet):
        yield


@contextmanager
def one_async_client() -> Iterator[None]:
    """Prefect calls made on its run-sync event loop inside this block share one
    async client (the engine's tracking task runs of subflows, mainly).

    Prefect's ``get_client()`` returns the client of the current ``AsyncClientContext``
    when that client lives on the running loop; the engine runs its async calls from
    sync code on one loop of its own (``run_coro_as_sync``), so the client is opened
    there. Called from inside an event loop (where ``run_coro_as_sync`` would use a
    throwaway thread and loop), nothing is shared and Prefect makes its clients as
    usual.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        yield
        return
    client = get_client()
    run_coro_as_sync(_enter(client))
    try:
        with AsyncClientContext.model_construct(client=client):
            yield
    finally:
        try:
            run_coro_as_sync(client.__aexit__(None, None, None))
        except Exception:  # closing a connection must not fail the run
            logger.debug("Closing the stages' Prefect client failed", exc_info=True)


async def _enter(client: PrefectClient) -> None:
    await client.__aenter__()
