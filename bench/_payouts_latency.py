"""Part B of the payout benchmark: from an approver's resume to the payout in the ledger.

A real local Prefect stack (server, deployments from prefect.yaml, process worker on a
pool whose command is this environment's ``python -m prefect.engine``, and the approval
listener, ``referrals approvals listen``, as ``referrals up`` starts them) runs the
``payout-approval`` deployment. The worker and the listener see the same SQLite ledger
and the fake Stripe as this process (``REFERRALS_*`` in their environment). Each repeat
seeds one 1,845.00 EUR reward awaiting approval, starts its approval run with
``request_approvals`` and waits until the run is suspended (PAUSED); then the clock
starts just before ``PrefectApprovalRuns.resume(...)`` with an approval and stops when
this process, polling the ledger every 50 ms, sees the payout committed as succeeded.

Where the time went: the listener's claim on the answer and its recorded outcome (flow
run inputs, stamped by the server), the fake's answer to the transfer; and the resumed
run's own timeline (its states, the log lines Prefect writes when the worker has started
the run's process and when the deployment's pull steps are done), which says whether a
pull step or a process start came before the payout (targets: none did; the listener
paid every one; median <= 2 s). A run that claimed the answer itself (the listener late
or absent) is split by the run's phases as before the listener existed.

Measured at 73666e2 + the listener, 5 repeats each, back to back on 2 CPUs shared with
other engineers' work (load average 1 min about 7): before the listener (the run pays;
``--n 40 --workers 1``), median 10.0 s, max 13.2 s, 5.6 s of it the pull step and 2.5 s
the run's process start (3.8 s on a quieter machine); with the listener
(``--skip-rate --repeats 5``), median 0.50 s, max 3.1 s (one resume call itself took
2.6 s), every payout by the listener, none after a pull step or process start of the
run, every run then Completed "paid" (about 11 s after the resume at that load). Again
at a load of 9: median 0.96 s; its max, 14.3 s, was the resume call itself (Prefect's
SQLite server stalling on its database lock, README "Scale beyond one machine").
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

from sqlalchemy import select

from bench import _report
from bench._payouts_seed import seed_awaiting_approval
from config.program import load_program
from config.settings import PROJECT_ROOT
from domain.approvers import make_approver
from domain.models import PayoutInstruction, PayoutRailKind
from domain.money import Money
from domain.program import Program
from integrations.approvals.prefect_runs import PrefectApprovalRuns
from integrations.approvers.totp import TotpCodes, new_key
from integrations.ledger.approvers import SqlApprovers
from integrations.ledger.engine import make_engine
from integrations.ledger.migrate import upgrade
from integrations.ledger.sql import SqlLedger
from integrations.ledger.tables import PayoutRow
from integrations.prefect_stack import LocalStack
from tasks.approvals import request_approvals

from ._payouts_rate import TimedFakeStripe

API_KEY = "sk_test_bench_latency"
DEPLOYMENT = "payout-approval/payout-approval"
POLL_S = 0.05
TARGET_S = 5.0
#: The issue's target for the median, and the path it must take: the listener pays.
TARGET_MEDIAN_S = 2.0
PAUSE_TIMEOUT_S = 180.0
PAID_TIMEOUT_S = 120.0
T = TypeVar("T")

# The phases of one resume paid by the listener, in order: (key, label). Each ends at its
# named moment; a moment not seen adds its phase to the next one.
PHASES: tuple[tuple[str, str], ...] = (
    ("resume_call", "resume() returns (API: PAUSED -> SCHEDULED)"),
    ("listener_claim", "the listener hears the resume, claims the answer"),
    ("to_stripe", "vet, record the decision, submit-payouts until the transfer is answered"),
    ("to_commit", "transfer answered until the poll sees the payout committed"),
)
# The same for a resume whose run claimed the answer itself (the listener late or absent).
RUN_PHASES: tuple[tuple[str, str], ...] = (
    ("resume_call", "resume() returns (API: PAUSED -> SCHEDULED)"),
    ("worker_pickup", "worker picks the run up (PENDING)"),
    ("process_spawn", "worker starts the run's process (submitted)"),
    ("pull_steps", "process starts, pull steps done"),
    ("process_start", "flow process imports the flow, RUNNING"),
    ("bootstrap", "build_app() until the first task (load-approval)"),
    ("decision", "replay input, apply-decision, until submit-payouts"),
    ("to_stripe", "submit-payouts until the transfer is answered"),
    ("to_commit", "transfer answered until the poll sees the payout committed"),
)


@dataclass
class Sample:
    reward_id: str
    run_id: str
    seconds: float
    paid_by: str = "?"
    # The resumed run's pull steps done / process running before the payout committed.
    run_on_path: bool = False
    run_marks: dict[str, float] = field(default_factory=dict)
    final: str = ""
    phases: dict[str, float] = field(default_factory=dict)
    states: list[tuple[str, float]] = field(default_factory=list)
    tasks: list[tuple[str, float, float]] = field(default_factory=list)


def _wait_for(what: str, check: Callable[[], T | None], timeout: float, every: float) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def _state(run_id: str) -> str | None:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        state = client.read_flow_run(UUID(run_id)).state
    return state.type.value if state else None


def _final_message(run_id: str) -> str:
    """The resumed run's final state as the run list shows it: name and message."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        state = client.read_flow_run(UUID(run_id)).state
    return f"{state.name}: {state.message}" if state else ""


def _pause_scheduled_deployments() -> list[str]:
    """Keep the hourly SLA and the daily cycle from running during the measurements."""
    from prefect.client.orchestration import get_client

    paused = []
    with get_client(sync_client=True) as client:
        for deployment in client.read_deployments():
            if deployment.schedules and not deployment.paused:
                client.pause_deployment(deployment.id)
                paused.append(deployment.name)
    return sorted(paused)


# Log lines of the run marking a moment: (key, how the message starts or ends).
_LOG_MARKS: tuple[tuple[str, str], ...] = (
    ("submitted", "submitted to infrastructure"),
    ("pulled", "All deployment steps completed"),
)


def _timeline(
    run_id: str, resumed_wall: datetime
) -> tuple[list[tuple[str, float]], list[Any], dict[str, float], str]:
    """States, task runs and log marks of the run since ``resumed_wall`` (seconds after
    it); a mark is its first log line after ``resumed_wall``."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        LogFilter,
        LogFilterFlowRunId,
    )

    def after(moment: datetime | None) -> float | None:
        if moment is None:
            return None
        return (moment - resumed_wall).total_seconds()

    with get_client(sync_client=True) as client:
        states = [
            (s.type.value, offset)
            for s in client.read_flow_run_states(UUID(run_id))
            if (offset := after(s.timestamp)) is not None and offset >= 0
        ]
        tasks = [
            (t.name, after(t.start_time), after(t.end_time))
            for t in client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(run_id)]))
            )
        ]
        logs = client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[UUID(run_id)]))
        )
        inputs = client.filter_flow_run_input(UUID(run_id), "answer-", 20, set())
    marks: dict[str, float] = {}
    holder = "?"
    # The first question's claim and outcome (the one this repeat resumed).
    for found in sorted(inputs, key=lambda i: i.created or resumed_wall):
        kind = "claim" if found.key.startswith("answer-claim-") else "outcome"
        offset = after(found.created)
        if offset is not None and offset >= 0 and kind not in marks:
            marks[kind] = offset
            if kind == "claim":
                holder = str(json.loads(found.value).get("by"))
    for log in logs:
        offset = after(log.timestamp)
        if offset is None or offset < 0:
            continue
        for key, text in _LOG_MARKS:
            if (log.message.startswith(text) or log.message.endswith(text)) and (
                key not in marks or offset < marks[key]
            ):
                marks[key] = offset
    return states, [t for t in tasks if t[1] is not None and t[1] >= 0], marks, holder


# The resumed run's moments, reported after the fact: (key, label).
RUN_MARKS: tuple[tuple[str, str], ...] = (
    ("pending", "worker picks the run up (PENDING)"),
    ("submitted", "worker started the run's process"),
    ("pulled", "pull steps done"),
    ("running", "flow running again (RUNNING)"),
    ("completed", "run Completed"),
)


def _run_marks(states: list[tuple[str, float]], logged: dict[str, float]) -> dict[str, float]:
    """When, after the resume, the resumed run reached each of :data:`RUN_MARKS`."""

    def first_state(kind: str) -> float | None:
        return min((at for name, at in states if name == kind), default=None)

    found = {
        "pending": first_state("PENDING"),
        "submitted": logged.get("submitted"),
        "pulled": logged.get("pulled"),
        "running": first_state("RUNNING"),
        "completed": first_state("COMPLETED"),
    }
    return {key: at for key, at in found.items() if at is not None}


def targets(latency: dict[str, Any]) -> list[dict[str, Any]]:
    """Part B's targets: the median, and a path without the run's pull step or process."""
    repeats = latency["repeats"]
    clean = repeats - latency["run_on_path"]
    return [
        _report.target(
            "approval resume -> payout committed, median",
            f"<= {TARGET_MEDIAN_S:g}",
            round(latency["latency_median_s"], 3),
            latency["median_met"],
            unit="s",
        ),
        _report.target(
            "resumes paid by the listener, no pull step or process start before the payout",
            f"{repeats} of {repeats}",
            f"{clean} of {repeats}",
            clean == repeats and latency["paid_by_listener"] == repeats,
        ),
    ]


def _phases(
    states: list[tuple[str, float]],
    tasks: list[Any],
    logged: dict[str, float],
    call_s: float,
    answered_s: float | None,
    seen_s: float,
    paid_by: str,
) -> dict[str, float]:
    """Split ``seen_s`` into the phases of :data:`PHASES` when the listener paid, else of
    :data:`RUN_PHASES` (seconds; missing marks skip)."""

    def first_state(kind: str) -> float | None:
        return min((at for name, at in states if name == kind), default=None)

    def task_start(prefix: str) -> float | None:
        return min((t[1] for t in tasks if str(t[0]).startswith(prefix)), default=None)

    if paid_by == "listener":
        marks: list[tuple[str, float | None]] = [
            ("resume_call", call_s),
            ("listener_claim", logged.get("claim")),
            ("to_stripe", answered_s),
            ("to_commit", seen_s),
        ]
        return _split(marks)
    marks = [
        ("resume_call", call_s),
        ("worker_pickup", first_state("PENDING")),
        ("process_spawn", logged.get("submitted")),
        ("pull_steps", logged.get("pulled")),
        ("process_start", first_state("RUNNING")),
        ("bootstrap", task_start("load-approval")),
        ("decision", task_start("submit-payouts")),
        ("to_stripe", answered_s),
        ("to_commit", seen_s),
    ]
    return _split(marks)


def _split(marks: list[tuple[str, float | None]]) -> dict[str, float]:
    phases: dict[str, float] = {}
    previous = 0.0
    for key, at in marks:
        if at is None:
            continue
        phases[key] = max(at - previous, 0.0)
        previous = max(at, previous)
    return phases


def measure(stack: LocalStack, root: Path, repeats: int) -> dict[str, Any]:
    """Deploy and start the worker on ``stack``, then time ``repeats`` approvals."""
    from prefect.settings import PREFECT_HOME, temporary_settings

    db_url = f"sqlite:///{root / 'latency-ledger.db'}"
    key = new_key()
    engine = make_engine(db_url)
    upgrade(engine)
    ledger = SqlLedger(engine)
    program = load_program(PROJECT_ROOT / "config" / "program.yaml")
    samples: list[Sample] = []
    setup: dict[str, float] = {}
    try:
        with TimedFakeStripe(api_key=API_KEY) as fake:
            stack.extra_env = {
                **stack.extra_env,
                "REFERRALS_DATABASE_URL": db_url,
                "REFERRALS_INBOX_DIR": str(root / "inbox"),
                "REFERRALS_STRIPE_API_KEY": API_KEY,
                "REFERRALS_STRIPE_API_BASE": fake.url,
                "REFERRALS_STRIPE_MAX_NETWORK_RETRIES": "1",
                "REFERRALS_APPROVER_SECRET_KEY": key,
            }
            codes = TotpCodes(SqlApprovers(engine), key)
            began = time.perf_counter()
            stack.deploy()
            setup["deploy_s"] = time.perf_counter() - began
            with temporary_settings({**stack.client_settings(), PREFECT_HOME: str(stack.home)}):
                paused = _pause_scheduled_deployments()
                stack.start_worker()
                stack.start_listener()
                runs = PrefectApprovalRuns(DEPLOYMENT, ui_url=stack.ui_url)
                for i in range(repeats):
                    samples.append(_one(ledger, runs, program, fake, i, setup, codes))
    finally:
        engine.dispose()
    totals = [s.seconds for s in samples]
    median = statistics.median(totals)
    return {
        "repeats": repeats,
        "worker_query_seconds": float(stack.env()["PREFECT_WORKER_QUERY_SECONDS"]),
        "paused_deployments": paused,
        "deploy_s": setup["deploy_s"],
        "first_pause_s": setup.get("first_pause_s", 0.0),
        "latency_s": totals,
        "latency_median_s": median,
        "latency_max_s": max(totals),
        "target_latency_s": TARGET_S,
        "latency_met": max(totals) <= TARGET_S,
        "target_median_s": TARGET_MEDIAN_S,
        "median_met": median <= TARGET_MEDIAN_S,
        "paid_by_listener": sum(s.paid_by == "listener" for s in samples),
        "run_on_path": sum(s.run_on_path for s in samples),
        "runs_completed_paid": sum(
            s.final.startswith("Completed") and s.final.endswith(" paid") for s in samples
        ),
        "phases_median_s": {
            key: statistics.median(s.phases.get(key, 0.0) for s in samples) for key, _ in PHASES
        },
        "run_after_resume_median_s": {
            key: statistics.median(s.run_marks[key] for s in samples if key in s.run_marks)
            for key, _ in RUN_MARKS
            if any(key in s.run_marks for s in samples)
        },
        "samples": [
            {
                "seconds": s.seconds,
                "paid_by": s.paid_by,
                "run_on_path": s.run_on_path,
                "run_marks": s.run_marks,
                "final": s.final,
                "phases": s.phases,
                "states": s.states,
                "tasks": s.tasks,
            }
            for s in samples
        ],
    }


def _one(
    ledger: SqlLedger,
    runs: PrefectApprovalRuns,
    program: Program,
    fake: TimedFakeStripe,
    i: int,
    setup: dict[str, float],
    codes: TotpCodes,
) -> Sample:
    now = datetime.now(UTC)
    # An approver of its own per sample: a code is spent once, and samples come faster
    # than the 30 s a code lives.
    approver_id = f"bench-{now:%H%M%S}-{i}"
    codes.store.add(
        make_approver(
            approver_id=approver_id,
            display_name=f"Bench Approver {i}",
            email=f"{approver_id}@bench.example",
            contact_id=None,
            limit=Money.parse("1000000.00", "EUR"),
        ),
        "bench",
        now,
    )
    codes.enrol(approver_id, "bench", now)
    totp = codes._totp(approver_id)
    assert totp is not None
    reward_id, _amount = seed_awaiting_approval(
        ledger, program, f"r{i}-{now:%H%M%S}", fake.add_account(), now
    )
    key = PayoutInstruction.key_for(reward_id, PayoutRailKind.STRIPE_TRANSFER)
    run_id = request_approvals.fn(ledger, runs, [reward_id], now)[reward_id]
    began = time.perf_counter()
    _wait_for(
        "the approval run to suspend", lambda: _state(run_id) == "PAUSED", PAUSE_TIMEOUT_S, 0.2
    )
    setup.setdefault("first_pause_s", time.perf_counter() - began)

    resumed_wall = datetime.now(UTC)
    t0 = time.monotonic()
    runs.resume(
        run_id,
        {
            "approver_id": approver_id,
            "code": totp.now(),
            "approve": True,
            "reject": False,
            "reason": "bench",
        },
    )
    call_s = time.monotonic() - t0

    def committed() -> float | None:
        with ledger.engine.connect() as conn:
            status = conn.execute(
                select(PayoutRow.status).where(
                    PayoutRow.reward_id == reward_id, PayoutRow.status == "succeeded"
                )
            ).first()
        return time.monotonic() - t0 if status is not None else None

    seen_s = _wait_for("the payout to be committed", committed, PAID_TIMEOUT_S, POLL_S)
    answered = [t for t, status, _r, k in fake.posts if k == key and status == 200]
    answered_s = min(answered) - t0 if answered else None
    _wait_for("the approval run to complete", lambda: _state(run_id) == "COMPLETED", 60, 0.2)
    final = _final_message(run_id)
    # Task runs reach the server as events; give the recorder a moment.
    time.sleep(1.0)
    states, tasks, marks, paid_by = _timeline(run_id, resumed_wall)
    run_marks = _run_marks(states, marks)
    # On the path: the run judged the answer itself, or (conservatively, though the
    # listener held the answer) its pull steps were done or its flow running before
    # Stripe answered. The worker starting the process meanwhile waits on nothing.
    payout_at = answered_s if answered_s is not None else seen_s
    on_path = paid_by != "listener" or any(
        run_marks[key] < payout_at for key in ("pulled", "running") if key in run_marks
    )
    return Sample(
        reward_id=reward_id,
        run_id=run_id,
        seconds=seen_s,
        paid_by=paid_by,
        run_on_path=on_path,
        run_marks=run_marks,
        final=final,
        phases=_phases(states, tasks, marks, call_s, answered_s, seen_s, paid_by),
        states=states,
        tasks=tasks,
    )
