--------------------------------------------------------------------------
-- Personal notifications: the inbox (see docs/inbox.md)
--
-- One row per notification.  Acknowledging or deleting removes the row.
-- Counts per (recipient, type) are kept as insert-only deltas in
-- inbox_counts by statement-level triggers, so that itemsInTotal and
-- unread_count() cost the same for a user with a million notifications as
-- for one with ten, without a hot counter row that concurrent writers would
-- queue (or deadlock) on.  Deltas are folded together once a recipient has
-- a few of them.  create_notifications_bulk() adds the deltas (and sends
-- the NOTIFYs) of its own rows itself, when the insert trigger fires.
--------------------------------------------------------------------------

CREATE SEQUENCE notify_ext.notifications_id_seq AS bigint;
REVOKE ALL ON notify_ext.notifications_id_seq FROM PUBLIC;

CREATE TABLE notify_ext.notifications (
    id         bigint      PRIMARY KEY DEFAULT pg_catalog.nextval('notify_ext.notifications_id_seq'),
    recipient  text        NOT NULL CHECK (recipient <> ''),
    type       text        NOT NULL CHECK (type <> ''),
    message    text        NOT NULL,
    meta       jsonb,
    refs       jsonb,
    ts         timestamptz NOT NULL DEFAULT pg_catalog.now(),
    read       boolean     NOT NULL DEFAULT false
);
ALTER SEQUENCE notify_ext.notifications_id_seq OWNED BY notify_ext.notifications.id;
-- One user's page, newest first, whatever the table holds for others.
CREATE INDEX notifications_recipient_ts_idx
    ON notify_ext.notifications (recipient, ts DESC, id DESC);
SELECT pg_catalog.pg_extension_config_dump('notify_ext.notifications', '');
SELECT pg_catalog.pg_extension_config_dump('notify_ext.notifications_id_seq', '');

CREATE TABLE notify_ext.inbox_counts (
    recipient  text   NOT NULL,
    type       text   NOT NULL,
    total      bigint NOT NULL,
    unread     bigint NOT NULL
);
CREATE INDEX inbox_counts_recipient_idx ON notify_ext.inbox_counts (recipient, type);
REVOKE ALL ON notify_ext.inbox_counts FROM PUBLIC;
-- Not dumped: the counts follow from notifications, and restoring those
-- (COPY fires the insert trigger) counts them again.

-- Types a recipient has switched off (a row means "off").
CREATE TABLE notify_ext.notification_preferences (
    principal  text NOT NULL CHECK (principal <> ''),
    type       text NOT NULL CHECK (type <> ''),
    PRIMARY KEY (principal, type)
);
SELECT pg_catalog.pg_extension_config_dump('notify_ext.notification_preferences', '');

-- Direct SQL: a role sees, marks read and deletes only the rows of its own
-- principal; it can neither insert nor change anything else.
REVOKE ALL ON notify_ext.notifications FROM PUBLIC;
GRANT SELECT, DELETE ON notify_ext.notifications TO PUBLIC;
GRANT UPDATE (read) ON notify_ext.notifications TO PUBLIC;
ALTER TABLE notify_ext.notifications ENABLE ROW LEVEL SECURITY;

REVOKE ALL ON notify_ext.notification_preferences FROM PUBLIC;
GRANT SELECT ON notify_ext.notification_preferences TO PUBLIC;
ALTER TABLE notify_ext.notification_preferences ENABLE ROW LEVEL SECURITY;
