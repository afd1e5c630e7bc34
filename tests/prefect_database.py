"""A Prefect stack of a test's own, with a database of its own on PostgreSQL when
there is one.

Prefect 3.8.8's server on SQLite now and then stops for a minute (README, "Scale beyond
one machine": its event loop, collecting garbage, waits on a connection that waits on
SQLite's 60 s busy timeout). The tests that start servers of their own survive such a
minute, but every wait in them must then outlast it. With
``REFERRALS_TEST_POSTGRES_URL`` set (``.ci/run`` sets it), their servers keep their
state in a fresh PostgreSQL database instead, dropped afterwards; without it they run
on SQLite, as ``make demo`` does.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from config.settings import PROJECT_ROOT
from integrations.prefect_stack import LocalStack, free_port
from tests.conftest import POSTGRES_URL


@contextmanager
def running_stack(root: Path, env: Mapping[str, str]) -> Iterator[LocalStack]:
    """A server, a worker and the deployments under ``root``, their processes seeing
    ``env``; on PostgreSQL when ``REFERRALS_TEST_POSTGRES_URL`` is set. Stopped after."""
    with prefect_server_database(POSTGRES_URL) as server_database:
        stack = LocalStack(
            PROJECT_ROOT,
            port=free_port(),  # LocalStack.env points PREFECT_UI_API_URL at this port too
            home=root / "prefect",
            run_dir=root / "run",
            extra_env={**env, **server_database},
        )
        try:
            stack.up()
            yield stack
        finally:
            stack.down()


@contextmanager
def prefect_server_database(postgres_url: str | None) -> Iterator[dict[str, str]]:
    """The environment that points a Prefect server at a fresh database on the server
    of ``postgres_url`` (nothing when it is ``None``); the database is dropped after."""
    if not postgres_url:
        yield {}
        return
    name = f"prefect_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = make_url(postgres_url).set(drivername="postgresql+asyncpg", database=name)
        try:
            yield {"PREFECT_SERVER_DATABASE_CONNECTION_URL": url.render_as_string(False)}
        finally:
            with admin.connect() as conn:
                # The server is stopped by now; FORCE ends what its pool left behind.
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()
