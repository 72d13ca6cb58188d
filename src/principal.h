/*
 * principal.h: who is calling, and the server keys.
 *
 * principal.c
 *   notify_current_principal(): the principal of the current call (see
 *     docs/inbox.md).  The returned string belongs to a cache and stays
 *     valid until the next call; copy it if you keep it.  Raises 42501 when
 *     a role that may not act for others has set notify_ext.principal, and
 *     inside security-restricted operations.
 *   notify_is_service_caller(): the caller (never the owner of a SECURITY
 *     DEFINER function being run) is a superuser or has the privileges of
 *     the role named by notify_ext.app_role.
 *   notify_require_service_caller(what): raises 42501 unless it is.
 *   principal_init(): defines the GUCs; called from _PG_init.
 *
 * keys.c
 *   notify_ext_server_key(purpose, out): a 32-byte key for one purpose,
 *     derived from the master key file $PGDATA/notify_ext.key (created with
 *     mode 0600 on first use).  No SQL role can read it through the
 *     extension.
 *   notify_ext_channel_name(purpose, prefix, msg, len, out): the LISTEN
 *     channel prefix || hex(BLAKE2b-128(key = server key of purpose, msg)),
 *     a valid identifier shorter than NAMEDATALEN (prefix: lower-case
 *     letters, digits and "_", at most 31 bytes).  Channel names are
 *     capabilities: whoever knows one can LISTEN on it.  Purposes in use:
 *     "inbox-channel" (msg = principal, inbox.c) and "consumer-channel"
 *     (msg = the consumer's 16 uuid bytes, consumer.c).
 */
#ifndef NOTIFY_EXT_PRINCIPAL_H
#define NOTIFY_EXT_PRINCIPAL_H

#include "postgres.h"

extern const char *notify_current_principal(void);
extern bool notify_is_service_caller(void);
extern void notify_require_service_caller(const char *what);
extern void principal_init(void);

extern char *notify_ext_app_role;
extern char *notify_ext_permission_function;

#define NOTIFY_EXT_KEY_BYTES 32
extern void notify_ext_server_key(const char *purpose, unsigned char out[NOTIFY_EXT_KEY_BYTES]);

#define NOTIFY_EXT_CHANNEL_HASH_BYTES 16
extern void notify_ext_channel_name(const char *purpose, const char *prefix,
									const void *msg, size_t len, char out[NAMEDATALEN]);

#endif							/* NOTIFY_EXT_PRINCIPAL_H */
