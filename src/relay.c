/*
 * relay.c: what the SQL of relays asks of C outside the relay worker:
 * telling the launcher (launcher.c) that relays changed, whether relay
 * workers can run, and the checks of server URLs and names.
 */
#include "postgres.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include "fmgr.h"
#include "utils/builtins.h"

#include "launcher.h"
#include "relay.h"
#include "webhook_policy.h"

PG_FUNCTION_INFO_V1(notify_ext_relays_changed);
Datum
notify_ext_relays_changed(PG_FUNCTION_ARGS)
{
	db_workers_changed(DB_WORKER_RELAYS);
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(notify_ext_relay_worker_available);
Datum
notify_ext_relay_worker_available(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(launcher_available());
}

/* ---------------------------------------------------------------------
 * Checks of a relay's configuration
 * --------------------------------------------------------------------- */

/*
 * The URL with what comes before an '@' (a user name, password or token)
 * replaced by "***", for messages: they go to the server log.
 */
static char *
server_for_message(const char *url)
{
	const char *at = strrchr(url, '@');
	const char *start = strstr(url, "://");

	if (at == NULL)
		return pstrdup(url);
	start = (start != NULL && start < at) ? start + 3 : url;
	return psprintf("%.*s***%s", (int) (start - url), url, at);
}

static void
bad_server(const char *url, const char *why)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("server URL \"%s\" is not valid for a relay: %s", server_for_message(url), why),
			 errhint("Give nats://host:port, or tls://host:port for TLS; user names, passwords and "
					 "tokens belong in the auth argument.")));
}

/*
 * notify_ext._relay_check_server(url text) returns text: the URL as
 * scheme://host:port, or 22023.
 */
PG_FUNCTION_INFO_V1(notify_ext_relay_check_server);
Datum
notify_ext_relay_check_server(PG_FUNCTION_ARGS)
{
	char	   *url;
	const char *p;
	const char *scheme = "nats";
	char	   *host;
	const char *host_end;
	long		port = 4222;
	bool		v6 = false;
	unsigned char addr[sizeof(struct in6_addr)];
	const char *denied = NULL;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("server URL must not be NULL")));
	url = text_to_cstring(PG_GETARG_TEXT_PP(0));
	p = url;
	for (const char *c = url; *c; c++)
		if ((unsigned char) *c <= ' ' || *c == 0x7f)
			bad_server(url, "it contains whitespace or control characters");
	if (strchr(url, '@') != NULL)
		bad_server(url, "it contains a user name or password");
	if (pg_strncasecmp(p, "nats://", 7) == 0)
		p += 7;
	else if (pg_strncasecmp(p, "tls://", 6) == 0)
	{
		scheme = "tls";
		p += 6;
	}
	else if (strstr(p, "://") != NULL)
		bad_server(url, "its scheme is not nats:// or tls://");
	if (*p == '[')
	{
		host_end = strchr(p, ']');
		if (host_end == NULL)
			bad_server(url, "an IPv6 address must end with ]");
		host = pnstrdup(p + 1, host_end - p - 1);
		host_end++;
		v6 = true;
	}
	else
	{
		host_end = p + strcspn(p, ":/?#");
		host = pnstrdup(p, host_end - p);
	}
	if (host[0] == '\0')
		bad_server(url, "it has no host");
	for (const char *c = host; *c && !v6; c++)
		if (!(isalnum((unsigned char) *c) || *c == '-' || *c == '.' || *c == '_'))
			bad_server(url, "its host is not a host name or an address");
	p = host_end;
	if (*p == ':')
	{
		char	   *end;

		errno = 0;
		port = strtol(p + 1, &end, 10);
		if (end == p + 1 || errno != 0 || port < 1 || port > 65535)
			bad_server(url, "its port is not a number from 1 to 65535");
		p = end;
	}
	if (*p == '/')
		p++;
	if (*p != '\0')
		bad_server(url, "it has a path, query or fragment");

	/* Addresses that webhooks may not reach are closed to relays too. */
	if (v6 && inet_pton(AF_INET6, host, addr) == 1)
	{
		struct sockaddr_in6 sa;

		memset(&sa, 0, sizeof(sa));
		sa.sin6_family = AF_INET6;
		memcpy(&sa.sin6_addr, addr, sizeof(sa.sin6_addr));
		denied = webhook_address_denied((struct sockaddr *) &sa);
	}
	else if (v6)
		bad_server(url, "the host in [] is not an IPv6 address");
	else if (inet_pton(AF_INET, host, addr) == 1)
	{
		struct sockaddr_in sa;

		memset(&sa, 0, sizeof(sa));
		sa.sin_family = AF_INET;
		memcpy(&sa.sin_addr, addr, sizeof(sa.sin_addr));
		denied = webhook_address_denied((struct sockaddr *) &sa);
	}
	else if (pg_strcasecmp(host, "metadata.google.internal") == 0)
		denied = "a cloud metadata address";
	if (denied != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("server URL \"%s\" is not allowed: its address is %s", url, denied),
				 errhint("notify_ext.webhook_denied_networks lists the networks closed to webhooks and relays.")));

	PG_RETURN_TEXT_P(cstring_to_text(psprintf(v6 ? "%s://[%s]:%ld" : "%s://%s:%ld",
											  scheme, host, port)));
}

/*
 * notify_ext._relay_check_name(value text, is_stream boolean): 22023
 * unless value is a stream name (is_stream) or a subject prefix.
 */
PG_FUNCTION_INFO_V1(notify_ext_relay_check_name);
Datum
notify_ext_relay_check_name(PG_FUNCTION_ARGS)
{
	char	   *v = text_to_cstring(PG_GETARG_TEXT_PP(0));
	bool		is_stream = PG_GETARG_BOOL(1);
	const char *what = is_stream ? "stream name" : "subject prefix";
	const char *why = NULL;
	size_t		len = strlen(v);

	if (len == 0)
		why = "it is empty";
	else if (len > (is_stream ? 255 : 200))
		why = is_stream ? "it is longer than 255 bytes" : "it is longer than 200 bytes";
	for (const char *c = v; *c && why == NULL; c++)
	{
		unsigned char ch = (unsigned char) *c;

		if (ch <= ' ' || ch == 0x7f)
			why = "it contains whitespace or control characters";
		else if (*c == '*' || *c == '>')
			why = "it contains the wildcard characters * or >";
		else if (is_stream && (*c == '.' || *c == '/' || *c == '\\'))
			why = "it contains ., / or \\";
		else if (!is_stream && *c == '.' && (c == v || c[1] == '\0' || c[1] == '.'))
			why = "it has an empty token";
	}
	if (why == NULL && !is_stream && v[0] == '$')
		why = "subjects starting with $ are NATS's own";
	if (why != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s \"%s\" is not valid: %s", what, v, why),
				 is_stream
				 ? errhint("JetStream stream names are letters, digits, - and _, such as NOTIFY_EVENTS.")
				 : errhint("A subject prefix is one or more tokens separated by dots, such as notify or app.events.")));
	PG_RETURN_VOID();
}
