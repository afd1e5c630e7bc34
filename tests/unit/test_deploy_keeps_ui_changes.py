"""How `referrals up` compares a deployment on the server with prefect.yaml, and what
it writes into the file it deploys (the server test proves it end to end)."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace
from typing import Any

from prefect.client.schemas.objects import DeploymentSchedule
from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule

from integrations.prefect_stack import Drift, compare_deployment, keep_or_reset

SPEC: dict[str, Any] = {
    "name": "apply-clawbacks",
    "schedules": [{"cron": "45 * * * *", "timezone": "Europe/Paris", "active": True}],
}


def _server(*schedules: DeploymentSchedule, paused: bool = False, **parameters: Any) -> Any:
    return SimpleNamespace(schedules=list(schedules), paused=paused, parameters=parameters)


def _cron(cron: str, timezone: str | None = "Europe/Paris", active: bool = True) -> Any:
    return DeploymentSchedule(schedule=CronSchedule(cron=cron, timezone=timezone), active=active)


def test_a_deployment_as_prefect_yaml_has_it_differs_in_nothing() -> None:
    assert compare_deployment(SPEC, _server(_cron("45 * * * *"))) == []


def test_a_schedule_without_a_timezone_is_the_same_as_one_in_utc() -> None:
    spec = {"name": "x", "schedules": [{"cron": "0 1 * * *"}]}

    assert compare_deployment(spec, _server(_cron("0 1 * * *", timezone="UTC"))) == []


def test_a_changed_cron_an_inactive_schedule_a_pause_and_a_parameter_are_each_reported() -> None:
    server = _server(_cron("50 * * * *", active=False), paused=True, periods=12)

    found = {
        item: (on_server, in_yaml) for item, on_server, in_yaml in compare_deployment(SPEC, server)
    }

    assert found == {
        "schedules": (
            "[cron '50 * * * *' Europe/Paris, inactive]",
            "[cron '45 * * * *' Europe/Paris, active]",
        ),
        "paused": ("True", "False"),
        "parameters": ("{'periods': 12}", "{}"),
    }


def test_kept_values_are_written_into_the_deployed_entry_paused_flag_always() -> None:
    interval = DeploymentSchedule(
        schedule=IntervalSchedule(interval=timedelta(minutes=30), timezone="UTC"), active=False
    )
    spec = dict(SPEC)

    keep_or_reset(spec, _server(interval, paused=True, periods=3), reset=False)

    (schedule,) = spec["schedules"]
    assert (schedule["interval"], schedule["active"]) == (1800.0, False)
    assert (spec["paused"], spec["parameters"]) == (True, {"periods": 3})


def test_a_reset_writes_prefect_yaml_values_and_unpauses_when_it_says_nothing() -> None:
    spec = dict(SPEC)

    keep_or_reset(spec, _server(paused=True, periods=3), reset=True)

    assert spec["schedules"] == SPEC["schedules"]
    assert (spec["paused"], spec["parameters"]) == (False, {})


def test_a_difference_reads_as_a_sentence_saying_what_happened_to_it() -> None:
    kept = Drift("referral-cycle", "paused", "True", "False", kept=True)
    reset = Drift("referral-cycle", "paused", "True", "False", kept=False)

    assert str(kept) == (
        "referral-cycle: paused on the server True, in prefect.yaml False: kept "
        "(referrals up --reset-schedules puts prefect.yaml's back)"
    )
    assert str(reset).endswith(": put back to prefect.yaml's")
