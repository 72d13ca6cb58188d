--------------------------------------------------------------------------
-- Retention: prune() and its schedule
--------------------------------------------------------------------------

-- Internal: the day partitions of the event log whose day ended by
-- ended_by (all of them by default; the default partition has no bounds
-- and is not listed), with pg_class.reltuples and whether VACUUM has
-- counted them since they last changed (then reltuples is their count).
-- Read from the catalogs and the statistics in C (src/prune.c).
CREATE OR REPLACE FUNCTION notify_ext._day_partitions(ended_by timestamptz DEFAULT 'infinity')
    RETURNS TABLE (rel regclass, name text, lower_bound timestamptz, upper_bound timestamptz,
                   reltuples real, vacuum_counted boolean)
    LANGUAGE c STABLE ROWS 20
    AS 'MODULE_PATHNAME', 'notify_ext_day_partitions';
REVOKE ALL ON FUNCTION notify_ext._day_partitions(timestamptz) FROM PUBLIC;

-- Internal: tables prune() detached from the event log (renamed
-- event_log_expired_<oid>) that are not dropped yet.
CREATE OR REPLACE FUNCTION notify_ext._detached_event_tables() RETURNS SETOF regclass
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT c.oid::regclass
      FROM pg_catalog.pg_class c
     WHERE c.relnamespace = 'notify_ext'::pg_catalog.regnamespace
       AND c.relkind = 'r' AND NOT c.relispartition
       AND c.relname LIKE 'event\_log\_expired\_%'
$$;
REVOKE ALL ON FUNCTION notify_ext._detached_event_tables() FROM PUBLIC;

-- Internal: drops the detached tables (run by the worker that
-- _start_event_table_dropper() has started when prune() committed).  No
-- one writes to or reads from them any more; a table someone still has
-- locked after a few seconds is left for the next run.  Returns how many
-- were dropped.
CREATE OR REPLACE FUNCTION notify_ext._drop_detached_event_tables() RETURNS integer
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    SET lock_timeout = '5s'
AS $$
DECLARE
    v_rel regclass;
    v_n integer := 0;
BEGIN
    FOR v_rel IN SELECT * FROM notify_ext._detached_event_tables() LOOP
        BEGIN
            EXECUTE pg_catalog.format('DROP TABLE IF EXISTS %s', v_rel);
            v_n := v_n + 1;
        EXCEPTION WHEN lock_not_available OR deadlock_detected OR undefined_table THEN
            NULL;
        END;
    END LOOP;
    RETURN v_n;
END
$$;
REVOKE ALL ON FUNCTION notify_ext._drop_detached_event_tables() FROM PUBLIC;

-- Internal: has a background worker started when the current transaction
-- commits, which runs _drop_detached_event_tables() as the current user.
-- Returns true; if no worker slot is free at commit, the server log says so
-- and the next prune() tries again.
CREATE OR REPLACE FUNCTION notify_ext._start_event_table_dropper() RETURNS boolean
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'notify_ext_start_event_table_dropper';
REVOKE ALL ON FUNCTION notify_ext._start_event_table_dropper() FROM PUBLIC;

-- Internal: before the events of a partition (all of them, or those that
-- occurred before older_than) are removed, adds to each stream consumer's
-- `missed` how many of them were in its scope and never delivered to it
-- (seq above its delivered_upto), and to each relay's `missed` how many
-- of them were in its scope and not yet in its stream (seq above its
-- position).  Returns the sum added.
--
-- Only consumers and relays behind the partition's last event are looked
-- at, and their rows are locked first (FOR UPDATE, under the caller's
-- lock_timeout): a fetch of such a consumer, or a relay worker recording
-- its progress, waits until the removal commits.  Those that kept up are
-- neither locked nor scanned.
CREATE OR REPLACE FUNCTION notify_ext._count_missed_before_drop(partition regclass,
                                                     older_than timestamptz DEFAULT NULL)
    RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_max bigint;
    v_total bigint;
    v_table text;
    v_position text;
    v_from_date text;
BEGIN
    EXECUTE pg_catalog.format('SELECT max(seq) FROM %s', partition) INTO v_max;
    IF v_max IS NULL
       OR (NOT EXISTS (SELECT 1 FROM notify_ext.consumers c WHERE c.delivered_upto < v_max)
           AND NOT EXISTS (SELECT 1 FROM notify_ext.relays r WHERE r.position < v_max)) THEN
        RETURN 0;
    END IF;
    -- The same count for both readers: their table, the column of their
    -- position, and their from_date (relays have none).
    v_total := 0;
    FOR v_table, v_position, v_from_date IN
        VALUES ('consumers', 'delivered_upto', 'r.from_date'), ('relays', 'position', 'NULL')
    LOOP
        EXECUTE pg_catalog.format($q$
            WITH lagging AS MATERIALIZED (
                SELECT r.id, r.%2$I AS upto, r.resource_id, r.include_subresources, r.streams,
                       r.operations, %3$s::timestamptz AS from_date
                  FROM notify_ext.%1$I r
                 WHERE r.%2$I < $1
                 ORDER BY r.id
                   FOR UPDATE),
            counts AS (
                SELECT r.id,
                       (SELECT count(*) FROM %4$s e
                         WHERE e.seq > r.upto
                           AND ($2::timestamptz IS NULL OR e.occurred_at < $2)
                           AND notify_ext._in_scope(r.resource_id, r.include_subresources, r.streams,
                                                    r.operations, r.from_date, e.resource_id,
                                                    e.resource_path, e.stream, e.operation,
                                                    e.occurred_at)) AS n
                  FROM lagging r),
            upd AS (
                UPDATE notify_ext.%1$I r SET missed = r.missed + counts.n
                  FROM counts
                 WHERE r.id = counts.id AND counts.n > 0
                RETURNING counts.n)
            SELECT $3 + COALESCE(sum(upd.n), 0)::bigint FROM upd$q$,
            v_table, v_position, v_from_date, partition)
            INTO v_total USING v_max, older_than, v_total;
    END LOOP;
    RETURN v_total;
END
$$;
REVOKE ALL ON FUNCTION notify_ext._count_missed_before_drop(regclass, timestamptz) FROM PUBLIC;

-- The pruning run (docs/retention.md).
CREATE OR REPLACE FUNCTION notify_ext.prune() RETURNS jsonb
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_event_retention interval := pg_catalog.current_setting('notify_ext.event_retention')::interval;
    v_read_retention interval := pg_catalog.current_setting('notify_ext.read_notification_retention')::interval;
    v_delivery_retention interval := pg_catalog.current_setting('notify_ext.delivery_retention')::interval;
    v_batch integer := pg_catalog.current_setting('notify_ext.prune_batch_size')::integer;
    v_max_batches integer := pg_catalog.current_setting('notify_ext.prune_max_batches')::integer;
    v_budget integer := (SELECT s.setting::integer FROM pg_catalog.pg_settings s
                          WHERE s.name = 'notify_ext.prune_lock_timeout');
    v_ahead integer := pg_catalog.current_setting('notify_ext.partitions_ahead')::integer;
    v_old_timeout text := pg_catalog.current_setting('lock_timeout');
    v_now timestamptz := pg_catalog.now();
    v_cutoff timestamptz;
    v_cut timestamptz;
    v_events bigint := 0;
    v_partitions integer := 0;
    v_read bigint := 0;
    v_deliveries bigint := 0;
    v_missed bigint := 0;
    v_created jsonb;
    v_deferred text[] := '{}';
    v_incomplete text[] := '{}';
    v_rels regclass[];
    v_names text[];
    v_rel regclass;
    v_rows bigint;
    v_estimated boolean := false;
    v_uncounted regclass[];
    v_lagging boolean;
    v_min_delivered bigint;
    v_max_seq bigint;
    v_n bigint;
    v_i integer;
BEGIN
    PERFORM notify_ext._require_service_caller('notify_ext.prune()');
    IF NOT pg_catalog.pg_try_advisory_xact_lock(pg_catalog.hashtext('notify_ext.prune')::bigint) THEN
        RETURN pg_catalog.jsonb_build_object(
            'events', 0, 'partitions', 0, 'read_notifications', 0, 'deliveries', 0,
            'missed', 0, 'partitions_created', 0, 'deferred', '[]'::jsonb, 'incomplete', '[]'::jsonb,
            'note', 'another notify_ext.prune() is running in this database; nothing done');
    END IF;

    -- Read notifications, oldest first; rows someone holds are left for next
    -- time.  (Most runs find none: then the inbox's triggers do not run.)
    v_cutoff := v_now - v_read_retention;
    FOR v_i IN 1 .. v_max_batches LOOP
        EXIT WHEN v_i = 1 AND NOT EXISTS (SELECT FROM notify_ext.notifications n
                                           WHERE n.read AND n.ts < v_cutoff);
        WITH doomed AS (
            SELECT n.id FROM notify_ext.notifications n
             WHERE n.read AND n.ts < v_cutoff
             ORDER BY n.ts
             LIMIT v_batch
               FOR UPDATE SKIP LOCKED),
        del AS (
            DELETE FROM notify_ext.notifications n USING doomed
             WHERE n.id = doomed.id
            RETURNING 1)
        SELECT count(*) INTO v_n FROM del;
        v_read := v_read + v_n;
        EXIT WHEN v_n < v_batch;
        IF v_i = v_max_batches THEN
            v_incomplete := v_incomplete || 'read_notifications'::text;
        END IF;
    END LOOP;

    -- Webhook delivery records.
    v_cutoff := v_now - v_delivery_retention;
    FOR v_i IN 1 .. v_max_batches LOOP
        DELETE FROM notify_ext.delivery_log d
         WHERE d.ctid = ANY (ARRAY(SELECT o.ctid FROM notify_ext.delivery_log o
                                    WHERE o.created_at < v_cutoff
                                    LIMIT v_batch FOR UPDATE SKIP LOCKED));
        GET DIAGNOSTICS v_n = ROW_COUNT;
        v_deliveries := v_deliveries + v_n;
        EXIT WHEN v_n < v_batch;
        IF v_i = v_max_batches THEN
            v_incomplete := v_incomplete || 'deliveries'::text;
        END IF;
    END LOOP;

    -- Expired events that landed in the default partition (their day had
    -- no partition when they were written): deleted in batches, at most
    -- prune_batch_size * prune_max_batches of them per run, oldest first.
    v_cutoff := v_now - v_event_retention;
    IF EXISTS (SELECT 1 FROM notify_ext.event_log_default d WHERE d.occurred_at < v_cutoff) THEN
        SELECT d.occurred_at INTO v_cut
          FROM notify_ext.event_log_default d
         WHERE d.occurred_at < v_cutoff
         ORDER BY d.occurred_at
        OFFSET v_batch::bigint * v_max_batches LIMIT 1;
        IF FOUND THEN
            v_incomplete := v_incomplete || 'events'::text;
        ELSE
            v_cut := v_cutoff;
        END IF;
        v_missed := v_missed + notify_ext._count_missed_before_drop('notify_ext.event_log_default', v_cut);
        LOOP
            DELETE FROM notify_ext.event_log_default e
             WHERE e.ctid = ANY (ARRAY(SELECT d.ctid FROM notify_ext.event_log_default d
                                        WHERE d.occurred_at < v_cut LIMIT v_batch));
            GET DIAGNOSTICS v_n = ROW_COUNT;
            v_events := v_events + v_n;
            EXIT WHEN v_n < v_batch;
        END LOOP;
    END IF;

    -- Partitions of the coming days (usually all there already: then
    -- nothing is locked, and _create_event_partitions() is not called).
    IF EXISTS (SELECT 1
                 FROM pg_catalog.generate_series(0, v_ahead) d
                WHERE pg_catalog.to_regclass('notify_ext.event_log_p' || pg_catalog.to_char(
                          (v_now AT TIME ZONE 'UTC')::date + d, 'YYYYMMDD')) IS NULL) THEN
        v_created := notify_ext._create_event_partitions(v_ahead, 0, v_budget);
        SELECT v_deferred || COALESCE(pg_catalog.array_agg(x), '{}') INTO v_deferred
          FROM pg_catalog.jsonb_array_elements_text(v_created -> 'deferred') x;
    ELSE
        v_created := '{"created": 0}';
    END IF;

    -- Whole days past retention.  Their rows are counted first; then, in
    -- one go, the consumers' losses are counted (locking the rows of the
    -- consumers that are behind), the event log is locked and the
    -- partitions are detached and renamed (catalog changes only), so that
    -- writers wait only for those and the commit right after them.  The
    -- files go later: a background worker drops the detached tables once
    -- this transaction has committed, holding no lock anyone else needs.
    -- (DROP TABLE here would remove the files at commit, while the lock on
    -- event_log is still held: about 0.1 s per million events.)  If a lock
    -- is not to be had, nothing is detached and everything waits for the
    -- next run.
    --
    -- Their rows: a partition VACUUM has counted since it last changed (a
    -- past day, normally: autovacuum visits it once it is full) is not read
    -- again: VACUUM's count (reltuples) is used, and the result says so.
    -- The others are counted below (an index-only scan of the seq index
    -- where the visibility map allows it).  All in one look at the
    -- catalogs (_day_partitions(), in C).
    SELECT pg_catalog.array_agg(p.rel ORDER BY p.upper_bound),
           pg_catalog.array_agg(p.name ORDER BY p.upper_bound),
           COALESCE(sum(p.reltuples::bigint) FILTER (WHERE p.vacuum_counted), 0),
           pg_catalog.array_agg(p.rel) FILTER (WHERE NOT p.vacuum_counted),
           bool_or(p.vacuum_counted)
      INTO v_rels, v_names, v_rows, v_uncounted, v_estimated
      FROM notify_ext._day_partitions(v_cutoff) p;
    IF v_rels IS NOT NULL THEN
        IF v_uncounted IS NOT NULL THEN
            FOREACH v_rel IN ARRAY v_uncounted LOOP
                EXECUTE pg_catalog.format('SELECT count(*) FROM %s WHERE seq > 0', v_rel) INTO v_n;
                v_rows := v_rows + v_n;
            END LOOP;
        END IF;
        -- Consumers and relays that may have missed some of these events:
        -- none when every one got past the newest of them (the usual case;
        -- then no consumer or relay row is locked or scanned).
        v_lagging := false;
        SELECT min(x.upto) INTO v_min_delivered
          FROM (SELECT min(c.delivered_upto) AS upto FROM notify_ext.consumers c
                UNION ALL
                SELECT min(r.position) FROM notify_ext.relays r) x;
        IF v_min_delivered IS NOT NULL THEN
            EXECUTE 'SELECT max(m) FROM (' || (
                SELECT pg_catalog.string_agg(pg_catalog.format('SELECT max(seq) AS m FROM %s', r), ' UNION ALL ')
                  FROM pg_catalog.unnest(v_rels) r) || ') x'
                INTO v_max_seq;
            v_lagging := v_max_seq > v_min_delivered;
        END IF;
        BEGIN
            PERFORM pg_catalog.set_config('lock_timeout', GREATEST(v_budget, 1) || 'ms', true);
            v_n := 0;
            IF v_lagging THEN
                FOREACH v_rel IN ARRAY v_rels LOOP
                    v_n := v_n + notify_ext._count_missed_before_drop(v_rel);
                END LOOP;
            END IF;
            IF NOT notify_ext._lock_within('notify_ext.event_log', 'ACCESS EXCLUSIVE', v_budget) THEN
                RAISE EXCEPTION USING ERRCODE = 'lock_not_available';
            END IF;
            FOREACH v_rel IN ARRAY v_rels LOOP
                IF NOT notify_ext._lock_within(v_rel, 'ACCESS EXCLUSIVE', v_budget) THEN
                    RAISE EXCEPTION USING ERRCODE = 'lock_not_available';
                END IF;
                EXECUTE pg_catalog.format('ALTER TABLE notify_ext.event_log DETACH PARTITION %s', v_rel);
                EXECUTE pg_catalog.format('ALTER TABLE %s RENAME TO %I', v_rel,
                                          'event_log_expired_' || v_rel::oid);
            END LOOP;
            PERFORM pg_catalog.set_config('lock_timeout', v_old_timeout, true);
            v_partitions := pg_catalog.cardinality(v_rels);
            v_events := v_events + v_rows;
            v_missed := v_missed + v_n;
        EXCEPTION WHEN lock_not_available OR deadlock_detected THEN
            v_deferred := v_deferred || v_names;
        END;
    END IF;

    -- Detached tables (of this run, or left by an earlier one) are dropped
    -- by a worker started once this transaction has committed.
    -- (When this run detached some, they are there: no need to look.)
    IF v_partitions > 0 OR EXISTS (SELECT 1 FROM notify_ext._detached_event_tables()) THEN
        PERFORM notify_ext._start_event_table_dropper();
    END IF;

    RETURN pg_catalog.jsonb_build_object(
        'events', v_events,
        'partitions', v_partitions,
        'read_notifications', v_read,
        'deliveries', v_deliveries,
        'missed', v_missed,
        'partitions_created', (v_created ->> 'created')::integer,
        'deferred', pg_catalog.to_jsonb(v_deferred),
        'incomplete', pg_catalog.to_jsonb(v_incomplete))
        || CASE WHEN v_estimated THEN '{"events_from_vacuum_stats": true}'::jsonb ELSE '{}'::jsonb END;
END
$$;
REVOKE ALL ON FUNCTION notify_ext.prune() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION notify_ext.prune() TO PUBLIC;

--------------------------------------------------------------------------
-- Scheduling with pg_cron
--
-- pg_cron keeps its jobs in the database named by cron.database_name and
-- runs each job in the database the job names.  When that is this
-- database, the job is made with cron.schedule(); otherwise
-- notify_ext._cron_call() makes it there with cron.schedule_in_database()
-- (from a background worker connected to that database).  The job is owned
-- by the extension's owner, so there is one job per database whoever
-- schedules it, and it runs prune() with the owner's rights, in this
-- database only (_prune_job_command()).
--------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION notify_ext._cron_call(op text, job_name text, schedule text DEFAULT NULL,
                                      command text DEFAULT NULL)
    RETURNS bigint
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'notify_ext_cron_call';
REVOKE ALL ON FUNCTION notify_ext._cron_call(text, text, text, text) FROM PUBLIC;

-- Internal: the name of this database's pruning job.
CREATE OR REPLACE FUNCTION notify_ext._prune_job_name() RETURNS text
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT 'notify_ext_prune_' || pg_catalog.current_database()
$$;

-- Internal: the command of this database's pruning job.
--
-- pg_cron names the database a job runs in by name, and runs the job as
-- its owner (the extension's owner, a superuser) in whatever database has
-- that name when the job falls due.  After this database is dropped, or
-- renamed, a role that may create databases can create one of this name
-- and a schema notify_ext with a prune() of its own in it; a bare
-- 'SELECT notify_ext.prune()' would run that as the superuser.  So the
-- command runs prune() only in this database (by OID) and only where
-- notify_ext is installed, and otherwise fails with 55000 before anything
-- else is looked up.  It is a DO block because PL/pgSQL plans PERFORM only
-- when it gets there: in a plain query, the planner may run a function the
-- database's owner declared IMMUTABLE while it plans, whatever the WHERE
-- clause says.  Every name is qualified, and search_path is pinned first:
-- the database's own settings apply to the job's session.
CREATE OR REPLACE FUNCTION notify_ext._prune_job_command() RETURNS text
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT pg_catalog.format($cmd$SET search_path = pg_catalog, pg_temp; DO $notify_ext_prune$
DECLARE
  v_db pg_catalog.oid := (SELECT d.oid FROM pg_catalog.pg_database d
    WHERE d.datname OPERATOR(pg_catalog.=) pg_catalog.current_database());
BEGIN
  IF v_db IS NULL OR v_db OPERATOR(pg_catalog.<>) %s::pg_catalog.oid OR NOT EXISTS (
      SELECT FROM pg_catalog.pg_extension x JOIN pg_catalog.pg_namespace n
        ON n.oid OPERATOR(pg_catalog.=) x.extnamespace
      WHERE x.extname OPERATOR(pg_catalog.=) 'notify_ext'::pg_catalog.name
        AND n.nspname OPERATOR(pg_catalog.=) 'notify_ext'::pg_catalog.name) THEN
    RAISE EXCEPTION 'this pruning job was scheduled in the database with OID %s, not in database "%%" (OID %%) with notify_ext', pg_catalog.current_database(), v_db
      USING ERRCODE = '55000',
        HINT = 'Remove the job with cron.unschedule() and call notify_ext.schedule_pruning() in the database to prune.';
  END IF;
  PERFORM notify_ext.prune();
END
$notify_ext_prune$$cmd$, d.oid, d.oid)
      FROM pg_catalog.pg_database d
     WHERE d.datname = pg_catalog.current_database()
$fn$;
REVOKE ALL ON FUNCTION notify_ext._prune_job_command() FROM PUBLIC;

-- Internal: the database pg_cron works in; 55000 when pg_cron is not loaded.
CREATE OR REPLACE FUNCTION notify_ext._pg_cron_database() RETURNS text
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_db text := pg_catalog.current_setting('cron.database_name', true);
BEGIN
    IF v_db IS NULL OR v_db = ''
       OR NOT 'pg_cron' = ANY (pg_catalog.string_to_array(
               pg_catalog.translate(pg_catalog.current_setting('shared_preload_libraries'), ' "', ''), ','))
    THEN
        RAISE EXCEPTION 'pg_cron is not loaded: scheduling notify_ext.prune() needs it'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Install postgresql-15-cron, add pg_cron to shared_preload_libraries and restart, '
                         'then CREATE EXTENSION pg_cron in the database named by cron.database_name. '
                         'Or call notify_ext.prune() every few minutes from any other scheduler.';
    END IF;
    RETURN v_db;
END
$$;

CREATE OR REPLACE FUNCTION notify_ext.schedule_pruning(schedule text DEFAULT '*/5 * * * *') RETURNS bigint
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_job text := notify_ext._prune_job_name();
    v_command text := notify_ext._prune_job_command();
    v_cron_db text;
    v_id bigint;
BEGIN
    PERFORM notify_ext._require_service_caller('notify_ext.schedule_pruning()');
    IF schedule IS NULL OR pg_catalog.btrim(schedule) = '' THEN
        RAISE EXCEPTION 'schedule must not be empty'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give a cron schedule such as ''*/5 * * * *''.';
    END IF;
    v_cron_db := notify_ext._pg_cron_database();
    BEGIN
        IF v_cron_db = pg_catalog.current_database() THEN
            IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'pg_cron') THEN
                RAISE EXCEPTION 'pg_cron is not installed in database "%" (named by cron.database_name)', v_cron_db
                    USING ERRCODE = 'object_not_in_prerequisite_state',
                          HINT = pg_catalog.format('Run CREATE EXTENSION pg_cron in database "%s".', v_cron_db);
            END IF;
            EXECUTE 'SELECT cron.schedule($1, $2, $3)' INTO v_id USING v_job, schedule, v_command;
        ELSE
            v_id := notify_ext._cron_call('schedule', v_job, schedule, v_command);
        END IF;
    EXCEPTION WHEN internal_error OR invalid_parameter_value THEN
        -- pg_cron reports a bad schedule as "invalid schedule: ..."
        IF SQLERRM LIKE 'invalid schedule%' THEN
            RAISE EXCEPTION 'invalid pg_cron schedule "%"', schedule
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Use five cron fields (minute hour day month weekday), e.g. ''*/5 * * * *'', or ''N seconds''.';
        END IF;
        RAISE;
    END;
    RETURN v_id;
END
$$;
REVOKE ALL ON FUNCTION notify_ext.schedule_pruning(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION notify_ext.schedule_pruning(text) TO PUBLIC;

CREATE OR REPLACE FUNCTION notify_ext.unschedule_pruning() RETURNS boolean
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_job text := notify_ext._prune_job_name();
    v_cron_db text;
    v_n bigint;
BEGIN
    PERFORM notify_ext._require_service_caller('notify_ext.unschedule_pruning()');
    v_cron_db := notify_ext._pg_cron_database();
    IF v_cron_db = pg_catalog.current_database() THEN
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'pg_cron') THEN
            RAISE EXCEPTION 'pg_cron is not installed in database "%" (named by cron.database_name)', v_cron_db
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = pg_catalog.format('Run CREATE EXTENSION pg_cron in database "%s".', v_cron_db);
        END IF;
        EXECUTE 'SELECT count(cron.unschedule(j.jobid)) FROM cron.job j
                  WHERE j.jobname = $1 AND j.username = current_user'
            INTO v_n USING v_job;
    ELSE
        v_n := notify_ext._cron_call('unschedule', v_job);
    END IF;
    RETURN v_n > 0;
END
$$;
REVOKE ALL ON FUNCTION notify_ext.unschedule_pruning() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION notify_ext.unschedule_pruning() TO PUBLIC;

--------------------------------------------------------------------------
-- The event log at a glance: the view log_stats
--------------------------------------------------------------------------

-- Internal: events this database committed in the last seconds (1-60),
-- counted in shared memory after each commit (src/commit_stats.c); NULL
-- when they are not counted.
CREATE OR REPLACE FUNCTION notify_ext._events_committed_recently(seconds integer) RETURNS bigint
    LANGUAGE c VOLATILE STRICT AS 'MODULE_PATHNAME', 'notify_ext_events_committed_recently';
REVOKE ALL ON FUNCTION notify_ext._events_committed_recently(integer) FROM PUBLIC;

-- Internal: the rows of log_stats, for monitoring callers only.  Nothing
-- here reads a whole large partition: a partition of up to 64 pages is
-- counted exactly; a larger one is read in its first and last 32 pages
-- only, its events estimated as the rows per page of its last 32 pages
-- times its pages.  Events are appended in commit order, so oldest_seq and
-- newest_seq, read from those pages, are exact unless events were moved
-- into the partition later (create_event_partitions()).  bytes is exact.
CREATE OR REPLACE FUNCTION notify_ext._log_stats()
    RETURNS TABLE (partition text, day_start timestamptz, day_end timestamptz, events bigint,
                   bytes bigint, oldest_seq bigint, newest_seq bigint,
                   committed_last_minute bigint)
    LANGUAGE plpgsql STABLE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r record;
    v_pages bigint;
    v_sample constant bigint := 32;
    v_now timestamptz := now();
    v_recent bigint := notify_ext._events_committed_recently(60);
    v_current_seen boolean := false;
BEGIN
    PERFORM notify_ext._require_monitor('notify_ext.log_stats');
    FOR r IN
        SELECT p.rel, p.lower_bound, p.upper_bound
          FROM notify_ext._day_partitions() p
        UNION ALL
        SELECT 'notify_ext.event_log_default'::regclass, NULL, NULL
         ORDER BY 2 NULLS LAST
    LOOP
        partition := r.rel::text;
        day_start := r.lower_bound;
        day_end := r.upper_bound;
        bytes := pg_total_relation_size(r.rel);
        v_pages := pg_relation_size(r.rel) / current_setting('block_size')::bigint;
        IF v_pages <= 2 * v_sample THEN
            EXECUTE format('SELECT count(*), min(seq), max(seq) FROM %s', r.rel)
               INTO events, oldest_seq, newest_seq;
        ELSE
            EXECUTE format('SELECT min(seq) FROM %s WHERE ctid < %L::tid', r.rel,
                           format('(%s,0)', v_sample))
               INTO oldest_seq;
            EXECUTE format('SELECT count(*), max(seq) FROM %s WHERE ctid >= %L::tid', r.rel,
                           format('(%s,0)', v_pages - v_sample))
               INTO events, newest_seq;
            events := round(events::numeric / v_sample * v_pages);
        END IF;
        -- Recent commits go to the partition of the day it is now.
        committed_last_minute := NULL;
        IF NOT v_current_seen AND (r.lower_bound IS NULL OR (v_now >= r.lower_bound AND v_now < r.upper_bound)) THEN
            committed_last_minute := v_recent;
            v_current_seen := true;
        END IF;
        RETURN NEXT;
    END LOOP;
END
$$;

-- The event log per day partition (and the default partition), for
-- operators and monitoring: service callers and members of pg_monitor.
CREATE OR REPLACE VIEW notify_ext.log_stats AS
SELECT * FROM notify_ext._log_stats();
REVOKE ALL ON notify_ext.log_stats FROM PUBLIC;
GRANT SELECT ON notify_ext.log_stats TO PUBLIC;
