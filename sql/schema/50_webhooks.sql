--------------------------------------------------------------------------
-- Webhook subscriptions (see docs/webhooks.md)
--
-- pg_dump keeps all of it: auth configs and webhooks (secrets as
-- ciphertext only), the queue and the delivery log.  Secrets are sealed with libsodium's crypto_secretbox
-- under a key derived from the server key file $PGDATA/notify_ext.key: no
-- table holds the key, so neither a SELECT nor a dump reveals a secret.
--
-- Delivery state: webhooks.cursor_seq is how far the webhook's worker has
-- looked at the event log (every event in scope at or below it has been
-- queued); webhook_queue holds the deliveries not yet done; delivery_log
-- records every attempt (notify_ext.deliveries shows it).  A webhook's
-- worker (one per database, started by the launcher) does the rest.
--------------------------------------------------------------------------

CREATE TABLE notify_ext.subscription_auth (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    auth_type   text NOT NULL
                CHECK (auth_type IN ('NO_AUTH', 'BASIC_AUTH', 'OAUTH_2_CLIENT_CREDENTIALS')),
    key         text,
    -- nonce || crypto_secretbox(secret), see _webhook_seal()
    secret_sealed bytea,
    scope       text,
    token_url   text,
    created_by  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON notify_ext.subscription_auth FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('notify_ext.subscription_auth', '');

CREATE TABLE notify_ext.webhooks (
    id                   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    url                  text NOT NULL,
    operations           text[],
    streams              text[],
    resource_id          text,
    include_subresources boolean NOT NULL DEFAULT true,
    auth_config          uuid REFERENCES notify_ext.subscription_auth ON DELETE RESTRICT,
    -- nonce || crypto_secretbox(32 random bytes): the whsec_ signing key
    secret_sealed        bytea NOT NULL,
    created_by           text NOT NULL,
    created_at           timestamptz NOT NULL DEFAULT now(),
    status               text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
    disabled_at          timestamptz,
    disabled_reason      text,
    -- every event in scope with seq <= cursor_seq has been queued
    cursor_seq           bigint NOT NULL,
    -- consecutive failed attempts, and since when attempts keep failing
    failures             bigint NOT NULL DEFAULT 0,
    failing_since        timestamptz,
    last_success_at      timestamptz,
    last_failure_at      timestamptz,
    last_error           text
);
CREATE INDEX webhooks_auth_config_idx ON notify_ext.webhooks (auth_config);
REVOKE ALL ON notify_ext.webhooks FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('notify_ext.webhooks', '');

-- Deliveries not done yet: one row per (webhook, event).  attempt counts the
-- attempts made so far; in_flight marks rows the worker is sending now (the
-- worker clears every mark when it starts, so a crash loses nothing).
CREATE TABLE notify_ext.webhook_queue (
    webhook         uuid NOT NULL REFERENCES notify_ext.webhooks ON DELETE CASCADE,
    seq             bigint NOT NULL,
    attempt         integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    in_flight       boolean NOT NULL DEFAULT false,
    queued_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (webhook, seq)
);
CREATE INDEX webhook_queue_due_idx ON notify_ext.webhook_queue (webhook, next_attempt_at, seq)
    WHERE NOT in_flight;
REVOKE ALL ON notify_ext.webhook_queue FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('notify_ext.webhook_queue', '');

-- Every attempt.  Pruned by retention (notify_ext.delivery_retention) on
-- created_at, the time the attempt started.
CREATE TABLE notify_ext.delivery_log (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    webhook         uuid NOT NULL,
    seq             bigint NOT NULL,
    attempt         integer NOT NULL,
    message_id      text NOT NULL,
    status_code     integer,
    error           text,
    duration        interval,
    next_attempt_at timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX delivery_log_created_at_idx ON notify_ext.delivery_log (created_at);
CREATE INDEX delivery_log_webhook_idx ON notify_ext.delivery_log (webhook, seq);
REVOKE ALL ON notify_ext.delivery_log FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('notify_ext.delivery_log', '');
SELECT pg_catalog.pg_extension_config_dump('notify_ext.delivery_log_id_seq', '');
