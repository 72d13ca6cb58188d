"""Fuzz test of the SQL surface (issue 14, "Tests").

Every function in schema notify_ext whose name does not start with "_" is
read from the catalog at run time (so a new function is fuzzed without a
change here), and so are the columns of the views events, tracked_tables and
deliveries.  Each is called with values generated from its argument types
and names: NULLs, empty and 1 MB strings, odd identifiers, negative, zero and
extreme numbers, valid, deep, huge and malformed jsonb, odd intervals,
timestamps and arrays, unknown and known ids (a little state is set up
first: a resource tree, a tracked table with rows, consumers, notifications,
auth configs and webhooks to http://127.0.0.1:9/, where nothing listens).

The calls, in this order until the time budget is spent:
  1. for each role and function: all arguments NULL; only the required
     arguments, with good values; then each argument in turn bad (every
     value of its pool) with the others good and the defaulted ones left out
     (named notation where needed), and each odd value of the extension's
     settings before the functions it matters to;
  2. random combinations (some defaulted arguments left out, positional or
     named notation), with notify_ext.principal or another setting of the
     extension (app_role, permission_function, retention intervals,
     event_buffer, ...) sometimes set locally to an odd value, SELECTs of the
     views filtered by odd values, and INSERT/UPDATE/DELETE of the tracked
     table.
Each call runs in its own transaction (committed or rolled back at random,
so that state evolves and commit-time code runs) with statement_timeout
10s, as a superuser, as a plain login role, and as a member of the role
named by notify_ext.app_role.

Asserted, all failures collected into one message: no error with SQLSTATE
class XX or 58, no lost connection, no call of 10 s or more (a statement
timeout counts; only a long poll asked to wait longer may be cancelled),
malformed input rejected with a class 22 error, no resource leak warning,
and no crash in the server log ("terminated by signal", PANIC, TRAP:,
"server process ... was terminated").

Environment: NOTIFY_EXT_FUZZ_SEED replays a run (the seed is printed and is
in the failure message); NOTIFY_EXT_FUZZ_SECONDS is the time from the start
of the set-up after which no new call is made (default 45: with a last call
of up to 10 s and clean-up, the test stays within a minute);
NOTIFY_EXT_FUZZ_REPORT names a file to write every failure, the slow calls
and the SQLSTATEs seen per function to, as JSON.
Run with pytest -s to see the seed, the number of calls, the calls over 2 s
and the SQLSTATEs per function when the test passes.

Webhook and token URLs are only ever loopback IP literals or strings that
are no http(s) URL, so that nothing is sent (nor looked up in DNS) beyond
this machine.
"""

import collections
import json
import os
import random
import re
import threading
import time
import uuid

import psycopg
import pytest
from psycopg import sql
from psycopg.types.string import TextLoader

from conftest import PGLOG

SEED = int(os.environ.get("NOTIFY_EXT_FUZZ_SEED") or random.SystemRandom().randrange(1, 2**31))
BUDGET_S = float(os.environ.get("NOTIFY_EXT_FUZZ_SECONDS", "45"))
REPORT = os.environ.get("NOTIFY_EXT_FUZZ_REPORT")

CALL_LIMIT_S = 10.0     # statement_timeout, and no call may take as long
SLOW_S = 2.0            # calls slower than this are listed
LONG_POLL_TIMEOUT = "1s"

PLAIN = "fuzz_plain"    # a plain login role
APP = "fuzz_app"        # named by notify_ext.app_role
SVC = "fuzz_svc"        # a login member of APP
ROLES = (PLAIN, SVC, APP)
CALLERS = ("super", "plain", "app")
CALLER_ROLE = {"super": "postgres", "plain": PLAIN, "app": SVC}

VIEWS = ("events", "tracked_tables", "deliveries")

# Server log lines that mean a backend crashed.
CRASH_LINE = re.compile(
    r"terminated by signal|\bPANIC\b|TRAP:|server process .* was terminated|"
    r"terminated by exception|was terminated by")
# Warnings that mean the extension leaked a resource.
LEAK_WARNING = re.compile(r"leak|still referenced|not closed|was not released", re.I)


# ---------------------------------------------------------------- values

def lit(s):
    """s as an SQL string literal (E'' with escapes when it holds control
    characters)."""
    if all(c.isprintable() for c in s):
        return "'" + s.replace("'", "''") + "'"
    out = []
    for c in s:
        if c == "\\":
            out.append("\\\\")
        elif c == "'":
            out.append("\\'")
        elif c.isprintable():
            out.append(c)
        elif ord(c) < 0x100:
            out.append("\\x%02x" % ord(c))
        elif ord(c) < 0x10000:
            out.append("\\u%04x" % ord(c))
        else:
            out.append("\\U%08x" % ord(c))
    return "E'" + "".join(out) + "'"


class V:
    """One argument value: sql is the expression passed (already of the
    parameter's type, or an untyped literal for malformed input)."""

    __slots__ = ("sql", "malformed", "long_wait", "big")

    def __init__(self, sql_text, malformed=False, long_wait=False, big=False):
        self.sql = sql_text
        self.malformed = malformed
        self.long_wait = long_wait
        self.big = big

    def __repr__(self):
        return self.sql


def typed(typ, raw):
    """A literal of type typ from a Python string (None: NULL)."""
    if raw is None:
        return V(f"NULL::{typ}")
    return V(f"{lit(raw)}::{typ}")


def expr(typ, e):
    """A value computed by the server (the large ones)."""
    return V(f"({e})::{typ}", big=True)


def bad(raw):
    """Malformed input for the parameter's type: an untyped literal, so the
    type's input function rejects it (a class 22 error is expected)."""
    return V(lit(raw), malformed=True)


MB = 1 << 20
ODD_TEXT = [
    "", "x", " ", "\t\n ", "a.b", '"quoted"', "ümlaut", "pg_catalog.pg_class",
    "x; DROP TABLE y", "n" * 200, "\x01", "a\x01b", "O'Reilly", "%s%n%x\\", "🎉",
    "\u200fRTL", "*", "%", "_", "NULL", "null", "-1", "READ ", "read",
]
ODD_TEXT_EXPRS = [
    f"repeat('x', {MB})",
    f"repeat('ü', {MB // 2})",
]
# Webhook and token URLs: loopback IP literals only, or no http(s) URL at
# all.  (A generic string that is no URL is refused before anything is
# stored; none of ODD_TEXT starts with a scheme.)
URLS = [
    "http://127.0.0.1:9/", "https://127.0.0.1:9/x?y=1#z", "http://[::1]:9/",
    "http://127.0.0.1:99999/", "http://127.0.0.1:0/", "http://127.0.0.1:-1/",
    "http://user:pw@127.0.0.1:9/", "http://", "https://", "http:///x", "http://:9/",
    "ftp://127.0.0.1/", "file:///nonexistent/x", "gopher://127.0.0.1:9/",
    "javascript:alert(1)", "HTTP://127.0.0.1:9/", "http://127.0.0.1:9/%0d%0aX-Evil:%201",
    "http://127.0.0.1:9/ x", "http://[::1", "http://[zz::1]:9/",
]
URL_EXPRS = [f"'http://127.0.0.1:9/' || repeat('a', {MB})"]

INTS = ["-1", "0", "1", "2147483647", "-2147483648"]
BIGINTS = INTS + ["9223372036854775807", "-9223372036854775808"]

JSONB = [
    "{}", "[]", "null", '"s"', "1", "-1", "true", "1e308", "-0.0000001", '""',
    '{"a":1,"a":2}', '{"reply":1,"salt":[],"hmac":{}}', '[{"reply":1,"salt":[],"hmac":{}}]',
    '[{"reply":null,"salt":null,"hmac":null}]', '[{"reply":"x","salt":"y","hmac":"z"}]',
    '[{"user":1,"notification":"x"}]', '[{"user":null,"notification":null}]',
    '[{"user":"fuzz_plain","notification":{"type":[],"message":{},"meta":"s"}}]',
    '[{"user":"fuzz_plain","notification":{"type":"t","message":"m","meta":[1]}}]',
    '[{"user":"","notification":{"type":"","message":""}}]',
    '[null]', "[[]]", "[{}]", '[1,"a",null,true]', '{"resource":{"id":1}}',
    '{"resource":"fz_d","id":[]}', '{"":""}', '{"ü":"🎉"}',
]
JSONB_EXPRS = [
    "repeat('{\"a\":', 50) || '1' || repeat('}', 50)",
    "repeat('[', 50) || repeat(']', 50)",
    "repeat('[', 5000) || repeat(']', 5000)",
    "(SELECT jsonb_agg(g) FROM generate_series(1, 100000) g)::text",
    "(SELECT jsonb_agg(jsonb_build_object('reply', g, 'salt', 's', 'hmac', 'h'))"
    " FROM generate_series(1, 20000) g)::text",
    "(SELECT jsonb_agg(jsonb_build_object('user', 'fuzz_plain', 'notification',"
    " jsonb_build_object('type', 't' || (g % 3), 'message', 'm')))"
    " FROM generate_series(1, 20000) g)::text",
    f"to_jsonb(repeat('x', {MB}))::text",
    f"jsonb_build_object(repeat('k', {MB}), 1)::text",
]
MALFORMED_JSON = ["{", '{"a":}', "{'a':1}", "[1,2", "nul", "", " ", '{"a":1}}',
                  '"\\ud800"', '{"a":"\\u0000"}', "\x01", "1 2"]

INTERVALS = ["-1 day", "0", "1 microsecond", "00:00:00.5", "1 mon -31 days",
             "-178000000 years", "-1 microsecond"]
LONG_INTERVALS = ["1000 years", "178000000 years", "00:00:02", "1 day"]
TIMESTAMPS = ["-infinity", "infinity", "epoch", "294276-12-31 23:59:59+00",
              "4714-11-24 00:00:00+00 BC", "2000-01-01", "now"]

TEXT_ARRAYS = ["{}", "{NULL}", '{""}', "{x}", '{"a.b","ümlaut","x; DROP TABLE y"}',
               "{{a},{b}}", "[0:1]={a,b}", "{x,x,x}", '{" "}']
TEXT_ARRAY_EXPRS = [
    "(SELECT array_agg('e' || g) FROM generate_series(1, 20000) g)",
    f"ARRAY[repeat('x', {MB})]",
]
BIGINT_ARRAYS = ["{}", "{NULL}", "{-1,0,9223372036854775807,-9223372036854775808}",
                 "{{1},{2}}", "[5:6]={1,2}", "{1,1,1}", "{1,NULL,2}"]
BIGINT_ARRAY_EXPRS = ["(SELECT array_agg(g) FROM generate_series(1, 20000) g)"]

REGCLASSES = ["pg_class", "notify_ext.resources", "notify_ext.event_log",
              "notify_ext.event_log_default", "notify_ext.events", "notify_ext.consumers",
              "notify_ext.notifications_id_seq", "pg_catalog.pg_authid", "pg_temp.fz_tmp",
              "0", "-", "12345678", "4294967295", "public.fz_items", "public.fz_untracked",
              "public.fz_svc_t", "public.fz_plain_t", "public.fz_view"]


# Settings of the extension, set (SET LOCAL) before some random calls, by
# the callers that may.
GUCS = {
    "notify_ext.app_role": ("super",),
    "notify_ext.permission_function": ("super",),
    "notify_ext.event_retention": ("super",),
    "notify_ext.read_notification_retention": ("super",),
    "notify_ext.delivery_retention": ("super",),
    "notify_ext.reply_key_grace": ("super",),
    "notify_ext.prune_batch_size": ("super",),
    "notify_ext.prune_max_batches": ("super",),
    "notify_ext.prune_lock_timeout": ("super",),
    "notify_ext.partitions_ahead": ("super",),
    "notify_ext.event_buffer": CALLERS,
}
ODD_INTERVAL_SETTINGS = ["-1 day", "0", "1 microsecond", "infinity", "178000000 years", "abc", "", "1 mon"]
GUC_VALUES = {
    "notify_ext.app_role": ["", "no_such_role", PLAIN, "postgres", "pg_read_all_data", "public",
                            '"quoted"', "n" * 200],
    "notify_ext.permission_function": ["", "no_such_fn", "pg_catalog.now", "public.fz_perm_null",
                                       "public.fz_perm_raise", "public.fz_perm_int", "public.fz_perm_set",
                                       "public.fz_perm_true", "x; DROP TABLE y",
                                       "public.fz_perm_null(text,text,text)", " "],
    "notify_ext.event_retention": ODD_INTERVAL_SETTINGS,
    "notify_ext.read_notification_retention": ODD_INTERVAL_SETTINGS,
    "notify_ext.delivery_retention": ODD_INTERVAL_SETTINGS,
    "notify_ext.reply_key_grace": ODD_INTERVAL_SETTINGS,
    "notify_ext.prune_batch_size": ["100", "1000000", "99"],
    "notify_ext.prune_max_batches": ["1", "1000000"],
    "notify_ext.prune_lock_timeout": ["0", "10000"],
    "notify_ext.partitions_ahead": ["1", "0", "367"],
    "notify_ext.event_buffer": ["64kB", "64", "2147483647", "0", "1TB"],
}


class Known:
    """Ids that exist (grown by successful, committed fuzz calls)."""

    def __init__(self):
        self.resources = ["fz_p", "fz_c", "fz_d", "fz_i1"]
        self.consumers = []
        self.webhooks = []
        self.auths = []
        self.notifications = []
        self.seqs = [1]
        self.replies = []

    def uuids(self):
        return self.consumers + self.webhooks + self.auths


def pool(typ, pname, known, rng):
    """(good values, all values) for parameter pname of type typ."""
    p = (pname or "").lower()
    good, vals = [], []

    def add_text(raws, exprs=(), to_good=False):
        for r in raws:
            (good if to_good else vals).append(typed(typ, r))
        for e in exprs:
            (good if to_good else vals).append(expr(typ, e))

    if typ in ("text", "name", "character varying"):
        unknown_id = f"fz_unknown_{rng.getrandbits(32):08x}"
        if p == "url":
            add_text(["http://127.0.0.1:9/", "http://127.0.0.1:9/fz"], to_good=True)
            add_text(URLS + ["", " ", "x", "ümlaut", "\x01"], URL_EXPRS)
        elif p == "token_url":
            add_text(["http://127.0.0.1:9/token"], to_good=True)
            add_text(URLS + ["", " ", "x", "\x01"], URL_EXPRS)
        else:
            named = {
                "level": ["READ", "APPEND", "WRITE", "ADMIN", "NONE"],
                "deliver": ["all", "new", "from_date", "from_sequence"],
                "auth_type": ["NO_AUTH", "BASIC_AUTH", "OAUTH_2_CLIENT_CREDENTIALS", " basic_auth "],
                "schedule": ["*/5 * * * *", "* * * * *", "0 seconds", "61 seconds", "59 seconds",
                             "*/0 * * * *", "99 99 99 99 99", "@reboot", "-1 seconds"],
                "principal": [PLAIN, SVC, "postgres", "User#1234"],
                "recipient": [PLAIN, SVC, "postgres", "User#1234"],
                "variant": ["dataset", "item"],
                "resource_variant": ["dataset", "item", "project"],
                "stream": ["fz.stream", "public.fz_items"],
                "operation": ["fz.op", "item.create"],
                "type": ["fz.type", "PERMISSION_GRANTED"],
                "message": ["hello"],
                "key": ["k", "k:colon"],
                "secret": ["s"],
                "scope": ["read"],
                "actor": ["postgres"],
                "id_column": ["id", "n", "parent", "ctid", "xmin", "tableoid", "no_such_column"],
                "parent_column": ["parent", "id", "n", "ctid", "no_such_column"],
            }.get(p)
            if p in ("id", "resource_id", "parent_id"):
                named = known.resources
            if named:
                add_text(named[:2], to_good=True)
                add_text(named[2:])
            add_text([None, unknown_id] + ODD_TEXT, ODD_TEXT_EXPRS)
    elif typ in ("integer", "smallint"):
        # (days_ahead 366 is valid but creates 367 tables, some 3 s: left out.)
        named = {"batch_size": ["25", "1"], "items_per_page": ["50", "1000", "1001"],
                 "page": ["0", "1"], "max_deliver": ["-1", "3"], "days_ahead": ["7", "367"],
                 "days_back": ["1", "3661"]}.get(p, ["1"])
        good += [typed(typ, named[0])]
        vals += [typed(typ, v) for v in named[1:] + [None] + INTS]
        vals += [bad("9223372036854775807"), bad("abc"), bad("")]
    elif typ == "bigint":
        good += [typed(typ, str(rng.choice(known.seqs)))]
        vals += [typed(typ, v) for v in [None] + BIGINTS]
        vals += [bad("9223372036854775808"), bad("1.5"), bad("")]
    elif typ == "boolean":
        good += [V("true")]
        vals += [V("false"), V("NULL::boolean")]
        vals += [bad("maybe")]
    elif typ == "uuid":
        ids = {"consumer": known.consumers, "webhook": known.webhooks,
               "auth_config": known.auths}.get(p, known.uuids())
        good += [typed(typ, i) for i in ids[:2]]
        vals += [typed(typ, i) for i in ids[2:]]
        vals += [typed(typ, None), typed(typ, str(uuid.UUID(int=rng.getrandbits(128)))),
                 typed(typ, "00000000-0000-0000-0000-000000000000"),
                 typed(typ, "ffffffff-ffff-ffff-ffff-ffffffffffff")]
        # Ids of the other kinds (a webhook's id where a consumer's goes).
        vals += [typed(typ, i) for i in known.uuids() if i not in ids][:3]
        vals += [bad("not-a-uuid"), bad("")]
    elif typ in ("jsonb", "json"):
        if p == "replies":
            good += [typed(typ, r) for r in known.replies[:1]]
            vals += [typed(typ, r) for r in known.replies[1:]]
        elif p == "items":
            good.append(typed(typ, json.dumps(
                [{"user": PLAIN, "notification": {"type": "fz.type", "message": "bulk"}}])))
        elif p in ("payload", "meta", "refs"):
            good.append(typed(typ, '{"a": 1}'))
        else:
            good.append(typed(typ, "{}"))
        vals += [typed(typ, None)] + [typed(typ, j) for j in JSONB]
        vals += [expr(typ, e) for e in JSONB_EXPRS]
        # Type json keeps its text: escapes jsonb refuses are valid json.
        json_only = ('{"a":"\\u0000"}', '"\\ud800"')
        vals += [bad(m) for m in MALFORMED_JSON if not (typ == "json" and m in json_only)]
        if typ == "json":
            vals += [typed(typ, m) for m in json_only]
    elif typ == "interval":
        if p == "wait":
            good += [typed(typ, "0")]
            vals += [V(f"{lit(i)}::interval", long_wait=True) for i in LONG_INTERVALS]
        else:
            good += [typed(typ, "30 seconds")]
            vals += [typed(typ, i) for i in LONG_INTERVALS]
        vals += [typed(typ, None)] + [typed(typ, i) for i in INTERVALS]
        vals += [bad("infinity"), bad("1 fortnight"), bad("")]
    elif typ == "timestamp with time zone":
        good += [V("now()")]
        vals += [typed(typ, None)] + [typed(typ, t) for t in TIMESTAMPS]
        vals += [bad("2025-13-45"), bad("294277-01-01 00:00:00+00"), bad("")]
    elif typ == "text[]":
        good += [typed(typ, "{fz.op,item.create}" if p == "operations" else "{fz.stream}")]
        vals += [typed(typ, None)] + [typed(typ, a) for a in TEXT_ARRAYS]
        vals += [expr(typ, e) for e in TEXT_ARRAY_EXPRS]
        vals += [bad("{"), bad("{a,{b}}"), bad("x")]
    elif typ == "bigint[]":
        ids = known.notifications
        good += [typed(typ, "{" + ",".join(str(i) for i in ids[:3]) + "}")]
        vals += [typed(typ, None)] + [typed(typ, a) for a in BIGINT_ARRAYS]
        vals += [expr(typ, e) for e in BIGINT_ARRAY_EXPRS]
        vals += [bad("{"), bad('{""}'), bad("{1.5}")]
    elif typ == "regclass":
        good += [typed(typ, "public.fz_items")]
        vals += [typed(typ, None)] + [typed(typ, r) for r in REGCLASSES]
        vals += [V(lit("no_such_table")), V(lit("a.b.c.d")), V(lit("")), V(lit("x; DROP TABLE y"))]
    elif typ.startswith("reg"):
        good += [typed(typ, "0")]
        vals += [typed(typ, None), typed(typ, "-")]
    else:
        # A type this test does not know yet: NULL, and text for it to parse.
        good += [V(f"NULL::{typ}")]
        vals += [V(lit("")), V(lit("x")), V(lit("0"))]
    if not good:
        good = [next((v for v in vals if not v.sql.startswith("NULL") and not v.malformed), vals[0])]
    return good, good + vals


# ---------------------------------------------------------------- targets

def quote_ident(name):
    return '"' + name.replace('"', '""') + '"'


class Fn:
    def __init__(self, name, params, ndefaults):
        self.name = name
        self.params = params            # [(name, type)]
        self.ndefaults = ndefaults

    def required(self, i):
        return i < len(self.params) - self.ndefaults

    def render(self, values, named):
        """values: {index: V}; indexes left out take their defaults."""
        if named:
            args = ", ".join(
                f"{quote_ident(self.params[i][0])} => {values[i].sql}"
                for i in sorted(values))
        else:
            n = max(values) + 1 if values else 0
            args = ", ".join(values[i].sql for i in range(n))
        return f"SELECT * FROM notify_ext.{self.name}({args})"


def functions(conn):
    rows = conn.execute("""
        SELECT p.proname, p.pronargdefaults,
               ARRAY(SELECT coalesce(a.name, '')
                       FROM unnest(coalesce(p.proallargtypes, p.proargtypes::oid[]),
                                   coalesce(p.proargmodes, array_fill('i'::"char", ARRAY[p.pronargs])),
                                   p.proargnames) WITH ORDINALITY a(t, mode, name, o)
                      WHERE a.mode IN ('i', 'b', 'v') ORDER BY a.o),
               ARRAY(SELECT format_type(t, NULL) FROM unnest(p.proargtypes) WITH ORDINALITY u(t, o) ORDER BY o)
          FROM pg_proc p
         WHERE p.pronamespace = 'notify_ext'::regnamespace AND p.proname !~ '^_'
           AND p.prokind = 'f'
         ORDER BY p.proname, p.oid""").fetchall()
    fns = []
    for name, ndef, names, types in rows:
        names = [n or None for n in names] + [None] * (len(types) - len(names))
        fns.append(Fn(name, list(zip(names, types)), ndef))
    return fns


def view_columns(conn):
    rows = conn.execute("""
        SELECT c.relname, a.attname, format_type(a.atttypid, NULL)
          FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
         WHERE c.relnamespace = 'notify_ext'::regnamespace AND c.relname = ANY(%s)
           AND a.attnum > 0 AND NOT a.attisdropped
         ORDER BY c.relname, a.attnum""", (list(VIEWS),)).fetchall()
    cols = collections.defaultdict(list)
    for rel, col, typ in rows:
        cols[rel].append((col, typ))
    return cols


# ---------------------------------------------------------------- state

@pytest.fixture(scope="module")
def fuzz_db(db_dsn):
    t0 = time.monotonic()
    dbname = psycopg.conninfo.conninfo_to_dict(db_dsn)["dbname"]
    ident = sql.Identifier
    known = Known()
    with psycopg.connect(db_dsn, autocommit=True) as su:
        for r in ROLES:
            su.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(ident(r)))
        su.execute(sql.SQL("CREATE ROLE {} LOGIN").format(ident(PLAIN)))
        su.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(ident(APP)))
        su.execute(sql.SQL("CREATE ROLE {} LOGIN IN ROLE {}").format(ident(SVC), ident(APP)))
        su.execute(sql.SQL("ALTER DATABASE {} SET notify_ext.app_role = {}").format(
            ident(dbname), sql.Literal(APP)))
        # Errors are expected by the thousand, many naming a 1 MB value:
        # keep them out of the server log (crashes are logged by the
        # postmaster, PANICs still are, and warnings reach the client).
        su.execute(sql.SQL("ALTER DATABASE {} SET log_min_messages = 'fatal'").format(ident(dbname)))

        su.execute("SELECT notify_ext.register_resource('fz_p', 'project')")
        su.execute("SELECT notify_ext.register_resource('fz_c', 'collection', 'fz_p')")
        su.execute("SELECT notify_ext.register_resource('fz_d', 'dataset', 'fz_c')")
        su.execute("CREATE TABLE public.fz_items (id text PRIMARY KEY, parent text, n integer)")
        su.execute("SELECT notify_ext.track('public.fz_items', 'item', parent_column => 'parent')")
        su.execute("INSERT INTO public.fz_items VALUES ('fz_i1', 'fz_d', 1), ('fz_i2', 'fz_i1', 2)")
        su.execute(sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON public.fz_items TO {}, {}").format(
            ident(PLAIN), ident(SVC)))
        su.execute("CREATE TABLE public.fz_untracked (id text PRIMARY KEY, parent text)")
        su.execute("CREATE VIEW public.fz_view AS SELECT * FROM public.fz_untracked")
        su.execute("CREATE TABLE public.fz_svc_t (id text PRIMARY KEY, parent text)")
        su.execute(sql.SQL("ALTER TABLE public.fz_svc_t OWNER TO {}").format(ident(SVC)))
        su.execute("CREATE TABLE public.fz_plain_t (id bigint PRIMARY KEY, parent bigint)")
        su.execute(sql.SQL("ALTER TABLE public.fz_plain_t OWNER TO {}").format(ident(PLAIN)))
        su.execute("SELECT notify_ext.grant_permission(%s, 'fz_c', 'ADMIN')", (PLAIN,))
        # Candidates for notify_ext.permission_function, good and bad.
        for name, body in (("fz_perm_true", "RETURNS boolean LANGUAGE sql AS 'SELECT true'"),
                           ("fz_perm_null", "RETURNS boolean LANGUAGE sql AS 'SELECT NULL::boolean'"),
                           ("fz_perm_int", "RETURNS integer LANGUAGE sql AS 'SELECT 1'"),
                           ("fz_perm_set", "RETURNS SETOF boolean LANGUAGE sql AS 'VALUES (true), (false)'"),
                           ("fz_perm_raise", "RETURNS boolean LANGUAGE plpgsql AS "
                                             "'BEGIN RAISE EXCEPTION ''fz_perm_raise''; END'")):
            su.execute(f"CREATE FUNCTION public.{name}(text, text, text) {body}")
        su.execute("SELECT notify_ext.grant_permission(%s, 'fz_p', 'WRITE')", (SVC,))
        for i in range(3):
            su.execute("SELECT notify_ext.publish('fz.stream', 'fz.op', %s::jsonb, 'fz_d')",
                       (json.dumps({"i": i}),))
        q = "SELECT notify_ext.create_stream_consumer({})"
        known.consumers.append(str(su.execute(q.format("")).fetchone()[0]))
        known.consumers.append(str(su.execute(q.format("'fz_p'")).fetchone()[0]))
        for n, (rcpt, typ) in enumerate([(PLAIN, "fz.type"), (PLAIN, "fz.other"),
                                         ("postgres", "fz.type"), (SVC, "fz.type")]):
            known.notifications.append(su.execute(
                "SELECT notify_ext.create_notification(%s, %s, %s, '{\"n\": 1}')",
                (rcpt, typ, f"hello {n}")).fetchone()[0])
        known.auths.append(str(su.execute(
            "SELECT notify_ext.create_subscription_auth('BASIC_AUTH', 'k', 's')").fetchone()[0]))
        known.auths.append(str(su.execute(
            "SELECT notify_ext.create_subscription_auth('NO_AUTH')").fetchone()[0]))
        known.auths.append(str(su.execute(
            "SELECT notify_ext.create_subscription_auth('OAUTH_2_CLIENT_CREDENTIALS', 'cid', 'cs',"
            " 'read', 'http://127.0.0.1:9/token')").fetchone()[0]))
        known.webhooks.append(str(su.execute(
            "SELECT notify_ext.create_webhook('http://127.0.0.1:9/')").fetchone()[0]))
        known.webhooks.append(str(su.execute(
            "SELECT notify_ext.create_webhook('http://127.0.0.1:9/h', resource_id => 'fz_p',"
            " auth_config => %s)", (known.auths[0],)).fetchone()[0]))
        rows = su.execute("SELECT seq, reply, salt, hmac FROM notify_ext.get_event_message_batch(%s, 3)",
                          (known.consumers[0],)).fetchall()
        replies = [{"reply": r, "salt": s, "hmac": h} for _, r, s, h in rows]
        known.seqs += [r[0] for r in rows]
        if replies:
            known.replies.append(json.dumps(replies))
            forged = dict(replies[0], hmac=replies[0]["hmac"][::-1])
            known.replies.append(json.dumps([replies[0], forged]))
            known.replies.append(json.dumps([dict(replies[0], salt="")]))
            known.replies.append(json.dumps([replies[0]] * 1000))
    for caller, role in ((PLAIN, PLAIN), (SVC, SVC)):
        with psycopg.connect(db_dsn, user=role, autocommit=True) as c:
            known.consumers.append(str(c.execute(
                "SELECT notify_ext.create_stream_consumer(%s)",
                ("fz_c" if caller == PLAIN else "fz_d",)).fetchone()[0]))
    # schedule_pruning() reaches pg_cron in the database named by
    # cron.database_name: install it there for the test if it is preloaded
    # and missing (as test_retention_e2e does), and remove it afterwards.
    with psycopg.connect(db_dsn, autocommit=True) as su:
        preload = su.execute("SHOW shared_preload_libraries").fetchone()[0]
        cron_db = su.execute("SELECT current_setting('cron.database_name', true)").fetchone()[0]
    made_cron = False
    if cron_db and "pg_cron" in preload:
        with psycopg.connect(db_dsn, dbname=cron_db, autocommit=True) as c:
            if not c.execute("SELECT count(*) FROM pg_extension WHERE extname = 'pg_cron'").fetchone()[0]:
                c.execute("CREATE EXTENSION pg_cron")
                made_cron = True
    yield db_dsn, known, t0
    with psycopg.connect(db_dsn, autocommit=True) as su:
        su.execute(sql.SQL("ALTER DATABASE {} RESET ALL").format(ident(dbname)))
    if cron_db:
        # The jobs schedule_pruning() made for this database.
        with psycopg.connect(db_dsn, dbname=cron_db, autocommit=True) as c:
            if made_cron:
                c.execute("DROP EXTENSION pg_cron")
            elif c.execute("SELECT to_regclass('cron.job')").fetchone()[0]:
                c.execute("SELECT cron.unschedule(jobid) FROM cron.job WHERE database = %s", (dbname,))
    with psycopg.connect(db_dsn, autocommit=True) as su:
        su.execute(sql.SQL("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                           " WHERE usename = ANY({}) AND datname = {}").format(
            sql.Literal(list(ROLES)), sql.Literal(dbname)))
        for r in ROLES:
            su.execute(sql.SQL("DROP OWNED BY {}").format(ident(r)))
        for r in (SVC, PLAIN, APP):
            su.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(ident(r)))


# ---------------------------------------------------------------- runner

def short(s, n=300):
    s = " ".join(str(s).split())
    return s if len(s) <= n else s[: n - 20] + f"... [{len(s)} chars]"


class Fuzzer:
    def __init__(self, dsn, known, rng):
        self.dsn = dsn
        self.known = known
        self.rng = rng
        self.conns = {}
        self.failures = []
        self.slow = []
        self.states = collections.defaultdict(collections.Counter)  # target -> SQLSTATE -> n
        self.examples = {}      # (target, sqlstate) -> (caller, stmt, message)
        self.warnings = collections.Counter()
        self.seconds = collections.Counter()    # target -> time spent
        self.calls = 0
        self.crashes = collections.Counter()     # target -> lost connections
        self.timeouts = collections.Counter()    # target -> calls of 10 s or more
        self.skipped = set()
        self.dead = False       # the server did not come back after a crash
        self.current = None
        self.stop = threading.Event()
        self.watchdog = threading.Thread(target=self._watch, daemon=True)
        self.watchdog.start()
        self.notice_target = None

    # A call the server does not end in time is cancelled, then terminated.
    def _watch(self):
        while not self.stop.wait(0.2):
            cur = self.current
            if cur is None:
                continue
            age = time.monotonic() - cur["t0"]
            if age > CALL_LIMIT_S / 2 and "waiting" not in cur:
                cur["waiting"] = self._waiting(cur["pid"])
            if age > CALL_LIMIT_S + 2 and not cur.get("cancelled"):
                cur["cancelled"] = True
                try:
                    cur["conn"].cancel()
                except Exception:
                    pass
            if age > CALL_LIMIT_S + 6 and not cur.get("terminated"):
                cur["terminated"] = True
                try:
                    with psycopg.connect(self.dsn, autocommit=True, connect_timeout=5) as admin:
                        admin.execute("SELECT pg_terminate_backend(%s)", (cur["pid"],))
                except Exception:
                    pass

    def _waiting(self, pid):
        """What a slow call waits for, and who holds it up."""
        try:
            with psycopg.connect(self.dsn, autocommit=True, connect_timeout=5) as admin:
                rows = admin.execute("""
                    SELECT a.state, a.wait_event_type, a.wait_event, b.pid, b.backend_type,
                           b.state, b.wait_event, left(b.query, 200)
                      FROM pg_stat_activity a
                      LEFT JOIN LATERAL unnest(pg_blocking_pids(a.pid)) bp(pid) ON true
                      LEFT JOIN pg_stat_activity b ON b.pid = bp.pid
                     WHERE a.pid = %s""", (pid,)).fetchall()
        except psycopg.Error as e:
            return f"(could not look: {e})"
        out = []
        for state, wtype, wevent, bpid, btype, bstate, bwait, bquery in rows:
            s = f"after {CALL_LIMIT_S / 2:g} s: {state}, waiting on {wtype}/{wevent}"
            if bpid:
                s += f"; blocked by pid {bpid} ({btype}, {bstate}, {bwait}): {bquery}"
            out.append(s)
        return "; ".join(out)

    def connect(self, caller):
        role = CALLER_ROLE[caller]
        deadline = time.monotonic() + 60
        while True:
            try:
                conn = psycopg.connect(self.dsn, user=role, autocommit=True, connect_timeout=5)
                break
            except psycopg.OperationalError:
                # The server restarts after a crash.
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        conn.add_notice_handler(lambda d, c=caller: self._notice(c, d))
        # Results are read as text: the server's output functions run, and a
        # 5000-level jsonb does not trouble Python's json module.
        # Neither do years BC, infinities and intervals beyond timedelta.
        for typ in ("json", "jsonb", "timestamptz", "timestamp", "date", "time", "timetz",
                    "interval", "numeric"):
            conn.adapters.register_loader(typ, TextLoader)
        conn.execute("CREATE TEMP TABLE fz_tmp (id text PRIMARY KEY, parent text)")
        self.conns[caller] = conn
        return conn

    def conn(self, caller):
        c = self.conns.get(caller)
        if c is None or c.closed or c.broken:
            if c is not None:
                try:
                    c.close()
                except Exception:
                    pass
            c = self.connect(caller)
        return c

    def _notice(self, caller, diag):
        if diag.severity_nonlocalized == "WARNING" or diag.severity == "WARNING":
            msg = diag.message_primary or ""
            self.warnings[short(msg, 120)] += 1
            if LEAK_WARNING.search(msg) and self.notice_target:
                target, stmt = self.notice_target
                self.fail("leak warning", caller, target, stmt, diag.sqlstate, msg, 0)

    def fail(self, kind, caller, target, stmt, state, msg, elapsed):
        self.failures.append({"kind": kind, "caller": caller, "target": target,
                              "statement": short(stmt, 600), "sqlstate": state,
                              "message": short(msg, 400), "seconds": round(elapsed, 3)})

    def call(self, caller, target, stmt, values=(), settings=(), commit=False):
        """Runs stmt in a transaction of its own as caller; checks the outcome."""
        if target in self.skipped or self.dead:
            return
        long_wait = any(v.long_wait for v in values)
        malformed = any(v.malformed for v in values)
        timeout = LONG_POLL_TIMEOUT if long_wait else f"{int(CALL_LIMIT_S)}s"
        conn = self.conn(caller)
        pid = conn.info.backend_pid
        self.calls += 1
        self.notice_target = (target, stmt)
        t0 = time.monotonic()
        cur_call = self.current = {"t0": t0, "conn": conn, "pid": pid}
        err = None
        result = None
        stage = "call"
        try:
            conn.execute("BEGIN")
            conn.execute(f"SET LOCAL statement_timeout = '{timeout}'")
            for name, value in settings:
                stage = name
                conn.execute(f"SELECT pg_catalog.set_config({lit(name)}, {value.sql}, true)")
            stage = "call"
            cur = conn.execute(stmt)
            if cur.description is not None:
                result = cur.fetchall()
            conn.execute("COMMIT" if commit else "ROLLBACK")
        except psycopg.Error as e:
            err = e
        finally:
            self.current = None
        elapsed = time.monotonic() - t0
        lost = err is not None and (conn.broken or conn.closed)
        if err is not None and not lost:
            try:
                conn.execute("ROLLBACK")
            except psycopg.Error:
                pass
        shown = "".join(f"SET {name} = {value.sql}; " for name, value in settings) + stmt
        if caller != "super":
            shown = f"SET ROLE {CALLER_ROLE[caller]}; {shown}"
        state = "ok" if err is None else (err.sqlstate or ("connection lost" if lost else "client error"))
        msg = "" if err is None else (getattr(err.diag, "message_primary", None) or str(err))
        if lost:
            self.crashes[target] += 1
            self.fail("connection lost", caller, target, shown, state, f"{msg} (backend pid {pid})", elapsed)
            if self.crashes[target] >= 3:
                self.skipped.add(target)
            # The other connections went with the server (or will be told
            # so by their next call): reopen them all.
            for c, old in list(self.conns.items()):
                try:
                    old.close()
                except Exception:
                    pass
                try:
                    self.connect(c)
                except psycopg.OperationalError as e:
                    self.dead = True
                    self.fail("server did not come back", c, target, shown, None, str(e), 0)
                    return
            return
        if stage != "call":
            # A setting was refused (notify_ext.principal must be, for a
            # plain role): the call did not run.
            target = f"set {stage}"
            malformed = False
        self.states[target][state] += 1
        self.seconds[target] += elapsed
        self.examples.setdefault((target, state), (caller, short(shown, 400), short(msg, 200)))
        if state[:2] in ("XX", "58"):
            self.fail("internal error", caller, target, shown, state, msg, elapsed)
        if elapsed >= CALL_LIMIT_S or (state == "57014" and not long_wait):
            self.timeouts[target] += 1
            waiting = cur_call.get("waiting")
            self.fail("took 10 s or more" if elapsed >= CALL_LIMIT_S else "statement timeout",
                      caller, target, shown, state, msg + (f" [{waiting}]" if waiting else ""), elapsed)
            if self.timeouts[target] >= 2:
                self.skipped.add(target)
        elif elapsed > SLOW_S:
            self.slow.append((round(elapsed, 2), caller, short(shown, 300), state,
                              cur_call.get("waiting", "")))
        if malformed and state[:2] != "22":
            self.fail("malformed input not rejected with class 22", caller, target, shown, state, msg, elapsed)
        if err is None and commit:
            self._learn(target, result)

    def _learn(self, target, result):
        """Ids returned by committed creations become known ids."""
        if not result or len(result[0]) != 1 or result[0][0] is None:
            return
        v = result[0][0]
        k = self.known
        if target == "create_stream_consumer":
            k.consumers.append(str(v))
        elif target == "create_webhook":
            k.webhooks.append(str(v))
        elif target == "create_subscription_auth":
            k.auths.append(str(v))
        elif target == "create_notification" and isinstance(v, int):
            k.notifications.append(v)

    def close(self):
        self.stop.set()
        self.watchdog.join(2)
        for c in self.conns.values():
            try:
                c.close()
            except Exception:
                pass


# The functions each setting matters to, for the systematic calls.
GUC_USERS = {
    "notify_ext.app_role": ("current_principal", "create_notification", "list_webhooks", "track",
                            "publish", "create_stream_consumer"),
    "notify_ext.permission_function": ("has_permission", "grant_permission", "create_stream_consumer",
                                       "publish", "request_access", "get_event_message_batch"),
    "notify_ext.event_retention": ("prune",),
    "notify_ext.read_notification_retention": ("prune",),
    "notify_ext.delivery_retention": ("prune",),
    "notify_ext.reply_key_grace": ("rotate_reply_key", "acknowledge_message_batch"),
    "notify_ext.prune_batch_size": ("prune",),
    "notify_ext.prune_max_batches": ("prune",),
    "notify_ext.prune_lock_timeout": ("prune",),
    "notify_ext.partitions_ahead": ("prune", "create_event_partitions"),
    "notify_ext.event_buffer": ("publish", "create_notifications_bulk"),
}


def plan_sweep(fns, known, rng):
    """The systematic calls, as (caller, function, {index: value},
    settings): per caller and function, all NULL, required only, then each
    argument bad in turn; then each odd value of each setting with the
    functions it matters to.  Round robin over (caller, function), so that
    a budget spent early still covers every function."""
    queues = []
    by_name = {fn.name: fn for fn in fns}
    for caller in CALLERS:
        for fn in fns:
            q = []
            pools = [pool(t, n, known, rng) for n, t in fn.params]
            if fn.params:
                q.append(({i: V(f"NULL::{t}") for i, (_, t) in enumerate(fn.params)}, ()))
            q.append(({i: pools[i][0][0] for i in range(len(fn.params)) if fn.required(i)}, ()))
            bads = []
            for i in range(len(fn.params)):
                for v in pools[i][1]:
                    vals = {j: rng.choice(pools[j][0]) for j in range(len(fn.params)) if fn.required(j)}
                    vals[i] = v
                    bads.append((vals, ()))
            for guc, users in GUC_USERS.items():
                if fn.name in users and caller in GUCS[guc]:
                    for value in GUC_VALUES[guc]:
                        vals = {j: rng.choice(pools[j][0]) for j in range(len(fn.params)) if fn.required(j)}
                        bads.append((vals, ((guc, typed("text", value)),)))
            rng.shuffle(bads)
            q += bads
            queues.append((caller, fn, q))
    missing = {u for users in GUC_USERS.values() for u in users} - set(by_name)
    assert not missing, f"GUC_USERS names functions that do not exist: {missing}"
    out = []
    while queues:
        nxt = []
        for caller, fn, q in queues:
            if q:
                out.append((caller, fn) + q.pop(0))
            if q:
                nxt.append((caller, fn, q))
        queues = nxt
    return out


def positional_ok(fn, vals):
    return not vals or set(vals) == set(range(max(vals) + 1))


def test_fuzz_every_public_function(fuzz_db):
    dsn, known, t0 = fuzz_db
    rng = random.Random(SEED)
    print(f"fuzz seed {SEED} (replay with NOTIFY_EXT_FUZZ_SEED={SEED})")
    log_start = os.path.getsize(PGLOG) if os.path.exists(PGLOG) else 0
    with psycopg.connect(dsn, autocommit=True) as su:
        fns = functions(su)
        vcols = view_columns(su)
    assert fns, "no public functions found in schema notify_ext"
    assert set(vcols) == set(VIEWS), f"views missing: {set(VIEWS) - set(vcols)}"

    fz = Fuzzer(dsn, known, rng)
    start = time.monotonic()
    # Counted from the start of the set-up, so that a slow set-up does not
    # push the test past its minute.
    deadline = t0 + BUDGET_S
    swept = 0
    sweep = plan_sweep(fns, known, rng)
    try:
        for caller, fn, vals, settings in sweep:
            if time.monotonic() > deadline or fz.dead:
                break
            named = not positional_ok(fn, vals) or rng.random() < 0.5
            fz.call(caller, fn.name, fn.render(vals, named), vals.values(), settings, commit=False)
            swept += 1
        # Random combinations, with state that evolves.
        random_calls = 0
        while time.monotonic() < deadline and not fz.dead:
            caller = rng.choice(CALLERS)
            r = rng.random()
            settings = []
            if caller != "super" and rng.random() < 0.2 or rng.random() < 0.05:
                settings.append(("notify_ext.principal", rng.choice(pool("text", "principal", known, rng)[1])))
            if rng.random() < 0.15:
                name = rng.choice([g for g, users in GUCS.items() if caller in users])
                settings.append((name, typed("text", rng.choice(GUC_VALUES[name]))))
            # Committed: half of the calls, but few of those with a large
            # value, lest the event log grow by hundreds of MB.
            commit_p = 0.5
            if r < 0.06:
                view = rng.choice(VIEWS)
                col, typ = rng.choice(vcols[view])
                v = rng.choice(pool(typ, col, known, rng)[1])
                # The newest rows only: a filter on a column the view
                # computes (events.message) costs a full scan otherwise.
                stmt = (f"SELECT * FROM (SELECT * FROM notify_ext.{view} ORDER BY 1 DESC"
                        f" LIMIT {rng.choice([1, 50, 500])}) v WHERE {col} IS NOT DISTINCT FROM {v.sql}")
                fz.call(caller, f"view {view}", stmt, [v], settings, rng.random() < commit_p)
            elif r < 0.12:
                ids = pool("text", "id", known, rng)[1]
                a, b = rng.choice(ids), rng.choice(ids)
                n = rng.choice(pool("integer", "n", known, rng)[1])
                stmt, used = rng.choice([
                    (f"INSERT INTO public.fz_items (id, parent, n) VALUES ({a.sql}, {b.sql}, {n.sql})",
                     [a, b, n]),
                    (f"INSERT INTO public.fz_items (id, parent, n) VALUES ({a.sql}, {b.sql}, {n.sql}),"
                     f" ({lit('fz_x' + str(rng.getrandbits(16)))}, {a.sql}, 1)", [a, b, n]),
                    (f"UPDATE public.fz_items SET parent = {b.sql}, n = {n.sql} WHERE id = {a.sql}",
                     [a, b, n]),
                    (f"DELETE FROM public.fz_items WHERE id = {a.sql}", [a]),
                ])
                big = any(v.big for v in used)
                fz.call(caller, "tracked table DML", stmt, used, settings,
                        rng.random() < (0.05 if big else commit_p))
            else:
                fn = rng.choice(fns)
                vals = {}
                for i, (n, t) in enumerate(fn.params):
                    if not fn.required(i) and rng.random() < 0.4:
                        continue
                    good, every = pool(t, n, known, rng)
                    vals[i] = rng.choice(good if rng.random() < 0.5 else every)
                named = not positional_ok(fn, vals) or rng.random() < 0.3
                big = any(v.big for v in vals.values())
                fz.call(caller, fn.name, fn.render(vals, named), vals.values(), settings,
                        rng.random() < (0.05 if big else commit_p))
            random_calls += 1
    finally:
        fz.close()
    took = time.monotonic() - start

    log_lines = []
    if os.path.exists(PGLOG):
        with open(PGLOG, "rb") as f:
            f.seek(log_start)
            lines = f.read().decode("utf-8", "replace").splitlines()
        for i, line in enumerate(lines):
            if CRASH_LINE.search(line):
                log_lines.append(short(line, 500))
                # The failing statement follows as DETAIL.
                for nxt in lines[i + 1:i + 3]:
                    if "Failed process was running" in nxt:
                        log_lines.append(short(nxt, 500))

    summary = (f"fuzz seed {SEED}: {fz.calls} calls in {took:.1f} s ({swept} of {len(sweep)} systematic,"
               f" {random_calls} random) over {len(fns)} functions and {len(VIEWS)} views")
    print(summary)
    if fz.skipped:
        print(f"stopped calling after repeated crashes or timeouts: {sorted(fz.skipped)}")
    if fz.slow:
        print(f"calls over {SLOW_S} s:")
        for s in sorted(fz.slow, reverse=True)[:20]:
            print("  ", s)
    print("most time spent on:", ", ".join(f"{t} {s:.1f} s" for t, s in fz.seconds.most_common(8)))
    if fz.warnings:
        print("warnings:", dict(fz.warnings.most_common(10)))
    print("SQLSTATEs per function:")
    for target in sorted(fz.states):
        print(f"  {target}: {dict(fz.states[target].most_common())}")
    if REPORT:
        with open(REPORT, "w") as f:
            json.dump({"seed": SEED, "calls": fz.calls, "seconds": took, "failures": fz.failures,
                       "log": log_lines, "slow": fz.slow, "warnings": dict(fz.warnings),
                       "states": {t: dict(c) for t, c in fz.states.items()},
                       "seconds": dict(fz.seconds),
                       "examples": {f"{t} {s}": e for (t, s), e in fz.examples.items()}},
                      f, indent=1, ensure_ascii=False)

    problems = []
    # One line per distinct (kind, target, SQLSTATE, message), with a count.
    groups = collections.OrderedDict()
    for f in fz.failures:
        key = (f["kind"], f["target"], f["sqlstate"], re.sub(r"\d+", "N", f["message"])[:120])
        groups.setdefault(key, []).append(f)
    for (kind, target, state, _), fs in groups.items():
        lines = [f"{kind}: {target} [{state}] {fs[0]['message']} ({len(fs)}x)"]
        for f in fs[:3]:
            lines.append(f"    as {f['caller']}, {f['seconds']} s: {f['statement']}")
        if len(fs) > 3:
            lines.append(f"    ... and {len(fs) - 3} more")
        problems.append("\n".join(lines))
    if log_lines:
        problems.append("server log:\n    " + "\n    ".join(log_lines))
    assert not problems, summary + f"\n{len(problems)} problems:\n  " + "\n  ".join(problems)
