/*
 * bench_net.c - address, socket and text helpers of the bench/ SMTP tools
 * (bench_net.h).
 */
#include "bench_net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "engine/eng_common.h"

#define BENCH_ADDR_TEXT_MAX 64u

int
bench_addr_parse(const char *text, struct sockaddr_in *out)
{
	ENG_ASSERT(text != NULL);
	ENG_ASSERT(out != NULL);
	const char *colon = strrchr(text, ':');
	if (colon == NULL || colon == text || (size_t)(colon - text) >= BENCH_ADDR_TEXT_MAX)
		return -EINVAL;
	char host[BENCH_ADDR_TEXT_MAX];
	memcpy(host, text, (size_t)(colon - text));
	host[colon - text] = '\0';
	const char *port_text = colon + 1;
	size_t port_len = strlen(port_text);
	if (port_len == 0 || port_len > 5)
		return -EINVAL;
	uint32_t port = 0;
	for (size_t i = 0; i < port_len; i++) {
		if (port_text[i] < '0' || port_text[i] > '9')
			return -EINVAL;
		port = port * 10u + (uint32_t)(port_text[i] - '0');
	}
	if (port > 65535u)
		return -EINVAL;
	memset(out, 0, sizeof(*out));
	out->sin_family = AF_INET;
	out->sin_port = htons((uint16_t)port);
	if (strcmp(host, "localhost") == 0)
		out->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	else if (inet_pton(AF_INET, host, &out->sin_addr) != 1)
		return -EINVAL;
	return 0;
}

void
bench_addr_text(const struct sockaddr_in *addr, char *buf, size_t buf_size)
{
	ENG_ASSERT(addr != NULL);
	ENG_ASSERT(buf != NULL && buf_size > 0);
	char host[INET_ADDRSTRLEN];
	if (inet_ntop(AF_INET, &addr->sin_addr, host, sizeof(host)) == NULL)
		snprintf(host, sizeof(host), "?");
	snprintf(buf, buf_size, "%s:%u", host, (unsigned)ntohs(addr->sin_port));
}

int
bench_listen_open(struct sockaddr_in *addr, bool is_reuseport, int backlog)
{
	ENG_ASSERT(addr != NULL);
	ENG_ASSERT(backlog > 0);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	int one = 1;
	int ret = setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (ret == 0 && is_reuseport)
		ret = setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
	if (ret == 0)
		ret = bind(fd, (const struct sockaddr *)addr, sizeof(*addr));
	if (ret == 0)
		ret = listen(fd, backlog);
	socklen_t len = sizeof(*addr);
	if (ret == 0 && addr->sin_port == 0)
		ret = getsockname(fd, (struct sockaddr *)addr, &len);
	if (ret != 0) {
		int errnum = errno;
		close(fd);
		return -errnum;
	}
	ENG_ASSERT(addr->sin_port != 0);
	return fd;
}

bool
bench_has_prefix_nocase(const uint8_t *ptr, size_t len, const char *prefix)
{
	ENG_ASSERT(ptr != NULL || len == 0);
	ENG_ASSERT(prefix != NULL);
	size_t prefix_len = strlen(prefix);
	if (len < prefix_len)
		return false;
	for (size_t i = 0; i < prefix_len; i++) {
		uint8_t c = ptr[i];
		if (c >= 'a' && c <= 'z')
			c = (uint8_t)(c - 'a' + 'A');
		uint8_t p = (uint8_t)prefix[i];
		if (p >= 'a' && p <= 'z')
			p = (uint8_t)(p - 'a' + 'A');
		if (c != p)
			return false;
	}
	return true;
}

void
bench_json_string(FILE *out, const char *ptr, size_t len)
{
	ENG_ASSERT(out != NULL);
	ENG_ASSERT(ptr != NULL || len == 0);
	fputc('"', out);
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)ptr[i];
		if (c == '"' || c == '\\')
			fprintf(out, "\\%c", c);
		else if (c < 0x20)
			fprintf(out, "\\u%04x", c);
		else if (c >= 0x80)
			fputc('?', out);
		else
			fputc(c, out);
	}
	fputc('"', out);
}
