/*
 * relay_subject.h: the NATS subject and headers a relay gives an event
 * (docs/relays.md, "Subjects").
 *
 *   <prefix>.<operation: two tokens>.<path ids...>
 *
 * The operation is always two tokens, what comes before its last dot and
 * what comes after it ("%" and the operation when it has no dot), so that
 * the path starts at the same token whatever the operation: an operation
 * cannot end with ids that make its event look as if it were in another
 * subtree.  Each id of the resource's path (root first, the resource last)
 * is one token.  Inside a token, the bytes NATS gives meaning to or that
 * would break a subject ('.', '*', '>', whitespace, control characters)
 * and '%' itself are written %XX (two upper-case hex digits); an empty
 * token is written "%".  An operation token longer than
 * RELAY_OPERATION_TOKEN_MAX is written "%+", and a subject longer than
 * RELAY_SUBJECT_MAX keeps the path ids that fit and ends with the token
 * "%+": NATS servers refuse longer subjects (max_control_line, 4 kB by
 * default), and a refused message would stop the relay.
 */
#ifndef NOTIFY_EXT_RELAY_SUBJECT_H
#define NOTIFY_EXT_RELAY_SUBJECT_H

#include "lib/stringinfo.h"

#define RELAY_SUBJECT_MAX 2048
#define RELAY_OPERATION_TOKEN_MAX 256
/* Header values longer than this are cut there and end with "%+". */
#define RELAY_HEADER_VALUE_MAX 1024

/*
 * Appends the subject of an event to buf.  path holds npath ids (text
 * datums, root first); with none, the subject ends with the operation.
 */
extern void relay_subject(StringInfo buf, const char *prefix, const char *operation,
						  int oplen, Datum *path, int npath);

/*
 * Appends value as a header value: control characters and '%' as %XX, cut
 * at RELAY_HEADER_VALUE_MAX bytes.
 */
extern void relay_header_value(StringInfo buf, const char *value, int len);

#endif							/* NOTIFY_EXT_RELAY_SUBJECT_H */
