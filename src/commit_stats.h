/*
 * commit_stats.h: how many events each database committed recently, kept
 * in shared memory by the hook that runs after each commit (for
 * notify_ext.log_stats).
 */
#ifndef NOTIFY_EXT_COMMIT_STATS_H
#define NOTIFY_EXT_COMMIT_STATS_H

#include "postgres.h"

/* Longest look back that commit_stats_recent() can answer, in seconds. */
#define COMMIT_STATS_SECONDS 60

extern Size commit_stats_shmem_size(void);
extern void commit_stats_shmem_init(void);
extern void commit_stats_init(void);

/*
 * Events this database committed in the last seconds (at most
 * COMMIT_STATS_SECONDS), or -1 when it has no slot (more databases than
 * slots committed events since the server started).
 */
extern int64 commit_stats_recent(int seconds);

#endif							/* NOTIFY_EXT_COMMIT_STATS_H */
