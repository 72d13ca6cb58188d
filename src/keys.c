/*
 * keys.c: server keys that no SQL role can read through the extension.
 *
 * One master key of 32 random bytes lives in $PGDATA/notify_ext.key (mode
 * 0600, owned by the server's OS user).  It is created on first use: written
 * to a file private to this process, then hard-linked into place, so that
 * of two backends racing to create it exactly one wins and both use the
 * winner's key.  Each subsystem derives its own key from it with keyed
 * BLAKE2b (crypto_generichash) over "notify_ext:" || purpose, so keys for
 * different purposes are independent and none reveals the master key.
 *
 * The key is read once per backend and kept in locked memory.  A superuser
 * (or a member of pg_read_server_files) can read any file of the data
 * directory, this one included; nobody else can.
 *
 * Channel names for LISTEN are keyed hashes too (notify_ext_channel_name()):
 * PostgreSQL cannot permission-check LISTEN, so a channel is only private
 * while its name cannot be worked out without a server key.
 */
#include "postgres.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "common/base64.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/fd.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

#include "keys.h"

#define KEY_FILE "notify_ext.key"

static unsigned char master_key[NOTIFY_EXT_KEY_BYTES];
static bool master_loaded = false;

static bool
read_key_file(const char *path, unsigned char *out)
{
	int			fd;
	ssize_t		n;
	struct stat st;

	fd = open(path, O_RDONLY | PG_BINARY, 0);
	if (fd < 0)
	{
		if (errno == ENOENT)
			return false;
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not open notify_ext key file \"%s\": %m", path)));
	}
	if (fstat(fd, &st) == 0 && (st.st_mode & (S_IRWXG | S_IRWXO)) != 0)
	{
		close(fd);
		ereport(ERROR,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("notify_ext key file \"%s\" is readable by other users", path),
				 errhint("chmod 0600 the file.")));
	}
	n = read(fd, out, NOTIFY_EXT_KEY_BYTES);
	close(fd);
	if (n != NOTIFY_EXT_KEY_BYTES)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("notify_ext key file \"%s\" does not hold %d bytes", path, NOTIFY_EXT_KEY_BYTES),
				 errhint("Restore it from a backup; removing it invalidates every key derived from it.")));
	return true;
}

static void
create_key_file(const char *path)
{
	char		tmp[MAXPGPATH];
	unsigned char key[NOTIFY_EXT_KEY_BYTES];
	int			fd;
	int			save_errno;

	snprintf(tmp, sizeof(tmp), "%s/%s.tmp.%d", DataDir, KEY_FILE, (int) getpid());
	(void) unlink(tmp);
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | PG_BINARY, S_IRUSR | S_IWUSR);
	if (fd < 0)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not create notify_ext key file \"%s\": %m", tmp)));
	randombytes_buf(key, sizeof(key));
	if (write(fd, key, sizeof(key)) != sizeof(key) || pg_fsync(fd) != 0)
	{
		save_errno = errno;
		close(fd);
		unlink(tmp);
		sodium_memzero(key, sizeof(key));
		errno = save_errno;
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not write notify_ext key file \"%s\": %m", tmp)));
	}
	close(fd);
	sodium_memzero(key, sizeof(key));
	/* link() fails with EEXIST when another backend won the race: use its key */
	if (link(tmp, path) != 0 && errno != EEXIST)
	{
		save_errno = errno;
		unlink(tmp);
		errno = save_errno;
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not create notify_ext key file \"%s\": %m", path)));
	}
	unlink(tmp);
	fsync_fname(DataDir, true);
}

static void
load_master_key(void)
{
	char		path[MAXPGPATH];

	if (master_loaded)
		return;
	if (sodium_init() < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not initialize libsodium")));
	snprintf(path, sizeof(path), "%s/%s", DataDir, KEY_FILE);
	if (!read_key_file(path, master_key))
	{
		create_key_file(path);
		if (!read_key_file(path, master_key))
			ereport(ERROR,
					(errcode_for_file_access(),
					 errmsg("could not read notify_ext key file \"%s\" after creating it", path)));
	}
	(void) sodium_mlock(master_key, sizeof(master_key));
	master_loaded = true;
}

void
notify_ext_server_key(const char *purpose, unsigned char out[NOTIFY_EXT_KEY_BYTES])
{
	crypto_generichash_state st;
	static const char prefix[] = "notify_ext:";

	load_master_key();
	crypto_generichash_init(&st, master_key, sizeof(master_key), NOTIFY_EXT_KEY_BYTES);
	crypto_generichash_update(&st, (const unsigned char *) prefix, sizeof(prefix) - 1);
	crypto_generichash_update(&st, (const unsigned char *) purpose, strlen(purpose));
	crypto_generichash_final(&st, out, NOTIFY_EXT_KEY_BYTES);
	sodium_memzero(&st, sizeof(st));
}

/*
 * Per-purpose keys of the channel names, derived once per backend and kept
 * in locked memory.  There are only a few purposes (see principal.h).
 */
#define CHANNEL_PURPOSES_MAX 4

typedef struct ChannelKey
{
	const char *purpose;
	unsigned char key[NOTIFY_EXT_KEY_BYTES];
} ChannelKey;

static ChannelKey channel_keys[CHANNEL_PURPOSES_MAX];
static int	nchannel_keys = 0;

static const unsigned char *
channel_key(const char *purpose)
{
	ChannelKey *ck;

	for (int i = 0; i < nchannel_keys; i++)
		if (strcmp(channel_keys[i].purpose, purpose) == 0)
			return channel_keys[i].key;
	if (nchannel_keys == CHANNEL_PURPOSES_MAX)
		elog(ERROR, "too many notify_ext channel key purposes");
	ck = &channel_keys[nchannel_keys];
	notify_ext_server_key(purpose, ck->key);
	(void) sodium_mlock(ck->key, sizeof(ck->key));
	ck->purpose = MemoryContextStrdup(TopMemoryContext, purpose);
	nchannel_keys++;
	return ck->key;
}

void
notify_ext_channel_name(const char *purpose, const char *prefix,
						const void *msg, size_t len, char out[NAMEDATALEN])
{
	unsigned char h[NOTIFY_EXT_CHANNEL_HASH_BYTES];
	size_t		plen = strlen(prefix);

	/* A channel is an identifier: it must fit NAMEDATALEN - 1 bytes. */
	if (plen + NOTIFY_EXT_CHANNEL_HASH_BYTES * 2 >= NAMEDATALEN)
		elog(ERROR, "notify_ext channel prefix \"%s\" is too long", prefix);
	crypto_generichash(h, sizeof(h), (const unsigned char *) msg, len,
					   channel_key(purpose), NOTIFY_EXT_KEY_BYTES);
	memcpy(out, prefix, plen);
	sodium_bin2hex(out + plen, NAMEDATALEN - plen, h, sizeof(h));
	sodium_memzero(h, sizeof(h));
}

/* ---------------------------------------------------------------------
 * Replies of stream consumers: HMAC-SHA256 over reply "." salt, under a
 * server key per key generation ("stream-reply-<generation>").
 * --------------------------------------------------------------------- */

#define REPLY_SALT_BYTES 16

/*
 * A fetch signs, and an acknowledgement verifies, one reply per message:
 * the key is absorbed into an HMAC state once per key, and each reply
 * starts from a copy of that state.
 */
void
reply_key_load(ReplyKey *k, int generation)
{
	char		purpose[64];
	unsigned char key[NOTIFY_EXT_KEY_BYTES];

	StaticAssertStmt(crypto_auth_hmacsha256_KEYBYTES == NOTIFY_EXT_KEY_BYTES,
					 "reply keys are server keys");
	snprintf(purpose, sizeof(purpose), "stream-reply-%d", generation);
	notify_ext_server_key(purpose, key);
	crypto_auth_hmacsha256_init(&k->keyed, key, sizeof(key));
	sodium_memzero(key, sizeof(key));
	k->generation = generation;
}

void
reply_key_forget(ReplyKey *k)
{
	sodium_memzero(&k->keyed, sizeof(k->keyed));
	k->generation = 0;
}

static char *
base64(const unsigned char *bin, size_t len)
{
	int			size = pg_b64_enc_len(len) + 1;
	char	   *out = palloc(size);
	/* void pointers: the byte type of these arguments differs between versions */
	int			n = pg_b64_encode((const void *) bin, len, out, size);

	if (n < 0)
		elog(ERROR, "base64 encoding failed");
	out[n] = '\0';
	return out;
}

/*
 * Salts come from a pool: ChaCha20 output under a fresh 32-byte seed from
 * the system's random source, one seed per REPLY_SALT_POOL salts.  A fetch
 * hands out up to thousands of replies, and the system's source gives at
 * most 256 bytes per system call.
 */
#define REPLY_SALT_POOL 1024

char *
reply_salt(void)
{
	static unsigned char pool[REPLY_SALT_BYTES * REPLY_SALT_POOL];
	static int	used = REPLY_SALT_POOL;
	unsigned char *salt;
	char	   *out;

	if (used == REPLY_SALT_POOL)
	{
		unsigned char seed[randombytes_SEEDBYTES];

		randombytes_buf(seed, sizeof(seed));
		randombytes_buf_deterministic(pool, sizeof(pool), seed);
		sodium_memzero(seed, sizeof(seed));
		used = 0;
	}
	salt = pool + REPLY_SALT_BYTES * used++;
	out = base64(salt, REPLY_SALT_BYTES);
	sodium_memzero(salt, REPLY_SALT_BYTES);
	return out;
}

static void
reply_mac(const ReplyKey *k, const char *reply, const char *salt,
		  unsigned char mac[crypto_auth_hmacsha256_BYTES])
{
	crypto_auth_hmacsha256_state st = k->keyed;

	crypto_auth_hmacsha256_update(&st, (const unsigned char *) reply, strlen(reply));
	crypto_auth_hmacsha256_update(&st, (const unsigned char *) ".", 1);
	crypto_auth_hmacsha256_update(&st, (const unsigned char *) salt, strlen(salt));
	crypto_auth_hmacsha256_final(&st, mac);
	sodium_memzero(&st, sizeof(st));
}

char *
reply_hmac(const ReplyKey *k, const char *reply, const char *salt)
{
	unsigned char mac[crypto_auth_hmacsha256_BYTES];

	reply_mac(k, reply, salt, mac);
	return base64(mac, sizeof(mac));
}

ReplyCheck
reply_verify(const ReplyKey *k, const char *reply, const char *salt, const char *hmac_b64)
{
	unsigned char given[crypto_auth_hmacsha256_BYTES];
	unsigned char expected[crypto_auth_hmacsha256_BYTES];
	size_t		len;

	/*
	 * 44 characters, padding included, as base64() writes 32 bytes, and
	 * exactly those: the decoder ignores the two low bits of the last
	 * character, so four strings decode to the same bytes, and only the one
	 * handed out is a valid hmac.
	 */
	len = strlen(hmac_b64);
	if (len != 4 * ((crypto_auth_hmacsha256_BYTES + 2) / 3) ||
		pg_b64_decode(hmac_b64, len, (void *) given, sizeof(given)) != crypto_auth_hmacsha256_BYTES ||
		strcmp(base64(given, sizeof(given)), hmac_b64) != 0)
		return REPLY_MALFORMED;
	reply_mac(k, reply, salt, expected);
	return sodium_memcmp(given, expected, sizeof(expected)) == 0 ? REPLY_VALID : REPLY_FORGED;
}

/* ---------------------------------------------------------------------
 * Sealed secrets: nonce || crypto_secretbox(plain) under the server key
 * "auth-secrets" (webhook signing keys, auth config secrets).
 * --------------------------------------------------------------------- */

#define SEAL_KEY_PURPOSE "auth-secrets"

bytea *
seal_secret(const unsigned char *plain, Size len)
{
	unsigned char key[NOTIFY_EXT_KEY_BYTES];
	Size		outlen = crypto_secretbox_NONCEBYTES + crypto_secretbox_MACBYTES + len;
	bytea	   *out = palloc(VARHDRSZ + outlen);
	unsigned char *p = (unsigned char *) VARDATA(out);

	notify_ext_server_key(SEAL_KEY_PURPOSE, key);
	randombytes_buf(p, crypto_secretbox_NONCEBYTES);
	crypto_secretbox_easy(p + crypto_secretbox_NONCEBYTES, plain, len, p, key);
	sodium_memzero(key, sizeof(key));
	SET_VARSIZE(out, VARHDRSZ + outlen);
	return out;
}

bytea *
unseal_secret(const char *sealed, Size len)
{
	unsigned char key[NOTIFY_EXT_KEY_BYTES];
	bytea	   *out;
	const unsigned char *p = (const unsigned char *) sealed;
	int			rc;

	if (len < crypto_secretbox_NONCEBYTES + crypto_secretbox_MACBYTES)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("sealed notify_ext secret is too short (%zu bytes)", len)));
	len -= crypto_secretbox_NONCEBYTES;
	out = palloc(VARHDRSZ + len - crypto_secretbox_MACBYTES);
	notify_ext_server_key(SEAL_KEY_PURPOSE, key);
	rc = crypto_secretbox_open_easy((unsigned char *) VARDATA(out), p + crypto_secretbox_NONCEBYTES,
									len, p, key);
	sodium_memzero(key, sizeof(key));
	if (rc != 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("could not decrypt a notify_ext secret"),
				 errdetail("It was sealed under another server key than the one in $PGDATA/notify_ext.key."),
				 errhint("Restore the key file the secrets were created with, or create the auth configs and webhooks again.")));
	SET_VARSIZE(out, VARHDRSZ + len - crypto_secretbox_MACBYTES);
	return out;
}

PG_FUNCTION_INFO_V1(notify_ext_webhook_seal);
Datum
notify_ext_webhook_seal(PG_FUNCTION_ARGS)
{
	bytea	   *plain = PG_GETARG_BYTEA_PP(0);

	PG_RETURN_BYTEA_P(seal_secret((unsigned char *) VARDATA_ANY(plain), VARSIZE_ANY_EXHDR(plain)));
}

PG_FUNCTION_INFO_V1(notify_ext_webhook_unseal);
Datum
notify_ext_webhook_unseal(PG_FUNCTION_ARGS)
{
	bytea	   *sealed = PG_GETARG_BYTEA_PP(0);

	PG_RETURN_BYTEA_P(unseal_secret(VARDATA_ANY(sealed), VARSIZE_ANY_EXHDR(sealed)));
}

PG_FUNCTION_INFO_V1(notify_ext_webhook_new_signing_key);
Datum
notify_ext_webhook_new_signing_key(PG_FUNCTION_ARGS)
{
	unsigned char key[32];
	bytea	   *out;

	if (sodium_init() < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not initialize libsodium")));
	randombytes_buf(key, sizeof(key));
	out = seal_secret(key, sizeof(key));
	sodium_memzero(key, sizeof(key));
	PG_RETURN_BYTEA_P(out);
}

/* ---------------------------------------------------------------------
 * Webhook signatures (Standard Webhooks): "v1," and the base64
 * HMAC-SHA256 of "<webhook-id>.<webhook-timestamp>.<body>" under the
 * webhook's signing key.
 * --------------------------------------------------------------------- */

void
webhook_signature(const unsigned char key[WEBHOOK_SIGNING_KEY_BYTES], const char *msgid,
				  const char *timestamp, const char *body, size_t bodylen,
				  char out[WEBHOOK_SIGNATURE_LEN])
{
	unsigned char mac[crypto_auth_hmacsha256_BYTES];
	crypto_auth_hmacsha256_state st;

	StaticAssertStmt(WEBHOOK_SIGNATURE_LEN >= 3 + sodium_base64_ENCODED_LEN(crypto_auth_hmacsha256_BYTES,
																		   sodium_base64_VARIANT_ORIGINAL),
					 "room for the signature");
	crypto_auth_hmacsha256_init(&st, key, WEBHOOK_SIGNING_KEY_BYTES);
	crypto_auth_hmacsha256_update(&st, (const unsigned char *) msgid, strlen(msgid));
	crypto_auth_hmacsha256_update(&st, (const unsigned char *) ".", 1);
	crypto_auth_hmacsha256_update(&st, (const unsigned char *) timestamp, strlen(timestamp));
	crypto_auth_hmacsha256_update(&st, (const unsigned char *) ".", 1);
	crypto_auth_hmacsha256_update(&st, (const unsigned char *) body, bodylen);
	crypto_auth_hmacsha256_final(&st, mac);
	memcpy(out, "v1,", 3);
	sodium_bin2base64(out + 3, WEBHOOK_SIGNATURE_LEN - 3, mac, sizeof(mac), sodium_base64_VARIANT_ORIGINAL);
	sodium_memzero(&st, sizeof(st));
}
