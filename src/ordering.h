/*
 * ordering.h: numbering events in commit order (see docs/ordering.md).
 */
#ifndef NOTIFY_EXT_ORDERING_H
#define NOTIFY_EXT_ORDERING_H

extern Size ordering_shmem_size(void);
extern void ordering_shmem_init(void);

/*
 * Takes count consecutive numbers for the committing transaction and
 * returns the first; they stay in flight, holding back the committed
 * horizon, until ordering_release() once the commit is visible.
 */
extern int64 ordering_reserve(int64 count);
extern void ordering_release(void);

/* Every event at or below this is committed and visible. */
extern int64 ordering_committed_seq(void);

#endif							/* NOTIFY_EXT_ORDERING_H */
