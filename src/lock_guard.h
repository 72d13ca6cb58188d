/*
 * lock_guard.h: refuses LOCK TABLE in modes that would block other roles
 * on the extension's relations (see lock_guard.c).
 */
#ifndef NOTIFY_EXT_LOCK_GUARD_H
#define NOTIFY_EXT_LOCK_GUARD_H

extern void lock_guard_init(void);

#endif
