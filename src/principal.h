/*
 * principal.h: who is calling.
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
 *   notify_may_monitor(): a service caller, or has the privileges of
 *     pg_monitor; notify_require_monitor(what) raises 42501 unless so.
 *   principal_init(): registers the cache invalidation; from _PG_init.
 *   principal_check_hook(), principal_assign_hook(): of the settings
 *     notify_ext.principal and notify_ext.app_role (notify_ext.c).
 */
#ifndef NOTIFY_EXT_PRINCIPAL_H
#define NOTIFY_EXT_PRINCIPAL_H

#include "postgres.h"

extern const char *notify_current_principal(void);
extern bool notify_is_service_caller(void);
extern void notify_require_service_caller(const char *what);
extern bool notify_may_monitor(void);
extern void notify_require_monitor(const char *what);
extern void principal_init(void);

#include "utils/guc.h"
extern bool principal_check_hook(char **newval, void **extra, GucSource source);
extern void principal_assign_hook(const char *newval, void *extra);


#endif							/* NOTIFY_EXT_PRINCIPAL_H */
