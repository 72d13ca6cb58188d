/*
 * webhook_policy.h: which webhook URLs and addresses are allowed (contract
 * §8, docs/webhooks.md "URL policy").
 *
 * webhook_check_url() checks a URL when a webhook or an auth config is
 * created; webhook_address_denied() decides, for that check and for every
 * address the worker connects to after DNS resolution, whether an address
 * is denied.
 */
#ifndef NOTIFY_EXT_WEBHOOK_POLICY_H
#define NOTIFY_EXT_WEBHOOK_POLICY_H

#include "postgres.h"

#include <sys/socket.h>


extern void webhook_policy_init(void);

/* The hooks of the setting notify_ext.webhook_denied_networks (notify_ext.c). */
#include "utils/guc.h"
extern bool webhook_check_denied_networks(char **newval, void **extra, GucSource source);
extern void webhook_assign_denied_networks(const char *newval, void *extra);

/*
 * NULL when the address may be connected to; otherwise why it is denied,
 * such as "in 169.254.0.0/16 (link-local)" or "a cloud metadata address".  The text stays valid until the
 * next configuration reload.  Does not allocate and never raises an error,
 * so curl's callbacks may call it.
 */
extern const char *webhook_address_denied(const struct sockaddr *addr);

/* The address as text (inet_ntop), "?" for an unknown family. */
extern void webhook_address_text(const struct sockaddr *addr, char *buf, size_t len);

/*
 * Raises 22023 unless url is an allowed http(s) URL.  what names it in the
 * messages: "webhook url" or "token_url".
 */
extern void webhook_check_url(const char *url, const char *what);

#endif							/* NOTIFY_EXT_WEBHOOK_POLICY_H */
