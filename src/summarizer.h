/*
 * summarizer.h: BRIN summaries of the event log, off the writers' path.
 */
#ifndef NOTIFY_EXT_SUMMARIZER_H
#define NOTIFY_EXT_SUMMARIZER_H

#include "storage/block.h"

extern Size summarizer_shmem_size(void);
extern void summarizer_shmem_init(void);

/*
 * Queues the block range of the BRIN index that starts at blk for this
 * database's summarizer worker, starting it when there is none; false when
 * no worker can take it.
 */
extern bool summarizer_request(Oid indexoid, BlockNumber blk, BlockNumber per_range);

/* Summarizes the range (and the one before) now, unless it is locked. */
extern void summarize_range_nowait(Oid indexoid, BlockNumber blk, BlockNumber per_range);

#endif							/* NOTIFY_EXT_SUMMARIZER_H */
