/*
 * inbox.h: what the inbox's C files (inbox.c, inbox_bulk.c) share: the
 * columns of notify_ext.notifications, a hash table (simplehash.h) of the
 * recipients and (recipient, type) pairs of one statement, and what the
 * insert trigger does for new rows, which create_notifications_bulk() does
 * itself for the rows it writes directly.
 */
#ifndef NOTIFY_EXT_INBOX_H
#define NOTIFY_EXT_INBOX_H

#include "access/tupdesc.h"
#include "common/hashfn.h"
#include "lib/stringinfo.h"

/* Positions (0-based) of the columns of notify_ext.notifications. */
typedef struct NotificationColumns
{
	int			id;
	int			recipient;
	int			type;
	int			message;
	int			meta;
	int			refs;
	int			ts;
	int			read;
} NotificationColumns;

extern void notification_columns(TupleDesc desc, NotificationColumns *col);

typedef struct InboxKey
{
	const char *data;			/* recipient, or recipient "\0" type */
	int			len;
} InboxKey;

typedef struct InboxKeyEntry
{
	InboxKey	key;
	uint32		hash;
	char		status;			/* simplehash's */
	int64		total;
	int64		unread;
	char	   *channel;		/* a recipient's NOTIFY channel, once made */
} InboxKeyEntry;

#define SH_PREFIX inbox_keys
#define SH_ELEMENT_TYPE InboxKeyEntry
#define SH_KEY_TYPE InboxKey
#define SH_KEY key
#define SH_HASH_KEY(tb, k) hash_bytes((const unsigned char *) (k).data, (k).len)
#define SH_EQUAL(tb, a, b) ((a).len == (b).len && memcmp((a).data, (b).data, (a).len) == 0)
#define SH_STORE_HASH
#define SH_GET_HASH(tb, e) ((e)->hash)
#define SH_SCOPE static inline
#define SH_DECLARE
#define SH_DEFINE
#include "lib/simplehash.h"

/*
 * The entry of the len bytes at data, added when missing (then its counters
 * are 0, its channel NULL and its key a copy in the table's memory context).
 * The pointer is valid until the next insertion.
 */
static inline InboxKeyEntry *
inbox_keys_add(inbox_keys_hash *table, const char *data, int len, bool *found_out)
{
	InboxKey	key = {data, len};
	bool		found;
	InboxKeyEntry *e = inbox_keys_insert(table, key, &found);

	if (!found)
	{
		char	   *copy = MemoryContextAlloc(table->ctx, len + 1);

		memcpy(copy, data, len);
		copy[len] = '\0';
		e->key.data = copy;
		e->total = 0;
		e->unread = 0;
		e->channel = NULL;
	}
	if (found_out)
		*found_out = found;
	return e;
}

/* The key of a (recipient, type) pair, "recipient\0type", into buf. */
static inline void
inbox_pair_key(StringInfo buf, const char *recipient, int rlen, const char *type, int tlen)
{
	resetStringInfo(buf);
	appendBinaryStringInfo(buf, recipient, rlen);
	appendStringInfoChar(buf, '\0');
	appendBinaryStringInfo(buf, type, tlen);
}

/*
 * Queues the NOTIFY of a new notification, {"id": id}, on the channel of
 * recipient, an entry of the table recipients (its channel is made once).
 */
extern void inbox_announce(inbox_keys_hash *recipients, InboxKeyEntry *recipient, int64 id);

/*
 * Adds one count delta row per entry of pairs (total and unread from its
 * counters), then folds the deltas of those of the recipients that have
 * many.  SPI must be connected.
 */
extern void inbox_add_counts_and_fold(inbox_keys_hash *pairs, inbox_keys_hash *recipients);

#endif							/* NOTIFY_EXT_INBOX_H */
