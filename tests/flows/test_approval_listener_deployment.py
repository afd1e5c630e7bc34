"""The approval listener knows the approval deployment by name and follows it when the
deployment is registered again under a new id, without a restart."""

from __future__ import annotations

from dataclasses import dataclass, field

from flows.approval_listener import ApprovalDeployment


@dataclass
class Registry:
    """The server's deployments by name, as `deployment_id` reads them."""

    ids: dict[str, str] = field(default_factory=dict)
    reads: int = 0

    def deployment_id(self, name: str) -> str:
        self.reads += 1
        if name not in self.ids:
            raise LookupError(name)  # what the client raises is ObjectNotFound
        return self.ids[name]


def _deployment(registry: Registry) -> ApprovalDeployment:
    return ApprovalDeployment(
        registry,  # type: ignore[arg-type]  # the one method the listener reads
        "payout-approval/payout-approval",
    )


def test_a_run_of_the_approval_deployment_is_recognised_from_one_read_of_its_id() -> None:
    registry = Registry({"payout-approval/payout-approval": "d-1"})
    deployment = _deployment(registry)

    assert deployment.resolve() == "d-1"
    assert [deployment("d-1") for _ in range(3)] == [True, True, True]
    assert registry.reads == 1


def test_a_deployment_registered_again_is_followed_at_its_first_resume() -> None:
    registry = Registry({"payout-approval/payout-approval": "d-1"})
    deployment = _deployment(registry)
    deployment.resolve()

    registry.ids["payout-approval/payout-approval"] = "d-2"

    assert deployment("d-2")
    assert not deployment("d-1")  # the old id names a deleted deployment now
    assert deployment.known_id == "d-2"


def test_runs_of_other_deployments_and_of_no_deployment_are_not_the_listeners() -> None:
    registry = Registry({"payout-approval/payout-approval": "d-1"})
    deployment = _deployment(registry)

    assert not deployment("d-9")
    assert not deployment(None)


def test_a_listener_started_before_the_deployment_exists_finds_it_later() -> None:
    registry = Registry()
    deployment = _deployment(registry)

    assert deployment.resolve() is None
    assert not deployment("d-1")

    registry.ids["payout-approval/payout-approval"] = "d-1"
    assert deployment("d-1")
