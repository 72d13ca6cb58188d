"""ALTER EXTENSION notify_ext UPDATE from every released version gives the
same schema as a fresh install of the current version.

The schemas are compared as pg_dump --schema-only --binary-upgrade prints
them (that mode prints the extension's member objects one by one), less
what differs between any two databases (object ids, frozen xids).  The
event log's day partitions are data, not schema: CREATE EXTENSION of 0.1.0
made some, the current version makes none; they are dropped before the
comparison.
"""

import os
import re
import subprocess

import psycopg
import pytest

from conftest import PGBIN, REPO_DIR, create_database, dsn_for, DB_PREFIX

RELEASED = sorted(
    m.group(1)
    for name in os.listdir(REPO_DIR / "sql")
    if (m := re.fullmatch(r"notify_ext--(\d+\.\d+\.\d+)\.sql", name))
)
CURRENT = re.search(
    r"default_version = '([^']+)'", (REPO_DIR / "notify_ext.control").read_text()
).group(1)


def schema_of(dsn):
    """The database's schema as comparable text lines."""
    out = subprocess.run(
        [os.path.join(PGBIN, "pg_dump"), "--schema-only", "--binary-upgrade", "-d", dsn],
        check=True, capture_output=True, text=True,
    ).stdout
    with psycopg.connect(dsn) as conn:
        config = conn.execute(
            """SELECT (SELECT array_agg(c.relname ORDER BY c.relname)
                         FROM unnest(e.extconfig) WITH ORDINALITY x(oid, i)
                         JOIN pg_class c ON c.oid = x.oid),
                      (SELECT array_agg(c.relname || ': ' || e.extcondition[x.i] ORDER BY c.relname)
                         FROM unnest(e.extconfig) WITH ORDINALITY x(oid, i)
                         JOIN pg_class c ON c.oid = x.oid)
                 FROM pg_extension e WHERE e.extname = 'notify_ext'"""
        ).fetchone()
    lines = [f"extconfig {config}"]
    for line in out.splitlines():
        if re.match(r"^(--|\\(un)?restrict |SELECT pg_catalog\.binary_upgrade_|SET relfrozenxid)", line):
            continue
        if "binary_upgrade_create_empty_extension" in line:
            continue
        lines.append(re.sub(r"\boid = '?\d+'?", "oid = N", line))
    return [l for l in lines if l.strip()]


@pytest.mark.parametrize("old", [v for v in RELEASED if v != CURRENT])
def test_update_gives_the_schema_of_a_fresh_install(old, admin_dsn):
    fresh_name = f"{DB_PREFIX}_upgrade_fresh"
    updated_name = f"{DB_PREFIX}_upgrade_from_{old.replace('.', '_')}"
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        fresh = create_database(admin, fresh_name)
        admin.execute(f'DROP DATABASE IF EXISTS "{updated_name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{updated_name}"')
    updated = dsn_for(updated_name)
    with psycopg.connect(updated, autocommit=True) as conn:
        conn.execute(f"CREATE EXTENSION notify_ext VERSION '{old}'")
        conn.execute("ALTER EXTENSION notify_ext UPDATE")
        for (rel,) in conn.execute(
            "SELECT c.oid::regclass::text FROM pg_class c"
            " WHERE c.relnamespace = 'notify_ext'::regnamespace AND c.relname ~ '^event_log_p[0-9]{8}$'"
        ).fetchall():
            conn.execute(f"DROP TABLE {rel}")
        assert conn.execute(
            "SELECT extversion FROM pg_extension WHERE extname = 'notify_ext'"
        ).fetchone()[0] == CURRENT
    want = schema_of(fresh)
    got = schema_of(updated)
    if got != want:
        import difflib
        diff = "\n".join(difflib.unified_diff(want, got, "fresh", f"updated from {old}", lineterm="", n=2))
        pytest.fail(f"the schema after the update differs from a fresh install:\n{diff[:20000]}")
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE "{fresh_name}" WITH (FORCE)')
        admin.execute(f'DROP DATABASE "{updated_name}" WITH (FORCE)')
