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
 * - The software tables and the hardware shift constants are each written
 *   once under pthread_once and only read afterwards; the hardware path
 *   never touches the software tables.
 *
 * The hardware path runs three independent crc32 chains over three parts
 * of the input and joins them with PCLMULQDQ (when the CPU has it; checked
 * once at run time) for inputs of CRC32C_STREAMS_BYTES_MIN bytes or more,
 * and one chain for shorter inputs and the last < 24 bytes. One chain does
 * 8 bytes per 3 cycles (the instruction's latency); three do about 8 bytes
 * per cycle: 9.4 -> 24 GB/s at 1 KiB, 9.4 -> 27.6 GB/s at 100 KiB here
 * (docs/BENCHMARKS.md section 1.5, finding 3). The join is derived below
 * (crc32_streams_run).
 */
#include "spool_crc32c.h"

#include <pthread.h>
#include <string.h>

#include "../engine/eng_common.h"

#if defined(__x86_64__)
#include <nmmintrin.h>
#include <wmmintrin.h>
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

/*
 * Three streams. The crc32 instruction has a latency of 3 cycles and a
 * throughput of 1 per cycle, so one dependent chain uses a third of it.
 * A run of 3 * n words (8 bytes each) is split into three parts A, B, C of
 * n words; each part is CRCed on its own chain (B and C from a zero state),
 * and the three raw states a, b, c (no final inversion) are joined by
 * linearity:
 *
 *     raw(A B C) = a * x^(128 n) + b * x^(64 n) + c   (mod P)
 *
 * A shift "s * x^(64 m) mod P" costs one carry-less multiply and one crc32:
 * in the reflected bit order PCLMULQDQ of two 32-bit values gives the
 * 63-bit product one bit position lower than crc32 reads a 64-bit operand,
 * that is, the product times x, and crc32(0, v) is v * x^32 mod P. So
 * crc32(0, clmul(s, k)) = s * k * x^33 mod P, which is s * x^(64 m) when
 * k = x^(64 m - 33) mod P. crc32_shift_k[m] holds that k for m = 1 ..
 * 2 * CRC32C_STREAM_WORDS_MAX, built once: k(1) = x^31 (the value 1 in
 * reflected order) and k(m + 1) = k(m) * x^64 = crc32(k(m), 0).
 * Both shifts are summed before the one crc32 (it is linear).
 */
#define CRC32C_STREAM_WORDS_MAX 512u /* 4 KiB per stream, 12 KiB per run */
/* Below this many bytes one chain is as fast: the join costs ~15 cycles
 * (measured crossover 64-72 bytes on the EPYC of docs/BENCHMARKS.md). */
#define CRC32C_STREAMS_BYTES_MIN 96u

_Static_assert(CRC32C_STREAMS_BYTES_MIN >= 3u * 8u * 2u, "at least two words a stream");

static uint32_t crc32_shift_k[2u * CRC32C_STREAM_WORDS_MAX + 1u];
static pthread_once_t crc32_shift_once = PTHREAD_ONCE_INIT;
static bool crc32_streams_ok;

__attribute__((target("sse4.2"))) static void
crc32_shift_build(void)
{
	ENG_ASSERT(crc32_shift_k[1] == 0); /* built only once */
	ENG_ASSERT(!crc32_streams_ok);
	crc32_shift_k[0] = 0; /* unused: a stream is never empty */
	crc32_shift_k[1] = 1u; /* x^31 */
	for (uint32_t m = 2; m < ENG_ARRAY_COUNT(crc32_shift_k); m++) {
		crc32_shift_k[m] = (uint32_t)_mm_crc32_u64(crc32_shift_k[m - 1], 0);
	}
	/* x^95 and x^65503 mod P, reflected, computed independently (bitwise
	 * polynomial arithmetic in Python). */
	ENG_ASSERT(crc32_shift_k[2] == 0x493C7D27u);
	ENG_ASSERT(crc32_shift_k[2u * CRC32C_STREAM_WORDS_MAX] == 0x54A86326u);
	crc32_streams_ok = __builtin_cpu_supports("pclmul") != 0;
}

/* s * x^(64 m1) + t * x^(64 m2) mod P, as a raw (uninverted) state. */
__attribute__((target("sse4.2,pclmul"))) static uint32_t
crc32_shift2(uint32_t s, uint32_t m1, uint32_t t, uint32_t m2)
{
	ENG_ASSERT(m1 >= 1u && m1 < ENG_ARRAY_COUNT(crc32_shift_k));
	ENG_ASSERT(m2 >= 1u && m2 < ENG_ARRAY_COUNT(crc32_shift_k));
	__m128i ps = _mm_clmulepi64_si128(_mm_cvtsi32_si128((int)s),
					  _mm_cvtsi32_si128((int)crc32_shift_k[m1]), 0x00);
	__m128i pt = _mm_clmulepi64_si128(_mm_cvtsi32_si128((int)t),
					  _mm_cvtsi32_si128((int)crc32_shift_k[m2]), 0x00);
	uint64_t v = (uint64_t)_mm_cvtsi128_si64(_mm_xor_si128(ps, pt));
	return (uint32_t)_mm_crc32_u64(0, v);
}

static uint64_t
load_u64(const uint8_t *p)
{
	uint64_t v;
	memcpy(&v, p, sizeof(v)); /* x86-64 is little-endian */
	return v;
}

/* Raw state c continued over 3 * n words at p (8-byte aligned), three
 * chains at a time. */
__attribute__((target("sse4.2,pclmul"))) static uint64_t
crc32_streams_run(uint64_t c, const uint8_t *p, uint32_t n)
{
	ENG_ASSERT(n >= 1u && n <= CRC32C_STREAM_WORDS_MAX);
	ENG_ASSERT(((uintptr_t)p & 7u) == 0);
	const uint8_t *pb = p + (size_t)n * 8u;
	const uint8_t *pc = pb + (size_t)n * 8u;
	uint64_t b = 0;
	uint64_t d = 0;
	for (uint32_t i = 0; i < n; i++) {
		size_t at = (size_t)i * 8u;
		c = _mm_crc32_u64(c, load_u64(p + at));
		b = _mm_crc32_u64(b, load_u64(pb + at));
		d = _mm_crc32_u64(d, load_u64(pc + at));
	}
	return crc32_shift2((uint32_t)c, 2u * n, (uint32_t)b, n) ^ (uint32_t)d;
}

/* Raw state c continued over len bytes at p, one chain. */
__attribute__((target("sse4.2"))) static uint64_t
crc32_chain_run(uint64_t c, const uint8_t *p, size_t len)
{
	ENG_ASSERT(p != NULL || len == 0);
	ENG_ASSERT(len <= (size_t)PTRDIFF_MAX);
	for (; len >= 8; len -= 8, p += 8) {
		c = _mm_crc32_u64(c, load_u64(p));
	}
	for (; len > 0; len--, p++) {
		c = _mm_crc32_u8((uint32_t)c, *p);
	}
	ENG_ASSERT(len == 0);
	return c;
}

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
	if (len >= CRC32C_STREAMS_BYTES_MIN) {
		int rc = pthread_once(&crc32_shift_once, crc32_shift_build);
		ENG_ASSERT(rc == 0);
	}
	/* Bounded: each turn consumes at least 3 * 8 bytes. */
	while (len >= CRC32C_STREAMS_BYTES_MIN && crc32_streams_ok) {
		size_t words = len / 8u / 3u;
		uint32_t n = (uint32_t)ENG_MIN(words, (size_t)CRC32C_STREAM_WORDS_MAX);
		c = crc32_streams_run(c, p, n);
		p += (size_t)n * 24u;
		len -= (size_t)n * 24u;
	}
	return ~(uint32_t)crc32_chain_run(c, p, len);
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
