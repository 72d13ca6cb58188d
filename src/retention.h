/*
 * retention.h: retention settings and the pg_cron call (retention.c).
 *
 *   retention_init(): defines the notify_ext.*_retention GUCs and the
 *     pruning knobs; called from _PG_init before MarkGUCPrefixReserved.
 */
#ifndef NOTIFY_EXT_RETENTION_H
#define NOTIFY_EXT_RETENTION_H

extern void retention_init(void);

#endif							/* NOTIFY_EXT_RETENTION_H */
