/*
 * nkey.h: NATS NKeys of users: seeds ("SU..."), public keys ("U...") and
 * signatures of a server's nonce (Ed25519, libsodium), and the parts of a
 * credentials file (a user JWT and its seed).
 */
#ifndef NOTIFY_EXT_NKEY_H
#define NOTIFY_EXT_NKEY_H

#define NKEY_SEED_BYTES 32
#define NKEY_PUBLIC_LEN 56
#define NKEY_SIGNATURE_BYTES 64

/* Decodes a user seed; false, with *why, when seed is not one. */
extern bool nkey_decode_user_seed(const char *seed, unsigned char raw[NKEY_SEED_BYTES],
								  const char **why);

/* The public key of a decoded seed, NUL-terminated. */
extern void nkey_public_key(const unsigned char raw[NKEY_SEED_BYTES], char out[NKEY_PUBLIC_LEN + 1]);

/* Signs msg; allocates nothing and raises no error (libnats threads call it). */
extern void nkey_sign(const unsigned char raw[NKEY_SEED_BYTES], const unsigned char *msg, size_t len,
					  unsigned char sig[NKEY_SIGNATURE_BYTES]);

/*
 * The user JWT and seed of a credentials file's content (palloc'd); false,
 * with *why, when either is missing.
 */
extern bool nkey_parse_credentials(const char *creds, char **jwt, char **seed, const char **why);

#endif							/* NOTIFY_EXT_NKEY_H */
