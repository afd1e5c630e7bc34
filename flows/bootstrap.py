"""The composition root: the one place that picks real or local adapters.

Every flow asks :func:`app` for its adapters. Settings decide: no SendGrid key, email
goes to the local outbox; no Stripe key, payouts go to the ledger-only rail. Tests can
put their own :class:`App` in place with :func:`use_app`.
"""

from __future__ import annotations

import functools
import inspect
import logging
import typing
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ParamSpec, TypeVar, cast

from sqlalchemy import Engine, make_url
from sqlalchemy.exc import ArgumentError, InterfaceError, NoSuchModuleError, OperationalError

from config.program import load_program
from config.settings import Settings, load_settings
from domain.clawbacks import PaymentRecords
from domain.connect import Onboarding
from domain.detractors import CrmTasks
from domain.errors import ConfigError
from domain.models import PayoutRailKind
from domain.ports import (
    ApprovalRuns,
    ConnectOnboarding,
    EmailSender,
    EventSource,
    PaymentCards,
    PaymentRail,
    RefereeDiscounts,
)
from domain.program import Program
from domain.shards import ShardRuns
from integrations.approvals.prefect_runs import PrefectApprovalRuns
from integrations.approvers.totp import TotpCodes, new_key
from integrations.email.outbox import OutboxEmailSender
from integrations.ledger.approvers import SqlApprovers
from integrations.ledger.engine import make_engine
from integrations.ledger.migrate import upgrade
from integrations.ledger.sql import SqlLedger
from integrations.local_secrets import read_or_make_secret
from integrations.payments.ledger_only import LedgerOnlyRail
from integrations.payments.ledger_only_discounts import LedgerOnlyDiscounts
from integrations.prefect_limits import StripeRateLimits
from integrations.prefect_shards import PrefectShardRuns
from integrations.sources.files import FileSource
from integrations.web.keys import page_key
from integrations.web.magic import MagicLinks, PageLinks

if TYPE_CHECKING:
    # Imports the ``stripe`` library: only with a Stripe key (see ``_stripe_readers``).
    from integrations.payments.stripe_events import StripeEventFeed
    from integrations.web.app import LinkApp


@dataclass(frozen=True)
class App:
    """Everything the flows need, built once per process."""

    settings: Settings
    program: Program
    ledger: SqlLedger
    sources: tuple[EventSource, ...]
    email: EmailSender
    rails: dict[PayoutRailKind, PaymentRail]
    approvals: ApprovalRuns
    # Who may decide on rewards, and the one-time codes that prove it.
    approvers: SqlApprovers
    codes: TotpCodes
    # With a Stripe key: the events feed (polling fallback of the webhook) and the
    # reader the reconciliation compares the ledger with.
    stripe_events: StripeEventFeed | None = None
    payment_records: PaymentRecords | None = None
    # With a Stripe key: the charges read for the card behind a payment (fraud checks).
    cards: PaymentCards | None = None
    # The referee's discount (two-sided rewards): Stripe promotion codes with a key,
    # ledger-only records without; None publishes nothing.
    discounts: RefereeDiscounts | None = None
    # With HubSpot and a detractor owner: the tasks detractors are handed on as.
    detractor_tasks: CrmTasks | None = None
    # The magic link to each referrer's page, carried by every ask and notice.
    page_links: PageLinks | None = None

    # referrer side (issue 15)
    # With a Stripe key: Connect onboarding for referrers with no payable rail.
    connect: ConnectOnboarding | None = None

    # Where a sharded stage's shards run (issue 17): runs of the run-shard deployment;
    # used only with REFERRALS_SHARDS > 1.
    shard_runs: ShardRuns | None = None

    def describe(self) -> dict[str, str]:
        """Which backend serves each port (safe to log: no secrets)."""
        return {
            "ledger": self.ledger.engine.url.render_as_string(hide_password=True),
            "sources": ",".join(s.name for s in self.sources),
            "email": self.email.name,
            "payouts": ",".join(k.value for k in self.rails),
        }


def build_app(settings: Settings | None = None) -> App:
    """Build the adapters that ``settings`` ask for, migrating the ledger first.

    Raises:
        ConfigError: a setting, the program file or the environment they name is
            wrong; the message is one line naming the setting or file and what is
            wrong (it is the failed run's state message and the alert's text).
    """
    settings = settings or load_settings()
    program = load_program(settings.program_file)
    engine = ledger_engine(settings)
    upgrade(engine)
    ledger = SqlLedger(engine)
    approvers, codes = approver_adapters(engine, settings)
    feed, records = _stripe_readers(settings)
    return App(
        settings=settings,
        program=program,
        ledger=ledger,
        sources=_sources(settings),
        email=_email(settings, ledger),
        rails=_rails(settings),
        approvals=PrefectApprovalRuns(settings.approval_deployment),
        approvers=approvers,
        codes=codes,
        stripe_events=feed,
        payment_records=records,
        cards=records if isinstance(records, PaymentCards) else None,
        discounts=_discounts(settings),
        detractor_tasks=_detractor_tasks(settings),
        page_links=PageLinks(magic_links(settings), settings.public_base_url),
        connect=_connect(settings),
        shard_runs=PrefectShardRuns(settings.shard_deployment),
    )


def web_app(settings: Settings | None = None) -> LinkApp:
    """The referrers' web app (``referrals web serve``): tracked links, referrers'
    pages, and any routes added below. Each uvicorn worker builds its own."""
    from starlette.routing import BaseRoute

    from integrations.web.app import create_app
    from integrations.web.keys import visitor_key
    from integrations.web.pages import ReferrerPages

    settings = settings or load_settings()
    program = load_program(settings.program_file)
    ledger = SqlLedger(make_engine(settings.database_url))
    key = visitor_key(settings.visitor_key, settings.visitor_key_file)
    pages = ReferrerPages(
        ledger.referrer_side,
        magic_links(settings),
        program,
        settings.public_base_url,
        payout_rail_kinds(settings),
        key,
    )
    # The one place more routes join the app: Stripe Connect onboarding, with a key.
    extra_routes: list[BaseRoute] = []
    connect = _connect(settings, throttled=False)
    if connect is not None:
        from datetime import UTC, datetime

        from integrations.web.connect import connect_routes

        extra_routes += connect_routes(
            referrer_of=magic_links(settings).referrer_of,
            onboarding=Onboarding(ledger.connect, connect, lambda: datetime.now(UTC)),
            public_base_url=settings.public_base_url,
        )
    return create_app(
        ledger.links,
        landing=settings.landing_url,
        visitor_key=key,
        flush_clicks=settings.link_flush_clicks,
        flush_seconds=settings.link_flush_ms / 1000,
        pages=pages,
        extra_routes=extra_routes,
    )


def payout_rail_kinds(settings: Settings) -> frozenset[PayoutRailKind]:
    """The payment rails :func:`build_app` configures, by kind (without building them)."""
    if settings.stripe_api_key is None:
        return frozenset({PayoutRailKind.LEDGER_ONLY})
    return frozenset({PayoutRailKind.STRIPE_TRANSFER, PayoutRailKind.STRIPE_BALANCE})


def magic_links(settings: Settings) -> MagicLinks:
    """The signer of referrers' page links (the key from settings or its key file)."""
    key = page_key(settings.page_key, settings.page_key_file)
    return MagicLinks(key, settings.page_token_hours * 3600)


def ledger_engine(settings: Settings) -> Engine:
    """An engine on ``settings.database_url`` that has connected once.

    Raises:
        ConfigError: the URL is not one SQLAlchemy can use, or its database cannot be
            reached; named as REFERRALS_DATABASE_URL, its password hidden.
    """
    variable = "REFERRALS_DATABASE_URL"
    try:
        shown = make_url(settings.database_url).render_as_string(hide_password=True)
    except ArgumentError:
        raise ConfigError(
            f"{variable} is not a database URL (expected dialect+driver://user@host/name)"
        ) from None
    try:
        engine = make_engine(settings.database_url)
    except NoSuchModuleError as exc:
        raise ConfigError(f"{variable} ({shown}) names an unknown database driver: {exc}") from None
    except OSError as exc:
        raise ConfigError(
            f"{variable} ({shown}): cannot create the database's folder: {exc.strerror}"
        ) from None
    try:
        with engine.connect():
            pass
    except (OperationalError, InterfaceError) as exc:
        engine.dispose()
        reason = str(exc.orig or exc).strip().splitlines()[0]
        raise ConfigError(f"{variable} ({shown}) cannot be reached: {reason}") from None
    return engine


def inbox_dir(settings: Settings) -> Path:
    """The inbox folder of the file source, made if missing.

    Raises:
        ConfigError: the path is not a folder or cannot be made; named as
            REFERRALS_INBOX_DIR.
    """
    path = settings.inbox_dir
    if path.exists() and not path.is_dir():
        raise ConfigError(f"REFERRALS_INBOX_DIR ({path}) is not a folder: it is a file")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        # e.g. a parent is a file, or the folder is not writable by this user.
        raise ConfigError(f"REFERRALS_INBOX_DIR ({path}) cannot be made: {exc.strerror}") from None
    return path


def approver_adapters(engine: Engine, settings: Settings) -> tuple[SqlApprovers, TotpCodes]:
    """The approvers' store on the ledger's engine, and their one-time codes."""
    approvers = SqlApprovers(engine)
    return approvers, TotpCodes(approvers, approver_key(settings))


def approver_key(settings: Settings) -> str:
    """The key the approvers' secrets are encrypted with: from settings, or else from
    the key file, made (readable by its owner only) the first time it is needed."""
    if settings.approver_secret_key is not None:
        return settings.approver_secret_key.get_secret_value()
    return read_or_make_secret(settings.approver_key_file, new_key)


def _sources(settings: Settings) -> tuple[EventSource, ...]:
    sources: list[EventSource] = []
    for name in settings.sources:
        if name == "files":
            sources.append(FileSource(inbox_dir(settings), settings.input_bounds))
        elif name == "hubspot":
            if settings.hubspot_access_token is None:
                raise ConfigError(
                    "REFERRALS_HUBSPOT_ACCESS_TOKEN is not set (needed by the 'hubspot' source)"
                )
            from integrations.sources.hubspot import HubSpotMapping, HubSpotSource

            sources.append(
                HubSpotSource(
                    settings.hubspot_access_token.get_secret_value(),
                    settings.hubspot_api_base,
                    mapping=HubSpotMapping(
                        registration_partner_property=settings.hubspot_registration_partner_property
                    ),
                )
            )
        elif name == "delighted":
            if settings.delighted_api_key is None:
                raise ConfigError(
                    "REFERRALS_DELIGHTED_API_KEY is not set (needed by the 'delighted' source)"
                )
            from integrations.sources.delighted import DelightedSource

            sources.append(
                DelightedSource(
                    settings.delighted_api_key.get_secret_value(), settings.delighted_api_base
                )
            )
    return tuple(sources)


def _detractor_tasks(settings: Settings) -> CrmTasks | None:
    """HubSpot tasks for detractors: with a token, an owner address, and not turned off."""
    token = settings.hubspot_access_token
    if token is None or settings.detractor_owner_email is None:
        return None
    if not settings.detractor_hubspot_tasks:
        return None
    from integrations.crm.hubspot_tasks import HubSpotTasks

    return HubSpotTasks(
        token.get_secret_value(),
        settings.hubspot_api_base,
        owner_id=settings.detractor_hubspot_owner_id,
    )


def _email(settings: Settings, ledger: SqlLedger) -> EmailSender:
    if settings.sendgrid_api_key is None:
        return OutboxEmailSender(ledger)
    from integrations.email.sendgrid_sender import SendGridEmailSender

    return SendGridEmailSender(
        api_key=settings.sendgrid_api_key.get_secret_value(),
        api_host=settings.sendgrid_api_host,
        from_email=settings.sendgrid_from_email,
        from_name=settings.sendgrid_from_name,
        templates=settings.sendgrid_templates,
        asm_group_id=settings.sendgrid_asm_group_id,
    )


def _rails(settings: Settings) -> dict[PayoutRailKind, PaymentRail]:
    if settings.stripe_api_key is None:
        return {PayoutRailKind.LEDGER_ONLY: LedgerOnlyRail()}
    from integrations.payments.stripe_rail import (
        StripeBalanceRail,
        StripeTransferRail,
        build_stripe_client,
    )

    client = build_stripe_client(
        settings.stripe_api_key.get_secret_value(),
        settings.stripe_api_base,
        settings.stripe_max_network_retries,
    )
    # One limit for both rails: Stripe counts every request of the account.
    throttle = _stripe_throttle(settings)
    return {
        PayoutRailKind.STRIPE_TRANSFER: StripeTransferRail(client, throttle=throttle),
        PayoutRailKind.STRIPE_BALANCE: StripeBalanceRail(client, throttle=throttle),
    }


def _connect(settings: Settings, *, throttled: bool = True) -> ConnectOnboarding | None:
    """The Connect adapter with a Stripe key. The web app's is not ``throttled``: the
    shared limits are Prefect's, and a page request must not wait on (or fail with) the
    Prefect server; a referrer's few onboarding requests are far under Stripe's rates."""
    if settings.stripe_api_key is None:
        return None
    from integrations.payments.stripe_connect import StripeConnect
    from integrations.payments.stripe_rail import build_stripe_client

    client = build_stripe_client(
        settings.stripe_api_key.get_secret_value(),
        settings.stripe_api_base,
        settings.stripe_max_network_retries,
    )
    return StripeConnect(client, throttle=_stripe_throttle(settings) if throttled else None)


def connect_onboarding(app: App) -> Onboarding | None:
    """The onboarding use case the web app's ``/p/<token>/connect`` routes run
    (:func:`integrations.web.connect.connect_routes`); ``None`` without a Stripe key."""
    if app.connect is None:
        return None
    from datetime import UTC, datetime

    return Onboarding(app.ledger.connect, app.connect, lambda: datetime.now(UTC))


def _discounts(settings: Settings) -> RefereeDiscounts:
    if settings.stripe_api_key is None:
        return LedgerOnlyDiscounts()
    from integrations.payments.stripe_discounts import StripeDiscounts
    from integrations.payments.stripe_rail import build_stripe_client

    client = build_stripe_client(
        settings.stripe_api_key.get_secret_value(),
        settings.stripe_api_base,
        settings.stripe_max_network_retries,
    )
    throttle = _stripe_throttle(settings)
    return StripeDiscounts(client, throttle=throttle)


def _stripe_readers(settings: Settings) -> tuple[StripeEventFeed | None, PaymentRecords | None]:
    if settings.stripe_api_key is None:
        return None, None
    from integrations.payments.stripe_events import DEFAULT_TYPES, StripeEventFeed
    from integrations.payments.stripe_rail import build_stripe_client
    from integrations.payments.stripe_reconcile import LOSS_EVENT_TYPES, StripeRecords

    client = build_stripe_client(
        settings.stripe_api_key.get_secret_value(),
        settings.stripe_api_base,
        settings.stripe_max_network_retries,
    )
    throttle = _stripe_throttle(settings)
    feed = StripeEventFeed(client, types=(*DEFAULT_TYPES, *LOSS_EVENT_TYPES), throttle=throttle)
    return feed, StripeRecords(client, throttle=throttle)


def _stripe_throttle(settings: Settings) -> StripeRateLimits:
    return StripeRateLimits(
        "stripe-api",
        settings.stripe_rate_limit_per_second,
        settings.stripe_endpoint_rate_limit_per_second,
    )


class TracebackOnce(logging.Filter):
    """Lets a failure's traceback through once per run; later records keep their line.

    Prefect logs a failing run's exception with its traceback up to three times: the
    task engine ("Task run failed with exception"), the flow engine ("Encountered
    exception during execution") and, in a worker's flow run process, ``run_flow``'s
    error logger ("Engine execution exited with unexpected exception"). The first is
    kept; the others lose the traceback and say where it is.
    """

    def __init__(self) -> None:
        super().__init__()
        # Strong references (exceptions take no weak ones), a few: runs fail rarely.
        self._seen: deque[tuple[object, BaseException]] = deque(maxlen=32)

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.exc_info or record.exc_info[1] is None:
            return True
        exc = record.exc_info[1]
        if type(exc).__name__ == "FailedRun":
            # Raised by the engine for a run whose flow returned a Failed state (see
            # one_line_failure): its traceback shows only the engine; the cause is
            # logged already, and the line is the state's message.
            record.exc_info = None
            record.exc_text = None
            record.msg = f"{record.msg} (FailedRun: {exc})"
            return True
        run = getattr(record, "flow_run_id", None)
        if any(seen is exc or _same_failure(seen, exc) for key, seen in self._seen if key == run):
            record.exc_info = None
            record.exc_text = None
            record.msg = f"{record.msg} ({type(exc).__name__}: traceback logged above)"
        else:
            self._seen.append((run, exc))
        return True


def _same_failure(one: BaseException, other: BaseException) -> bool:
    """Whether ``other`` is ``one`` read back from a task's state (a copy)."""
    try:
        return type(one) is type(other) and bool(one.args == other.args)
    except Exception:  # odd args (e.g. arrays) must never break logging
        return False


def log_tracebacks_once() -> None:
    """Install :class:`TracebackOnce` on Prefect's run loggers (once per process)."""
    for name in ("prefect.flow_runs", "prefect.task_runs"):
        logger = logging.getLogger(name)
        if not any(isinstance(existing, TracebackOnce) for existing in logger.filters):
            logger.addFilter(_TRACEBACK_ONCE)


P = ParamSpec("P")
R = TypeVar("R")

#: The key of the artifact a flow that cannot start leaves (latest version per key).
STARTUP_ERROR_ARTIFACT = "startup-error"


def one_line_failure(fn: Callable[P, R]) -> Callable[P, R]:
    """A flow that cannot start fails with its cause in one line, and says so.

    A :class:`ConfigError` (a setting, a file, a database that cannot be reached) ends the
    run in a Failed state whose message is the error's one line, and so the failure
    alert's text (Prefect's own message would prefix it with "Flow run encountered an
    exception"); the line is logged at ERROR, its traceback at DEBUG, and kept as the
    ``startup-error`` artifact, where on-call looks first. Put it under ``@flow``.

    The wrapper carries the flow's signature with its annotations evaluated in the flow's
    own module: Prefect builds the parameters' model from the signature, and the flow
    modules' ``from __future__ import annotations`` strings (``datetime | None``) would
    otherwise be resolved in this module, where those names are not.
    """

    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except ConfigError as exc:
            line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            from prefect.logging import get_run_logger
            from prefect.states import Failed

            log = get_run_logger()
            log.error("cannot start: %s", line)
            log.debug("cannot start: the traceback", exc_info=True)
            _startup_artifact(line)
            # Prefect makes a returned State the run's final state.
            return cast(R, Failed(message=line))

    run.__signature__ = inspect.signature(fn, eval_str=True)  # type: ignore[attr-defined]
    run.__annotations__ = typing.get_type_hints(fn)
    return run


def _startup_artifact(line: str) -> None:
    try:
        from prefect.artifacts import create_markdown_artifact

        create_markdown_artifact(
            key=STARTUP_ERROR_ARTIFACT,
            markdown=f"## The run could not start\n\n{line}\n",
            description="Why the last run of this flow could not start",
        )
    except Exception as exc:  # the API down too: the state and the log still say it
        logging.getLogger(__name__).warning("startup-error artifact not written: %s", exc)


_TRACEBACK_ONCE = TracebackOnce()
# Every flow imports this module before it runs, so its failures log one traceback.
log_tracebacks_once()

_current: App | None = None


def app() -> App:
    """The process's adapters, built on first use."""
    global _current
    if _current is None:
        _current = build_app()
    return _current


@contextmanager
def use_app(replacement: App) -> Iterator[App]:
    """Run flows with ``replacement`` as the adapters (tests, the demo)."""
    global _current
    previous, _current = _current, replacement
    try:
        yield replacement
    finally:
        _current = previous
