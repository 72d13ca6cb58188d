/*
 * lock_guard.c: LOCK TABLE on the extension's relations.
 *
 * PostgreSQL lets whoever holds UPDATE, DELETE or TRUNCATE on a table lock
 * it in any mode.  PUBLIC may DELETE and UPDATE (read) rows of
 * notify_ext.notifications (row-level security keeps each role to its own
 * rows), so without this guard any role could hold
 * LOCK TABLE notify_ext.notifications IN ACCESS EXCLUSIVE MODE in an open
 * transaction and stop every inbox call of every principal.  The same goes
 * for a view of the role's own over that table: LOCK on a view locks the
 * relations it reads, in the same mode.
 *
 * So a LOCK TABLE in a mode stronger than ROW EXCLUSIVE (the mode the
 * role's own UPDATE or DELETE takes anyway) is refused with 42501 when it
 * would lock, directly or through views, a relation of schema notify_ext
 * that the current user does not own.  Weaker modes, and every lock that
 * ordinary statements take, are left alone.
 */
#include "postgres.h"

#include "access/relation.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "miscadmin.h"
#include "nodes/nodeFuncs.h"
#include "nodes/parsenodes.h"
#include "rewrite/rewriteHandler.h"
#include "storage/lmgr.h"
#include "storage/lock.h"
#include "tcop/utility.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

#include "lock_guard.h"

static ProcessUtility_hook_type prev_process_utility = NULL;

typedef struct LockCheck
{
	Oid			nsp;			/* notify_ext's namespace */
	LOCKMODE	mode;
	const char *named;			/* the relation the statement names */
	List	   *views;			/* views already looked into */
} LockCheck;

static void check_relation(Oid relid, LockCheck *c);

/* A lock mode as LOCK TABLE spells it. */
static const char *
lock_mode_sql(LOCKMODE mode)
{
	static const char *const names[] = {
		"", "ACCESS SHARE", "ROW SHARE", "ROW EXCLUSIVE", "SHARE UPDATE EXCLUSIVE",
		"SHARE", "SHARE ROW EXCLUSIVE", "EXCLUSIVE", "ACCESS EXCLUSIVE"
	};

	return (mode > 0 && mode <= MaxLockMode) ? names[mode] : "?";
}

static bool
check_walker(Node *node, LockCheck *c)
{
	if (node == NULL)
		return false;
	if (IsA(node, Query))
		return query_tree_walker((Query *) node, check_walker, (void *) c,
								 QTW_EXAMINE_RTES_BEFORE);
	if (IsA(node, RangeTblEntry))
	{
		RangeTblEntry *rte = (RangeTblEntry *) node;

		if (rte->rtekind == RTE_RELATION)
			check_relation(rte->relid, c);
		return false;
	}
	return expression_tree_walker(node, check_walker, (void *) c);
}

static void
check_relation(Oid relid, LockCheck *c)
{
	check_stack_depth();
	if (get_rel_namespace(relid) == c->nsp)
	{
		if (!pg_class_ownercheck(relid, GetUserId()))
		{
			char	   *relname = get_rel_name(relid);

			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("LOCK TABLE %s IN %s MODE is refused: it would lock notify_ext.%s, which role \"%s\" does not own",
							c->named, lock_mode_sql(c->mode),
							relname ? relname : "?", GetUserNameFromId(GetUserId(), false)),
					 errdetail("Locks stronger than ROW EXCLUSIVE on the extension's relations would stop the calls of every other role."),
					 errhint("Use ROW EXCLUSIVE MODE or a weaker mode, or the extension's functions.")));
		}
		return;
	}
	if (get_rel_relkind(relid) == RELKIND_VIEW && !list_member_oid(c->views, relid))
	{
		Relation	view;

		c->views = lappend_oid(c->views, relid);
		view = relation_open(relid, AccessShareLock);
		(void) check_walker((Node *) get_view_query(view), c);
		relation_close(view, AccessShareLock);
	}
}

static void
check_lock_stmt(LockStmt *stmt)
{
	LockCheck	c;
	ListCell   *lc;

	if (stmt->mode <= RowExclusiveLock || superuser())
		return;
	c.nsp = get_namespace_oid("notify_ext", true);
	if (!OidIsValid(c.nsp))
		return;
	c.mode = stmt->mode;
	c.views = NIL;
	foreach(lc, stmt->relations)
	{
		RangeVar   *rv = lfirst_node(RangeVar, lc);
		Oid			relid = RangeVarGetRelid(rv, NoLock, true);

		if (!OidIsValid(relid))
			continue;			/* LockTableCommand reports it */
		c.named = quote_qualified_identifier(rv->schemaname, rv->relname);
		check_relation(relid, &c);
	}
	list_free(c.views);
}

static void
lock_guard_process_utility(PlannedStmt *pstmt, const char *queryString, bool readOnlyTree,
						   ProcessUtilityContext context, ParamListInfo params,
						   QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc)
{
	if (IsA(pstmt->utilityStmt, LockStmt))
		check_lock_stmt((LockStmt *) pstmt->utilityStmt);
	if (prev_process_utility)
		prev_process_utility(pstmt, queryString, readOnlyTree, context, params,
							 queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context, params,
								queryEnv, dest, qc);
}

void
lock_guard_init(void)
{
	prev_process_utility = ProcessUtility_hook;
	ProcessUtility_hook = lock_guard_process_utility;
}
