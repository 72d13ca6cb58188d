--------------------------------------------------------------------------
-- Webhook subscriptions
--------------------------------------------------------------------------

--------------------------------------------------------------------------
-- Internal functions (C)
--------------------------------------------------------------------------

-- nonce || crypto_secretbox(plain) under the server's "auth-secrets" key.
CREATE OR REPLACE FUNCTION notify_ext._webhook_seal(plain bytea) RETURNS bytea
    LANGUAGE c VOLATILE STRICT AS 'MODULE_PATHNAME', 'notify_ext_webhook_seal';
REVOKE ALL ON FUNCTION notify_ext._webhook_seal(bytea) FROM PUBLIC;

-- A new webhook signing key (32 random bytes), sealed.
CREATE OR REPLACE FUNCTION notify_ext._webhook_new_signing_key() RETURNS bytea
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'notify_ext_webhook_new_signing_key';
REVOKE ALL ON FUNCTION notify_ext._webhook_new_signing_key() FROM PUBLIC;

CREATE OR REPLACE FUNCTION notify_ext._webhook_unseal(sealed bytea) RETURNS bytea
    LANGUAGE c VOLATILE STRICT AS 'MODULE_PATHNAME', 'notify_ext_webhook_unseal';
REVOKE ALL ON FUNCTION notify_ext._webhook_unseal(bytea) FROM PUBLIC;

-- At commit, tell this database's webhook worker (or the launcher) that the
-- webhooks changed.
CREATE OR REPLACE FUNCTION notify_ext._webhooks_changed() RETURNS void
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'notify_ext_webhooks_changed';
REVOKE ALL ON FUNCTION notify_ext._webhooks_changed() FROM PUBLIC;

-- Whether the background worker can run (notify_ext preloaded).
CREATE OR REPLACE FUNCTION notify_ext._webhook_worker_available() RETURNS boolean
    LANGUAGE c STABLE AS 'MODULE_PATHNAME', 'notify_ext_webhook_worker_available';

-- 22023 unless url is an allowed webhook or token URL (docs/webhooks.md,
-- "URL policy"); what names it in the messages.
CREATE OR REPLACE FUNCTION notify_ext._webhook_check_url(url text, what text) RETURNS void
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'notify_ext_webhook_check_url';
REVOKE ALL ON FUNCTION notify_ext._webhook_check_url(text, text) FROM PUBLIC;

-- The webhook-id of every attempt to deliver event seq to a webhook.
CREATE OR REPLACE FUNCTION notify_ext._webhook_message_id(webhook uuid, seq bigint) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$
    SELECT 'msg_' OPERATOR(pg_catalog.||) pg_catalog.replace(webhook::pg_catalog.text, '-', '')
           OPERATOR(pg_catalog.||) '_' OPERATOR(pg_catalog.||) seq::pg_catalog.text
$$;

--------------------------------------------------------------------------
-- Auth configs
--------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION notify_ext.create_subscription_auth(auth_type text, key text DEFAULT NULL,
        secret text DEFAULT NULL, scope text DEFAULT NULL, token_url text DEFAULT NULL)
    RETURNS uuid
    LANGUAGE plpgsql VOLATILE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_type text := upper(btrim(auth_type));
    v_id uuid;
    v_hint text := 'BASIC_AUTH needs key and secret; OAUTH_2_CLIENT_CREDENTIALS needs scope and '
                   'token_url (key and secret are the client id and secret); NO_AUTH takes none.';
BEGIN
    PERFORM notify_ext._require_service_caller('create_subscription_auth');
    IF v_type IS NULL THEN
        RAISE EXCEPTION 'auth_type must not be NULL'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'auth_type is NO_AUTH, BASIC_AUTH or OAUTH_2_CLIENT_CREDENTIALS.';
    END IF;
    IF v_type NOT IN ('NO_AUTH', 'BASIC_AUTH', 'OAUTH_2_CLIENT_CREDENTIALS') THEN
        RAISE EXCEPTION 'unknown auth_type "%"', auth_type
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'auth_type is NO_AUTH, BASIC_AUTH or OAUTH_2_CLIENT_CREDENTIALS.';
    END IF;
    IF v_type = 'NO_AUTH' THEN
        IF key IS NOT NULL OR secret IS NOT NULL OR scope IS NOT NULL OR token_url IS NOT NULL THEN
            RAISE EXCEPTION 'auth_type NO_AUTH takes no %',
                  CASE WHEN key IS NOT NULL THEN 'key' WHEN secret IS NOT NULL THEN 'secret'
                       WHEN scope IS NOT NULL THEN 'scope' ELSE 'token_url' END
                USING ERRCODE = 'invalid_parameter_value', HINT = v_hint;
        END IF;
    ELSIF v_type = 'BASIC_AUTH' THEN
        IF key IS NULL OR key = '' THEN
            RAISE EXCEPTION 'auth_type BASIC_AUTH needs a key (the user name)'
                USING ERRCODE = 'invalid_parameter_value', HINT = v_hint;
        END IF;
        IF strpos(key, ':') > 0 THEN
            RAISE EXCEPTION 'the key "%" of a BASIC_AUTH config must not contain ":"', key
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF secret IS NULL OR secret = '' THEN
            RAISE EXCEPTION 'auth_type BASIC_AUTH needs a secret (the password)'
                USING ERRCODE = 'invalid_parameter_value', HINT = v_hint;
        END IF;
        IF scope IS NOT NULL OR token_url IS NOT NULL THEN
            RAISE EXCEPTION 'auth_type BASIC_AUTH takes no %',
                  CASE WHEN scope IS NOT NULL THEN 'scope' ELSE 'token_url' END
                USING ERRCODE = 'invalid_parameter_value', HINT = v_hint;
        END IF;
    ELSE
        IF scope IS NULL OR scope = '' THEN
            RAISE EXCEPTION 'auth_type OAUTH_2_CLIENT_CREDENTIALS needs a scope'
                USING ERRCODE = 'invalid_parameter_value', HINT = v_hint;
        END IF;
        IF token_url IS NULL OR token_url = '' THEN
            RAISE EXCEPTION 'auth_type OAUTH_2_CLIENT_CREDENTIALS needs a token_url'
                USING ERRCODE = 'invalid_parameter_value', HINT = v_hint;
        END IF;
        PERFORM notify_ext._webhook_check_url(token_url, 'token_url');
        IF (key IS NULL OR key = '') <> (secret IS NULL OR secret = '') THEN
            RAISE EXCEPTION 'auth_type OAUTH_2_CLIENT_CREDENTIALS needs %',
                  CASE WHEN key IS NULL OR key = '' THEN 'a key (the client id) with the secret'
                       ELSE 'a secret (the client secret) with the key' END
                USING ERRCODE = 'invalid_parameter_value', HINT = v_hint;
        END IF;
        IF key IS NULL OR key = '' THEN
            RAISE EXCEPTION 'auth_type OAUTH_2_CLIENT_CREDENTIALS needs a key (the client id)'
                USING ERRCODE = 'invalid_parameter_value', HINT = v_hint;
        END IF;
    END IF;
    INSERT INTO notify_ext.subscription_auth AS a (auth_type, key, secret_sealed, scope, token_url, created_by)
    VALUES (v_type, NULLIF(key, ''),
            CASE WHEN secret IS NOT NULL AND secret <> ''
                 THEN notify_ext._webhook_seal(convert_to(secret, 'UTF8')) END,
            scope, token_url, notify_ext.current_principal())
    RETURNING a.id INTO v_id;
    RETURN v_id;
END
$$;

CREATE OR REPLACE FUNCTION notify_ext.list_subscription_auth()
    RETURNS TABLE (id uuid, auth_type text, key text, scope text, token_url text, created_at timestamptz)
    LANGUAGE plpgsql STABLE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM notify_ext._require_service_caller('list_subscription_auth');
    RETURN QUERY
        SELECT a.id, a.auth_type, a.key, a.scope, a.token_url, a.created_at
          FROM notify_ext.subscription_auth a
         ORDER BY a.created_at, a.id;
END
$$;

CREATE OR REPLACE FUNCTION notify_ext.delete_subscription_auth(id uuid) RETURNS void
    LANGUAGE plpgsql VOLATILE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_users text;
BEGIN
    PERFORM notify_ext._require_service_caller('delete_subscription_auth');
    IF id IS NULL THEN
        RAISE EXCEPTION 'auth config must not be NULL'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- Locking the row makes a concurrent create_webhook() wait or fail.
    PERFORM 1 FROM notify_ext.subscription_auth a WHERE a.id = delete_subscription_auth.id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'auth config % does not exist', id
            USING ERRCODE = 'undefined_object';
    END IF;
    SELECT string_agg(w.id::text, ', ' ORDER BY w.created_at, w.id) INTO v_users
      FROM notify_ext.webhooks w WHERE w.auth_config = delete_subscription_auth.id;
    IF v_users IS NOT NULL THEN
        RAISE EXCEPTION 'auth config % is used by webhook %', id, v_users
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Delete the webhooks that use it first.';
    END IF;
    DELETE FROM notify_ext.subscription_auth a WHERE a.id = delete_subscription_auth.id;
END
$$;

--------------------------------------------------------------------------
-- Webhooks
--------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION notify_ext.create_webhook(url text, operations text[] DEFAULT NULL,
        streams text[] DEFAULT NULL, resource_id text DEFAULT NULL,
        include_subresources boolean DEFAULT true, auth_config uuid DEFAULT NULL)
    RETURNS uuid
    LANGUAGE plpgsql VOLATILE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_id uuid;
    v_ops text[];
    v_streams text[];
    v_cursor bigint;
BEGIN
    PERFORM notify_ext._require_service_caller('create_webhook');
    PERFORM notify_ext._webhook_check_url(url, 'webhook url');
    v_ops := notify_ext._check_scope_list(operations, 'operations');
    v_streams := notify_ext._check_scope_list(streams, 'streams');
    IF include_subresources IS NULL THEN
        RAISE EXCEPTION 'include_subresources must not be NULL'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF resource_id IS NOT NULL THEN
        PERFORM notify_ext._require_resource(resource_id);
    END IF;
    IF auth_config IS NOT NULL THEN
        PERFORM 1 FROM notify_ext.subscription_auth a WHERE a.id = create_webhook.auth_config FOR KEY SHARE;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'auth config % does not exist', auth_config
                USING ERRCODE = 'undefined_object',
                      HINT = 'Create one with notify_ext.create_subscription_auth().';
        END IF;
    END IF;
    IF notify_ext._webhook_worker_available() THEN
        -- Deliver the events that commit from now on.
        v_cursor := notify_ext.committed_seq();
    ELSE
        v_cursor := COALESCE((SELECT max(e.seq) FROM notify_ext.event_log e), 0);
        RAISE WARNING 'webhook to "%" created, but nothing is delivered: notify_ext is not in shared_preload_libraries', url
            USING HINT = 'Add notify_ext to shared_preload_libraries in postgresql.conf and restart the server; '
                         'the background worker that delivers webhooks only runs then.';
    END IF;
    INSERT INTO notify_ext.webhooks AS w (url, operations, streams, resource_id, include_subresources,
                                          auth_config, secret_sealed, created_by, cursor_seq)
    VALUES (url, v_ops, v_streams, resource_id, include_subresources, auth_config,
            notify_ext._webhook_new_signing_key(), notify_ext.current_principal(), v_cursor)
    RETURNING w.id INTO v_id;
    PERFORM notify_ext._webhooks_changed();
    RETURN v_id;
END
$$;

CREATE OR REPLACE FUNCTION notify_ext.webhook_secret(id uuid) RETURNS text
    LANGUAGE plpgsql STABLE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_sealed bytea;
BEGIN
    PERFORM notify_ext._require_service_caller('webhook_secret');
    SELECT w.secret_sealed INTO v_sealed FROM notify_ext.webhooks w WHERE w.id = webhook_secret.id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'webhook % does not exist', id
            USING ERRCODE = 'undefined_object';
    END IF;
    RETURN 'whsec_' || encode(notify_ext._webhook_unseal(v_sealed), 'base64');
END
$$;

CREATE OR REPLACE FUNCTION notify_ext.delete_webhook(id uuid) RETURNS void
    LANGUAGE plpgsql VOLATILE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM notify_ext._require_service_caller('delete_webhook');
    -- Before any row: see "Lock order" below.
    LOCK TABLE notify_ext.webhook_queue IN SHARE ROW EXCLUSIVE MODE;
    DELETE FROM notify_ext.webhooks w WHERE w.id = delete_webhook.id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'webhook % does not exist', id
            USING ERRCODE = 'undefined_object';
    END IF;
    PERFORM notify_ext._webhooks_changed();
END
$$;

-- Not in the contract: switches a disabled webhook back on.  It delivers the
-- events that commit from now on; redeliver() sends older ones again.
CREATE OR REPLACE FUNCTION notify_ext.enable_webhook(id uuid) RETURNS void
    LANGUAGE plpgsql VOLATILE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM notify_ext._require_service_caller('enable_webhook');
    -- Before any row: see "Lock order" below.
    LOCK TABLE notify_ext.webhook_queue IN SHARE ROW EXCLUSIVE MODE;
    UPDATE notify_ext.webhooks w
       SET status = 'active', disabled_at = NULL, disabled_reason = NULL,
           failures = 0, failing_since = NULL,
           cursor_seq = CASE WHEN w.status = 'disabled'
                             THEN GREATEST(w.cursor_seq, notify_ext.committed_seq())
                             ELSE w.cursor_seq END
     WHERE w.id = enable_webhook.id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'webhook % does not exist', id
            USING ERRCODE = 'undefined_object';
    END IF;
    PERFORM notify_ext._webhooks_changed();
END
$$;

CREATE OR REPLACE FUNCTION notify_ext.list_webhooks() RETURNS SETOF jsonb
    LANGUAGE plpgsql STABLE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM notify_ext._require_service_caller('list_webhooks');
    RETURN QUERY
        SELECT jsonb_build_object(
                   'id', w.id, 'url', w.url, 'operations', w.operations, 'streams', w.streams,
                   'resource_id', w.resource_id, 'include_subresources', w.include_subresources,
                   'auth_config', w.auth_config, 'auth_type', a.auth_type,
                   'status', w.status, 'failures', w.failures, 'failing_since', w.failing_since,
                   'disabled_at', w.disabled_at, 'disabled_reason', w.disabled_reason,
                   'last_success_at', w.last_success_at, 'last_failure_at', w.last_failure_at,
                   'last_error', w.last_error,
                   'pending', (SELECT count(*) FROM notify_ext.webhook_queue q WHERE q.webhook = w.id),
                   'created_by', w.created_by, 'created_at', w.created_at)
          FROM notify_ext.webhooks w
          LEFT JOIN notify_ext.subscription_auth a ON a.id = w.auth_config
         ORDER BY w.created_at, w.id;
END
$$;

-- Queues again every retained event in the webhook's scope that occurred at
-- or after since (and that the webhook has already passed); returns how
-- many.  Deliveries already queued stay as they are.  Same webhook-id as
-- before, so receivers can tell a repeat.
CREATE OR REPLACE FUNCTION notify_ext.redeliver(webhook uuid, since timestamptz) RETURNS integer
    LANGUAGE plpgsql VOLATILE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    w notify_ext.webhooks;
    v_count integer;
BEGIN
    PERFORM notify_ext._require_service_caller('redeliver');
    IF since IS NULL THEN
        RAISE EXCEPTION 'since must not be NULL'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass ''-infinity'' to send every retained event again.';
    END IF;
    -- Before any row: see "Lock order" below.
    LOCK TABLE notify_ext.webhook_queue IN SHARE ROW EXCLUSIVE MODE;
    SELECT * INTO w FROM notify_ext.webhooks x WHERE x.id = redeliver.webhook FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'webhook % does not exist', webhook
            USING ERRCODE = 'undefined_object';
    END IF;
    IF w.status <> 'active' THEN
        RAISE EXCEPTION 'webhook % is disabled', webhook
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Enable it with notify_ext.enable_webhook() first.';
    END IF;
    INSERT INTO notify_ext.webhook_queue (webhook, seq)
    SELECT w.id, e.seq
      FROM notify_ext.event_log e
     WHERE e.seq > 0 AND e.seq <= w.cursor_seq AND e.occurred_at >= since
       AND notify_ext._in_scope(w.resource_id, w.include_subresources, w.streams, w.operations,
                                NULL, e.resource_id, e.resource_path, e.stream, e.operation,
                                e.occurred_at)
    ON CONFLICT DO NOTHING;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    PERFORM notify_ext._webhooks_changed();
    RETURN v_count;
END
$$;

CREATE OR REPLACE VIEW notify_ext.deliveries AS
SELECT l.webhook, l.seq, l.attempt, l.message_id, l.status_code, l.error, l.duration,
       l.next_attempt_at, l.created_at AS attempted_at
  FROM notify_ext.delivery_log l
 WHERE notify_ext._is_service_caller();
REVOKE ALL ON notify_ext.deliveries FROM PUBLIC;
GRANT SELECT ON notify_ext.deliveries TO PUBLIC;

--------------------------------------------------------------------------
-- The worker's side (called by the background worker only)
--------------------------------------------------------------------------

-- Lock order.  The worker's calls lock the rows of several webhooks and of
-- their queues in one transaction, and so can a caller's (delete_webhook()
-- of several webhooks, which deletes their queues).  Taken in different
-- orders, such row locks deadlock.  So each side takes a lock on
-- webhook_queue before any row: the worker's calls ROW EXCLUSIVE, which
-- they share with each other, and delete_webhook(), enable_webhook() and
-- redeliver() SHARE ROW EXCLUSIVE, which waits for the worker's
-- transaction in progress and holds the worker off until the caller's
-- transaction ends.  Writers of events never lock these rows.

-- The configuration of the active webhooks, secrets unsealed.
CREATE OR REPLACE FUNCTION notify_ext._webhook_config()
    RETURNS TABLE (id uuid, url text, signing_key bytea, auth_config uuid, auth_type text,
                   key text, secret text, scope text, token_url text)
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT w.id, w.url, notify_ext._webhook_unseal(w.secret_sealed), w.auth_config, a.auth_type,
           a.key, convert_from(notify_ext._webhook_unseal(a.secret_sealed), 'UTF8'), a.scope, a.token_url
      FROM notify_ext.webhooks w
      LEFT JOIN notify_ext.subscription_auth a ON a.id = w.auth_config
     WHERE w.status = 'active'
$$;
REVOKE ALL ON FUNCTION notify_ext._webhook_config() FROM PUBLIC;

-- Queues the events up to horizon (at most chunk per webhook) for every
-- active webhook; returns how many deliveries it queued.  horizon comes
-- from ordering_committed_seq(), read before this statement's snapshot.
CREATE OR REPLACE FUNCTION notify_ext._webhook_enqueue(horizon bigint, chunk bigint,
        OUT queued bigint, OUT behind boolean)
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    w notify_ext.webhooks;
    v_upto bigint;
    v_n bigint;
    v_each bigint;
BEGIN
    LOCK TABLE notify_ext.webhook_queue IN ROW EXCLUSIVE MODE;  -- lock order, above
    queued := 0;
    -- The events looked at are shared out among the webhooks behind, so that
    -- one call (and the row locks it holds) stays short however many there are.
    SELECT count(*) INTO v_n FROM notify_ext.webhooks x
     WHERE x.status = 'active' AND x.cursor_seq < horizon;
    behind := false;
    v_each := GREATEST(1000, chunk / GREATEST(v_n, 1));
    FOR w IN SELECT * FROM notify_ext.webhooks x
              WHERE x.status = 'active' AND x.cursor_seq < horizon
              ORDER BY x.id FOR NO KEY UPDATE
    LOOP
        v_upto := LEAST(horizon, w.cursor_seq + v_each);
        behind := behind OR v_upto < horizon;
        INSERT INTO notify_ext.webhook_queue (webhook, seq)
        SELECT w.id, e.seq
          FROM notify_ext.event_log e
         WHERE e.seq > w.cursor_seq AND e.seq <= v_upto
           AND notify_ext._in_scope(w.resource_id, w.include_subresources, w.streams, w.operations,
                                NULL, e.resource_id, e.resource_path, e.stream, e.operation,
                                e.occurred_at)
        ON CONFLICT DO NOTHING;
        GET DIAGNOSTICS v_n = ROW_COUNT;
        queued := queued + v_n;
        UPDATE notify_ext.webhooks x SET cursor_seq = v_upto WHERE x.id = w.id;
    END LOOP;
END
$$;
REVOKE ALL ON FUNCTION notify_ext._webhook_enqueue(bigint, bigint) FROM PUBLIC;

-- How many deliveries of each webhook are due and not in flight, counted up
-- to at_most; webhooks with none are left out.
CREATE OR REPLACE FUNCTION notify_ext._webhook_due(webhooks uuid[], at_most integer)
    RETURNS TABLE (webhook uuid, due integer)
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT l.w, d.n
      FROM unnest(webhooks) l(w)
     CROSS JOIN LATERAL (
           SELECT count(*)::integer AS n
             FROM (SELECT FROM notify_ext.webhook_queue q
                    WHERE q.webhook = l.w AND NOT q.in_flight AND q.next_attempt_at <= now()
                    LIMIT at_most) x) d
     WHERE d.n > 0
$$;
REVOKE ALL ON FUNCTION notify_ext._webhook_due(uuid[], integer) FROM PUBLIC;

-- Claims up to limits[i] due deliveries of webhooks[i]; returns them with
-- the event JSON (NULL when retention removed the event).
CREATE OR REPLACE FUNCTION notify_ext._webhook_claim(webhooks uuid[], limits integer[])
    RETURNS TABLE (webhook uuid, seq bigint, attempt integer, message text)
    LANGUAGE sql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
    LOCK TABLE notify_ext.webhook_queue IN ROW EXCLUSIVE MODE;  -- lock order, above
    WITH c AS (
        SELECT q.webhook, q.seq
          FROM unnest(webhooks, limits) l(w, n)
         CROSS JOIN LATERAL (
               SELECT q.webhook, q.seq FROM notify_ext.webhook_queue q
                WHERE q.webhook = l.w AND NOT q.in_flight AND q.next_attempt_at <= now()
                ORDER BY q.next_attempt_at, q.seq
                LIMIT l.n) q
    ), u AS (
        UPDATE notify_ext.webhook_queue q SET in_flight = true
          FROM c WHERE q.webhook = c.webhook AND q.seq = c.seq
        RETURNING q.webhook, q.seq, q.attempt
    )
    SELECT u.webhook, u.seq, u.attempt,
           (SELECT notify_ext.event_message(e.seq, e.stream, e.operation, e.resource_id,
                                            e.resource_variant, e.resource_path, e.occurred_at,
                                            e.actor, e.payload, e.changed)::text
              FROM notify_ext.event_log e WHERE e.seq = u.seq LIMIT 1)
      FROM u
$$;
REVOKE ALL ON FUNCTION notify_ext._webhook_claim(uuid[], integer[]) FROM PUBLIC;

-- When the next queued delivery not in flight falls due (after now).
CREATE OR REPLACE FUNCTION notify_ext._webhook_next_due() RETURNS timestamptz
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT min(q.next_attempt_at) FROM notify_ext.webhook_queue q
     WHERE NOT q.in_flight AND q.next_attempt_at > now()
$$;
REVOKE ALL ON FUNCTION notify_ext._webhook_next_due() FROM PUBLIC;

-- Disables a webhook, drops its queue and tells its creator.
CREATE OR REPLACE FUNCTION notify_ext._webhook_disable(p_webhook uuid, p_reason text) RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    w notify_ext.webhooks;
BEGIN
    UPDATE notify_ext.webhooks x
       SET status = 'disabled', disabled_at = now(), disabled_reason = p_reason
     WHERE x.id = p_webhook AND x.status = 'active'
    RETURNING * INTO w;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    DELETE FROM notify_ext.webhook_queue q WHERE q.webhook = p_webhook;
    PERFORM notify_ext._notify(w.created_by, 'WEBHOOK_DISABLED',
                format('Webhook %s to %s was disabled: %s', w.id, w.url, p_reason),
                jsonb_build_object('webhook', w.id, 'url', w.url, 'reason', p_reason,
                                   'failing_since', w.failing_since, 'failures', w.failures),
                now(), jsonb_build_array(jsonb_build_object('type', 'webhook', 'id', w.id)));
END
$$;
REVOKE ALL ON FUNCTION notify_ext._webhook_disable(uuid, text) FROM PUBLIC;

-- Records a batch of finished attempts.  outcome: s success, r retry at
-- next_at, f failed for good (schedule exhausted), g gone (410: disable the
-- webhook), m missing (the event is no longer retained).
CREATE OR REPLACE FUNCTION notify_ext._webhook_record(p_webhook uuid[], p_seq bigint[], p_attempt integer[],
        p_status integer[], p_error text[], p_duration_ms float8[], p_next timestamptz[],
        p_outcome text[], p_at timestamptz[], p_disable_after interval)
    RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r record;
BEGIN
    LOCK TABLE notify_ext.webhook_queue IN ROW EXCLUSIVE MODE;  -- lock order, above
    INSERT INTO notify_ext.delivery_log (webhook, seq, attempt, message_id, status_code, error,
                                         duration, next_attempt_at, created_at)
    SELECT x.webhook, x.seq, x.attempt, notify_ext._webhook_message_id(x.webhook, x.seq), x.status,
           x.error, make_interval(secs => x.duration_ms / 1000.0),
           CASE WHEN x.outcome = 'r' THEN x.next_at END, x.at
      FROM unnest(p_webhook, p_seq, p_attempt, p_status, p_error, p_duration_ms, p_next, p_outcome, p_at)
             AS x(webhook, seq, attempt, status, error, duration_ms, next_at, outcome, at);

    DELETE FROM notify_ext.webhook_queue q USING unnest(p_webhook, p_seq, p_attempt, p_status, p_error, p_duration_ms, p_next, p_outcome, p_at)
             AS x(webhook, seq, attempt, status, error, duration_ms, next_at, outcome, at)
     WHERE q.webhook = x.webhook AND q.seq = x.seq AND x.outcome <> 'r';
    UPDATE notify_ext.webhook_queue q
       SET attempt = x.attempt, next_attempt_at = x.next_at, in_flight = false
      FROM unnest(p_webhook, p_seq, p_attempt, p_status, p_error, p_duration_ms, p_next, p_outcome, p_at)
             AS x(webhook, seq, attempt, status, error, duration_ms, next_at, outcome, at)
     WHERE q.webhook = x.webhook AND q.seq = x.seq AND x.outcome = 'r';

    UPDATE notify_ext.webhooks w
       SET failures = CASE WHEN s.ok THEN 0 ELSE w.failures + s.nfail END,
           failing_since = CASE WHEN s.ok THEN NULL ELSE COALESCE(w.failing_since, s.first_fail) END,
           last_success_at = COALESCE(s.last_ok, w.last_success_at),
           last_failure_at = COALESCE(s.last_fail, w.last_failure_at),
           last_error = COALESCE(s.last_error, w.last_error)
      FROM (SELECT x.webhook,
                   bool_or(x.outcome = 's') AS ok,
                   count(*) FILTER (WHERE x.outcome IN ('r', 'f', 'g')) AS nfail,
                   min(x.at) FILTER (WHERE x.outcome IN ('r', 'f', 'g')) AS first_fail,
                   max(x.at) FILTER (WHERE x.outcome = 's') AS last_ok,
                   max(x.at) FILTER (WHERE x.outcome IN ('r', 'f', 'g')) AS last_fail,
                   (array_agg(x.error ORDER BY x.at DESC) FILTER (WHERE x.outcome IN ('r', 'f', 'g')))[1] AS last_error
              FROM unnest(p_webhook, p_seq, p_attempt, p_status, p_error, p_duration_ms, p_next, p_outcome, p_at)
             AS x(webhook, seq, attempt, status, error, duration_ms, next_at, outcome, at)
             WHERE x.outcome <> 'm'
             GROUP BY x.webhook) s
     WHERE w.id = s.webhook;

    FOR r IN SELECT DISTINCT x.webhook FROM unnest(p_webhook, p_seq, p_attempt, p_status, p_error, p_duration_ms, p_next, p_outcome, p_at)
             AS x(webhook, seq, attempt, status, error, duration_ms, next_at, outcome, at) WHERE x.outcome = 'g' LOOP
        PERFORM notify_ext._webhook_disable(r.webhook, 'the endpoint answered 410 Gone');
    END LOOP;
    FOR r IN SELECT w.id, w.failing_since FROM notify_ext.webhooks w
              WHERE w.status = 'active' AND w.failing_since <= now() - p_disable_after
                AND w.id IN (SELECT x.webhook FROM unnest(p_webhook, p_seq, p_attempt, p_status, p_error, p_duration_ms, p_next, p_outcome, p_at)
             AS x(webhook, seq, attempt, status, error, duration_ms, next_at, outcome, at) WHERE x.outcome IN ('r', 'f'))
    LOOP
        PERFORM notify_ext._webhook_disable(r.id,
            format('every attempt failed since %s (notify_ext.webhook_disable_after is %s)',
                   r.failing_since, p_disable_after));
    END LOOP;
END
$$;
REVOKE ALL ON FUNCTION notify_ext._webhook_record(uuid[], bigint[], integer[], integer[], text[],
        float8[], timestamptz[], text[], timestamptz[], interval) FROM PUBLIC;

-- The worker starts by clearing the in-flight marks of a previous run.
CREATE OR REPLACE FUNCTION notify_ext._webhook_worker_start() RETURNS void
    LANGUAGE sql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
    UPDATE notify_ext.webhook_queue SET in_flight = false WHERE in_flight
$$;
REVOKE ALL ON FUNCTION notify_ext._webhook_worker_start() FROM PUBLIC;

--------------------------------------------------------------------------
-- Restored webhooks
--------------------------------------------------------------------------

-- pg_restore writes the webhooks with COPY, not through create_webhook():
-- an insert of any kind has the database's delivery worker started (or
-- told) when it commits, so that a restored database delivers at once.
CREATE OR REPLACE FUNCTION notify_ext._webhooks_after_insert() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM notify_ext._webhooks_changed();
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION notify_ext._webhooks_after_insert() FROM PUBLIC;
CREATE OR REPLACE TRIGGER webhooks_after_insert AFTER INSERT ON notify_ext.webhooks
    FOR EACH STATEMENT EXECUTE FUNCTION notify_ext._webhooks_after_insert();

--------------------------------------------------------------------------
-- Webhooks at a glance: the view webhook_stats
--------------------------------------------------------------------------

-- Internal: the rows of webhook_stats, for monitoring callers only.  A
-- failure is an attempt that got no 2xx answer.  The URL is left out: it
-- may carry a token in its query.
CREATE OR REPLACE FUNCTION notify_ext._webhook_stats()
    RETURNS TABLE (webhook uuid, created_by text, status text, queued bigint,
                   oldest_undelivered_age interval, attempts_last_hour bigint,
                   failures_last_hour bigint, last_error text, last_failure_at timestamptz)
    LANGUAGE plpgsql STABLE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM notify_ext._require_monitor('notify_ext.webhook_stats');
    RETURN QUERY
    SELECT w.id, w.created_by, w.status, COALESCE(q.queued, 0), date_trunc('second', now() - q.oldest),
           COALESCE(d.attempts, 0), COALESCE(d.failures, 0), w.last_error, w.last_failure_at
      FROM notify_ext.webhooks w
      LEFT JOIN (SELECT x.webhook, count(*) AS queued, min(x.queued_at) AS oldest
                   FROM notify_ext.webhook_queue x GROUP BY x.webhook) q ON q.webhook = w.id
      LEFT JOIN (SELECT l.webhook, count(*) AS attempts,
                        count(*) FILTER (WHERE l.error IS NOT NULL OR l.status_code IS NULL
                                          OR l.status_code NOT BETWEEN 200 AND 299) AS failures
                   FROM notify_ext.delivery_log l
                  WHERE l.created_at > now() - interval '1 hour'
                  GROUP BY l.webhook) d ON d.webhook = w.id
     ORDER BY w.created_at, w.id;
END
$$;

-- Every webhook's delivery health, for operators and monitoring: service
-- callers and members of pg_monitor.
CREATE OR REPLACE VIEW notify_ext.webhook_stats AS
SELECT * FROM notify_ext._webhook_stats();
REVOKE ALL ON notify_ext.webhook_stats FROM PUBLIC;
GRANT SELECT ON notify_ext.webhook_stats TO PUBLIC;
