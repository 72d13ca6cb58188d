/*
 * webhook_worker.c: the delivery worker of one database.
 *
 * The loop:
 *   1. In one short transaction: record the attempts that finished, reload
 *      the webhook configuration when it changed, queue the events that
 *      committed since the last look (up to the committed horizon of
 *      ordering.c, read before the snapshot), and claim due deliveries
 *      (webhook_queue.in_flight).
 *   2. Outside any transaction: start the claimed deliveries on a curl
 *      multi handle (connections are kept and reused per host), and wait
 *      on a WaitEventSet holding the worker's latch and curl's sockets,
 *      until a socket is ready, a commit sets the latch, curl's timer or
 *      the next due retry comes.
 *
 * Each delivery is a POST of the event JSON signed per the Standard
 * Webhooks spec (webhook-id, webhook-timestamp, webhook-signature), with
 * Basic or OAuth2 bearer authentication.  OAuth2 tokens are fetched from
 * the token endpoint on the same multi handle and cached per auth config
 * until shortly before they expire; a 401 drops the token and the delivery
 * is sent once more with a fresh one.
 *
 * Every address a request connects to, after DNS resolution, is checked
 * against the URL policy (webhook_policy.c) before the socket is opened, so
 * that a host name cannot lead to a denied address; redirects are never
 * followed and proxies from the environment are not used.
 *
 * Fair share: each webhook gets at most its share of the delivery slots
 * while others have work waiting, and a slot is held back for webhooks
 * that have none, so endpoints that hang cannot hold up the others (see
 * allot_slots()).
 *
 * Nothing is lost on a crash: claims are cleared when the worker starts,
 * so whatever was in flight is sent again (at least once), with the same
 * webhook-id, derived from (webhook, seq).
 */
#include "postgres.h"

#include <signal.h>
#include <pthread.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include <curl/curl.h>
#include <sodium.h>

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "common/jsonapi.h"
#include "executor/spi.h"
#include "lib/ilist.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "pgstat.h"
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
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "extension.h"
#include "keys.h"
#include "launcher.h"
#include "ordering.h"
#include "principal.h"
#include "settings.h"
#include "webhook.h"
#include "webhook_policy.h"

#define USER_AGENT "notify_ext-webhooks/0.1.0"

/* Events looked at per webhook per transaction. */
#define ENQUEUE_CHUNK 20000
/* Results recorded per transaction, at most. */
#define RESULT_BATCH 2000
/* A look at the event log at least this often, in case a wake-up was lost. */
#define SAFETY_SCAN_MS 30000
/* A response body kept for the error message of a failure. */
#define ERROR_BODY_BYTES 200
/* A token response read at most. */
#define TOKEN_BODY_BYTES 65536

typedef enum AuthKind
{
	AUTH_NONE,
	AUTH_BASIC,
	AUTH_OAUTH
} AuthKind;

/* One active webhook (and removed ones with deliveries in flight). */
typedef struct Webhook
{
	pg_uuid_t	id;				/* hash key */
	bool		present;		/* in the last configuration read */
	int			inflight;
	int			due;			/* due deliveries not in flight, as last counted */
	char	   *url;
	unsigned char signing_key[32];
	AuthKind	auth_kind;
	pg_uuid_t	auth_id;
	char	   *user;			/* BASIC_AUTH */
	char	   *password;
} Webhook;

/* An OAuth2 token, per auth config. */
typedef struct Token
{
	pg_uuid_t	auth_id;		/* hash key */
	bool		present;
	char	   *token_url;
	char	   *scope;
	char	   *client_id;
	char	   *client_secret;
	char	   *token;			/* NULL: none */
	TimestampTz expires_at;		/* use it until then */
	bool		fetching;
	dlist_head	waiters;		/* deliveries waiting for the token */
} Token;

typedef enum TransferKind
{
	T_DELIVERY,
	T_TOKEN
} TransferKind;

typedef struct Transfer
{
	TransferKind kind;
	CURL	   *easy;
	struct curl_slist *headers;
	char		errbuf[CURL_ERROR_SIZE];
	char		denied[256];	/* why an address was not connected to */
	StringInfoData resp;
	Size		resp_limit;
	TimestampTz started_at;
	dlist_node	node;			/* in a Token's waiters */

	/* T_DELIVERY */
	pg_uuid_t	webhook;
	int64		seq;
	int			attempt;		/* attempts made before this one */
	char	   *body;
	char		msgid[64];
	bool		token_retried;
	char	   *token_used;
	TimestampTz claimed_at;

	/* T_TOKEN */
	pg_uuid_t	auth_id;
	char	   *postfields;
} Transfer;

/* A finished attempt, not yet recorded. */
typedef struct Attempt
{
	pg_uuid_t	webhook;
	int64		seq;
	int			attempt;		/* attempts made, this one included */
	int			status;			/* HTTP status; 0 when none */
	char	   *error;
	double		duration_ms;
	TimestampTz next_at;
	char		outcome;		/* s r f g m, see _webhook_record() */
	TimestampTz at;
} Attempt;

typedef struct Sock
{
	curl_socket_t fd;
	int			what;
} Sock;

static Oid	my_dboid;
static MemoryContext worker_cxt;
static HTAB *webhooks;
static HTAB *tokens;
static int	nactive;
static uint64 loaded_generation;

static CURLM *multi;
static TimestampTz curl_deadline = 0;	/* 0: no timer */
static Sock *socks;
static int	nsocks;
static int	maxsocks;
static int	ntransfers;			/* deliveries started or waiting for a token */

static Attempt *results;
static int	nresults;
static int	maxresults;
static TimestampTz first_result_at;

static bool more_due = true;
static TimestampTz next_due = 0;	/* 0: nothing known */
static TimestampTz next_scan = 0;

/* notify_ext.webhook_denied_networks as last applied, and since when. */
static char *applied_denied_networks = NULL;
static TimestampTz denied_networks_changed_at = 0;

/* ---------------------------------------------------------------------
 * Helpers
 * --------------------------------------------------------------------- */

static char *
cxt_strdup(const char *s)
{
	return s ? MemoryContextStrdup(worker_cxt, s) : NULL;
}

static void
free_str(char **p)
{
	if (*p)
	{
		pfree(*p);
		*p = NULL;
	}
}

static bool
str_eq(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	return strcmp(a, b) == 0;
}

static char *
uuid_text(const pg_uuid_t *u, bool dashes)
{
	static char buf[40];
	char	   *p = buf;
	int			i;

	for (i = 0; i < UUID_LEN; i++)
	{
		if (dashes && (i == 4 || i == 6 || i == 8 || i == 10))
			*p++ = '-';
		sprintf(p, "%02x", u->data[i]);
		p += 2;
	}
	*p = '\0';
	return buf;
}

/*
 * Runs a curl call with every signal blocked, so that threads curl starts
 * (the resolver) never take the server's signals.
 */
#define WITH_SIGNALS_BLOCKED(stmt) \
	do { \
		sigset_t	all_, old_; \
		sigfillset(&all_); \
		pthread_sigmask(SIG_BLOCK, &all_, &old_); \
		stmt; \
		pthread_sigmask(SIG_SETMASK, &old_, NULL); \
	} while (0)

static int
retry_delay_ms(int failures)
{
	double		d;
	uint32		r;

	if (failures < 1 || failures > webhook_nretries)
		return -1;
	d = webhook_retry_delays_ms[failures - 1];
	/* up to 20% of jitter either way */
	r = randombytes_uniform(40001);
	d = d * (0.8 + r / 100000.0);
	return (int) Min(d, (double) INT_MAX);
}

/* ---------------------------------------------------------------------
 * Results
 * --------------------------------------------------------------------- */

static void
add_result(const pg_uuid_t *webhook, int64 seq, int attempt, int status, const char *error,
		   double duration_ms, TimestampTz next_at, char outcome, TimestampTz at)
{
	Attempt	   *r;

	if (nresults == maxresults)
	{
		maxresults = Max(64, maxresults * 2);
		results = results ? repalloc(results, maxresults * sizeof(Attempt))
			: MemoryContextAlloc(worker_cxt, maxresults * sizeof(Attempt));
	}
	if (nresults == 0)
		first_result_at = GetCurrentTimestamp();
	r = &results[nresults++];
	r->webhook = *webhook;
	r->seq = seq;
	r->attempt = attempt;
	r->status = status;
	r->error = NULL;
	if (error != NULL)
	{
		char	   *text = valid_db_text(error, strlen(error), INT_MAX);

		r->error = cxt_strdup(text);
		pfree(text);
	}
	r->duration_ms = duration_ms;
	r->next_at = next_at;
	r->outcome = outcome;
	r->at = at;
}

/* Decides what happens after a failed attempt and records it. */
static void
add_failure(Transfer *t, int status, const char *error, long retry_after_s)
{
	TimestampTz now = GetCurrentTimestamp();
	int			made = t->attempt + 1;
	int			delay = retry_delay_ms(made);
	char		outcome = 'r';
	TimestampTz next_at = 0;

	if (status == 410)
		outcome = 'g';
	else if (delay < 0)
		outcome = 'f';
	else
	{
		if (retry_after_s > 0)
			delay = (int) Min((int64) retry_after_s * 1000, (int64) 24 * 3600 * 1000);
		next_at = now + (int64) delay * 1000;
	}
	add_result(&t->webhook, t->seq, made, status, error,
			   (now - t->started_at) / 1000.0, next_at, outcome, t->started_at);
}

static Datum
array_of(Datum *values, bool *nulls, int n, Oid elemtype)
{
	int16		typlen;
	bool		typbyval;
	char		typalign;
	int			dims[1] = {n};
	int			lbs[1] = {1};

	get_typlenbyvalalign(elemtype, &typlen, &typbyval, &typalign);
	return PointerGetDatum(construct_md_array(values, nulls, 1, dims, lbs, elemtype,
											  typlen, typbyval, typalign));
}

static void
record_results(void)
{
	Oid			argtypes[10] = {UUIDARRAYOID, INT8ARRAYOID, INT4ARRAYOID, INT4ARRAYOID,
		TEXTARRAYOID, FLOAT8ARRAYOID, TIMESTAMPTZARRAYOID, TEXTARRAYOID,
	TIMESTAMPTZARRAYOID, INTERVALOID};
	Datum		args[10];
	Datum	   *v[9];
	bool	   *nl[9];
	int			n = Min(nresults, RESULT_BATCH);
	int			i,
				k;
	Interval   *disable_after;
	int			ret;

	for (k = 0; k < 9; k++)
	{
		v[k] = palloc(n * sizeof(Datum));
		nl[k] = palloc0(n * sizeof(bool));
	}
	for (i = 0; i < n; i++)
	{
		Attempt	   *r = &results[i];
		char		o[2] = {r->outcome, '\0'};

		v[0][i] = UUIDPGetDatum(&r->webhook);
		v[1][i] = Int64GetDatum(r->seq);
		v[2][i] = Int32GetDatum(r->attempt);
		v[3][i] = Int32GetDatum(r->status);
		nl[3][i] = r->status == 0;
		v[4][i] = r->error ? CStringGetTextDatum(r->error) : (Datum) 0;
		nl[4][i] = r->error == NULL;
		v[5][i] = Float8GetDatum(r->duration_ms);
		v[6][i] = TimestampTzGetDatum(r->next_at);
		nl[6][i] = r->next_at == 0;
		v[7][i] = CStringGetTextDatum(o);
		v[8][i] = TimestampTzGetDatum(r->at);
	}
	args[0] = array_of(v[0], nl[0], n, UUIDOID);
	args[1] = array_of(v[1], nl[1], n, INT8OID);
	args[2] = array_of(v[2], nl[2], n, INT4OID);
	args[3] = array_of(v[3], nl[3], n, INT4OID);
	args[4] = array_of(v[4], nl[4], n, TEXTOID);
	args[5] = array_of(v[5], nl[5], n, FLOAT8OID);
	args[6] = array_of(v[6], nl[6], n, TIMESTAMPTZOID);
	args[7] = array_of(v[7], nl[7], n, TEXTOID);
	args[8] = array_of(v[8], nl[8], n, TIMESTAMPTZOID);
	disable_after = palloc0(sizeof(Interval));
	disable_after->time = (int64) webhook_disable_after_s * USECS_PER_SEC;
	args[9] = IntervalPGetDatum(disable_after);

	ret = SPI_execute_with_args("SELECT notify_ext._webhook_record($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
								10, argtypes, args, NULL, false, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "notify_ext webhook worker: recording results failed: %s", SPI_result_code_string(ret));

	for (i = 0; i < n; i++)
	{
		if (results[i].next_at != 0 && (next_due == 0 || results[i].next_at < next_due))
			next_due = results[i].next_at;
		if (results[i].error)
			pfree(results[i].error);
	}
	memmove(results, results + n, (nresults - n) * sizeof(Attempt));
	nresults -= n;
	if (nresults > 0)
		first_result_at = GetCurrentTimestamp();
}

/* ---------------------------------------------------------------------
 * Configuration
 * --------------------------------------------------------------------- */

static char *
spi_text(HeapTuple tup, TupleDesc desc, int col)
{
	bool		isnull;
	Datum		d = SPI_getbinval(tup, desc, col, &isnull);

	return isnull ? NULL : TextDatumGetCString(d);
}

static void
load_config(void)
{
	HASH_SEQ_STATUS hs;
	Webhook    *w;
	Token	   *tk;
	uint64		i;
	int			ret;

	hash_seq_init(&hs, webhooks);
	while ((w = hash_seq_search(&hs)) != NULL)
		w->present = false;
	hash_seq_init(&hs, tokens);
	while ((tk = hash_seq_search(&hs)) != NULL)
		tk->present = false;

	ret = SPI_execute("SELECT id, url, signing_key, auth_config, auth_type, key, secret, scope, token_url "
					  "FROM notify_ext._webhook_config()", true, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "notify_ext webhook worker: reading webhooks failed: %s", SPI_result_code_string(ret));

	nactive = 0;
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		pg_uuid_t  *id = DatumGetUUIDP(SPI_getbinval(tup, desc, 1, &isnull));
		bytea	   *key = DatumGetByteaPP(SPI_getbinval(tup, desc, 3, &isnull));
		Datum		auth = SPI_getbinval(tup, desc, 4, &isnull);
		char	   *auth_type = spi_text(tup, desc, 5);
		char	   *url = spi_text(tup, desc, 2);
		bool		found;

		w = hash_search(webhooks, id, HASH_ENTER, &found);
		if (!found)
		{
			w->inflight = 0;
			w->due = 0;
			w->url = NULL;
			w->user = w->password = NULL;
		}
		w->present = true;
		nactive++;
		if (!str_eq(w->url, url))
		{
			free_str(&w->url);
			w->url = cxt_strdup(url);
		}
		memset(w->signing_key, 0, sizeof(w->signing_key));
		memcpy(w->signing_key, VARDATA_ANY(key), Min(VARSIZE_ANY_EXHDR(key), sizeof(w->signing_key)));
		free_str(&w->user);
		if (w->password)
		{
			sodium_memzero(w->password, strlen(w->password));
			free_str(&w->password);
		}
		w->auth_kind = AUTH_NONE;
		if (!isnull && auth_type != NULL && strcmp(auth_type, "BASIC_AUTH") == 0)
		{
			w->auth_kind = AUTH_BASIC;
			w->user = cxt_strdup(spi_text(tup, desc, 6));
			w->password = cxt_strdup(spi_text(tup, desc, 7));
		}
		else if (!isnull && auth_type != NULL && strcmp(auth_type, "OAUTH_2_CLIENT_CREDENTIALS") == 0)
		{
			char	   *client_id = spi_text(tup, desc, 6);
			char	   *client_secret = spi_text(tup, desc, 7);
			char	   *scope = spi_text(tup, desc, 8);
			char	   *token_url = spi_text(tup, desc, 9);

			w->auth_kind = AUTH_OAUTH;
			w->auth_id = *DatumGetUUIDP(auth);
			tk = hash_search(tokens, &w->auth_id, HASH_ENTER, &found);
			if (!found)
			{
				tk->token_url = tk->scope = tk->client_id = tk->client_secret = NULL;
				tk->token = NULL;
				tk->expires_at = 0;
				tk->fetching = false;
				dlist_init(&tk->waiters);
			}
			tk->present = true;
			if (!str_eq(tk->token_url, token_url) || !str_eq(tk->scope, scope) ||
				!str_eq(tk->client_id, client_id) || !str_eq(tk->client_secret, client_secret))
			{
				free_str(&tk->token_url);
				free_str(&tk->scope);
				free_str(&tk->client_id);
				free_str(&tk->client_secret);
				tk->token_url = cxt_strdup(token_url);
				tk->scope = cxt_strdup(scope);
				tk->client_id = cxt_strdup(client_id);
				tk->client_secret = cxt_strdup(client_secret);
				free_str(&tk->token);
			}
		}
	}

	/* Forget what is gone, unless deliveries still refer to it. */
	hash_seq_init(&hs, webhooks);
	while ((w = hash_seq_search(&hs)) != NULL)
		if (!w->present && w->inflight == 0)
		{
			free_str(&w->url);
			free_str(&w->user);
			free_str(&w->password);
			hash_search(webhooks, &w->id, HASH_REMOVE, NULL);
		}
	hash_seq_init(&hs, tokens);
	while ((tk = hash_seq_search(&hs)) != NULL)
		if (!tk->present && !tk->fetching && dlist_is_empty(&tk->waiters))
		{
			free_str(&tk->token_url);
			free_str(&tk->scope);
			free_str(&tk->client_id);
			free_str(&tk->client_secret);
			free_str(&tk->token);
			hash_search(tokens, &tk->auth_id, HASH_REMOVE, NULL);
		}
}

/* ---------------------------------------------------------------------
 * HTTP
 * --------------------------------------------------------------------- */

static size_t
write_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	Transfer   *t = (Transfer *) userdata;
	size_t		n = size * nmemb;

	if (t->resp.len < (int) t->resp_limit)
	{
		size_t		keep = Min(n, t->resp_limit - t->resp.len);
		MemoryContext old = MemoryContextSwitchTo(worker_cxt);

		appendBinaryStringInfo(&t->resp, ptr, keep);
		MemoryContextSwitchTo(old);
	}
	return n;
}

/*
 * Before each connection, after DNS resolution: refuses a denied address
 * (webhook_policy.c) and notes why, for the transfer's error.  curl then
 * tries the host's other addresses, if any.
 */
static curl_socket_t
open_socket_cb(void *clientp, curlsocktype purpose, struct curl_sockaddr *address)
{
	Transfer   *t = (Transfer *) clientp;
	const char *rule = webhook_address_denied(&address->addr);

	if (rule != NULL)
	{
		char		addr[INET6_ADDRSTRLEN];
		char	   *url = NULL;
		CURLU	   *u;
		char	   *host = NULL;

		webhook_address_text(&address->addr, addr, sizeof(addr));
		curl_easy_getinfo(t->easy, CURLINFO_EFFECTIVE_URL, &url);
		u = curl_url();
		if (u != NULL && url != NULL && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK)
			curl_url_get(u, CURLUPART_HOST, &host, 0);
		if (t->denied[0] == '\0')
			snprintf(t->denied, sizeof(t->denied), "address %s of host %s is denied: it is %s",
					 addr, host ? host : "?", rule);
		curl_free(host);
		curl_url_cleanup(u);
		return CURL_SOCKET_BAD;
	}
	return socket(address->family, address->socktype, address->protocol);
}

/*
 * A connection opened before notify_ext.webhook_denied_networks last
 * changed was checked under the old list: it is not used again.
 */
static void
no_connections_from_before_the_policy(CURL *e)
{
	int64		age_s;

	if (denied_networks_changed_at == 0)
		return;
	age_s = (GetCurrentTimestamp() - denied_networks_changed_at) / USECS_PER_SEC - 1;
	if (age_s < 1)
		curl_easy_setopt(e, CURLOPT_FRESH_CONNECT, 1L);
	else
		curl_easy_setopt(e, CURLOPT_MAXLIFETIME_CONN, (long) Min(age_s, (int64) LONG_MAX));
}

/* Notes when notify_ext.webhook_denied_networks changed (after a reload). */
static void
note_denied_networks(void)
{
	const char *now = webhook_denied_networks ? webhook_denied_networks : "";

	if (applied_denied_networks != NULL && strcmp(applied_denied_networks, now) == 0)
		return;
	if (applied_denied_networks != NULL)
	{
		pfree(applied_denied_networks);
		denied_networks_changed_at = GetCurrentTimestamp();
	}
	applied_denied_networks = MemoryContextStrdup(worker_cxt, now);
}

static CURL *
new_easy(Transfer *t, const char *url)
{
	CURL	   *e = curl_easy_init();

	if (e == NULL)
		elog(ERROR, "notify_ext webhook worker: curl_easy_init failed");
	curl_easy_setopt(e, CURLOPT_URL, url);
	curl_easy_setopt(e, CURLOPT_PRIVATE, t);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
#if LIBCURL_VERSION_NUM >= 0x075500
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
#else
	curl_easy_setopt(e, CURLOPT_PROTOCOLS, (long) (CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long) webhook_timeout_ms);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, t->errbuf);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, t);
	curl_easy_setopt(e, CURLOPT_USERAGENT, USER_AGENT);
	curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
	/* The address check must see the endpoint's address, not a proxy's. */
	curl_easy_setopt(e, CURLOPT_PROXY, "");
	curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, open_socket_cb);
	curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, t);
	no_connections_from_before_the_policy(e);
	t->errbuf[0] = '\0';
	t->denied[0] = '\0';
	return e;
}

static void
add_to_multi(Transfer *t)
{
	CURLMcode	rc;

	t->started_at = GetCurrentTimestamp();
	WITH_SIGNALS_BLOCKED(rc = curl_multi_add_handle(multi, t->easy));
	if (rc != CURLM_OK)
		elog(ERROR, "notify_ext webhook worker: curl_multi_add_handle failed: %s", curl_multi_strerror(rc));
}

/* Releases the transfer's curl handle and request headers. */
static void
release_curl_request(Transfer *t)
{
	if (t->easy)
	{
		WITH_SIGNALS_BLOCKED(curl_multi_remove_handle(multi, t->easy));
		curl_easy_cleanup(t->easy);
		t->easy = NULL;
	}
	if (t->headers)
		curl_slist_free_all(t->headers);
	t->headers = NULL;
}

static void
free_transfer(Transfer *t)
{
	release_curl_request(t);
	if (t->resp.data)
		pfree(t->resp.data);
	t->resp.data = NULL;
	if (t->body)
		pfree(t->body);
	if (t->token_used)
		pfree(t->token_used);
	if (t->postfields)
		pfree(t->postfields);
	pfree(t);
}

static void
reset_for_resend(Transfer *t)
{
	release_curl_request(t);
	resetStringInfo(&t->resp);
	if (t->token_used)
		pfree(t->token_used);
	t->token_used = NULL;
}

/* What went wrong with a failed transfer. */
static const char *
curl_error_text(Transfer *t, CURLcode code)
{
	if (code == CURLE_COULDNT_CONNECT && t->denied[0] != '\0')
		return t->denied;
	return t->errbuf[0] ? t->errbuf : curl_easy_strerror(code);
}

static void finish_delivery(Transfer *t, int status, const char *error, long retry_after_s, bool ok);
static void start_token_fetch(Token *tk);

/* Sends a delivery now (with the bearer token, if any). */
static void
launch_delivery(Transfer *t, Webhook *w, const char *bearer)
{
	char		ts[32];
	char		hdr[512];
	char		sig[WEBHOOK_SIGNATURE_LEN];
	size_t		bodylen = strlen(t->body);
	struct curl_slist *h = NULL;

	snprintf(ts, sizeof(ts), "%lld", (long long) time(NULL));
	webhook_signature(w->signing_key, t->msgid, ts, t->body, bodylen, sig);

	h = curl_slist_append(h, "Content-Type: application/json");
	snprintf(hdr, sizeof(hdr), "webhook-id: %s", t->msgid);
	h = curl_slist_append(h, hdr);
	snprintf(hdr, sizeof(hdr), "webhook-timestamp: %s", ts);
	h = curl_slist_append(h, hdr);
	snprintf(hdr, sizeof(hdr), "webhook-signature: %s", sig);
	h = curl_slist_append(h, hdr);
	h = curl_slist_append(h, "Expect:");
	if (bearer)
	{
		char	   *a = psprintf("Authorization: Bearer %s", bearer);

		h = curl_slist_append(h, a);
		pfree(a);
		t->token_used = MemoryContextStrdup(worker_cxt, bearer);
	}
	t->headers = h;

	t->easy = new_easy(t, w->url);
	curl_easy_setopt(t->easy, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(t->easy, CURLOPT_POST, 1L);
	curl_easy_setopt(t->easy, CURLOPT_POSTFIELDS, t->body);
	curl_easy_setopt(t->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) bodylen);
	if (w->auth_kind == AUTH_BASIC)
	{
		curl_easy_setopt(t->easy, CURLOPT_HTTPAUTH, (long) CURLAUTH_BASIC);
		curl_easy_setopt(t->easy, CURLOPT_USERNAME, w->user ? w->user : "");
		curl_easy_setopt(t->easy, CURLOPT_PASSWORD, w->password ? w->password : "");
	}
	add_to_multi(t);
}

/* Starts a delivery, or parks it until its OAuth2 token arrives. */
static void
start_delivery(Transfer *t)
{
	Webhook    *w = hash_search(webhooks, &t->webhook, HASH_FIND, NULL);
	Token	   *tk;

	if (w == NULL || w->url == NULL)
	{
		finish_delivery(t, 0, "the webhook was deleted", 0, false);
		return;
	}
	if (w->auth_kind != AUTH_OAUTH)
	{
		launch_delivery(t, w, NULL);
		return;
	}
	tk = hash_search(tokens, &w->auth_id, HASH_FIND, NULL);
	if (tk == NULL)
	{
		finish_delivery(t, 0, "the auth config of the webhook is gone", 0, false);
		return;
	}
	if (tk->token != NULL && GetCurrentTimestamp() < tk->expires_at)
	{
		launch_delivery(t, w, tk->token);
		return;
	}
	dlist_push_tail(&tk->waiters, &t->node);
	if (!tk->fetching)
		start_token_fetch(tk);
}

static void
start_token_fetch(Token *tk)
{
	Transfer   *t = MemoryContextAllocZero(worker_cxt, sizeof(Transfer));
	char	   *scope;
	struct curl_slist *h = NULL;

	t->kind = T_TOKEN;
	t->auth_id = tk->auth_id;
	t->resp_limit = TOKEN_BODY_BYTES;
	{
		MemoryContext old_ = MemoryContextSwitchTo(worker_cxt);

		initStringInfo(&t->resp);
		MemoryContextSwitchTo(old_);
	}
	t->easy = new_easy(t, tk->token_url);
	scope = curl_easy_escape(t->easy, tk->scope ? tk->scope : "", 0);
	t->postfields = MemoryContextStrdup(worker_cxt,
										psprintf("grant_type=client_credentials&scope=%s", scope ? scope : ""));
	curl_free(scope);
	h = curl_slist_append(h, "Content-Type: application/x-www-form-urlencoded");
	h = curl_slist_append(h, "Accept: application/json");
	h = curl_slist_append(h, "Expect:");
	t->headers = h;
	curl_easy_setopt(t->easy, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(t->easy, CURLOPT_POST, 1L);
	curl_easy_setopt(t->easy, CURLOPT_POSTFIELDS, t->postfields);
	curl_easy_setopt(t->easy, CURLOPT_HTTPAUTH, (long) CURLAUTH_BASIC);
	curl_easy_setopt(t->easy, CURLOPT_USERNAME, tk->client_id ? tk->client_id : "");
	curl_easy_setopt(t->easy, CURLOPT_PASSWORD, tk->client_secret ? tk->client_secret : "");
	tk->fetching = true;
	add_to_multi(t);
}

/* The top-level fields of a token response we need. */
typedef struct TokenParse
{
	int			depth;
	const char *field;
	char	   *access_token;
	char	   *token_type;
	char	   *expires_in;
} TokenParse;

#if PG_VERSION_NUM >= 160000
#define JSON_CB_RETURN JsonParseErrorType
#define JSON_CB_OK return JSON_SUCCESS
#else
#define JSON_CB_RETURN void
#define JSON_CB_OK return
#endif

static JSON_CB_RETURN
tp_object_start(void *state)
{
	((TokenParse *) state)->depth++;
	JSON_CB_OK;
}

static JSON_CB_RETURN
tp_object_end(void *state)
{
	((TokenParse *) state)->depth--;
	JSON_CB_OK;
}

static JSON_CB_RETURN
tp_field_start(void *state, char *fname, bool isnull)
{
	TokenParse *tp = (TokenParse *) state;

	if (tp->depth == 1)
		tp->field = fname;
	JSON_CB_OK;
}

static JSON_CB_RETURN
tp_scalar(void *state, char *token, JsonTokenType tokentype)
{
	TokenParse *tp = (TokenParse *) state;

	if (tp->depth == 1 && tp->field != NULL)
	{
		if (strcmp(tp->field, "access_token") == 0 && tokentype == JSON_TOKEN_STRING)
			tp->access_token = token;
		else if (strcmp(tp->field, "token_type") == 0 && tokentype == JSON_TOKEN_STRING)
			tp->token_type = token;
		else if (strcmp(tp->field, "expires_in") == 0 &&
				 (tokentype == JSON_TOKEN_NUMBER || tokentype == JSON_TOKEN_STRING))
			tp->expires_in = token;
	}
	tp->field = NULL;
	JSON_CB_OK;
}

static void
finish_token(Transfer *t, CURLcode code)
{
	Token	   *tk = hash_search(tokens, &t->auth_id, HASH_FIND, NULL);
	long		status = 0;
	char	   *error = NULL;
	dlist_mutable_iter it;

	if (tk == NULL)
		return;
	tk->fetching = false;
	curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status);
	if (code != CURLE_OK)
		error = psprintf("token request to %s failed: %s", tk->token_url,
						 code == CURLE_OPERATION_TIMEDOUT
						 ? psprintf("timed out after %d ms", webhook_timeout_ms)
						 : curl_error_text(t, code));
	else if (status < 200 || status > 299)
		error = psprintf("token request to %s failed: HTTP %ld: %s", tk->token_url, status,
						 valid_db_text(t->resp.data, t->resp.len, ERROR_BODY_BYTES));
	else
	{
		TokenParse	tp;
		JsonSemAction sem;
		JsonLexContext *lex;
		JsonParseErrorType jerr;

		memset(&tp, 0, sizeof(tp));
		memset(&sem, 0, sizeof(sem));
		sem.semstate = &tp;
		sem.object_start = tp_object_start;
		sem.object_end = tp_object_end;
		sem.object_field_start = tp_field_start;
		sem.scalar = tp_scalar;
		lex = makeJsonLexContextCstringLen(t->resp.data, t->resp.len, PG_UTF8, true);
		jerr = pg_parse_json(lex, &sem);
		if (jerr != JSON_SUCCESS || tp.access_token == NULL || tp.access_token[0] == '\0')
			error = psprintf("token request to %s failed: the answer has no access_token", tk->token_url);
		else if (tp.token_type != NULL && pg_strcasecmp(tp.token_type, "bearer") != 0)
			error = psprintf("token request to %s failed: token_type \"%s\" is not bearer",
							 tk->token_url, tp.token_type);
		else
		{
			double		expires = tp.expires_in ? strtod(tp.expires_in, NULL) : 3600;
			double		margin;

			if (!(expires > 0))
				expires = 3600;
			/* Stop using it shortly before it expires. */
			margin = Min(60.0, expires / 10.0);
			free_str(&tk->token);
			tk->token = MemoryContextStrdup(worker_cxt, tp.access_token);
			tk->expires_at = GetCurrentTimestamp() + (int64) ((expires - margin) * USECS_PER_SEC);
		}
	}

	dlist_foreach_modify(it, &tk->waiters)
	{
		Transfer   *d = dlist_container(Transfer, node, it.cur);
		Webhook    *w = hash_search(webhooks, &d->webhook, HASH_FIND, NULL);

		dlist_delete(it.cur);
		if (error != NULL || w == NULL || w->url == NULL)
		{
			d->started_at = GetCurrentTimestamp();
			finish_delivery(d, 0, error ? error : "the webhook was deleted", 0, false);
		}
		else
			launch_delivery(d, w, tk->token);
	}
}

/* A delivery is over: record it and free it. */
static void
finish_delivery(Transfer *t, int status, const char *error, long retry_after_s, bool ok)
{
	Webhook    *w = hash_search(webhooks, &t->webhook, HASH_FIND, NULL);

	if (ok)
	{
		TimestampTz now = GetCurrentTimestamp();

		add_result(&t->webhook, t->seq, t->attempt + 1, status, NULL,
				   (now - t->started_at) / 1000.0, 0, 's', t->started_at);
	}
	else
		add_failure(t, status, error, retry_after_s);
	if (w != NULL)
	{
		w->inflight--;
		if (!w->present && w->inflight == 0)
		{
			free_str(&w->url);
			free_str(&w->user);
			free_str(&w->password);
			hash_search(webhooks, &t->webhook, HASH_REMOVE, NULL);
		}
	}
	ntransfers--;
	more_due = true;
	free_transfer(t);
}

static void
delivery_done(Transfer *t, CURLcode code)
{
	long		status = 0;
	curl_off_t	retry_after = 0;
	char	   *error = NULL;

	curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status);
	if (code != CURLE_OK)
	{
		if (code == CURLE_OPERATION_TIMEDOUT)
			error = psprintf("timed out after %d ms", webhook_timeout_ms);
		else
			error = pstrdup(curl_error_text(t, code));
		finish_delivery(t, 0, error, 0, false);
		return;
	}
	if (status >= 200 && status <= 299)
	{
		finish_delivery(t, (int) status, NULL, 0, true);
		return;
	}
	if (status == 401 && t->token_used != NULL && !t->token_retried)
	{
		Webhook    *w = hash_search(webhooks, &t->webhook, HASH_FIND, NULL);
		Token	   *tk = w ? hash_search(tokens, &w->auth_id, HASH_FIND, NULL) : NULL;

		/* The token was refused: fetch a new one and send once more. */
		if (tk != NULL && tk->token != NULL && strcmp(tk->token, t->token_used) == 0)
			free_str(&tk->token);
		t->token_retried = true;
		reset_for_resend(t);
		start_delivery(t);
		return;
	}
#if LIBCURL_VERSION_NUM >= 0x074200
	curl_easy_getinfo(t->easy, CURLINFO_RETRY_AFTER, &retry_after);
#endif
	if (t->resp.len > 0)
		error = psprintf("HTTP %ld: %s", status, valid_db_text(t->resp.data, t->resp.len, ERROR_BODY_BYTES));
	else
		error = psprintf("HTTP %ld", status);
	finish_delivery(t, (int) status, error, (long) retry_after, false);
}

static void
check_completions(void)
{
	CURLMsg    *msg;
	int			left;

	while ((msg = curl_multi_info_read(multi, &left)) != NULL)
	{
		Transfer   *t;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **) &t);
		if (t->kind == T_TOKEN)
		{
			finish_token(t, msg->data.result);
			free_transfer(t);
		}
		else
			delivery_done(t, msg->data.result);
	}
}

static int
socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
	int			i;

	for (i = 0; i < nsocks; i++)
		if (socks[i].fd == fd)
			break;
	if (what == CURL_POLL_REMOVE)
	{
		if (i < nsocks)
			socks[i] = socks[--nsocks];
		return 0;
	}
	if (i == nsocks)
	{
		if (nsocks == maxsocks)
		{
			maxsocks *= 2;
			socks = repalloc(socks, maxsocks * sizeof(Sock));
		}
		nsocks++;
	}
	socks[i].fd = fd;
	socks[i].what = what;
	return 0;
}

static int
timer_cb(CURLM *m, long timeout_ms, void *userp)
{
	curl_deadline = timeout_ms < 0 ? 0 : GetCurrentTimestamp() + (int64) timeout_ms * 1000;
	return 0;
}

static void
socket_action(curl_socket_t fd, int flags)
{
	int			running;

	WITH_SIGNALS_BLOCKED(curl_multi_socket_action(multi, fd, flags, &running));
}

static void
apply_curl_limits(void)
{
	curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, (long) Max(webhook_concurrency, 16));
	/*
	 * No limit per host in curl: the claim limits each webhook, and a
	 * limit per host would let a webhook whose endpoint hangs hold up
	 * another one on the same host.
	 */
}

/* ---------------------------------------------------------------------
 * Database work
 * --------------------------------------------------------------------- */

static void
enqueue_events(int64 horizon, bool *queued, bool *behind)
{
	Oid			argtypes[2] = {INT8OID, INT8OID};
	Datum		args[2] = {Int64GetDatum(horizon), Int64GetDatum(ENQUEUE_CHUNK)};
	int			ret;
	bool		isnull;

	*queued = *behind = false;
	ret = SPI_execute_with_args("SELECT queued, behind FROM notify_ext._webhook_enqueue($1, $2)",
								2, argtypes, args, NULL, false, 0);
	if (ret != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "notify_ext webhook worker: queueing events failed: %s", SPI_result_code_string(ret));
	*queued = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)) > 0;
	*behind = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
}

typedef struct Claimed
{
	pg_uuid_t	webhook;
	int64		seq;
	int			attempt;
	char	   *message;
} Claimed;

/*
 * Counts the due deliveries (not in flight) of each webhook, up to
 * webhook_endpoint_concurrency, the most one webhook can start at once.
 */
static void
count_due(void)
{
	HASH_SEQ_STATUS hs;
	Webhook    *w;
	Datum	   *ids = palloc(Max(hash_get_num_entries(webhooks), 1) * sizeof(Datum));
	int			n = 0;
	Oid			argtypes[2] = {UUIDARRAYOID, INT4OID};
	Datum		args[2];
	int			ret;
	uint64		i;

	hash_seq_init(&hs, webhooks);
	while ((w = hash_seq_search(&hs)) != NULL)
	{
		w->due = 0;
		if (w->present)
			ids[n++] = UUIDPGetDatum(&w->id);
	}
	if (n == 0)
		return;
	args[0] = array_of(ids, NULL, n, UUIDOID);
	args[1] = Int32GetDatum(webhook_endpoint_concurrency);
	ret = SPI_execute_with_args("SELECT webhook, due FROM notify_ext._webhook_due($1, $2)",
								2, argtypes, args, NULL, false, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "notify_ext webhook worker: counting due deliveries failed: %s", SPI_result_code_string(ret));
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		bool		isnull;

		w = hash_search(webhooks, DatumGetUUIDP(SPI_getbinval(tup, SPI_tuptable->tupdesc, 1, &isnull)),
						HASH_FIND, NULL);
		if (w != NULL)
			w->due = DatumGetInt32(SPI_getbinval(tup, SPI_tuptable->tupdesc, 2, &isnull));
	}
}

/* How many deliveries of one webhook to claim now. */
typedef struct Allotment
{
	Webhook    *w;
	int			room;			/* the most it may start now */
	int			given;
} Allotment;

static int
fewest_in_flight_first(const void *a, const void *b)
{
	int			x = ((const Allotment *) a)->w->inflight;
	int			y = ((const Allotment *) b)->w->inflight;

	return (x > y) - (x < y);
}

/*
 * Hands out the free delivery slots to the webhooks with due deliveries
 * (docs/webhooks.md, "Fair share"), into out; returns how many entries.
 *
 * A webhook may hold at most webhook_endpoint_concurrency transfers and,
 * while another webhook has deliveries waiting too, at most its share:
 *     max(1, webhook_concurrency / webhooks with deliveries due or in flight).
 * One slot stays free for each webhook that has nothing due or in flight
 * (for at most half of the slots), so that a webhook that gets work finds
 * a slot at once even while the others hold theirs on endpoints that hang.
 * The free slots go one at a time to each webhook in turn, starting with
 * those that have the fewest in flight.
 */
static int
allot_slots(Allotment *out)
{
	HASH_SEQ_STATUS hs;
	Webhook    *w;
	int			waiting = 0;
	int			working = 0;
	int			idle = 0;
	int			share;
	int			free_slots;
	int			n = 0;
	int			i;
	bool		gave;

	hash_seq_init(&hs, webhooks);
	while ((w = hash_seq_search(&hs)) != NULL)
	{
		if (!w->present)
			continue;
		if (w->due > 0)
			waiting++;
		if (w->due > 0 || w->inflight > 0)
			working++;
		else
			idle++;
	}
	share = Max(1, webhook_concurrency / Max(working, 1));
	free_slots = webhook_concurrency - ntransfers - Min(idle, webhook_concurrency / 2);

	hash_seq_init(&hs, webhooks);
	while ((w = hash_seq_search(&hs)) != NULL)
	{
		int			cap = webhook_endpoint_concurrency;

		if (!w->present || w->due == 0)
			continue;
		if (waiting > 1)
			cap = Min(cap, share);
		if (cap <= w->inflight)
			continue;
		out[n].w = w;
		out[n].room = Min(cap - w->inflight, w->due);
		out[n].given = 0;
		n++;
	}
	qsort(out, n, sizeof(Allotment), fewest_in_flight_first);
	do
	{
		gave = false;
		for (i = 0; i < n && free_slots > 0; i++)
			if (out[i].given < out[i].room)
			{
				out[i].given++;
				free_slots--;
				gave = true;
			}
	} while (gave && free_slots > 0);
	return n;
}

/*
 * Claims the due deliveries that allot_slots() gives slots to; returns them
 * (in worker_cxt).  Each webhook gets no more than it has due, so what is
 * left waits for a slot, and a finished delivery (which sets more_due)
 * starts the next claim.
 */
static Claimed *
claim_due(int *nclaimed)
{
	Allotment  *allot;
	Datum	   *ids;
	Datum	   *limits;
	int			nallot;
	int			n = 0;
	int			j;
	Oid			argtypes[2] = {UUIDARRAYOID, INT4ARRAYOID};
	Datum		args[2];
	int			ret;
	uint64		i;
	Claimed    *out;

	*nclaimed = 0;
	more_due = false;
	if (nactive == 0 || ntransfers >= webhook_concurrency)
		return NULL;
	count_due();
	allot = palloc(Max(hash_get_num_entries(webhooks), 1) * sizeof(Allotment));
	nallot = allot_slots(allot);
	ids = palloc(Max(nallot, 1) * sizeof(Datum));
	limits = palloc(Max(nallot, 1) * sizeof(Datum));
	for (j = 0; j < nallot; j++)
		if (allot[j].given > 0)
		{
			ids[n] = UUIDPGetDatum(&allot[j].w->id);
			limits[n] = Int32GetDatum(allot[j].given);
			n++;
		}
	if (n == 0)
		return NULL;
	args[0] = array_of(ids, NULL, n, UUIDOID);
	args[1] = array_of(limits, NULL, n, INT4OID);
	ret = SPI_execute_with_args("SELECT webhook, seq, attempt, message FROM notify_ext._webhook_claim($1, $2)",
								2, argtypes, args, NULL, false, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "notify_ext webhook worker: claiming deliveries failed: %s", SPI_result_code_string(ret));

	out = MemoryContextAlloc(worker_cxt, Max(SPI_processed, 1) * sizeof(Claimed));
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		Claimed    *c = &out[i];
		char	   *msg;

		c->webhook = *DatumGetUUIDP(SPI_getbinval(tup, desc, 1, &isnull));
		c->seq = DatumGetInt64(SPI_getbinval(tup, desc, 2, &isnull));
		c->attempt = DatumGetInt32(SPI_getbinval(tup, desc, 3, &isnull));
		msg = spi_text(tup, desc, 4);
		c->message = msg ? MemoryContextStrdup(worker_cxt, msg) : NULL;
	}
	*nclaimed = (int) SPI_processed;
	return out;
}

static void
read_next_due(void)
{
	bool		isnull;
	Datum		d;
	int			ret;

	ret = SPI_execute("SELECT notify_ext._webhook_next_due()", false, 0);
	if (ret != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "notify_ext webhook worker: reading the next due delivery failed");
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	next_due = isnull ? 0 : DatumGetTimestampTz(d);
}

static void
start_claimed(Claimed *claimed, int n)
{
	int			i;

	for (i = 0; i < n; i++)
	{
		Claimed    *c = &claimed[i];
		Webhook    *w = hash_search(webhooks, &c->webhook, HASH_FIND, NULL);
		Transfer   *t;

		if (c->message == NULL)
		{
			TimestampTz now = GetCurrentTimestamp();

			add_result(&c->webhook, c->seq, c->attempt, 0,
					   "the event is no longer retained", 0, 0, 'm', now);
			/* Its slot is still free: claim again. */
			more_due = true;
			continue;
		}
		t = MemoryContextAllocZero(worker_cxt, sizeof(Transfer));
		t->kind = T_DELIVERY;
		t->webhook = c->webhook;
		t->seq = c->seq;
		t->attempt = c->attempt;
		t->body = c->message;
		t->resp_limit = ERROR_BODY_BYTES;
		{
		MemoryContext old_ = MemoryContextSwitchTo(worker_cxt);

		initStringInfo(&t->resp);
		MemoryContextSwitchTo(old_);
	}
		t->started_at = GetCurrentTimestamp();
		snprintf(t->msgid, sizeof(t->msgid), "msg_%s_" INT64_FORMAT, uuid_text(&c->webhook, false), c->seq);
		ntransfers++;
		if (w != NULL)
			w->inflight++;
		start_delivery(t);
	}
	if (claimed)
		pfree(claimed);
}

/* Leaves when there is nothing to do, unless webhooks just changed. */
static void
exit_if_idle(void)
{
	if (nactive > 0 || ntransfers > 0 || nresults > 0)
		return;
	if (db_worker_detach_if(loaded_generation))
	{
		elog(DEBUG1, "notify_ext webhook worker: no active webhooks in database %u, exiting", my_dboid);
		proc_exit(0);
	}
}

void
notify_ext_webhook_worker_main(Datum main_arg)
{
	bool		first = true;
	bool		scan_pending = true;

	my_dboid = DatumGetObjectId(main_arg);
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	/* One worker per database. */
	if (!db_worker_attach(DB_WORKER_WEBHOOKS, my_dboid, &loaded_generation))
		proc_exit(0);

	worker_connect(my_dboid, InvalidOid);
	pgstat_report_appname("notify_ext webhook worker");

	/* Losing a commit of this worker only means doing the work again. */
	SetConfigOption("synchronous_commit", "off", PGC_SUSET, PGC_S_OVERRIDE);

	worker_cxt = AllocSetContextCreate(TopMemoryContext, "notify_ext webhooks", ALLOCSET_DEFAULT_SIZES);
	{
		HASHCTL		ctl;

		memset(&ctl, 0, sizeof(ctl));
		ctl.keysize = sizeof(pg_uuid_t);
		ctl.entrysize = sizeof(Webhook);
		ctl.hcxt = worker_cxt;
		webhooks = hash_create("notify_ext webhooks", 64, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
		ctl.entrysize = sizeof(Token);
		tokens = hash_create("notify_ext webhook tokens", 16, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	maxsocks = 64;
	socks = MemoryContextAlloc(worker_cxt, maxsocks * sizeof(Sock));

	if (sodium_init() < 0)
		elog(ERROR, "notify_ext webhook worker: could not initialize libsodium");
	if (curl_global_init(CURL_GLOBAL_ALL) != CURLE_OK)
		elog(ERROR, "notify_ext webhook worker: could not initialize libcurl");
	multi = curl_multi_init();
	if (multi == NULL)
		elog(ERROR, "notify_ext webhook worker: curl_multi_init failed");
	curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
	curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, timer_cb);
	apply_curl_limits();
	note_denied_networks();

	/* Nothing to do in a database without notify_ext (or an old version). */
	db_worker_leave_unless_installed("_webhook_due", loaded_generation);

	for (;;)
	{
		TimestampTz now;
		uint64		gen;
		bool		reload;
		bool		scan;
		bool		flush;
		bool		claim;
		Claimed    *claimed = NULL;
		int			nclaimed = 0;
		long		timeout;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			apply_curl_limits();
			note_denied_networks();
		}

		gen = db_worker_generation();

		now = GetCurrentTimestamp();
		reload = first || gen != loaded_generation;
		scan = scan_pending || reload || now >= next_scan;
		flush = nresults > 0 &&
			(nresults >= 256 || ntransfers == 0 || now - first_result_at >= 5000);
		claim = ntransfers < webhook_concurrency &&
			(more_due || reload || scan || (next_due != 0 && now >= next_due));

		if (reload || scan || flush || claim)
		{
			int64		horizon = 0;
			bool		queued = false;
			bool		behind = false;

			SetCurrentStatementStartTimestamp();
			StartTransactionCommand();
			/* The committed horizon, before the snapshot that reads events. */
			if (scan)
				horizon = ordering_committed_seq();
			SPI_connect();
			PushActiveSnapshot(GetTransactionSnapshot());
			pgstat_report_activity(STATE_RUNNING, "notify_ext webhook worker");
			if (first)
			{
				int			ret = SPI_execute("SELECT notify_ext._webhook_worker_start()", false, 0);

				if (ret != SPI_OK_SELECT)
					elog(ERROR, "notify_ext webhook worker: start failed");
			}
			if (nresults > 0)
				record_results();
			if (reload)
			{
				loaded_generation = gen;
				load_config();
			}
			if (scan)
			{
				enqueue_events(horizon, &queued, &behind);
				scan_pending = behind;
				next_scan = now + (int64) SAFETY_SCAN_MS * 1000;
				if (queued)
					claim = true;
			}
			if (claim && ntransfers < webhook_concurrency)
			{
				claimed = claim_due(&nclaimed);
				read_next_due();
			}
			SPI_finish();
			PopActiveSnapshot();
			CommitTransactionCommand();
			pgstat_report_activity(STATE_IDLE, NULL);
			first = false;

			if (claimed != NULL)
				start_claimed(claimed, nclaimed);
			else if (nactive == 0)
				exit_if_idle();
		}

		/* Kick curl for what was just added, and for its expired timer. */
		if (curl_deadline != 0 && GetCurrentTimestamp() >= curl_deadline)
		{
			curl_deadline = 0;
			socket_action(CURL_SOCKET_TIMEOUT, 0);
			check_completions();
		}

		/* How long to sleep. */
		now = GetCurrentTimestamp();
		timeout = SAFETY_SCAN_MS;
		if (next_scan > now)
			timeout = Min(timeout, (next_scan - now) / 1000 + 1);
		else
			timeout = 0;
		if (scan_pending)
			timeout = 0;
		if (curl_deadline != 0)
			timeout = Min(timeout, curl_deadline > now ? (curl_deadline - now) / 1000 + 1 : 0);
		if (next_due != 0 && ntransfers < webhook_concurrency)
			timeout = Min(timeout, next_due > now ? (next_due - now) / 1000 + 1 : 0);
		if (more_due && ntransfers < webhook_concurrency)
			timeout = 0;
		if (nresults > 0)
			timeout = Min(timeout, ntransfers == 0 ? 0 : 5);

		{
			WaitEventSet *set;
			WaitEvent  *occurred;
			int			nevents;
			int			i;
			int			n;

			set = CreateWaitEventSet(CurrentMemoryContext, nsocks + 2);
			AddWaitEventToSet(set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
			AddWaitEventToSet(set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
			for (i = 0; i < nsocks; i++)
			{
				uint32		ev = 0;

				if (socks[i].what & CURL_POLL_IN)
					ev |= WL_SOCKET_READABLE;
				if (socks[i].what & CURL_POLL_OUT)
					ev |= WL_SOCKET_WRITEABLE;
				if (ev)
					AddWaitEventToSet(set, ev, socks[i].fd, NULL, NULL);
			}
			nevents = nsocks + 2;
			occurred = palloc(nevents * sizeof(WaitEvent));
			n = WaitEventSetWait(set, timeout, occurred, nevents, PG_WAIT_EXTENSION);
			FreeWaitEventSet(set);

			for (i = 0; i < n; i++)
			{
				WaitEvent  *e = &occurred[i];

				if (e->events & WL_LATCH_SET)
				{
					ResetLatch(MyLatch);
					scan_pending = true;
				}
				else if (e->events & (WL_SOCKET_READABLE | WL_SOCKET_WRITEABLE))
				{
					int			flags = 0;

					if (e->events & WL_SOCKET_READABLE)
						flags |= CURL_CSELECT_IN;
					if (e->events & WL_SOCKET_WRITEABLE)
						flags |= CURL_CSELECT_OUT;
					socket_action(e->fd, flags);
				}
			}
			pfree(occurred);
			if (curl_deadline != 0 && GetCurrentTimestamp() >= curl_deadline)
			{
				curl_deadline = 0;
				socket_action(CURL_SOCKET_TIMEOUT, 0);
			}
			check_completions();
		}
	}
}
