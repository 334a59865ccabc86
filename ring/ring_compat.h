/*
 * ring_compat.h - kernel ABI constants newer than liburing 2.3's headers.
 *
 * Debian 12 ships liburing 2.3 (2022) while the kernel may be much newer.
 * Each constant below is the kernel ABI value (from liburing-2.15's
 * io_uring.h), guarded so a newer liburing's own definition wins. Names
 * that newer headers define as enumerators (which #ifndef cannot see) get
 * a RING_COMPAT_ prefix instead. Three 2.3 traps (io_uring.md 2.3):
 * - never pass IORING_SETUP_NO_SQARRAY: 2.3's setup writes the SQ array
 *   and corrupts the ring header (asserted in ring.c);
 * - allocate direct sockets with io_uring_prep_socket_direct_alloc();
 * - buffer-ring flags go in io_uring_buf_reg.pad, not the flags argument.
 */
#ifndef RING_COMPAT_H
#define RING_COMPAT_H

#ifndef IORING_RECVSEND_BUNDLE
#define IORING_RECVSEND_BUNDLE (1U << 4) /* sqe->ioprio, 6.10 */
#endif
#ifndef IORING_SEND_ZC_REPORT_USAGE
#define IORING_SEND_ZC_REPORT_USAGE (1U << 3) /* sqe->ioprio on SEND_ZC, 6.2 */
#endif
#ifndef IORING_FEAT_REG_REG_RING
#define IORING_FEAT_REG_REG_RING (1U << 13) /* 6.3 */
#endif
#ifndef IORING_FEAT_RECVSEND_BUNDLE
#define IORING_FEAT_RECVSEND_BUNDLE (1U << 14) /* 6.10 */
#endif
#ifndef IORING_FEAT_MIN_TIMEOUT
#define IORING_FEAT_MIN_TIMEOUT (1U << 15) /* 6.12 */
#endif
#ifndef IORING_CQE_F_BUF_MORE
#define IORING_CQE_F_BUF_MORE (1U << 4) /* incremental buffer not fully used */
#endif

#define RING_COMPAT_SETUP_NO_SQARRAY (1U << 16) /* NEVER set with liburing 2.3 */
#define RING_COMPAT_PBUF_RING_MMAP 1u		/* in io_uring_buf_reg.pad, 6.4 */
#define RING_COMPAT_PBUF_RING_INC 2u		/* in io_uring_buf_reg.pad, 6.12 */
#define RING_COMPAT_REGISTER_PBUF_STATUS 26	/* 6.8 */
#define RING_COMPAT_REGISTER_NAPI 27		/* 6.9 */
#define RING_COMPAT_REGISTER_CLOCK 29		/* 6.12 */
#define RING_COMPAT_OP_FIXED_FD_INSTALL 54	/* 6.8 */
#define RING_COMPAT_OP_BIND 56			/* 6.11 */

#endif /* RING_COMPAT_H */
