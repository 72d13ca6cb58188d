/*
 * keys.h: server keys that no SQL role can read, and everything signed or
 * named with them.
 *
 *   notify_ext_server_key(purpose, out): a 32-byte key for one purpose,
 *     derived from the master key file $PGDATA/notify_ext.key (created with
 *     mode 0600 on first use).  No SQL role can read it through the
 *     extension.
 *   notify_ext_channel_name(purpose, prefix, msg, len, out): the LISTEN
 *     channel prefix || hex(BLAKE2b-128(key = server key of purpose, msg)),
 *     a valid identifier shorter than NAMEDATALEN (prefix: lower-case
 *     letters, digits and "_", at most 31 bytes).  Channel names are
 *     capabilities: whoever knows one can LISTEN on it.  Purposes in use:
 *     "inbox-channel" (msg = principal, inbox.c) and "consumer-channel"
 *     (msg = the consumer's 16 uuid bytes, consumer.c).
 */
#ifndef NOTIFY_EXT_KEYS_H
#define NOTIFY_EXT_KEYS_H

#include <sodium.h>

#define NOTIFY_EXT_KEY_BYTES 32
extern void notify_ext_server_key(const char *purpose, unsigned char out[NOTIFY_EXT_KEY_BYTES]);

#define NOTIFY_EXT_CHANNEL_HASH_BYTES 16
extern void notify_ext_channel_name(const char *purpose, const char *prefix,
									const void *msg, size_t len, char out[NAMEDATALEN]);

/*
 * Replies of stream consumers ("<generation>.<consumer>.<seq>") are signed
 * with HMAC-SHA256 over reply "." salt, under the server key of their key
 * generation; salts and HMACs are base64.  Verification is constant-time.
 */
typedef struct ReplyKey
{
	int			generation;
	/* the HMAC state with the key absorbed (keys.c) */
	crypto_auth_hmacsha256_state keyed;
} ReplyKey;

typedef enum ReplyCheck
{
	REPLY_VALID,
	REPLY_FORGED,
	REPLY_MALFORMED				/* the hmac is not a base64 HMAC-SHA256 */
} ReplyCheck;

extern void reply_key_load(ReplyKey *k, int generation);
extern void reply_key_forget(ReplyKey *k);
extern char *reply_salt(void);
extern char *reply_hmac(const ReplyKey *k, const char *reply, const char *salt);
extern ReplyCheck reply_verify(const ReplyKey *k, const char *reply, const char *salt,
							   const char *hmac_b64);

/* Secrets at rest: nonce || crypto_secretbox(plain) under a server key. */
extern bytea *seal_secret(const unsigned char *plain, Size len);
extern bytea *unseal_secret(const char *sealed, Size len);

/*
 * The Standard Webhooks signature of a delivery: "v1,<base64 HMAC-SHA256
 * of msgid.timestamp.body>" under the webhook's signing key.
 */
#define WEBHOOK_SIGNING_KEY_BYTES 32
#define WEBHOOK_SIGNATURE_LEN 64
extern void webhook_signature(const unsigned char key[WEBHOOK_SIGNING_KEY_BYTES], const char *msgid,
							  const char *timestamp, const char *body, size_t bodylen,
							  char out[WEBHOOK_SIGNATURE_LEN]);

#endif							/* NOTIFY_EXT_KEYS_H */
