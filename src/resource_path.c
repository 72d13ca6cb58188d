/*
 * resource_path.c: finding resources and walking the resource tree.
 *
 * A resource is either registered (a row of notify_ext.resources) or a row
 * of a tracked table, found through its id column; registered ids are
 * looked at first, then tracked tables in the order of their oids.  Paths
 * are never stored: they are walked from parent to parent, so moving a
 * resource moves its subtree.  A parent that no longer exists ends the
 * walk and stays in the path.
 *
 * Tracked tables are read as their owners, in a security-restricted
 * operation with a pinned search_path (act_as()): a domain check, an
 * operator or a cast of the table's owner runs with that owner's rights,
 * never with the extension owner's.  The id is compared with the equality
 * operator of its type's default operator class, named by its schema.
 * Temporary tables are never read (track() refuses them; only their own
 * session could read them).  Lookups see the changes of the current
 * statement, so a parent and its child can arrive in one INSERT or COPY.
 *
 * Paths are cached per session across transactions: a generation in
 * shared memory is bumped by every commit that registered, moved or
 * removed resources or changed what is tracked, and a cache filled under
 * an older generation is dropped.  A new tracked row needs no bump: ids
 * that were not found are not cached.
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_operator.h"
#include "catalog/pg_trigger.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#if PG_VERSION_NUM >= 160000
#include "nodes/miscnodes.h"
#endif
#include "parser/parse_func.h"
#include "port/atomics.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/syscache.h"
#include "utils/typcache.h"

#include "extension.h"
#include "resource_path.h"
#include "spi_plan.h"

/* ---------------------------------------------------------------------
 * Tracked tables, read from the capture triggers themselves
 * --------------------------------------------------------------------- */

#define CAPTURE_TRIGGER_NAME "notify_ext_capture"

typedef struct TrackedTable
{
	Oid			relid;
	Oid			owner;
	char		relpersistence;
	char	   *variant;
	char	   *stream;			/* as configured; "" means schema.table */
	char	   *id_column;
	char	   *parent_column;	/* NULL: no parent column */
	Oid			id_type;		/* InvalidOid: the id column is gone */
	int32		id_typmod;
	Oid			eq_opr;			/* InvalidOid: the id type has no equality */
	char	   *query;			/* finds a row by id; made on first use */
} TrackedTable;

static MemoryContext tracked_cxt = NULL;
static TrackedTable *tracked = NULL;
static int	ntracked = 0;
static bool tracked_valid = false;
static uint64 tracked_generation = 0;

/*
 * A list made obsolete while a lookup runs (the code a lookup runs may look
 * up resources too) is kept until the transaction ends.
 */
static int	lookup_depth = 0;

/* ---------------------------------------------------------------------
 * The path cache
 * --------------------------------------------------------------------- */

typedef struct PathCacheEntry
{
	char		key[NAMEDATALEN * 4];	/* the id; longer ids are not cached */
	text	   *variant;		/* NULL when the path ends at a lost parent */
	Datum	   *elems;
	int			nelems;
} PathCacheEntry;

/* Entries of the cache at most; past that it starts over. */
#define PATH_CACHE_MAX 10000

static MemoryContext path_cxt = NULL;
static HTAB *path_cache = NULL;
static uint64 path_generation = 0;
static PathCacheEntry *last_entry = NULL;	/* reset with the cache */

static pg_atomic_uint64 *resources_generation = NULL;
static bool changed_here = false;	/* this transaction changed resources */
static bool filled_here = false;	/* entries of this transaction's view */

static void
invalidate_path_cache(void)
{
	if (path_cache != NULL)
	{
		MemoryContextReset(path_cxt);
		path_cache = NULL;
		last_entry = NULL;
	}
}

static void
invalidate_tracked(void)
{
	tracked_valid = false;
}

void
resources_changed(void)
{
	invalidate_path_cache();
	invalidate_tracked();
	changed_here = true;
}

static uint64
current_generation(void)
{
	return resources_generation ? pg_atomic_read_u64(resources_generation) : 0;
}

/* ---------------------------------------------------------------------
 * Reading the capture triggers
 * --------------------------------------------------------------------- */

static Oid
capture_function(void)
{
	List	   *name = list_make2(makeString(pstrdup("notify_ext")), makeString(pstrdup("capture")));

	return LookupFuncName(name, 0, NULL, true);
}

static int
tracked_cmp(const void *a, const void *b)
{
	Oid			x = ((const TrackedTable *) a)->relid;
	Oid			y = ((const TrackedTable *) b)->relid;

	return x < y ? -1 : x > y ? 1 : 0;
}

/* The trigger's arguments: variant, id column, parent column, stream. */
static bool
trigger_args(HeapTuple tup, TupleDesc desc, char **args)
{
	Form_pg_trigger trig = (Form_pg_trigger) GETSTRUCT(tup);
	bool		isnull;
	Datum		d;
	bytea	   *val;
	char	   *p;
	char	   *end;
	int			i;

	if (trig->tgnargs != 4)
		return false;
	d = heap_getattr(tup, Anum_pg_trigger_tgargs, desc, &isnull);
	if (isnull)
		return false;
	val = DatumGetByteaPP(d);
	p = VARDATA_ANY(val);
	end = p + VARSIZE_ANY_EXHDR(val);
	for (i = 0; i < 4; i++)
	{
		char	   *nul = memchr(p, '\0', end - p);

		if (nul == NULL)
			return false;
		args[i] = pstrdup(p);
		p = nul + 1;
	}
	return true;
}

static void
describe_table(TrackedTable *t, char **args)
{
	HeapTuple	tp = SearchSysCache1(RELOID, ObjectIdGetDatum(t->relid));
	AttrNumber	attnum;
	Oid			collid;

	t->variant = args[0];
	t->id_column = args[1];
	t->parent_column = args[2][0] ? args[2] : NULL;
	t->stream = args[3];
	t->id_type = InvalidOid;
	t->eq_opr = InvalidOid;
	t->query = NULL;
	if (!HeapTupleIsValid(tp))
		return;
	t->owner = ((Form_pg_class) GETSTRUCT(tp))->relowner;
	t->relpersistence = ((Form_pg_class) GETSTRUCT(tp))->relpersistence;
	ReleaseSysCache(tp);

	attnum = get_attnum(t->relid, t->id_column);
	if (attnum == InvalidAttrNumber)
		return;
	get_atttypetypmodcoll(t->relid, attnum, &t->id_type, &t->id_typmod, &collid);
	t->eq_opr = lookup_type_cache(t->id_type, TYPECACHE_EQ_OPR)->eq_opr;
}

/* The tracked tables, in the order of their oids (into tracked_cxt). */
static void
load_tracked(void)
{
	Oid			capture = capture_function();
	Relation	rel;
	SysScanDesc scan;
	HeapTuple	tup;
	int			max = 16;
	MemoryContext old;

	if (tracked_cxt != NULL)
	{
		if (lookup_depth > 1)
		{
			MemoryContextSetParent(tracked_cxt, TopTransactionContext);
			tracked_cxt = NULL;
		}
		else
			MemoryContextReset(tracked_cxt);
	}
	if (tracked_cxt == NULL)
		tracked_cxt = AllocSetContextCreate(CacheMemoryContext, "notify_ext tracked tables",
											ALLOCSET_SMALL_SIZES);
	tracked = NULL;
	ntracked = 0;
	tracked_generation = current_generation();
	if (!OidIsValid(capture))
	{
		tracked_valid = true;
		return;
	}

	old = MemoryContextSwitchTo(tracked_cxt);
	tracked = palloc(sizeof(TrackedTable) * max);
	rel = table_open(TriggerRelationId, AccessShareLock);
	scan = systable_beginscan(rel, InvalidOid, false, NULL, 0, NULL);
	while (HeapTupleIsValid(tup = systable_getnext(scan)))
	{
		Form_pg_trigger trig = (Form_pg_trigger) GETSTRUCT(tup);
		char	   *args[4];

		if (trig->tgfoid != capture || OidIsValid(trig->tgparentid) ||
			strcmp(NameStr(trig->tgname), CAPTURE_TRIGGER_NAME) != 0 ||
			!trigger_args(tup, RelationGetDescr(rel), args))
			continue;
		if (ntracked == max)
		{
			max *= 2;
			tracked = repalloc(tracked, sizeof(TrackedTable) * max);
		}
		tracked[ntracked].relid = trig->tgrelid;
		describe_table(&tracked[ntracked], args);
		ntracked++;
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	MemoryContextSwitchTo(old);
	qsort(tracked, ntracked, sizeof(TrackedTable), tracked_cmp);
	tracked_valid = true;
}

static void
ensure_tracked(void)
{
	if (!tracked_valid || tracked_generation != current_generation())
		load_tracked();
}

/* ---------------------------------------------------------------------
 * Looking one id up
 * --------------------------------------------------------------------- */

/* What a lookup of one id found. */
typedef struct FoundResource
{
	bool		found;
	text	   *variant;
	text	   *parent;			/* NULL: a root */
	Oid			relid;			/* InvalidOid: a registered resource */
} FoundResource;

/* The row's values as text, copied into cxt. */
static text *
result_text(int col, MemoryContext cxt)
{
	bool		isnull;
	Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, col, &isnull);
	MemoryContext old;
	text	   *t;

	if (isnull)
		return NULL;
	old = MemoryContextSwitchTo(cxt);
	t = DatumGetTextPCopy(d);
	MemoryContextSwitchTo(old);
	return t;
}

/* A registered resource, read as the extension owner. */
static bool
find_registered(text *id, FoundResource *out, MemoryContext cxt)
{
	ActingRole	saved;
	Datum		arg = PointerGetDatum(id);
	Oid			argtype = TEXTOID;
	int			rc;

	act_as_extension_owner(&saved);
	rc = spi_run("SELECT r.variant, r.parent_id FROM notify_ext.resources r "
				 "WHERE r.id OPERATOR(pg_catalog.=) $1", 1, &argtype, &arg, NULL, false, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "looking up a registered resource failed: %s", SPI_result_code_string(rc));
	if (SPI_processed == 1)
	{
		out->found = true;
		out->variant = result_text(1, cxt);
		out->parent = result_text(2, cxt);
		out->relid = InvalidOid;
	}
	stop_acting(&saved);
	return out->found;
}

/*
 * The id as a value of the id column's type, or false when it cannot be
 * one (a data exception or a failed domain check).  Runs the type's input
 * function, and with it the checks of a domain, as the table's owner.
 */
static bool
id_value(TrackedTable *t, text *id, Datum *value)
{
	Oid			typinput;
	Oid			typioparam;
	char	   *str;

	if (t->id_type == TEXTOID || t->id_type == VARCHAROID)
	{
		*value = PointerGetDatum(id);
		return true;
	}
	getTypeInputInfo(t->id_type, &typinput, &typioparam);
	str = text_to_cstring(id);
#if PG_VERSION_NUM >= 160000
	{
		ErrorSaveContext escontext = {T_ErrorSaveContext};

		return OidInputFunctionCallSafe(typinput, str, typioparam, t->id_typmod,
										(Node *) &escontext, value);
	}
#else
	{
		MemoryContext cxt = CurrentMemoryContext;
		ResourceOwner owner = CurrentResourceOwner;
		volatile bool ok = false;

		BeginInternalSubTransaction(NULL);
		MemoryContextSwitchTo(cxt);
		PG_TRY();
		{
			*value = OidInputFunctionCall(typinput, str, typioparam, t->id_typmod);
			ReleaseCurrentSubTransaction();
			ok = true;
		}
		PG_CATCH();
		{
			ErrorData  *edata;

			MemoryContextSwitchTo(cxt);
			edata = CopyErrorData();
			FlushErrorState();
			RollbackAndReleaseCurrentSubTransaction();
			if (ERRCODE_TO_CATEGORY(edata->sqlerrcode) != ERRCODE_DATA_EXCEPTION &&
				edata->sqlerrcode != ERRCODE_CHECK_VIOLATION &&
				edata->sqlerrcode != ERRCODE_NOT_NULL_VIOLATION)
				ReThrowError(edata);
			FreeErrorData(edata);
		}
		PG_END_TRY();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
		return ok;
	}
#endif
}

static Oid
operator_namespace(Oid opr)
{
	HeapTuple	tp = SearchSysCache1(OPEROID, ObjectIdGetDatum(opr));
	Oid			nsp;

	if (!HeapTupleIsValid(tp))
		elog(ERROR, "cache lookup failed for operator %u", opr);
	nsp = ((Form_pg_operator) GETSTRUCT(tp))->oprnamespace;
	ReleaseSysCache(tp);
	return nsp;
}

static const char *
tracked_query(TrackedTable *t)
{
	char	   *nsp = get_namespace_name(get_rel_namespace(t->relid));
	char	   *rel = get_rel_name(t->relid);

	if (nsp == NULL || rel == NULL)
		return NULL;
	t->query = MemoryContextStrdup(tracked_cxt, psprintf(
		"SELECT %s FROM %s WHERE %s OPERATOR(%s.=) $1 LIMIT 1",
		t->parent_column
		? psprintf("%s::pg_catalog.text", quote_identifier(t->parent_column))
		: "NULL::pg_catalog.text",
		quote_qualified_identifier(nsp, rel),
		quote_identifier(t->id_column),
		quote_identifier(get_namespace_name(operator_namespace(t->eq_opr)))));
	return t->query;
}

/* A row of a tracked table, read as the table's owner. */
static bool
find_tracked(text *id, FoundResource *out, MemoryContext cxt)
{
	int			i;

	ensure_tracked();
	for (i = 0; i < ntracked && !out->found; i++)
	{
		TrackedTable *t = &tracked[i];
		ActingRole	saved;
		Datum		value;

		if (!OidIsValid(t->id_type) || !OidIsValid(t->eq_opr) ||
			t->relpersistence == RELPERSISTENCE_TEMP)
			continue;
		act_as(t->owner, true, &saved);
		if (id_value(t, id, &value) && (t->query != NULL || tracked_query(t) != NULL))
		{
			int			rc = spi_run(t->query, 1, &t->id_type, &value, NULL, false, 1);

			if (rc != SPI_OK_SELECT)
				elog(ERROR, "looking up a row of tracked table %u failed: %s",
					 t->relid, SPI_result_code_string(rc));
			if (SPI_processed == 1)
			{
				out->found = true;
				out->parent = result_text(1, cxt);
				out->relid = t->relid;
				out->variant = (text *) MemoryContextAlloc(cxt, VARHDRSZ + strlen(t->variant));
				SET_VARSIZE(out->variant, VARHDRSZ + strlen(t->variant));
				memcpy(VARDATA(out->variant), t->variant, strlen(t->variant));
			}
		}
		stop_acting(&saved);
	}
	return out->found;
}

/*
 * Looks id up: a registered resource first (unless tracked_only), then a
 * row of a tracked table.  Results are allocated in the caller's context.
 */
static bool
find_resource(text *id, bool tracked_only, FoundResource *out)
{
	MemoryContext cxt = CurrentMemoryContext;

	memset(out, 0, sizeof(*out));
	lookup_depth++;
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (tracked_only || !find_registered(id, out, cxt))
		find_tracked(id, out, cxt);
	SPI_finish();
	lookup_depth--;
	return out->found;
}

/* ---------------------------------------------------------------------
 * Paths
 * --------------------------------------------------------------------- */

static bool
text_equal(text *a, text *b)
{
	return VARSIZE_ANY_EXHDR(a) == VARSIZE_ANY_EXHDR(b) &&
		memcmp(VARDATA_ANY(a), VARDATA_ANY(b), VARSIZE_ANY_EXHDR(a)) == 0;
}

/* The key of an id, or false when it is too long to be cached. */
static bool
cache_key(text *id, char *key)
{
	int			len = VARSIZE_ANY_EXHDR(id);

	if (len >= (int) sizeof(((PathCacheEntry *) 0)->key))
		return false;
	memcpy(key, VARDATA_ANY(id), len);
	key[len] = '\0';
	return true;
}

static PathCacheEntry *
cache_lookup(text *id)
{
	char		key[sizeof(((PathCacheEntry *) 0)->key)];
	uint64		generation = current_generation();

	if (path_cache != NULL &&
		(generation != path_generation || hash_get_num_entries(path_cache) >= PATH_CACHE_MAX))
		invalidate_path_cache();
	if (path_cache == NULL)
		return NULL;
	/* Consecutive rows often share a parent. */
	if (last_entry != NULL && strlen(last_entry->key) == VARSIZE_ANY_EXHDR(id) &&
		memcmp(last_entry->key, VARDATA_ANY(id), VARSIZE_ANY_EXHDR(id)) == 0)
		return last_entry;
	if (!cache_key(id, key))
		return NULL;
	last_entry = hash_search(path_cache, key, HASH_FIND, NULL);
	return last_entry;
}

static void
cache_store(text *id, text *variant, Datum *elems, int nelems)
{
	char		key[sizeof(((PathCacheEntry *) 0)->key)];
	PathCacheEntry *entry;
	MemoryContext old;
	bool		found;

	if (!cache_key(id, key))
		return;
	if (path_cache == NULL)
	{
		HASHCTL		ctl;

		if (path_cxt == NULL)
			path_cxt = AllocSetContextCreate(TopMemoryContext, "notify_ext resource paths",
											 ALLOCSET_DEFAULT_SIZES);
		ctl.keysize = sizeof(((PathCacheEntry *) 0)->key);
		ctl.entrysize = sizeof(PathCacheEntry);
		ctl.hcxt = path_cxt;
		path_cache = hash_create("notify_ext resource paths", 64, &ctl,
								 HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
		path_generation = current_generation();
	}
	entry = hash_search(path_cache, key, HASH_ENTER, &found);
	old = MemoryContextSwitchTo(path_cxt);
	entry->variant = variant ? DatumGetTextPCopy(PointerGetDatum(variant)) : NULL;
	entry->elems = palloc(sizeof(Datum) * nelems);
	for (int i = 0; i < nelems; i++)
		entry->elems[i] = PointerGetDatum(DatumGetTextPCopy(elems[i]));
	entry->nelems = nelems;
	MemoryContextSwitchTo(old);
	filled_here = true;
	last_entry = entry;
}

static void
report_cycle(text *id)
{
	ereport(ERROR,
			(errcode(ERRCODE_DATA_EXCEPTION),
			 errmsg("resource \"%s\" is its own ancestor", text_to_cstring(id)),
			 errhint("Move one of the resources in the cycle under another parent.")));
}

bool
resource_path_find(text *id, text **variant, Datum **elems, int *nelems)
{
	PathCacheEntry *entry = cache_lookup(id);
	List	   *chain = NIL;	/* from id up, each a FoundResource */
	List	   *ids = NIL;
	text	   *cur = id;
	Datum	   *prefix = NULL;
	int			nprefix = 0;
	Datum	   *path;
	int			npath;
	ListCell   *lc;
	int			k;

	if (entry != NULL)
	{
		*variant = entry->variant;
		*elems = entry->elems;
		*nelems = entry->nelems;
		return true;
	}

	for (;;)
	{
		FoundResource *f = palloc(sizeof(FoundResource));

		CHECK_FOR_INTERRUPTS();
		if (!find_resource(cur, false, f))
		{
			if (chain == NIL)
				return false;
			/* a lost parent ends the path */
			prefix = palloc(sizeof(Datum));
			prefix[0] = PointerGetDatum(cur);
			nprefix = 1;
			break;
		}
		chain = lappend(chain, f);
		ids = lappend(ids, cur);
		if (f->parent == NULL)
			break;
		foreach(lc, ids)
			if (text_equal((text *) lfirst(lc), f->parent))
				report_cycle(f->parent);
		entry = cache_lookup(f->parent);
		if (entry != NULL)
		{
			prefix = entry->elems;
			nprefix = entry->nelems;
			break;
		}
		cur = f->parent;
	}

	/* prefix, then the chain from its top down to id */
	npath = nprefix + list_length(ids);
	path = palloc(sizeof(Datum) * npath);
	memcpy(path, prefix, sizeof(Datum) * nprefix);
	k = npath;
	foreach(lc, ids)
		path[--k] = PointerGetDatum(lfirst(lc));
	/* every resource of the chain gets its path cached, the top first */
	for (k = list_length(ids) - 1; k >= 0; k--)
	{
		FoundResource *f = list_nth(chain, k);

		cache_store((text *) list_nth(ids, k), f->variant, path, npath - k);
	}
	*variant = ((FoundResource *) linitial(chain))->variant;
	*elems = path;
	*nelems = npath;
	return true;
}

/* ---------------------------------------------------------------------
 * Invalidation and transaction ends
 * --------------------------------------------------------------------- */

static void
relation_invalidated(Datum arg, Oid relid)
{
	bool		listed = (relid == InvalidOid);

	for (int i = 0; i < ntracked && !listed; i++)
		listed = (tracked[i].relid == relid);
	/* A tracked table dropped, truncated or altered: its rows may be gone. */
	if (listed)
	{
		invalidate_tracked();
		invalidate_path_cache();
	}
}

static void
resource_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_PREPARE:
			if (changed_here && resources_generation != NULL)
				pg_atomic_fetch_add_u64(resources_generation, 1);
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			/* What was cached may show this transaction's rows. */
			if (changed_here || filled_here)
				invalidate_path_cache();
			if (changed_here)
				invalidate_tracked();
			lookup_depth = 0;
			break;
		default:
			return;
	}
	changed_here = false;
	filled_here = false;
}

static void
resource_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
						  SubTransactionId parentSubid, void *arg)
{
	if (event == SUBXACT_EVENT_ABORT_SUB && (changed_here || filled_here))
	{
		invalidate_path_cache();
		invalidate_tracked();
	}
}

Size
resource_path_shmem_size(void)
{
	return sizeof(pg_atomic_uint64);
}

void
resource_path_shmem_init(void)
{
	bool		found;

	resources_generation = ShmemInitStruct("notify_ext resources", resource_path_shmem_size(), &found);
	if (!found)
		pg_atomic_init_u64(resources_generation, 1);
}

void
resource_path_init(void)
{
	CacheRegisterRelcacheCallback(relation_invalidated, (Datum) 0);
	RegisterXactCallback(resource_xact_callback, NULL);
	RegisterSubXactCallback(resource_subxact_callback, NULL);
}

/* ---------------------------------------------------------------------
 * SQL functions
 * --------------------------------------------------------------------- */

PG_FUNCTION_INFO_V1(notify_ext_resources_changed);
Datum
notify_ext_resources_changed(PG_FUNCTION_ARGS)
{
	resources_changed();
	PG_RETURN_VOID();
}

/* (variant, parent_id, relation) of a resource; all NULL when unknown. */
static Datum
found_resource_datum(FunctionCallInfo fcinfo, bool tracked_only)
{
	TupleDesc	desc;
	Datum		values[3] = {0};
	bool		nulls[3] = {true, true, true};
	FoundResource f;

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	if (find_resource(PG_GETARG_TEXT_PP(0), tracked_only, &f))
	{
		values[0] = PointerGetDatum(f.variant);
		nulls[0] = false;
		values[1] = PointerGetDatum(f.parent);
		nulls[1] = (f.parent == NULL);
		values[2] = ObjectIdGetDatum(f.relid);
		nulls[2] = !OidIsValid(f.relid);
	}
	return HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls));
}

/* Whether ids of a type can be looked up: it has an equality operator. */
PG_FUNCTION_INFO_V1(notify_ext_type_has_equality);
Datum
notify_ext_type_has_equality(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(OidIsValid(lookup_type_cache(PG_GETARG_OID(0), TYPECACHE_EQ_OPR)->eq_opr));
}

PG_FUNCTION_INFO_V1(notify_ext_find_resource);
Datum
notify_ext_find_resource(PG_FUNCTION_ARGS)
{
	return found_resource_datum(fcinfo, false);
}

PG_FUNCTION_INFO_V1(notify_ext_find_tracked_resource);
Datum
notify_ext_find_tracked_resource(PG_FUNCTION_ARGS)
{
	return found_resource_datum(fcinfo, true);
}

/* The path of a resource as text[], or NULL when it is unknown. */
PG_FUNCTION_INFO_V1(notify_ext_resource_path);
Datum
notify_ext_resource_path(PG_FUNCTION_ARGS)
{
	text	   *variant;
	Datum	   *elems;
	int			nelems;

	if (!resource_path_find(PG_GETARG_TEXT_PP(0), &variant, &elems, &nelems))
		PG_RETURN_NULL();
	PG_RETURN_ARRAYTYPE_P(construct_array(elems, nelems, TEXTOID, -1, false, TYPALIGN_INT));
}

static Datum
name_datum(const char *s)
{
	Name		n = palloc0(NAMEDATALEN);

	namestrcpy(n, s);
	return NameGetDatum(n);
}

/*
 * The tracked tables: relation, variant, id_column, parent_column, stream,
 * id_type.
 */
PG_FUNCTION_INFO_V1(notify_ext_tracked_tables);
Datum
notify_ext_tracked_tables(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	InitMaterializedSRF(fcinfo, 0);
	ensure_tracked();
	for (int i = 0; i < ntracked; i++)
	{
		TrackedTable *t = &tracked[i];
		Datum		values[6];
		bool		nulls[6] = {false};
		char	   *nsp = get_namespace_name(get_rel_namespace(t->relid));
		char	   *rel = get_rel_name(t->relid);

		if (nsp == NULL || rel == NULL)
			continue;
		values[0] = ObjectIdGetDatum(t->relid);
		values[1] = CStringGetTextDatum(t->variant);
		values[2] = name_datum(t->id_column);
		nulls[3] = (t->parent_column == NULL);
		values[3] = nulls[3] ? (Datum) 0 : name_datum(t->parent_column);
		values[4] = CStringGetTextDatum(t->stream[0] ? t->stream : psprintf("%s.%s", nsp, rel));
		nulls[5] = !OidIsValid(t->id_type);
		values[5] = ObjectIdGetDatum(t->id_type);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
