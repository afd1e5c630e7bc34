"""An approver's activation and secret change only with their change-log row.

Revision 0018 fixed who an approver is and their limit, but ``active`` and the enrolled
secret could still be flipped by a direct UPDATE that left no trace in
``approver_events``: anyone with write access to the ledger could re-enable a disabled
approver silently. Now the database refuses such an UPDATE unless an ``approver_events``
row of the matching action (``enabled``, ``disabled``, ``enrolled``) exists for that
approver at the row's new ``updated_at``, and ``updated_at`` never moves back (so an old
log row cannot be reused). The log is append-only (0018), so every change leaves a row
naming the operating-system user and host that made it.

Revision ID: 0025
Revises: 0024
"""

from __future__ import annotations

from alembic import op

revision = "0025"
down_revision = "0024"
branch_labels = None
depends_on = None

# Plain literals (no formatting): the message and the wanted action are spelt out in both.
SQLITE_TRIGGER = """
CREATE TRIGGER approvers_change_logged BEFORE UPDATE ON approvers
WHEN NEW.active IS NOT OLD.active OR NEW.secret_encrypted IS NOT OLD.secret_encrypted
BEGIN
    SELECT RAISE(ABORT, 'an approver''s activation or secret changes only with its
approver_events row (referrals approvers enable, disable or enrol)')
    WHERE NEW.updated_at < OLD.updated_at OR NOT EXISTS (
        SELECT 1 FROM approver_events e
        WHERE e.approver_id = NEW.approver_id AND e.at = NEW.updated_at
          AND e.action = CASE
              WHEN NEW.secret_encrypted IS NOT OLD.secret_encrypted THEN 'enrolled'
              WHEN NEW.active THEN 'enabled'
              ELSE 'disabled' END
    );
END
"""

POSTGRES_FUNCTION = """
CREATE FUNCTION approvers_change_logged() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE wanted text;
BEGIN
    IF NEW.active IS DISTINCT FROM OLD.active
       OR NEW.secret_encrypted IS DISTINCT FROM OLD.secret_encrypted THEN
        wanted := CASE
            WHEN NEW.secret_encrypted IS DISTINCT FROM OLD.secret_encrypted THEN 'enrolled'
            WHEN NEW.active THEN 'enabled'
            ELSE 'disabled' END;
        IF NEW.updated_at < OLD.updated_at OR NOT EXISTS (
            SELECT 1 FROM approver_events e
            WHERE e.approver_id = NEW.approver_id AND e.at = NEW.updated_at
              AND e.action = wanted
        ) THEN
            RAISE EXCEPTION 'an approver''s activation or secret changes only with its '
                'approver_events row (referrals approvers enable, disable or enrol)';
        END IF;
    END IF;
    RETURN NEW;
END $$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute(SQLITE_TRIGGER)
    else:
        op.execute(POSTGRES_FUNCTION)
        op.execute(
            "CREATE TRIGGER approvers_change_logged BEFORE UPDATE ON approvers "
            "FOR EACH ROW EXECUTE FUNCTION approvers_change_logged()"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS approvers_change_logged")
    else:
        op.execute("DROP TRIGGER IF EXISTS approvers_change_logged ON approvers")
        op.execute("DROP FUNCTION IF EXISTS approvers_change_logged()")
