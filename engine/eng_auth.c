/*
 * eng_auth.c - the auth_file table and password checks (see eng_auth.h).
 *
 * The file is read whole at start-up (bounded by ENG_AUTH_FILE_SIZE_MAX)
 * and parsed as (ptr, len) lines. Entries are kept in an array searched
 * linearly: AUTH is rare next to MAIL, and the hash dominates its cost.
 */
#include "eng_auth.h"

#include <crypt.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct eng_auth_entry {
	char user[ENG_AUTH_USER_SIZE];
	char hash[ENG_AUTH_HASH_SIZE];
};

struct eng_auth {
	uint32_t count;
	struct eng_auth_entry *entries;
	struct crypt_data *work; /* crypt_rn scratch, ~32 KiB */
};

/* A setting for unknown users: the same work as a real sha512-crypt check. */
static const char eng_auth_dummy_setting[] = "$6$ringmailDummySa$";

static bool
eng_auth_printable(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] == 0x7f)
			return false;
	}
	return true;
}

/* Parse one non-comment line into e. Returns false on a malformed line. */
static bool
eng_auth_parse_line(const char *line, size_t len, struct eng_auth_entry *e)
{
	ENG_ASSERT(line != NULL && e != NULL);
	const char *colon = memchr(line, ':', len);
	if (colon == NULL)
		return false;
	size_t user_len = (size_t)(colon - line);
	size_t hash_len = len - user_len - 1;
	if (user_len == 0 || user_len >= ENG_AUTH_USER_SIZE || hash_len == 0 ||
	    hash_len >= ENG_AUTH_HASH_SIZE)
		return false;
	if (!eng_auth_printable(line, user_len) || !eng_auth_printable(colon + 1, hash_len))
		return false;
	if (colon[1] != '$')
		return false;
	memset(e, 0, sizeof(*e));
	memcpy(e->user, line, user_len);
	memcpy(e->hash, colon + 1, hash_len);
	return true;
}

static int
eng_auth_read(const char *path, char **text, size_t *len, char *err, size_t err_size)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		int e = errno;
		snprintf(err, err_size, "auth_file %s: %s", path, strerror(e));
		return -e;
	}
	struct stat st;
	if (fstat(fd, &st) < 0 || st.st_size < 0 || (uint64_t)st.st_size > ENG_AUTH_FILE_SIZE_MAX) {
		snprintf(err, err_size, "auth_file %s: unreadable or larger than %u bytes", path,
			 ENG_AUTH_FILE_SIZE_MAX);
		close(fd);
		return -EFBIG;
	}
	size_t size = (size_t)st.st_size;
	char *buf = malloc(size + 1);
	size_t got = 0;
	for (uint32_t tries = 0; buf != NULL && got < size && tries < 1000; tries++) {
		ssize_t n = read(fd, buf + got, size - got);
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	close(fd);
	if (buf == NULL || got != size) {
		snprintf(err, err_size, "auth_file %s: cannot read it", path);
		free(buf);
		return -EIO;
	}
	*text = buf;
	*len = size;
	return 0;
}

static bool
eng_auth_has_user(const struct eng_auth *auth, const char *user)
{
	for (uint32_t i = 0; i < auth->count; i++) {
		if (strcmp(auth->entries[i].user, user) == 0)
			return true;
	}
	return false;
}

/* Parse every line of text into auth. Returns 0 or -EINVAL with err set. */
static int
eng_auth_parse(struct eng_auth *auth, const char *path, const char *text, size_t len, char *err,
	       size_t err_size)
{
	size_t pos = 0;
	for (uint32_t lineno = 1; pos < len; lineno++) {
		const char *line = text + pos;
		const char *nl = memchr(line, '\n', len - pos);
		size_t n = nl != NULL ? (size_t)(nl - line) : len - pos;
		pos += n + (nl != NULL ? 1 : 0);
		if (n > 0 && line[n - 1] == '\r')
			n--;
		if (n == 0 || line[0] == '#')
			continue;
		if (auth->count == ENG_AUTH_USERS_MAX) {
			snprintf(err, err_size, "%s:%u: more than %u users", path, lineno,
				 ENG_AUTH_USERS_MAX);
			return -EINVAL;
		}
		struct eng_auth_entry *e = &auth->entries[auth->count];
		if (!eng_auth_parse_line(line, n, e)) {
			snprintf(err, err_size, "%s:%u: expected user:hash (a crypt(3) hash "
				 "starting with '$', as ringmail-passwd prints)", path, lineno);
			return -EINVAL;
		}
		if (eng_auth_has_user(auth, e->user)) {
			snprintf(err, err_size, "%s:%u: user '%s' is listed twice", path, lineno,
				 e->user);
			return -EINVAL;
		}
		auth->count++;
	}
	return 0;
}

int
eng_auth_load(const char *path, struct eng_auth **out, char *err, size_t err_size)
{
	ENG_ASSERT(path != NULL && out != NULL && err != NULL);
	*out = NULL;
	char *text = NULL;
	size_t len = 0;
	int ret = eng_auth_read(path, &text, &len, err, err_size);
	if (ret < 0)
		return ret;
	struct eng_auth *auth = calloc(1, sizeof(*auth));
	if (auth != NULL) {
		auth->entries = calloc(ENG_MIN(ENG_AUTH_USERS_MAX, (uint32_t)(len / 4 + 1)) + 1,
				       sizeof(*auth->entries));
		auth->work = calloc(1, sizeof(*auth->work));
	}
	if (auth == NULL || auth->entries == NULL || auth->work == NULL) {
		snprintf(err, err_size, "auth_file %s: out of memory", path);
		free(text);
		eng_auth_free(auth);
		return -ENOMEM;
	}
	/* A line has at least 4 bytes ("u:$x"), so len / 4 + 1 entries suffice. */
	ret = eng_auth_parse(auth, path, text, len, err, err_size);
	free(text);
	if (ret < 0) {
		eng_auth_free(auth);
		return ret;
	}
	*out = auth;
	return 0;
}

void
eng_auth_free(struct eng_auth *auth)
{
	if (auth == NULL)
		return;
	if (auth->work != NULL)
		explicit_bzero(auth->work, sizeof(*auth->work));
	free(auth->work);
	free(auth->entries);
	free(auth);
}

uint32_t
eng_auth_user_count(const struct eng_auth *auth)
{
	ENG_ASSERT(auth != NULL);
	return auth->count;
}

/* Constant-time equality of two NUL-terminated strings of bounded size. */
static bool
eng_auth_same(const char *a, const char *b, size_t size_max)
{
	size_t la = strnlen(a, size_max);
	size_t lb = strnlen(b, size_max);
	unsigned diff = (unsigned)(la ^ lb);
	for (size_t i = 0; i < la && i < lb; i++)
		diff |= (unsigned)(a[i] ^ b[i]);
	return diff == 0;
}

bool
eng_auth_check(struct eng_auth *auth, const char *user, size_t user_len, const char *password,
	       size_t password_len)
{
	ENG_ASSERT(auth != NULL && auth->work != NULL);
	ENG_ASSERT(user != NULL || user_len == 0);
	const struct eng_auth_entry *found = NULL;
	for (uint32_t i = 0; i < auth->count && user_len < ENG_AUTH_USER_SIZE; i++) {
		const struct eng_auth_entry *e = &auth->entries[i];
		if (strlen(e->user) == user_len && memcmp(e->user, user, user_len) == 0)
			found = e;
	}
	char phrase[ENG_AUTH_PASSWORD_MAX + 1];
	bool usable = password_len > 0 && password_len <= ENG_AUTH_PASSWORD_MAX &&
		      memchr(password, '\0', password_len) == NULL;
	size_t n = usable ? password_len : 0;
	if (n > 0)
		memcpy(phrase, password, n);
	phrase[n] = '\0';
	const char *setting = found != NULL ? found->hash : eng_auth_dummy_setting;
	memset(auth->work, 0, sizeof(*auth->work));
	char *result = crypt_rn(phrase, setting, auth->work, (int)sizeof(*auth->work));
	explicit_bzero(phrase, sizeof(phrase));
	bool match = result != NULL && result[0] != '*' && found != NULL && usable &&
		     eng_auth_same(result, found->hash, ENG_AUTH_HASH_SIZE);
	explicit_bzero(auth->work, sizeof(*auth->work));
	return match;
}
