/*
 * relay_subject.c: the NATS subject of an event, keeping its resource tree
 * so that filter subjects with wildcards select an operation and a subtree
 * (notify.dataset.update.p1.> is every dataset updated under project p1).
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"

#include "relay_subject.h"

static const char hexdigits[] = "0123456789ABCDEF";

static inline bool
escaped_in_token(unsigned char c)
{
	return c <= ' ' || c == 0x7f || c == '.' || c == '*' || c == '>' || c == '%';
}

/* Appends one token: s (len bytes) escaped. */
static void
append_token(StringInfo buf, const char *s, int len)
{
	if (len == 0)
	{
		appendStringInfoChar(buf, '%');
		return;
	}
	for (int i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) s[i];

		if (escaped_in_token(c))
		{
			appendStringInfoChar(buf, '%');
			appendStringInfoChar(buf, hexdigits[c >> 4]);
			appendStringInfoChar(buf, hexdigits[c & 15]);
		}
		else
			appendStringInfoChar(buf, (char) c);
	}
}

/* Appends one token of the operation: escaped, or "%+" when too long. */
static void
append_operation_token(StringInfo buf, const char *s, int len)
{
	int			before = buf->len;

	append_token(buf, s, len);
	if (buf->len - before > RELAY_OPERATION_TOKEN_MAX)
	{
		buf->len = before;
		buf->data[before] = '\0';
		appendStringInfoString(buf, "%+");
	}
}

void
relay_subject(StringInfo buf, const char *prefix, const char *operation, int oplen,
			  Datum *path, int npath)
{
	int			start_len = buf->len;
	int			last_dot = -1;

	appendStringInfoString(buf, prefix);
	for (int i = 0; i < oplen; i++)
		if (operation[i] == '.')
			last_dot = i;
	appendStringInfoChar(buf, '.');
	if (last_dot < 0)
		appendStringInfoChar(buf, '%');
	else
		append_operation_token(buf, operation, last_dot);
	appendStringInfoChar(buf, '.');
	append_operation_token(buf, operation + last_dot + 1, oplen - last_dot - 1);
	for (int i = 0; i < npath; i++)
	{
		text	   *id = DatumGetTextPP(path[i]);
		int			before = buf->len;

		appendStringInfoChar(buf, '.');
		append_token(buf, VARDATA_ANY(id), VARSIZE_ANY_EXHDR(id));
		if (buf->len - start_len > RELAY_SUBJECT_MAX - 3)
		{
			buf->len = before;
			buf->data[before] = '\0';
			appendStringInfoString(buf, ".%+");
			break;
		}
	}
}

void
relay_header_value(StringInfo buf, const char *value, int len)
{
	int			start_len = buf->len;

	for (int i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) value[i];

		if (buf->len - start_len > RELAY_HEADER_VALUE_MAX - 3)
		{
			appendStringInfoString(buf, "%+");
			break;
		}
		if (c < ' ' || c == 0x7f || c == '%')
		{
			appendStringInfoChar(buf, '%');
			appendStringInfoChar(buf, hexdigits[c >> 4]);
			appendStringInfoChar(buf, hexdigits[c & 15]);
		}
		else
			appendStringInfoChar(buf, (char) c);
	}
}

/*
 * notify_ext.relay_subject(subject_prefix text, operation text,
 *     resource_path text[] default null) returns text
 */
PG_FUNCTION_INFO_V1(notify_ext_relay_subject);
Datum
notify_ext_relay_subject(PG_FUNCTION_ARGS)
{
	StringInfoData buf;
	text	   *op;
	Datum	   *elems = NULL;
	bool	   *nulls = NULL;
	int			n = 0;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		PG_RETURN_NULL();
	op = PG_GETARG_TEXT_PP(1);
	if (!PG_ARGISNULL(2))
	{
		deconstruct_array(PG_GETARG_ARRAYTYPE_P(2), TEXTOID, -1, false, TYPALIGN_INT,
						  &elems, &nulls, &n);
		for (int i = 0; i < n; i++)
			if (nulls[i])
				ereport(ERROR,
						(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
						 errmsg("a resource path must not contain NULL")));
	}
	initStringInfo(&buf);
	relay_subject(&buf, text_to_cstring(PG_GETARG_TEXT_PP(0)), VARDATA_ANY(op),
				  VARSIZE_ANY_EXHDR(op), elems, n);
	PG_RETURN_TEXT_P(cstring_to_text_with_len(buf.data, buf.len));
}

static int
hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* notify_ext.relay_subject_token(token text) returns text: the text it stands for. */
PG_FUNCTION_INFO_V1(notify_ext_relay_subject_token);
Datum
notify_ext_relay_subject_token(PG_FUNCTION_ARGS)
{
	text	   *t = PG_GETARG_TEXT_PP(0);
	const char *s = VARDATA_ANY(t);
	int			len = VARSIZE_ANY_EXHDR(t);
	StringInfoData buf;

	if (len == 1 && s[0] == '%')
		PG_RETURN_TEXT_P(cstring_to_text(""));
	initStringInfo(&buf);
	for (int i = 0; i < len; i++)
	{
		if (s[i] != '%')
		{
			if (s[i] == '.' || (unsigned char) s[i] <= ' ')
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("\"%.*s\" is not one token of a relay's subject", len, s),
						 errhint("Split the subject at its dots and decode each token.")));
			appendStringInfoChar(&buf, s[i]);
			continue;
		}
		if (i + 2 >= len)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("token \"%.*s\" ends in the middle of an escape", len, s),
					 errhint("Escapes are %% and two hex digits; \"%%+\" marks a token or a path cut short.")));
		if (hexval(s[i + 1]) < 0 || hexval(s[i + 2]) < 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("token \"%.*s\" has an escape that is not %% and two hex digits", len, s),
					 errhint("\"%%+\" marks a token or a path cut short; it stands for no text.")));
		appendStringInfoChar(&buf, (char) (hexval(s[i + 1]) * 16 + hexval(s[i + 2])));
		i += 2;
	}
	PG_RETURN_TEXT_P(cstring_to_text_with_len(buf.data, buf.len));
}
