"""Without notify_ext in shared_preload_libraries the extension fails early:
CREATE EXTENSION is refused with 55000 and a hint, before any application
write could fail.  Runs a second, short-lived server for that."""

import os
import shutil
import subprocess

import psycopg
import pytest

from conftest import PGBIN, PGDATA, PG_OS_USER

BASE = os.path.join(os.path.dirname(PGDATA), "no_preload")
PORT = 5000 + os.getpid() % 1000


def as_pg(*cmd):
    if os.geteuid() == 0:
        cmd = ("runuser", "-u", PG_OS_USER, "--", *cmd)
    return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=180)


@pytest.fixture(scope="module")
def plain_server():
    shutil.rmtree(BASE, ignore_errors=True)
    os.makedirs(BASE)
    if os.geteuid() == 0:
        shutil.chown(BASE, PG_OS_USER)
    data = os.path.join(BASE, "pgdata")
    as_pg(os.path.join(PGBIN, "initdb"), "-D", data, "-U", "postgres", "--auth=trust")
    with open(os.path.join(data, "postgresql.conf"), "a") as conf:
        conf.write(f"\nlisten_addresses = ''\nport = {PORT}\nunix_socket_directories = '{BASE}'\n"
                   "shared_preload_libraries = ''\n")
    as_pg(os.path.join(PGBIN, "pg_ctl"), "-D", data, "-l", os.path.join(BASE, "log"), "-w", "start")
    try:
        yield f"host={BASE} port={PORT} dbname=postgres user=postgres"
    finally:
        as_pg(os.path.join(PGBIN, "pg_ctl"), "-D", data, "-m", "immediate", "-w", "stop")
        shutil.rmtree(BASE, ignore_errors=True)


def test_create_extension_without_preload_is_refused(plain_server):
    with psycopg.connect(plain_server, autocommit=True) as conn:
        with pytest.raises(psycopg.Error) as err:
            conn.execute("CREATE EXTENSION notify_ext")
        assert err.value.sqlstate == "55000"
        assert "shared_preload_libraries" in err.value.diag.message_primary
        assert "shared_preload_libraries" in (err.value.diag.message_hint or "")
        # Nothing is left half-made.
        assert conn.execute(
            "SELECT count(*) FROM pg_namespace WHERE nspname = 'notify_ext'"
        ).fetchone()[0] == 0
        assert conn.execute(
            "SELECT count(*) FROM pg_extension WHERE extname = 'notify_ext'"
        ).fetchone()[0] == 0
