"""Fixtures for the client's tests, against the cluster that
scripts/test.sh starts (see test/e2e/conftest.py for the environment it
passes: NOTIFY_EXT_TEST_DSN, NOTIFY_EXT_PGDATA, NOTIFY_EXT_PGBIN,
NOTIFY_EXT_PGLOG)."""

import importlib.util
import re
import sys
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

HERE = Path(__file__).resolve().parent
REPO_DIR = HERE.parents[2]
sys.path.insert(0, str(HERE.parent))

# The repository's end-to-end helpers (cluster location, restarting it),
# loaded under a name of their own.
_spec = importlib.util.spec_from_file_location(
    "notify_ext_e2e_helpers", REPO_DIR / "test" / "e2e" / "conftest.py"
)
e2e = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(e2e)

APP, SVC = "pyclient_app", "pyclient_svc"


@pytest.fixture(scope="module")
def db_dsn(request):
    """A fresh database with notify_ext, one per test module."""
    module = request.module.__name__.rsplit(".", 1)[-1]
    name = f"{e2e.DB_PREFIX}_pyclient_{re.sub(r'[^a-z0-9_]', '_', module.lower())}"[:63]
    admin_dsn = e2e.dsn_for("postgres")
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        dsn = e2e.create_database(conn, name)
    yield dsn
    try:
        psycopg.connect(admin_dsn, connect_timeout=5).close()
    except psycopg.OperationalError:
        e2e.start_server()
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def db(db_dsn):
    """An autocommit superuser connection to the module's database."""
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        yield conn


@pytest.fixture(scope="module")
def app_dsn(db_dsn):
    """The DSN of a login role that is a member of notify_ext.app_role."""
    dbname = psycopg.conninfo.conninfo_to_dict(db_dsn)["dbname"]
    with psycopg.connect(db_dsn, autocommit=True) as c:
        c.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (SVC,))
        for r in (SVC, APP):
            c.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(r)))
        c.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(APP)))
        c.execute(sql.SQL("CREATE ROLE {} LOGIN IN ROLE {}").format(sql.Identifier(SVC), sql.Identifier(APP)))
        c.execute(sql.SQL("ALTER DATABASE {} SET notify_ext.app_role = {}").format(
            sql.Identifier(dbname), sql.Literal(APP)))
    yield psycopg.conninfo.make_conninfo(db_dsn, user=SVC)
    with psycopg.connect(db_dsn, autocommit=True) as c:
        c.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (SVC,))
        c.execute(sql.SQL("ALTER DATABASE {} RESET notify_ext.app_role").format(sql.Identifier(dbname)))
        c.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(SVC)))
        for r in (SVC, APP):
            c.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(r)))


@pytest.fixture
def restart_server():
    """Stops the cluster with pg_ctl -m immediate and starts it again."""
    return e2e.restart_server
