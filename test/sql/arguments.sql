-- Limits of arguments and settings that the fuzz test found unguarded:
-- ids and names longer than an index entry can hold, lists of a scope that
-- are not one-dimensional or too long, settings out of range, and the
-- event JSON of timestamps that are not finite.
\set SHOW_CONTEXT never
SET client_min_messages = warning;

-- Indexed ids and names: at most 1024 bytes.
SELECT regress_try(format($$SELECT notify_ext.register_resource(%L, 'project')$$, repeat('r', 1025)));
SELECT regress_try(format($$SELECT notify_ext.register_resource('ok_root', %L)$$, repeat('v', 1025)));
SELECT notify_ext.register_resource(repeat('r', 1024), 'project');
SELECT regress_try(format($$SELECT notify_ext.grant_permission(%L, %L, 'READ')$$, repeat('p', 1025), repeat('r', 1024)));
SELECT regress_try(format($$SELECT notify_ext.create_notification(%L, 'T', 'm')$$, repeat('u', 1025)));
SELECT regress_try(format($$SELECT notify_ext.create_notification('u', %L, 'm')$$, repeat('t', 1025)));
SELECT regress_try(format($$SELECT notify_ext.set_notification_preference(%L, false)$$, repeat('t', 1025)));
SELECT regress_try(format($$SET notify_ext.principal = %L$$, repeat('p', 1025)));
DELETE FROM notify_ext.resources WHERE id = repeat('r', 1024);

-- The lists of a scope: one dimension, at most 256 distinct names.
SELECT regress_try($$SELECT notify_ext.create_stream_consumer(streams => '{{a},{b}}')$$);
SELECT regress_try($$SELECT notify_ext.create_stream_consumer(operations => (SELECT array_agg('op' || g) FROM generate_series(1, 257) g))$$);
SELECT regress_try($$SELECT notify_ext.create_webhook('http://127.0.0.1:9/', streams => '{{a},{b}}')$$);
SELECT regress_try($$SELECT notify_ext.create_webhook('http://127.0.0.1:9/', operations => (SELECT array_agg('op' || g) FROM generate_series(1, 300) g))$$);

-- Interval settings: at most 100 years.
SELECT regress_try($$SET notify_ext.event_retention = '178000000 years'$$);
SELECT regress_try($$SET notify_ext.reply_key_grace = '1000 years'$$);
SELECT regress_try($$SET notify_ext.read_notification_retention = '100 years'$$);
RESET notify_ext.read_notification_retention;

-- notify_ext.permission_function names a function, without arguments, that
-- returns one boolean.
SELECT regress_try($$SET notify_ext.permission_function = 'public.f(text,text,text)'$$);
SELECT regress_try($$SET notify_ext.permission_function = 'a.b.c.d'$$);
CREATE FUNCTION public.regress_perm_set(text, text, text) RETURNS SETOF boolean
    LANGUAGE sql AS $$ SELECT true $$;
SET notify_ext.permission_function = 'public.regress_perm_set';
SELECT notify_ext.register_resource('arg_root', 'project');
SELECT regress_try($$SELECT notify_ext.has_permission('someone', 'arg_root', 'READ')$$);
RESET notify_ext.permission_function;
DROP FUNCTION public.regress_perm_set(text, text, text);
DELETE FROM notify_ext.resources WHERE id = 'arg_root';

-- The event JSON of timestamps that are not finite, as to_json() writes them.
SELECT notify_ext.event_message(1, 's', 'op', NULL, NULL, NULL, 'infinity', 'a', '{}', NULL) ->> 'occurred_at';
SELECT notify_ext.event_message(1, 's', 'op', NULL, NULL, NULL, '-infinity', 'a', '{}', NULL) ->> 'occurred_at';
SELECT regress_try($$SELECT notify_ext.event_message(7, 's', 'op', NULL, NULL, NULL, '4714-11-24 00:00:00+00 BC', 'a', '{}', NULL)$$);

-- The bulk call too.
SELECT regress_try(format($$SELECT notify_ext.create_notifications_bulk(%L)$$,
    jsonb_build_array(jsonb_build_object('user', repeat('u', 1025), 'notification', '{"type": "T", "message": "m"}'::jsonb))));
