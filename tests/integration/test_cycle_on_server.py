"""The whole cycle against a real local Prefect server, worker and deployments.

A large reward's approval run is suspended by the server (its process exits); resuming
it through the API with an approval makes the worker run it again, and the reward is
paid exactly once at the (fake) Stripe over HTTP.
"""

from __future__ import annotations

import copy
import csv
import shlex
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolUpdate
from prefect.client.schemas.objects import StateType
from prefect.logging.handlers import APILogWorker
from prefect.settings import PREFECT_HOME, temporary_settings
from sqlalchemy import func, select

from config.settings import load_settings
from domain.approvers import make_approver
from domain.errors import PermanentIntegrationError
from domain.money import Money
from flows.bootstrap import App, build_app, use_app
from flows.cycle import referral_cycle
from integrations.ledger.tables import LedgerEntryRow, PayoutRow
from integrations.payments.stripe_stand_in import FakeStripe
from integrations.prefect_stack import WORK_POOL, LocalStack, engine_command
from tests.prefect_database import running_stack

pytestmark = [pytest.mark.server, pytest.mark.slow]
API_KEY = "sk_test_server"
FIRST_CYCLE = datetime.now(UTC).replace(microsecond=0) - timedelta(days=30)


def _write(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture(scope="module")
def stripe() -> Iterator[FakeStripe]:
    with FakeStripe(api_key=API_KEY) as fake:
        yield fake


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, stripe: FakeStripe
) -> Iterator[tuple[LocalStack, Path]]:
    root = tmp_path_factory.mktemp("server")
    inbox = root / "inbox"
    inbox.mkdir()
    # The worker's flow runs must see the same ledger and providers as the test.
    env = {
        "REFERRALS_DATABASE_URL": f"sqlite:///{root / 'ledger.db'}",
        "REFERRALS_INBOX_DIR": str(inbox),
        "REFERRALS_STRIPE_API_KEY": API_KEY,
        "REFERRALS_STRIPE_API_BASE": stripe.url,
        "REFERRALS_STRIPE_MAX_NETWORK_RETRIES": "1",
    }
    with running_stack(root, env) as stack:
        yield stack, root


@pytest.fixture(scope="module")
def app(stack: tuple[LocalStack, Path]) -> Iterator[App]:
    local, root = stack
    settings = load_settings(
        database_url=f"sqlite:///{root / 'ledger.db'}",
        inbox_dir=root / "inbox",
        stripe_api_key=API_KEY,
        stripe_api_base=local.extra_env["REFERRALS_STRIPE_API_BASE"],
        stripe_max_network_retries=1,
    )
    with (
        temporary_settings({**local.client_settings(), PREFECT_HOME: str(root / "prefect")}),
        use_app(build_app(settings)) as built,
    ):
        yield built
        # Send the run logs still buffered while the server is up, not after.
        APILogWorker.drain_all(timeout=5)
        built.ledger.engine.dispose()


def _seed_company(inbox: Path, stripe: FakeStripe) -> None:
    """A partner and a customer, both promoters just before the first cycle."""
    _write(
        inbox / "accounts.csv",
        [
            {
                "account_id": "PA",
                "name": "Partner Firm",
                "domain": "partner.example",
                "customer_since": "2022-01-01",
            },
            {
                "account_id": "CA",
                "name": "Customer Co",
                "domain": "customer.example",
                "customer_since": "2022-01-01",
            },
        ],
    )
    _write(
        inbox / "contacts.csv",
        [
            {
                "contact_id": "P1",
                "account_id": "PA",
                "name": "Pat Partner",
                "email": "pat@partner.example",
                "referrer_type": "partner",
                "opted_out": "false",
                "stripe_customer_id": "",
                "stripe_account_id": stripe.add_account(),
            },
            {
                "contact_id": "C1",
                "account_id": "CA",
                "name": "Cleo Customer",
                "email": "cleo@customer.example",
                "referrer_type": "customer",
                "opted_out": "false",
                "stripe_customer_id": stripe.add_customer(currency="eur"),
                "stripe_account_id": "",
            },
        ],
    )
    responded = (FIRST_CYCLE - timedelta(days=1)).isoformat()
    _write(
        inbox / "nps.csv",
        [
            {
                "response_id": "1",
                "contact_id": "P1",
                "account_id": "PA",
                "score": 10,
                "responded_at": responded,
            },
            {
                "response_id": "2",
                "contact_id": "C1",
                "account_id": "CA",
                "score": 9,
                "responded_at": responded,
            },
        ],
    )


def _seed_referrals(inbox: Path, codes: dict[str, str]) -> None:
    """Each referrer's friend buys: 20,000 EUR through the partner, 8,000 through Cleo."""
    won = (FIRST_CYCLE + timedelta(days=5)).isoformat()
    _write(
        inbox / "events-referrals.csv",
        [
            {
                "event_id": "deal-partner",
                "type": "deal_won",
                "occurred_at": won,
                "account_id": "RA1",
                "contact_id": "RC1",
                "amount": "20000.00",
                "currency": "EUR",
                "referral_code": codes["P1"],
            },
            {
                "event_id": "deal-customer",
                "type": "deal_won",
                "occurred_at": won,
                "account_id": "RA2",
                "contact_id": "RC2",
                "amount": "8000.00",
                "currency": "EUR",
                "referral_code": codes["C1"],
            },
        ],
    )


def _wait_for(what: str, check: Any, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}")


def _state(run_id: str) -> StateType | None:
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(run_id).state  # type: ignore[arg-type]
    return state.type if state else None


def _state_message(run_id: str) -> str:
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(run_id).state  # type: ignore[arg-type]
    return (state.message or "") if state and state.type == StateType.PAUSED else ""


def local_api(stack: tuple[LocalStack, Path]) -> str:
    return stack[0].api_url


def _register(app: App, approver_id: str, name: str, limit: str) -> None:
    approver = make_approver(
        approver_id=approver_id,
        display_name=name,
        email=f"{approver_id}@approvers.example",
        contact_id=None,
        limit=Money.parse(limit, "EUR"),
    )
    app.approvers.add(approver, "test", datetime.now(UTC))
    app.codes.enrol(approver_id, "test", datetime.now(UTC))


def _code(app: App, approver_id: str) -> str:
    totp = app.codes._totp(approver_id)
    assert totp is not None
    return totp.now()


def _form(approver_id: str, code: str, **extra: object) -> dict[str, object]:
    form: dict[str, object] = {
        "approver_id": approver_id,
        "code": code,
        "approve": True,
        "reject": False,
        "reason": "deal verified",
    }
    return form | extra


def _resume_and_see_refused(
    app: App, run_id: str, reward_id: str, form: dict[str, object], why: str
) -> None:
    """Resume through the authenticated API; the run refuses, suspends again saying why."""
    before = len(app.approvers.refusals(reward_id))
    app.approvals.resume(run_id, form)
    _wait_for(
        f"the run to refuse ({why})",
        lambda: len(app.approvers.refusals(reward_id)) > before and why in _state_message(run_id),
        timeout=180,
    )
    assert why in app.approvers.refusals(reward_id)[-1]["reason"]


def test_a_large_reward_waits_in_a_suspended_run_and_is_paid_once_after_approval(
    app: App, stack: tuple[LocalStack, Path], stripe: FakeStripe
) -> None:
    inbox = stack[1] / "inbox"
    _seed_company(inbox, stripe)
    referral_cycle(as_of=FIRST_CYCLE)
    _seed_referrals(inbox, app.ledger.asks.codes_for(["P1", "C1"]))

    referral_cycle(as_of=datetime.now(UTC))

    # The customer's 200 EUR went out at once, as a credit on their Stripe balance.
    assert [t["amount"] for t in stripe.balance_transactions] == [-20000]
    (waiting,) = app.ledger.approvals.waiting()
    assert waiting.amount.format() == "3,000.00 EUR"
    run_id = waiting.flow_run_id
    assert run_id is not None
    _wait_for("the approval run to suspend", lambda: _state(run_id) == StateType.PAUSED)
    assert stripe.transfers == [], "nothing is paid before a person decides"

    # Nobody without the server's credentials reaches the API at all.
    anonymous = httpx.post(f"{local_api(stack)}/flow_runs/{run_id}/resume", json={}, timeout=10)
    assert anonymous.status_code == 401
    assert httpx.get(f"{local_api(stack)}/flow_runs/{run_id}", timeout=10).status_code == 401

    # With them, a resume still releases nothing unless a registered approver proves it.
    _register(app, "maya", "Maya Chen", "20000.00")
    _register(app, "lou", "Lou Low", "1000.00")
    right = _code(app, "maya")
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"

    def replayed() -> dict[str, object]:
        # A good code of lou's, spent elsewhere just now, then replayed through the API.
        spent = _code(app, "lou")
        assert app.codes.verify("lou", spent, datetime.now(UTC)).value == "ok"
        return _form("lou", spent, adjusted_amount="900.00")

    attempts: list[tuple[Callable[[], dict[str, object]], str]] = [
        (lambda: _form("maya.chen", right), "no registered approver"),
        (lambda: _form("Maya Chen", right), "no registered approver"),
        (lambda: _form("maya", wrong), "one-time code is wrong"),
        (replayed, "already used"),
        (lambda: _form("lou", "123456"), "above the limit of approver lou"),
    ]
    for form, why in attempts:
        _resume_and_see_refused(app, run_id, waiting.reward_id, form(), why)
    assert stripe.transfers == [], "no refused decision pays"
    assert app.ledger.approvals.view(waiting.reward_id).decisions == ()

    app.approvals.resume(run_id, _form("maya", _code(app, "maya"), reason="deal verified"))
    _wait_for("the approval run to finish", lambda: _state(run_id) == StateType.COMPLETED)
    view = app.ledger.approvals.view(waiting.reward_id)
    assert view.reward.status.value == "paid"
    assert [(d.approver_id, d.approver, d.reason) for d in view.decisions] == [
        ("maya", "Maya Chen", "deal verified")
    ]
    transfers = [t for t in stripe.transfers if t["metadata"]["reward_id"] == waiting.reward_id]
    assert len(transfers) == 1
    assert transfers[0]["amount"] == 300_000
    with app.ledger.engine.connect() as conn:
        payouts = conn.execute(
            select(func.count()).where(PayoutRow.reward_id == waiting.reward_id)
        ).scalar_one()
        paid_entries = conn.execute(
            select(func.count()).where(
                LedgerEntryRow.reward_id == waiting.reward_id, LedgerEntryRow.kind == "paid"
            )
        ).scalar_one()
    assert (payouts, paid_entries) == (1, 1)

    # A second resume (a double click, a second approver late) is refused: still one payout.
    with pytest.raises(PermanentIntegrationError):
        app.approvals.resume(run_id, _form("lou", _code(app, "lou")))
    referral_cycle(as_of=datetime.now(UTC))
    assert (
        len([t for t in stripe.transfers if t["metadata"]["reward_id"] == waiting.reward_id]) == 1
    )


def _pool_template() -> dict[str, Any]:
    with get_client(sync_client=True) as client:
        return client.read_work_pool(WORK_POOL).base_job_template


def _set_pool(command: str | None, env: dict[str, str]) -> None:
    template = copy.deepcopy(_pool_template())
    template["variables"]["properties"]["command"]["default"] = command
    template["variables"]["properties"]["env"]["default"] = env
    with get_client(sync_client=True) as client:
        client.update_work_pool(WORK_POOL, WorkPoolUpdate(base_job_template=template))


def _pool_command_and_env() -> tuple[str | None, Any]:
    properties = _pool_template()["variables"]["properties"]
    return properties["command"]["default"], properties["env"].get("default")


def test_the_work_pool_starts_runs_with_this_environments_engine_and_keeps_what_was_set_on_it(
    stack: tuple[LocalStack, Path],
) -> None:
    local, _ = stack
    command, _env = _pool_command_and_env()
    assert command == engine_command()
    assert command is not None
    assert shlex.split(command)[0] == sys.executable

    # An operator's choices survive the next `make up`: their command and their env.
    _set_pool("python -m prefect.engine", {"TZ": "Europe/Paris"})
    local.ensure_work_pool()
    assert _pool_command_and_env() == ("python -m prefect.engine", {"TZ": "Europe/Paris"})

    # A command naming a Python that is gone (the project moved) or none at all is
    # replaced, and only it.
    for lost in ("/nowhere/.venv/bin/python -m prefect.engine", None):
        _set_pool(lost, {"TZ": "Europe/Paris"})
        local.ensure_work_pool()
        assert _pool_command_and_env() == (engine_command(), {"TZ": "Europe/Paris"})
