"""``referrals``: the command line of the referral program.

    referrals up | down                 local Prefect server + worker + deployments
    referrals demo                      the sample company through the whole cycle
    referrals status                    server, worker, last cycle, approvals, failures
    referrals cycle [--as-of ISO]       run one cycle now
    referrals approvals list            rewards waiting for a person, oldest first
    referrals approvals approve ID ...  resume the paused run with an approval
    referrals approvals reject ID ...   resume it with a rejection
    referrals approvers add|list|...    who may decide: registry and one-time codes
    referrals config check [FILE]       validate program rules before they apply
    referrals config what-if FILE       the stored history under other rules (pays nothing)
    referrals outbox                    emails kept by the local outbox backend
    referrals report [--period month]   program metrics, with PNG charts
    referrals clawbacks apply           refunds, chargebacks, churn: take rewards back
    referrals reconcile                 ledger payouts against Stripe, both ways
    referrals webhooks serve            receive SendGrid and Stripe webhooks
    referrals web serve                 the referrers' tracked links (GET /r/<code>) and pages
    referrals automations create URL    alert a webhook on failed runs and overdue approvals
    referrals partners register ...     register a partner's lead (first to register wins)
    referrals partners list | expire    registrations holding a company; expire lapsed ones

Prefect is imported inside the commands, after the environment below is in place.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from config.settings import PROJECT_ROOT, load_settings
from domain.errors import ConfigError, IntegrationError, ReferralError
from domain.plain_words import flags_in_words
from flows.cli_approvers import approvers_app
from flows.cli_report import report_app

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__.split("\n\n")[0])
approvals_app = typer.Typer(no_args_is_help=True, help="Rewards waiting for a person.")
config_app = typer.Typer(no_args_is_help=True, help="Program rules.")
asks_app = typer.Typer(no_args_is_help=True, help="Referral asks.")
app.add_typer(approvals_app, name="approvals")
app.add_typer(config_app, name="config")
app.add_typer(asks_app, name="asks")
webhooks_app = typer.Typer(no_args_is_help=True, help="Inbound SendGrid and Stripe webhooks.")
app.add_typer(webhooks_app, name="webhooks")
web_app = typer.Typer(
    no_args_is_help=True, help="The referrers' web app: tracked links and their own pages."
)
app.add_typer(web_app, name="web")
automations_app = typer.Typer(no_args_is_help=True, help="Prefect automations for on-call.")
app.add_typer(automations_app, name="automations")
app.add_typer(report_app, name="report")
app.add_typer(approvers_app, name="approvers")
clawbacks_app = typer.Typer(no_args_is_help=True, help="Rewards taken back.")
app.add_typer(clawbacks_app, name="clawbacks")
partners_app = typer.Typer(no_args_is_help=True, help="Partner deal registration.")
app.add_typer(partners_app, name="partners")


#: Where ``referrals up`` keeps its PID files and the record of the stack it started.
RUN_DIR = PROJECT_ROOT / ".run"


def _port() -> int:
    """REFERRALS_PREFECT_PORT when set, else the port ``up`` recorded, else 4200."""
    given = os.environ.get("REFERRALS_PREFECT_PORT")
    if given:
        return int(given)
    from integrations.prefect_stack import read_record

    recorded = (read_record(RUN_DIR) or {}).get("port")
    return recorded if isinstance(recorded, int) else 4200


def _prefect_env(need_api: bool = False) -> None:
    """Point Prefect at the local stack unless the user chose another API.

    Args:
        need_api: the command talks to the API: without one answering, say so in one
            line and exit 2 (rather than Prefect's long traceback).
    """
    stack = _stack()
    os.environ.setdefault("PREFECT_HOME", str(stack.home))
    settings_url = os.environ.get("REFERRALS_PREFECT_API_URL")
    os.environ.setdefault("PREFECT_API_URL", settings_url or stack.api_url)
    os.environ.setdefault("PREFECT_UI_API_URL", os.environ["PREFECT_API_URL"])
    local = os.environ["PREFECT_API_URL"] == stack.api_url
    # The local stack's server takes no unauthenticated call: use its secret, unless
    # the user points at another API with credentials of their own.
    if local and stack.auth_file.exists():
        os.environ.setdefault("PREFECT_API_AUTH_STRING", stack.auth_string)
    if local:
        _warn_if_settings_differ(stack)
    if need_api and not _api_answers(os.environ["PREFECT_API_URL"]):
        if local:
            _fail(
                f"No Prefect stack is running on port {stack.port}: start it with "
                "`make up` (PORT=... for another port), then try again."
            )
        _fail(
            f"No Prefect API answers at {os.environ['PREFECT_API_URL']} "
            "(PREFECT_API_URL / REFERRALS_PREFECT_API_URL): check the address or start it."
        )


def _api_answers(api_url: str) -> bool:
    """Whether a Prefect API answers its (unauthenticated) health check."""
    import httpx

    try:
        return httpx.get(f"{api_url.rstrip('/')}/health", timeout=3).status_code == 200
    except httpx.HTTPError:
        return False


def _warn_if_settings_differ(stack: Any) -> None:
    """One line when the REFERRALS_* settings here differ from those the worker started
    with: approved payouts and scheduled runs run on the worker, with its settings."""
    from integrations.prefect_stack import differing_settings, read_record

    worker = (read_record(stack.run_dir) or {}).get("worker")
    if not isinstance(worker, dict) or stack.running("worker") is None:
        return
    names = differing_settings(worker.get("settings") or {}, os.environ, stack.settings_key)
    if names:
        typer.secho(
            f"warning: {', '.join(names)} changed since the worker started "
            f"({worker.get('started_at', '?')}); runs on the worker (approved payouts, "
            "schedules) do not see the change until `make down && make up`.",
            fg=typer.colors.YELLOW,
            err=True,
        )


def _stack() -> Any:
    """The stack the CLI talks to: on its port, with the Prefect home `up` recorded for
    it (where its auth secret is), else the project's."""
    from integrations.prefect_stack import LocalStack, read_record

    port = _port()
    record = read_record(RUN_DIR) or {}
    home = record.get("prefect_home") if record.get("port") == port else None
    return LocalStack(PROJECT_ROOT, port=port, run_dir=RUN_DIR, home=Path(home) if home else None)


def _fail(message: str) -> None:
    typer.secho(message, fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


@app.command()
def up(
    host: Annotated[
        str,
        typer.Option(
            help="Interface the Prefect server listens on; anything but loopback needs "
            "its basic auth (always on here) and TLS in front (README, Production)."
        ),
    ] = "127.0.0.1",
    reset_schedules: Annotated[
        bool,
        typer.Option(
            "--reset-schedules",
            help="Put prefect.yaml's schedules, paused flags and parameters back over "
            "the ones changed in the UI (by default those are kept and listed).",
        ),
    ] = False,
) -> None:
    """Start the local Prefect server (basic auth on), register the deployments, start a
    worker. Schedules, paused flags and parameters changed in the UI stay."""
    from integrations.prefect_stack import LocalStack, StackError

    stack = LocalStack(PROJECT_ROOT, port=_port(), host=host, reset_schedules=reset_schedules)
    try:
        drifts = stack.up()
    except StackError as exc:
        _fail(str(exc))
    for drift in drifts:
        typer.echo(str(drift))
    typer.echo(f"Prefect UI: {stack.ui_url}   (stop with `make down`)")
    typer.echo("To log in: " + _login_hint(stack))


def _login_hint(stack: Any) -> str:
    return (
        f"the UI asks for a password: paste the whole line of {stack.auth_file} "
        "(user:password); the CLI and the worker read it themselves."
    )


@app.command()
def down() -> None:
    """Stop the server and worker started by `up` (and the web app and Stripe stand-in
    `demo` started), by their PIDs."""
    stopped = _stack().down()
    typer.echo(f"stopped: {', '.join(stopped) or 'nothing was running'}")


@app.command()
def demo(
    accounts: Annotated[int, typer.Option(help="Accounts in the sample company.")] = 300,
) -> None:
    """Run the whole cycle on a generated sample company (SQLite ledger, local outbox),
    then start the referrers' web app (with the local Stripe stand-in for onboarding when
    no Stripe key is set) and print a referrer's page link."""
    _prefect_env()
    stack = _stack()
    if not stack.healthy():
        _fail(f"no Prefect server at {stack.api_url}: run `make demo` (it starts one)")
    from flows import bootstrap
    from flows.demo import run_demo

    result = run_demo(accounts=accounts)
    app_ = bootstrap.app()
    _wait_until_resumable(app_)
    _print_demo(app_, result, stack)
    _show_referrer_page(app_, stack)


def _show_referrer_page(app_: Any, stack: Any) -> None:
    """Start the referrers' web app beside the stack (``make down`` stops it) and print
    one referrer's magic link: the referrer's journey, clickable locally.

    Without a Stripe key the web app gets the local Stripe stand-in for its Connect
    onboarding (payouts stay ledger-only), so "Set up payouts" can be clicked through
    offline too."""
    from urllib.parse import urlsplit

    import httpx

    from integrations.prefect_stack import StackError

    base = app_.settings.public_base_url
    port = urlsplit(base).port or 8000
    try:
        stand_in = stack.start_web(port, stripe_stand_in=app_.settings.stripe_api_key is None)
    except StackError as exc:
        _fail(str(exc))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base.rstrip('/')}/healthz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    else:
        typer.secho(f"The web app did not answer on {base} (see .run/web.log).", err=True)
    referrer = demo_referrer(app_.ledger.referrer_side)
    if referrer is None or app_.page_links is None:
        return
    hours = app_.settings.page_token_hours
    typer.echo(f"A referrer's own page (their magic link, valid {hours} h):")
    typer.echo(f"  {app_.page_links(referrer)}")
    typer.echo(
        "  Open it, copy their link and follow it, then 'Set up payouts' (Stripe's "
        "onboarding, then back); the next route-rewards run (`make demo` again runs one) "
        "pays what they hold once approved: a new payout destination is always reviewed."
    )
    if stand_in is not None:
        typer.echo(
            f"  Onboarding goes to the local Stripe stand-in on {stand_in} (test mode, no "
            "Stripe account; payouts stay ledger-only)."
        )
    typer.echo(
        f"  (a fresh link for anyone: {base.rstrip('/')}/p/new; the web app keeps "
        "running, `make down` stops it)"
    )


def demo_referrer(store: Any, look_at: int = 20) -> str | None:
    """The referrer whose page the demo shows: of those holding the most rewards, the
    first with no way to be paid through Stripe yet (their page offers payout setup),
    else the first."""
    from domain.models import PayoutRailKind
    from domain.referrer_page import needs_payout_setup

    stripe = {PayoutRailKind.STRIPE_TRANSFER, PayoutRailKind.STRIPE_BALANCE}
    candidates = store.referrers_with_rewards(limit=look_at)
    for referrer_id in candidates:
        facts = store.referrer_facts(referrer_id)
        if facts is not None and needs_payout_setup(facts.contact, stripe, facts.choice):
            return str(referrer_id)
    return str(candidates[0]) if candidates else None


def _wait_until_resumable(app_: Any, timeout: float = 600) -> None:
    """Wait until every approval run is suspended (its Resume button shown): a link
    printed earlier would open a run still starting, with nothing to click."""
    runs = [w.flow_run_id for w in app_.ledger.approvals.waiting() if w.flow_run_id]
    deadline = time.monotonic() + timeout
    ready: set[str] = set()
    while time.monotonic() < deadline:
        ready = app_.approvals.resumable(runs)
        if len(ready) == len(runs):
            return
        typer.echo(f"  approval runs ready for a decision: {len(ready)} of {len(runs)}…")
        time.sleep(3)
    typer.secho(
        f"{len(runs) - len(ready)} approval runs are not suspended yet (is the worker "
        "running?); their links work once they are.",
        fg="yellow",
        err=True,
    )


def _print_demo(app_: Any, result: Any, stack: Any) -> None:
    ui_url = stack.ui_url
    summary = app_.ledger.metrics.summary()
    echo = typer.echo
    echo("")
    echo("=" * 78)
    echo(f"Referral demo: sample company in {result.sample.folder}")
    echo(f"Ledger: {app_.describe()['ledger']}")
    echo(
        f"Email: {app_.email.name}   Payouts: {', '.join(app_.describe()['payouts'].split(','))}"
        + (
            "  (ledger-only: no money moves; set REFERRALS_STRIPE_API_KEY for Stripe)"
            if "ledger_only" in app_.describe()["payouts"]
            else ""
        )
    )
    echo("-" * 78)
    echo(
        f"Events read: {summary['events']}   quarantined input: "
        f"{sum(summary['quarantine'].values())} (see the 'quarantined-input' artifact)"
    )
    echo("Moments found per type: " + _pairs(summary["moments"]))
    echo("Skipped (reason: count): " + _pairs(summary["skipped"]))
    echo(f"Detractors listed for follow-up (never asked): {summary['follow_ups']}")
    echo("Asks: " + _pairs(summary["asks"]))
    echo(f"Referred friends who used a code: {result.referrals}")
    echo(
        f"Partner registrations in the drop: {result.registrations}; per status: "
        + _pairs(app_.ledger.partners.registration_counts())
        + " (converted: a won deal credited to the partner)"
    )
    echo("Conversions per milestone: " + _pairs(summary["conversions"]))
    echo("Rewards per status: " + _pairs(summary["rewards"]))
    from domain.money import Money

    paid = ", ".join(Money(v, c).format() for c, v in summary["paid"].items()) or "nothing"
    echo(f"Paid automatically (under the threshold): {summary['payouts'] or {}} -> {paid}")
    waiting = app_.ledger.approvals.waiting()
    echo("-" * 78)
    echo(f"Rewards waiting for approval: {len(waiting)} (each in its own paused Prefect run)")
    for w in waiting:
        link = app_.approvals.ui_url(w.flow_run_id) if w.flow_run_id else "(run not started)"
        flags = f"  flags: {flags_in_words(w.flags)}" if w.flags else ""
        echo(f"  {w.amount.format():>14}  {w.referrer_name:<22} {link}{flags}")
    if waiting:
        from flows.demo import DEMO_APPROVERS

        first = waiting[0]
        demo_ids = " and ".join(a[0] for a in DEMO_APPROVERS)
        echo("")
        echo(f"Log in to the UI: {_login_hint(stack)}")
        echo(
            "Approve in the UI: open a link above, click Resume, enter an approver id and "
            "its one-time code, turn on Approve or Reject, give a reason, submit."
        )
        echo(
            f"The demo's approvers are {demo_ids} (no phone needed: "
            "their current code, valid for 30 s, comes from"
        )
        echo("  .venv/bin/referrals approvers demo-code maya.chen")
        echo("Or from the command line (a reward id or run id, or their first characters):")
        echo(
            f"  .venv/bin/referrals approvals approve {first.reward_id[:8]} "
            "--approver-id maya.chen --code $(.venv/bin/referrals approvers demo-code "
            "maya.chen) --reason 'checked the deal'"
        )
        echo("Rewards of 5,000.00 EUR or more need a second, different approver (sam.okafor).")
    outbox = app_.ledger.emails.outbox(limit=1)
    if outbox:
        echo("-" * 78)
        echo(f"One ask from the local outbox (to {outbox[0]['to_name']}): {outbox[0]['subject']}")
        echo("  " + outbox[0]["body"].strip().replace("\n", "\n  "))
    echo("=" * 78)
    echo(f"Prefect UI: {ui_url}   (the server and worker keep running; `make down` stops them)")


def _pairs(values: dict[str, int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(values.items())) or "none"


@app.command()
def cycle(
    as_of: Annotated[
        datetime | None, typer.Option(help="Decide as of this time (ISO 8601); default now.")
    ] = None,
) -> None:
    """Run one referral cycle now, against the configured Prefect API."""
    _prefect_env(need_api=True)
    from flows.cycle import referral_cycle

    result = referral_cycle(as_of=as_of)
    typer.echo(json.dumps(result["report"], indent=2, default=str))


@app.command()
def status() -> None:
    """The stack's health, one line each: server, worker, last cycle, waiting approvals,
    failed runs in the last day. Exit 1 when the server or the worker is not running."""
    _prefect_env()
    from datetime import timedelta

    from flows import cli_status

    stack = _stack()
    now = datetime.now(UTC)
    local = os.environ["PREFECT_API_URL"] == stack.api_url
    server = cli_status.probe_server(
        os.environ["PREFECT_API_URL"], os.environ.get("PREFECT_API_AUTH_STRING")
    )
    runs: Any = "the server does not answer"
    if server.up and server.authenticated:
        try:
            runs = cli_status.read_runs(
                now - timedelta(days=1),
                os.environ["PREFECT_API_URL"],
                os.environ.get("PREFECT_API_AUTH_STRING"),
            )
        except Exception as exc:  # a status line, not a traceback: say what failed
            runs = f"could not read the runs: {type(exc).__name__}"
    waiting: Any
    try:
        from flows import bootstrap

        waiting = bootstrap.app().ledger.approvals.waiting()
    except Exception as exc:  # the ledger unreachable is itself a status
        waiting = f"could not read the ledger: {type(exc).__name__}"
    worker = stack.running("worker") if local else None
    from integrations.prefect_stack import LISTENER

    for line in cli_status.status_lines(
        server,
        worker,
        stack.recorded_pid("worker") if local else None,
        runs,
        waiting,
        now,
        listener_pid=stack.running(LISTENER) if local else None,
        recorded_listener_pid=stack.recorded_pid(LISTENER) if local else None,
    ):
        typer.echo(line)
    if not cli_status.healthy(server, worker, local):
        raise typer.Exit(code=1)


def _waiting(reward_or_run: str) -> Any:
    from flows import bootstrap

    matches = [
        w
        for w in bootstrap.app().ledger.approvals.waiting()
        if w.reward_id.startswith(reward_or_run) or (w.flow_run_id or "").startswith(reward_or_run)
    ]
    if not matches:
        _fail(f"no reward waiting for approval matches {reward_or_run!r}")
    if len(matches) > 1:
        _fail(f"{reward_or_run!r} matches {len(matches)} rewards; give more of the id")
    return matches[0]


@approvals_app.command("listen")
def approvals_listen() -> None:
    """Apply approvers' answers as soon as they resume a run, and pay approvals at once
    (started and stopped by `up`/`down`; runs until stopped)."""
    _prefect_env(need_api=True)
    from flows.approval_listener import main

    main()


@approvals_app.command("list")
def approvals_list() -> None:
    """Rewards waiting for a decision, oldest first, with the UI link of each run."""
    _prefect_env()
    from flows import bootstrap

    app_ = bootstrap.app()
    waiting = app_.ledger.approvals.waiting()
    if not waiting:
        typer.echo("No reward is waiting for approval.")
        return
    for w in waiting:
        link = app_.approvals.ui_url(w.flow_run_id) if w.flow_run_id else "(run not started)"
        typer.echo(
            f"{w.reward_id}  {w.amount.format():>14}  {w.referrer_name:<24} "
            f"waiting since {w.waiting_since:%Y-%m-%d %H:%M}  approvals done: {w.stages_done}"
            f"{'  flags: ' + flags_in_words(w.flags) if w.flags else ''}\n    {link}"
        )


def _decide(
    approve: bool,
    reward_or_run: str,
    approver_id: str,
    code: str | None,
    reason: str,
    amount: str | None,
    wait: int,
) -> None:
    _prefect_env(need_api=True)
    from domain.errors import InvalidDecision
    from flows import bootstrap
    from tasks.use_cases.approvals import DecisionRefused, refuse, vet_decision

    app_ = bootstrap.app()
    waiting = _waiting(reward_or_run)
    if waiting.flow_run_id is None:
        _fail("its approval run has not started yet; run a cycle first")
    if code is None:
        code = typer.prompt("One-time code (from your authenticator app)")
    form: dict[str, object] = {
        "approver_id": approver_id,
        "code": code,
        "approve": approve,
        "reject": not approve,
        "reason": reason,
        "adjusted_amount": amount or "",
    }
    # The same rules the run applies, checked here first (the code is checked, not
    # spent: the run spends it) so a refusal is answered at once, not after a resume.
    now = datetime.now(UTC)
    view = app_.ledger.approvals.view(waiting.reward_id)
    try:
        vet_decision(view, app_.approvers, app_.codes, form, now, spend_code=False)
    except DecisionRefused as exc:
        refuse(app_.approvers, waiting.reward_id, form, exc, None, now)
        _refused(str(exc))
    except InvalidDecision as exc:
        _refused(str(exc))
    refusals_before = len(app_.approvers.refusals(waiting.reward_id))
    try:
        app_.approvals.resume(waiting.flow_run_id, form)
    except IntegrationError as exc:
        _fail(str(exc))
    typer.echo(f"Resumed {app_.approvals.ui_url(waiting.flow_run_id)}; waiting for the run…")
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        view = app_.ledger.approvals.view(waiting.reward_id)
        if len(view.decisions) > waiting.stages_done or view.reward.status.value in (
            "paid",
            "rejected",
            "approved",
        ):
            status = view.reward.status.value
            if status == "awaiting_approval":
                typer.echo(
                    f"Recorded: approval {len(view.decisions)} by {approver_id}. Reward "
                    f"{waiting.reward_id} now waits for a second, different approver."
                )
            else:
                typer.echo(f"Reward {waiting.reward_id} is now {status}.")
            return
        refusals = app_.approvers.refusals(waiting.reward_id)
        if len(refusals) > refusals_before:
            _refused(refusals[-1]["reason"])
        time.sleep(0.5)
    _fail(
        "The run was resumed but has not recorded the decision yet: is the worker "
        "running (`make up`)? `referrals approvals list` shows whether it still waits."
    )


def _refused(reason: str) -> None:
    typer.secho(f"refused: {reason}. Nothing was recorded or paid.", fg="red", err=True)
    raise typer.Exit(code=1)


_APPROVER = typer.Option("--approver-id", help="Your approver id (`referrals approvers list`).")
_CODE = typer.Option(help="The 6-digit one-time code; asked for when not given.")


@approvals_app.command("approve")
def approvals_approve(
    reward: Annotated[str, typer.Argument(help="Reward id (or its start), or flow run id.")],
    approver_id: Annotated[str, _APPROVER],
    reason: Annotated[str, typer.Option(help="Why; recorded in the ledger.")],
    code: Annotated[str | None, _CODE] = None,
    amount: Annotated[
        str | None, typer.Option(help="Pay less than the reward, e.g. 450.00.")
    ] = None,
    wait: Annotated[int, typer.Option(help="Seconds to wait for the outcome.")] = 60,
) -> None:
    """Approve a reward: resumes its paused run, which records the decision and pays.
    Exit 1 when the decision is refused (the reason is printed)."""
    _decide(True, reward, approver_id, code, reason, amount, wait)


@approvals_app.command("reject")
def approvals_reject(
    reward: Annotated[str, typer.Argument(help="Reward id (or its start), or flow run id.")],
    approver_id: Annotated[str, _APPROVER],
    reason: Annotated[str, typer.Option(help="Why; told to the referrer.")],
    code: Annotated[str | None, _CODE] = None,
    wait: Annotated[int, typer.Option(help="Seconds to wait for the outcome.")] = 60,
) -> None:
    """Reject a reward: resumes its paused run, which closes the reward unpaid.
    Exit 1 when the decision is refused."""
    _decide(False, reward, approver_id, code, reason, None, wait)


@config_app.command("check")
def config_check(
    file: Annotated[
        Path | None, typer.Argument(help="Rules file; default the configured one.")
    ] = None,
) -> None:
    """Validate a program rules file; exit 2 with each wrong field's path if invalid."""
    from config.program import load_program

    path = file or load_settings().program_file
    program = load_program(path)
    typer.echo(
        f"{path}: valid. {len(program.rewards)} reward rules, auto-payout below "
        f"{program.auto_payout_threshold}, two approvers from "
        f"{program.second_approver_threshold}, cooldown {program.eligibility.cooldown_days} days."
    )


@asks_app.command("preview")
def asks_preview(
    moment: Annotated[
        str, typer.Option(help="deal_won, renewal, nps_promoter, support_resolved, ...")
    ] = "nps_promoter",
    referrer_type: Annotated[str, typer.Option(help="customer, partner or employee.")] = (
        "customer"
    ),
    contact: Annotated[
        str | None, typer.Option(help="Preview for this contact id from the ledger.")
    ] = None,
    detail: Annotated[str, typer.Option(help="What happened, as the email says it.")] = "NPS 10",
) -> None:
    """Render an ask as it would be sent, without sending or storing anything."""
    from config.program import load_program
    from domain.models import Ask, Contact, MomentType, ReferrerType
    from tasks.asks import compose_ask

    settings = load_settings()
    program = load_program(settings.program_file)
    try:
        moment_type, kind = MomentType(moment), ReferrerType(referrer_type)
    except ValueError as exc:
        _fail(str(exc))
    person = Contact("preview", None, "Alex Example", "alex@example.com", kind)
    code = "R" + "PREVIEW" * 3 if contact is None else "R" + "X" * 20
    if contact is not None:
        from flows import bootstrap

        ledger = bootstrap.app().ledger
        found = ledger.asks.contacts([contact]).get(contact)
        if found is None:
            _fail(f"no contact {contact!r} in the ledger")
        assert found is not None
        person = found
        code = ledger.asks.codes_for([contact]).get(contact, code)
    ask = Ask("preview", "preview", person.contact_id, code, moment_type)
    message = compose_ask(ask, person, detail, program)
    typer.echo(f"Template: {message.template}\nSubject:  {message.subject}\n")
    typer.echo(message.data["text"])


@config_app.command("what-if")
def config_what_if(
    file: Annotated[Path, typer.Argument(help="The proposed rules file.")],
) -> None:
    """Replay the stored history under a proposed rules file and show the difference in
    rewards, cost, approvals and ROI. Nothing is written, sent or paid."""
    from config.program import load_program
    from flows import bootstrap
    from tasks.whatif import attribution_label, replay_rules, what_if_markdown

    proposed = load_program(file)
    app_ = bootstrap.app()
    result = replay_rules.fn(app_.ledger, app_.program, proposed)
    models = (attribution_label(app_.program), attribution_label(proposed))
    typer.echo(what_if_markdown(result, models))


@app.command()
def outbox(limit: Annotated[int, typer.Option(help="How many emails.")] = 5) -> None:
    """Show the emails kept by the local outbox backend (no SendGrid key set)."""
    from flows import bootstrap

    for row in bootstrap.app().ledger.emails.outbox(limit=limit):
        typer.echo(f"--- {row['kind']} to {row['to_name']}: {row['subject']}\n{row['body']}")


@webhooks_app.command("serve")
def webhooks_serve(
    host: Annotated[str, typer.Option(help="Interface to listen on (put TLS in front).")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8787,
) -> None:
    """Receive SendGrid and Stripe webhooks: verify, deduplicate, store (until Ctrl-C)."""
    import uvicorn

    from flows import bootstrap
    from integrations.webhooks import create_app

    app_ = bootstrap.app()
    settings = app_.settings
    secret = settings.stripe_webhook_secret
    receiver = create_app(
        app_.ledger,
        sendgrid_public_key=settings.sendgrid_webhook_public_key,
        stripe_secret=secret.get_secret_value() if secret else None,
    )
    for name, configured in (
        ("REFERRALS_SENDGRID_WEBHOOK_PUBLIC_KEY", settings.sendgrid_webhook_public_key),
        ("REFERRALS_STRIPE_WEBHOOK_SECRET", secret),
    ):
        if not configured:
            typer.secho(f"{name} is not set: that webhook answers 503.", fg="yellow", err=True)
    typer.echo(f"Webhooks on http://{host}:{port}/webhooks/sendgrid and /webhooks/stripe")
    # No websockets and no lifespan: plain POSTs only. Access logs carry paths, never bodies.
    uvicorn.run(receiver, host=host, port=port, ws="none", lifespan="off", log_level="info")


def web_links_app() -> Any:
    """The web app from the settings (each uvicorn worker builds its own: its clicks
    queue and its database connections); built by the composition root."""
    from flows import bootstrap

    return bootstrap.web_app()


@web_app.command("serve")
def web_serve(
    host: Annotated[str, typer.Option(help="Interface to listen on (put TLS in front).")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[
        int, typer.Option(min=1, max=64, help="Processes answering (one per core at most).")
    ] = 1,
) -> None:
    """Serve the referrers' tracked links (redirect, set the visitor cookie, store the
    click) and their own pages, reached by the magic links in their emails (until
    Ctrl-C or SIGTERM, which store every click answered)."""
    import uvicorn

    from integrations.ledger.engine import make_engine
    from integrations.ledger.migrate import upgrade
    from integrations.web.keys import page_key, visitor_key

    settings = load_settings()
    # Once, before any worker starts: the schema, and the key files if they are used.
    upgrade(make_engine(settings.database_url))
    visitor_key(settings.visitor_key, settings.visitor_key_file)
    page_key(settings.page_key, settings.page_key_file)
    typer.echo(f"Links on http://{host}:{port}/r/<code>, landing on {settings.landing_url}")
    typer.echo(
        f"Referrers' pages on http://{host}:{port}/p/<token> (fresh link: /p/new); "
        f"emails link to {settings.public_base_url}"
    )
    # No access log: it prints each client's address, which the link never keeps.
    # The lifespan stores the clicks still in memory at a graceful stop (each worker's).
    uvicorn.run(
        "flows.cli:web_links_app",
        factory=True,
        workers=workers,
        host=host,
        port=port,
        ws="none",
        lifespan="on",
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=10,
    )


@automations_app.command("create")
def automations_create(
    webhook_url: Annotated[
        str, typer.Argument(help="Where notifications are POSTed (Slack, Teams, any webhook).")
    ],
) -> None:
    """Notify a webhook when a referral run fails or crashes, and when an approval waits
    past its SLA. Run again to change the URL: the automations are updated in place."""
    _prefect_env(need_api=True)
    from integrations.prefect_automations import ensure_automations

    for name, automation_id in ensure_automations(webhook_url).items():
        typer.echo(f"{name}: {automation_id}")


@clawbacks_app.command("apply")
def clawbacks_apply() -> None:
    """Apply the refunds, chargebacks and churn waiting in the Stripe inbox, once each."""
    _prefect_env(need_api=True)
    from flows.reconcile import apply_clawbacks

    typer.echo(json.dumps(apply_clawbacks(), indent=2, default=str))


@app.command()
def reconcile() -> None:
    """Compare ledger payouts with Stripe by reward id; exit 1 on any mismatch."""
    _prefect_env()
    from flows import bootstrap
    from flows.reconcile import payment_records
    from tasks.reconcile import reconcile_payouts

    app_ = bootstrap.app()
    records = payment_records(app_)
    if records is None:
        _fail("no Stripe key configured: the ledger-only rail has nothing to reconcile")
    assert records is not None
    mismatches = reconcile_payouts.fn(app_.ledger, records, datetime.now(UTC))
    for mismatch in mismatches:
        typer.echo(" | ".join(f"{k}: {v}" for k, v in mismatch.row().items()))
    typer.echo(f"{len(mismatches)} mismatch(es)")
    if mismatches:
        raise typer.Exit(code=1)


@partners_app.command("register")
def partners_register(
    partner_id: Annotated[str, typer.Option(help="The partner's contact id.")],
    domain: Annotated[str, typer.Option(help="The company's domain, e.g. acme.com.")],
    contact: Annotated[
        str,
        typer.Option(
            help="The lead's CRM contact id, or email (only its keyed hash is kept: needs "
            "REFERRALS_REGISTRATION_CONTACT_KEY)."
        ),
    ],
    evidence: Annotated[
        str, typer.Option(help="The qualification: a meeting booked, a discovery call, ...")
    ],
) -> None:
    """Register a lead for a partner: first to register a company wins. Exit 1 when
    another partner holds the company, 2 when the claim is malformed."""
    _prefect_env()
    from flows import bootstrap
    from tasks.registrations import register_leads

    app_ = bootstrap.app()
    now = datetime.now(UTC)
    claim = {"partner_id": partner_id, "domain": domain, "contact": contact}
    claim |= {"evidence": evidence, "record": f"cli {now.isoformat(timespec='seconds')}"}
    batch = register_leads.fn(
        app_.ledger, app_.program, [claim], now, "cli", app_.settings.registration_contact_key
    )
    for refused in batch.quarantined:
        _fail(f"refused: {refused.field}: {refused.reason}")
    for decision in batch.accepted + batch.rejected:
        typer.echo(decision.message())
    if batch.rejected:
        raise typer.Exit(code=1)


@partners_app.command("list")
def partners_list(
    all_: Annotated[
        bool, typer.Option("--all", help="Every registration, expired and converted too.")
    ] = False,
) -> None:
    """Registrations holding a company (or all of them), soonest expiry first."""
    _prefect_env()
    from domain.registration import HOLDING
    from flows import bootstrap

    found = bootstrap.app().ledger.partners.registrations(None if all_ else list(HOLDING))
    if not found:
        typer.echo("No partner registration." if all_ else "No company is registered.")
        return
    for r in found:
        typer.echo(
            f"{r.domain:<32} {r.partner_id:<16} {r.status.value:<9} "
            f"until {r.expires_at:%Y-%m-%d}  extensions: {r.extensions}  {r.registration_id}"
        )


@partners_app.command("expire")
def partners_expire() -> None:
    """Expire the registrations whose window has passed (the daily deployment does it)."""
    _prefect_env()
    from flows import bootstrap
    from tasks.registrations import expire_registrations

    expired = expire_registrations.fn(bootstrap.app().ledger, datetime.now(UTC), "cli")
    for r in expired:
        typer.echo(
            f"expired: {r.domain} registered by {r.partner_id} on {r.registered_at:%Y-%m-%d}"
        )
    typer.echo(f"{len(expired)} registration(s) expired")


def main() -> None:
    try:
        app()
    except (ConfigError, ReferralError) as exc:
        typer.secho(str(exc), fg=typer.colors.RED, err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
