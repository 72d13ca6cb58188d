/*
 * spi_plan.c: statements planned once per session, as generic plans:
 * planning a query on the partitioned event log costs more than running it.
 */
#include "postgres.h"

#include "common/hashfn.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"

#include "spi_plan.h"

typedef struct SavedPlan
{
	const char *sql;			/* hash key: the statement's text */
	SPIPlanPtr	plan;
} SavedPlan;

static HTAB *saved_plans = NULL;

static uint32
sql_hash(const void *key, Size keysize)
{
	const char *sql = *(const char *const *) key;

	return hash_bytes((const unsigned char *) sql, strlen(sql));
}

static int
sql_match(const void *a, const void *b, Size keysize)
{
	return strcmp(*(const char *const *) a, *(const char *const *) b);
}

SPIPlanPtr
spi_plan(const char *sql, int nargs, Oid *argtypes)
{
	SavedPlan  *sp;
	bool		found;

	if (saved_plans == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(const char *);
		ctl.entrysize = sizeof(SavedPlan);
		ctl.hash = sql_hash;
		ctl.match = sql_match;
		ctl.hcxt = TopMemoryContext;
		saved_plans = hash_create("notify_ext saved plans", 64, &ctl,
								  HASH_ELEM | HASH_FUNCTION | HASH_COMPARE | HASH_CONTEXT);
	}
	sp = hash_search(saved_plans, &sql, HASH_FIND, &found);
	if (sp == NULL)
	{
		SPIPlanPtr	plan = SPI_prepare_cursor(sql, nargs, argtypes, CURSOR_OPT_GENERIC_PLAN);
		char	   *key;

		if (plan == NULL)
			elog(ERROR, "SPI_prepare failed for \"%s\": %s", sql, SPI_result_code_string(SPI_result));
		if (SPI_keepplan(plan) != 0)
			elog(ERROR, "SPI_keepplan failed for \"%s\"", sql);
		key = MemoryContextStrdup(TopMemoryContext, sql);
		sp = hash_search(saved_plans, &key, HASH_ENTER, &found);
		sp->sql = key;
		sp->plan = plan;
	}
	return sp->plan;
}

int
spi_run(const char *sql, int nargs, Oid *argtypes, Datum *values, const char *nulls,
		bool read_only, long count)
{
	return SPI_execute_plan(spi_plan(sql, nargs, argtypes), values, nulls, read_only, count);
}
