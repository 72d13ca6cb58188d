"""Fixtures for the end-to-end tests.

scripts/test.sh starts a throwaway cluster and passes it in the environment:

NOTIFY_EXT_TEST_DSN  libpq connection string; its dbname is the prefix of the
                     databases the tests create (one per test module)
NOTIFY_EXT_PGDATA    the cluster's data directory
NOTIFY_EXT_PGBIN     the directory holding pg_ctl
NOTIFY_EXT_PGLOG     the server log file

Without them, the defaults match the cluster scripts/test.sh leaves in
<repo>/.run (while it runs).
"""

import os
import re
import subprocess
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

REPO_DIR = Path(__file__).resolve().parents[2]
RUN_DIR = Path(os.environ.get("NOTIFY_EXT_RUN_DIR", REPO_DIR / ".run"))

DSN = os.environ.get(
    "NOTIFY_EXT_TEST_DSN",
    f"host={RUN_DIR / 'sock'} port={os.environ.get('NOTIFY_EXT_PORT', '5432')} "
    "dbname=notify_ext_e2e user=postgres",
)
PGDATA = os.environ.get("NOTIFY_EXT_PGDATA", str(RUN_DIR / "pgdata"))
PGBIN = os.environ.get("NOTIFY_EXT_PGBIN", "/usr/lib/postgresql/15/bin")
PGLOG = os.environ.get("NOTIFY_EXT_PGLOG", str(RUN_DIR / "postgresql.log"))
PG_OS_USER = "postgres"

# Databases created here are named <prefix>_<module>.
DB_PREFIX = conninfo_to_dict(DSN).get("dbname") or "notify_ext_e2e"


def dsn_for(dbname):
    """The test DSN pointed at another database."""
    return make_conninfo(DSN, dbname=dbname)


def _pg_ctl(*args, timeout=180):
    cmd = [os.path.join(PGBIN, "pg_ctl"), "-D", PGDATA, *args]
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", PG_OS_USER, "--", *cmd]
    return subprocess.run(
        cmd,
        check=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )


def stop_server(mode="immediate"):
    """Stops the cluster; mode 'immediate' is a crash as far as the server
    is concerned (no shutdown checkpoint, recovery on the next start)."""
    _pg_ctl("-m", mode, "-w", "stop")


def start_server():
    """Starts the cluster and waits until it accepts connections."""
    _pg_ctl("-l", PGLOG, "-w", "-t", "120", "start")


def restart_server(mode="immediate"):
    """Stops the cluster with pg_ctl -m MODE and starts it again.  Every open
    connection is broken; the caller reconnects."""
    stop_server(mode)
    start_server()


@pytest.fixture(scope="session")
def dsn():
    return DSN


@pytest.fixture(scope="session")
def admin_dsn():
    """DSN of the maintenance database, for creating and dropping databases."""
    return dsn_for("postgres")


def create_database(admin, name):
    """Creates database name afresh (dropping one of that name) with
    notify_ext in it, through admin, an autocommit connection to the
    maintenance database.  Returns its DSN."""
    ident = sql.Identifier(name)
    admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
    admin.execute(sql.SQL("CREATE DATABASE {}").format(ident))
    with psycopg.connect(dsn_for(name), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION notify_ext")
    return dsn_for(name)


@pytest.fixture(scope="module")
def db_dsn(request, admin_dsn):
    """A fresh database with notify_ext created in it, one per test module;
    dropped after the module's tests."""
    module = request.module.__name__.rsplit(".", 1)[-1]
    name = f"{DB_PREFIX}_{re.sub(r'[^a-z0-9_]', '_', module.lower())}"[:63]
    ident = sql.Identifier(name)
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        dsn = create_database(conn, name)
    yield dsn
    # The server may have been restarted (or left down) by a test.
    try:
        psycopg.connect(admin_dsn, connect_timeout=5).close()
    except psycopg.OperationalError:
        start_server()
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))


@pytest.fixture
def connect(db_dsn):
    """Opens extra connections to the module's database (autocommit unless
    asked otherwise); all are closed after the test."""
    conns = []

    def _connect(autocommit=True, **kwargs):
        conn = psycopg.connect(db_dsn, autocommit=autocommit, **kwargs)
        conns.append(conn)
        return conn

    yield _connect
    for conn in conns:
        try:
            conn.close()
        except Exception:
            pass


@pytest.fixture
def db(connect):
    """An autocommit connection to the module's database."""
    return connect()


@pytest.fixture(name="restart_server")
def restart_server_fixture():
    """The restart_server(mode='immediate') helper, as a fixture."""
    return restart_server
