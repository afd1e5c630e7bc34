"""Subflows run inside their parent's process, under the parent's heartbeat.

Prefect 3.8.8 gives every flow run a heartbeat thread of its own
(``flow_engine._send_heartbeats``) and joins it when the run ends; the thread sleeps in
1 s steps, so every flow run ends up to a second late. For a subflow this buys nothing:
it runs in the parent's process, on the parent's thread, while the parent's own heartbeat
thread keeps beating for that process (it was started before the subflow and is not
touched here), so a crashed process still shows as the parent's missing heartbeats, and
Prefect's engine still marks the subflow run Crashed when the process is interrupted.
The stage runs keep everything else on-call sees in the UI: their runs, task runs,
states, logs and artifacts.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings


@contextmanager
def under_parent_heartbeat() -> Iterator[None]:
    """Subflow runs started inside this block send no heartbeats of their own.

    Only the setting the engine reads when a flow run starts is changed, and only in
    this block's context: the parent run's heartbeat thread, already running, goes on,
    and flow runs elsewhere (deployments run by the worker) are not affected.
    """
    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield
