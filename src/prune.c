/*
 * prune.c: what notify_ext.prune() takes from C.  The pruning itself is
 * PL/pgSQL (sql/code/40_retention.sql, see docs/retention.md); it reads the
 * day partitions of the event log and how many rows they hold from the
 * catalogs and the statistics here, without planning a query.
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "fmgr.h"
#include "funcapi.h"
#include "pgstat.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "event_route.h"
#include "extension.h"

/*
 * Whether VACUUM has counted the partition since it last changed: reltuples
 * >= 0, no insert since the last VACUUM, no change since the last ANALYZE,
 * no dead row, and it has been vacuumed.  Then reltuples is its count.
 */
static bool
vacuum_counted(Oid rel, float4 reltuples)
{
	PgStat_StatTabEntry *tab = pgstat_fetch_stat_tabentry(rel);

	return reltuples >= 0 && tab != NULL &&
		tab->inserts_since_vacuum == 0 &&
		tab->changes_since_analyze == 0 &&
		tab->n_dead_tuples == 0 &&
		(tab->vacuum_timestamp != 0 || tab->autovac_vacuum_timestamp != 0);
}

/*
 * notify_ext._day_partitions(ended_by timestamptz default 'infinity')
 *   returns table (rel regclass, name text, lower_bound timestamptz,
 *                  upper_bound timestamptz, reltuples real, vacuum_counted boolean)
 *
 * The day partitions of the event log whose upper bound is at or before
 * ended_by (the default partition, which has no bounds, is left out), with
 * pg_class.reltuples and whether VACUUM has counted the partition since it
 * last changed.  Takes no lock on the partitions.
 */
PG_FUNCTION_INFO_V1(notify_ext_day_partitions);
Datum
notify_ext_day_partitions(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	TimestampTz ended_by = PG_ARGISNULL(0) ? DT_NOEND : PG_GETARG_TIMESTAMPTZ(0);
	Oid			log = get_relname_relid("event_log", extension_schema());
	EventPartitionBounds *bounds;
	Oid			deflt;
	int			n;

	InitMaterializedSRF(fcinfo, 0);
	if (!OidIsValid(log))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation \"notify_ext.event_log\" does not exist")));
	n = event_partitions_read(log, &bounds, &deflt);
	for (int i = 0; i < n; i++)
	{
		HeapTuple	ctup;
		Form_pg_class form;
		Datum		values[6];
		bool		nulls[6] = {false};

		if (bounds[i].lower_unbounded || bounds[i].upper_unbounded || bounds[i].upper > ended_by)
			continue;
		ctup = SearchSysCache1(RELOID, ObjectIdGetDatum(bounds[i].rel));
		if (!HeapTupleIsValid(ctup))
			continue;
		form = (Form_pg_class) GETSTRUCT(ctup);
		values[0] = ObjectIdGetDatum(bounds[i].rel);
		values[1] = CStringGetTextDatum(NameStr(form->relname));
		values[2] = TimestampTzGetDatum(bounds[i].lower);
		values[3] = TimestampTzGetDatum(bounds[i].upper);
		values[4] = Float4GetDatum(form->reltuples);
		values[5] = BoolGetDatum(vacuum_counted(bounds[i].rel, form->reltuples));
		ReleaseSysCache(ctup);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
