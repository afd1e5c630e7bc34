"""Migrated PostgreSQL schemas for the tests: migrated once, emptied between tests.

Migrating a fresh schema for every Postgres test (every revision, about 0.3-0.7 s) was
most of the Postgres half's time. A :class:`SchemaPool` migrates a schema the first
time one is needed and, when the test is done with it, empties it and hands it to the
next test:

* every table that holds a row is emptied and every sequence that was used is
  restarted, then both are checked again in the same transaction, so the next test
  starts exactly as it would on a fresh schema (no rows, identities from 1);
* the schema's catalog (tables, columns, constraints, indexes, triggers and whether
  they are enabled, functions, the Alembic revision) must still be what the migration
  left; a test that changed it (a downgrade, a dropped trigger) gets its schema
  dropped instead of reused, so no other test ever runs on a schema the migrations did
  not make;
* each schema's URL names it as the ``application_name`` of every connection made
  from it; once the test is over, connections under that name still in a transaction
  are ended before the schema is emptied (idle ones are left alone), and a schema is
  checked empty again when it is handed out, so what a test left behind cannot write
  into the next test's rows unnoticed.

Emptying never lifts the append-only guards for a test: on a superuser connection the
rows are deleted with ``session_replication_role = replica`` (triggers off for that
one transaction only); otherwise the tables are truncated (the guards are row triggers
on UPDATE and DELETE, which TRUNCATE does not fire).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, create_engine, text

from integrations.ledger.engine import make_engine
from integrations.ledger.migrate import upgrade

# Everything in the schema's catalog a test could change, one line per object. The
# objects are found through pg_depend's index (each one created in the schema depends
# on it), never by scanning pg_class: on a server where many schemas came and went,
# and autovacuum is off, pg_class is mostly dead rows.
CATALOG = """
WITH ns AS MATERIALIZED (
    SELECT oid FROM pg_namespace WHERE nspname = current_schema()
), member AS MATERIALIZED (
    SELECT d.classid, d.objid FROM pg_depend d
     WHERE d.refclassid = 'pg_namespace'::regclass AND d.refobjid = (SELECT oid FROM ns)
), rel AS MATERIALIZED (
    SELECT c.oid, c.relname, c.relkind FROM member m JOIN pg_class c ON c.oid = m.objid
     WHERE m.classid = 'pg_class'::regclass
)
SELECT md5(coalesce(string_agg(item, E'\\n' ORDER BY item), '')) FROM (
    SELECT 'obj ' || m.classid::regclass::text || ' '
           || coalesce(pg_describe_object(m.classid, m.objid, 0), m.objid::text)
      FROM member m
    UNION ALL
    SELECT 'rel ' || relname || ' ' || relkind::text FROM rel
    UNION ALL
    SELECT 'col ' || rel.relname || '.' || a.attname || ' '
           || format_type(a.atttypid, a.atttypmod) || ' ' || a.attnotnull::text || ' '
           || coalesce(pg_get_expr(d.adbin, d.adrelid), '')
      FROM rel
      JOIN pg_attribute a ON a.attrelid = rel.oid AND a.attnum > 0 AND NOT a.attisdropped
      LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
    UNION ALL
    SELECT 'con ' || rel.relname || ' ' || k.conname || ' ' || pg_get_constraintdef(k.oid)
      FROM rel JOIN pg_constraint k ON k.conrelid = rel.oid
    UNION ALL
    SELECT 'idx ' || pg_get_indexdef(i.indexrelid)
      FROM rel JOIN pg_index i ON i.indrelid = rel.oid
    UNION ALL
    SELECT 'trg ' || t.tgname || ' ' || t.tgenabled::text || ' ' || pg_get_triggerdef(t.oid)
      FROM rel JOIN pg_trigger t ON t.tgrelid = rel.oid AND NOT t.tgisinternal
    UNION ALL
    SELECT 'fn ' || p.proname || ' ' || md5(p.prosrc)
      FROM member m JOIN pg_proc p ON p.oid = m.objid WHERE m.classid = 'pg_proc'::regclass
    UNION ALL
    SELECT 'ver ' || version_num FROM alembic_version
) AS catalog(item)
"""

TABLES = """
SELECT tablename FROM pg_tables
 WHERE schemaname = current_schema() AND tablename <> 'alembic_version'
 ORDER BY tablename
"""

USED_SEQUENCES = """
SELECT sequencename FROM pg_sequences
 WHERE schemaname = current_schema() AND last_value IS NOT NULL
"""


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class DirtySchemaError(AssertionError):
    """A schema still holds rows (or used sequences) after it was emptied."""


@dataclass
class _Schema:
    name: str
    url: str
    engine: Engine  # the pool's own connection to it, for emptying and checking
    catalog: str  # CATALOG right after the migration
    tables: tuple[str, ...]


class SchemaPool:
    """Migrated schemas on the server at ``base_url``, each used by one test at a time."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.admin = create_engine(base_url)
        self._free: list[_Schema] = []
        self._all: dict[str, _Schema] = {}  # by URL
        self._superuser: bool | None = None

    # -- handing schemas out ----------------------------------------------------------

    def acquire(self) -> str:
        """The URL of an empty, migrated schema no other test is using."""
        while self._free:
            schema = self._free.pop()
            # Nothing may have written to it since it was emptied; if something did,
            # drop it rather than hand it out.
            if self._is_clean(schema):
                return schema.url
            self._drop(schema)
        return self._create().url

    def release(self, url: str) -> None:
        """Empty the schema behind ``url`` for the next test, or drop it."""
        schema = self._all[url]
        try:
            self._end_leftover_connections(schema)
            if self._catalog(schema) != schema.catalog:
                self._drop(schema)
                return
            self._empty(schema)
        except BaseException:
            self._drop(schema)
            raise
        self._free.append(schema)

    def empty(self, url: str) -> None:
        """Empty the schema behind ``url`` now, while its test still holds it."""
        self._empty(self._all[url])

    def close(self) -> None:
        for schema in list(self._all.values()):
            self._drop(schema)
        self.admin.dispose()

    # -- one schema -------------------------------------------------------------------

    def _create(self) -> _Schema:
        name = f"t_{uuid.uuid4().hex[:12]}"
        with self.admin.begin() as conn:
            conn.execute(text(f"CREATE SCHEMA {name}"))
        separator = "&" if "?" in self.base_url else "?"
        url = f"{self.base_url}{separator}options=-csearch_path%3D{name}&application_name={name}"
        migrating = make_engine(url)
        try:
            upgrade(migrating)
        finally:
            migrating.dispose()
        # The pool's connections are not the test's: another name, never ended by it.
        engine = create_engine(url, connect_args={"application_name": f"{name}-pool"})
        with engine.connect() as conn:
            catalog = self._read_catalog(conn)
            tables = tuple(conn.execute(text(TABLES)).scalars())
        schema = _Schema(name, url, engine, catalog, tables)
        self._all[url] = schema
        return schema

    def _drop(self, schema: _Schema) -> None:
        self._all.pop(schema.url, None)
        schema.engine.dispose()
        with self.admin.begin() as conn:
            self._terminate(conn, schema.name)
            conn.execute(text(f"DROP SCHEMA IF EXISTS {schema.name} CASCADE"))

    @staticmethod
    def _terminate(conn: Connection, application_name: str) -> None:
        conn.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = :name AND pid <> pg_backend_pid() AND state <> 'idle'"
            ),
            {"name": application_name},
        )

    def _end_leftover_connections(self, schema: _Schema) -> None:
        with self.admin.begin() as conn:
            self._terminate(conn, schema.name)

    @staticmethod
    def _read_catalog(conn: Connection) -> str:
        with conn.begin():
            # The catalog of a server that has seen many schemas come and go looks big
            # to the planner: compiling this query would cost more than running it.
            conn.execute(text("SET LOCAL jit = off"))
            return str(conn.execute(text(CATALOG)).scalar_one())

    def _catalog(self, schema: _Schema) -> str:
        with schema.engine.connect() as conn:
            return self._read_catalog(conn)

    def _dirt(self, conn: Connection, schema: _Schema) -> tuple[list[str], list[str]]:
        """The tables holding rows and the sequences used, in one round trip each."""
        probe = " UNION ALL ".join(
            f"SELECT '{t}' WHERE EXISTS (SELECT 1 FROM {_quote(t)})" for t in schema.tables
        )
        tables = [str(t) for t in conn.execute(text(probe)).scalars()]
        sequences = [str(s) for s in conn.execute(text(USED_SEQUENCES)).scalars()]
        return tables, sequences

    def _is_clean(self, schema: _Schema) -> bool:
        with schema.engine.connect() as conn:
            tables, sequences = self._dirt(conn, schema)
        return not tables and not sequences

    def _empty(self, schema: _Schema) -> None:
        with schema.engine.begin() as conn:
            conn.execute(text("SET LOCAL lock_timeout = '30s'"))
            tables, sequences = self._dirt(conn, schema)
            if tables:
                if self._is_superuser(conn):
                    # Triggers (the append-only guards, and the foreign keys' own) are off
                    # for this transaction only; every table with a row is emptied.
                    conn.execute(text("SET LOCAL session_replication_role = replica"))
                    for table in tables:
                        conn.execute(text(f"DELETE FROM {_quote(table)}"))
                    conn.execute(text("SET LOCAL session_replication_role = origin"))
                else:
                    names = ", ".join(_quote(t) for t in tables)
                    conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
            for sequence in sequences:
                conn.execute(text(f"ALTER SEQUENCE {_quote(sequence)} RESTART"))
            left = self._dirt(conn, schema)
            if left != ([], []):
                raise DirtySchemaError(f"{schema.name} is not empty after emptying: {left}")

    def _is_superuser(self, conn: Connection) -> bool:
        if self._superuser is None:
            self._superuser = bool(
                conn.execute(
                    text("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
                ).scalar()
            )
        return self._superuser
