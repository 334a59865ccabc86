/*
 * eng_auth.h - SMTP AUTH credentials for the injection listener: a file
 * of `user:hash` lines, hashes made by crypt(3) (libxcrypt: yescrypt
 * "$y$...", sha512-crypt "$6$...", anything crypt_rn understands).
 *
 * File format: one `user:hash` per line; blank lines and lines starting
 * with '#' are ignored. user is 1..ENG_AUTH_USER_SIZE-1 printable
 * characters without ':'; hash is the crypt(3) output, 1..ENG_AUTH_HASH_SIZE-1
 * printable characters and must start with '$'. A malformed line is a
 * start-up error naming file and line. At most ENG_AUTH_USERS_MAX users;
 * a duplicate user is an error.
 *
 * Checking (eng_auth_check) runs crypt_rn with the stored hash as the
 * setting and compares the result in constant time. An unknown user still
 * costs one hash (against a fixed dummy setting) so that timing does not
 * tell which users exist. The hash is computed on the calling thread:
 * yescrypt costs a few milliseconds, so the daemon calls this only from
 * its AUTH worker thread (eng_auth_worker.h), never from a shard.
 *
 * Ownership: eng_auth_load allocates the table and a crypt work area;
 * eng_auth_free releases them. A table is used by one thread at a time
 * (the work area is not shared).
 */
#ifndef ENG_AUTH_H
#define ENG_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "eng_common.h"

#define ENG_AUTH_USERS_MAX 10000u
#define ENG_AUTH_USER_SIZE 256u	   /* with the NUL */
#define ENG_AUTH_HASH_SIZE 256u	   /* with the NUL */
#define ENG_AUTH_PASSWORD_MAX 512u /* bytes a password may have */
#define ENG_AUTH_FILE_SIZE_MAX (4u << 20)

struct eng_auth;

/* Load path. Returns 0 and *out, or -errno with one line in err
 * ("auth.txt:3: expected user:hash"). */
int eng_auth_load(const char *path, struct eng_auth **out, char *err, size_t err_size)
	ENG_WARN_UNUSED;
void eng_auth_free(struct eng_auth *auth);
uint32_t eng_auth_user_count(const struct eng_auth *auth);

/* Do (user, user_len) and (password, password_len) match an entry?
 * Peer input: any bytes, any length (over-long is simply false). */
bool eng_auth_check(struct eng_auth *auth, const char *user, size_t user_len,
		    const char *password, size_t password_len);

#endif /* ENG_AUTH_H */
