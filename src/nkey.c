/*
 * nkey.c: NATS NKeys of users.
 *
 * An NKey seed is base32 (RFC 4648, no padding) of two prefix bytes (seed,
 * user), the 32-byte Ed25519 seed and a CRC-16/XMODEM of those, little
 * endian.  The public key is base32 of the user prefix byte, the 32-byte
 * Ed25519 public key and its CRC.  The server sends a nonce; the client
 * answers with the public key (or a user JWT) and its Ed25519 signature of
 * the nonce.
 */
#include "postgres.h"

#include <sodium.h>

#include "fmgr.h"
#include "utils/builtins.h"

#include "nkey.h"

#define PREFIX_BYTE_SEED (18 << 3)
#define PREFIX_BYTE_USER (20 << 3)

static const char b32[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

static uint16
crc16(const unsigned char *p, size_t n)
{
	uint16		crc = 0;

	for (size_t i = 0; i < n; i++)
	{
		crc ^= (uint16) p[i] << 8;
		for (int b = 0; b < 8; b++)
			crc = (crc & 0x8000) ? (uint16) ((crc << 1) ^ 0x1021) : (uint16) (crc << 1);
	}
	return crc;
}

/* Decodes base32 without padding; returns the byte count, -1 when malformed. */
static int
b32_decode(const char *s, unsigned char *out, int max)
{
	uint32		acc = 0;
	int			bits = 0;
	int			n = 0;

	for (; *s; s++)
	{
		const char *p = strchr(b32, *s);

		if (p == NULL || *s == '\0')
			return -1;
		acc = (acc << 5) | (uint32) (p - b32);
		bits += 5;
		if (bits >= 8)
		{
			if (n == max)
				return -1;
			bits -= 8;
			out[n++] = (unsigned char) (acc >> bits);
		}
	}
	return n;
}

static void
b32_encode(const unsigned char *in, int n, char *out)
{
	uint32		acc = 0;
	int			bits = 0;
	char	   *o = out;

	for (int i = 0; i < n; i++)
	{
		acc = (acc << 8) | in[i];
		bits += 8;
		while (bits >= 5)
		{
			bits -= 5;
			*o++ = b32[(acc >> bits) & 31];
		}
	}
	if (bits > 0)
		*o++ = b32[(acc << (5 - bits)) & 31];
	*o = '\0';
}

bool
nkey_decode_user_seed(const char *seed, unsigned char raw[NKEY_SEED_BYTES], const char **why)
{
	unsigned char buf[64];
	int			n = b32_decode(seed, buf, sizeof(buf));
	uint16		crc;
	int			prefix;

	if (n != 2 + NKEY_SEED_BYTES + 2)
	{
		*why = "it is not a base32 NKey seed";
		return false;
	}
	crc = (uint16) (buf[n - 2] | (buf[n - 1] << 8));
	if (crc16(buf, n - 2) != crc)
	{
		*why = "its checksum is wrong";
		return false;
	}
	prefix = ((buf[0] & 7) << 5) | ((buf[1] & 248) >> 3);
	if ((buf[0] & 248) != PREFIX_BYTE_SEED)
	{
		*why = "it is not a seed (seeds start with S)";
		return false;
	}
	if (prefix != PREFIX_BYTE_USER)
	{
		*why = "it is not the seed of a user (user seeds start with SU)";
		return false;
	}
	memcpy(raw, buf + 2, NKEY_SEED_BYTES);
	sodium_memzero(buf, sizeof(buf));
	return true;
}

void
nkey_public_key(const unsigned char raw[NKEY_SEED_BYTES], char out[NKEY_PUBLIC_LEN + 1])
{
	unsigned char pk[crypto_sign_PUBLICKEYBYTES];
	unsigned char sk[crypto_sign_SECRETKEYBYTES];
	unsigned char buf[1 + crypto_sign_PUBLICKEYBYTES + 2];
	uint16		crc;

	crypto_sign_seed_keypair(pk, sk, raw);
	sodium_memzero(sk, sizeof(sk));
	buf[0] = PREFIX_BYTE_USER;
	memcpy(buf + 1, pk, sizeof(pk));
	crc = crc16(buf, 1 + sizeof(pk));
	buf[1 + sizeof(pk)] = (unsigned char) (crc & 0xff);
	buf[2 + sizeof(pk)] = (unsigned char) (crc >> 8);
	b32_encode(buf, sizeof(buf), out);
}

void
nkey_sign(const unsigned char raw[NKEY_SEED_BYTES], const unsigned char *msg, size_t len,
		  unsigned char sig[NKEY_SIGNATURE_BYTES])
{
	unsigned char pk[crypto_sign_PUBLICKEYBYTES];
	unsigned char sk[crypto_sign_SECRETKEYBYTES];

	crypto_sign_seed_keypair(pk, sk, raw);
	crypto_sign_detached(sig, NULL, msg, len, sk);
	sodium_memzero(sk, sizeof(sk));
}

/* The first line of the block after a line holding marker, palloc'd. */
static char *
block_after(const char *text, const char *marker)
{
	const char *p = strstr(text, marker);
	const char *end;

	if (p == NULL)
		return NULL;
	p = strchr(p, '\n');
	if (p == NULL)
		return NULL;
	while (*p == '\n' || *p == '\r' || *p == ' ' || *p == '\t')
		p++;
	end = p + strcspn(p, "\r\n");
	while (end > p && (end[-1] == ' ' || end[-1] == '\t'))
		end--;
	if (end == p || *p == '-')
		return NULL;
	return pnstrdup(p, end - p);
}

bool
nkey_parse_credentials(const char *creds, char **jwt, char **seed, const char **why)
{
	*jwt = block_after(creds, "BEGIN NATS USER JWT");
	if (*jwt == NULL)
	{
		*why = "it has no \"-----BEGIN NATS USER JWT-----\" block";
		return false;
	}
	*seed = block_after(creds, "BEGIN USER NKEY SEED");
	if (*seed == NULL)
	{
		*why = "it has no \"-----BEGIN USER NKEY SEED-----\" block";
		return false;
	}
	return true;
}

/*
 * notify_ext._relay_nkey_public(seed_or_credentials text, credentials
 * boolean) returns text: the public key, or 22023.
 */
PG_FUNCTION_INFO_V1(notify_ext_relay_nkey_public);
Datum
notify_ext_relay_nkey_public(PG_FUNCTION_ARGS)
{
	char	   *in = text_to_cstring(PG_GETARG_TEXT_PP(0));
	bool		creds = PG_GETARG_BOOL(1);
	char	   *seed = in;
	char	   *jwt;
	const char *why;
	unsigned char raw[NKEY_SEED_BYTES];
	char		pub[NKEY_PUBLIC_LEN + 1];

	if (sodium_init() < 0)
		elog(ERROR, "could not initialize libsodium");
	if (creds && !nkey_parse_credentials(in, &jwt, &seed, &why))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("auth credentials are not the content of a NATS credentials file: %s", why),
				 errhint("Pass the whole .creds file, as \"nsc generate creds\" writes it.")));
	if (!nkey_decode_user_seed(seed, raw, &why))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg(creds ? "the seed in auth credentials is not valid: %s"
						: "auth nkey_seed is not a valid NKey user seed: %s", why),
				 errhint("A user seed is 58 characters starting with SU, as \"nk -gen user\" prints it.")));
	nkey_public_key(raw, pub);
	sodium_memzero(raw, sizeof(raw));
	PG_RETURN_TEXT_P(cstring_to_text(pub));
}
