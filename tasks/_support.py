"""What every task shares: a logger and a progress artifact that work inside and
outside a Prefect run."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any
from uuid import UUID

from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.context import FlowRunContext, TaskRunContext
from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger


def run_logger() -> logging.Logger | logging.LoggerAdapter[Any]:
    """The run's logger in a flow or task run; a module logger when a test calls
    ``task.fn()`` directly. Log ids and counts only: never emails, names or keys."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("referrals")


class Progress:
    """A progress artifact (0-100 %) for a long batch task, such as a send or a payout run.

    Created with the number of items the task expects to handle; :meth:`advance` counts
    items done, :meth:`finish` shows 100 % once the task is through. The artifact is
    updated only when progress moved by ``step`` percentage points or ``every`` seconds
    passed since the last update, so a run of any size makes a bounded number of API
    calls. Outside a flow or task run (a test calling ``task.fn()``), or with nothing to
    do, it is a no-op. The description carries counts only. A failure of the Prefect
    API is logged and turns progress off: it never fails the work it reports on.

    Args:
        key: the artifact key (lowercase letters, digits and dashes), e.g.
            ``ask-emails-progress``.
        total: how many items the task expects; more or fewer may turn up.
        what: what the items are, for the description (``"asks"``).
        step: percentage points between updates.
        every: seconds after which any progress is shown anyway.
        clock: a monotonic clock (tests pass their own).
    """

    def __init__(
        self,
        key: str,
        total: int,
        what: str,
        *,
        step: float = 5.0,
        every: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.key = key
        self.total = max(total, 0)
        self.what = what
        self.step = step
        self.every = every
        self.clock = clock
        self.done = 0
        self.artifact_id: UUID | None = None
        self._shown = 0.0
        self._shown_at = clock()
        in_a_run = TaskRunContext.get() is not None or FlowRunContext.get() is not None
        if in_a_run and self.total > 0:
            self._call(
                create_progress_artifact,
                progress=0.0,
                key=key,
                description=self._description(),
            )

    @property
    def percent(self) -> float:
        """Share of ``total`` done, at most 100."""
        return min(100.0, 100.0 * self.done / self.total) if self.total else 100.0

    def advance(self, items: int) -> None:
        """Count ``items`` more done; update the artifact if it is time to."""
        self.done += items
        percent = self.percent
        moved = percent - self._shown
        if moved >= self.step or (moved > 0 and self.clock() - self._shown_at >= self.every):
            self._update(percent)

    def finish(self) -> None:
        """Show 100 %: the task went through everything it had to do."""
        if self._shown < 100.0:
            self._update(100.0)

    def _update(self, percent: float) -> None:
        if self.artifact_id is None:
            return
        self._call(
            update_progress_artifact,
            artifact_id=self.artifact_id,
            progress=percent,
            description=self._description(),
        )
        self._shown, self._shown_at = percent, self.clock()

    def _description(self) -> str:
        return f"{self.done:,} of {self.total:,} {self.what} handled"

    def _call(self, function: Callable[..., Any], **kwargs: Any) -> None:
        try:
            # Tasks here are synchronous: ask for the blocking call, never a coroutine.
            result = function(_sync=True, **kwargs)
            self.artifact_id = result if isinstance(result, UUID) else None
        except Exception as exc:
            # Progress is for people watching: it must never fail a send or a payout.
            run_logger().warning(
                "progress artifact %s turned off: %s", self.key, type(exc).__name__
            )
            self.artifact_id = None
