"""initial ledger

Revision ID: 0001
Revises:
Create Date: 2026-11-24 00:33:40.193333
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


# Copied here, not imported, so this migration keeps meaning what it meant when the
# schema module changes.
NO_DELETE = (
    "rewards",
    "payouts",
    "conversions",
    "ledger_entries",
    "approval_decisions",
    "provider_events",
)
NO_UPDATE = ("ledger_entries", "approval_decisions", "provider_events")


def _append_only_triggers() -> None:
    """Refuse, in the database itself, what would rewrite money history."""
    dialect = op.get_bind().dialect.name
    guarded = [(t, "DELETE") for t in NO_DELETE] + [(t, "UPDATE") for t in NO_UPDATE]
    if dialect == "sqlite":
        for table, verb in guarded:
            op.execute(
                f"CREATE TRIGGER {table}_no_{verb.lower()} BEFORE {verb} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: {verb} refused'); END"
            )
        op.execute(
            "CREATE TRIGGER rewards_amount_fixed BEFORE UPDATE OF amount_minor, currency "
            "ON rewards WHEN NEW.amount_minor != OLD.amount_minor OR NEW.currency != "
            "OLD.currency BEGIN SELECT RAISE(ABORT, 'a reward amount never changes: "
            "record an adjusting ledger entry'); END"
        )
    elif dialect == "postgresql":
        op.execute(
            """
            CREATE FUNCTION ledger_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
                USING ERRCODE = 'integrity_constraint_violation';
            END $$
            """
        )
        op.execute(
            """
            CREATE FUNCTION rewards_amount_fixed() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              IF NEW.amount_minor <> OLD.amount_minor OR NEW.currency <> OLD.currency THEN
                RAISE EXCEPTION 'a reward amount never changes: record an adjusting ledger entry'
                  USING ERRCODE = 'integrity_constraint_violation';
              END IF;
              RETURN NEW;
            END $$
            """
        )
        for table, verb in guarded:
            op.execute(
                f"CREATE TRIGGER {table}_no_{verb.lower()} BEFORE {verb} ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION ledger_refuse()"
            )
        op.execute(
            "CREATE TRIGGER rewards_amount_fixed BEFORE UPDATE ON rewards "
            "FOR EACH ROW EXECUTE FUNCTION rewards_amount_fixed()"
        )
    else:
        raise RuntimeError(f"no append-only triggers written for {dialect}")


def _drop_append_only_triggers() -> None:
    dialect = op.get_bind().dialect.name
    guarded = [(t, "DELETE") for t in NO_DELETE] + [(t, "UPDATE") for t in NO_UPDATE]
    on = {"postgresql": lambda t: f" ON {t}", "sqlite": lambda t: ""}[dialect]
    for table, verb in guarded:
        op.execute(f"DROP TRIGGER IF EXISTS {table}_no_{verb.lower()}{on(table)}")
    op.execute(f"DROP TRIGGER IF EXISTS rewards_amount_fixed{on('rewards')}")
    if dialect == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS ledger_refuse()")
        op.execute("DROP FUNCTION IF EXISTS rewards_amount_fixed()")


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("account_id", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("domain", sa.String(length=256), nullable=True),
        sa.Column("customer_since", sa.Date(), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_accounts")),
    )
    op.create_table(
        "contacts",
        sa.Column("contact_id", sa.String(length=128), nullable=False),
        sa.Column("account_id", sa.String(length=128), nullable=True),
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("referrer_type", sa.String(length=16), nullable=False),
        sa.Column("opted_out", sa.Boolean(), nullable=False),
        sa.Column("stripe_customer_id", sa.String(length=64), nullable=True),
        sa.Column("stripe_account_id", sa.String(length=64), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint(
            "referrer_type in ('customer', 'partner', 'employee')",
            name=op.f("ck_contacts_referrer_type"),
        ),
        sa.PrimaryKeyConstraint("contact_id", name=op.f("pk_contacts")),
    )
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_contacts_account_id"), ["account_id"], unique=False)

    op.create_table(
        "email_outbox",
        sa.Column("message_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("to_name", sa.String(length=256), nullable=False),
        sa.Column("to_email", sa.String(length=320), nullable=False),
        sa.Column("subject", sa.String(length=512), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("message_id", name=op.f("pk_email_outbox")),
    )
    op.create_table(
        "follow_ups",
        sa.Column("source_event", sa.String(length=330), nullable=False),
        sa.Column("contact_id", sa.String(length=128), nullable=True),
        sa.Column("account_id", sa.String(length=128), nullable=True),
        sa.Column("score", sa.Integer(), nullable=False),
        sa.Column("occurred_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("source_event", name=op.f("pk_follow_ups")),
    )
    op.create_table(
        "moments",
        sa.Column("moment_id", sa.String(length=36), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("contact_id", sa.String(length=128), nullable=False),
        sa.Column("account_id", sa.String(length=128), nullable=True),
        sa.Column("occurred_at", sa.DateTime(), nullable=False),
        sa.Column("source_event", sa.String(length=330), nullable=False),
        sa.Column("detail", sa.String(length=256), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("skip_reason", sa.String(length=64), nullable=True),
        sa.Column("decided_at", sa.DateTime(), nullable=True),
        sa.CheckConstraint("status in ('new', 'asked', 'skipped')", name=op.f("ck_moments_status")),
        sa.PrimaryKeyConstraint("moment_id", name=op.f("pk_moments")),
        sa.UniqueConstraint("source_event", name=op.f("uq_moments_source_event")),
    )
    with op.batch_alter_table("moments", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_moments_contact_id"), ["contact_id"], unique=False)
        batch_op.create_index("ix_moments_status", ["status", "occurred_at"], unique=False)

    op.create_table(
        "notifications",
        sa.Column("notification_id", sa.String(length=36), nullable=False),
        sa.Column("contact_id", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("reward_id", sa.String(length=36), nullable=True),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("provider_ref", sa.String(length=128), nullable=True),
        sa.Column("error", sa.String(length=512), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("sent_at", sa.DateTime(), nullable=True),
        sa.CheckConstraint(
            "status in ('queued', 'sending', 'accepted', 'failed', 'unknown')",
            name=op.f("ck_notifications_status"),
        ),
        sa.PrimaryKeyConstraint("notification_id", name=op.f("pk_notifications")),
    )
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.create_index("ix_notifications_status", ["status"], unique=False)

    op.create_table(
        "provider_events",
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("provider", "event_id", name=op.f("pk_provider_events")),
    )
    op.create_table(
        "quarantine",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("record", sa.String(length=512), nullable=False),
        sa.Column("field", sa.String(length=128), nullable=True),
        sa.Column("reason", sa.String(length=512), nullable=False),
        sa.Column("raw", sa.Text(), nullable=False),
        sa.Column("stage", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_quarantine")),
        sa.UniqueConstraint(
            "source", "record", "stage", name=op.f("uq_quarantine_source_record_stage")
        ),
    )
    op.create_table(
        "referral_codes",
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("contact_id", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("code", name=op.f("pk_referral_codes")),
        sa.UniqueConstraint("contact_id", name=op.f("uq_referral_codes_contact_id")),
    )
    op.create_table(
        "source_cursors",
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("cursor", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("source", name=op.f("pk_source_cursors")),
    )
    op.create_table(
        "source_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("event_id", sa.String(length=256), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("occurred_at", sa.DateTime(), nullable=False),
        sa.Column("account_id", sa.String(length=128), nullable=True),
        sa.Column("contact_id", sa.String(length=128), nullable=True),
        sa.Column("amount_minor", sa.BigInteger(), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=True),
        sa.Column("score", sa.Integer(), nullable=True),
        sa.Column("csat", sa.Integer(), nullable=True),
        sa.Column("priority", sa.String(length=16), nullable=True),
        sa.Column("milestone", sa.String(length=128), nullable=True),
        sa.Column("referral_code", sa.String(length=64), nullable=True),
        sa.Column("deal_id", sa.String(length=128), nullable=True),
        sa.Column("ticket_id", sa.String(length=128), nullable=True),
        sa.Column("referee_email_domain", sa.String(length=256), nullable=True),
        sa.Column("ingested_at", sa.DateTime(), nullable=False),
        sa.Column("detected_at", sa.DateTime(), nullable=True),
        sa.Column("converted_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_source_events")),
        sa.UniqueConstraint("source", "event_id", name=op.f("uq_source_events_source_event_id")),
    )
    with op.batch_alter_table("source_events", schema=None) as batch_op:
        batch_op.create_index("ix_source_events_ticket", ["account_id", "ticket_id"], unique=False)
        batch_op.create_index("ix_source_events_undetected", ["detected_at", "id"], unique=False)

    op.create_table(
        "suppressions",
        sa.Column("contact_id", sa.String(length=128), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("contact_id", name=op.f("pk_suppressions")),
    )
    op.create_table(
        "asks",
        sa.Column("ask_id", sa.String(length=36), nullable=False),
        sa.Column("moment_id", sa.String(length=36), nullable=False),
        sa.Column("contact_id", sa.String(length=128), nullable=False),
        sa.Column("moment_type", sa.String(length=32), nullable=False),
        sa.Column("referral_code", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("provider_ref", sa.String(length=128), nullable=True),
        sa.Column("error", sa.String(length=512), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("sent_at", sa.DateTime(), nullable=True),
        sa.CheckConstraint(
            "status in ('queued', 'sending', 'accepted', 'failed', 'unknown')",
            name=op.f("ck_asks_status"),
        ),
        sa.ForeignKeyConstraint(
            ["moment_id"], ["moments.moment_id"], name=op.f("fk_asks_moment_id_moments")
        ),
        sa.ForeignKeyConstraint(
            ["referral_code"],
            ["referral_codes.code"],
            name=op.f("fk_asks_referral_code_referral_codes"),
        ),
        sa.PrimaryKeyConstraint("ask_id", name=op.f("pk_asks")),
        sa.UniqueConstraint("moment_id", name=op.f("uq_asks_moment_id")),
    )
    with op.batch_alter_table("asks", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_asks_contact_id"), ["contact_id"], unique=False)
        batch_op.create_index("ix_asks_status", ["status"], unique=False)

    op.create_table(
        "conversions",
        sa.Column("conversion_id", sa.String(length=36), nullable=False),
        sa.Column("source_event", sa.String(length=330), nullable=False),
        sa.Column("referral_code", sa.String(length=64), nullable=False),
        sa.Column("referrer_id", sa.String(length=128), nullable=False),
        sa.Column("referee_account_id", sa.String(length=128), nullable=True),
        sa.Column("referee_contact_id", sa.String(length=128), nullable=True),
        sa.Column("referee_email_domain", sa.String(length=256), nullable=True),
        sa.Column("milestone", sa.String(length=16), nullable=False),
        sa.Column("occurred_at", sa.DateTime(), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("rewarded_at", sa.DateTime(), nullable=True),
        sa.CheckConstraint(
            "milestone in ('lead', 'qualified', 'customer')", name=op.f("ck_conversions_milestone")
        ),
        sa.CheckConstraint(
            "amount_minor is null or amount_minor >= 0",
            name=op.f("ck_conversions_amount_not_negative"),
        ),
        sa.ForeignKeyConstraint(
            ["referral_code"],
            ["referral_codes.code"],
            name=op.f("fk_conversions_referral_code_referral_codes"),
        ),
        sa.PrimaryKeyConstraint("conversion_id", name=op.f("pk_conversions")),
        sa.UniqueConstraint("source_event", name=op.f("uq_conversions_source_event")),
    )
    with op.batch_alter_table("conversions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_conversions_referrer_id"), ["referrer_id"], unique=False
        )

    op.create_table(
        "rewards",
        sa.Column("reward_id", sa.String(length=36), nullable=False),
        sa.Column("conversion_id", sa.String(length=36), nullable=False),
        sa.Column("rule_id", sa.String(length=64), nullable=False),
        sa.Column("referrer_id", sa.String(length=128), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("milestone", sa.String(length=16), nullable=False),
        sa.Column("attribution_model", sa.String(length=32), nullable=False),
        sa.Column("explanation", sa.String(length=512), nullable=False),
        sa.Column("flags", sa.String(length=512), nullable=False),
        sa.Column("payable_at", sa.DateTime(), nullable=False),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint(
            "status in ('holding', 'payable', 'awaiting_approval', 'approved', 'rejected',"
            " 'paid', 'cancelled')",
            name=op.f("ck_rewards_status"),
        ),
        sa.CheckConstraint("amount_minor >= 0", name=op.f("ck_rewards_amount_not_negative")),
        sa.CheckConstraint("length(currency) = 3", name=op.f("ck_rewards_currency_iso")),
        sa.ForeignKeyConstraint(
            ["conversion_id"],
            ["conversions.conversion_id"],
            name=op.f("fk_rewards_conversion_id_conversions"),
        ),
        sa.PrimaryKeyConstraint("reward_id", name=op.f("pk_rewards")),
        sa.UniqueConstraint(
            "conversion_id",
            "rule_id",
            "referrer_id",
            name=op.f("uq_rewards_conversion_id_rule_id_referrer_id"),
        ),
    )
    with op.batch_alter_table("rewards", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_rewards_referrer_id"), ["referrer_id"], unique=False)
        batch_op.create_index("ix_rewards_status", ["status", "payable_at"], unique=False)

    op.create_table(
        "approval_decisions",
        sa.Column("decision_id", sa.String(length=36), nullable=False),
        sa.Column("reward_id", sa.String(length=36), nullable=False),
        sa.Column("stage", sa.Integer(), nullable=False),
        sa.Column("decision", sa.String(length=8), nullable=False),
        sa.Column("approver", sa.String(length=256), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("flow_run_id", sa.String(length=64), nullable=True),
        sa.Column("decided_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint(
            "decision in ('approve', 'reject')", name=op.f("ck_approval_decisions_decision")
        ),
        sa.CheckConstraint(
            "amount_minor >= 0", name=op.f("ck_approval_decisions_amount_not_negative")
        ),
        sa.CheckConstraint("length(currency) = 3", name=op.f("ck_approval_decisions_currency_iso")),
        sa.CheckConstraint("stage in (1, 2)", name=op.f("ck_approval_decisions_stage")),
        sa.ForeignKeyConstraint(
            ["reward_id"],
            ["rewards.reward_id"],
            name=op.f("fk_approval_decisions_reward_id_rewards"),
        ),
        sa.PrimaryKeyConstraint("decision_id", name=op.f("pk_approval_decisions")),
        sa.UniqueConstraint(
            "reward_id", "stage", name=op.f("uq_approval_decisions_reward_id_stage")
        ),
    )
    op.create_table(
        "approval_requests",
        sa.Column("request_id", sa.String(length=36), nullable=False),
        sa.Column("reward_id", sa.String(length=36), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("flow_run_id", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("closed_at", sa.DateTime(), nullable=True),
        sa.CheckConstraint(
            "status in ('waiting', 'decided', 'expired')", name=op.f("ck_approval_requests_status")
        ),
        sa.ForeignKeyConstraint(
            ["reward_id"],
            ["rewards.reward_id"],
            name=op.f("fk_approval_requests_reward_id_rewards"),
        ),
        sa.PrimaryKeyConstraint("request_id", name=op.f("pk_approval_requests")),
        sa.UniqueConstraint(
            "reward_id", "attempt", name=op.f("uq_approval_requests_reward_id_attempt")
        ),
    )
    with op.batch_alter_table("approval_requests", schema=None) as batch_op:
        batch_op.create_index(
            "uq_approval_requests_waiting_reward",
            ["reward_id"],
            unique=True,
            sqlite_where=sa.text("status = 'waiting'"),
            postgresql_where=sa.text("status = 'waiting'"),
        )

    op.create_table(
        "ledger_entries",
        sa.Column("entry_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("reward_id", sa.String(length=36), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("ref", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint(
            "kind in ('accrued', 'adjusted', 'cancelled', 'paid', 'reversed')",
            name=op.f("ck_ledger_entries_kind"),
        ),
        sa.CheckConstraint("length(currency) = 3", name=op.f("ck_ledger_entries_currency_iso")),
        sa.ForeignKeyConstraint(
            ["reward_id"], ["rewards.reward_id"], name=op.f("fk_ledger_entries_reward_id_rewards")
        ),
        sa.PrimaryKeyConstraint("entry_id", name=op.f("pk_ledger_entries")),
        sa.UniqueConstraint(
            "reward_id", "kind", "ref", name=op.f("uq_ledger_entries_reward_id_kind_ref")
        ),
    )
    with op.batch_alter_table("ledger_entries", schema=None) as batch_op:
        batch_op.create_index("ix_ledger_entries_reward", ["reward_id"], unique=False)

    op.create_table(
        "payouts",
        sa.Column("payout_id", sa.String(length=36), nullable=False),
        sa.Column("reward_id", sa.String(length=36), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("rail", sa.String(length=32), nullable=False),
        sa.Column("destination", sa.String(length=64), nullable=True),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("idempotency_key", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("provider_ref", sa.String(length=128), nullable=True),
        sa.Column("error", sa.String(length=512), nullable=True),
        sa.Column("tries", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint(
            "status in ('pending', 'succeeded', 'failed')", name=op.f("ck_payouts_status")
        ),
        sa.CheckConstraint("amount_minor > 0", name=op.f("ck_payouts_amount_positive")),
        sa.CheckConstraint("length(currency) = 3", name=op.f("ck_payouts_currency_iso")),
        sa.ForeignKeyConstraint(
            ["reward_id"], ["rewards.reward_id"], name=op.f("fk_payouts_reward_id_rewards")
        ),
        sa.PrimaryKeyConstraint("payout_id", name=op.f("pk_payouts")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_payouts_idempotency_key")),
        sa.UniqueConstraint("reward_id", "attempt", name=op.f("uq_payouts_reward_id_attempt")),
    )
    with op.batch_alter_table("payouts", schema=None) as batch_op:
        batch_op.create_index("ix_payouts_status", ["status"], unique=False)
        batch_op.create_index(
            "uq_payouts_live_reward",
            ["reward_id"],
            unique=True,
            sqlite_where=sa.text("status != 'failed'"),
            postgresql_where=sa.text("status != 'failed'"),
        )

    _append_only_triggers()


def downgrade() -> None:
    _drop_append_only_triggers()
    with op.batch_alter_table("payouts", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_payouts_live_reward",
            sqlite_where=sa.text("status != 'failed'"),
            postgresql_where=sa.text("status != 'failed'"),
        )
        batch_op.drop_index("ix_payouts_status")

    op.drop_table("payouts")
    with op.batch_alter_table("ledger_entries", schema=None) as batch_op:
        batch_op.drop_index("ix_ledger_entries_reward")

    op.drop_table("ledger_entries")
    with op.batch_alter_table("approval_requests", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_approval_requests_waiting_reward",
            sqlite_where=sa.text("status = 'waiting'"),
            postgresql_where=sa.text("status = 'waiting'"),
        )

    op.drop_table("approval_requests")
    op.drop_table("approval_decisions")
    with op.batch_alter_table("rewards", schema=None) as batch_op:
        batch_op.drop_index("ix_rewards_status")
        batch_op.drop_index(batch_op.f("ix_rewards_referrer_id"))

    op.drop_table("rewards")
    with op.batch_alter_table("conversions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_conversions_referrer_id"))

    op.drop_table("conversions")
    with op.batch_alter_table("asks", schema=None) as batch_op:
        batch_op.drop_index("ix_asks_status")
        batch_op.drop_index(batch_op.f("ix_asks_contact_id"))

    op.drop_table("asks")
    op.drop_table("suppressions")
    with op.batch_alter_table("source_events", schema=None) as batch_op:
        batch_op.drop_index("ix_source_events_undetected")
        batch_op.drop_index("ix_source_events_ticket")

    op.drop_table("source_events")
    op.drop_table("source_cursors")
    op.drop_table("referral_codes")
    op.drop_table("quarantine")
    op.drop_table("provider_events")
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.drop_index("ix_notifications_status")

    op.drop_table("notifications")
    with op.batch_alter_table("moments", schema=None) as batch_op:
        batch_op.drop_index("ix_moments_status")
        batch_op.drop_index(batch_op.f("ix_moments_contact_id"))

    op.drop_table("moments")
    op.drop_table("follow_ups")
    op.drop_table("email_outbox")
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_contacts_account_id"))

    op.drop_table("contacts")
    op.drop_table("accounts")
