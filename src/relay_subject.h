/*
 * relay_subject.h: the NATS subject and headers a relay gives an event
 * (docs/relays.md, "Subjects").
 *
 *   <prefix>.<operation tokens>.<path ids...>
 *
 * The operation is split at its dots into tokens; each id of the
 * resource's path (root first, the resource last) is one token.  Inside a
 * token, the bytes NATS gives meaning to or that would break a subject
 * ('.', '*', '>', whitespace, control characters) and '%' itself are
 * written %XX (two upper-case hex digits); an empty token is written "%".
 * A subject longer than RELAY_SUBJECT_MAX keeps the path ids that fit and
 * ends with the token "%+".
 */
#ifndef NOTIFY_EXT_RELAY_SUBJECT_H
#define NOTIFY_EXT_RELAY_SUBJECT_H

#include "lib/stringinfo.h"

#define RELAY_SUBJECT_MAX 2048

/*
 * Appends the subject of an event to buf.  path holds npath ids (text
 * datums, root first); with none, the subject ends with the operation.
 */
extern void relay_subject(StringInfo buf, const char *prefix, const char *operation,
						  int oplen, Datum *path, int npath);

/* Appends value as a header value: control characters and '%' as %XX. */
extern void relay_header_value(StringInfo buf, const char *value, int len);

#endif							/* NOTIFY_EXT_RELAY_SUBJECT_H */
