"""Flow run heartbeats that stop the moment their run ends.

Prefect 3.8.8 beats for each flow run from a daemon thread
(``flow_engine._send_heartbeats``) that sleeps in 1 s steps and is joined when the run
ends: every flow run called in-process returns up to a second after it has already
reported its final state (the cycle run, about 0.5 s on average; in a deployment run
only the process's exit waits). :func:`install` puts in its place the same heartbeats,
the same events from the same thread at the same interval, whose thread waits on its
stop event instead of sleeping, so the join returns at once. Heartbeats stay on: a
crashed process still shows as missing heartbeats.

It replaces a private function of Prefect's engine, so only the version it was written
against (``PREFECT_VERSION``) gets it; any other version keeps Prefect's own.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import prefect
from prefect import flow_engine

#: The Prefect version whose ``_send_heartbeats`` this module reproduces.
PREFECT_VERSION = "3.8.8"


def install() -> bool:
    """Use :func:`send_heartbeats` for flow runs started from now on in this process.

    Returns:
        Whether it was installed (only on ``PREFECT_VERSION``).
    """
    if prefect.__version__ != PREFECT_VERSION:
        return False
    flow_engine._send_heartbeats = send_heartbeats
    return True


@contextmanager
def send_heartbeats(engine: Any, join_on_exit: bool = True) -> Iterator[None]:
    """Prefect 3.8.8's ``flow_engine._send_heartbeats``, but the thread waits on its
    stop event between beats, so it ends as soon as the run does."""
    heartbeat_seconds = engine.heartbeat_seconds
    if heartbeat_seconds is None:
        yield
        return
    heartbeat_seconds = max(heartbeat_seconds, flow_engine.MINIMUM_HEARTBEAT_INTERVAL)
    resource, related = engine._build_heartbeat_event_template()
    stop_event = threading.Event()

    def heartbeat_loop() -> None:
        while not stop_event.is_set():
            run = engine.flow_run
            if run and run.state and run.state.is_final():
                return
            try:
                engine._emit_flow_run_heartbeat(resource, related)
            except Exception:
                engine.logger.debug("Failed to emit heartbeat", exc_info=True)
            stop_event.wait(heartbeat_seconds)

    # As Prefect does: the thread sees the caller's settings (its API URL).
    thread = threading.Thread(
        target=contextvars.copy_context().run, args=(heartbeat_loop,), daemon=True
    )
    thread.start()
    try:
        yield
    finally:
        stop_event.set()
        if join_on_exit:
            thread.join(timeout=2)
