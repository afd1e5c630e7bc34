"""Approval runs on Prefect: one paused ``payout-approval`` deployment run per reward."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, cast
from uuid import UUID

from domain.errors import PermanentIntegrationError, RetryableIntegrationError

if TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun


class PrefectApprovalRuns:
    """Starts and resumes payout-approval flow runs through the Prefect API.

    Args:
        deployment: ``flow-name/deployment-name`` of the approval deployment.
        ui_url: the Prefect UI base, e.g. ``http://127.0.0.1:4200``; defaults to the
            one Prefect derives from ``PREFECT_API_URL``.
    """

    def __init__(self, deployment: str, ui_url: str | None = None) -> None:
        self.deployment = deployment
        self._ui_url = ui_url

    def start(
        self, requests: Mapping[str, str], names: Mapping[str, str] | None = None
    ) -> dict[str, str]:
        from prefect.deployments import run_deployment
        from prefect.exceptions import ObjectNotFound

        started: dict[str, str] = {}
        for request_id, reward_id in requests.items():
            try:
                run = run_deployment(
                    name=self.deployment,
                    parameters={"reward_id": reward_id},
                    timeout=0,
                    # A suspended run must be top-level: Prefect refuses to suspend
                    # subflows, and run_deployment links to the caller by default.
                    as_subflow=False,
                    idempotency_key=f"approval:{request_id}",
                    flow_run_name=(names or {}).get(request_id)
                    or f"approve-reward-{reward_id[:8]}",
                    tags=["approval", "payout"],
                )
            except ObjectNotFound:
                raise PermanentIntegrationError(
                    f"deployment {self.deployment!r} is not registered: run "
                    "`make up` (or `prefect deploy --all`) first"
                ) from None
            started[request_id] = str(cast("FlowRun", run).id)
        return started

    def resume(self, run_id: str, decision: Mapping[str, object]) -> None:
        import httpx
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.responses import SetStateStatus

        try:
            with get_client(sync_client=True) as client:
                result = client.resume_flow_run(UUID(run_id), run_input=dict(decision))
        except httpx.HTTPStatusError as exc:
            raise PermanentIntegrationError(
                f"run {run_id}: the Prefect API refused the resume ({exc.response.status_code})"
            ) from None
        except httpx.TransportError as exc:
            raise RetryableIntegrationError(f"Prefect API unreachable: {exc}") from None
        if result.status != SetStateStatus.ACCEPT:
            reason = getattr(result.details, "reason", None) or result.status.value
            raise PermanentIntegrationError(f"run {run_id} was not resumed: {reason}")

    def cancel_waiting(self, run_id: str, reason: str) -> bool:
        from prefect.client.orchestration import get_client
        from prefect.states import Cancelled

        with get_client(sync_client=True) as client:
            run = client.read_flow_run(UUID(run_id))
            if run.state is None or not run.state.is_paused():
                return False
            # Not forced: if the run was resumed a moment ago, the server refuses the
            # transition from its new state and the approver's decision stands. Past
            # its own pause timeout the server fails the run instead: ended all the same.
            client.set_flow_run_state(UUID(run_id), Cancelled(message=reason))
            after = client.read_flow_run(UUID(run_id)).state
        return after is not None and after.is_final() and not after.is_completed()

    def resumable(self, run_ids: list[str]) -> set[str]:
        """The runs among ``run_ids`` that are suspended, so a Resume would reach them
        (a run just started is still scheduled or starting, with no Resume button)."""
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

        if not run_ids:
            return set()
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(r) for r in run_ids])),
                limit=len(run_ids),
            )
        return {str(r.id) for r in runs if r.state is not None and r.state.is_paused()}

    def ui_url(self, run_id: str) -> str:
        return f"{self.ui_base()}/runs/flow-run/{run_id}"

    def ui_base(self) -> str:
        if self._ui_url:
            return self._ui_url.rstrip("/")
        from prefect.settings import get_current_settings

        settings = get_current_settings()
        return str(settings.ui_url or "http://127.0.0.1:4200").rstrip("/")
