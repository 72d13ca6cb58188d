/*
 * resource_path.h: finding resources (registered ids and rows of tracked
 * tables) and the paths of the resource tree, with a cache shared by the
 * capture trigger, publish() and the SQL functions.
 */
#ifndef NOTIFY_EXT_RESOURCE_PATH_H
#define NOTIFY_EXT_RESOURCE_PATH_H

#include "fmgr.h"

extern Size resource_path_shmem_size(void);
extern void resource_path_shmem_init(void);
extern void resource_path_init(void);

/*
 * The path of a resource, root first and the id last, with its variant
 * (NULL when the path ends at a parent that no longer exists).  Returns
 * false when id is no resource.  The results point into the cache and stay
 * valid until the next lookup.
 */
extern bool resource_path_find(text *id, text **variant, Datum **elems, int *nelems);

/*
 * This transaction registered, moved or removed resources: lookups made
 * from now on do not use what was cached before, and other sessions drop
 * their caches once it commits.
 */
extern void resources_changed(void);

#endif							/* NOTIFY_EXT_RESOURCE_PATH_H */
