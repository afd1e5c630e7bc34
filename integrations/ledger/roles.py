"""Least-privilege PostgreSQL roles for the ledger.

Two roles share the ledger's database:

* the **owner** owns the schema and its tables: it runs the migrations (``referrals``
  never needs it otherwise);
* the **application** role is what ``REFERRALS_DATABASE_URL`` names in production: it
  reads, inserts and updates rows (the guards decide which updates) and may delete rows
  only from the tables in :data:`DELETES`. Not owning the tables, it cannot ``ALTER``,
  ``DROP`` or ``TRUNCATE`` them, drop or disable their triggers, nor (not being a
  superuser) ``SET session_replication_role = replica``: the guards hold against the
  application itself.

:func:`grant_app_role` gives the application role exactly that, on every table the
migrations made; run it as the owner after every upgrade (``python -m
integrations.ledger.roles <app role>`` does both, with ``REFERRALS_DATABASE_URL``
naming the owner). See the README's "PostgreSQL roles".
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from sqlalchemy import Connection, Engine, text

# Tables the application deletes rows from: none (money is append-only, and nothing
# else is deleted). A purge that deletes rows adds its table here.
DELETES: tuple[str, ...] = ()
# Alembic's bookkeeping: the application reads the revision, only the owner writes it.
READ_ONLY: tuple[str, ...] = ("alembic_version",)


class UnsafeAppRoleError(ValueError):
    """The role named as the application's could lift the ledger's guards."""


def _quote(conn: Connection, name: str) -> str:
    return conn.dialect.identifier_preparer.quote(name)


def _refuse_unsafe(conn: Connection, role: str, schema: str) -> None:
    """Refuse a role that is a superuser, owns ledger tables or is a member of an owner:
    each of those can drop or disable the guards."""
    found = conn.execute(
        text("SELECT rolsuper FROM pg_roles WHERE rolname = :role"), {"role": role}
    ).first()
    if found is None:
        raise UnsafeAppRoleError(f"no role {role!r}: create it first (see the README)")
    if found.rolsuper:
        raise UnsafeAppRoleError(f"{role!r} is a superuser: it could disable the guards")
    owners = conn.execute(
        text(
            "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = :schema"
            " UNION SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = :schema"
        ),
        {"schema": schema},
    ).scalars()
    for owner in owners:
        if (
            owner == role
            or conn.execute(
                text("SELECT pg_has_role(:role, :owner, 'USAGE')"),
                {"role": role, "owner": owner},
            ).scalar()
        ):
            raise UnsafeAppRoleError(
                f"{role!r} owns (or acts as the owner of) the ledger's schema {schema!r}"
            )


def grant_app_role(
    engine: Engine,
    role: str,
    *,
    schema: str | None = None,
    deletes: Sequence[str] = DELETES,
) -> None:
    """Give ``role`` what the application needs in the ledger's schema, and nothing more.

    Idempotent: the role's table privileges are revoked and granted again, so a second
    run after a migration covers the new tables and takes back anything granted by hand.

    Args:
        engine: a connection as the owner (the role that ran the migrations).
        role: the application's role, existing, not a superuser nor an owner.
        schema: the ledger's schema; default the connection's current schema.
        deletes: tables the application may delete rows from.

    Raises:
        UnsafeAppRoleError: ``role`` could lift the guards, or does not exist.
        ValueError: the engine is not PostgreSQL.
    """
    if engine.dialect.name != "postgresql":
        raise ValueError("roles exist on PostgreSQL only; SQLite has no users")
    with engine.begin() as conn:
        schema = schema or str(conn.execute(text("SELECT current_schema()")).scalar_one())
        _refuse_unsafe(conn, role, schema)
        who, where = _quote(conn, role), _quote(conn, schema)
        conn.execute(text(f"GRANT USAGE ON SCHEMA {where} TO {who}"))
        conn.execute(text(f"REVOKE ALL ON ALL TABLES IN SCHEMA {where} FROM {who}"))
        conn.execute(text(f"GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA {where} TO {who}"))
        tables = set(
            conn.execute(
                text("SELECT tablename FROM pg_tables WHERE schemaname = :schema"),
                {"schema": schema},
            ).scalars()
        )
        for table in READ_ONLY:
            if table in tables:
                conn.execute(
                    text(f"REVOKE INSERT, UPDATE ON {where}.{_quote(conn, table)} FROM {who}")
                )
        for table in deletes:
            conn.execute(text(f"GRANT DELETE ON {where}.{_quote(conn, table)} TO {who}"))
        # Identity columns (ledger_entries.entry_id...) draw from sequences.
        conn.execute(text(f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA {where} FROM {who}"))
        conn.execute(text(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {where} TO {who}"))


def main(argv: Sequence[str] | None = None) -> None:
    """Migrate the ledger as the owner, then grant the application role its rights."""
    from config.settings import load_settings
    from integrations.ledger.engine import make_engine
    from integrations.ledger.migrate import upgrade

    parser = argparse.ArgumentParser(
        prog="python -m integrations.ledger.roles",
        description="Run as the owner (REFERRALS_DATABASE_URL names it): migrate the "
        "ledger, then grant the application role row access and nothing more.",
    )
    parser.add_argument("app_role", help="the role the application connects as")
    args = parser.parse_args(argv)
    engine = make_engine(load_settings().database_url)
    try:
        upgrade(engine)
        grant_app_role(engine, args.app_role)
    except (UnsafeAppRoleError, ValueError) as exc:
        raise SystemExit(f"not granted: {exc}") from exc
    finally:
        engine.dispose()
    print(f"ledger migrated; {args.app_role} may read, insert and update its rows")  # noqa: T201


if __name__ == "__main__":
    main()
