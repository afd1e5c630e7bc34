"""Runtime settings, read from ``REFERRALS_*`` environment variables (or ``.env``).

Nothing is read at import: call :func:`load_settings`. Keys are ``SecretStr`` so they
never print. With no SendGrid key email goes to the local outbox table, and with no
Stripe key payouts go to the ledger-only rail, which moves no money and says so.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from domain.errors import ConfigError
from domain.inputs import (
    DEFAULT_EARLIEST_DATE,
    DEFAULT_MAX_AMOUNT_MINOR,
    DEFAULT_MAX_FUTURE,
    DEFAULT_MAX_JSON_DEPTH,
    DEFAULT_MAX_RECORD_CHARS,
    InputBounds,
    is_email,
)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = PROJECT_ROOT / "data"
MIN_CONTACT_KEY_CHARS = 32


class Settings(BaseSettings):
    """Everything the referral system reads from its environment."""

    model_config = SettingsConfigDict(
        env_prefix="REFERRALS_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
    )

    database_url: str = Field(
        repr=False,  # a Postgres URL may carry a password
        default=f"sqlite:///{DATA_DIR / 'referrals.db'}",
        description="SQLAlchemy URL of the ledger, e.g. "
        "postgresql+psycopg://user@host:5432/referrals. Default: a SQLite file in data/.",
    )
    program_file: Path = Field(
        default=PROJECT_ROOT / "config" / "program.yaml",
        description="The program rules file (moments, eligibility, rewards, approvals).",
    )
    inbox_dir: Path = Field(
        default=DATA_DIR / "inbox",
        description="Folder of CSV/JSONL CRM and NPS exports read by the file source.",
    )
    sources: tuple[Literal["files", "hubspot", "delighted"], ...] = Field(
        default=("files",),
        description="Which event sources the cycle reads, in order.",
    )
    hubspot_access_token: SecretStr | None = Field(
        default=None,
        description="HubSpot private app access token (CRM read scopes); needed when "
        "'hubspot' is in REFERRALS_SOURCES.",
    )
    hubspot_api_base: str = Field(
        default="https://api.hubapi.com", description="HubSpot API base URL."
    )
    delighted_api_key: SecretStr | None = Field(
        default=None,
        description="Delighted API key; needed when 'delighted' is in REFERRALS_SOURCES.",
    )
    delighted_api_base: str = Field(
        default="https://api.delighted.com", description="Delighted API base URL."
    )
    sendgrid_api_key: SecretStr | None = Field(
        default=None,
        description="SendGrid API key; when unset, email goes to the local outbox table.",
    )
    sendgrid_api_host: str = Field(
        default="https://api.sendgrid.com",
        description="SendGrid API base URL (tests point it at a local fake).",
    )
    sendgrid_from_email: str = Field(
        default="referrals@example.com", description="Sender address of every email."
    )
    sendgrid_from_name: str = Field(default="Referral program", description="Sender name.")
    sendgrid_asm_group_id: int | None = Field(
        default=None,
        description="SendGrid unsubscribe group (asm) id attached to every ask.",
    )
    sendgrid_templates: dict[str, str] = Field(
        default_factory=dict,
        description="SendGrid dynamic template id per template name (ask_<moment>, "
        "notice_<kind>); a name without one is sent as rendered local content.",
    )
    sendgrid_webhook_public_key: str | None = Field(
        default=None,
        description="Base64 ECDSA public key of SendGrid's signed event webhook.",
    )
    stripe_api_key: SecretStr | None = Field(
        default=None,
        description="Stripe secret key; when unset, payouts use the ledger-only rail.",
    )
    stripe_api_base: str | None = Field(
        default=None,
        description="Stripe API base URL override (tests point it at a local fake).",
    )
    stripe_webhook_secret: SecretStr | None = Field(
        default=None, description="Signing secret (whsec_...) of the Stripe webhook endpoint."
    )
    stripe_max_network_retries: int = Field(
        default=3, ge=0, le=10, description="Retries the stripe library makes per call."
    )
    stripe_rate_limit_per_second: float = Field(
        default=25.0,
        gt=0,
        description="Stripe calls per second across all workers (live 100, test 25).",
    )
    stripe_endpoint_rate_limit_per_second: float = Field(
        default=25.0,
        gt=0,
        description=(
            "Stripe calls per second to any one endpoint (e.g. POST /v1/transfers) across "
            "all workers: Stripe's default is 25; raise it when Stripe raised your account's. "
            "At or above stripe_rate_limit_per_second it has no effect."
        ),
    )
    prefect_api_url: str = Field(
        default="http://127.0.0.1:4200/api",
        description="Prefect API the CLI talks to for approvals (PREFECT_API_URL wins).",
    )
    approver_secret_key: SecretStr | None = Field(
        default=None,
        description="Fernet key (urlsafe base64 of 32 bytes) the approvers' one-time-code "
        "secrets are encrypted with in the ledger; from a secret store in production "
        "(`referrals approvers new-key` makes one). Unset: the key in "
        "REFERRALS_APPROVER_KEY_FILE, generated there (owner-only) on first use.",
    )
    approver_key_file: Path = Field(
        default=DATA_DIR / "approver-secret.key",
        description="Where the approvers' secret key is kept when "
        "REFERRALS_APPROVER_SECRET_KEY is unset (the demo's way; readable by its owner only).",
    )
    approval_deployment: str = Field(
        default="payout-approval/payout-approval",
        description="Deployment (flow/deployment) that runs one paused approval per reward.",
    )
    batch_size: int = Field(
        default=1000, ge=1, le=100_000, description="Rows per batch in every stage."
    )
    ingest_page_records: int = Field(
        default=10_000,
        ge=1,
        le=1_000_000,
        description="Rows of a file drop read and stored at a time (each page one "
        "transaction; the drop's cursor moves with the last page). Bounds the memory "
        "ingest needs whatever the drop's size.",
    )
    quarantine_retention_days: int = Field(
        default=30,
        ge=1,
        le=3650,
        description="Days a quarantined record's excerpt (at most 500 characters, emails "
        "and phone numbers masked) is kept; the daily purge-quarantine flow then empties "
        "it. The quarantine row itself, with its source, record, field and reason, stays.",
    )
    input_max_record_chars: int = Field(
        default=DEFAULT_MAX_RECORD_CHARS,
        ge=1_024,
        le=16_777_216,
        description="Longest record the file source reads, in characters (a JSONL line, "
        "a CSV line, and the CSV field size limit). A longer one is quarantined as "
        "record_too_large (or csv_field_too_large), unread; the drop goes on.",
    )
    input_max_json_depth: int = Field(
        default=DEFAULT_MAX_JSON_DEPTH,
        ge=1,
        le=64,
        description="Deepest nesting of arrays and objects in a JSONL record; deeper is "
        "quarantined as json_too_deep before it is parsed.",
    )
    input_max_amount_minor: int = Field(
        default=DEFAULT_MAX_AMOUNT_MINOR,
        ge=1,
        le=10**15,
        description="Largest event amount accepted, in minor units of its currency "
        "(default 1,000,000,000: 10,000,000.00 EUR); above it, amount_too_large.",
    )
    input_earliest_date: date = Field(
        default=DEFAULT_EARLIEST_DATE,
        description="Earliest date or timestamp accepted in an input record (event "
        "times, NPS answers, registrations, customer_since); before it, "
        "date_out_of_range.",
    )
    input_max_future_days: int = Field(
        default=DEFAULT_MAX_FUTURE.days,
        ge=0,
        le=366,
        description="How many days past the time of reading an input date may lie (clock "
        "skew between systems); later, date_out_of_range.",
    )
    registration_contact_key: SecretStr | None = Field(
        default=None,
        description="Secret key (at least 32 characters, e.g. `openssl rand -hex 32`) of "
        "the keyed hash (HMAC-SHA256) a partner registration's contact email is stored "
        "as, so a leaked ledger cannot be matched against a list of addresses. Keep it "
        "stable: a new key hashes the same address differently. When unset, a "
        "registration naming its contact by email is refused (a CRM contact id works).",
    )
    hubspot_registration_partner_property: str | None = Field(
        default=None,
        description="HubSpot company property holding the contact id of the partner who "
        "registered the company (with partner_registration_date, _contact and _evidence "
        "beside it); when set, the cycle reads partner registrations from HubSpot too.",
    )
    detractor_owner_email: str | None = Field(
        default=None,
        description="Who is told of each new detractor (NPS 0-6): one email per "
        "detractor follow-up, to this address (through SendGrid with a key, else the "
        "local outbox). When unset, detractors are only listed, counted as not handed "
        "on, and handed on once an address is set.",
    )
    detractor_hubspot_tasks: bool = Field(
        default=True,
        description="With a HubSpot access token and an owner address set, also create a "
        "HubSpot task on each detractor's contact (the token then needs the "
        "crm.objects.contacts.write scope).",
    )
    detractor_hubspot_owner_id: str | None = Field(
        default=None,
        description="HubSpot owner id the detractor tasks are assigned to; unassigned when unset.",
    )

    @field_validator("detractor_owner_email")
    @classmethod
    def _an_address(cls, value: str | None) -> str | None:
        if value is not None and not is_email(value):
            # The value itself is not repeated: it may be someone's address, mistyped.
            raise ValueError("not an email address")
        return value

    landing_url: str = Field(
        default="https://example.com/",
        pattern=r"^https?://",
        description="Where a click on a referrer's tracked link (GET /r/<code>, `referrals "
        "web serve`) lands: the company's sign-up or landing page, given the code as "
        "?ref=<code>. The links themselves are the program's referral_link_base "
        "(config/program.yaml) followed by the code: point it at this app's /r/ route.",
    )
    visitor_key: SecretStr | None = Field(
        default=None,
        description="Secret key (at least 32 characters, e.g. `openssl rand -hex 32`) of "
        "the keyed hash (HMAC-SHA256) a link visitor's cookie is stored as: the ledger "
        "keeps no IP address, no user agent and no visitor id. Keep it stable (a self-"
        "referral check compares hashes). Unset: the key in REFERRALS_VISITOR_KEY_FILE, "
        "generated there (owner-only) on first use.",
    )
    visitor_key_file: Path = Field(
        default=DATA_DIR / "visitor.key",
        description="Where the link visitors' hash key is kept when REFERRALS_VISITOR_KEY "
        "is unset (the demo's way; readable by its owner only).",
    )
    link_flush_clicks: int = Field(
        default=500,
        ge=1,
        le=100_000,
        description="The link app stores clicks in batches, one transaction each: a batch "
        "is written when it holds this many clicks, or after link_flush_ms, whichever is "
        "first (and on a graceful stop).",
    )
    link_flush_ms: int = Field(
        default=200,
        ge=1,
        le=60_000,
        description="Longest a click waits in the link app's memory before it is stored, "
        "in milliseconds (a hard kill loses at most this much; a graceful stop, nothing).",
    )

    # -- referrer side (issue 15) --------------------------------------------------
    page_key: SecretStr | None = Field(
        default=None,
        description="Secret key (at least 32 characters, e.g. `openssl rand -hex 32`) "
        "that signs the magic links to referrers' pages (GET /p/<token>) and their "
        "reward-choice forms. Changing it ends every link already sent. Unset: the key in "
        "REFERRALS_PAGE_KEY_FILE, generated there (owner-only) on first use.",
    )
    page_key_file: Path = Field(
        default=DATA_DIR / "page.key",
        description="Where the referrers' page key is kept when REFERRALS_PAGE_KEY is "
        "unset (the demo's way; readable by its owner only).",
    )
    page_token_hours: int = Field(
        default=72,
        ge=1,
        le=24 * 90,
        description="How long a magic link to a referrer's page works, in hours; a "
        "referrer whose link expired asks for a fresh one by email at /p/new.",
    )
    public_base_url: str = Field(
        default="http://127.0.0.1:8000",
        pattern=r"^https?://",
        description="Where `referrals web serve` is reached from outside (behind TLS in "
        "production, e.g. https://refer.example.com): the base of the page links in "
        "emails and of the tracked link shown on the page.",
    )

    # -- shards (issue 17) ---------------------------------------------------------
    shards: int = Field(
        default=1,
        ge=1,
        le=256,
        description="Shards the sharded stages split into (sending the asks, sending the "
        "referrer notifications; keyed by a hash of the contact id). 1: the stage runs "
        "in its own flow run as before, no extra runs. N > 1: one run of the run-shard "
        "deployment per shard on the work pool, so N workers share the stage, each "
        "shard done exactly once (claimed with a lease; a lost worker's shard is taken "
        "over after the lease).",
    )
    shard_lease_seconds: int = Field(
        default=900,
        ge=5,
        le=24 * 3600,
        description="How long a worker holds a shard it claimed before another may take it "
        "over, in seconds. Longer than a shard's work takes (bench.shards measures it), "
        "and under 30 minutes for the email stages (a message claimed longer ago is "
        "marked unknown, never sent again).",
    )
    shard_deadline_seconds: int = Field(
        default=3600,
        ge=10,
        le=7 * 24 * 3600,
        description="Longest a sharded stage waits for all its shards to be done before "
        "it fails (the shards keep their state: a retry of the run resumes them).",
    )
    shard_deployment: str = Field(
        default="run-shard/run-shard",
        description="Deployment (flow/deployment) that runs one shard of a stage.",
    )

    @field_validator("registration_contact_key", "visitor_key", "page_key")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_CONTACT_KEY_CHARS:
            raise ValueError(f"must be at least {MIN_CONTACT_KEY_CHARS} characters")
        return value

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        if not value.startswith(("sqlite", "postgresql")):
            raise ValueError("only sqlite:// and postgresql+psycopg:// ledgers are supported")
        return value

    @property
    def input_bounds(self) -> InputBounds:
        """The bounds every file-drop record is checked against."""
        return InputBounds(
            max_record_chars=self.input_max_record_chars,
            max_json_depth=self.input_max_json_depth,
            max_amount_minor=self.input_max_amount_minor,
            earliest_date=self.input_earliest_date,
            max_future=timedelta(days=self.input_max_future_days),
        )

    @property
    def email_backend(self) -> str:
        return "sendgrid" if self.sendgrid_api_key else "outbox"

    @property
    def payout_backend(self) -> str:
        return "stripe" if self.stripe_api_key else "ledger_only"


def load_settings(**overrides: object) -> Settings:
    """Build the settings from the environment, plus explicit ``overrides``.

    Raises:
        ConfigError: a variable has a wrong value; the message names it.
    """
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = [
            f"REFERRALS_{'_'.join(str(p) for p in err['loc']).upper()}: "
            f"{err['msg'].removeprefix('Value error, ')}"
            for err in exc.errors()
        ]
        # One line: it becomes the failed run's state message and the alert's text.
        raise ConfigError("invalid settings: " + "; ".join(lines)) from None
