/*
 * ringmail_passwd.c - `ringmail-passwd [-m yescrypt|sha512] USER`: read a
 * password from the first line of stdin and print `USER:HASH`, a line for
 * a listener's auth_file (engine/eng_auth.h).
 *
 * The salt comes from crypt_gensalt_rn with the system's random source
 * (libxcrypt reads getrandom itself when given no random bytes). The
 * default method is yescrypt ("$y$"), libxcrypt's preferred one; sha512
 * gives "$6$" hashes for older verifiers. Exit 0 on success, 64 on bad
 * usage, 1 on any other failure, with one line on stderr.
 */
#include <crypt.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#define PASSWD_LINE_MAX 512u

static int
passwd_usage(void)
{
	fprintf(stderr, "usage: ringmail-passwd [-m yescrypt|sha512] USER < password\n");
	return 64;
}

static bool
passwd_user_ok(const char *user)
{
	size_t len = strlen(user);
	if (len == 0 || len > 255)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)user[i];
		if (c < 0x21 || c == 0x7f || c == ':')
			return false;
	}
	return true;
}

/* The first line of stdin without its line end. */
static int
passwd_read(char *out, size_t out_size)
{
	if (fgets(out, (int)out_size, stdin) == NULL) {
		fprintf(stderr, "ringmail-passwd: no password on stdin\n");
		return -1;
	}
	size_t len = strlen(out);
	if (len > 0 && out[len - 1] == '\n')
		out[--len] = '\0';
	else if (!feof(stdin)) {
		fprintf(stderr, "ringmail-passwd: password longer than %u bytes\n",
			PASSWD_LINE_MAX - 2);
		return -1;
	}
	if (len > 0 && out[len - 1] == '\r')
		out[--len] = '\0';
	if (len == 0) {
		fprintf(stderr, "ringmail-passwd: empty password\n");
		return -1;
	}
	return 0;
}

int
main(int argc, char **argv)
{
	const char *prefix = "$y$";
	int arg = 1;
	if (argc == 4 && strcmp(argv[1], "-m") == 0) {
		if (strcmp(argv[2], "yescrypt") == 0)
			prefix = "$y$";
		else if (strcmp(argv[2], "sha512") == 0)
			prefix = "$6$";
		else
			return passwd_usage();
		arg = 3;
	} else if (argc != 2) {
		return passwd_usage();
	}
	if (!passwd_user_ok(argv[arg])) {
		fprintf(stderr, "ringmail-passwd: USER must be 1 to 255 printable characters "
				"without ':' or spaces\n");
		return 64;
	}
	char password[PASSWD_LINE_MAX];
	if (passwd_read(password, sizeof(password)) < 0)
		return 1;
	char salt[CRYPT_GENSALT_OUTPUT_SIZE];
	static struct crypt_data work;
	if (crypt_gensalt_rn(prefix, 0, NULL, 0, salt, (int)sizeof(salt)) == NULL) {
		fprintf(stderr, "ringmail-passwd: cannot make a salt for %s\n", prefix);
		return 1;
	}
	const char *hash = crypt_rn(password, salt, &work, (int)sizeof(work));
	explicit_bzero(password, sizeof(password));
	if (hash == NULL || hash[0] == '*') {
		fprintf(stderr, "ringmail-passwd: crypt failed\n");
		return 1;
	}
	printf("%s:%s\n", argv[arg], hash);
	return fflush(stdout) == 0 ? 0 : 1;
}
