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

#include "miscadmin.h"
#include "storage/fd.h"
#include "utils/memutils.h"

#include "principal.h"

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
