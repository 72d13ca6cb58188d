--------------------------------------------------------------------------
-- The event log
--
-- seq is assigned when the writing transaction commits (see
-- docs/ordering.md), so it follows commit order.  The sequence below is not
-- used to number events: it only persists how far numbering has gone, in
-- chunks, so that numbers are never reused after a restart, nor after a
-- restore of a dump (which sets it back to where it was).
--------------------------------------------------------------------------

CREATE SEQUENCE notify_ext.seq_reservation AS bigint MINVALUE 0 START WITH 0 NO CYCLE;
REVOKE ALL ON notify_ext.seq_reservation FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('notify_ext.seq_reservation', '');

-- Partitioned by day of occurred_at so that retention drops whole
-- partitions.  payload is stored as json text, which the trigger writes
-- without building a jsonb tree; readers get jsonb.
CREATE TABLE notify_ext.event_log (
    seq              bigint      NOT NULL,
    occurred_at      timestamptz NOT NULL,
    stream           text        NOT NULL,
    operation        text        NOT NULL,
    resource_id      text,
    resource_variant text,
    resource_path    text[],
    actor            text        NOT NULL,
    payload          json        NOT NULL,
    changed          text[]
) PARTITION BY RANGE (occurred_at);
CREATE TABLE notify_ext.event_log_default PARTITION OF notify_ext.event_log DEFAULT;
-- seq is indexed with BRIN: events are written in seq order when their
-- transaction commits, so a block range holds a narrow band of seqs, and a
-- writer pays for one summary per range rather than an index entry per
-- event.  Writers summarize each range as they start it (src/capture.c);
-- autosummarize is the fallback.  Each partition has an index of its own
-- (_create_event_partitions() makes those of the day partitions) and
-- event_log has none: a partitioned index would make ATTACH PARTITION
-- build one while pg_restore attaches the dumped day partitions, before it
-- creates their dumped indexes, and the restore would fail.
CREATE INDEX event_log_default_seq_idx ON notify_ext.event_log_default USING brin (seq)
    WITH (pages_per_range = 32, autosummarize = on);
REVOKE ALL ON notify_ext.event_log FROM PUBLIC;
REVOKE ALL ON notify_ext.event_log_default FROM PUBLIC;
-- pg_dump keeps the day partitions (ordinary tables, not members of the
-- extension) with their rows; the default partition is a member, so its
-- rows are dumped as configuration.
SELECT pg_catalog.pg_extension_config_dump('notify_ext.event_log_default', '');
