"""Shard runs on Prefect (issue 17): one run of the ``run-shard`` deployment per shard,
started without waiting (``run_deployment(..., timeout=0)``), on whichever worker of
the pool picks it up."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, cast

from domain.errors import PermanentIntegrationError
from domain.shards import Shard

if TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun


class PrefectShardRuns:
    """Starts run-shard deployment runs through the Prefect API.

    Args:
        deployment: ``flow-name/deployment-name`` of the shard deployment.
    """

    def __init__(self, deployment: str) -> None:
        self.deployment = deployment

    def submit(self, stage: str, key: str, shard: Shard, now: datetime, attempt: int) -> str:
        from prefect.deployments import run_deployment
        from prefect.exceptions import ObjectNotFound

        try:
            run = run_deployment(
                name=self.deployment,
                parameters={
                    "stage": stage,
                    "key": key,
                    "shard": shard.index,
                    "of_shards": shard.of,
                    "now": now.isoformat(),
                },
                timeout=0,
                # Shown under the stage's run in the UI; nothing waits on it there.
                as_subflow=True,
                # One run per submission of a shard, even if this call is retried.
                idempotency_key=f"shard:{key}:{shard.index}:{attempt}",
                flow_run_name=f"{stage}-shard-{shard.index}-of-{shard.of}-try-{attempt}",
                tags=["shard", stage],
            )
        except ObjectNotFound:
            raise PermanentIntegrationError(
                f"deployment {self.deployment!r} is not registered: run "
                "`make up` (or `prefect deploy --all`) first"
            ) from None
        return str(cast("FlowRun", run).id)
