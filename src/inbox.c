/*
 * inbox.c: the per-principal NOTIFY channel of the inbox.
 *
 * LISTEN cannot be permission-checked in PostgreSQL: any session may LISTEN
 * on any channel name.  So the channel of a principal is a name nobody can
 * derive without a server key:
 *
 *     notify_ext_inbox_ || hex(BLAKE2b-128 keyed with K_inbox, principal)
 *
 * where K_inbox = notify_ext_server_key("inbox-channel").  Knowing one's own
 * channel (or many) tells nothing about another principal's.
 */
#include "postgres.h"

#include <sodium.h>

#include "commands/async.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

#include "principal.h"

#define CHANNEL_PREFIX "notify_ext_inbox_"
#define CHANNEL_HASH_BYTES 16
#define NOTIFY_PAYLOAD_LIMIT 8000

static unsigned char channel_key[NOTIFY_EXT_KEY_BYTES];
static bool channel_key_loaded = false;

static void
inbox_channel(const char *principal, size_t len, char *out)
{
	unsigned char h[CHANNEL_HASH_BYTES];

	if (!channel_key_loaded)
	{
		notify_ext_server_key("inbox-channel", channel_key);
		(void) sodium_mlock(channel_key, sizeof(channel_key));
		channel_key_loaded = true;
	}
	crypto_generichash(h, sizeof(h), (const unsigned char *) principal, len,
					   channel_key, sizeof(channel_key));
	memcpy(out, CHANNEL_PREFIX, sizeof(CHANNEL_PREFIX) - 1);
	sodium_bin2hex(out + sizeof(CHANNEL_PREFIX) - 1, CHANNEL_HASH_BYTES * 2 + 1, h, sizeof(h));
}

/*
 * notify_ext._inbox_channel(principal text) returns text: internal, for the
 * extension's SECURITY DEFINER functions only (EXECUTE is revoked from
 * PUBLIC, and it refuses to run unless the current user is a superuser,
 * i.e. inside one of them).
 */
PG_FUNCTION_INFO_V1(notify_ext_inbox_channel);
Datum
notify_ext_inbox_channel(PG_FUNCTION_ARGS)
{
	text	   *p = PG_GETARG_TEXT_PP(0);
	char		out[sizeof(CHANNEL_PREFIX) + CHANNEL_HASH_BYTES * 2 + 1];

	if (!superuser())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("notify_ext._inbox_channel() is internal"),
				 errhint("Use notify_ext.subscription_channel() for your own channel.")));
	inbox_channel(VARDATA_ANY(p), VARSIZE_ANY_EXHDR(p), out);
	PG_RETURN_TEXT_P(cstring_to_text(out));
}

/*
 * notify_ext._inbox_notify(recipient text, id bigint, type text, message
 * text, meta jsonb, refs jsonb, ts timestamptz, read boolean) returns void:
 * queues the NOTIFY of one new notification on the recipient's channel (sent
 * at commit).  The payload is the notification's JSON, or {"id": …,
 * "truncated": true} when it would not fit.  Internal, like
 * _inbox_channel(); written in C because the insert trigger calls it once
 * per new row.
 */
PG_FUNCTION_INFO_V1(notify_ext_inbox_notify);
Datum
notify_ext_inbox_notify(PG_FUNCTION_ARGS)
{
	text	   *recipient;
	char		channel[sizeof(CHANNEL_PREFIX) + CHANNEL_HASH_BYTES * 2 + 1];
	StringInfoData buf;
	int64		id;
	struct pg_tm tm;
	fsec_t		fsec;

	if (!superuser())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("notify_ext._inbox_notify() is internal")));
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2) || PG_ARGISNULL(3) ||
		PG_ARGISNULL(6) || PG_ARGISNULL(7))
		PG_RETURN_VOID();
	recipient = PG_GETARG_TEXT_PP(0);
	id = PG_GETARG_INT64(1);
	inbox_channel(VARDATA_ANY(recipient), VARSIZE_ANY_EXHDR(recipient), channel);

	initStringInfo(&buf);
	appendStringInfo(&buf, "{\"id\": " INT64_FORMAT ", \"type\": ", id);
	escape_json(&buf, text_to_cstring(PG_GETARG_TEXT_PP(2)));
	appendStringInfoString(&buf, ", \"message\": ");
	escape_json(&buf, text_to_cstring(PG_GETARG_TEXT_PP(3)));
	appendStringInfoString(&buf, ", \"meta\": ");
	if (PG_ARGISNULL(4))
		appendStringInfoString(&buf, "null");
	else
	{
		Jsonb	   *meta = PG_GETARG_JSONB_P(4);

		(void) JsonbToCString(&buf, &meta->root, VARSIZE(meta));
	}
	appendStringInfoString(&buf, ", \"ts\": ");
	if (!TIMESTAMP_NOT_FINITE(PG_GETARG_TIMESTAMPTZ(6)) &&
		timestamp2tm(PG_GETARG_TIMESTAMPTZ(6), NULL, &tm, &fsec, NULL, NULL) == 0)
		appendStringInfo(&buf, "\"%04d-%02d-%02dT%02d:%02d:%02d.%06dZ\"",
						 tm.tm_year, tm.tm_mon, tm.tm_mday,
						 tm.tm_hour, tm.tm_min, tm.tm_sec, (int) fsec);
	else
		appendStringInfoString(&buf, "null");
	appendStringInfo(&buf, ", \"read\": %s, \"refs\": ", PG_GETARG_BOOL(7) ? "true" : "false");
	if (PG_ARGISNULL(5))
		appendStringInfoString(&buf, "null");
	else
	{
		Jsonb	   *refs = PG_GETARG_JSONB_P(5);

		(void) JsonbToCString(&buf, &refs->root, VARSIZE(refs));
	}
	appendStringInfoChar(&buf, '}');

	/* NOTIFY refuses payloads of 8000 bytes or more. */
	if (buf.len >= NOTIFY_PAYLOAD_LIMIT)
	{
		resetStringInfo(&buf);
		appendStringInfo(&buf, "{\"id\": " INT64_FORMAT ", \"truncated\": true}", id);
	}
	Async_Notify(channel, buf.data);
	pfree(buf.data);
	PG_RETURN_VOID();
}
