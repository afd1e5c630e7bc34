"""ledger guards: the database refuses tampering with money rows, on SQLite and
PostgreSQL alike

* what a payout, reversal, reward or conversion was written with (amount, currency,
  destination, reward, referrer, idempotency key...) never changes after insert;
* statuses move only along the moves the code makes: a payout or reversal is written
  pending and settles once; a reward is written holding (or cancelled when it is worth
  nothing) and a paid, rejected or cancelled reward never moves again;
* a new payout pays a payable or approved reward, in its currency, no more than its
  balance; a new reversal takes back from its clawback's succeeded payout, to the same
  destination, no more than was clawed back or paid;
* a reward is approved or rejected only by a recorded approval decision, and a
  decision is recorded only for a reward awaiting approval;
* a settled payout's or reversal's provider reference, and a conversion's card
  fingerprint once known, never change; ``conversion_payments`` is never updated;
* on SQLite, every ``*_minor`` money column holds an integer (``typeof``): SQLite
  would store ``'lots'`` or ``1.5`` in a BIGINT column; PostgreSQL refuses text by type
  (and rounds a fraction cast to BIGINT, which no trigger can see).

Revision ID: 0017
Revises: 0016a
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision = "0017"
down_revision = "0016a"
branch_labels = None
depends_on = None

# Copied here, not imported, so this migration keeps meaning what it meant when the
# code changes. Each list was read from the code's own writes (integrations/ledger).

# Columns written once, at insert. (rewards.amount_minor and currency: revision 0001.)
FIXED: dict[str, tuple[str, ...]] = {
    "payouts": (
        "payout_id",
        "reward_id",
        "attempt",
        "rail",
        "destination",
        "amount_minor",
        "currency",
        "idempotency_key",
        "created_at",
    ),
    "reversals": (
        "reversal_id",
        "clawback_id",
        "reward_id",
        "payout_id",
        "rail",
        "destination",
        "payout_ref",
        "amount_minor",
        "currency",
        "idempotency_key",
        "created_at",
    ),
    "rewards": (
        "reward_id",
        "conversion_id",
        "rule_id",
        "referrer_id",
        "milestone",
        "created_at",
    ),
    # rewarded_at and card_fingerprint are set later; nothing else is.
    "conversions": (
        "conversion_id",
        "source_event",
        "referral_code",
        "referrer_id",
        "referee_account_id",
        "referee_contact_id",
        "referee_email_domain",
        "milestone",
        "occurred_at",
        "amount_minor",
        "currency",
        "created_at",
    ),
}

# The statuses a row may be written with, and the moves it may make afterwards.
# Staying in a status (an UPDATE of other columns) is always allowed.
BORN: dict[str, tuple[str, ...]] = {
    "payouts": ("pending",),
    "reversals": ("pending",),
    # record_rewards: holding; a reward computed at zero is written cancelled.
    "rewards": ("holding", "cancelled"),
}
MOVES: dict[str, tuple[tuple[str, str], ...]] = {
    # record_payout_results: only a pending payout settles, once.
    "payouts": (("pending", "succeeded"), ("pending", "failed")),
    # record_reversal_results: likewise.
    "reversals": (("pending", "succeeded"), ("pending", "unrecovered"), ("pending", "failed")),
    "rewards": (
        # plan_routes (move_rewards from holding or payable)
        ("holding", "payable"),
        ("holding", "awaiting_approval"),
        ("payable", "awaiting_approval"),
        # record_decision
        ("awaiting_approval", "approved"),
        ("awaiting_approval", "rejected"),
        # a payout's success, or a balance netted away entirely (settle_by_netting)
        ("payable", "paid"),
        ("approved", "paid"),
        # a refund, dispute or churn before payout (domain.clawbacks.UNPAID)
        ("holding", "cancelled"),
        ("payable", "cancelled"),
        ("awaiting_approval", "cancelled"),
        ("approved", "cancelled"),
    ),
}
# A move allowed only with evidence: a reward routed to approval while its payout was
# already on its way (a crash, then a stricter rule) is still marked paid when that
# payout succeeds. Money that moved is always recorded; the payout's success is
# written first, in the same transaction (record_payout_results).
MOVES_WITH_EVIDENCE: dict[str, tuple[str, str, str]] = {
    "rewards": (
        "awaiting_approval",
        "paid",
        "EXISTS (SELECT 1 FROM payouts p WHERE p.reward_id = NEW.reward_id"
        " AND p.status = 'succeeded')",
    ),
}
# Settled rows whose provider reference is the proof of what happened at the provider.
SETTLED_REF = ("payouts", "reversals")
NO_UPDATE = ("conversion_payments",)

# Every integer money column (minor units).
MINOR: dict[str, tuple[str, ...]] = {
    "source_events": ("amount_minor",),
    "conversions": ("amount_minor",),
    "conversion_payments": ("amount_minor",),
    "rewards": ("amount_minor",),
    "approval_decisions": ("amount_minor",),
    "payouts": ("amount_minor",),
    "ledger_entries": ("amount_minor",),
    "clawbacks": (
        "payment_minor",
        "refunded_minor",
        "disputed_minor",
        "cancelled_minor",
        "clawed_back_minor",
    ),
    "reversals": ("amount_minor",),
    "reward_payments": ("amount_minor",),
    "reward_terms": ("uncapped_minor",),
}

GUARDED_TABLES = ("payouts", "reversals", "rewards", "conversions")

# Trusted text (no input reaches it): a reward becoming approved without an approving
# decision (or despite a rejecting one), or rejected without a rejecting decision.
UNDECIDED = (
    "((NEW.status = 'approved' AND (NOT EXISTS (SELECT 1 FROM approval_decisions d"
    " WHERE d.reward_id = NEW.reward_id AND d.decision = 'approve')"
    " OR EXISTS (SELECT 1 FROM approval_decisions d"
    " WHERE d.reward_id = NEW.reward_id AND d.decision = 'reject')))"
    " OR (NEW.status = 'rejected' AND NOT EXISTS (SELECT 1 FROM approval_decisions d"
    " WHERE d.reward_id = NEW.reward_id AND d.decision = 'reject')))"
)
# What a new row must agree with, by table (refused when the condition is false): a
# payout pays a payable or approved reward, in its currency, no more than its balance
# (prepare_payouts books any netting first); a reversal takes back from the succeeded
# payout of its clawback's reward, by the payout's rail and destination, no more than
# the clawback took nor than what is left of the payout. {same} is the dialect's
# null-safe equality.
AGREES: dict[str, tuple[str, str]] = {
    "payouts": (
        "EXISTS (SELECT 1 FROM rewards r WHERE r.reward_id = NEW.reward_id"
        " AND r.status IN ('payable', 'approved') AND r.currency = NEW.currency)"
        " AND NEW.amount_minor <= (SELECT coalesce(sum(e.amount_minor), 0)"
        " FROM ledger_entries e WHERE e.reward_id = NEW.reward_id)",
        "payouts: a payout pays a payable or approved reward, in its currency,"
        " no more than its balance",
    ),
    "reversals": (
        "EXISTS (SELECT 1 FROM payouts p JOIN clawbacks c ON c.clawback_id = NEW.clawback_id"
        " WHERE p.payout_id = NEW.payout_id AND p.reward_id = NEW.reward_id"
        " AND c.reward_id = NEW.reward_id AND p.status = 'succeeded'"
        " AND p.currency = NEW.currency AND p.rail = NEW.rail"
        " AND p.destination {same} NEW.destination"
        " AND NEW.amount_minor <= c.clawed_back_minor"
        " AND NEW.amount_minor + (SELECT coalesce(sum(v.amount_minor), 0) FROM reversals v"
        " WHERE v.payout_id = NEW.payout_id AND v.status IN ('pending', 'succeeded'))"
        " <= p.amount_minor)",
        "reversals: a reversal takes back from its clawback's succeeded payout, to the"
        " same destination, no more than was clawed back or paid",
    ),
}
# The decided reward is awaiting approval.
AWAITING = (
    "EXISTS (SELECT 1 FROM rewards r WHERE r.reward_id = NEW.reward_id"
    " AND r.status = 'awaiting_approval')"
)


def _fixed_message(table: str) -> str:
    return f"{table}: {', '.join(FIXED[table])} never change after insert"


# What the refusal of an illegal status move says, per table.
MOVES_SAID = {
    "payouts": "a payout settles once: pending -> succeeded or failed",
    "reversals": "a reversal settles once: pending -> succeeded, unrecovered or failed",
    "rewards": "paid, rejected and cancelled are final; see revision 0017 for the moves",
}


def _pairs_sql(table: str) -> str:
    return ", ".join(f"'{a}>{b}'" for a, b in MOVES[table])


def _illegal_move(table: str, distinct: str = "IS DISTINCT FROM") -> str:
    """The condition (on OLD and NEW) of a status move ``table`` does not allow;
    ``distinct`` is the dialect's null-safe inequality."""
    illegal = (
        f"NEW.status {distinct} OLD.status "
        f"AND (OLD.status || '>' || NEW.status) NOT IN ({_pairs_sql(table)})"
    )
    if table in MOVES_WITH_EVIDENCE:
        before, after, evidence = MOVES_WITH_EVIDENCE[table]
        illegal += f" AND NOT (OLD.status = '{before}' AND NEW.status = '{after}' AND {evidence})"
    return illegal


def _in(values: tuple[str, ...]) -> str:
    return ", ".join(f"'{v}'" for v in values)


# -- SQLite --------------------------------------------------------------------------------


def _sqlite_triggers() -> list[tuple[str, str]]:
    """(name, CREATE TRIGGER statement) of every SQLite guard."""
    made: list[tuple[str, str]] = []

    def add(name: str, when: str, table: str, condition: str, message: str) -> None:
        made.append(
            (
                name,
                f"CREATE TRIGGER {name} {when} ON {table} WHEN {condition} "
                "BEGIN SELECT RAISE(ABORT, '" + message.replace("'", "''") + "'); END",
            )
        )

    for table, columns in FIXED.items():
        changed = " OR ".join(f"NEW.{c} IS NOT OLD.{c}" for c in columns)
        add(
            f"{table}_fixed",
            f"BEFORE UPDATE OF {', '.join(columns)}",
            table,
            changed,
            _fixed_message(table),
        )
    for table, born in BORN.items():
        add(
            f"{table}_born",
            "BEFORE INSERT",
            table,
            f"NEW.status NOT IN ({_in(born)})",
            f"{table}: a row is written {' or '.join(born)}",
        )
    for table in MOVES:
        add(
            f"{table}_status_moves",
            "BEFORE UPDATE OF status",
            table,
            _illegal_move(table, "IS NOT"),
            f"{table}: illegal status move ({MOVES_SAID[table]})",
        )
    # Approved or rejected only by a decision written first, in the same transaction
    # (record_decision); never by an UPDATE alone.
    add(
        "rewards_decided",
        "BEFORE UPDATE OF status",
        "rewards",
        f"NEW.status IS NOT OLD.status AND {UNDECIDED}",
        "rewards: approved or rejected only by a recorded approval decision",
    )
    add(
        "approval_decisions_awaiting",
        "BEFORE INSERT",
        "approval_decisions",
        f"NOT {AWAITING}",
        "approval_decisions: only a reward awaiting approval is decided",
    )
    for table in SETTLED_REF:
        add(
            f"{table}_ref_settled",
            "BEFORE UPDATE OF provider_ref",
            table,
            "OLD.status != 'pending' AND NEW.provider_ref IS NOT OLD.provider_ref",
            f"{table}: a settled row keeps its provider reference",
        )
    add(
        "conversions_card_known",
        "BEFORE UPDATE OF card_fingerprint",
        "conversions",
        "OLD.card_fingerprint IS NOT NULL AND NEW.card_fingerprint IS NOT OLD.card_fingerprint",
        "conversions: a card fingerprint once known never changes",
    )
    for table in NO_UPDATE:
        add(
            f"{table}_no_update",
            "BEFORE UPDATE",
            table,
            "1",
            f"{table} is append-only: UPDATE refused",
        )
    for table, (agrees, message) in AGREES.items():
        add(
            f"{table}_agrees",
            "BEFORE INSERT",
            table,
            f"NOT ({agrees.format(same='IS')})",
            message,
        )
    for table, columns in MINOR.items():
        wrong = " OR ".join(f"typeof(NEW.{c}) NOT IN ('integer', 'null')" for c in columns)
        message = f"{table}: {', '.join(columns)} must be integer minor units"
        add(f"{table}_minor_integer_insert", "BEFORE INSERT", table, wrong, message)
        add(
            f"{table}_minor_integer_update",
            f"BEFORE UPDATE OF {', '.join(columns)}",
            table,
            wrong,
            message,
        )
    return made


# -- PostgreSQL ----------------------------------------------------------------------------

_RAISE = "RAISE EXCEPTION {message} USING ERRCODE = 'integrity_constraint_violation';"


def _pg_raise(message: str, *args: str) -> str:
    quoted = "'" + message.replace("'", "''") + "'"
    return _RAISE.format(message=", ".join([quoted, *args]))


def _pg_guard_body(table: str) -> str:
    """The body of ``<table>_guard()``: every rule above for ``table``, in plpgsql."""
    lines: list[str] = []
    if table in BORN:
        lines += [
            f"IF TG_OP = 'INSERT' AND NEW.status NOT IN ({_in(BORN[table])}) THEN",
            "  "
            + _pg_raise(
                f"{table}: a row is written {' or '.join(BORN[table])}, not %", "NEW.status"
            ),
            "END IF;",
        ]
    if table in AGREES:
        agrees, message = AGREES[table]
        lines += [
            f"IF TG_OP = 'INSERT' AND NOT ({agrees.format(same='IS NOT DISTINCT FROM')}) THEN",
            "  " + _pg_raise(message),
            "END IF;",
        ]
    lines.append("IF TG_OP = 'UPDATE' THEN")
    if table in FIXED:
        new = ", ".join(f"NEW.{c}" for c in FIXED[table])
        old = ", ".join(f"OLD.{c}" for c in FIXED[table])
        lines += [
            f"  IF ROW({new}) IS DISTINCT FROM ROW({old}) THEN",
            "    " + _pg_raise(_fixed_message(table)),
            "  END IF;",
        ]
    if table in MOVES:
        lines += [
            f"  IF {_illegal_move(table)} THEN",
            "    "
            + _pg_raise(
                f"{table}: illegal status move % -> % ({MOVES_SAID[table]})",
                "OLD.status",
                "NEW.status",
            ),
            "  END IF;",
        ]
    if table in SETTLED_REF:
        lines += [
            "  IF OLD.status <> 'pending' AND NEW.provider_ref IS DISTINCT FROM OLD.provider_ref"
            " THEN",
            "    " + _pg_raise(f"{table}: a settled row keeps its provider reference"),
            "  END IF;",
        ]
    if table == "rewards":
        lines += [
            f"  IF NEW.status IS DISTINCT FROM OLD.status AND {UNDECIDED} THEN",
            "    "
            + _pg_raise("rewards: approved or rejected only by a recorded approval decision"),
            "  END IF;",
        ]
    if table == "conversions":
        lines += [
            "  IF OLD.card_fingerprint IS NOT NULL",
            "     AND NEW.card_fingerprint IS DISTINCT FROM OLD.card_fingerprint THEN",
            "    " + _pg_raise("conversions: a card fingerprint once known never changes"),
            "  END IF;",
        ]
    lines.append("END IF;")
    return "\n".join(lines)


def _pg_function(name: str, body: str) -> None:
    op.execute(
        f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$\n"
        f"BEGIN\n{body}\nRETURN NEW;\nEND $$"
    )


def _postgres_triggers() -> None:
    for table in GUARDED_TABLES:
        _pg_function(f"{table}_guard", _pg_guard_body(table))
        op.execute(
            f"CREATE TRIGGER {table}_guard BEFORE INSERT OR UPDATE ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION {table}_guard()"
        )
    refusal = _pg_raise("approval_decisions: only a reward awaiting approval is decided")
    _pg_function("approval_decisions_awaiting", f"IF NOT {AWAITING} THEN\n  {refusal}\nEND IF;")
    op.execute(
        "CREATE TRIGGER approval_decisions_awaiting BEFORE INSERT ON approval_decisions "
        "FOR EACH ROW EXECUTE FUNCTION approval_decisions_awaiting()"
    )
    for table in NO_UPDATE:
        # ledger_refuse() is the function revision 0001 created for every guard.
        op.execute(
            f"CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION ledger_refuse()"
        )
    # No integer triggers: BIGINT columns refuse text and fractions by type.


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for _, create in _sqlite_triggers():
            op.execute(create)
    elif dialect == "postgresql":
        _postgres_triggers()
    else:
        raise RuntimeError(f"no ledger guards written for {dialect}")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for name, _ in _sqlite_triggers():
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
        return
    for table in NO_UPDATE:
        op.execute(f"DROP TRIGGER IF EXISTS {table}_no_update ON {table}")
    op.execute("DROP TRIGGER IF EXISTS approval_decisions_awaiting ON approval_decisions")
    op.execute("DROP FUNCTION IF EXISTS approval_decisions_awaiting()")
    for table in GUARDED_TABLES:
        op.execute(f"DROP TRIGGER IF EXISTS {table}_guard ON {table}")
        op.execute(f"DROP FUNCTION IF EXISTS {table}_guard()")
