/*
 * dropper.h: dropping detached day partitions after prune() has committed.
 */
#ifndef NOTIFY_EXT_DROPPER_H
#define NOTIFY_EXT_DROPPER_H

#include "utils/guc.h"

/*
 * Compresses the WAL this backend writes (zstd, else lz4, else pglz),
 * unless the server compresses already: with GUC_ACTION_SAVE until the
 * current GUC nesting level ends, with GUC_ACTION_SET for the session.
 */
extern void compress_own_wal(GucAction action);

#endif							/* NOTIFY_EXT_DROPPER_H */
