"""Attacks on the trust boundaries of contract section 8, each tried by a
role with less than a superuser's rights:

- mallory: a plain login role (PUBLIC's TEMP on the database, nothing else);
- svc: a member of notify_ext.app_role that owns schema svc and may put
  whatever it likes there (operators, types, functions, tables);
- bob: a tenant whose resources the others try to reach.

Every payload an attacker plants records who ran it in public.evidence
and, when that is a superuser, makes the attacker a superuser.  After
each attack: no attacker is a superuser, and no planted code ran as a
superuser or as the extension's owner.
"""

import json
import time

import psycopg
import pytest
from psycopg import sql

from conftest import dsn_for

MALLORY = "attack_mallory"
SVC = "attack_svc"
BOB = "attack_bob"
APP = "attack_app"
ROLES = (MALLORY, SVC, BOB, APP)

# A function that becomes a payload in every attack: it records who runs
# it and, if that is a superuser, hands the attacker superuser rights.
PAYLOAD = """
CREATE FUNCTION {schema}.payload(v anyelement, attacker text) RETURNS boolean
    LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.evidence VALUES (current_user, attacker, pg_catalog.now());
    IF (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname OPERATOR(pg_catalog.=) current_user) THEN
        EXECUTE pg_catalog.format('ALTER ROLE %I SUPERUSER', attacker);
    END IF;
    RETURN true;
END$$;
"""


@pytest.fixture(scope="module")
def setup(db_dsn):
    dbname = psycopg.conninfo.conninfo_to_dict(db_dsn)["dbname"]
    with psycopg.connect(db_dsn, autocommit=True) as su:
        for r in ROLES:
            su.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(r)))
        for r in (MALLORY, SVC, BOB):
            su.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(r)))
        su.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(APP)))
        su.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(APP), sql.Identifier(SVC)))
        su.execute(sql.SQL("ALTER DATABASE {} SET notify_ext.app_role = {}").format(
            sql.Identifier(dbname), sql.Literal(APP)))
        su.execute(sql.SQL("CREATE SCHEMA svc AUTHORIZATION {}").format(sql.Identifier(SVC)))
        su.execute("CREATE TABLE public.evidence (run_as text, attacker text, at timestamptz)")
        su.execute("GRANT INSERT, SELECT ON public.evidence TO PUBLIC")
        # bob's tree: a project with a collection, both registered.
        su.execute("SELECT notify_ext.register_resource('bob_p', 'project')")
        su.execute("SELECT notify_ext.register_resource('c2', 'collection', 'bob_p')")
        su.execute("SELECT notify_ext.grant_permission(%s, 'bob_p', 'ADMIN')", (BOB,))
        # A tracked table of the application's, with a row c1.
        su.execute("CREATE TABLE public.collections (id text PRIMARY KEY, project text)")
        su.execute("SELECT notify_ext.track('public.collections', 'collection', parent_column => 'project')")
        su.execute("INSERT INTO public.collections VALUES ('c1', 'bob_p')")
        su.execute(sql.SQL("GRANT SELECT ON public.collections TO {}").format(sql.Identifier(BOB)))
    yield db_dsn
    with psycopg.connect(db_dsn, autocommit=True) as su:
        su.execute(sql.SQL("ALTER DATABASE {} RESET notify_ext.app_role").format(sql.Identifier(dbname)))
        su.execute("DROP SCHEMA svc CASCADE")
        for r in ROLES:
            su.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(r)))
    with psycopg.connect(dsn_for("postgres"), autocommit=True) as su:
        su.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(dbname)))
        for r in ROLES:
            su.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(r)))


def login(dsn, role, autocommit=True):
    return psycopg.connect(dsn, user=role, autocommit=autocommit)


def sqlstate(conn, statement, params=None):
    """Runs statement; returns None, or the SQLSTATE it failed with."""
    try:
        with conn.transaction():
            conn.execute(statement, params)
        return None
    except psycopg.Error as e:
        return e.sqlstate


def assert_no_escalation(dsn):
    with psycopg.connect(dsn) as su:
        supers = su.execute(
            "SELECT rolname FROM pg_roles WHERE rolsuper AND rolname = ANY(%s)", (list(ROLES),)
        ).fetchall()
        assert supers == [], f"an attacker became superuser: {supers}"
        privileged = su.execute(
            "SELECT DISTINCT e.run_as FROM public.evidence e JOIN pg_roles r ON r.rolname = e.run_as"
            " WHERE r.rolsuper OR r.oid = (SELECT nspowner FROM pg_namespace WHERE nspname = 'notify_ext')"
        ).fetchall()
        assert privileged == [], f"planted code ran as {privileged}"


def events_under(dsn, resource):
    with psycopg.connect(dsn) as su:
        return su.execute(
            "SELECT operation, resource_id, actor FROM notify_ext.events"
            " WHERE %s = ANY(resource_path) ORDER BY seq", (resource,)
        ).fetchall()


def test_temp_table_domain_check_does_not_run_as_owner(setup):
    """Item 1: a domain check on a tracked temp table's id ran as the owner."""
    with login(setup, MALLORY) as m:
        m.execute(PAYLOAD.format(schema="pg_temp"))
        m.execute("CREATE DOMAIN pg_temp.d AS text CHECK (pg_temp.payload(VALUE, 'attack_mallory'))")
        m.execute("CREATE TEMP TABLE t (id pg_temp.d PRIMARY KEY, parent text)")
        assert sqlstate(m, "SELECT notify_ext.track('pg_temp.t', 'x')") == "42501"
        m.execute("INSERT INTO t VALUES ('m1', NULL)")
        assert sqlstate(m, "SELECT notify_ext.resource_path('m1')") == "42704"
        assert sqlstate(m, "SELECT notify_ext.has_permission('x', 'm1', 'READ')") == "42704"
    assert_no_escalation(setup)


def test_service_caller_cannot_track_a_temp_table(setup):
    with login(setup, SVC) as s:
        s.execute("CREATE TEMP TABLE tt (id text PRIMARY KEY)")
        assert sqlstate(s, "SELECT notify_ext.track('pg_temp.tt', 'x')") == "22023"


def test_operator_in_callers_search_path_is_not_used_when_renumbering(setup):
    """Item 2: renumbering spilled events ran an UPDATE as the owner under
    the caller's search_path, where the caller had put its own operator."""
    with login(setup, SVC, autocommit=False) as s:
        s.execute(PAYLOAD.format(schema="svc"))
        s.execute("""CREATE FUNCTION svc.evil_plus(a bigint, b bigint) RETURNS bigint
                     LANGUAGE plpgsql AS $$ BEGIN PERFORM svc.payload(a, 'attack_svc');
                     RETURN a OPERATOR(pg_catalog.+) b; END $$""")
        s.execute("CREATE OPERATOR svc.+ (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = svc.evil_plus)")
        s.execute("CREATE OPERATOR svc.- (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = svc.evil_plus)")
        s.commit()
        s.execute("SET search_path = svc, pg_catalog")
        s.execute("SET notify_ext.event_buffer = '64kB'")
        for i in range(1000):
            s.execute("SELECT notify_ext.publish('spill', 'x.made', jsonb_build_object('pad', repeat('x', 500), 'i', %s))", (i,))
        s.commit()
    assert_no_escalation(setup)


def test_registering_a_tracked_id_is_refused(setup):
    """Item 3: registering the id of a tracked row took over its subtree."""
    with login(setup, MALLORY) as m:
        assert sqlstate(m, "SELECT notify_ext.register_resource('c1', 'project')") == "23505"
        assert sqlstate(m, "SELECT notify_ext.register_resource('c1', 'project', 'bob_p')") == "23505"
        # Nor can it change a registered resource it does not administer.
        assert sqlstate(m, "SELECT notify_ext.register_resource('c2', 'collection', NULL)") == "42501"
    with psycopg.connect(setup) as su:
        path = su.execute("SELECT notify_ext.resource_path('c1')").fetchone()[0]
        assert path == ["bob_p", "c1"]
        assert su.execute("SELECT notify_ext.has_permission(%s, 'c1', 'READ')", (MALLORY,)).fetchone()[0] is False
        assert su.execute("SELECT notify_ext.has_permission(%s, 'c1', 'READ')", (BOB,)).fetchone()[0] is True


def test_forged_events_under_another_tenants_resource(setup):
    """Item 4: a table anyone tracks wrote events under bob's resources."""
    with login(setup, BOB) as b:
        consumer = b.execute("SELECT notify_ext.create_stream_consumer('c2', deliver => 'new')").fetchone()[0]
    before = events_under(setup, "c2")
    with login(setup, MALLORY) as m:
        m.execute("CREATE TEMP TABLE forged (id text PRIMARY KEY, parent text)")
        assert sqlstate(m, "SELECT notify_ext.track('pg_temp.forged', 'dataset', parent_column => 'parent')") == "42501"
        # Nor by installing the capture trigger by hand.
        assert sqlstate(m, "CREATE TRIGGER notify_ext_capture AFTER INSERT ON forged FOR EACH ROW "
                           "EXECUTE FUNCTION notify_ext.capture('dataset', 'id', 'parent', '')") == "42501"
        m.execute("INSERT INTO forged VALUES ('d_forged', 'c2')")
        # Nor by publishing about bob's resource.
        assert sqlstate(m, "SELECT notify_ext.publish('s', 'dataset.create', '{}', 'c2')") == "42501"
        # Nor by publishing without a resource (a service call).
        assert sqlstate(m, "SELECT notify_ext.publish('s', 'dataset.create', '{}')") == "42501"
    with login(setup, BOB) as b:
        got = b.execute("SELECT message FROM notify_ext.get_event_message_batch(%s, 100)", (consumer,)).fetchall()
        assert got == [], f"bob's consumer received forged events: {got}"
    assert events_under(setup, "c2") == before


def test_other_sessions_are_not_denied_service(setup):
    """Item 5: one session's tracked temp table broke everyone's lookups."""
    with login(setup, MALLORY) as m, login(setup, BOB) as b:
        m.execute("CREATE TEMP TABLE dos (id text PRIMARY KEY)")
        assert sqlstate(m, "SELECT notify_ext.track('pg_temp.dos', 'x')") == "42501"
        assert b.execute("SELECT notify_ext.resource_path('c1')").fetchone()[0] == ["bob_p", "c1"]
        assert b.execute("SELECT notify_ext.has_permission(%s, 'c2', 'READ')", (BOB,)).fetchone()[0]
        assert b.execute("SELECT notify_ext.publish('s', 'note', '{}', 'c2')").fetchone()[0] == 1


# Variants of the same classes, planted by a service caller in tables it owns
# and tracks.  The extension reads those tables (ids and parents) only as
# their owner, in a security-restricted operation.

VARIANTS = {
    "equality_operator": """
        CREATE TYPE svc.tag AS (v text);
        CREATE FUNCTION svc.tag_eq(a svc.tag, b svc.tag) RETURNS boolean LANGUAGE plpgsql AS $$
            BEGIN PERFORM svc.payload(1, 'attack_svc'); RETURN (a).v = (b).v; END $$;
        CREATE OPERATOR svc.= (LEFTARG = svc.tag, RIGHTARG = svc.tag, FUNCTION = svc.tag_eq);
        CREATE TABLE svc.t_equality_operator (id svc.tag, parent text);
    """,
    "domain_check": """
        CREATE DOMAIN svc.dom AS text CHECK (svc.payload(VALUE, 'attack_svc'));
        CREATE TABLE svc.t_domain_check (id svc.dom PRIMARY KEY, parent text);
    """,
    "default_expression": """
        CREATE TABLE svc.t_default_expression (id text PRIMARY KEY, parent text,
            note boolean DEFAULT svc.payload(1, 'attack_svc'));
    """,
    "trigger": """
        CREATE TABLE svc.t_trigger (id text PRIMARY KEY, parent text);
        CREATE FUNCTION svc.trg() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN PERFORM svc.payload(1, 'attack_svc'); RETURN NEW; END $$;
        CREATE TRIGGER evil BEFORE INSERT OR UPDATE ON svc.t_trigger FOR EACH ROW EXECUTE FUNCTION svc.trg();
    """,
    "index_expression": """
        CREATE FUNCTION svc.imm(t text) RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$
            BEGIN PERFORM svc.payload(1, 'attack_svc'); RETURN t; END $$;
        CREATE TABLE svc.t_index_expression (id text PRIMARY KEY, parent text);
        CREATE INDEX ON svc.t_index_expression (svc.imm(id));
    """,
    # Operators and functions that shadow pg_catalog's for callers whose
    # search_path puts svc first.
    "shadowed_builtins": """
        CREATE FUNCTION svc.text_eq(a text, b text) RETURNS boolean LANGUAGE plpgsql AS $$
            BEGIN PERFORM svc.payload(1, 'attack_svc'); RETURN a OPERATOR(pg_catalog.=) b; END $$;
        CREATE OPERATOR svc.= (LEFTARG = text, RIGHTARG = text, FUNCTION = svc.text_eq);
        CREATE FUNCTION svc.text_cat(a text, b text) RETURNS text LANGUAGE plpgsql AS $$
            BEGIN PERFORM svc.payload(1, 'attack_svc'); RETURN pg_catalog.textcat(a, b); END $$;
        CREATE OPERATOR svc.|| (LEFTARG = text, RIGHTARG = text, FUNCTION = svc.text_cat);
        CREATE FUNCTION svc.now() RETURNS timestamptz LANGUAGE plpgsql AS $$
            BEGIN PERFORM svc.payload(1, 'attack_svc'); RETURN pg_catalog.now(); END $$;
        CREATE TABLE svc.t_shadowed_builtins (id text PRIMARY KEY, parent text);
    """,
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_planted_code_in_a_tracked_table_never_runs_as_owner(setup, variant):
    table = f"svc.t_{variant}"
    with login(setup, SVC) as s:
        if s.execute("SELECT to_regprocedure('svc.payload(anyelement,text)')").fetchone()[0] is None:
            s.execute(PAYLOAD.format(schema="svc"))
        s.execute(VARIANTS[variant])
        s.execute("SET search_path = svc, pg_catalog")
        s.execute("SELECT notify_ext.track(%s::regclass, 'item', parent_column => 'parent')", (table,))
        if variant == "equality_operator":
            # (a composite id's text form is "(value)")
            s.execute(f"INSERT INTO {table} VALUES (ROW('k_{variant}'), 'c1'), (ROW('k2_{variant}'), '(k_{variant})')")
        else:
            s.execute(f"INSERT INTO {table} VALUES ('k_{variant}', 'c1'), ('k2_{variant}', 'k_{variant}')")
        s.execute("SELECT notify_ext.grant_permission(%s, 'c1', 'READ')", (BOB,))
    with psycopg.connect(setup, autocommit=True) as su:
        su.execute("DELETE FROM public.evidence")
    lookups = [f"k_{variant}", f"(k_{variant})", "c1", "nope"]
    for who in (MALLORY, BOB, SVC):
        with login(setup, who) as c:
            c.execute("SET search_path = svc, public, pg_catalog")
            for rid in lookups:
                sqlstate(c, "SELECT notify_ext.resource_path(%s)", (rid,))
                sqlstate(c, "SELECT notify_ext.has_permission(%s, %s, 'READ')", (who, rid))
                sqlstate(c, "SELECT notify_ext.publish('s', 'note', '{}', %s)", (rid,))
                sqlstate(c, "SELECT notify_ext.create_stream_consumer(%s)", (rid,))
                sqlstate(c, "SELECT notify_ext.register_resource('r_' || md5(%s), 'thing', %s)", (rid, rid))
                sqlstate(c, "SELECT notify_ext.request_access(%s, 'READ')", (rid,))
    with psycopg.connect(setup, autocommit=True) as su:
        su.execute("SELECT notify_ext.prune()")
        for rid in lookups:
            sqlstate(su, "SELECT notify_ext.resource_path(%s)", (rid,))
    assert_no_escalation(setup)
    with psycopg.connect(setup) as su:
        ran_as = {r for (r,) in su.execute("SELECT DISTINCT run_as FROM public.evidence")}
    # Looking an id up runs a domain's check (of this variant's table or of
    # an earlier one's), as the table's owner only.
    assert ran_as <= {SVC}
    if variant == "domain_check":
        assert ran_as == {SVC}


def test_nothing_written_under_a_resource_without_append(setup):
    with login(setup, MALLORY) as m:
        assert sqlstate(m, "SELECT notify_ext.register_resource('m_child', 'thing', 'c2')") == "42501"
        assert sqlstate(m, "SELECT notify_ext.publish('s', 'x', '{}', 'c1')") == "42501"
        assert sqlstate(m, "SELECT notify_ext.request_access('c2', 'READ')") is None
    assert not [e for e in events_under(setup, "bob_p") if e[2] == MALLORY]
    assert_no_escalation(setup)


def test_a_schema_made_beforehand_by_someone_else_is_refused(setup):
    """A role with CREATE on a database makes schema notify_ext, with a
    function of its own in it, before a superuser creates the extension."""
    name = "attack_preschema"
    with psycopg.connect(dsn_for("postgres"), autocommit=True) as su:
        su.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        su.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        su.execute(sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(sql.Identifier(name), sql.Identifier(MALLORY)))
    try:
        with login(dsn_for(name), MALLORY) as m:
            m.execute("CREATE SCHEMA notify_ext")
            m.execute("CREATE FUNCTION notify_ext.current_principal() RETURNS text LANGUAGE sql AS $$ SELECT 'x' $$")
        with psycopg.connect(dsn_for(name), autocommit=True) as su:
            assert sqlstate(su, "CREATE EXTENSION notify_ext") == "42P06"
            # Nor one the superuser made where someone else put an object.
            su.execute("DROP SCHEMA notify_ext CASCADE")
            su.execute("CREATE SCHEMA notify_ext")
            su.execute(sql.SQL("GRANT CREATE ON SCHEMA notify_ext TO {}").format(sql.Identifier(MALLORY)))
        with login(dsn_for(name), MALLORY) as m:
            m.execute("CREATE FUNCTION notify_ext.now() RETURNS timestamptz LANGUAGE sql AS $$ SELECT 'epoch'::timestamptz $$")
        with psycopg.connect(dsn_for(name), autocommit=True) as su:
            assert sqlstate(su, "CREATE EXTENSION notify_ext") == "42P06"
            # An empty schema the superuser made itself is fine.
            su.execute("DROP SCHEMA notify_ext CASCADE")
            su.execute("CREATE SCHEMA notify_ext")
            su.execute("CREATE EXTENSION notify_ext")
    finally:
        with psycopg.connect(dsn_for("postgres"), autocommit=True) as su:
            su.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def notify_ext_workers(su, datname):
    return su.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'notify_ext%%worker'"
        " AND datname = %s", (datname,)).fetchone()[0]


@pytest.mark.parametrize("installed", [False, True], ids=["without_notify_ext", "with_a_webhook"])
def test_database_settings_cannot_steer_the_workers(setup, installed):
    """The owner of a database sets its search_path to put a schema of its
    own before pg_catalog, and plants there = operators (name = text, name =
    name, oid = oid) that run the payload.  After a server start the
    launcher starts the webhook and relay workers in every database, as the
    bootstrap superuser, and they run queries there; none may resolve an
    operator through the database's search_path."""
    name = "attack_dbsettings"
    with psycopg.connect(dsn_for("postgres"), autocommit=True) as su:
        su.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        su.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(MALLORY)))
    try:
        with psycopg.connect(dsn_for(name), autocommit=True) as su:
            su.execute("CREATE TABLE public.evidence (run_as text, attacker text, at timestamptz)")
            su.execute("GRANT INSERT, SELECT ON public.evidence TO PUBLIC")
            if installed:
                su.execute("CREATE EXTENSION notify_ext")
        with login(dsn_for(name), MALLORY) as m:
            m.execute("CREATE SCHEMA trap")
            m.execute(PAYLOAD.format(schema="trap"))
            for left, right in (("name", "text"), ("name", "name"), ("oid", "oid")):
                m.execute(f"""
                    CREATE FUNCTION trap.eq(a {left}, b {right}) RETURNS boolean LANGUAGE plpgsql AS $$
                    BEGIN
                        PERFORM trap.payload(a, '{MALLORY}');
                        RETURN a::text OPERATOR(pg_catalog.=) b::text;
                    END$$""")
                m.execute(f"CREATE OPERATOR trap.= (LEFTARG = {left}, RIGHTARG = {right}, FUNCTION = trap.eq)")
            m.execute(sql.SQL("ALTER DATABASE {} SET search_path = trap, pg_catalog").format(sql.Identifier(name)))
        if installed:
            # A webhook made now has its worker start under the new settings.
            with psycopg.connect(dsn_for(name) + " options='-csearch_path=pg_catalog'", autocommit=True) as su:
                su.execute("SELECT notify_ext.create_webhook('http://192.0.2.1:9/hook')")
        with psycopg.connect(dsn_for("postgres"), autocommit=True) as su:
            # A worker's transactions there show in the database's commits.
            time.sleep(0.5)
            commits = "SELECT xact_commit FROM pg_stat_database WHERE datname = %s"
            before = su.execute(commits, (name,)).fetchone()[0]
            (launcher,) = su.execute(
                "SELECT pid FROM pg_stat_activity WHERE backend_type = 'notify_ext launcher'").fetchone()
            su.execute("SELECT pg_terminate_backend(%s)", (launcher,))
            deadline = time.monotonic() + 30
            while not (su.execute(commits, (name,)).fetchone()[0] > before
                       and (installed or notify_ext_workers(su, name) == 0)):
                assert time.monotonic() < deadline, "no worker ran in the database"
                time.sleep(0.1)
            time.sleep(1)
        # Checked with a search_path of our own: the database's is a trap.
        assert_no_escalation(dsn_for(name) + " options='-csearch_path=pg_catalog,public'")
        assert_no_escalation(setup)
    finally:
        with psycopg.connect(dsn_for("postgres"), autocommit=True) as su:
            su.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
            su.execute(sql.SQL("ALTER ROLE {} NOSUPERUSER").format(sql.Identifier(MALLORY)))


def test_database_settings_cannot_change_who_the_workers_are(setup):
    """The owner of a database sets, for every session there, role and
    session_authorization to itself, read-only transactions and a statement
    timeout of 1 ms.  The webhook worker connects there as the bootstrap
    superuser and applies the database's settings: it must still be that
    superuser, able to write, and deliver."""
    from webhook_servers import HookServer

    name = "attack_dbroles"
    hook = HookServer()
    with psycopg.connect(dsn_for("postgres"), autocommit=True) as su:
        su.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        su.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(MALLORY)))
    # The superuser's own sessions there override what the owner sets.
    su_dsn = dsn_for(name) + (" options='-crole=none -cdefault_transaction_read_only=off"
                              " -cstatement_timeout=0 -csearch_path=pg_catalog,public'")
    try:
        with psycopg.connect(su_dsn, autocommit=True) as su:
            su.execute("CREATE EXTENSION notify_ext")
            su.execute("SELECT notify_ext.create_webhook(%s)", (hook.url(),))
        with login(dsn_for("postgres"), MALLORY) as m:
            for setting in ("role = {}", "session_authorization = {}",
                            "default_transaction_read_only = on", "statement_timeout = 1"):
                m.execute(sql.SQL("ALTER DATABASE {} SET " + setting).format(
                    sql.Identifier(name), sql.Identifier(MALLORY)))
        with psycopg.connect(dsn_for("postgres"), autocommit=True) as su:
            # The running worker is started again, under the new settings.
            su.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                       " WHERE backend_type = 'notify_ext webhook worker' AND datname = %s", (name,))
        with psycopg.connect(su_dsn, autocommit=True) as su:
            su.execute("SELECT notify_ext.publish('s', 'attack.dbroles')")
        hook.wait_for(1, timeout=30)
        # ... and recorded it (a write, with the owner's rights).
        with psycopg.connect(su_dsn, autocommit=True) as su:
            deadline = time.monotonic() + 15
            while su.execute("SELECT count(*) FROM notify_ext.deliveries WHERE status_code = 200").fetchone()[0] == 0:
                assert time.monotonic() < deadline, "the delivery was not recorded"
                time.sleep(0.1)
        assert_no_escalation(setup)
    finally:
        hook.close()
        with psycopg.connect(dsn_for("postgres"), autocommit=True) as su:
            su.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def test_pruning_job_runs_only_in_its_own_database(setup):
    """schedule_pruning() makes a pg_cron job that runs prune() as the
    extension's owner (a superuser) in the database the job names, by name.
    The database is dropped (the tenant leaves); the job stays in pg_cron.
    mallory, who may create databases, creates one of that name with a
    schema notify_ext and a prune() there that runs the payload.  The job's
    next run is played here the way pg_cron runs it: its command, in its
    database, as its user."""
    name = "attack_cronjob"
    with psycopg.connect(dsn_for("postgres"), autocommit=True) as su:
        preload = su.execute("SHOW shared_preload_libraries").fetchone()[0]
        if "pg_cron" not in preload:
            pytest.skip("pg_cron is not in shared_preload_libraries of the test cluster")
        cron_db = su.execute("SHOW cron.database_name").fetchone()[0]
        su.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        su.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        su.execute(sql.SQL("ALTER ROLE {} CREATEDB").format(sql.Identifier(MALLORY)))
    cron = psycopg.connect(dsn_for(cron_db), autocommit=True)
    had_cron = cron.execute("SELECT count(*) FROM pg_extension WHERE extname = 'pg_cron'").fetchone()[0] > 0
    if not had_cron:
        cron.execute("CREATE EXTENSION pg_cron")
    job_name = f"notify_ext_prune_{name}"
    try:
        with psycopg.connect(dsn_for(name), autocommit=True) as su:
            su.execute("CREATE EXTENSION notify_ext")
            su.execute("SELECT notify_ext.schedule_pruning()")
            # The job runs in its own database.
            (command,) = cron.execute("SELECT command FROM cron.job WHERE jobname = %s", (job_name,)).fetchone()
            su.execute(command)
        with psycopg.connect(dsn_for("postgres"), autocommit=True) as su:
            su.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
        with login(dsn_for("postgres"), MALLORY) as m:
            m.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        with login(dsn_for(name), MALLORY) as m:
            m.execute("CREATE TABLE public.evidence (run_as text, attacker text, at timestamptz)")
            m.execute("CREATE SCHEMA notify_ext")
            m.execute(PAYLOAD.format(schema="notify_ext"))
            m.execute(f"""CREATE FUNCTION notify_ext.prune() RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
                SELECT pg_catalog.jsonb_build_object('ran', notify_ext.payload(1, '{MALLORY}')) $$""")
        (command, database, username) = cron.execute(
            "SELECT command, database, username FROM cron.job WHERE jobname = %s", (job_name,)).fetchone()
        assert database == name
        with psycopg.connect(dsn_for(database), user=username, autocommit=True) as job:
            assert sqlstate(job, command) == "55000"
        assert_no_escalation(dsn_for(name) + " options='-csearch_path=pg_catalog,public'")
    finally:
        cron.execute("SELECT cron.unschedule(jobid) FROM cron.job WHERE jobname = %s", (job_name,))
        if not had_cron:
            cron.execute("DROP EXTENSION pg_cron")
        cron.close()
        with psycopg.connect(dsn_for("postgres"), autocommit=True) as su:
            su.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            su.execute(sql.SQL("ALTER ROLE {} NOSUPERUSER NOCREATEDB").format(sql.Identifier(MALLORY)))


def test_dropped_databases_do_not_use_up_shared_memory(setup):
    """A role that may create databases creates one from a template with
    notify_ext, publishes there (which claims the database's slot for
    numbering events) and drops it, over and over: more times than there
    are slots.  The slots of dropped databases are reused; the server's
    spare shared memory does not shrink."""
    template = "attack_cycle_tpl"
    free = "SELECT size FROM pg_shmem_allocations WHERE name IS NULL"
    with psycopg.connect(dsn_for("postgres"), autocommit=True) as su:
        su.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(template)))
        su.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(template)))
    with psycopg.connect(dsn_for(template), autocommit=True) as su:
        su.execute("CREATE EXTENSION notify_ext")
    try:
        with psycopg.connect(dsn_for("postgres"), autocommit=True) as su:
            before = None
            for i in range(300):
                name = sql.Identifier(f"attack_cycle_{i}")
                su.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
                    name, sql.Identifier(template)))
                with psycopg.connect(dsn_for(f"attack_cycle_{i}"), autocommit=True) as c:
                    c.execute("SELECT notify_ext.publish('cycle', 'made', '{}')")
                su.execute(sql.SQL("DROP DATABASE {}").format(name))
                if i == 20:
                    before = su.execute(free).fetchone()[0]
            after = su.execute(free).fetchone()[0]
        assert after == before, f"spare shared memory went from {before} to {after} bytes"
    finally:
        with psycopg.connect(dsn_for("postgres"), autocommit=True) as su:
            su.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(template)))
