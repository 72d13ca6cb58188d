-- webhooks: the SQL side of webhook subscriptions.  Service calls refused
-- with 42501 for plain roles; auth configs of the three types with their
-- required fields (22023 naming the missing one), secrets sealed (never in
-- the table as plain text, never listed), deleting one in use refused with
-- 55000; create_webhook's checks (URL, filters, unknown resource or auth
-- config); the URL policy for webhook URLs and token URLs, and
-- notify_ext.webhook_denied_networks; webhook_secret's format;
-- list_webhooks' shape; scope matching; queueing up to the committed
-- horizon; redeliver; the deliveries view; the GUCs.  Delivery itself is
-- tested end to end in test/e2e/test_webhooks_e2e.py.
\set SHOW_CONTEXT never
CREATE ROLE regress_wh_app NOLOGIN;
CREATE ROLE regress_wh_svc NOLOGIN IN ROLE regress_wh_app;
CREATE ROLE regress_wh_plain NOLOGIN;
SET notify_ext.app_role = 'regress_wh_app';
SET TimeZone = 'UTC';

-- The GUCs and their defaults.
SHOW notify_ext.webhook_timeout;
SHOW notify_ext.webhook_retry_schedule;
SHOW notify_ext.webhook_disable_after;
SHOW notify_ext.webhook_concurrency;
SHOW notify_ext.webhook_endpoint_concurrency;
SHOW notify_ext.webhook_denied_networks;
SELECT regress_try($$SET notify_ext.webhook_timeout = '1s'$$);

-- Like regress_try, with the detail and the hint.
CREATE FUNCTION regress_wh_try(statement text) RETURNS text
    LANGUAGE plpgsql AS $$
DECLARE
    v_detail text;
    v_hint text;
BEGIN
    EXECUTE statement;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS v_detail = PG_EXCEPTION_DETAIL, v_hint = PG_EXCEPTION_HINT;
    RETURN SQLSTATE || ': ' || SQLERRM
        || CASE WHEN v_detail <> '' THEN E'\nDETAIL: ' || v_detail ELSE '' END
        || CASE WHEN v_hint <> '' THEN E'\nHINT: ' || v_hint ELSE '' END;
END
$$;

-- Service calls are refused for plain roles.
SET ROLE regress_wh_plain;
SELECT regress_try($$SELECT notify_ext.create_subscription_auth('NO_AUTH')$$);
SELECT regress_try($$SELECT notify_ext.list_subscription_auth()$$);
SELECT regress_try($$SELECT notify_ext.delete_subscription_auth(gen_random_uuid())$$);
SELECT regress_try($$SELECT notify_ext.create_webhook('http://127.0.0.1:9/')$$);
SELECT regress_try($$SELECT notify_ext.webhook_secret(gen_random_uuid())$$);
SELECT regress_try($$SELECT notify_ext.delete_webhook(gen_random_uuid())$$);
SELECT regress_try($$SELECT notify_ext.list_webhooks()$$);
SELECT regress_try($$SELECT notify_ext.redeliver(gen_random_uuid(), now())$$);
SELECT regress_try($$SELECT notify_ext.enable_webhook(gen_random_uuid())$$);
-- The tables and internal functions are closed.
SELECT regress_try($$SELECT * FROM notify_ext.subscription_auth$$);
SELECT regress_try($$SELECT * FROM notify_ext.webhooks$$);
SELECT regress_try($$SELECT * FROM notify_ext.webhook_queue$$);
SELECT regress_try($$SELECT * FROM notify_ext.delivery_log$$);
SELECT regress_try($$SELECT notify_ext._webhook_unseal('\x00')$$);
SELECT regress_try($$SELECT * FROM notify_ext._webhook_config()$$);
-- The deliveries view shows nothing to a plain role.
SELECT count(*) AS deliveries_seen FROM notify_ext.deliveries;
RESET ROLE;

-- Auth configs.
SET ROLE regress_wh_svc;
SELECT regress_try($$SELECT notify_ext.create_subscription_auth('KERBEROS')$$);
SELECT regress_try($$SELECT notify_ext.create_subscription_auth(NULL)$$);
SELECT regress_try($$SELECT notify_ext.create_subscription_auth('BASIC_AUTH')$$);
SELECT regress_try($$SELECT notify_ext.create_subscription_auth('BASIC_AUTH', key => 'u')$$);
SELECT regress_try($$SELECT notify_ext.create_subscription_auth('BASIC_AUTH', secret => 'p')$$);
SELECT regress_try($$SELECT notify_ext.create_subscription_auth('BASIC_AUTH', 'u:x', 'p')$$);
SELECT regress_try($$SELECT notify_ext.create_subscription_auth('BASIC_AUTH', 'u', 'p', scope => 's')$$);
SELECT regress_try($$SELECT notify_ext.create_subscription_auth('OAUTH_2_CLIENT_CREDENTIALS', 'id', 'sec', token_url => 'http://127.0.0.1:9/t')$$);
SELECT regress_try($$SELECT notify_ext.create_subscription_auth('OAUTH_2_CLIENT_CREDENTIALS', 'id', 'sec', scope => 'read')$$);
SELECT regress_try($$SELECT notify_ext.create_subscription_auth('OAUTH_2_CLIENT_CREDENTIALS', 'id', 'sec', 'read', 'ftp://x/t')$$);
SELECT regress_try($$SELECT notify_ext.create_subscription_auth('OAUTH_2_CLIENT_CREDENTIALS', 'id', NULL, 'read', 'http://127.0.0.1:9/t')$$);
SELECT regress_try($$SELECT notify_ext.create_subscription_auth('OAUTH_2_CLIENT_CREDENTIALS', NULL, NULL, 'read', 'http://127.0.0.1:9/t')$$);
SELECT regress_try($$SELECT notify_ext.create_subscription_auth('NO_AUTH', 'k')$$);
SELECT regress_try($$SELECT notify_ext.create_subscription_auth('NO_AUTH', secret => 's')$$);

SELECT notify_ext.create_subscription_auth('NO_AUTH') AS none_auth \gset
SELECT notify_ext.create_subscription_auth('basic_auth', 'hookuser', 'b4sic-s3cret') AS basic_auth \gset
SELECT notify_ext.create_subscription_auth('OAUTH_2_CLIENT_CREDENTIALS', 'client-1', '0auth-s3cret',
                                           'events:write', 'http://127.0.0.1:9/token') AS oauth_auth \gset
-- Listed without secrets.
SELECT auth_type, key, scope, token_url, created_at IS NOT NULL AS has_created_at
  FROM notify_ext.list_subscription_auth() ORDER BY auth_type;
SELECT proallargtypes::regtype[], proargnames FROM pg_proc
 WHERE oid = 'notify_ext.list_subscription_auth()'::regprocedure;
RESET ROLE;
-- Stored sealed: neither secret appears in the table, nor in its text form.
SELECT auth_type, secret_sealed IS NOT NULL AS sealed,
       position(convert_to('s3cret', 'UTF8') IN COALESCE(secret_sealed, '')) = 0 AS no_plain_secret,
       position('s3cret' IN a::text) = 0 AS no_plain_in_row,
       length(secret_sealed) AS sealed_bytes
  FROM notify_ext.subscription_auth a ORDER BY auth_type;
-- Kept by pg_dump (secrets as ciphertext), with the queue and the delivery log.
SELECT c.relname FROM pg_extension e, unnest(e.extconfig) t(oid) JOIN pg_class c ON c.oid = t.oid
 WHERE e.extname = 'notify_ext' AND c.relname IN ('subscription_auth', 'webhooks', 'webhook_queue', 'delivery_log')
 ORDER BY 1;
SET ROLE regress_wh_svc;

-- Webhooks: argument checks.
SELECT regress_try($$SELECT notify_ext.create_webhook(NULL)$$);
SELECT regress_try($$SELECT notify_ext.create_webhook('')$$);
SELECT regress_try($$SELECT notify_ext.create_webhook('ftp://example.com/x')$$);
SELECT regress_try($$SELECT notify_ext.create_webhook('example.com/x')$$);
SELECT regress_try($$SELECT notify_ext.create_webhook('http://127.0.0.1:9/', operations => '{}')$$);
SELECT regress_try($$SELECT notify_ext.create_webhook('http://127.0.0.1:9/', operations => '{a,NULL}')$$);
SELECT regress_try($$SELECT notify_ext.create_webhook('http://127.0.0.1:9/', streams => '{""}')$$);
SELECT regress_try($$SELECT notify_ext.create_webhook('http://127.0.0.1:9/', resource_id => 'regress_wh_nope')$$);
SELECT regress_try($$SELECT notify_ext.create_webhook('http://127.0.0.1:9/', include_subresources => NULL)$$);
SELECT regress_try($$SELECT notify_ext.create_webhook('http://127.0.0.1:9/', auth_config => '00000000-0000-0000-0000-000000000000')$$);

-- The URL policy: every form below is refused with 22023, a message that
-- names the URL (never a password in it) and a hint.
\pset format unaligned
SELECT url, regress_wh_try(format('SELECT notify_ext.create_webhook(%L)', url)) AS refused
  FROM unnest(ARRAY[
        'http://169.254.169.254/latest/meta-data/',
        'http://169.254.1.2:8080/x',
        'http://[fd00:ec2::254]/',
        'http://[fd00:ec2:0:0::254]/latest',
        'http://[fe80::1]/',
        'http://[fe80::1%25eth0]/',
        'http://[febf:ffff::1]:8080/',
        'http://2852039166/',
        'http://0xA9FEA9FE/',
        'http://0251.0376.0251.0376/',
        'http://169.254.43518/',
        'http://169.254.169.254./',
        'http://%31%36%39.254.169.254/',
        'http://[::ffff:169.254.169.254]/',
        'http://[::ffff:a9fe:a9fe]/',
        'http://[64:ff9b::169.254.169.254]/',
        'http://metadata.google.internal/computeMetadata/v1/',
        'http://METADATA.Google.Internal./x',
        'http://example.com:99999/',
        'http://example.com:65536/',
        'http://example.com:0/',
        'http://example.com:8o/',
        'http:///x',
        'http:/x',
        'http://',
        'http://?x',
        'http://user:password@example.com/',
        'https://sk_live_abc@example.com/',
        'http://:pw@example.com/',
        'http:/user:password@example.com/',
        'ftp://example.com/x',
        'ftp://user:password@example.com/x',
        'file:///etc/passwd',
        'gopher://127.0.0.1:6379/_x',
        'javascript:alert(1)',
        'example.com/x',
        'http://exa mple.com/',
        'http://a@b@example.com/'
       ]) url;
\pset format aligned
SELECT count(*) AS webhooks_after_errors FROM notify_ext.list_webhooks();

-- Allowed: names (checked again, resolved, when the worker connects),
-- loopback, public addresses, explicit ports.
SELECT url, notify_ext.create_webhook(url) IS NOT NULL AS created
  FROM unnest(ARRAY['https://example.com:8443/x', 'http://127.0.0.1:1234/', 'http://[::1]:8080/hook',
                    'http://localhost/', 'HTTPS://Example.COM/x?y=1#z', 'http://93.184.216.34/',
                    'http://[2001:db8::1]:65535/']) url;
SELECT notify_ext.delete_webhook((w ->> 'id')::uuid) FROM notify_ext.list_webhooks() w;

-- token_url of an OAuth2 auth config: the same policy.
\pset format unaligned
SELECT url, regress_wh_try(format(
           'SELECT notify_ext.create_subscription_auth(%L, %L, %L, %L, %L)',
           'OAUTH_2_CLIENT_CREDENTIALS', 'id', 'sec', 'read', url)) AS refused
  FROM unnest(ARRAY[
        'http://169.254.169.254/token',
        'http://[fd00:ec2::254]/token',
        'http://2852039166/token',
        'http://0xA9FEA9FE/token',
        'http://[::ffff:169.254.169.254]/token',
        'http://metadata.google.internal/token',
        'https://auth.example.com:99999/token',
        'https://auth.example.com:0/token',
        'http:///token',
        'https://client:s3cret@auth.example.com/token',
        'ftp://auth.example.com/token'
       ]) url;
\pset format aligned
SELECT count(*) AS auth_configs_after_errors FROM notify_ext.list_subscription_auth();
SELECT notify_ext.create_subscription_auth('OAUTH_2_CLIENT_CREDENTIALS', 'id', 'sec', 'read',
                                           'https://auth.example.com:8443/token') AS policy_auth \gset
SELECT notify_ext.delete_subscription_auth(:'policy_auth');

-- notify_ext.webhook_denied_networks: superusers only; a list of CIDRs,
-- checked when set.
SELECT regress_wh_try($$SET notify_ext.webhook_denied_networks = '10.0.0.0/8'$$) AS as_service_caller;
RESET ROLE;
\pset format unaligned
SELECT value, regress_wh_try(format('SET notify_ext.webhook_denied_networks = %L', value)) AS result
  FROM unnest(ARRAY['10.0.0.0/8', '10.0.0.0/8, 192.168.0.0/16 ,fc00::/7', '', ' ', '10.1.2.3',
                    'fd12::1', '::ffff:10.0.0.0/104', '0.0.0.0/0', '10.0.0.1/8', 'fc00::1/7',
                    '10.0.0.0/33', 'fc00::/129', '10.0.0.0/', '10.0.0.0/-1', '10.0.0.0/8x',
                    '10.0.0/8', 'ten', 'example.com', '10.0.0.0/8; 11.0.0.0/8']) value;
\pset format aligned
RESET notify_ext.webhook_denied_networks;

-- What it lists is refused at creation (written as an address), on top of
-- the built-in networks; loopback stays allowed unless listed.
SET notify_ext.webhook_denied_networks = '10.0.0.0/8, 192.168.0.0/16, fc00::/7, 127.0.0.2';
SET ROLE regress_wh_svc;
\pset format unaligned
SELECT url, regress_wh_try(format('SELECT notify_ext.create_webhook(%L)', url)) AS result
  FROM unnest(ARRAY['http://10.1.2.3/', 'http://167772161/', 'http://[::ffff:10.0.0.1]/',
                    'http://192.168.1.1:8080/', 'http://[fd12::1]/', 'http://127.0.0.2/',
                    'http://11.0.0.1/', 'http://127.0.0.1/', 'http://192.169.0.1/']) url;
\pset format aligned
SELECT notify_ext.delete_webhook((w ->> 'id')::uuid) FROM notify_ext.list_webhooks() w;
RESET ROLE;
RESET notify_ext.webhook_denied_networks;
SET ROLE regress_wh_svc;

RESET ROLE;
SELECT notify_ext.register_resource('regress_wh_p', 'project');
SELECT notify_ext.register_resource('regress_wh_d', 'dataset', 'regress_wh_p');
SET ROLE regress_wh_svc;
SELECT notify_ext.create_webhook('http://127.0.0.1:9/all') AS wh_all \gset
SELECT notify_ext.create_webhook('http://127.0.0.1:9/jobs', operations => '{JOB_PROCESSED,JOB_FAILED}',
                                 streams => '{jobs}', auth_config => :'basic_auth') AS wh_jobs \gset
SELECT notify_ext.create_webhook('https://127.0.0.1:9/tree', resource_id => 'regress_wh_p',
                                 auth_config => :'oauth_auth') AS wh_tree \gset
SELECT notify_ext.create_webhook('http://127.0.0.1:9/own', resource_id => 'regress_wh_p',
                                 include_subresources => false) AS wh_own \gset

-- The signing secret: whsec_ and the base64 of 32 bytes, stable, per webhook.
SELECT notify_ext.webhook_secret(:'wh_all') ~ '^whsec_[A-Za-z0-9+/]{43}=$' AS secret_format,
       length(decode(substr(notify_ext.webhook_secret(:'wh_all'), 7), 'base64')) AS key_bytes,
       notify_ext.webhook_secret(:'wh_all') = notify_ext.webhook_secret(:'wh_all') AS stable,
       notify_ext.webhook_secret(:'wh_all') <> notify_ext.webhook_secret(:'wh_jobs') AS per_webhook;
SELECT regress_try($$SELECT notify_ext.webhook_secret('00000000-0000-0000-0000-000000000000')$$);
RESET ROLE;
SELECT count(*) AS plain_signing_keys FROM notify_ext.webhooks w
 WHERE position(decode(substr(notify_ext.webhook_secret(w.id), 7), 'base64') IN w.secret_sealed) > 0;
SET ROLE regress_wh_svc;

-- list_webhooks.
SELECT w - 'id' - 'created_at' - 'auth_config' AS webhook
  FROM notify_ext.list_webhooks() w ORDER BY w ->> 'url';
SELECT (SELECT array_agg(k ORDER BY k) FROM jsonb_object_keys(w) k) AS keys
  FROM notify_ext.list_webhooks() w LIMIT 1;

-- An auth config in use cannot be deleted.
SELECT regress_try(format('SELECT notify_ext.delete_subscription_auth(%L)', :'basic_auth'));
SELECT regress_try($$SELECT notify_ext.delete_subscription_auth('00000000-0000-0000-0000-000000000000')$$);
SELECT regress_try($$SELECT notify_ext.delete_subscription_auth(NULL)$$);
SELECT notify_ext.delete_subscription_auth(:'none_auth');
SELECT count(*) AS auth_configs FROM notify_ext.list_subscription_auth();
RESET ROLE;

-- Scope: operations, streams, the resource and (or not) its subtree.
SELECT u.url, x.stream, x.operation, x.resource_id,
       notify_ext._in_scope(w.resource_id, w.include_subresources, w.streams, w.operations, NULL,
                            x.resource_id, x.path, x.stream, x.operation, now()) AS in_scope
  FROM notify_ext.webhooks w
  JOIN (VALUES ('jobs', 'JOB_PROCESSED', NULL, NULL::text[]),
               ('jobs', 'JOB_STARTED', NULL, NULL),
               ('other', 'JOB_FAILED', NULL, NULL),
               ('public.datasets', 'dataset.update', 'regress_wh_p', '{regress_wh_p}'),
               ('public.datasets', 'dataset.update', 'regress_wh_d', '{regress_wh_p,regress_wh_d}'),
               ('public.datasets', 'dataset.update', 'other', '{other}'))
       x(stream, operation, resource_id, path) ON true
  CROSS JOIN LATERAL (SELECT regexp_replace(w.url, '^.*/', '') AS url) u
 WHERE w.url LIKE '%127.0.0.1:9/%'
 ORDER BY u.url, x.stream, x.operation, x.resource_id;

-- Queueing (what the worker does): the events after each webhook's cursor,
-- up to the committed horizon, in its scope.  The worker may have done it
-- already; doing it again queues nothing twice.
SELECT notify_ext.publish('jobs', 'JOB_PROCESSED', '{"n": 1}') > 0 AS published;
SELECT notify_ext.publish('regress_wh', 'regress.op', '{"n": 2}', 'regress_wh_d') > 0 AS published;
SELECT notify_ext.publish('regress_wh', 'regress.op', '{"n": 3}', 'regress_wh_p') > 0 AS published;
SELECT behind FROM notify_ext._webhook_enqueue(notify_ext.committed_seq(), 1000);
SELECT regexp_replace(w.url, '^.*/', '') AS url, e.operation, e.resource_id
  FROM notify_ext.webhook_queue q JOIN notify_ext.webhooks w ON w.id = q.webhook
  JOIN notify_ext.event_log e ON e.seq = q.seq
 ORDER BY 1, 2, 3;
SELECT count(*) = 0 AS cursors_at_horizon FROM notify_ext.webhooks
 WHERE status = 'active' AND cursor_seq < (SELECT max(seq) FROM notify_ext.event_log);

-- Redeliver and enable: errors.
SET ROLE regress_wh_svc;
SELECT regress_try($$SELECT notify_ext.redeliver('00000000-0000-0000-0000-000000000000', now())$$);
SELECT regress_try(format('SELECT notify_ext.redeliver(%L, NULL)', :'wh_all'));
SELECT regress_try($$SELECT notify_ext.enable_webhook('00000000-0000-0000-0000-000000000000')$$);
RESET ROLE;
UPDATE notify_ext.webhooks SET status = 'disabled', disabled_at = now(), disabled_reason = 'test'
 WHERE id = :'wh_own';
SET ROLE regress_wh_svc;
SELECT regress_try(format('SELECT notify_ext.redeliver(%L, now())', :'wh_own'));
SELECT notify_ext.enable_webhook(:'wh_own');
SELECT w ->> 'status' AS status, w -> 'disabled_at' AS disabled_at
  FROM notify_ext.list_webhooks() w WHERE w ->> 'id' = :'wh_own';

-- Deleting.
SELECT regress_try($$SELECT notify_ext.delete_webhook('00000000-0000-0000-0000-000000000000')$$);
SELECT notify_ext.delete_webhook(id::uuid) FROM (SELECT w ->> 'id' AS id FROM notify_ext.list_webhooks() w
                                                  WHERE w ->> 'url' LIKE '%127.0.0.1:9/%') x;
SELECT notify_ext.delete_subscription_auth(:'basic_auth');
SELECT notify_ext.delete_subscription_auth(:'oauth_auth');
SELECT count(*) AS webhooks, (SELECT count(*) FROM notify_ext.list_subscription_auth()) AS auth_configs
  FROM notify_ext.list_webhooks();
RESET ROLE;
SELECT count(*) AS queued_left FROM notify_ext.webhook_queue;

-- Clean up.
DROP FUNCTION regress_wh_try(text);
DELETE FROM notify_ext.resources WHERE id LIKE 'regress\_wh\_%';
DELETE FROM notify_ext.notifications WHERE recipient LIKE 'regress\_wh\_%';
RESET notify_ext.app_role;
DROP ROLE regress_wh_plain, regress_wh_svc, regress_wh_app;
