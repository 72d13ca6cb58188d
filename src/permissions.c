/*
 * permissions.c: calling notify_ext.permission_function as the caller.
 *
 * The permission check of notify_ext.has_permission() and of the functions
 * that need ADMIN runs inside SECURITY DEFINER functions owned by a
 * superuser.  A user-written permission function must not run with those
 * privileges, so it is called here with the current user switched back to
 * the caller (the outer role), like a trigger of the caller would be.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/regproc.h"

#include "principal.h"

/*
 * notify_ext._call_permission_function(fn regprocedure, principal text,
 * resource_id text, level text) returns boolean.  NULL from the function
 * counts as false.
 */
PG_FUNCTION_INFO_V1(notify_ext_call_permission_function);
Datum
notify_ext_call_permission_function(PG_FUNCTION_ARGS)
{
	Oid			fn = PG_GETARG_OID(0);
	Oid			save_userid;
	int			save_sec_context;
	FmgrInfo	flinfo;
	volatile Datum result = BoolGetDatum(false);
	volatile bool isnull = true;

	if (InSecurityRestrictedOperation())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("notify_ext cannot call the permission function inside a security-restricted operation")));
	if (get_func_rettype(fn) != BOOLOID || get_func_retset(fn))
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("permission function %s does not return one boolean", format_procedure(fn)),
				 errhint("notify_ext.permission_function must name a function (principal text, resource_id text, level text) returns boolean.")));

	fmgr_info(fn, &flinfo);
	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(GetOuterUserId(), save_sec_context | SECURITY_LOCAL_USERID_CHANGE);
	PG_TRY();
	{
		LOCAL_FCINFO(fcinfo2, 3);
		int			i;

		InitFunctionCallInfoData(*fcinfo2, &flinfo, 3, PG_GET_COLLATION(), NULL, NULL);
		for (i = 0; i < 3; i++)
		{
			fcinfo2->args[i].value = PG_GETARG_DATUM(i + 1);
			fcinfo2->args[i].isnull = PG_ARGISNULL(i + 1);
		}
		result = FunctionCallInvoke(fcinfo2);
		isnull = fcinfo2->isnull;
	}
	PG_FINALLY();
	{
		SetUserIdAndSecContext(save_userid, save_sec_context);
	}
	PG_END_TRY();
	PG_RETURN_BOOL(!isnull && DatumGetBool(result));
}
