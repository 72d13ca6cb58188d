--------------------------------------------------------------------------
-- Relays to NATS JetStream (see docs/relays.md)
--
-- A relay publishes the events of its scope, in seq order, to a JetStream
-- stream.  position is how far it has got: every event in scope with
-- seq <= position has been acknowledged by JetStream (a PubAck), so after
-- a restart the relay's worker goes on from there; whatever it had
-- published beyond it is published again with the same Nats-Msg-Id, and
-- JetStream's duplicate window drops the repeat.
--
-- pg_dump keeps the relays with their positions; secrets (the password,
-- token, NKey seed or credentials, and a TLS client key) are sealed like
-- webhook secrets: nonce || crypto_secretbox under a key derived from the
-- server key file, which no table holds.
--------------------------------------------------------------------------

CREATE TABLE notify_ext.relays (
    id                   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name                 text NOT NULL UNIQUE,
    servers              text[] NOT NULL,
    stream               text NOT NULL,
    subject_prefix       text NOT NULL,
    resource_id          text,
    include_subresources boolean NOT NULL,
    streams              text[],
    operations           text[],
    -- none, user_password, token, nkey or credentials; auth_public is what
    -- may be shown (the user name, the NKey public key), the secret is sealed
    auth_type            text NOT NULL DEFAULT 'none'
                         CHECK (auth_type IN ('none', 'user_password', 'token', 'nkey', 'credentials')),
    auth_public          text,
    auth_sealed          bytea,
    -- {"ca": PEM, "verify": bool, "hostname": text, "cert": PEM}; NULL: no TLS
    -- unless a server URL says tls://.  The client key is sealed apart.
    tls                  jsonb,
    tls_key_sealed       bytea,
    deliver              text NOT NULL CHECK (deliver IN ('new', 'all')),
    ensure_stream        boolean NOT NULL,
    paused               boolean NOT NULL DEFAULT false,
    -- every event in scope with seq <= position is in the stream
    position             bigint NOT NULL,
    published            bigint NOT NULL DEFAULT 0,
    -- events that retention removed before the relay published them
    missed               bigint NOT NULL DEFAULT 0,
    -- when the worker last moved position, and the occurred_at of the
    -- newest event it published
    last_published_at    timestamptz,
    last_event_at        timestamptz,
    -- set by the worker: connecting, publishing or failing
    state                text NOT NULL DEFAULT 'starting',
    last_error           text,
    last_error_at        timestamptz,
    failing_since        timestamptz,
    created_by           text NOT NULL,
    created_at           timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON notify_ext.relays FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('notify_ext.relays', '');
