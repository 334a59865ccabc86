/*
 * spool_crc32c.h - CRC-32C (Castagnoli, polynomial 0x1EDC6F41, reflected
 * 0x82F63B78), the checksum of every spool record.
 *
 * The value is the standard one (RFC 3720 appendix B.4, iSCSI; ext4, btrfs):
 * initial value and final xor 0xFFFFFFFF, so spool_crc32c(0, "123456789", 9)
 * is 0xE3069283. The inversion is done inside, so a CRC can be continued
 * over several pieces: spool_crc32c(spool_crc32c(0, a, n), b, m) equals the
 * CRC of a followed by b.
 *
 * On x86-64 the SSE4.2 crc32 instruction is used when the CPU has it
 * (checked at run time, __builtin_cpu_supports), on three interleaved
 * streams joined with PCLMULQDQ for inputs of 96 bytes or more when the CPU
 * also has that; everywhere else a portable slicing-by-8 table is used.
 * All give the same value; the tests check it.
 *
 * Thread safety: all functions may be called from any thread. The software
 * tables and the hardware shift constants are built once (pthread_once) on
 * first use.
 * Ownership: data is borrowed until return and never written.
 */
#ifndef SPOOL_CRC32C_H
#define SPOOL_CRC32C_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * CRC-32C of len bytes at data, continuing from crc (0 to start).
 * data may be NULL only when len is 0. Returns the new CRC.
 */
uint32_t spool_crc32c(uint32_t crc, const void *data, size_t len);

/* The portable implementation, whatever the CPU (for tests and benches). */
uint32_t spool_crc32c_sw(uint32_t crc, const void *data, size_t len);

/* True if the hardware implementation is compiled in and the CPU has it. */
bool spool_crc32c_hw_is_available(void);

/*
 * The hardware implementation. Only call it when
 * spool_crc32c_hw_is_available() is true (asserted).
 */
uint32_t spool_crc32c_hw(uint32_t crc, const void *data, size_t len);

#endif /* SPOOL_CRC32C_H */
