--------------------------------------------------------------------------
-- Personal notifications: the inbox
--------------------------------------------------------------------------

DROP POLICY IF EXISTS notifications_own ON notify_ext.notifications;
CREATE POLICY notifications_own ON notify_ext.notifications
    USING (recipient OPERATOR(pg_catalog.=) notify_ext.current_principal())
    WITH CHECK (recipient OPERATOR(pg_catalog.=) notify_ext.current_principal());
DROP POLICY IF EXISTS notification_preferences_own ON notify_ext.notification_preferences;
CREATE POLICY notification_preferences_own ON notify_ext.notification_preferences
    FOR SELECT USING (principal OPERATOR(pg_catalog.=) notify_ext.current_principal());

-- The JSON of one notification, as list_notifications() shows it.
CREATE OR REPLACE FUNCTION notify_ext._inbox_item(id bigint, type text, message text, meta jsonb,
                                       ts timestamptz, read boolean)
    RETURNS jsonb
    LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT pg_catalog.jsonb_build_object(
        'id', id, 'type', type, 'message', message, 'meta', meta,
        'ts', pg_catalog.to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        'read', read)
$$;

--------------------------------------------------------------------------
-- Counts and live notifications, kept by statement-level triggers
--------------------------------------------------------------------------

-- Folds the count deltas of recipients that have many into one row per
-- type.  Never waits: a recipient another open transaction is folding is
-- skipped, and so is everything outside READ COMMITTED (where deleting a row
-- another transaction deleted would be a serialization failure).
--
-- Locks stay bounded however many recipients a statement touches: the
-- recipients that need folding are chosen first, without any lock, and at
-- most 32 of them per call (those with the most delta rows; the others are
-- folded by later calls).  Only those are locked, one advisory lock per slot
-- hashtext(recipient) & 255, so that a transaction never holds more than
-- 256 of them whatever it does.  Two recipients in one slot are never
-- folded by two transactions at once; that only delays folding, the counts
-- are exact either way.
CREATE OR REPLACE FUNCTION notify_ext._inbox_compact(recipients text[]) RETURNS void
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_need text[];
    v_mine text[];
BEGIN
    IF pg_catalog.current_setting('transaction_isolation') <> 'read committed' THEN
        RETURN;
    END IF;
    -- A statement of its own, so that no lock is taken before the count test.
    SELECT pg_catalog.array_agg(n.recipient) INTO v_need
      FROM (SELECT c.recipient FROM notify_ext.inbox_counts c
             WHERE c.recipient = ANY (recipients)
             GROUP BY c.recipient
            HAVING count(*) > 2 * count(DISTINCT c.type) + 8
             ORDER BY count(*) DESC, c.recipient
             LIMIT 32) n;
    IF v_need IS NULL THEN
        RETURN;
    END IF;
    SELECT pg_catalog.array_agg(r) INTO v_mine
      FROM pg_catalog.unnest(v_need) r
     WHERE pg_catalog.pg_try_advisory_xact_lock(
               'notify_ext.inbox_counts'::pg_catalog.regclass::pg_catalog.oid::integer,
               pg_catalog.hashtext(r) & 255);
    IF v_mine IS NULL THEN
        RETURN;
    END IF;
    WITH d AS (
        DELETE FROM notify_ext.inbox_counts c
         WHERE c.recipient = ANY (v_mine)
        RETURNING c.recipient, c.type, c.total, c.unread)
    INSERT INTO notify_ext.inbox_counts (recipient, type, total, unread)
    SELECT d.recipient, d.type, sum(d.total), sum(d.unread) FROM d
     GROUP BY d.recipient, d.type
    HAVING sum(d.total) <> 0 OR sum(d.unread) <> 0;
END
$$;
REVOKE ALL ON FUNCTION notify_ext._inbox_compact(text[]) FROM PUBLIC;

-- Insert: one count delta per (recipient, type), the NOTIFY of every new row
-- (sent when the transaction commits, in insertion order, payload {"id": n}
-- only: the recipient fetches it with get_notification()), then folding.  In
-- C (src/inbox.c): it reads the transition table once and computes each
-- recipient's channel once per statement.
CREATE OR REPLACE FUNCTION notify_ext._inbox_after_insert() RETURNS trigger
    LANGUAGE c
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'notify_ext_inbox_after_insert';

CREATE OR REPLACE FUNCTION notify_ext._inbox_after_update() RETURNS trigger
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    INSERT INTO notify_ext.inbox_counts (recipient, type, total, unread)
    SELECT d.recipient, d.type, sum(d.total), sum(d.unread)
      FROM (SELECT o.recipient, o.type, -1 AS total, CASE WHEN o.read THEN 0 ELSE -1 END AS unread
              FROM old_rows o
            UNION ALL
            SELECT n.recipient, n.type, 1, CASE WHEN n.read THEN 0 ELSE 1 END
              FROM new_rows n) d
     GROUP BY d.recipient, d.type
    HAVING sum(d.total) <> 0 OR sum(d.unread) <> 0;
    PERFORM notify_ext._inbox_compact(ARRAY(SELECT DISTINCT n.recipient FROM new_rows n));
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION notify_ext._inbox_after_delete() RETURNS trigger
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    INSERT INTO notify_ext.inbox_counts (recipient, type, total, unread)
    SELECT o.recipient, o.type, -count(*), -count(*) FILTER (WHERE NOT o.read)
      FROM old_rows o GROUP BY o.recipient, o.type;
    PERFORM notify_ext._inbox_compact(ARRAY(SELECT DISTINCT o.recipient FROM old_rows o));
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION notify_ext._inbox_after_truncate() RETURNS trigger
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    TRUNCATE notify_ext.inbox_counts;
    RETURN NULL;
END
$$;

REVOKE ALL ON FUNCTION notify_ext._inbox_after_insert() FROM PUBLIC;
REVOKE ALL ON FUNCTION notify_ext._inbox_after_update() FROM PUBLIC;
REVOKE ALL ON FUNCTION notify_ext._inbox_after_delete() FROM PUBLIC;
REVOKE ALL ON FUNCTION notify_ext._inbox_after_truncate() FROM PUBLIC;

CREATE OR REPLACE TRIGGER notifications_after_insert AFTER INSERT ON notify_ext.notifications
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION notify_ext._inbox_after_insert();
CREATE OR REPLACE TRIGGER notifications_after_update AFTER UPDATE ON notify_ext.notifications
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION notify_ext._inbox_after_update();
CREATE OR REPLACE TRIGGER notifications_after_delete AFTER DELETE ON notify_ext.notifications
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION notify_ext._inbox_after_delete();
CREATE OR REPLACE TRIGGER notifications_after_truncate AFTER TRUNCATE ON notify_ext.notifications
    FOR EACH STATEMENT EXECUTE FUNCTION notify_ext._inbox_after_truncate();

--------------------------------------------------------------------------
-- Service calls
--------------------------------------------------------------------------

-- Internal: creates one notification without asking who calls (the
-- permission functions use it); NULL when the recipient switched the type off.
CREATE OR REPLACE FUNCTION notify_ext._notify(recipient text, type text, message text, meta jsonb,
                                   ts timestamptz, refs jsonb)
    RETURNS bigint
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_id bigint;
BEGIN
    IF recipient IS NULL OR recipient = '' THEN
        RAISE EXCEPTION 'recipient must not be empty'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF type IS NULL OR type = '' THEN
        RAISE EXCEPTION 'type of a notification for "%" must not be empty', recipient
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF message IS NULL THEN
        RAISE EXCEPTION 'message of a notification for "%" must not be null', recipient
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM notify_ext._check_name_length(recipient, 'recipient');
    PERFORM notify_ext._check_name_length(type, 'notification type');
    IF meta IS NOT NULL AND pg_catalog.jsonb_typeof(meta) NOT IN ('object', 'null') THEN
        RAISE EXCEPTION 'meta must be a JSON object, not %', pg_catalog.jsonb_typeof(meta)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF refs IS NOT NULL AND pg_catalog.jsonb_typeof(refs) NOT IN ('array', 'null') THEN
        RAISE EXCEPTION 'refs must be a JSON array, not %', pg_catalog.jsonb_typeof(refs)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF EXISTS (SELECT 1 FROM notify_ext.notification_preferences p
                WHERE p.principal = _notify.recipient AND p.type = _notify.type) THEN
        RETURN NULL;
    END IF;
    INSERT INTO notify_ext.notifications AS n (recipient, type, message, meta, refs, ts)
    VALUES (recipient, type, message, NULLIF(meta, 'null'), NULLIF(refs, 'null'),
            COALESCE(ts, pg_catalog.now()))
    RETURNING n.id INTO v_id;
    RETURN v_id;
END
$$;
REVOKE ALL ON FUNCTION notify_ext._notify(text, text, text, jsonb, timestamptz, jsonb) FROM PUBLIC;

CREATE OR REPLACE FUNCTION notify_ext.create_notification(recipient text, type text, message text,
                                               meta jsonb DEFAULT NULL,
                                               ts timestamptz DEFAULT now(),
                                               refs jsonb DEFAULT NULL)
    RETURNS bigint
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM notify_ext._require_service_caller('notify_ext.create_notification()');
    RETURN notify_ext._notify(recipient, type, message, meta, ts, refs);
END
$$;

-- In C (src/inbox_bulk.c), all or nothing: every item must be a JSON object (the
-- first one that is not is named), then the items are checked in order and
-- the first bad one rejects the call with 22023 "item N of items …" (counted
-- from 0) before anything is created.  Types the recipient switched off are
-- skipped (NULL at their position); the others get ids from
-- notifications_id_seq in item order and are written straight into the
-- table, like COPY does, and counted and announced by the function itself;
-- when another trigger or forced row-level security would act on the table,
-- they go in by one INSERT ... SELECT FROM unnest(...) in item order, which
-- the insert trigger counts and announces.
CREATE OR REPLACE FUNCTION notify_ext.create_notifications_bulk(items jsonb) RETURNS bigint[]
    LANGUAGE c VOLATILE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'notify_ext_create_notifications_bulk';

CREATE OR REPLACE FUNCTION notify_ext.delete_notifications(ids bigint[]) RETURNS bigint[]
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_failed bigint[];
BEGIN
    PERFORM notify_ext._require_service_caller('notify_ext.delete_notifications()');
    IF ids IS NULL THEN
        RAISE EXCEPTION 'ids must not be null'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- NOT EXISTS, not NOT IN: an anti-join costs in proportion to the ids
    -- however many there are, where NOT IN rescans the deleted ids for each
    -- one once they do not fit in work_mem.
    WITH del AS (
        DELETE FROM notify_ext.notifications n WHERE n.id = ANY (ids) RETURNING n.id)
    SELECT pg_catalog.array_agg(DISTINCT i ORDER BY i) INTO v_failed
      FROM pg_catalog.unnest(ids) i
     WHERE i IS NOT NULL AND NOT EXISTS (SELECT 1 FROM del WHERE del.id = i);
    RETURN COALESCE(v_failed, '{}');
END
$$;

--------------------------------------------------------------------------
-- User calls: the caller's own inbox only
--------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION notify_ext.list_notifications(type text DEFAULT NULL,
                                              since timestamptz DEFAULT NULL,
                                              items_per_page integer DEFAULT 50,
                                              page integer DEFAULT 0)
    RETURNS jsonb
    LANGUAGE plpgsql STABLE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_me text := notify_ext.current_principal();
    v_total bigint;
    v_items jsonb;
BEGIN
    IF items_per_page IS NULL OR items_per_page < 1 OR items_per_page > 1000 THEN
        RAISE EXCEPTION 'items_per_page must be between 1 and 1000, not %', COALESCE(items_per_page::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF page IS NULL OR page < 0 THEN
        RAISE EXCEPTION 'page must be 0 or more, not %', COALESCE(page::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pages are counted from 0.';
    END IF;
    IF since IS NULL THEN
        SELECT COALESCE(sum(c.total), 0) INTO v_total
          FROM notify_ext.inbox_counts c
         WHERE c.recipient = v_me
           AND (list_notifications.type IS NULL OR c.type = list_notifications.type);
    ELSE
        SELECT count(*) INTO v_total
          FROM notify_ext.notifications n
         WHERE n.recipient = v_me AND n.ts >= since
           AND (list_notifications.type IS NULL OR n.type = list_notifications.type);
    END IF;
    SELECT COALESCE(pg_catalog.jsonb_agg(x.item ORDER BY x.ts DESC, x.id DESC), '[]') INTO v_items
      FROM (SELECT n.id, n.ts,
                   notify_ext._inbox_item(n.id, n.type, n.message, n.meta, n.ts, n.read) AS item
              FROM notify_ext.notifications n
             WHERE n.recipient = v_me
               AND (list_notifications.type IS NULL OR n.type = list_notifications.type)
               AND (since IS NULL OR n.ts >= since)
             ORDER BY n.ts DESC, n.id DESC
             LIMIT items_per_page OFFSET page::bigint * items_per_page) x;
    RETURN pg_catalog.jsonb_build_object('itemsInTotal', v_total, 'itemsPerPage', items_per_page,
                                         'pageNumber', page, 'items', v_items);
END
$$;

-- One of the caller's own notifications, in the item shape of
-- list_notifications(): what a listener fetches for the {"id": n} it got on
-- subscription_channel().  42704 alike for an unknown id and for someone
-- else's, so that the answer tells nothing about other inboxes.
CREATE OR REPLACE FUNCTION notify_ext.get_notification(id bigint) RETURNS jsonb
    LANGUAGE plpgsql STABLE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_me text := notify_ext.current_principal();
    v_item jsonb;
BEGIN
    IF get_notification.id IS NULL THEN
        RAISE EXCEPTION 'id must not be null'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass the id of one of your notifications, e.g. from the payload on notify_ext.subscription_channel().';
    END IF;
    SELECT notify_ext._inbox_item(n.id, n.type, n.message, n.meta, n.ts, n.read) INTO v_item
      FROM notify_ext.notifications n
     WHERE n.id OPERATOR(pg_catalog.=) get_notification.id
       AND n.recipient OPERATOR(pg_catalog.=) v_me;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'notification % is not in the inbox of principal "%"', get_notification.id, v_me
            USING ERRCODE = 'undefined_object',
                  HINT = 'It does not exist, was acknowledged or deleted, or belongs to someone else; notify_ext.list_notifications() lists your own.';
    END IF;
    RETURN v_item;
END
$$;

-- Internal: the ids of the list that are not notifications of principal p.
CREATE OR REPLACE FUNCTION notify_ext._inbox_not_mine(p text, ids bigint[]) RETURNS bigint[]
    LANGUAGE sql STABLE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT COALESCE(pg_catalog.array_agg(DISTINCT i ORDER BY i), '{}')
      FROM pg_catalog.unnest(ids) i
     WHERE i IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM notify_ext.notifications n WHERE n.id = i AND n.recipient = p)
$$;
REVOKE ALL ON FUNCTION notify_ext._inbox_not_mine(text, bigint[]) FROM PUBLIC;

CREATE OR REPLACE FUNCTION notify_ext.mark_as_read(ids bigint[]) RETURNS bigint[]
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_me text := notify_ext.current_principal();
    v_failed bigint[];
BEGIN
    IF ids IS NULL THEN
        RAISE EXCEPTION 'ids must not be null'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_failed := notify_ext._inbox_not_mine(v_me, ids);
    UPDATE notify_ext.notifications n SET read = true
     WHERE n.id = ANY (ids) AND n.recipient = v_me AND NOT n.read;
    RETURN v_failed;
END
$$;

CREATE OR REPLACE FUNCTION notify_ext.mark_all_as_read() RETURNS integer
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_n integer;
BEGIN
    UPDATE notify_ext.notifications n SET read = true
     WHERE n.recipient = notify_ext.current_principal() AND NOT n.read;
    GET DIAGNOSTICS v_n = ROW_COUNT;
    RETURN v_n;
END
$$;

CREATE OR REPLACE FUNCTION notify_ext.get_personal_notifications()
    RETURNS TABLE (id bigint, type text, message text, meta jsonb, refs jsonb,
                   ts timestamptz, read boolean)
    LANGUAGE sql STABLE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT n.id, n.type, n.message, n.meta, n.refs, n.ts, n.read
      FROM notify_ext.notifications n
     WHERE n.recipient = notify_ext.current_principal()
     ORDER BY n.ts DESC, n.id DESC
$$;

CREATE OR REPLACE FUNCTION notify_ext.acknowledge_personal_notifications(ids bigint[]) RETURNS bigint[]
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_me text := notify_ext.current_principal();
    v_failed bigint[];
BEGIN
    IF ids IS NULL THEN
        RAISE EXCEPTION 'ids must not be null'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_failed := notify_ext._inbox_not_mine(v_me, ids);
    DELETE FROM notify_ext.notifications n WHERE n.id = ANY (ids) AND n.recipient = v_me;
    RETURN v_failed;
END
$$;

CREATE OR REPLACE FUNCTION notify_ext.unread_count() RETURNS bigint
    LANGUAGE sql STABLE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT COALESCE(sum(c.unread), 0)::bigint
      FROM notify_ext.inbox_counts c
     WHERE c.recipient = notify_ext.current_principal()
$$;

CREATE OR REPLACE FUNCTION notify_ext.set_notification_preference(type text, enabled boolean) RETURNS void
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_me text := notify_ext.current_principal();
BEGIN
    IF type IS NULL OR type = '' THEN
        RAISE EXCEPTION 'notification type must not be empty'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF enabled IS NULL THEN
        RAISE EXCEPTION 'enabled must be true or false for type "%"', type
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM notify_ext._check_name_length(type, 'notification type');
    IF enabled THEN
        DELETE FROM notify_ext.notification_preferences p
         WHERE p.principal = v_me AND p.type = set_notification_preference.type;
    ELSE
        INSERT INTO notify_ext.notification_preferences (principal, type)
        VALUES (v_me, set_notification_preference.type)
        ON CONFLICT DO NOTHING;
    END IF;
END
$$;

-- The channel to LISTEN on for the caller's new notifications.  See
-- docs/inbox.md for why it is a keyed hash of the principal.
CREATE OR REPLACE FUNCTION notify_ext.subscription_channel() RETURNS text
    LANGUAGE sql STABLE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT notify_ext._inbox_channel(notify_ext.current_principal())
$$;
