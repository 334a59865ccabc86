/*
 * spool_crc32c.c - CRC-32C: SSE4.2 crc32 instruction with a portable
 * slicing-by-8 fallback.
 *
 * Why CRC-32C: it is the checksum with hardware support on x86-64 (SSE4.2)
 * and arm64 (ARMv8 CRC), the one ext4, btrfs, iSCSI (RFC 3720 B.4) and
 * TigerBeetle-style logs use, and it detects every burst error up to 32 bits
 * and every odd number of bit errors in a record.
 *
 * Invariants:
 * - Both implementations compute the same function (tests/spool compare
 *   them on random buffers of many lengths and alignments).
 * - The software tables are written once under pthread_once and only read
 *   afterwards; the hardware path never touches them.
 *
 * The hardware loop is the simple one (one crc32 per 8 bytes, about
 * 8 bytes per 3 cycles). XXX: three interleaved streams combined with
 * PCLMULQDQ would be about 3x faster for large bodies; not needed while
 * the disk, not the CRC, bounds the commit rate.
 */
#include "spool_crc32c.h"

#include <pthread.h>
#include <string.h>

#include "../engine/eng_common.h"

#if defined(__x86_64__)
#include <nmmintrin.h>
#define SPOOL_CRC32C_HAVE_HW 1
#else
#define SPOOL_CRC32C_HAVE_HW 0
#endif

#define CRC32C_POLY_REFLECTED 0x82F63B78u
#define CRC32C_SLICES 8u

/* crc32c_table[k][b]: the CRC of byte b followed by k zero bytes. */
static uint32_t crc32c_table[CRC32C_SLICES][256];
static pthread_once_t crc32c_table_once = PTHREAD_ONCE_INIT;

static void
crc32c_table_build(void)
{
	ENG_ASSERT(crc32c_table[0][0] == 0);
	ENG_ASSERT(crc32c_table[0][1] == 0); /* built only once */
	for (uint32_t b = 0; b < 256; b++) {
		uint32_t crc = b;
		for (uint32_t bit = 0; bit < 8; bit++) {
			crc = (crc & 1u) ? (crc >> 1) ^ CRC32C_POLY_REFLECTED : crc >> 1;
		}
		crc32c_table[0][b] = crc;
	}
	for (uint32_t b = 0; b < 256; b++) {
		for (uint32_t k = 1; k < CRC32C_SLICES; k++) {
			uint32_t prev = crc32c_table[k - 1][b];
			crc32c_table[k][b] = (prev >> 8) ^ crc32c_table[0][prev & 0xffu];
		}
	}
	ENG_ASSERT(crc32c_table[0][1] == 0xF26B8303u); /* the well-known entry */
	ENG_ASSERT(crc32c_table[0][128] == CRC32C_POLY_REFLECTED);
}

uint32_t
spool_crc32c_sw(uint32_t crc, const void *data, size_t len)
{
	ENG_ASSERT(data != NULL || len == 0);
	ENG_ASSERT(len <= (size_t)PTRDIFF_MAX);
	int rc = pthread_once(&crc32c_table_once, crc32c_table_build);
	ENG_ASSERT(rc == 0);

	const uint8_t *p = data;
	uint32_t c = ~crc;
	/* Slicing-by-8: eight table lookups per 8 bytes. The bytes are read one
	 * by one, so this is endian-neutral. Both loops are bounded by len. */
	for (; len >= 8; len -= 8, p += 8) {
		uint32_t lo = c ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
				   (uint32_t)p[3] << 24);
		uint32_t hi = (uint32_t)p[4] | (uint32_t)p[5] << 8 | (uint32_t)p[6] << 16 |
			      (uint32_t)p[7] << 24;
		c = crc32c_table[7][lo & 0xffu] ^ crc32c_table[6][(lo >> 8) & 0xffu] ^
		    crc32c_table[5][(lo >> 16) & 0xffu] ^ crc32c_table[4][lo >> 24] ^
		    crc32c_table[3][hi & 0xffu] ^ crc32c_table[2][(hi >> 8) & 0xffu] ^
		    crc32c_table[1][(hi >> 16) & 0xffu] ^ crc32c_table[0][hi >> 24];
	}
	for (; len > 0; len--, p++) {
		c = (c >> 8) ^ crc32c_table[0][(c ^ *p) & 0xffu];
	}
	ENG_ASSERT(len == 0);
	return ~c;
}

#if SPOOL_CRC32C_HAVE_HW

__attribute__((target("sse4.2"))) static uint32_t
crc32c_hw_run(uint32_t crc, const uint8_t *p, size_t len)
{
	ENG_ASSERT(p != NULL || len == 0);
	ENG_ASSERT(len <= (size_t)PTRDIFF_MAX);
	uint64_t c = (uint64_t)~crc;
	/* Bytes up to an 8-byte boundary, so the 8-byte loads are aligned. */
	for (; len > 0 && ((uintptr_t)p & 7u) != 0; len--, p++) {
		c = _mm_crc32_u8((uint32_t)c, *p);
	}
	ENG_ASSERT(len == 0 || ((uintptr_t)p & 7u) == 0);
	for (; len >= 8; len -= 8, p += 8) {
		uint64_t v;
		memcpy(&v, p, sizeof(v)); /* x86-64 is little-endian */
		c = _mm_crc32_u64(c, v);
	}
	for (; len > 0; len--, p++) {
		c = _mm_crc32_u8((uint32_t)c, *p);
	}
	ENG_ASSERT(len == 0);
	return ~(uint32_t)c;
}

bool
spool_crc32c_hw_is_available(void)
{
	/* libgcc fills the CPU model in a constructor; this is a load and a
	 * bit test, cheap enough to do on every call. */
	return __builtin_cpu_supports("sse4.2") != 0;
}

uint32_t
spool_crc32c_hw(uint32_t crc, const void *data, size_t len)
{
	ENG_ASSERT(data != NULL || len == 0);
	ENG_ASSERT(spool_crc32c_hw_is_available());
	return crc32c_hw_run(crc, data, len);
}

#else /* !SPOOL_CRC32C_HAVE_HW */

bool
spool_crc32c_hw_is_available(void)
{
	return false;
}

uint32_t
spool_crc32c_hw(uint32_t crc, const void *data, size_t len)
{
	ENG_ASSERT(data != NULL || len == 0);
	ENG_ASSERT(false && "spool_crc32c_hw: no hardware CRC-32C in this build");
	return crc;
}

#endif /* SPOOL_CRC32C_HAVE_HW */

uint32_t
spool_crc32c(uint32_t crc, const void *data, size_t len)
{
	ENG_ASSERT(data != NULL || len == 0);
	ENG_ASSERT(len <= (size_t)PTRDIFF_MAX);
#if SPOOL_CRC32C_HAVE_HW
	if (__builtin_cpu_supports("sse4.2")) {
		return crc32c_hw_run(crc, data, len);
	}
#endif
	return spool_crc32c_sw(crc, data, len);
}
