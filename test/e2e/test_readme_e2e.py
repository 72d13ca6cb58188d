"""Every ```sql block of README.md runs as written.

The blocks run in order, verbatim, in one psql session of a superuser
connected to a fresh database named app (the name the README uses), with
the conventions the README states in "Getting started":

- A block that acts as another role says so itself (SET ROLE, SET
  notify_ext.principal) and ends as it began: as the session's user, with
  notify_ext.principal unset and no transaction open.
- A statement that fails on purpose ends with `-- error: <SQLSTATE>` on its
  last line; it must fail with exactly that SQLSTATE.  Every other
  statement must succeed.
- A block whose first line is `-- in the cron database` runs in the
  database named by cron.database_name (psql connects there for the block,
  and back to app after it).

The roles the README creates, the database and anything it added to the
cron database are removed afterwards.
"""

import os
import re
import subprocess
import tempfile
from dataclasses import dataclass, field

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from conftest import PGBIN, REPO_DIR, dsn_for

README = REPO_DIR / "README.md"
DATABASE = "app"
CRON_MARKER = "-- in the cron database"
ERROR_MARKER = re.compile(r"--\s*error:\s*([0-9A-Z]{5})\b")


@dataclass
class Block:
    number: int          # 1, 2, ... in README order
    readme_line: int     # README line of the block's first SQL line
    lines: list
    in_cron_db: bool = False
    expected: dict = field(default_factory=dict)   # script line -> SQLSTATE
    failures: list = field(default_factory=list)
    output: list = field(default_factory=list)


def sql_blocks(text):
    """The ```sql blocks of a Markdown text, in order."""
    blocks, current, start = [], None, 0
    for n, line in enumerate(text.splitlines(), 1):
        if current is None:
            if re.fullmatch(r"\s*```sql\s*", line):
                current, start = [], n + 1
        elif re.fullmatch(r"\s*```\s*", line):
            blocks.append(Block(len(blocks) + 1, start, current))
            current = None
        else:
            current.append(line)
    assert current is None, f"README.md: the ```sql block at line {start} is not closed"
    for b in blocks:
        b.in_cron_db = bool(b.lines) and b.lines[0].strip() == CRON_MARKER
    return blocks


def build_script(blocks, cron_db, app_db):
    """The psql script: every block, each followed by a check of the state it
    leaves.  Returns the script's lines and, per script line, the block and
    README line it came from (None for the lines added here)."""
    lines, origin = [], []

    def add(line, where=None):
        lines.append(line)
        origin.append(where)

    # Lines added after a block's own lines are attributed to the block,
    # with no README line.

    add(r"\set ON_ERROR_STOP 0")
    add(r"\set VERBOSITY verbose")
    add(r"\set SHOW_CONTEXT never")
    add(r"\pset pager off")
    for b in blocks:
        add(rf"\echo '@@begin {b.number}'")
        if b.in_cron_db:
            add(rf"\connect {cron_db}", (b, None))
        for i, line in enumerate(b.lines):
            add(line, (b, b.readme_line + i))
            m = ERROR_MARKER.search(line)
            if m:
                b.expected[len(lines)] = m.group(1)
        # A block that ends inside a statement would swallow what follows.
        add(";" if _unterminated(b.lines) else "", (b, None))
        add(
            "SELECT '@@state', "
            f"{b.number}, current_user = session_user, "
            "coalesce(current_setting('notify_ext.principal', true), '') = '', "
            "now() = statement_timestamp();",
            (b, None),
        )
        if b.in_cron_db:
            add(rf"\connect {app_db}", (b, None))
        add(rf"\echo '@@end {b.number}'", (b, None))
    return lines, origin


def _unterminated(lines):
    """Whether the last statement of a block has no terminator: the block's
    last line that is not a comment or blank ends neither with ; nor with a
    psql meta-command."""
    for line in reversed(lines):
        s = re.sub(r"--.*$", "", line).strip()
        if not s:
            continue
        return not (s.endswith(";") or s.startswith("\\") or re.search(r"\\\w+\s*\S*$", s))
    return False


def run_blocks(blocks, dsn, cron_db):
    """Runs the blocks through psql and fills in each block's failures and
    output."""
    app_db = conninfo_to_dict(dsn)["dbname"]
    lines, origin = build_script(blocks, cron_db, app_db)
    with tempfile.TemporaryDirectory(prefix="notify_ext_readme_") as tmp:
        path = os.path.join(tmp, "readme.sql")
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        env = dict(os.environ, PGAPPNAME="notify_ext_readme", PGOPTIONS="-c client_min_messages=warning")
        proc = subprocess.run(
            [os.path.join(PGBIN, "psql"), "-X", "-A", "-t", "-d", dsn, "-f", path],
            capture_output=True, text=True, env=env, timeout=600,
        )
    prefix = re.escape(f"psql:{path}:")
    error_re = re.compile(prefix + r"(\d+): (ERROR|FATAL|PANIC):  ([0-9A-Z]{5}): (.*)")
    other_re = re.compile(prefix + r"(\d+): (error|fatal): (.*)")
    by_number = {b.number: b for b in blocks}

    def owner(script_line):
        """The block a script line belongs to, and a description of it."""
        where = origin[script_line - 1] if 0 < script_line <= len(origin) else None
        if where is None:
            return None, "before the first block"
        if where[1] is None:
            return where[0], "at the end of the block"
        return where[0], f"README.md:{where[1]}"

    hit = set()
    for line in proc.stderr.splitlines():
        if m := error_re.match(line):
            n, code, message = int(m.group(1)), m.group(3), m.group(4)
            block, where = owner(n)
            if block is None:
                pytest.fail(f"psql failed before the first block: {line}")
            if n in block.expected:
                hit.add(n)
            if block.expected.get(n) == code:
                continue
            if n in block.expected:
                block.failures.append(f"{where}: expected SQLSTATE {block.expected[n]}, got {code}: {message}")
            elif where == "at the end of the block":
                block.failures.append(f"at the end of the block (an unterminated statement, "
                                      f"or a failed transaction left open): {code}: {message}")
            else:
                block.failures.append(f"{where}: {code}: {message}")
        elif m := other_re.match(line):
            n = int(m.group(1))
            block, where = owner(n)
            if block is None:
                pytest.fail(f"psql failed before the first block: {line}")
            block.failures.append(f"{where}: psql: {m.group(3)}")
    for b in blocks:
        for n, code in b.expected.items():
            if n not in hit:
                where = origin[n - 1][1]
                b.failures.append(f"README.md:{where}: expected SQLSTATE {code}, but the statement succeeded")

    current = None
    seen_state = set()
    for line in proc.stdout.splitlines():
        if m := re.fullmatch(r"@@begin (\d+)", line):
            current = by_number[int(m.group(1))]
            continue
        if re.fullmatch(r"@@end \d+", line):
            current = None
            continue
        if m := re.fullmatch(r"@@state\|(\d+)\|(\w)\|(\w)\|(\w)", line):
            b = by_number[int(m.group(1))]
            seen_state.add(b.number)
            if m.group(2) != "t":
                b.failures.append("the block ends with a role set (end it with RESET ROLE)")
            if m.group(3) != "t":
                b.failures.append("the block ends with notify_ext.principal set (end it with RESET notify_ext.principal)")
            if m.group(4) != "t":
                b.failures.append("the block ends inside a transaction (end it with COMMIT or ROLLBACK)")
            continue
        if current is not None:
            current.output.append(line)
    for b in blocks:
        if b.number not in seen_state and not b.failures:
            b.failures.append("the session did not get to the end of the block")
    if proc.returncode not in (0, 1, 3):
        pytest.fail(f"psql exited with {proc.returncode}:\n{proc.stderr[-4000:]}")


@pytest.fixture
def readme_database(admin_dsn):
    """A fresh database app, without notify_ext (the README creates it);
    afterwards the database, the roles the README creates and what it added
    to the cron database are removed."""
    text = README.read_text()
    roles = sorted(set(re.findall(r"(?im)^\s*CREATE\s+ROLE\s+(\w+)", text)))
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        cron_db = admin.execute("SELECT current_setting('cron.database_name', true)").fetchone()[0] or "postgres"

        def cleanup():
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DATABASE)))
            for role in roles:
                admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))

        cleanup()
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
        with psycopg.connect(dsn_for(cron_db), autocommit=True) as c:
            had_cron = c.execute("SELECT count(*) FROM pg_extension WHERE extname = 'pg_cron'").fetchone()[0] > 0
        yield dsn_for(DATABASE), cron_db
        with psycopg.connect(dsn_for(cron_db), autocommit=True) as c:
            if had_cron:
                c.execute("SELECT cron.unschedule(jobid) FROM cron.job WHERE jobname = %s",
                          (f"notify_ext_prune_{DATABASE}",))
            else:
                c.execute("DROP EXTENSION IF EXISTS pg_cron")
        cleanup()


def test_every_sql_example_of_the_readme_runs(readme_database):
    dsn, cron_db = readme_database
    blocks = sql_blocks(README.read_text())
    assert blocks, "README.md has no ```sql blocks"
    run_blocks(blocks, dsn, cron_db)
    failed = [b for b in blocks if b.failures]
    if failed:
        report = [f"{len(blocks) - len(failed)} of {len(blocks)} ```sql blocks of README.md run as written; these do not:"]
        for b in failed:
            report.append(f"\nblock {b.number} (README.md:{b.readme_line}"
                          f"{', in the cron database' if b.in_cron_db else ''}):")
            report.extend(f"  {f}" for f in b.failures)
            if b.output:
                report.append("  output:")
                report.extend(f"    {line}" for line in b.output[:30])
        pytest.fail("\n".join(report))
