--------------------------------------------------------------------------
-- Stream consumers
--
-- A consumer reads the events of its scope in seq order.  delivered_upto
-- is how far it has looked: every event in scope at or below it has been
-- handed out at least once.  Handed-out messages that are not acknowledged
-- yet sit in consumer_pending, grouped by the fetch that handed them out;
-- acknowledging removes them, so nothing is kept per acknowledged message.
--------------------------------------------------------------------------

CREATE TABLE notify_ext.consumers (
    id                   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    owner                text NOT NULL,
    resource_id          text,
    include_subresources boolean NOT NULL,
    deliver              text NOT NULL
                         CHECK (deliver IN ('all', 'new', 'from_date', 'from_sequence')),
    from_date            timestamptz,
    from_sequence        bigint,
    streams              text[],
    operations           text[],
    ack_wait             interval NOT NULL,
    max_deliver          integer NOT NULL,
    delivered_upto       bigint NOT NULL,
    -- every seq at or below ack_floor is acknowledged or out of scope; kept
    -- up to date by fetches (acknowledgements only shrink consumer_pending)
    ack_floor            bigint NOT NULL,
    last_delivered       bigint,
    num_redelivered      bigint NOT NULL DEFAULT 0,
    num_terminated       bigint NOT NULL DEFAULT 0,
    missed               bigint NOT NULL DEFAULT 0,
    created_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX consumers_owner_idx ON notify_ext.consumers (owner);
REVOKE ALL ON notify_ext.consumers FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('notify_ext.consumers', '');

CREATE TABLE notify_ext.consumer_pending (
    consumer       uuid NOT NULL REFERENCES notify_ext.consumers ON DELETE CASCADE,
    batch          bigint GENERATED ALWAYS AS IDENTITY,
    delivery_count integer NOT NULL,
    seqs           bigint[] NOT NULL,     -- sorted
    lo             bigint NOT NULL,       -- seqs[1]
    hi             bigint NOT NULL,       -- seqs[cardinality(seqs)]
    delivered_at   timestamptz NOT NULL,
    due_at         timestamptz NOT NULL,
    PRIMARY KEY (consumer, batch)
);
-- a fetch's seqs are read and rewritten whole; compressing them costs more than it saves
ALTER TABLE notify_ext.consumer_pending ALTER COLUMN seqs SET STORAGE EXTERNAL;
REVOKE ALL ON notify_ext.consumer_pending FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('notify_ext.consumer_pending', '');
-- Dumped too, so that fetches after a restore number their batches past
-- the restored ones.
SELECT pg_catalog.pg_extension_config_dump('notify_ext.consumer_pending_batch_seq', '');

-- Generations of the key that signs replies.  The keys themselves are
-- derived from the server key file and never stored.  Replies are signed
-- with the highest generation; an empty table means generation 1, in use
-- (so the install script writes no row, and a restore of the dumped rows
-- meets none).  rotate_reply_key() records generation 1 when it retires it.
CREATE TABLE notify_ext.reply_keys (
    generation integer PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now(),
    retired_at timestamptz
);
REVOKE ALL ON notify_ext.reply_keys FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('notify_ext.reply_keys', '');
