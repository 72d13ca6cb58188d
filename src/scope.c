/*
 * scope.c: which events a consumer or a webhook wants.
 *
 * One rule, in C: wake-ups at commit check events in memory with it, and
 * every query that selects events of a scope calls it through
 * notify_ext._in_scope(), which keeps the scope it was last called with
 * (the scope is usually the same for every row of a query).
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "utils/array.h"
#include "utils/arrayaccess.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "scope.h"

static inline bool
text_equal(text *a, text *b)
{
	return VARSIZE_ANY_EXHDR(a) == VARSIZE_ANY_EXHDR(b) &&
		memcmp(VARDATA_ANY(a), VARDATA_ANY(b), VARSIZE_ANY_EXHDR(a)) == 0;
}

static bool
text_in(text **list, int n, text *t)
{
	for (int i = 0; i < n; i++)
		if (text_equal(list[i], t))
			return true;
	return false;
}

/* The non-null elements of a text[] (NULL for a NULL array). */
static text **
text_elements(ArrayType *arr, int *n)
{
	Datum	   *elems;
	bool	   *nulls;
	int			nelems;
	int			k = 0;
	text	  **out;

	*n = 0;
	if (arr == NULL)
		return NULL;
	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &nelems);
	out = palloc(sizeof(text *) * Max(nelems, 1));
	for (int i = 0; i < nelems; i++)
		if (!nulls[i])
			out[k++] = DatumGetTextPP(elems[i]);
	*n = k;
	return out;
}

void
scope_from_values(Scope *s, text *resource_id, bool include_subresources,
				  ArrayType *streams, ArrayType *operations,
				  bool has_from_date, TimestampTz from_date)
{
	s->resource_id = resource_id;
	s->include_subresources = include_subresources;
	s->streams = text_elements(streams, &s->nstreams);
	s->operations = text_elements(operations, &s->noperations);
	s->has_from_date = has_from_date;
	s->from_date = from_date;
}

/* The parts other than the resource. */
static bool
filters_match(const Scope *s, text *stream, text *operation, TimestampTz occurred_at)
{
	if (s->streams && !text_in(s->streams, s->nstreams, stream))
		return false;
	if (s->operations && !text_in(s->operations, s->noperations, operation))
		return false;
	if (s->has_from_date && occurred_at < s->from_date)
		return false;
	return true;
}

static bool
path_holds(ArrayType *path, text *id)
{
	array_iter	it;
	int			n = ArrayGetNItems(ARR_NDIM(path), ARR_DIMS(path));

	array_iter_setup(&it, (AnyArrayType *) path);
	for (int i = 0; i < n; i++)
	{
		bool		isnull;
		Datum		d = array_iter_next(&it, &isnull, i, -1, false, TYPALIGN_INT);

		if (!isnull && text_equal(DatumGetTextPP(d), id))
			return true;
	}
	return false;
}

bool
scope_contains_resource(const Scope *s, text *resource_id, ArrayType *path)
{
	return s->resource_id == NULL ||
		(resource_id != NULL && text_equal(resource_id, s->resource_id)) ||
		(s->include_subresources && path != NULL && path_holds(path, s->resource_id));
}

bool
scope_contains(const Scope *s, text *resource_id, ArrayType *path,
			   text *stream, text *operation, TimestampTz occurred_at)
{
	if (!scope_contains_resource(s, resource_id, path))
		return false;
	return filters_match(s, stream, operation, occurred_at);
}

bool
scope_contains_elems(const Scope *s, text *resource_id, Datum *path, int npath,
					 text *stream, text *operation, TimestampTz occurred_at)
{
	if (s->resource_id != NULL &&
		!(resource_id != NULL && text_equal(resource_id, s->resource_id)))
	{
		bool		in = false;

		for (int i = 0; i < npath && s->include_subresources && !in; i++)
			in = text_equal(DatumGetTextPP(path[i]), s->resource_id);
		if (!in)
			return false;
	}
	return filters_match(s, stream, operation, occurred_at);
}

/* ---------------------------------------------------------------------
 * notify_ext._in_scope(resource_id text, include_subresources boolean,
 *     streams text[], operations text[], from_date timestamptz,
 *     event_resource_id text, event_resource_path text[],
 *     event_stream text, event_operation text, event_occurred_at timestamptz)
 *   returns boolean
 * --------------------------------------------------------------------- */

#define SCOPE_ARGS 5

/* The scope of the last call, with copies of the arguments it came from. */
typedef struct CachedScope
{
	MemoryContext cxt;			/* holds the copies and the scope */
	bool		isnull[SCOPE_ARGS];
	Datum		value[SCOPE_ARGS];	/* varlenas copied; by-value as they are */
	Scope		scope;
} CachedScope;

static bool
same_argument(CachedScope *c, FunctionCallInfo fcinfo, int i)
{
	if (c->isnull[i] != PG_ARGISNULL(i))
		return false;
	if (c->isnull[i])
		return true;
	if (i == 1 || i == 4)		/* boolean, timestamptz: by value */
		return c->value[i] == PG_GETARG_DATUM(i);
	else
	{
		struct varlena *a = (struct varlena *) DatumGetPointer(c->value[i]);
		struct varlena *b = PG_DETOAST_DATUM_PACKED(PG_GETARG_DATUM(i));

		return VARSIZE_ANY(a) == VARSIZE_ANY(b) && memcmp(a, b, VARSIZE_ANY(a)) == 0;
	}
}

static Scope *
scope_of_call(FunctionCallInfo fcinfo)
{
	CachedScope *c = (CachedScope *) fcinfo->flinfo->fn_extra;
	MemoryContext old;
	bool		same = (c != NULL);

	for (int i = 0; i < SCOPE_ARGS && same; i++)
		same = same_argument(c, fcinfo, i);
	if (same)
		return &c->scope;

	/* A new scope, in place of the old one. */
	if (c == NULL)
	{
		c = MemoryContextAllocZero(fcinfo->flinfo->fn_mcxt, sizeof(CachedScope));
		c->cxt = AllocSetContextCreate(fcinfo->flinfo->fn_mcxt, "notify_ext scope",
									   ALLOCSET_SMALL_SIZES);
		fcinfo->flinfo->fn_extra = c;
	}
	else
		MemoryContextReset(c->cxt);
	old = MemoryContextSwitchTo(c->cxt);
	for (int i = 0; i < SCOPE_ARGS; i++)
	{
		c->isnull[i] = PG_ARGISNULL(i);
		if (c->isnull[i])
			c->value[i] = (Datum) 0;
		else if (i == 1 || i == 4)
			c->value[i] = PG_GETARG_DATUM(i);
		else
		{
			struct varlena *v = PG_DETOAST_DATUM_PACKED(PG_GETARG_DATUM(i));

			c->value[i] = PointerGetDatum(memcpy(palloc(VARSIZE_ANY(v)), v, VARSIZE_ANY(v)));
		}
	}
	scope_from_values(&c->scope,
					  c->isnull[0] ? NULL : (text *) DatumGetPointer(c->value[0]),
					  !c->isnull[1] && DatumGetBool(c->value[1]),
					  c->isnull[2] ? NULL : DatumGetArrayTypeP(c->value[2]),
					  c->isnull[3] ? NULL : DatumGetArrayTypeP(c->value[3]),
					  !c->isnull[4], c->isnull[4] ? 0 : DatumGetTimestampTz(c->value[4]));
	MemoryContextSwitchTo(old);
	return &c->scope;
}

PG_FUNCTION_INFO_V1(notify_ext_in_scope);
Datum
notify_ext_in_scope(PG_FUNCTION_ARGS)
{
	Scope	   *s = scope_of_call(fcinfo);

	if (PG_ARGISNULL(7) || PG_ARGISNULL(8) || PG_ARGISNULL(9))
		PG_RETURN_BOOL(false);
	PG_RETURN_BOOL(scope_contains(s,
								  PG_ARGISNULL(5) ? NULL : PG_GETARG_TEXT_PP(5),
								  PG_ARGISNULL(6) ? NULL : PG_GETARG_ARRAYTYPE_P(6),
								  PG_GETARG_TEXT_PP(7), PG_GETARG_TEXT_PP(8),
								  PG_GETARG_TIMESTAMPTZ(9)));
}

/*
 * notify_ext._in_subtree(resource_id text, event_resource_id text,
 *     event_resource_path text[]) returns boolean: _in_scope() for the
 * commonest scope, a resource with its subtree and nothing else, with the
 * three arguments that scope needs: fetches plan their query per shape of
 * scope, so that this one does not pass five per event.
 */
PG_FUNCTION_INFO_V1(notify_ext_in_subtree);
Datum
notify_ext_in_subtree(PG_FUNCTION_ARGS)
{
	Scope		s = {0};

	s.resource_id = PG_ARGISNULL(0) ? NULL : PG_GETARG_TEXT_PP(0);
	s.include_subresources = true;
	PG_RETURN_BOOL(scope_contains_resource(&s,
										   PG_ARGISNULL(1) ? NULL : PG_GETARG_TEXT_PP(1),
										   PG_ARGISNULL(2) ? NULL : PG_GETARG_ARRAYTYPE_P(2)));
}
