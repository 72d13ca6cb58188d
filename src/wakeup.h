/*
 * wakeup.h: telling consumers that events have committed: NOTIFYs on their
 * channels, and latches of sessions in a long poll.
 */
#ifndef NOTIFY_EXT_WAKEUP_H
#define NOTIFY_EXT_WAKEUP_H

#include "utils/uuid.h"

extern Size wakeup_shmem_size(void);
extern void wakeup_shmem_init(void);
extern void wakeup_init(void);

/* The LISTEN channel of a consumer (a keyed hash of its id). */
extern void consumer_channel(const pg_uuid_t *id, char out[NAMEDATALEN]);

/*
 * Marks this backend as waiting for events of its database (true) or not
 * any more (false): a commit that records events sets its latch meanwhile.
 */
extern void wakeup_set_waiting(bool waiting);

#endif							/* NOTIFY_EXT_WAKEUP_H */
