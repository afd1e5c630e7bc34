"""A recording stand-in for Prefect approval runs, for tests that need no server."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from domain.errors import PermanentIntegrationError


@dataclass
class RecordingApprovalRuns:
    """Keeps the runs it started and the decisions it was resumed with.

    ``on_resume`` (optional) is called with (reward id, decision) when a run is
    resumed, so a test can play the approval flow in-process.
    """

    started: dict[str, str] = field(default_factory=dict)
    rewards: dict[str, str] = field(default_factory=dict)
    resumed: list[tuple[str, dict[str, object]]] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    names: dict[str, str] = field(default_factory=dict)
    on_resume: Callable[[str, dict[str, object]], None] | None = None

    def start(
        self, requests: Mapping[str, str], names: Mapping[str, str] | None = None
    ) -> dict[str, str]:
        out = {}
        for request_id, reward_id in requests.items():
            run_id = self.started.setdefault(request_id, f"run-{request_id}")
            self.rewards[run_id] = reward_id
            self.names.setdefault(run_id, (names or {}).get(request_id, run_id))
            out[request_id] = run_id
        return out

    def resume(self, run_id: str, decision: Mapping[str, object]) -> None:
        if run_id not in self.rewards:
            raise PermanentIntegrationError(f"run {run_id} is not waiting")
        self.resumed.append((run_id, dict(decision)))
        if self.on_resume is not None:
            self.on_resume(self.rewards[run_id], dict(decision))

    def cancel_waiting(self, run_id: str, reason: str) -> bool:
        waiting = run_id in self.rewards and run_id not in {r for r, _ in self.resumed}
        if waiting and run_id not in self.cancelled:
            self.cancelled.append(run_id)
            return True
        return False

    def resumable(self, run_ids: list[str]) -> set[str]:
        resumed = {r for r, _ in self.resumed}
        return {r for r in run_ids if r in self.rewards and r not in resumed | set(self.cancelled)}

    def ui_url(self, run_id: str) -> str:
        return f"http://ui.invalid/runs/flow-run/{run_id}"
