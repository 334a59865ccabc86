/*
 * fuzz_cov.h - force-included (clang -include) into the second coverage
 * build of `tests/fuzz/run-fuzz --coverage` to measure the coverage of
 * the code peer bytes can reach (docs/fuzzing.md "Coverage").
 *
 * ENG_ASSERT(x) expands to `x ? (void)0 : eng_assert_fail(...)`, so every
 * assertion adds a region that runs only when the code is wrong: about a
 * third of the regions of smtp_client.c and spool_record.c. Here the
 * header is included first, then ENG_ASSERT is redefined as a call to a
 * function of this header: the condition is still evaluated and still
 * aborts when false (same behaviour), but the failure branch is counted
 * in this header, which the report leaves out. Regions inside the
 * condition itself (a && b) stay in the source file and are counted.
 * ENG_PANIC (impossible switch defaults) is left as it is and counted.
 *
 * Only for coverage builds: the fuzzing and meson builds use the real
 * macro.
 */
#ifndef FUZZ_COV_H
#define FUZZ_COV_H

#include "engine/eng_common.h"

static inline void
fuzz_cov_assert(int holds, const char *expr, const char *file, int line)
{
	if (!holds)
		eng_assert_fail(expr, file, line);
}

#undef ENG_ASSERT
#define ENG_ASSERT(x) fuzz_cov_assert(!!(x), #x, __FILE__, __LINE__)

#endif /* FUZZ_COV_H */
