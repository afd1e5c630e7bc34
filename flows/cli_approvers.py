"""``referrals approvers``: who may decide on rewards.

    referrals approvers add ID --name N --email E --limit "20000.00 EUR" [--contact-id C]
    referrals approvers list
    referrals approvers disable ID | enable ID
    referrals approvers enrol ID        a new one-time-code secret (shown once)
    referrals approvers history ID      the approver's change log
    referrals approvers new-key         a key for REFERRALS_APPROVER_SECRET_KEY
    referrals approvers demo-code ID    the current code of a *demo* approver only

Every change is written to the ledger's append-only change log with the operating-system
user and host that made it. An approver is never deleted or edited: disable them, and
add a new approver for a new limit. No command shows a real approver's code: those come
from the approver's authenticator app, enrolled once from the QR code.
"""

from __future__ import annotations

import getpass
import os
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

approvers_app = typer.Typer(no_args_is_help=True, help="Who may decide on rewards.")


def _actor() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()}"


def _app() -> Any:
    from flows import bootstrap

    return bootstrap.app()


def _fail(message: str) -> None:
    typer.secho(message, fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


def live_stripe(settings: Any) -> bool:
    """Whether payouts move real money (a live Stripe key, secret or restricted)."""
    key = settings.stripe_api_key
    return key is not None and key.get_secret_value().startswith(("sk_live_", "rk_live_"))


def parse_limit(text: str) -> Any:
    """``"20000.00 EUR"`` (or ``EUR 20000``) as Money."""
    from domain.money import Money

    parts = text.split()
    if len(parts) != 2:
        raise ValueError("limit: an amount and a currency, e.g. '20000.00 EUR'")
    amount, currency = parts if not parts[0].isalpha() else parts[::-1]
    if not (len(currency) == 3 and currency.isascii() and currency.isalpha()):
        raise ValueError("limit: the currency is a three-letter ISO code, e.g. EUR")
    return Money.parse(amount, currency.upper())


def show_enrolment(enrolment: Any, qr_dir: Path) -> None:
    """Print the secret's URI and QR code once, and keep the QR as a PNG (owner-only)."""
    qr_dir.mkdir(parents=True, exist_ok=True)
    png = qr_dir / f"approver-{enrolment.approver_id}.png"
    fd = os.open(png, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(enrolment.png)
    typer.echo(enrolment.terminal)
    typer.echo(f"otpauth URI (shown once; scan the QR code or paste it): {enrolment.uri}")
    typer.echo(f"QR code as PNG: {png} (delete it once scanned)")


@approvers_app.command("add")
def add(
    approver_id: Annotated[str, typer.Argument(help="The id they decide under, e.g. maya.chen.")],
    name: Annotated[str, typer.Option(help="Display name (shown, never compared).")],
    email: Annotated[str, typer.Option(help="Work email (compared, normalised).")],
    limit: Annotated[str, typer.Option(help="Largest amount per decision, e.g. '20000.00 EUR'.")],
    contact_id: Annotated[
        str | None, typer.Option(help="Their CRM contact id, if they have one.")
    ] = None,
    enrol: Annotated[bool, typer.Option(help="Enrol a one-time-code secret now.")] = True,
    qr_dir: Annotated[Path, typer.Option(help="Where the QR code PNG is written.")] = Path(".run"),
) -> None:
    """Register an approver and (by default) enrol their one-time-code secret."""
    from domain.approvers import make_approver
    from integrations.ledger.approvers import ApproverExists

    app_ = _app()
    try:
        approver = make_approver(
            approver_id=approver_id,
            display_name=name,
            email=email,
            contact_id=contact_id,
            limit=parse_limit(limit),
        )
        app_.approvers.add(approver, _actor(), datetime.now(UTC))
    except (ValueError, ApproverExists) as exc:
        _fail(str(exc))
        return
    typer.echo(f"added approver {approver.approver_id} ({approver.display_name}), limit {limit}")
    if enrol:
        show_enrolment(app_.codes.enrol(approver.approver_id, _actor(), datetime.now(UTC)), qr_dir)


@approvers_app.command("list")
def list_() -> None:
    """Every approver: id, name, limit, and whether active, enrolled, demo."""
    found = _app().approvers.all()
    if not found:
        typer.echo("No approver is registered: `referrals approvers add` adds one.")
    for a in found:
        marks = [
            "active" if a.active else "DISABLED",
            "enrolled" if a.enrolled else "not enrolled",
        ] + (["demo"] if a.demo else [])
        typer.echo(
            f"{a.approver_id:<24} {a.display_name:<28} limit {a.limit.format():>16}  "
            + ", ".join(marks)
        )


def _set_active(approver_id: str, active: bool) -> None:
    from integrations.ledger.approvers import UnknownApprover

    try:
        _app().approvers.set_active(approver_id, active, _actor(), datetime.now(UTC))
    except UnknownApprover as exc:
        _fail(str(exc))
    typer.echo(f"approver {approver_id} {'enabled' if active else 'disabled'}")


@approvers_app.command("disable")
def disable(approver_id: Annotated[str, typer.Argument()]) -> None:
    """Disable an approver: their decisions are refused from now on."""
    _set_active(approver_id, False)


@approvers_app.command("enable")
def enable(approver_id: Annotated[str, typer.Argument()]) -> None:
    """Enable a disabled approver again."""
    _set_active(approver_id, True)


@approvers_app.command("enrol")
def enrol(
    approver_id: Annotated[str, typer.Argument()],
    qr_dir: Annotated[Path, typer.Option(help="Where the QR code PNG is written.")] = Path(".run"),
) -> None:
    """A new one-time-code secret (a lost phone): the old one stops working."""
    try:
        enrolment = _app().codes.enrol(approver_id, _actor(), datetime.now(UTC))
    except LookupError as exc:
        _fail(str(exc))
        return
    show_enrolment(enrolment, qr_dir)


@approvers_app.command("history")
def history(approver_id: Annotated[str, typer.Argument()]) -> None:
    """The approver's change log: who changed what, when."""
    for entry in _app().approvers.history(approver_id):
        typer.echo(f"{entry['at']:%Y-%m-%d %H:%M:%S}  {entry['action']:<9} by {entry['actor']}")


@approvers_app.command("new-key")
def new_key() -> None:
    """Print a fresh key for REFERRALS_APPROVER_SECRET_KEY (keep it in a secret store)."""
    from integrations.approvers.totp import new_key as make

    typer.echo(make())


@approvers_app.command("demo-code")
def demo_code(approver_id: Annotated[str, typer.Argument()]) -> None:
    """The current one-time code of a demo approver (made by `referrals demo`).

    Refused for every other approver: their codes come from their authenticator app.
    """
    app_ = _app()
    if live_stripe(app_.settings):
        _fail("demo codes are never shown with a live Stripe key: real money moves here")
    try:
        typer.echo(app_.codes.demo_code(approver_id, datetime.now(UTC)))
    except (PermissionError, LookupError) as exc:
        _fail(str(exc))
