/*
 * webhook_policy.c: which webhook URLs and addresses are allowed (contract
 * §8, docs/webhooks.md "URL policy").
 *
 * A webhook URL, and the token_url of an OAuth2 auth config, is http or
 * https with a host, a port from 1 to 65535 if one is given, and no user
 * name or password (those belong in an auth config).  Its address must not
 * be denied: link-local and cloud metadata addresses always are, and
 * notify_ext.webhook_denied_networks adds networks.
 *
 * URLs are parsed with libcurl's URL API, the parser the worker's requests
 * go through, so that both read a URL the same way.  At creation, an
 * address written in the URL is checked in whatever form the resolver
 * accepts (curl turns 2852039166, 0xA9FEA9FE or 0251.0376.0251.0376 into
 * 169.254.169.254); a host name is checked by the worker, on every address
 * it resolves to, before connecting (webhook_worker.c), so a name that
 * resolves to a denied address later still cannot be reached.
 * webhook_address_denied() makes the decision in both places.
 */
#include "postgres.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>

#include <curl/curl.h>

#include "fmgr.h"
#include "funcapi.h"
#include "access/htup_details.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/guc.h"

#include "settings.h"
#include "webhook_policy.h"


typedef struct Network
{
	int			family;			/* AF_INET or AF_INET6 */
	int			prefix;			/* leading bits that must match */
	unsigned char addr[16];		/* 4 bytes for AF_INET */
	char		label[96];		/* how messages name it */
} Network;

/* Denied whatever the configuration says. */
static const struct
{
	const char *cidr;
	const char *label;
}			builtin_denied[] =
{
	{"169.254.0.0/16", "in 169.254.0.0/16 (link-local)"},
	{"fe80::/10", "in fe80::/10 (link-local)"},
	{"fd00:ec2::254/128", "a cloud metadata address"},
};

#define N_BUILTIN lengthof(builtin_denied)

/* Host names of cloud metadata services, denied at creation. */
static const char *const denied_hosts[] = {"metadata.google.internal"};

static Network builtin_networks[N_BUILTIN];

/* The parsed notify_ext.webhook_denied_networks (the GUC's extra). */
typedef struct DeniedNetworks
{
	int			n;
	Network		nets[FLEXIBLE_ARRAY_MEMBER];
} DeniedNetworks;

static const DeniedNetworks *configured = NULL;

#define URL_HINT "Webhooks are POSTed to an absolute http:// or https:// URL, such as https://example.com/hooks."
#define DENIED_HINT "Link-local and cloud metadata addresses are refused, and so are the networks in " \
	"notify_ext.webhook_denied_networks; use an address outside them."

/* ---------------------------------------------------------------------
 * Networks
 * --------------------------------------------------------------------- */

typedef enum NetworkError
{
	NET_OK,
	NET_SYNTAX,
	NET_PREFIX,
	NET_HOST_BITS
} NetworkError;

static int
family_bits(int family)
{
	return family == AF_INET ? 32 : 128;
}

/* Parses "address[/prefix]"; without a prefix, the one address. */
static NetworkError
parse_network(const char *text, Network *net)
{
	char		addr[INET6_ADDRSTRLEN + 1];
	const char *slash = strchr(text, '/');
	size_t		len = slash ? (size_t) (slash - text) : strlen(text);
	int			bits;
	int			i;

	memset(net, 0, sizeof(Network));
	if (len == 0 || len >= sizeof(addr))
		return NET_SYNTAX;
	memcpy(addr, text, len);
	addr[len] = '\0';
	if (inet_pton(AF_INET, addr, net->addr) == 1)
		net->family = AF_INET;
	else if (inet_pton(AF_INET6, addr, net->addr) == 1)
		net->family = AF_INET6;
	else
		return NET_SYNTAX;
	bits = family_bits(net->family);
	net->prefix = bits;
	if (slash)
	{
		const char *p = slash + 1;
		int			prefix = 0;

		if (*p == '\0')
			return NET_PREFIX;
		for (; *p; p++)
		{
			if (!isdigit((unsigned char) *p))
				return NET_SYNTAX;
			if (prefix > bits)
				return NET_PREFIX;
			prefix = prefix * 10 + (*p - '0');
		}
		if (prefix > bits)
			return NET_PREFIX;
		net->prefix = prefix;
	}
	for (i = net->prefix; i < bits; i++)
		if (net->addr[i / 8] & (0x80 >> (i % 8)))
			return NET_HOST_BITS;
	return NET_OK;
}

/* "addr/prefix" of a network. */
static void
network_text(const Network *net, char *buf, size_t len)
{
	char		addr[INET6_ADDRSTRLEN];

	inet_ntop(net->family, net->addr, addr, sizeof(addr));
	snprintf(buf, len, "%s/%d", addr, net->prefix);
}

static bool
network_contains(const Network *net, int family, const unsigned char *addr)
{
	int			whole = net->prefix / 8;
	int			rest = net->prefix % 8;
	unsigned char mask;

	if (net->family != family || memcmp(net->addr, addr, whole) != 0)
		return false;
	if (rest == 0)
		return true;
	mask = (unsigned char) (0xff << (8 - rest));
	return (net->addr[whole] & mask) == (addr[whole] & mask);
}

static const Network *
denying_network(int family, const unsigned char *addr)
{
	int			i;

	for (i = 0; i < N_BUILTIN; i++)
		if (network_contains(&builtin_networks[i], family, addr))
			return &builtin_networks[i];
	if (configured != NULL)
		for (i = 0; i < configured->n; i++)
			if (network_contains(&configured->nets[i], family, addr))
				return &configured->nets[i];
	return NULL;
}

/*
 * An IPv6 address that reaches an IPv4 one: IPv4-mapped (::ffff:a.b.c.d)
 * or, through NAT64, the well-known prefix 64:ff9b::/96 (RFC 6052).
 */
static bool
embeds_ipv4(const unsigned char *a)
{
	static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
	static const unsigned char nat64[12] = {0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0};

	return memcmp(a, mapped, 12) == 0 || memcmp(a, nat64, 12) == 0;
}

const char *
webhook_address_denied(const struct sockaddr *addr)
{
	const Network *net = NULL;

	if (addr->sa_family == AF_INET)
	{
		const struct sockaddr_in *sin = (const struct sockaddr_in *) addr;

		net = denying_network(AF_INET, (const unsigned char *) &sin->sin_addr);
	}
	else if (addr->sa_family == AF_INET6)
	{
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *) addr;
		const unsigned char *a = (const unsigned char *) &sin6->sin6_addr;

		net = denying_network(AF_INET6, a);
		if (net == NULL && embeds_ipv4(a))
			net = denying_network(AF_INET, a + 12);
	}
	return net ? net->label : NULL;
}

void
webhook_address_text(const struct sockaddr *addr, char *buf, size_t len)
{
	const void *a = NULL;

	if (addr->sa_family == AF_INET)
		a = &((const struct sockaddr_in *) addr)->sin_addr;
	else if (addr->sa_family == AF_INET6)
		a = &((const struct sockaddr_in6 *) addr)->sin6_addr;
	if (a == NULL || inet_ntop(addr->sa_family, a, buf, len) == NULL)
		snprintf(buf, len, "?");
}

/* ---------------------------------------------------------------------
 * notify_ext.webhook_denied_networks
 * --------------------------------------------------------------------- */

bool
webhook_check_denied_networks(char **newval, void **extra, GucSource source)
{
	char	   *copy = strdup(*newval ? *newval : "");
	DeniedNetworks *nets;
	char	   *item;
	char	   *saveptr = NULL;
	int			max = 1;
	const char *p;

	if (copy == NULL)
		return false;
	for (p = copy; *p; p++)
		if (*p == ',')
			max++;
	nets = (DeniedNetworks *) malloc(offsetof(DeniedNetworks, nets) + max * sizeof(Network));
	if (nets == NULL)
	{
		free(copy);
		return false;
	}
	nets->n = 0;
	for (item = strtok_r(copy, ",", &saveptr); item != NULL; item = strtok_r(NULL, ",", &saveptr))
	{
		Network    *net = &nets->nets[nets->n];
		char	   *end;
		char		text[INET6_ADDRSTRLEN + 8];
		NetworkError err;

		while (isspace((unsigned char) *item))
			item++;
		end = item + strlen(item);
		while (end > item && isspace((unsigned char) end[-1]))
			*--end = '\0';
		if (*item == '\0')
			continue;
		err = parse_network(item, net);
		if (err != NET_OK)
		{
			if (err == NET_HOST_BITS)
			{
				Network		masked = *net;
				int			i;

				for (i = masked.prefix; i < family_bits(masked.family); i++)
					masked.addr[i / 8] &= ~(0x80 >> (i % 8));
				network_text(&masked, text, sizeof(text));
				GUC_check_errdetail("\"%s\" has bits set to the right of its /%d mask.", item, net->prefix);
				GUC_check_errhint("Did you mean %s?", text);
			}
			else if (err == NET_PREFIX)
			{
				GUC_check_errdetail("\"%s\" has an invalid prefix length.", item);
				GUC_check_errhint("The prefix length is 0 to 32 for IPv4, 0 to 128 for IPv6.");
			}
			else
			{
				GUC_check_errdetail("\"%s\" is not a network in CIDR notation.", item);
				GUC_check_errhint("List networks such as 10.0.0.0/8, fc00::/7 or a single address, separated by commas.");
			}
			free(copy);
			free(nets);
			return false;
		}
		network_text(net, text, sizeof(text));
		snprintf(net->label, sizeof(net->label), "in %s (notify_ext.webhook_denied_networks)", text);
		nets->n++;
	}
	free(copy);
	*extra = nets;
	return true;
}

void
webhook_assign_denied_networks(const char *newval, void *extra)
{
	configured = (const DeniedNetworks *) extra;
}

void
webhook_policy_init(void)
{
	int			i;

	for (i = 0; i < N_BUILTIN; i++)
	{
		if (parse_network(builtin_denied[i].cidr, &builtin_networks[i]) != NET_OK)
			elog(ERROR, "notify_ext: bad built-in network %s", builtin_denied[i].cidr);
		strlcpy(builtin_networks[i].label, builtin_denied[i].label, sizeof(builtin_networks[i].label));
	}

}

/* ---------------------------------------------------------------------
 * URLs
 * --------------------------------------------------------------------- */

/* Where the scheme of a URL ends (its ':'), or NULL when it has none. */
static const char *
scheme_end(const char *url)
{
	size_t		len = strspn(url, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-.");

	return (len > 0 && url[len] == ':') ? url + len : NULL;
}

/*
 * Where the user info of a URL starts and ends: after the scheme and any
 * number of slashes, up to the last '@' before the path, query or
 * fragment.  False when it has none.  Generous on purpose: what it finds
 * is hidden or removed, whatever a parser would make of the URL.
 */
static bool
userinfo_bounds(const char *url, const char **start, const char **at)
{
	const char *p = scheme_end(url);

	if (p == NULL)
		return false;
	for (p++; *p == '/'; p++)
		;
	*start = p;
	*at = NULL;
	for (; *p && *p != '/' && *p != '?' && *p != '#'; p++)
		if (*p == '@')
			*at = p;
	return *at != NULL;
}

/* The URL with its user info, if any, replaced by "***", for messages. */
static char *
url_for_message(const char *url)
{
	const char *start;
	const char *at;

	if (!userinfo_bounds(url, &start, &at))
		return pstrdup(url);
	return psprintf("%.*s***%s", (int) (start - url), url, at);
}

/* The URL without its user info. */
static char *
url_without_userinfo(const char *url)
{
	const char *start;
	const char *at;

	if (!userinfo_bounds(url, &start, &at))
		return pstrdup(url);
	return psprintf("%.*s%s", (int) (start - url), url, at + 1);
}

/* A part of a parsed URL, palloc'd; NULL when the URL has none. */
static char *
url_part(CURLU *h, CURLUPart part, unsigned int flags)
{
	char	   *value = NULL;
	char	   *out = NULL;

	if (curl_url_get(h, part, &value, flags) == CURLUE_OK && value != NULL)
		out = pstrdup(value);
	curl_free(value);
	return out;
}

typedef struct ParsedUrl
{
	CURLUcode	error;			/* CURLUE_OK when it parsed */
	char	   *scheme;
	char	   *user;
	char	   *password;
	char	   *host;			/* URL-decoded; IPv6 literals in brackets */
	char	   *port;			/* NULL when not given */
} ParsedUrl;

static void
parse_url(const char *url, ParsedUrl *out)
{
	CURLU	   *h = curl_url();

	memset(out, 0, sizeof(ParsedUrl));
	if (h == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	out->error = curl_url_set(h, CURLUPART_URL, url, CURLU_NON_SUPPORT_SCHEME);
	if (out->error == CURLUE_OK)
	{
		out->scheme = url_part(h, CURLUPART_SCHEME, 0);
		out->user = url_part(h, CURLUPART_USER, CURLU_URLDECODE);
		out->password = url_part(h, CURLUPART_PASSWORD, CURLU_URLDECODE);
		out->host = url_part(h, CURLUPART_HOST, CURLU_URLDECODE);
		out->port = url_part(h, CURLUPART_PORT, 0);
	}
	curl_url_cleanup(h);
}

/*
 * The host of a URL as an address, when it is one: an IPv6 literal, or an
 * IPv4 address in any form inet_aton() (and so the resolver) accepts.
 */
static bool
host_address(const char *host, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	if (host[0] == '[')
	{
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *) ss;
		char	   *inner = pstrdup(host + 1);
		char	   *end = strchr(inner, ']');

		if (end)
			*end = '\0';
		/* curl keeps a zone id apart, but be sure */
		if ((end = strchr(inner, '%')) != NULL)
			*end = '\0';
		sin6->sin6_family = AF_INET6;
		return inet_pton(AF_INET6, inner, &sin6->sin6_addr) == 1;
	}
	else
	{
		struct sockaddr_in *sin = (struct sockaddr_in *) ss;

		sin->sin_family = AF_INET;
		return inet_aton(host, &sin->sin_addr) != 0;
	}
}

void
webhook_check_url(const char *url, const char *what)
{
	ParsedUrl	u;
	const char *colon;
	char	   *shown;
	char	   *host;
	size_t		len;
	struct sockaddr_storage ss;
	int			i;

	if (url == NULL || url[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must not be empty", what),
				 errhint(URL_HINT)));
	shown = url_for_message(url);
	colon = scheme_end(url);
	if (colon == NULL ||
		!((colon - url == 4 && pg_strncasecmp(url, "http", 4) == 0) ||
		  (colon - url == 5 && pg_strncasecmp(url, "https", 5) == 0)))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s \"%s\" is not an http:// or https:// URL", what, shown),
				 errhint(URL_HINT)));
	parse_url(url, &u);
	if (u.error == CURLUE_BAD_PORT_NUMBER)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s \"%s\" has an invalid port", what, shown),
				 errhint("A port is a number from 1 to 65535.")));
	if (u.error == CURLUE_NO_HOST)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s \"%s\" has no host", what, shown),
				 errhint(URL_HINT)));
	if (u.error != CURLUE_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s \"%s\" is not a valid URL: %s", what, shown, curl_url_strerror(u.error)),
				 errhint(URL_HINT)));
	/* Checked above already; curl has the last word. */
	if (u.scheme == NULL || (strcmp(u.scheme, "http") != 0 && strcmp(u.scheme, "https") != 0))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s \"%s\" is not an http:// or https:// URL", what, shown),
				 errhint(URL_HINT)));

	/* curl reads "http:/x" and "http:///x" as host x; they have none. */
	if (strncmp(colon + 1, "//", 2) != 0 || strchr("/?#", colon[3]) != NULL ||
		u.host == NULL || u.host[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s \"%s\" has no host", what, shown),
				 errhint(URL_HINT)));
	if (u.user != NULL || u.password != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s \"%s\" contains a user name or password", what, shown),
				 errhint("%s", strcmp(what, "token_url") == 0
						 ? "The client id and secret are the key and secret of the auth config."
						 : "Put them in an auth config: notify_ext.create_subscription_auth('BASIC_AUTH', key, secret), "
						 "and pass its id as auth_config.")));
	if (u.port != NULL && (strspn(u.port, "0123456789") != strlen(u.port) ||
						   atoi(u.port) < 1 || atoi(u.port) > 65535))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s \"%s\" has an invalid port", what, shown),
				 errhint("A port is a number from 1 to 65535.")));

	/* The host, without a trailing dot, in lower case. */
	host = pstrdup(u.host);
	len = strlen(host);
	if (len > 1 && host[len - 1] == '.')
		host[--len] = '\0';
	for (i = 0; host[i]; i++)
		host[i] = pg_ascii_tolower((unsigned char) host[i]);

	if (host_address(host, &ss))
	{
		const char *rule = webhook_address_denied((struct sockaddr *) &ss);

		if (rule != NULL)
		{
			char		addr[INET6_ADDRSTRLEN];

			webhook_address_text((struct sockaddr *) &ss, addr, sizeof(addr));
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s \"%s\" points to a denied address: %s is %s", what, shown, addr, rule),
					 errhint(DENIED_HINT)));
		}
		return;
	}
	for (i = 0; i < lengthof(denied_hosts); i++)
		if (strcmp(host, denied_hosts[i]) == 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s \"%s\" points to a denied host: %s is a cloud metadata service", what, shown, host),
					 errhint(DENIED_HINT)));
}

/* ---------------------------------------------------------------------
 * SQL-callable
 * --------------------------------------------------------------------- */

PG_FUNCTION_INFO_V1(notify_ext_webhook_check_url);
Datum
notify_ext_webhook_check_url(PG_FUNCTION_ARGS)
{
	char	   *url = PG_ARGISNULL(0) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(0));
	char	   *what = PG_ARGISNULL(1) ? "url" : text_to_cstring(PG_GETARG_TEXT_PP(1));

	webhook_check_url(url, what);
	PG_RETURN_VOID();
}

/*
 * (url without its user info, user name, password) of a URL; the user name
 * and password URL-decoded as curl sends them, NULL when it has none.
 * For updates from versions that accepted credentials in URLs.
 */
PG_FUNCTION_INFO_V1(notify_ext_webhook_url_credentials);
Datum
notify_ext_webhook_url_credentials(PG_FUNCTION_ARGS)
{
	char	   *url = text_to_cstring(PG_GETARG_TEXT_PP(0));
	TupleDesc	desc;
	Datum		values[3];
	bool		nulls[3] = {false, false, false};
	ParsedUrl	u;

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "notify_ext_webhook_url_credentials must return a record");
	desc = BlessTupleDesc(desc);
	parse_url(url, &u);
	/* Not text in the database's encoding: drop them, never store them. */
	if ((u.user && !pg_verifymbstr(u.user, strlen(u.user), true)) ||
		(u.password && !pg_verifymbstr(u.password, strlen(u.password), true)))
		u.user = u.password = NULL;
	values[0] = CStringGetTextDatum(url_without_userinfo(url));
	nulls[1] = u.user == NULL;
	if (u.user)
		values[1] = CStringGetTextDatum(u.user);
	nulls[2] = u.password == NULL;
	if (u.password)
		values[2] = CStringGetTextDatum(u.password);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(desc, values, nulls)));
}
