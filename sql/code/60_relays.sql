--------------------------------------------------------------------------
-- Relays to NATS JetStream (see docs/relays.md)
--------------------------------------------------------------------------

--------------------------------------------------------------------------
-- Internal functions (C)
--------------------------------------------------------------------------

-- At commit, tell this database's relay worker (or the relay launcher)
-- that the relays changed.
CREATE OR REPLACE FUNCTION notify_ext._relays_changed() RETURNS void
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'notify_ext_relays_changed';
REVOKE ALL ON FUNCTION notify_ext._relays_changed() FROM PUBLIC;

-- Whether relay workers can run (notify_ext preloaded).
CREATE OR REPLACE FUNCTION notify_ext._relay_worker_available() RETURNS boolean
    LANGUAGE c STABLE AS 'MODULE_PATHNAME', 'notify_ext_relay_worker_available';

-- 22023 unless url is a NATS server URL a relay may use: nats:// or tls://
-- (or no scheme), a host and an optional port, no user name or password,
-- and no denied address (docs/relays.md).  Returns it normalized.
CREATE OR REPLACE FUNCTION notify_ext._relay_check_server(url text) RETURNS text
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'notify_ext_relay_check_server';
REVOKE ALL ON FUNCTION notify_ext._relay_check_server(text) FROM PUBLIC;

-- 22023 unless prefix is a subject prefix (tokens without wildcards,
-- whitespace or control characters) or, with is_stream, a stream name.
CREATE OR REPLACE FUNCTION notify_ext._relay_check_name(value text, is_stream boolean) RETURNS void
    LANGUAGE c IMMUTABLE AS 'MODULE_PATHNAME', 'notify_ext_relay_check_name';
REVOKE ALL ON FUNCTION notify_ext._relay_check_name(text, boolean) FROM PUBLIC;

-- The public key (U...) of an NKey user seed (SU...); 22023 naming what
-- is wrong when it is not one.  With credentials, the seed is read from a
-- credentials file's content, which must also hold a user JWT.
CREATE OR REPLACE FUNCTION notify_ext._relay_nkey_public(seed_or_credentials text, credentials boolean)
    RETURNS text
    LANGUAGE c IMMUTABLE STRICT AS 'MODULE_PATHNAME', 'notify_ext_relay_nkey_public';
REVOKE ALL ON FUNCTION notify_ext._relay_nkey_public(text, boolean) FROM PUBLIC;

-- The subject a relay publishes an event to (docs/relays.md, "Subjects").
CREATE OR REPLACE FUNCTION notify_ext.relay_subject(subject_prefix text, operation text,
        resource_path text[] DEFAULT NULL)
    RETURNS text
    LANGUAGE c IMMUTABLE PARALLEL SAFE AS 'MODULE_PATHNAME', 'notify_ext_relay_subject';

-- One token of a subject back to the text it stands for.
CREATE OR REPLACE FUNCTION notify_ext.relay_subject_token(token text) RETURNS text
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'notify_ext_relay_subject_token';

--------------------------------------------------------------------------
-- Checking arguments
--------------------------------------------------------------------------

-- Internal: the auth argument of create_relay(), checked: (type, what may
-- be shown, the secret).
CREATE OR REPLACE FUNCTION notify_ext._relay_auth(auth jsonb,
        OUT auth_type text, OUT auth_public text, OUT secret text)
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_hint text := 'Give {"user": ..., "password": ...}, {"token": ...}, {"nkey_seed": "SU..."} '
                   'or {"credentials": "<content of a .creds file>"}, or NULL for none.';
    v_keys text[];
    v_key text;
BEGIN
    IF auth IS NULL OR auth = 'null'::jsonb THEN
        auth_type := 'none';
        RETURN;
    END IF;
    IF jsonb_typeof(auth) <> 'object' THEN
        -- (the value is not shown: it may hold a secret)
        RAISE EXCEPTION 'auth must be a JSON object, not a JSON %', jsonb_typeof(auth)
            USING ERRCODE = 'invalid_parameter_value', HINT = v_hint;
    END IF;
    v_keys := ARRAY(SELECT jsonb_object_keys(auth) ORDER BY 1);
    FOREACH v_key IN ARRAY v_keys LOOP
        IF v_key NOT IN ('user', 'password', 'token', 'nkey_seed', 'credentials') THEN
            RAISE EXCEPTION 'unknown auth field "%"', v_key
                USING ERRCODE = 'invalid_parameter_value', HINT = v_hint;
        END IF;
        IF jsonb_typeof(auth -> v_key) <> 'string' OR auth ->> v_key = '' THEN
            RAISE EXCEPTION 'auth field "%" must be a non-empty string', v_key
                USING ERRCODE = 'invalid_parameter_value', HINT = v_hint;
        END IF;
    END LOOP;
    IF v_keys = ARRAY['password', 'user'] THEN
        auth_type := 'user_password';
        auth_public := auth ->> 'user';
        secret := auth ->> 'password';
        IF auth_public ~ '[[:cntrl:][:space:]]' THEN
            RAISE EXCEPTION 'auth user "%" must not contain whitespace or control characters', auth_public
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    ELSIF v_keys = ARRAY['token'] THEN
        auth_type := 'token';
        secret := auth ->> 'token';
    ELSIF v_keys = ARRAY['nkey_seed'] THEN
        auth_type := 'nkey';
        secret := btrim(auth ->> 'nkey_seed');
        auth_public := notify_ext._relay_nkey_public(secret, false);
    ELSIF v_keys = ARRAY['credentials'] THEN
        auth_type := 'credentials';
        secret := auth ->> 'credentials';
        auth_public := notify_ext._relay_nkey_public(secret, true);
    ELSIF 'user' = ANY (v_keys) OR 'password' = ANY (v_keys) THEN
        RAISE EXCEPTION 'auth needs both "user" and "password", and nothing else: %',
                        array_to_string(v_keys, ', ')
            USING ERRCODE = 'invalid_parameter_value', HINT = v_hint;
    ELSE
        RAISE EXCEPTION 'auth takes one way of authenticating, not %', array_to_string(v_keys, ', ')
            USING ERRCODE = 'invalid_parameter_value', HINT = v_hint;
    END IF;
    IF secret ~ '[\r\n]' AND auth_type IN ('user_password', 'token') THEN
        RAISE EXCEPTION 'auth % must not contain line breaks', CASE auth_type WHEN 'token' THEN 'token' ELSE 'password' END
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;
REVOKE ALL ON FUNCTION notify_ext._relay_auth(jsonb) FROM PUBLIC;

-- Internal: the tls argument of create_relay(), checked: what is kept in
-- relays.tls, and the client key apart.
CREATE OR REPLACE FUNCTION notify_ext._relay_tls(tls jsonb, OUT shown jsonb, OUT client_key text)
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_hint text := 'Give {"ca": "<PEM>"} to trust a CA, and optionally "verify": false, '
                   '"hostname": "<name in the certificate>", "cert" and "key" (PEM) for a client certificate; '
                   '{} uses TLS with the system''s CAs.';
    v_key text;
BEGIN
    IF tls IS NULL OR tls = 'null'::jsonb THEN
        RETURN;
    END IF;
    IF jsonb_typeof(tls) <> 'object' THEN
        -- (the value is not shown: it may hold a private key)
        RAISE EXCEPTION 'tls must be a JSON object, not a JSON %', jsonb_typeof(tls)
            USING ERRCODE = 'invalid_parameter_value', HINT = v_hint;
    END IF;
    FOR v_key IN SELECT jsonb_object_keys(tls) ORDER BY 1 LOOP
        IF v_key NOT IN ('ca', 'verify', 'hostname', 'cert', 'key') THEN
            RAISE EXCEPTION 'unknown tls field "%"', v_key
                USING ERRCODE = 'invalid_parameter_value', HINT = v_hint;
        END IF;
        IF v_key = 'verify' THEN
            IF jsonb_typeof(tls -> v_key) <> 'boolean' THEN
                RAISE EXCEPTION 'tls field "verify" must be true or false, not %', tls -> v_key
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
        ELSIF jsonb_typeof(tls -> v_key) <> 'string' OR tls ->> v_key = '' THEN
            RAISE EXCEPTION 'tls field "%" must be a non-empty string', v_key
                USING ERRCODE = 'invalid_parameter_value', HINT = v_hint;
        END IF;
    END LOOP;
    IF tls ? 'ca' AND strpos(tls ->> 'ca', '-----BEGIN CERTIFICATE-----') = 0 THEN
        RAISE EXCEPTION 'tls field "ca" is not a PEM certificate: it has no "-----BEGIN CERTIFICATE-----" line'
            USING ERRCODE = 'invalid_parameter_value', HINT = v_hint;
    END IF;
    IF tls ? 'cert' AND strpos(tls ->> 'cert', '-----BEGIN CERTIFICATE-----') = 0 THEN
        RAISE EXCEPTION 'tls field "cert" is not a PEM certificate: it has no "-----BEGIN CERTIFICATE-----" line'
            USING ERRCODE = 'invalid_parameter_value', HINT = v_hint;
    END IF;
    IF (tls ? 'cert') <> (tls ? 'key') THEN
        RAISE EXCEPTION 'tls needs "cert" and "key" together, not "%" alone',
                        CASE WHEN tls ? 'cert' THEN 'cert' ELSE 'key' END
            USING ERRCODE = 'invalid_parameter_value', HINT = v_hint;
    END IF;
    IF tls ? 'key' AND (tls ->> 'key') !~ '-----BEGIN [A-Z ]*PRIVATE KEY-----' THEN
        RAISE EXCEPTION 'tls field "key" is not a PEM private key'
            USING ERRCODE = 'invalid_parameter_value', HINT = v_hint;
    END IF;
    IF tls ? 'hostname' AND (tls ->> 'hostname') ~ '[[:space:][:cntrl:]/@]' THEN
        RAISE EXCEPTION 'tls field "hostname" is not a host name: "%"', tls ->> 'hostname'
            USING ERRCODE = 'invalid_parameter_value', HINT = v_hint;
    END IF;
    client_key := tls ->> 'key';
    shown := tls - 'key';
    IF client_key IS NOT NULL THEN
        shown := shown || '{"key": "(sealed)"}';
    END IF;
END
$$;
REVOKE ALL ON FUNCTION notify_ext._relay_tls(jsonb) FROM PUBLIC;

-- Internal: the relay of an id, locked; 42704 when there is none.
CREATE OR REPLACE FUNCTION notify_ext._relay_lock(relay uuid) RETURNS notify_ext.relays
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r notify_ext.relays;
BEGIN
    IF relay IS NULL THEN
        RAISE EXCEPTION 'relay must not be NULL'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO r FROM notify_ext.relays x WHERE x.id = relay FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'relay % does not exist', relay
            USING ERRCODE = 'undefined_object',
                  HINT = 'notify_ext.list_relays() lists the relays.';
    END IF;
    RETURN r;
END
$$;
REVOKE ALL ON FUNCTION notify_ext._relay_lock(uuid) FROM PUBLIC;

--------------------------------------------------------------------------
-- Relays
--------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION notify_ext.create_relay(name text, servers text[], stream text,
        subject_prefix text DEFAULT 'notify', resource_id text DEFAULT NULL,
        include_subresources boolean DEFAULT true, streams text[] DEFAULT NULL,
        operations text[] DEFAULT NULL, auth jsonb DEFAULT NULL, tls jsonb DEFAULT NULL,
        deliver text DEFAULT 'new', ensure_stream boolean DEFAULT false)
    RETURNS uuid
    LANGUAGE plpgsql VOLATILE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_servers text[];
    v_server text;
    v_auth record;
    v_tls record;
    v_id uuid;
BEGIN
    PERFORM notify_ext._require_service_caller('create_relay');
    IF name IS NULL OR btrim(name) = '' THEN
        RAISE EXCEPTION 'a relay needs a name'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF name ~ '[[:cntrl:]]' OR length(name) > 200 THEN
        RAISE EXCEPTION 'relay name "%" must have at most 200 characters and no control characters', name
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF EXISTS (SELECT 1 FROM notify_ext.relays r WHERE r.name = create_relay.name) THEN
        RAISE EXCEPTION 'relay "%" exists already', name
            USING ERRCODE = 'duplicate_object',
                  HINT = 'Choose another name, or delete the relay with notify_ext.delete_relay() first.';
    END IF;
    IF servers IS NULL OR cardinality(servers) = 0 THEN
        RAISE EXCEPTION 'a relay needs at least one server URL'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give servers such as ARRAY[''nats://nats1:4222'', ''nats://nats2:4222''].';
    END IF;
    IF array_position(servers, NULL) IS NOT NULL THEN
        -- (the URLs are not shown: one may hold a password, refused below)
        RAISE EXCEPTION 'servers must not contain NULL: element % is NULL', array_position(servers, NULL)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give one nats:// or tls:// URL per element.';
    END IF;
    FOREACH v_server IN ARRAY servers LOOP
        v_servers := v_servers || notify_ext._relay_check_server(v_server);
    END LOOP;
    IF stream IS NULL THEN
        RAISE EXCEPTION 'a relay needs the name of a JetStream stream'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM notify_ext._relay_check_name(stream, true);
    IF subject_prefix IS NULL THEN
        RAISE EXCEPTION 'subject_prefix must not be NULL'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'The default is ''notify''.';
    END IF;
    PERFORM notify_ext._relay_check_name(subject_prefix, false);
    IF include_subresources IS NULL THEN
        RAISE EXCEPTION 'include_subresources must not be NULL'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF ensure_stream IS NULL THEN
        RAISE EXCEPTION 'ensure_stream must not be NULL'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF deliver IS NULL OR deliver NOT IN ('new', 'all') THEN
        RAISE EXCEPTION 'unknown deliver policy "%" for a relay', deliver
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use new (events that commit from now on) or all (every retained event).';
    END IF;
    streams := notify_ext._check_scope_list(streams, 'streams');
    operations := notify_ext._check_scope_list(operations, 'operations');
    IF resource_id IS NOT NULL THEN
        PERFORM notify_ext._require_resource(resource_id);
    END IF;
    v_auth := notify_ext._relay_auth(auth);
    v_tls := notify_ext._relay_tls(tls);
    IF NOT notify_ext._relay_worker_available() THEN
        RAISE EXCEPTION 'relays need notify_ext in shared_preload_libraries'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Add notify_ext to shared_preload_libraries in postgresql.conf and restart the server.';
    END IF;

    INSERT INTO notify_ext.relays AS r (name, servers, stream, subject_prefix, resource_id,
                                        include_subresources, streams, operations, auth_type,
                                        auth_public, auth_sealed, tls, tls_key_sealed, deliver,
                                        ensure_stream, position, created_by)
    VALUES (name, v_servers, stream, subject_prefix, resource_id, include_subresources, streams,
            operations, v_auth.auth_type, v_auth.auth_public,
            CASE WHEN v_auth.secret IS NOT NULL
                 THEN notify_ext._webhook_seal(convert_to(v_auth.secret, 'UTF8')) END,
            v_tls.shown,
            CASE WHEN v_tls.client_key IS NOT NULL
                 THEN notify_ext._webhook_seal(convert_to(v_tls.client_key, 'UTF8')) END,
            deliver, ensure_stream,
            CASE deliver WHEN 'new' THEN notify_ext.committed_seq() ELSE 0 END,
            notify_ext.current_principal())
    RETURNING r.id INTO v_id;
    PERFORM notify_ext._relays_changed();
    RETURN v_id;
END
$$;

-- Deletes a relay.  What its worker has in flight is dropped; JetStream
-- keeps what it acknowledged.
CREATE OR REPLACE FUNCTION notify_ext.delete_relay(relay uuid) RETURNS void
    LANGUAGE plpgsql VOLATILE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM notify_ext._require_service_caller('delete_relay');
    PERFORM notify_ext._relay_lock(relay);
    DELETE FROM notify_ext.relays r WHERE r.id = relay;
    PERFORM notify_ext._relays_changed();
END
$$;

-- Stops publishing; the position stays, and resume_relay() goes on from it.
CREATE OR REPLACE FUNCTION notify_ext.pause_relay(relay uuid) RETURNS void
    LANGUAGE plpgsql VOLATILE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM notify_ext._require_service_caller('pause_relay');
    PERFORM notify_ext._relay_lock(relay);
    UPDATE notify_ext.relays r SET paused = true WHERE r.id = relay;
    PERFORM notify_ext._relays_changed();
END
$$;

CREATE OR REPLACE FUNCTION notify_ext.resume_relay(relay uuid) RETURNS void
    LANGUAGE plpgsql VOLATILE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM notify_ext._require_service_caller('resume_relay');
    PERFORM notify_ext._relay_lock(relay);
    UPDATE notify_ext.relays r SET paused = false WHERE r.id = relay;
    PERFORM notify_ext._relays_changed();
END
$$;

-- Internal: the events in the relay's scope that it has not published yet
-- (up to the committed horizon), and how long the oldest of them has
-- waited.  It reads the event log, so it runs as the owner; for anyone but
-- a service caller it counts nothing (relay_stats calls it for every row
-- before its WHERE clause hides them).
CREATE OR REPLACE FUNCTION notify_ext._relay_lag(r notify_ext.relays,
        OUT lag_events bigint, OUT lag_seconds double precision)
    LANGUAGE sql STABLE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT count(*), COALESCE(extract(epoch FROM now() - min(e.occurred_at))::double precision, 0)
      FROM notify_ext.event_log e
     WHERE notify_ext._is_service_caller()
       AND e.seq > r.position AND e.seq <= notify_ext.committed_seq()
       AND notify_ext._in_scope(r.resource_id, r.include_subresources, r.streams, r.operations,
                                NULL, e.resource_id, e.resource_path, e.stream, e.operation,
                                e.occurred_at)
$$;

-- Internal: what list_relays() and relay_stats show as a relay's state.
CREATE OR REPLACE FUNCTION notify_ext._relay_state(r notify_ext.relays) RETURNS text
    LANGUAGE sql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN r.paused THEN 'paused' ELSE r.state END
$$;

CREATE OR REPLACE FUNCTION notify_ext.list_relays()
    RETURNS TABLE (id uuid, name text, servers text[], stream text, subject_prefix text,
                   resource_id text, include_subresources boolean, streams text[],
                   operations text[], auth jsonb, tls jsonb, deliver text, ensure_stream boolean,
                   state text, "position" bigint, lag_events bigint, lag_seconds double precision,
                   published bigint, missed bigint, last_published_at timestamptz,
                   last_error text, last_error_at timestamptz, failing_since timestamptz,
                   created_by text, created_at timestamptz)
    LANGUAGE plpgsql STABLE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM notify_ext._require_service_caller('list_relays');
    RETURN QUERY
        SELECT r.id, r.name, r.servers, r.stream, r.subject_prefix, r.resource_id,
               r.include_subresources, r.streams, r.operations,
               jsonb_strip_nulls(jsonb_build_object(
                   'type', r.auth_type,
                   'user', CASE WHEN r.auth_type = 'user_password' THEN r.auth_public END,
                   'public_key', CASE WHEN r.auth_type IN ('nkey', 'credentials') THEN r.auth_public END)),
               r.tls, r.deliver, r.ensure_stream, notify_ext._relay_state(r), r.position,
               l.lag_events, l.lag_seconds, r.published, r.missed, r.last_published_at,
               r.last_error, r.last_error_at, r.failing_since, r.created_by, r.created_at
          FROM notify_ext.relays r
         CROSS JOIN LATERAL notify_ext._relay_lag(r) l
         ORDER BY r.created_at, r.id;
END
$$;

CREATE OR REPLACE VIEW notify_ext.relay_stats AS
SELECT r.id, r.name, notify_ext._relay_state(r) AS state, r.position, l.lag_events, l.lag_seconds,
       r.published, r.missed, r.last_published_at, r.last_error, r.last_error_at, r.failing_since
  FROM notify_ext.relays r
 CROSS JOIN LATERAL notify_ext._relay_lag(r) l
 WHERE notify_ext._is_service_caller();
REVOKE ALL ON notify_ext.relay_stats FROM PUBLIC;
GRANT SELECT ON notify_ext.relay_stats TO PUBLIC;

--------------------------------------------------------------------------
-- The worker's side (called by the relay worker only)
--------------------------------------------------------------------------

-- The relays to run (not paused), secrets unsealed.
CREATE OR REPLACE FUNCTION notify_ext._relay_config()
    RETURNS TABLE (id uuid, name text, servers text[], stream text, subject_prefix text,
                   resource_id text, include_subresources boolean, streams text[],
                   operations text[], auth_type text, auth_public text, secret text, tls jsonb,
                   tls_key text, ensure_stream boolean, "position" bigint)
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT r.id, r.name, r.servers, r.stream, r.subject_prefix, r.resource_id,
           r.include_subresources, r.streams, r.operations, r.auth_type, r.auth_public,
           convert_from(notify_ext._webhook_unseal(r.auth_sealed), 'UTF8'), r.tls,
           convert_from(notify_ext._webhook_unseal(r.tls_key_sealed), 'UTF8'),
           r.ensure_stream, r.position
      FROM notify_ext.relays r
     WHERE NOT r.paused
     ORDER BY r.id
$$;
REVOKE ALL ON FUNCTION notify_ext._relay_config() FROM PUBLIC;

-- Records that JetStream acknowledged everything in scope up to position;
-- published more events, the newest of which occurred at last_event_at.
CREATE OR REPLACE FUNCTION notify_ext._relay_advance(relay uuid, new_position bigint,
        published bigint, last_event_at timestamptz)
    RETURNS void
    LANGUAGE sql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
    UPDATE notify_ext.relays r
       SET position = GREATEST(r.position, new_position),
           published = r.published + _relay_advance.published,
           last_published_at = CASE WHEN _relay_advance.published > 0 THEN now()
                                    ELSE r.last_published_at END,
           last_event_at = COALESCE(_relay_advance.last_event_at, r.last_event_at)
     WHERE r.id = relay
$$;
REVOKE ALL ON FUNCTION notify_ext._relay_advance(uuid, bigint, bigint, timestamptz) FROM PUBLIC;

-- Records the worker's state of a relay (connecting, publishing, failing),
-- with an error when it fails.
CREATE OR REPLACE FUNCTION notify_ext._relay_set_state(relay uuid, new_state text, error text)
    RETURNS void
    LANGUAGE sql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
    UPDATE notify_ext.relays r
       SET state = new_state,
           last_error = COALESCE(error, r.last_error),
           last_error_at = CASE WHEN error IS NOT NULL THEN now() ELSE r.last_error_at END,
           failing_since = CASE WHEN new_state = 'failing' THEN COALESCE(r.failing_since, now()) END
     WHERE r.id = relay
$$;
REVOKE ALL ON FUNCTION notify_ext._relay_set_state(uuid, text, text) FROM PUBLIC;

--------------------------------------------------------------------------
-- Restored relays
--------------------------------------------------------------------------

-- pg_restore writes the relays with COPY: an insert of any kind has the
-- database's relay worker started (or told) when it commits.
CREATE OR REPLACE FUNCTION notify_ext._relays_after_insert() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM notify_ext._relays_changed();
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION notify_ext._relays_after_insert() FROM PUBLIC;
CREATE OR REPLACE TRIGGER relays_after_insert AFTER INSERT ON notify_ext.relays
    FOR EACH STATEMENT EXECUTE FUNCTION notify_ext._relays_after_insert();
