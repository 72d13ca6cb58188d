/*
 * relay_worker.c: the relay worker of one database: publishes the events
 * of each relay's scope, in seq order, to its JetStream stream.
 *
 * The loop:
 *   1. Take the PubAcks that arrived (below), end the sessions that broke,
 *      and connect the relays that are due to (again).
 *   2. In one short transaction: record the progress of each relay
 *      (position, at most every RECORD_INTERVAL_MS),
 *      reload the relays when they changed, and read the events committed
 *      since the last look, up to the committed horizon of ordering.c (read
 *      before the snapshot), each relay as far as its window of
 *      notify_ext.relay_max_in_flight unacknowledged messages allows, and
 *      publish them with js_PublishMsgAsync: pipelined, never waiting for
 *      an answer.
 *   3. Sleep until a commit sets the latch, a PubAck arrives, or a relay's
 *      retry falls due.
 *
 * PubAcks.  libnats calls ack_cb() on a thread of its own.  It only notes
 * the acknowledged seq under the relay's mutex and writes a byte to a pipe
 * that the loop waits on; everything else happens on the main thread.  A
 * relay's position moves to seq only when every message up to seq has its
 * PubAck, so what PostgreSQL records is always in the stream.
 *
 * Failures.  A refused message, a PubAck that does not come within
 * notify_ext.relay_ack_timeout, a lost connection or an error from the
 * server ends the relay's session: the connection is closed, what was in
 * flight is forgotten, and after a backoff the relay connects again and
 * publishes from its position on.  Messages published again carry the same
 * Nats-Msg-Id, so JetStream drops the ones it stored already (within the
 * stream's duplicate window), and since every session publishes in seq
 * order from the first message without a PubAck, the stream keeps the
 * order.  A crash of PostgreSQL loses at most the progress not yet
 * recorded, which is published again in the same way.
 *
 * libnats's threads are created with every signal blocked, so that the
 * server's signals reach the main thread only.
 */
#include "postgres.h"

#include <fcntl.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <nats/nats.h>
#include <sodium.h>

#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "port/atomics.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "event_message.h"
#include "extension.h"
#include "launcher.h"
#include "nkey.h"
#include "ordering.h"
#include "relay.h"
#include "relay_subject.h"
#include "settings.h"
#include "spi_plan.h"
#include "webhook_policy.h"

/*
 * A relay reads again once its window is at most half full (or empty), so
 * that each read fills a good part of it.
 */
#define HAS_ROOM(r) ((r)->fl_n == 0 || (r)->fl_n <= (r)->fl_cap / 2)
/* Reads of one relay per transaction, at most. */
#define READS_PER_XACT 8
/* Progress is recorded at most this often while a relay publishes. */
#define RECORD_INTERVAL_MS 100
/* A look at the event log at least this often, in case a wake-up was lost. */
#define SAFETY_SCAN_MS 30000
/* The first retry after a failure; it doubles up to notify_ext.relay_retry_max. */
#define FIRST_RETRY_MS 500
/*
 * Room for a message's headers other than Notify-Operation, and for the
 * server's own: Nats-Msg-Id, Notify-Seq, Notify-Omitted and
 * Nats-Expected-Stream (a stream name has at most 255 bytes).
 */
#define MESSAGE_OVERHEAD 1024
/* Where Debian keeps the system's CA certificates. */
#define SYSTEM_CA_FILE "/etc/ssl/certs/ca-certificates.crt"

#define WITH_SIGNALS_BLOCKED(stmt) \
	do { \
		sigset_t	all_, old_; \
		sigfillset(&all_); \
		pthread_sigmask(SIG_BLOCK, &all_, &old_); \
		stmt; \
		pthread_sigmask(SIG_SETMASK, &old_, NULL); \
	} while (0)

/*
 * What libnats's threads hand to the main thread, per relay.  Allocated
 * with malloc and never freed: a callback of an old session may still run
 * when its relay is gone.  Callbacks of sessions other than the current
 * one (js, nc) are ignored.
 */
typedef struct AckSink
{
	pthread_mutex_t mu;
	jsCtx	   *js;
	natsConnection *nc;
	bool		broken;
	char		error[512];
	int64	   *acked;			/* seqs acknowledged since the last look */
	int			nacked;
	int			maxacked;
} AckSink;

/* Secrets libnats's callbacks read while connecting (malloc'd). */
typedef struct AuthKeys
{
	unsigned char seed[NKEY_SEED_BYTES];
	char	   *jwt;			/* credentials only */
} AuthKeys;

typedef enum RelayState
{
	RS_CONNECTING,
	RS_PUBLISHING,
	RS_FAILING
} RelayState;

static const char *const state_names[] = {"connecting", "publishing", "failing"};

typedef struct Relay
{
	pg_uuid_t	id;				/* hash key */
	bool		present;

	/* configuration (immutable for an id) */
	char	   *name;
	char	  **servers;
	int			nservers;
	char	   *stream;
	char	   *prefix;
	Datum		scope[4];		/* resource_id, include_subresources, streams, operations */
	char		scope_nulls[4];
	char	   *auth_type;
	char	   *auth_public;
	char	   *secret;
	bool		tls;
	char	   *tls_ca;
	bool		tls_verify;
	char	   *tls_hostname;
	char	   *tls_cert;
	char	   *tls_key;
	bool		ensure_stream;

	/* progress */
	int64		position;		/* as recorded in PostgreSQL */
	int64		acked_upto;		/* everything in scope up to here has its PubAck */
	int64		read_upto;		/* everything up to here is published or out of scope */
	int64		unrecorded;		/* published since the last record */
	TimestampTz last_event_at;
	TimestampTz recorded_at;
	bool		caught_up;		/* read_upto reached the horizon at the last read */

	/* in flight, in publish (seq) order: a ring */
	int64	   *fl_seq;
	TimestampTz *fl_at;
	bool	   *fl_acked;
	int			fl_head;
	int			fl_n;
	int			fl_cap;

	/* the session */
	AckSink    *sink;
	AuthKeys   *keys;
	natsConnection *nc;
	jsCtx	   *js;
	bool		primed;			/* published once in this session */
	RelayState	state;
	bool		state_dirty;
	char	   *error;			/* to record with the state */
	int			failures;
	TimestampTz retry_at;
} Relay;

static MemoryContext worker_cxt;
static HTAB *relays;
static int	nrelays;
static uint64 loaded_generation;
static int	wake_pipe[2] = {-1, -1};
static pg_atomic_uint32 wake_pending;
static char msgid_prefix[64];
static jsPubOptions pub_opts;

/* ---------------------------------------------------------------------
 * Callbacks (libnats threads: no palloc, no elog)
 * --------------------------------------------------------------------- */

/* Writes to the pipe only when the main thread has not been told yet. */
static void
wake_main(void)
{
	if (pg_atomic_exchange_u32(&wake_pending, 1) == 0)
	{
		char		c = 1;
		ssize_t		r = write(wake_pipe[1], &c, 1);

		(void) r;
	}
}

static void
sink_break(AckSink *s, const char *error)
{
	if (!s->broken)
	{
		s->broken = true;
		strlcpy(s->error, error, sizeof(s->error));
	}
}

static void
ack_cb(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure)
{
	AckSink    *s = (AckSink *) closure;
	const char *v = NULL;
	int64		seq = 0;

	/*
	 * The body is the event's jsonb text, whose keys come shortest first:
	 * it starts with {"seq": N.  Reading it there spares parsing headers.
	 */
	if (natsMsg_GetDataLength(msg) > 8 && strncmp(natsMsg_GetData(msg), "{\"seq\": ", 8) == 0)
		seq = strtoll(natsMsg_GetData(msg) + 8, NULL, 10);
	else if (natsMsgHeader_Get(msg, "Notify-Seq", &v) == NATS_OK && v != NULL)
		seq = strtoll(v, NULL, 10);
	pthread_mutex_lock(&s->mu);
	if (s->js == js)
	{
		if (pa != NULL)
		{
			if (s->nacked == s->maxacked)
			{
				int			max = Max(1024, s->maxacked * 2);
				int64	   *a = realloc(s->acked, max * sizeof(int64));

				if (a == NULL)
					sink_break(s, "out of memory");
				else
				{
					s->acked = a;
					s->maxacked = max;
				}
			}
			if (s->nacked < s->maxacked)
				s->acked[s->nacked++] = seq;
		}
		else
		{
			char		buf[512];
			const char *subject = natsMsg_GetSubject(msg);

			if (pae != NULL && pae->Err == NATS_NO_RESPONDERS)
				snprintf(buf, sizeof(buf), "no stream takes subject \"%s\": is the stream there?",
						 subject ? subject : "");
			else if (pae != NULL && pae->Err == NATS_TIMEOUT)
				snprintf(buf, sizeof(buf), "no PubAck within %d ms (notify_ext.relay_ack_timeout)",
						 relay_ack_timeout_ms);
			else if (pae != NULL && pae->ErrCode == JSStreamNotMatchErr)
				snprintf(buf, sizeof(buf), "subject \"%s\" belongs to another stream than the relay's",
						 subject ? subject : "");
			else if (pae != NULL && pae->ErrText != NULL)
				snprintf(buf, sizeof(buf), "JetStream refused the message: %s (error %d)",
						 pae->ErrText, (int) pae->ErrCode);
			else
				snprintf(buf, sizeof(buf), "publishing failed: %s",
						 natsStatus_GetText(pae != NULL ? pae->Err : NATS_ERR));
			sink_break(s, buf);
		}
	}
	pthread_mutex_unlock(&s->mu);
	natsMsg_Destroy(msg);
	wake_main();
}

static void
closed_cb(natsConnection *nc, void *closure)
{
	AckSink    *s = (AckSink *) closure;

	pthread_mutex_lock(&s->mu);
	if (s->nc == nc)
		sink_break(s, "the connection to the NATS server was lost");
	pthread_mutex_unlock(&s->mu);
	wake_main();
}

static void
error_cb(natsConnection *nc, natsSubscription *sub, natsStatus err, void *closure)
{
	AckSink    *s = (AckSink *) closure;
	const char *text = NULL;
	char		buf[512];

	(void) natsConnection_GetLastError(nc, &text);
	snprintf(buf, sizeof(buf), "the NATS server reported: %s",
			 text != NULL && text[0] ? text : natsStatus_GetText(err));
	pthread_mutex_lock(&s->mu);
	if (s->nc == nc)
		sink_break(s, buf);
	pthread_mutex_unlock(&s->mu);
	wake_main();
}

static natsStatus
sign_cb(char **customErrTxt, unsigned char **signature, int *signatureLength,
		const char *nonce, void *closure)
{
	AuthKeys   *k = (AuthKeys *) closure;
	unsigned char *sig = malloc(NKEY_SIGNATURE_BYTES);

	if (sig == NULL)
		return NATS_NO_MEMORY;
	nkey_sign(k->seed, (const unsigned char *) nonce, strlen(nonce), sig);
	*signature = sig;
	*signatureLength = NKEY_SIGNATURE_BYTES;
	return NATS_OK;
}

static natsStatus
jwt_cb(char **userJWT, char **customErrTxt, void *closure)
{
	AuthKeys   *k = (AuthKeys *) closure;

	*userJWT = strdup(k->jwt);
	return *userJWT ? NATS_OK : NATS_NO_MEMORY;
}

/* ---------------------------------------------------------------------
 * Relays
 * --------------------------------------------------------------------- */

static char *
cxt_strdup(const char *s)
{
	return s ? MemoryContextStrdup(worker_cxt, s) : NULL;
}

static void
forget_secret(char **s)
{
	if (*s != NULL)
	{
		sodium_memzero(*s, strlen(*s));
		pfree(*s);
		*s = NULL;
	}
}

static void
set_state(Relay *r, RelayState state, const char *error)
{
	if (r->state != state || error != NULL)
		r->state_dirty = true;
	r->state = state;
	if (r->error)
		pfree(r->error);
	r->error = NULL;
	if (error != NULL)
	{
		char	   *text = valid_db_text(error, strlen(error), INT_MAX);

		r->error = cxt_strdup(text);
		pfree(text);
	}
}

/* Closes the session; what was in flight is published again next time. */
static void
end_session(Relay *r)
{
	pthread_mutex_lock(&r->sink->mu);
	r->sink->js = NULL;
	r->sink->nc = NULL;
	r->sink->broken = false;
	r->sink->nacked = 0;
	pthread_mutex_unlock(&r->sink->mu);
	if (r->js != NULL)
		jsCtx_Destroy(r->js);
	if (r->nc != NULL)
		natsConnection_Destroy(r->nc);
	r->js = NULL;
	r->nc = NULL;
	if (r->keys != NULL)
	{
		if (r->keys->jwt)
			free(r->keys->jwt);
		sodium_memzero(r->keys, sizeof(AuthKeys));
		free(r->keys);
		r->keys = NULL;
	}
	r->fl_n = 0;
	r->fl_head = 0;
	r->read_upto = r->acked_upto;
	r->caught_up = false;
	r->primed = false;
}

static void
fail(Relay *r, const char *error)
{
	int64		delay;

	/*
	 * A session that failed before it connected still has its keys (an
	 * NKey seed, a JWT): wipe and free them now, not at the next connect.
	 */
	if (r->js != NULL || r->nc != NULL || r->keys != NULL)
		end_session(r);
	r->failures++;
	delay = (int64) FIRST_RETRY_MS << Min(r->failures - 1, 20);
	delay = Min(delay, (int64) relay_retry_max_ms);
	/* up to 20% of jitter either way */
	delay = (int64) (delay * (0.8 + randombytes_uniform(40001) / 100000.0));
	r->retry_at = GetCurrentTimestamp() + delay * 1000;
	if (r->state != RS_FAILING || r->error == NULL || strcmp(r->error, error) != 0)
		ereport(LOG,
				(errmsg("notify_ext relay \"%s\": %s; retrying in %.1f s", r->name, error, delay / 1000.0)));
	set_state(r, RS_FAILING, error);
}

static void
free_relay(Relay *r)
{
	end_session(r);
	forget_secret(&r->secret);
	forget_secret(&r->tls_key);
	if (r->fl_seq)
	{
		pfree(r->fl_seq);
		pfree(r->fl_at);
		pfree(r->fl_acked);
	}
	hash_search(relays, &r->id, HASH_REMOVE, NULL);
}

static void take_acks(Relay *r);
static void record(Relay *r, bool force);

static char *
spi_text(HeapTuple tup, TupleDesc desc, int col)
{
	bool		isnull;
	Datum		d = SPI_getbinval(tup, desc, col, &isnull);

	return isnull ? NULL : TextDatumGetCString(d);
}

static Datum
copy_datum(HeapTuple tup, TupleDesc desc, int col, char *null)
{
	bool		isnull;
	Datum		d = SPI_getbinval(tup, desc, col, &isnull);
	struct varlena *v;
	struct varlena *copy;

	*null = isnull ? 'n' : ' ';
	if (isnull)
		return (Datum) 0;
	v = PG_DETOAST_DATUM(d);
	copy = MemoryContextAlloc(worker_cxt, VARSIZE(v));
	memcpy(copy, v, VARSIZE(v));
	return PointerGetDatum(copy);
}

/* The value of a key of a jsonb object, as text (NULL when absent). */
static char *
json_field(Jsonb *j, const char *key, bool *is_true)
{
	JsonbValue	k;
	JsonbValue *v;

	k.type = jbvString;
	k.val.string.val = (char *) key;
	k.val.string.len = strlen(key);
	v = findJsonbValueFromContainer(&j->root, JB_FOBJECT, &k);
	if (v == NULL)
		return NULL;
	if (v->type == jbvBool)
	{
		if (is_true)
			*is_true = v->val.boolean;
		return "";
	}
	if (v->type != jbvString)
		return NULL;
	return pnstrdup(v->val.string.val, v->val.string.len);
}

static void
load_config(void)
{
	HASH_SEQ_STATUS hs;
	Relay	   *r;
	int			ret;

	hash_seq_init(&hs, relays);
	while ((r = hash_seq_search(&hs)) != NULL)
		r->present = false;

	ret = SPI_execute("SELECT id, name, servers, stream, subject_prefix, resource_id, include_subresources, "
					  "streams, operations, auth_type, auth_public, secret, tls, tls_key, ensure_stream, position "
					  "FROM notify_ext._relay_config()", true, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "notify_ext relay worker: reading relays failed: %s", SPI_result_code_string(ret));

	nrelays = 0;
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		pg_uuid_t  *id = DatumGetUUIDP(SPI_getbinval(tup, desc, 1, &isnull));
		bool		found;
		MemoryContext old;
		Datum	   *elems;
		bool	   *nulls;
		int			n;
		Datum		tls;

		nrelays++;
		r = hash_search(relays, id, HASH_ENTER, &found);
		r->present = true;
		if (found)
			continue;

		/* A relay's configuration never changes: a new one has a new id. */
		old = MemoryContextSwitchTo(worker_cxt);
		memset(((char *) r) + sizeof(pg_uuid_t), 0, sizeof(Relay) - sizeof(pg_uuid_t));
		r->present = true;
		r->name = spi_text(tup, desc, 2);
		deconstruct_array(DatumGetArrayTypeP(SPI_getbinval(tup, desc, 3, &isnull)), TEXTOID, -1, false,
						  TYPALIGN_INT, &elems, &nulls, &n);
		r->servers = palloc(n * sizeof(char *));
		for (int k = 0; k < n; k++)
			r->servers[k] = TextDatumGetCString(elems[k]);
		r->nservers = n;
		r->stream = spi_text(tup, desc, 4);
		r->prefix = spi_text(tup, desc, 5);
		r->scope[0] = copy_datum(tup, desc, 6, &r->scope_nulls[0]);
		r->scope[1] = SPI_getbinval(tup, desc, 7, &isnull);
		r->scope_nulls[1] = ' ';
		r->scope[2] = copy_datum(tup, desc, 8, &r->scope_nulls[2]);
		r->scope[3] = copy_datum(tup, desc, 9, &r->scope_nulls[3]);
		r->auth_type = spi_text(tup, desc, 10);
		r->auth_public = spi_text(tup, desc, 11);
		r->secret = spi_text(tup, desc, 12);
		tls = SPI_getbinval(tup, desc, 13, &isnull);
		if (!isnull)
		{
			Jsonb	   *j = DatumGetJsonbP(tls);

			r->tls = true;
			r->tls_verify = true;
			r->tls_ca = json_field(j, "ca", NULL);
			(void) json_field(j, "verify", &r->tls_verify);
			r->tls_hostname = json_field(j, "hostname", NULL);
			r->tls_cert = json_field(j, "cert", NULL);
		}
		/* A tls:// server without TLS settings: the system's CAs, verified. */
		for (int k = 0; k < r->nservers && !r->tls; k++)
			if (strncmp(r->servers[k], "tls://", 6) == 0)
			{
				r->tls = true;
				r->tls_verify = true;
			}
		r->tls_key = spi_text(tup, desc, 14);
		r->ensure_stream = DatumGetBool(SPI_getbinval(tup, desc, 15, &isnull));
		r->position = DatumGetInt64(SPI_getbinval(tup, desc, 16, &isnull));
		r->acked_upto = r->read_upto = r->position;
		r->fl_cap = relay_max_in_flight;
		r->fl_seq = palloc(r->fl_cap * sizeof(int64));
		r->fl_at = palloc(r->fl_cap * sizeof(TimestampTz));
		r->fl_acked = palloc(r->fl_cap * sizeof(bool));
		r->sink = calloc(1, sizeof(AckSink));
		if (r->sink == NULL)
			elog(ERROR, "notify_ext relay worker: out of memory");
		pthread_mutex_init(&r->sink->mu, NULL);
		r->state = RS_CONNECTING;
		r->state_dirty = true;
		MemoryContextSwitchTo(old);
	}

	/*
	 * Relays deleted or paused: stop publishing them.  A paused one first
	 * gets the PubAcks of what it has in flight and records them, so that
	 * when it is resumed, perhaps long after the stream's duplicate window,
	 * it publishes nothing again.
	 */
	hash_seq_init(&hs, relays);
	while ((r = hash_seq_search(&hs)) != NULL)
		if (!r->present)
		{
			if (r->js != NULL && r->fl_n > 0)
			{
				jsPubOptions o;

				jsPubOptions_Init(&o);
				o.MaxWait = relay_ack_timeout_ms;
				(void) js_PublishAsyncComplete(r->js, &o);
				take_acks(r);
			}
			record(r, true);
			free_relay(r);
		}
}

/* ---------------------------------------------------------------------
 * Sessions
 * --------------------------------------------------------------------- */

/* Why a server's address may not be connected to, or NULL. */
static char *
server_denied(const char *url)
{
	const char *p = strstr(url, "://");
	char	   *host;
	char	   *end;
	struct addrinfo hints;
	struct addrinfo *res = NULL;
	char	   *why = NULL;

	p = p ? p + 3 : url;
	if (*p == '[')
	{
		host = pstrdup(p + 1);
		end = strchr(host, ']');
	}
	else
	{
		host = pstrdup(p);
		end = strrchr(host, ':');
	}
	if (end)
		*end = '\0';
	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	if (getaddrinfo(host, NULL, &hints, &res) != 0)
		return NULL;			/* libnats reports it */
	for (struct addrinfo *a = res; a != NULL && why == NULL; a = a->ai_next)
	{
		const char *rule = webhook_address_denied(a->ai_addr);

		if (rule != NULL)
		{
			char		addr[64];

			webhook_address_text(a->ai_addr, addr, sizeof(addr));
			why = psprintf("address %s of server %s is denied: it is %s", addr, url, rule);
		}
	}
	freeaddrinfo(res);
	return why;
}

/* Whether subject pattern pat takes every subject under prefix. */
static bool
pattern_covers(const char *pat, const char *prefix)
{
	for (;;)
	{
		const char *pe = pat + strcspn(pat, ".");
		const char *xe = prefix + strcspn(prefix, ".");

		if (pe - pat == 1 && *pat == '>')
			return true;
		if (*prefix == '\0')
			return false;
		if (!(pe - pat == 1 && *pat == '*') &&
			!(pe - pat == xe - prefix && strncmp(pat, prefix, pe - pat) == 0))
			return false;
		if (*pe == '\0')
			return false;
		pat = pe + 1;
		prefix = *xe ? xe + 1 : xe;
	}
}

static char *
nats_error(const char *what, natsStatus s, jsErrCode jerr)
{
	const char *last = nats_GetLastError(NULL);

	/* libnats starts its texts with "(file.c:line): " */
	if (last != NULL && last[0] == '(' && strstr(last, "): ") != NULL)
		last = strstr(last, "): ") + 3;

	if (jerr != 0)
		return psprintf("%s: %s (JetStream error %d)", what, last && *last ? last : natsStatus_GetText(s),
						(int) jerr);
	return psprintf("%s: %s", what, last && *last ? last : natsStatus_GetText(s));
}

/* Creates the stream, or checks that it takes the relay's subjects. */
static char *
ensure_stream(Relay *r)
{
	jsStreamInfo *si = NULL;
	jsErrCode	jerr = 0;
	natsStatus	s;
	char	   *subject = psprintf("%s.>", r->prefix);
	char	   *error = NULL;

	WITH_SIGNALS_BLOCKED(s = js_GetStreamInfo(&si, r->js, r->stream, NULL, &jerr));
	if (s == NATS_OK)
	{
		bool		covered = false;
		StringInfoData list;

		initStringInfo(&list);
		for (int i = 0; i < si->Config->SubjectsLen; i++)
		{
			covered = covered || pattern_covers(si->Config->Subjects[i], subject);
			appendStringInfo(&list, "%s%s", i ? ", " : "", si->Config->Subjects[i]);
		}
		if (!covered)
			error = psprintf("stream \"%s\" exists, but its subjects (%s) do not take %s",
							 r->stream, list.data, subject);
		jsStreamInfo_Destroy(si);
	}
	else if (s == NATS_NOT_FOUND || jerr == JSStreamNotFoundErr)
	{
		jsStreamConfig cfg;
		const char *subjects[1] = {subject};

		jsStreamConfig_Init(&cfg);
		cfg.Name = r->stream;
		cfg.Subjects = subjects;
		cfg.SubjectsLen = 1;
		cfg.Storage = js_FileStorage;
		cfg.Duplicates = (int64) relay_duplicate_window_s * 1000000000;
		cfg.AllowDirect = true;
		jerr = 0;
		WITH_SIGNALS_BLOCKED(s = js_AddStream(&si, r->js, &cfg, NULL, &jerr));
		if (s == NATS_OK)
		{
			jsStreamInfo_Destroy(si);
			ereport(LOG,
					(errmsg("notify_ext relay \"%s\" created stream \"%s\" for subjects %s",
							r->name, r->stream, subject)));
		}
		else
			error = nats_error(psprintf("creating stream \"%s\" failed", r->stream), s, jerr);
	}
	else
		error = nats_error(psprintf("looking up stream \"%s\" failed", r->stream), s, jerr);
	return error;
}

static char *
set_auth(Relay *r, natsOptions *opts)
{
	natsStatus	s = NATS_OK;
	const char *why = NULL;

	if (strcmp(r->auth_type, "user_password") == 0)
		s = natsOptions_SetUserInfo(opts, r->auth_public, r->secret);
	else if (strcmp(r->auth_type, "token") == 0)
		s = natsOptions_SetToken(opts, r->secret);
	else if (strcmp(r->auth_type, "nkey") == 0 || strcmp(r->auth_type, "credentials") == 0)
	{
		char	   *seed = r->secret;
		char	   *jwt = NULL;

		if (strcmp(r->auth_type, "credentials") == 0 &&
			!nkey_parse_credentials(r->secret, &jwt, &seed, &why))
			return psprintf("the relay's credentials are not valid: %s", why);
		r->keys = calloc(1, sizeof(AuthKeys));
		if (r->keys == NULL)
			return pstrdup("out of memory");
		if (!nkey_decode_user_seed(seed, r->keys->seed, &why))
			return psprintf("the relay's NKey seed is not valid: %s", why);
		if (jwt != NULL)
		{
			r->keys->jwt = strdup(jwt);
			s = natsOptions_SetUserCredentialsCallbacks(opts, jwt_cb, r->keys, sign_cb, r->keys);
		}
		else
			s = natsOptions_SetNKey(opts, r->auth_public, sign_cb, r->keys);
	}
	if (s != NATS_OK)
		return nats_error("setting up authentication failed", s, 0);
	return NULL;
}

static char *
set_tls(Relay *r, natsOptions *opts)
{
	natsStatus	s;

	if (!r->tls)
		return NULL;
	s = natsOptions_SetSecure(opts, true);
	if (s == NATS_OK && r->tls_ca != NULL)
		s = natsOptions_SetCATrustedCertificates(opts, r->tls_ca);
	else if (s == NATS_OK && access(SYSTEM_CA_FILE, R_OK) == 0)
		s = natsOptions_LoadCATrustedCertificates(opts, SYSTEM_CA_FILE);
	if (s == NATS_OK && !r->tls_verify)
		s = natsOptions_SkipServerVerification(opts, true);
	if (s == NATS_OK && r->tls_hostname != NULL)
		s = natsOptions_SetExpectedHostname(opts, r->tls_hostname);
	if (s == NATS_OK && r->tls_cert != NULL)
		s = natsOptions_SetCertificatesChain(opts, r->tls_cert, r->tls_key);
	if (s != NATS_OK)
		return nats_error("setting up TLS failed", s, 0);
	return NULL;
}

/* Connects (blocking for at most notify_ext.relay_connect_timeout per server). */
static void
connect_relay(Relay *r)
{
	natsOptions *opts = NULL;
	natsConnection *nc = NULL;
	jsCtx	   *js = NULL;
	jsOptions	jo;
	natsStatus	s;
	char	   *error = NULL;
	char	   *name;

	if (r->state != RS_FAILING)
		set_state(r, RS_CONNECTING, NULL);
	for (int i = 0; i < r->nservers && error == NULL; i++)
		error = server_denied(r->servers[i]);
	if (error != NULL)
	{
		fail(r, error);
		return;
	}
	s = natsOptions_Create(&opts);
	if (s != NATS_OK)
	{
		fail(r, nats_error("natsOptions_Create failed", s, 0));
		return;
	}
	name = psprintf("notify_ext relay %s", r->name);
	natsOptions_SetServers(opts, (const char **) r->servers, r->nservers);
	natsOptions_SetName(opts, name);
	natsOptions_SetTimeout(opts, relay_connect_timeout_ms);
	natsOptions_SetAllowReconnect(opts, false);
	natsOptions_SetPingInterval(opts, 5000);
	natsOptions_SetMaxPingsOut(opts, 3);
	natsOptions_SetClosedCB(opts, closed_cb, r->sink);
	natsOptions_SetDisconnectedCB(opts, closed_cb, r->sink);
	natsOptions_SetErrorHandler(opts, error_cb, r->sink);
	error = set_auth(r, opts);
	if (error == NULL)
		error = set_tls(r, opts);
	if (error == NULL)
	{
		WITH_SIGNALS_BLOCKED(s = natsConnection_Connect(&nc, opts));
		if (s != NATS_OK)
			error = nats_error(psprintf("connecting to %s failed", r->servers[0]), s, 0);
	}
	natsOptions_Destroy(opts);
	if (error == NULL)
	{
		jsOptions_Init(&jo);
		jo.Wait = relay_ack_timeout_ms;
		jo.PublishAsync.MaxPending = relay_max_in_flight + 64;
		jo.PublishAsync.AckHandler = ack_cb;
		jo.PublishAsync.AckHandlerClosure = r->sink;
		WITH_SIGNALS_BLOCKED(s = natsConnection_JetStream(&js, nc, &jo));
		if (s != NATS_OK)
			error = nats_error("setting up JetStream failed", s, 0);
	}
	r->nc = nc;
	r->js = js;
	if (error == NULL && r->ensure_stream)
		error = ensure_stream(r);
	if (error != NULL)
	{
		fail(r, error);
		return;
	}
	pthread_mutex_lock(&r->sink->mu);
	r->sink->js = js;
	r->sink->nc = nc;
	r->sink->broken = false;
	r->sink->nacked = 0;
	pthread_mutex_unlock(&r->sink->mu);
	r->read_upto = r->acked_upto;
	r->caught_up = false;
	r->primed = false;
	if (r->failures == 0)
		set_state(r, RS_PUBLISHING, NULL);
	ereport(DEBUG1, (errmsg("notify_ext relay \"%s\" connected", r->name)));
}

/*
 * connect_relay() in a memory context of its own: it runs outside any
 * transaction, again after every failure, and what it allocates (messages,
 * a copy of the credentials) must not pile up in TopMemoryContext.
 */
static void
start_session(Relay *r)
{
	MemoryContext cxt = AllocSetContextCreate(worker_cxt, "notify_ext relay connect",
											  ALLOCSET_SMALL_SIZES);
	MemoryContext old = MemoryContextSwitchTo(cxt);

	connect_relay(r);
	MemoryContextSwitchTo(old);
	MemoryContextDelete(cxt);
}

/* Moves the acknowledged prefix on; ends a broken session. */
static void
take_acks(Relay *r)
{
	AckSink    *s = r->sink;
	bool		broken;
	char		error[512];

	if (r->js == NULL)
		return;
	pthread_mutex_lock(&s->mu);
	broken = s->broken;
	if (broken)
		strlcpy(error, s->error, sizeof(error));
	for (int i = 0; i < s->nacked; i++)
	{
		int64		seq = s->acked[i];
		int			lo = 0;
		int			hi = r->fl_n - 1;

		/* the ring is sorted by seq */
		while (lo <= hi)
		{
			int			mid = (lo + hi) / 2;
			int64		at = r->fl_seq[(r->fl_head + mid) % r->fl_cap];

			if (at == seq)
			{
				r->fl_acked[(r->fl_head + mid) % r->fl_cap] = true;
				break;
			}
			if (at < seq)
				lo = mid + 1;
			else
				hi = mid - 1;
		}
	}
	s->nacked = 0;
	pthread_mutex_unlock(&s->mu);

	while (r->fl_n > 0 && r->fl_acked[r->fl_head])
	{
		r->acked_upto = r->fl_seq[r->fl_head];
		r->last_event_at = r->fl_at[r->fl_head];
		r->unrecorded++;
		r->fl_head = (r->fl_head + 1) % r->fl_cap;
		r->fl_n--;
		if (r->failures > 0)
		{
			r->failures = 0;
			set_state(r, RS_PUBLISHING, NULL);
		}
	}
	if (r->fl_n == 0)
		r->acked_upto = Max(r->acked_upto, r->read_upto);
	if (broken)
		fail(r, error);
}

/* ---------------------------------------------------------------------
 * Publishing
 * --------------------------------------------------------------------- */

static bool
publish(Relay *r, EventFields *e, StringInfo subject, StringInfo body, StringInfo hdr)
{
	natsMsg    *msg = NULL;
	natsStatus	s;
	char		seqtext[32];
	int			slot;
	Jsonb	   *jb;
	Datum	   *path = NULL;
	bool	   *pnulls = NULL;
	int			npath = 0;
	Datum		only;
	bool		omitted;

	resetStringInfo(subject);
	resetStringInfo(body);
	resetStringInfo(hdr);
	if (e->resource_path != NULL)
	{
		deconstruct_array(e->resource_path, TEXTOID, -1, false, TYPALIGN_INT, &path, &pnulls, &npath);
		for (int i = 0; i < npath; i++)
			if (pnulls[i])
				path[i] = PointerGetDatum(cstring_to_text(""));
	}
	else if (e->resource_id != NULL)
	{
		only = PointerGetDatum(e->resource_id);
		path = &only;
		npath = 1;
	}
	relay_subject(subject, r->prefix, VARDATA_ANY(e->operation), VARSIZE_ANY_EXHDR(e->operation),
				  path, npath);
	jb = event_message(e);
	(void) JsonbToCString(body, &jb->root, VARSIZE(jb));
	relay_header_value(hdr, VARDATA_ANY(e->operation), VARSIZE_ANY_EXHDR(e->operation));

	/*
	 * The server refuses a message larger than its max_payload, again after
	 * every reconnect: such an event would stop the relay for good.  It is
	 * published with its seq only, marked, and stays in PostgreSQL.
	 */
	omitted = body->len + hdr->len + MESSAGE_OVERHEAD > natsConnection_GetMaxPayload(r->nc);
	if (omitted)
	{
		ereport(LOG,
				(errmsg("notify_ext relay \"%s\": event " INT64_FORMAT " is larger than the NATS server's "
						"max_payload (%d bytes); publishing it without its content",
						r->name, e->seq, body->len)));
		resetStringInfo(body);
		appendStringInfo(body, "{\"seq\": " INT64_FORMAT ", \"omitted\": true}", e->seq);
	}

	s = natsMsg_Create(&msg, subject->data, NULL, body->data, body->len);
	if (s == NATS_OK)
	{
		char		id[96];

		snprintf(id, sizeof(id), "%s" INT64_FORMAT, msgid_prefix, e->seq);
		snprintf(seqtext, sizeof(seqtext), INT64_FORMAT, e->seq);
		s = natsMsgHeader_Set(msg, "Nats-Msg-Id", id);
		if (s == NATS_OK)
			s = natsMsgHeader_Set(msg, "Notify-Seq", seqtext);
		if (s == NATS_OK)
			s = natsMsgHeader_Set(msg, "Notify-Operation", hdr->data);
		if (s == NATS_OK && omitted)
			s = natsMsgHeader_Set(msg, "Notify-Omitted", "max_payload");
	}
	if (s != NATS_OK)
	{
		if (msg)
			natsMsg_Destroy(msg);
		fail(r, nats_error("making a message failed", s, 0));
		return false;
	}

	slot = (r->fl_head + r->fl_n) % r->fl_cap;
	r->fl_seq[slot] = e->seq;
	r->fl_at[slot] = e->occurred_at;
	r->fl_acked[slot] = false;
	r->fl_n++;

	pub_opts.ExpectStream = r->stream;
	if (!r->primed)
	{
		/* the first publish starts the threads that take the PubAcks */
		WITH_SIGNALS_BLOCKED(s = js_PublishMsgAsync(r->js, &msg, &pub_opts));
		r->primed = true;
	}
	else
		s = js_PublishMsgAsync(r->js, &msg, &pub_opts);
	if (s != NATS_OK)
	{
		if (msg)
			natsMsg_Destroy(msg);
		if (s == NATS_CONNECTION_CLOSED || s == NATS_CONNECTION_DISCONNECTED)
			fail(r, "the connection to the NATS server was lost");
		else
			fail(r, nats_error("publishing failed", s, 0));
		return false;
	}
	return true;
}

#define READ_SQL \
	"SELECT e.seq, e.stream, e.operation, e.resource_id, e.resource_variant, e.resource_path, " \
	"       e.occurred_at, e.actor, e.payload, e.changed " \
	"  FROM notify_ext.event_log e " \
	" WHERE e.seq > $1 AND e.seq <= $2 " \
	"   AND notify_ext._in_scope($3, $4, $5, $6, NULL, e.resource_id, e.resource_path, e.stream, " \
	"                            e.operation, e.occurred_at) " \
	" ORDER BY e.seq"

/* Rows fetched from the read's cursor at a time. */
#define FETCH_ROWS 256

/*
 * Reads what the relay's window has room for, up to horizon, and publishes
 * it.  Rows come through a cursor, a few hundred at a time, and each
 * message is made in a context reset after it: the memory stays small and
 * warm however large the window.
 */
static void
read_and_publish(Relay *r, int64 horizon)
{
	Oid			argtypes[6] = {INT8OID, INT8OID, TEXTOID, BOOLOID, TEXTARRAYOID, TEXTARRAYOID};
	Datum		args[6];
	char		nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};
	StringInfoData subject;
	StringInfoData body;
	StringInfoData hdr;
	MemoryContext cxt = AllocSetContextCreate(CurrentMemoryContext, "notify_ext relay read",
											  ALLOCSET_DEFAULT_SIZES);
	MemoryContext msg_cxt = AllocSetContextCreate(cxt, "notify_ext relay message",
												  ALLOCSET_DEFAULT_SIZES);
	MemoryContext old = MemoryContextSwitchTo(cxt);
	SPIPlanPtr	plan = spi_plan(READ_SQL, 6, argtypes);

	initStringInfo(&subject);
	initStringInfo(&body);
	initStringInfo(&hdr);
	for (int i = 2; i < 6; i++)
	{
		args[i] = r->scope[i - 2];
		nulls[i] = r->scope_nulls[i - 2];
	}
	for (int n = 0; n < READS_PER_XACT && r->js != NULL && r->read_upto < horizon; n++)
	{
		int			room = r->fl_cap - r->fl_n;
		int64		upto;
		Portal		portal;

		if (room <= 0)
			break;
		upto = Min(horizon, r->read_upto + room);
		args[0] = Int64GetDatum(r->read_upto);
		args[1] = Int64GetDatum(upto);
		portal = SPI_cursor_open(NULL, plan, args, nulls, true);
		for (;;)
		{
			SPI_cursor_fetch(portal, true, FETCH_ROWS);
			if (SPI_processed == 0)
				break;
			for (uint64 i = 0; i < SPI_processed && r->js != NULL; i++)
			{
				EventFields e;
				bool		ok;

				MemoryContextSwitchTo(msg_cxt);
				event_fields_from_row(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, &e);
				ok = publish(r, &e, &subject, &body, &hdr);
				MemoryContextSwitchTo(cxt);
				MemoryContextReset(msg_cxt);
				if (!ok)
					break;
			}
			SPI_freetuptable(SPI_tuptable);
			if (r->js == NULL)
				break;
		}
		SPI_cursor_close(portal);
		if (r->js == NULL)
			break;
		r->read_upto = upto;
	}
	if (r->js != NULL)
	{
		r->caught_up = r->read_upto >= horizon;
		if (r->fl_n == 0)
			r->acked_upto = Max(r->acked_upto, r->read_upto);
		/* Connected again, and nothing waits: the relay is well. */
		if (r->caught_up && r->fl_n == 0 && r->failures > 0)
		{
			r->failures = 0;
			set_state(r, RS_PUBLISHING, NULL);
		}
	}
	MemoryContextSwitchTo(old);
	MemoryContextDelete(cxt);
}

/* Records the relay's progress and state, when there is something new. */
static void
record(Relay *r, bool force)
{
	TimestampTz now = GetCurrentTimestamp();

	if ((r->acked_upto > r->position || r->unrecorded > 0) &&
		(force || now - r->recorded_at >= RECORD_INTERVAL_MS * 1000))
	{
		Oid			argtypes[4] = {UUIDOID, INT8OID, INT8OID, TIMESTAMPTZOID};
		Datum		args[4] = {UUIDPGetDatum(&r->id), Int64GetDatum(r->acked_upto),
		Int64GetDatum(r->unrecorded), TimestampTzGetDatum(r->last_event_at)};
		char		nulls[4] = {' ', ' ', ' ', r->last_event_at == 0 ? 'n' : ' '};

		if (spi_run("SELECT notify_ext._relay_advance($1, $2, $3, $4)", 4, argtypes, args, nulls,
					false, 0) != SPI_OK_SELECT)
			elog(ERROR, "notify_ext relay worker: recording progress failed");
		r->position = r->acked_upto;
		r->unrecorded = 0;
		r->recorded_at = now;
	}
	if (r->state_dirty)
	{
		Oid			argtypes[3] = {UUIDOID, TEXTOID, TEXTOID};
		Datum		args[3] = {UUIDPGetDatum(&r->id), CStringGetTextDatum(state_names[r->state]),
		r->error ? CStringGetTextDatum(r->error) : (Datum) 0};
		char		nulls[3] = {' ', ' ', r->error ? ' ' : 'n'};

		if (spi_run("SELECT notify_ext._relay_set_state($1, $2, $3)", 3, argtypes, args, nulls,
					false, 0) != SPI_OK_SELECT)
			elog(ERROR, "notify_ext relay worker: recording the state failed");
		r->state_dirty = false;
	}
}

static bool
needs_record(Relay *r, TimestampTz now)
{
	return r->state_dirty ||
		((r->acked_upto > r->position || r->unrecorded > 0) &&
		 now - r->recorded_at >= RECORD_INTERVAL_MS * 1000);
}

/* ---------------------------------------------------------------------
 * The worker
 * --------------------------------------------------------------------- */

static void
exit_if_idle(void)
{
	if (nrelays > 0)
		return;
	if (db_worker_detach_if(loaded_generation))
	{
		elog(DEBUG1, "notify_ext relay worker: no relays to run, exiting");
		proc_exit(0);
	}
}

static void
drain_pipe(void)
{
	char		buf[256];

	/*
	 * Empty the pipe first: a callback that finds the flag still set has
	 * its acks taken by the take_acks() that follows this.
	 */
	while (read(wake_pipe[0], buf, sizeof(buf)) > 0)
		;
	pg_atomic_write_u32(&wake_pending, 0);
	pg_memory_barrier();
}

void
notify_ext_relay_worker_main(Datum main_arg)
{
	Oid			dboid = DatumGetObjectId(main_arg);
	bool		first = true;
	bool		scan_pending = true;
	TimestampTz next_scan = 0;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	if (!db_worker_attach(DB_WORKER_RELAYS, dboid, &loaded_generation))
		proc_exit(0);

	worker_connect(dboid, InvalidOid);
	pgstat_report_appname("notify_ext relay worker");
	/* Losing a commit of this worker only means publishing again. */
	SetConfigOption("synchronous_commit", "off", PGC_SUSET, PGC_S_OVERRIDE);
	/*
	 * Events are read by seq ranges through the BRIN index.  The plan is
	 * kept for the session, and may first be made while the log is empty:
	 * a sequential scan must not be chosen then and kept.
	 */
	SetConfigOption("enable_seqscan", "off", PGC_SUSET, PGC_S_OVERRIDE);

	worker_cxt = AllocSetContextCreate(TopMemoryContext, "notify_ext relays", ALLOCSET_DEFAULT_SIZES);
	{
		HASHCTL		ctl;

		memset(&ctl, 0, sizeof(ctl));
		ctl.keysize = sizeof(pg_uuid_t);
		ctl.entrysize = sizeof(Relay);
		ctl.hcxt = worker_cxt;
		relays = hash_create("notify_ext relays", 16, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	snprintf(msgid_prefix, sizeof(msgid_prefix), UINT64_FORMAT ".%u.", GetSystemIdentifier(), dboid);
	jsPubOptions_Init(&pub_opts);
	pub_opts.MaxWait = relay_ack_timeout_ms;

	if (sodium_init() < 0)
		elog(ERROR, "notify_ext relay worker: could not initialize libsodium");
	pg_atomic_init_u32(&wake_pending, 0);
	if (pipe(wake_pipe) != 0 ||
		fcntl(wake_pipe[0], F_SETFL, O_NONBLOCK) != 0 || fcntl(wake_pipe[1], F_SETFL, O_NONBLOCK) != 0)
		elog(ERROR, "notify_ext relay worker: could not create a pipe: %m");
	{
		natsStatus	s;

		WITH_SIGNALS_BLOCKED(s = nats_Open(-1));
		if (s != NATS_OK)
			elog(ERROR, "notify_ext relay worker: could not initialize libnats: %s", natsStatus_GetText(s));
	}

	/* Nothing to do in a database without notify_ext (or an old version). */
	db_worker_leave_unless_installed("_relay_config", loaded_generation);

	for (;;)
	{
		TimestampTz now;
		uint64		gen;
		bool		reload;
		bool		read = false;
		bool		rec = false;
		long		timeout;
		HASH_SEQ_STATUS hs;
		Relay	   *r;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			pub_opts.MaxWait = relay_ack_timeout_ms;
		}

		gen = db_worker_generation();
		reload = first || gen != loaded_generation;

		/* PubAcks, broken sessions, connections due. */
		now = GetCurrentTimestamp();
		hash_seq_init(&hs, relays);
		while ((r = hash_seq_search(&hs)) != NULL)
		{
			take_acks(r);
			if (r->js == NULL && now >= r->retry_at && !reload)
			{
				start_session(r);
				scan_pending = true;
			}
		}

		now = GetCurrentTimestamp();
		if (now >= next_scan)
			scan_pending = true;
		hash_seq_init(&hs, relays);
		while ((r = hash_seq_search(&hs)) != NULL)
		{
			if (r->js != NULL && HAS_ROOM(r) && (scan_pending || !r->caught_up))
				read = true;
			if (needs_record(r, now))
				rec = true;
		}

		if (reload || read || rec)
		{
			int64		horizon = 0;

			SetCurrentStatementStartTimestamp();
			StartTransactionCommand();
			/* The committed horizon, before the snapshot that reads events. */
			if (read)
				horizon = ordering_committed_seq();
			SPI_connect();
			PushActiveSnapshot(GetTransactionSnapshot());
			pgstat_report_activity(STATE_RUNNING, "notify_ext relay worker");
			if (reload)
			{
				loaded_generation = gen;
				load_config();
			}
			hash_seq_init(&hs, relays);
			while ((r = hash_seq_search(&hs)) != NULL)
			{
				if (read && r->js != NULL && HAS_ROOM(r) && (scan_pending || !r->caught_up))
					read_and_publish(r, horizon);
				record(r, false);
			}
			if (read)
			{
				scan_pending = false;
				next_scan = now + (int64) SAFETY_SCAN_MS * 1000;
			}
			SPI_finish();
			PopActiveSnapshot();
			CommitTransactionCommand();
			pgstat_report_activity(STATE_IDLE, NULL);
			if (first)
				scan_pending = true;
			first = false;
			if (nrelays == 0)
				exit_if_idle();
			if (reload)
				continue;		/* connect the new relays at once */
		}

		/* How long to sleep. */
		now = GetCurrentTimestamp();
		timeout = SAFETY_SCAN_MS;
		if (next_scan > now)
			timeout = Min(timeout, (next_scan - now) / 1000 + 1);
		else
			timeout = 0;
		hash_seq_init(&hs, relays);
		while ((r = hash_seq_search(&hs)) != NULL)
		{
			if (r->js == NULL)
				timeout = Min(timeout, r->retry_at > now ? (r->retry_at - now) / 1000 + 1 : 0);
			else if (!r->caught_up && HAS_ROOM(r))
				timeout = 0;
			if (r->state_dirty)
				timeout = 0;
			else if (r->acked_upto > r->position || r->unrecorded > 0)
				timeout = Min(timeout, Max(0, RECORD_INTERVAL_MS - (now - r->recorded_at) / 1000) + 1);
		}
		if (scan_pending)
			timeout = 0;

		{
			WaitEventSet *set;
			WaitEvent	occurred[3];
			int			n;

			set = CreateWaitEventSet(CurrentMemoryContext, 3);
			AddWaitEventToSet(set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
			AddWaitEventToSet(set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
			AddWaitEventToSet(set, WL_SOCKET_READABLE, wake_pipe[0], NULL, NULL);
			n = WaitEventSetWait(set, timeout, occurred, 3, PG_WAIT_EXTENSION);
			FreeWaitEventSet(set);
			for (int i = 0; i < n; i++)
			{
				if (occurred[i].events & WL_LATCH_SET)
				{
					ResetLatch(MyLatch);
					scan_pending = true;
				}
				if (occurred[i].events & WL_SOCKET_READABLE)
					drain_pipe();
			}
		}
	}
}
