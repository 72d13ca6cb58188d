--------------------------------------------------------------------------
-- Inbox change signals
--
-- Besides {"id": n} for a new notification, a principal's inbox channel
-- carries {"read": [ids]} when notifications become read and
-- {"deleted": [ids]} when they are deleted (acknowledged, deleted by a
-- service, or pruned), so that every open client of the principal stays in
-- step.  Ids only, like every payload on a live channel (docs/security.md).
-- A NOTIFY payload must stay under 8000 bytes: ids go out in chunks of at
-- most 300 (at most 20 digits and a separator each).
--------------------------------------------------------------------------

-- Internal: queues the NOTIFYs {"<kind>": [ids]} on a principal's inbox
-- channel, sent when the transaction commits.
CREATE OR REPLACE FUNCTION notify_ext._inbox_signal(kind text, recipient text, ids bigint[])
    RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_chunk constant integer := 300;
    v_channel text := notify_ext._inbox_channel(recipient);
BEGIN
    FOR i IN 1 .. COALESCE(cardinality(ids), 0) BY v_chunk LOOP
        PERFORM pg_notify(v_channel, format('{"%s": [%s]}', kind,
                                            array_to_string(ids[i : i + v_chunk - 1], ', ')));
    END LOOP;
END
$$;
REVOKE ALL ON FUNCTION notify_ext._inbox_signal(text, text, bigint[]) FROM PUBLIC;

CREATE OR REPLACE FUNCTION notify_ext._inbox_signal_read() RETURNS trigger
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT n.recipient, array_agg(n.id ORDER BY n.id) AS ids
          FROM new_rows n JOIN old_rows o ON o.id = n.id
         WHERE n.read AND NOT o.read
         GROUP BY n.recipient
    LOOP
        PERFORM notify_ext._inbox_signal('read', r.recipient, r.ids);
    END LOOP;
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION notify_ext._inbox_signal_read() FROM PUBLIC;

CREATE OR REPLACE FUNCTION notify_ext._inbox_signal_deleted() RETURNS trigger
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT o.recipient, array_agg(o.id ORDER BY o.id) AS ids
          FROM old_rows o GROUP BY o.recipient
    LOOP
        PERFORM notify_ext._inbox_signal('deleted', r.recipient, r.ids);
    END LOOP;
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION notify_ext._inbox_signal_deleted() FROM PUBLIC;

CREATE OR REPLACE TRIGGER notifications_signal_read AFTER UPDATE ON notify_ext.notifications
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION notify_ext._inbox_signal_read();
CREATE OR REPLACE TRIGGER notifications_signal_deleted AFTER DELETE ON notify_ext.notifications
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION notify_ext._inbox_signal_deleted();
