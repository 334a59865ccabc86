/*
 * eng_tls.c - wolfSSL driven through the engine's own ciphertext buffers
 * (the contract is engine/eng_tls.h; the design is docs/tls.md).
 *
 * I/O: every WOLFSSL gets per-object recv/send callbacks whose context is
 * the struct eng_tls. The recv callback copies from cipher_in
 * [in_start, in_end) and answers WANT_READ when it is empty; the send
 * callback appends to cipher_out [0, out_end) and answers WANT_WRITE when
 * it is full. wolfSSL keeps what it could not send and sends it on the next
 * call, so WANT_READ and WANT_WRITE both map to ENG_TLS_WANT_IO: the owner
 * sends the output, receives more input and calls again.
 *
 * Verification (client): the WOLFSSL always runs with WOLFSSL_VERIFY_PEER
 * and a verify callback (the library has WOLFSSL_ALWAYS_VERIFY_CB and
 * WOLFSSL_VERIFY_CB_ALL_CERTS, so the callback sees every certificate,
 * good or bad). The callback records the first failure as one line of text
 * and, under ENG_TLS_VERIFY_NONE, overrides it so the handshake goes on.
 * The name is checked by wolfSSL_check_domain_name(); wolfSSL 5.5.4 falls
 * back to the subject CN when a certificate has no subjectAltName, so the
 * callback itself refuses a leaf without one (TLS-02, RFC 6125 6.4.4).
 *
 * Resumption: a per-shard table of WOLFSSL_SESSION references keyed by
 * "host:port". A session remembers whether its handshake verified; a
 * VERIFY_PEER connection never resumes from one that did not (a resumed
 * TLS 1.3 handshake carries no certificate to check again).
 *
 * Invariants: in_start <= in_end <= ENG_TLS_CIPHER_IN_SIZE, out_end <=
 * ENG_TLS_CIPHER_OUT_SIZE; the struct eng_tls does not move while its
 * WOLFSSL exists (wolfSSL holds its address). A context is freed when its
 * reference count reaches 0: one for the creator, one per connection.
 */
/* wolfSSL's headers first: they use sprintf, which eng_common.h poisons. */
#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
#include <wolfssl/openssl/evp.h>
#include <wolfssl/error-ssl.h>
#include <wolfssl/wolfcrypt/ecc.h>
#include <wolfssl/wolfcrypt/error-crypt.h>

#include "engine/eng_tls.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <unistd.h>

#define ENG_TLS_SYSTEM_CA_FILE "/etc/ssl/certs/ca-certificates.crt"
/* Largest plaintext per record and the room kept for its overhead. */
#define ENG_TLS_RECORD_PLAIN_MAX 16384u
#define ENG_TLS_RECORD_OVERHEAD_MAX 2048u
#define ENG_TLS_HOST_SIZE 256u

/*
 * Cipher suites, both roles. Debian's wolfSSL 5.5.4 enables by default
 * suites that must never be agreed: integrity-only TLS 1.3
 * (TLS13-SHA256-SHA256), NULL, anonymous (ADH), RC4, 3DES and PSK. Only
 * forward-secret AEAD suites, then CBC ones for older MXes. ChaCha20-
 * Poly1305 comes first: this build has no AES-NI code (no
 * USE_INTEL_SPEEDUP), and its AES-GCM is about 2.7 times slower per byte
 * (docs/tls.md, "Cipher suites").
 */
static const char eng_tls_cipher_list[] =
	"TLS13-CHACHA20-POLY1305-SHA256:TLS13-AES128-GCM-SHA256:TLS13-AES256-GCM-SHA384:"
	"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
	"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
	"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
	"DHE-RSA-CHACHA20-POLY1305:DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:"
	"ECDHE-ECDSA-AES128-SHA256:ECDHE-RSA-AES128-SHA256:"
	"ECDHE-ECDSA-AES256-SHA384:ECDHE-RSA-AES256-SHA384:"
	"ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:ECDHE-RSA-AES256-SHA:"
	"DHE-RSA-AES128-SHA256:DHE-RSA-AES256-SHA256:DHE-RSA-AES128-SHA:DHE-RSA-AES256-SHA";

_Static_assert(ENG_TLS_CIPHER_OUT_SIZE >= ENG_TLS_RECORD_PLAIN_MAX + ENG_TLS_RECORD_OVERHEAD_MAX,
	       "one full record fits in the output buffer");
_Static_assert(ENG_TLS_CIPHER_IN_SIZE <= INT32_MAX, "sizes fit wolfSSL's int");
_Static_assert(ENG_TLS_SESSION_KEY_SIZE <= UINT16_MAX, "key length fits uint16_t");

struct eng_tls_ctx {
	WOLFSSL_CTX *wolf_ctx;
	enum eng_tls_role role;
	atomic_uint reference_count;
};

struct eng_tls_session_entry {
	WOLFSSL_SESSION *session; /* NULL: free slot */
	uint64_t key_hash;
	uint64_t stored_seq; /* smaller: stored earlier, evicted first */
	uint16_t key_len;
	bool is_verified; /* the full handshake behind it verified */
	char key[ENG_TLS_SESSION_KEY_SIZE];
};

struct eng_tls_session_cache {
	uint32_t capacity;
	uint32_t count;
	uint64_t seq;
	struct eng_tls_session_entry entries[];
};

/* ---- process-wide initialisation ---- */

static pthread_once_t eng_tls_once = PTHREAD_ONCE_INIT;
static int eng_tls_init_result = -1;

static void
eng_tls_global_init_once(void)
{
	eng_tls_init_result = wolfSSL_Init() == WOLFSSL_SUCCESS ? 0 : -1;
}

int
eng_tls_global_init(void)
{
	int rc = pthread_once(&eng_tls_once, eng_tls_global_init_once);
	ENG_ASSERT(rc == 0);
	return eng_tls_init_result;
}

void
eng_tls_thread_end(void)
{
#ifdef FP_ECC
	wc_ecc_fp_free(); /* rebuilt on demand if the thread used ECC again */
#endif
}

/* ---- contexts ---- */

static void
eng_tls_ctx_get(struct eng_tls_ctx *ctx)
{
	unsigned previous = atomic_fetch_add(&ctx->reference_count, 1u);
	ENG_ASSERT(previous > 0);
}

void
eng_tls_ctx_put(struct eng_tls_ctx *ctx)
{
	if (ctx == NULL) {
		return;
	}
	unsigned previous = atomic_fetch_sub(&ctx->reference_count, 1u);
	ENG_ASSERT(previous > 0);
	if (previous == 1) {
		wolfSSL_CTX_free(ctx->wolf_ctx);
		free(ctx);
	}
}

static int
eng_tls_ctx_new(struct eng_tls_ctx **out, enum eng_tls_role role, char *err, size_t err_size)
{
	ENG_ASSERT(eng_tls_init_result == 0); /* eng_tls_global_init() first */
	struct eng_tls_ctx *ctx = calloc(1, sizeof(*ctx));
	if (ctx == NULL) {
		snprintf(err, err_size, "TLS context: out of memory");
		return -ENOMEM;
	}
	WOLFSSL_METHOD *method = role == ENG_TLS_ROLE_CLIENT ? wolfSSLv23_client_method()
							     : wolfSSLv23_server_method();
	ctx->wolf_ctx = method == NULL ? NULL : wolfSSL_CTX_new(method);
	if (ctx->wolf_ctx == NULL) {
		free(ctx);
		snprintf(err, err_size, "TLS context: out of memory");
		return -ENOMEM;
	}
	if (wolfSSL_CTX_SetMinVersion(ctx->wolf_ctx, WOLFSSL_TLSV1_2) != WOLFSSL_SUCCESS ||
	    wolfSSL_CTX_set_cipher_list(ctx->wolf_ctx, eng_tls_cipher_list) != WOLFSSL_SUCCESS) {
		wolfSSL_CTX_free(ctx->wolf_ctx);
		free(ctx);
		snprintf(err, err_size, "TLS context: cannot set TLS >= 1.2 and the cipher suites");
		return -EPROTO;
	}
	ctx->role = role;
	atomic_init(&ctx->reference_count, 1u);
	*out = ctx;
	return 0;
}

/* -errno when the file cannot be opened for reading, with err naming it. */
static int
eng_tls_check_readable(const char *what, const char *file, char *err, size_t err_size)
{
	if (access(file, R_OK) == 0) {
		return 0;
	}
	int error = errno;
	snprintf(err, err_size, "%s %s: %s", what, file, strerror(error));
	return -error;
}

/* wolfSSL accepts a PEM file without any certificate as a CA file: look
 * for one certificate first (bounded: the first 100000 lines). */
static bool
eng_tls_file_has_certificate(const char *file)
{
	FILE *stream = fopen(file, "r");
	if (stream == NULL) {
		return false;
	}
	static const char begin[] = "-----BEGIN CERTIFICATE-----";
	char line[256];
	bool has_certificate = false;
	for (uint32_t count = 0; count < 100000u && !has_certificate; count++) {
		if (fgets(line, sizeof(line), stream) == NULL) {
			break;
		}
		has_certificate = strncmp(line, begin, sizeof(begin) - 1) == 0;
	}
	fclose(stream);
	return has_certificate;
}

int
eng_tls_client_ctx_create(struct eng_tls_ctx **out, const char *ca_file, char *err,
			  size_t err_size)
{
	ENG_ASSERT(out != NULL);
	ENG_ASSERT(err != NULL && err_size > 0);
	const char *file = ca_file != NULL ? ca_file : ENG_TLS_SYSTEM_CA_FILE;
	int rc = eng_tls_check_readable("TLS CA file", file, err, err_size);
	if (rc < 0) {
		return rc;
	}
	if (!eng_tls_file_has_certificate(file)) {
		snprintf(err, err_size, "TLS CA file %s: no PEM certificate in it", file);
		return -EPROTO;
	}
	struct eng_tls_ctx *ctx = NULL;
	rc = eng_tls_ctx_new(&ctx, ENG_TLS_ROLE_CLIENT, err, err_size);
	if (rc < 0) {
		return rc;
	}
	/* The system bundle may hold a certificate wolfSSL cannot parse:
	 * skip it rather than refuse the whole store. */
	unsigned flags = ca_file == NULL ? WOLFSSL_LOAD_FLAG_IGNORE_ERR : 0u;
	if (wolfSSL_CTX_load_verify_locations_ex(ctx->wolf_ctx, file, NULL, flags) !=
	    WOLFSSL_SUCCESS) {
		snprintf(err, err_size, "TLS CA file %s: no usable PEM certificate", file);
		eng_tls_ctx_put(ctx);
		return -EPROTO;
	}
	/* Sessions live in the per-shard eng_tls_session_cache, not in
	 * wolfSSL's process-wide client cache (which takes locks). */
	wolfSSL_CTX_set_session_cache_mode(ctx->wolf_ctx, WOLFSSL_SESS_CACHE_OFF);
	*out = ctx;
	return 0;
}

/*
 * wolfSSL 5.5.4's wolfSSL_CTX_check_private_key() accepts an EC key that
 * belongs to another certificate: sign with the key, verify with the
 * certificate's public key instead (any key type).
 */
static bool
eng_tls_key_matches(WOLFSSL_CTX *wolf_ctx)
{
	static const unsigned char message[] = "ringmail certificate and key check";
	WOLFSSL_X509 *cert = wolfSSL_CTX_get0_certificate(wolf_ctx);
	WOLFSSL_EVP_PKEY *key = wolfSSL_CTX_get0_privatekey(wolf_ctx);
	if (cert == NULL || key == NULL) {
		return false;
	}
	WOLFSSL_EVP_PKEY *public_key = wolfSSL_X509_get_pubkey(cert);
	WOLFSSL_EVP_MD_CTX *sign = wolfSSL_EVP_MD_CTX_new();
	WOLFSSL_EVP_MD_CTX *verify = wolfSSL_EVP_MD_CTX_new();
	unsigned char signature[1024];
	size_t signature_size = sizeof(signature);
	bool is_match =
		public_key != NULL && sign != NULL && verify != NULL &&
		wolfSSL_EVP_DigestSignInit(sign, NULL, wolfSSL_EVP_sha256(), NULL, key) == 1 &&
		wolfSSL_EVP_DigestSignUpdate(sign, message, sizeof(message)) == 1 &&
		wolfSSL_EVP_DigestSignFinal(sign, signature, &signature_size) == 1 &&
		wolfSSL_EVP_DigestVerifyInit(verify, NULL, wolfSSL_EVP_sha256(), NULL,
					     public_key) == 1 &&
		wolfSSL_EVP_DigestVerifyUpdate(verify, message, sizeof(message)) == 1 &&
		wolfSSL_EVP_DigestVerifyFinal(verify, signature, signature_size) == 1;
	wolfSSL_EVP_MD_CTX_free(verify);
	wolfSSL_EVP_MD_CTX_free(sign);
	wolfSSL_EVP_PKEY_free(public_key);
	return is_match;
}

int
eng_tls_server_ctx_create(struct eng_tls_ctx **out, const char *cert_file, const char *key_file,
			  char *err, size_t err_size)
{
	ENG_ASSERT(out != NULL && cert_file != NULL && key_file != NULL);
	ENG_ASSERT(err != NULL && err_size > 0);
	int rc = eng_tls_check_readable("TLS certificate", cert_file, err, err_size);
	if (rc == 0) {
		rc = eng_tls_check_readable("TLS key", key_file, err, err_size);
	}
	if (rc < 0) {
		return rc;
	}
	struct eng_tls_ctx *ctx = NULL;
	rc = eng_tls_ctx_new(&ctx, ENG_TLS_ROLE_SERVER, err, err_size);
	if (rc < 0) {
		return rc;
	}
	WOLFSSL_CTX *wolf_ctx = ctx->wolf_ctx;
	if (wolfSSL_CTX_use_certificate_chain_file(wolf_ctx, cert_file) != WOLFSSL_SUCCESS) {
		snprintf(err, err_size, "TLS certificate %s: not a PEM certificate chain", cert_file);
		rc = -EPROTO;
	} else if (wolfSSL_CTX_use_PrivateKey_file(wolf_ctx, key_file, WOLFSSL_FILETYPE_PEM) !=
		   WOLFSSL_SUCCESS) {
		snprintf(err, err_size, "TLS key %s: not a PEM private key", key_file);
		rc = -EPROTO;
	} else if (wolfSSL_CTX_check_private_key(wolf_ctx) != WOLFSSL_SUCCESS ||
		   !eng_tls_key_matches(wolf_ctx)) {
		snprintf(err, err_size, "TLS key %s does not match the certificate %s", key_file,
			 cert_file);
		rc = -EPROTO;
	}
	if (rc < 0) {
		eng_tls_ctx_put(ctx);
		return rc;
	}
	/* No client certificates are asked for. */
	wolfSSL_CTX_set_verify(wolf_ctx, WOLFSSL_VERIFY_NONE, NULL);
	*out = ctx;
	return 0;
}

void
eng_tls_server_ctx_disable_resumption(struct eng_tls_ctx *ctx)
{
	ENG_ASSERT(ctx != NULL && ctx->role == ENG_TLS_ROLE_SERVER);
	/* They fail only on a NULL context (the success value differs
	 * between the two: 0 and WOLFSSL_SUCCESS). */
	int rc = wolfSSL_CTX_no_ticket_TLSv13(ctx->wolf_ctx);
	ENG_ASSERT(rc == 0 || rc == WOLFSSL_SUCCESS);
	rc = wolfSSL_CTX_NoTicketTLSv12(ctx->wolf_ctx);
	ENG_ASSERT(rc == 0 || rc == WOLFSSL_SUCCESS);
	wolfSSL_CTX_set_session_cache_mode(ctx->wolf_ctx, WOLFSSL_SESS_CACHE_OFF);
}

/* ---- session cache ---- */

struct eng_tls_session_cache *
eng_tls_session_cache_create(uint32_t capacity)
{
	ENG_ASSERT(capacity > 0);
	size_t size = sizeof(struct eng_tls_session_cache) +
		      (size_t)capacity * sizeof(struct eng_tls_session_entry);
	struct eng_tls_session_cache *cache = calloc(1, size);
	if (cache == NULL) {
		return NULL;
	}
	cache->capacity = capacity;
	return cache;
}

void
eng_tls_session_cache_destroy(struct eng_tls_session_cache *cache)
{
	if (cache == NULL) {
		return;
	}
	for (uint32_t index = 0; index < cache->capacity; index++) {
		if (cache->entries[index].session != NULL) {
			wolfSSL_SESSION_free(cache->entries[index].session);
		}
	}
	free(cache);
}

uint32_t
eng_tls_session_cache_count(const struct eng_tls_session_cache *cache)
{
	ENG_ASSERT(cache != NULL);
	ENG_ASSERT(cache->count <= cache->capacity);
	return cache->count;
}

/* FNV-1a: a cheap filter before the key comparison. */
static uint64_t
eng_tls_key_hash(const char *key, size_t len)
{
	uint64_t hash = 14695981039346656037ull;
	for (size_t index = 0; index < len; index++) {
		hash ^= (uint8_t)key[index];
		hash *= 1099511628211ull;
	}
	return hash;
}

static struct eng_tls_session_entry *
eng_tls_cache_find(struct eng_tls_session_cache *cache, const char *key, size_t key_len)
{
	uint64_t hash = eng_tls_key_hash(key, key_len);
	for (uint32_t index = 0; index < cache->capacity; index++) {
		struct eng_tls_session_entry *entry = &cache->entries[index];
		if (entry->session != NULL && entry->key_hash == hash && entry->key_len == key_len &&
		    memcmp(entry->key, key, key_len) == 0) {
			return entry;
		}
	}
	return NULL;
}

static void
eng_tls_cache_remove(struct eng_tls_session_cache *cache, struct eng_tls_session_entry *entry)
{
	ENG_ASSERT(entry->session != NULL);
	ENG_ASSERT(cache->count > 0);
	wolfSSL_SESSION_free(entry->session);
	memset(entry, 0, sizeof(*entry));
	cache->count--;
}

/* A free slot, or the oldest entry emptied for reuse. */
static struct eng_tls_session_entry *
eng_tls_cache_slot(struct eng_tls_session_cache *cache)
{
	struct eng_tls_session_entry *oldest = NULL;
	for (uint32_t index = 0; index < cache->capacity; index++) {
		struct eng_tls_session_entry *entry = &cache->entries[index];
		if (entry->session == NULL) {
			return entry;
		}
		if (oldest == NULL || entry->stored_seq < oldest->stored_seq) {
			oldest = entry;
		}
	}
	ENG_ASSERT(oldest != NULL);
	eng_tls_cache_remove(cache, oldest);
	return oldest;
}

/* Takes ownership of session. */
static void
eng_tls_cache_store(struct eng_tls_session_cache *cache, const char *key, size_t key_len,
		    WOLFSSL_SESSION *session, bool is_verified)
{
	ENG_ASSERT(key_len > 0 && key_len < ENG_TLS_SESSION_KEY_SIZE);
	struct eng_tls_session_entry *entry = eng_tls_cache_find(cache, key, key_len);
	if (entry != NULL) {
		eng_tls_cache_remove(cache, entry);
	} else {
		entry = eng_tls_cache_slot(cache);
	}
	ENG_ASSERT(entry->session == NULL);
	entry->session = session;
	entry->key_hash = eng_tls_key_hash(key, key_len);
	entry->stored_seq = ++cache->seq;
	entry->key_len = (uint16_t)key_len;
	entry->is_verified = is_verified;
	memcpy(entry->key, key, key_len);
	cache->count++;
	ENG_ASSERT(cache->count <= cache->capacity);
}

/* ---- I/O callbacks: the only place wolfSSL touches bytes ---- */

static int
eng_tls_recv_callback(WOLFSSL *ssl, char *buf, int size, void *context)
{
	struct eng_tls *tls = context;
	ENG_ASSERT(tls != NULL && tls->ssl == ssl);
	ENG_ASSERT(tls->in_start <= tls->in_end && tls->in_end <= ENG_TLS_CIPHER_IN_SIZE);
	if (size <= 0) {
		return 0;
	}
	uint32_t available = tls->in_end - tls->in_start;
	if (available == 0) {
		return WOLFSSL_CBIO_ERR_WANT_READ;
	}
	uint32_t count = ENG_MIN(available, (uint32_t)size);
	memcpy(buf, tls->cipher_in + tls->in_start, count);
	tls->in_start += count;
	if (tls->in_start == tls->in_end) {
		tls->in_start = 0;
		tls->in_end = 0;
	}
	return (int)count;
}

static int
eng_tls_send_callback(WOLFSSL *ssl, char *buf, int size, void *context)
{
	struct eng_tls *tls = context;
	ENG_ASSERT(tls != NULL && tls->ssl == ssl);
	ENG_ASSERT(tls->out_end <= ENG_TLS_CIPHER_OUT_SIZE);
	if (size <= 0) {
		return 0;
	}
	uint32_t space = ENG_TLS_CIPHER_OUT_SIZE - tls->out_end;
	if (space == 0) {
		return WOLFSSL_CBIO_ERR_WANT_WRITE;
	}
	uint32_t count = ENG_MIN(space, (uint32_t)size);
	memcpy(tls->cipher_out + tls->out_end, buf, count);
	tls->out_end += count;
	return (int)count;
}

/* ---- verification ---- */

/* store->error holds a wolfSSL error or, for chain errors under
 * OPENSSL_EXTRA, an OpenSSL X509_V_ERR_* number: both are mapped. */
static const char *
eng_tls_verify_reason(int error)
{
	switch (error) {
	case DOMAIN_NAME_MISMATCH:
		return "host name mismatch";
	case ASN_NO_SIGNER_E:
	case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
	case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
	case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
		return "unknown issuer (no trusted CA signed it)";
	case ASN_SELF_SIGNED_E:
	case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
	case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
		return "self-signed certificate";
	case ASN_AFTER_DATE_E:
	case X509_V_ERR_CERT_HAS_EXPIRED:
	case X509_V_ERR_ERROR_IN_CERT_NOT_AFTER_FIELD:
		return "certificate expired";
	case ASN_BEFORE_DATE_E:
	case X509_V_ERR_CERT_NOT_YET_VALID:
	case X509_V_ERR_ERROR_IN_CERT_NOT_BEFORE_FIELD:
		return "certificate not yet valid";
	case X509_V_ERR_CERT_SIGNATURE_FAILURE:
		return "bad certificate signature";
	default:
		return NULL;
	}
}

static void
eng_tls_verify_failed(struct eng_tls *tls, int error, const char *reason)
{
	tls->verify_is_ok = false;
	if (tls->verify_has_failed) {
		return; /* the first failure is the one reported */
	}
	tls->verify_has_failed = true;
	if (reason == NULL) {
		reason = eng_tls_verify_reason(error);
	}
	if (reason != NULL) {
		snprintf(tls->verify_text, sizeof(tls->verify_text),
			 "certificate verify failed: %s", reason);
	} else {
		char text[WOLFSSL_MAX_ERROR_SZ];
		wolfSSL_ERR_error_string_n((unsigned long)error, text, sizeof(text));
		snprintf(tls->verify_text, sizeof(tls->verify_text),
			 "certificate verify failed: %s (%d)", text, error);
	}
}

/*
 * Called for every certificate of the chain, the leaf (depth 0) last.
 * Records the result; fails the handshake only under VERIFY_PEER.
 */
static int
eng_tls_verify_callback(int preverify_is_ok, WOLFSSL_X509_STORE_CTX *store)
{
	ENG_ASSERT(store != NULL);
	struct eng_tls *tls = store->userCtx;
	ENG_ASSERT(tls != NULL && tls->role == ENG_TLS_ROLE_CLIENT);
	if (preverify_is_ok != 1) {
		eng_tls_verify_failed(tls, store->error, NULL);
	} else if (store->error_depth == 0 && store->current_cert != NULL &&
		   wolfSSL_X509_ext_isSet_by_NID(store->current_cert, NID_subject_alt_name) != 1) {
		/* wolfSSL would accept a matching CN: RFC 6125 deprecates it. */
		eng_tls_verify_failed(tls, 0, "no subjectAltName (a CN-only name is not accepted)");
	} else if (store->error_depth == 0 && !tls->verify_has_failed) {
		tls->verify_is_ok = true;
	}
	if (tls->verify == ENG_TLS_VERIFY_NONE) {
		return 1;
	}
	return tls->verify_has_failed ? 0 : 1;
}

/* ---- connections ---- */

static void
eng_tls_reset(struct eng_tls *tls)
{
	tls->ssl = NULL;
	tls->ctx = NULL;
	tls->cache = NULL;
	tls->is_handshake_done = false;
	tls->is_failed = false;
	tls->verify_is_ok = false;
	tls->verify_has_failed = false;
	tls->resume_is_verified = false;
	tls->is_shutdown_sent = false;
	tls->verify = ENG_TLS_VERIFY_NONE;
	tls->session_key[0] = '\0';
	tls->error_text[0] = '\0';
	tls->verify_text[0] = '\0';
	tls->in_start = 0;
	tls->in_end = 0;
	tls->out_end = 0;
}

static int
eng_tls_start(struct eng_tls *tls, struct eng_tls_ctx *ctx, enum eng_tls_role role)
{
	ENG_ASSERT(tls != NULL && ctx != NULL);
	ENG_ASSERT(ctx->role == role);
	eng_tls_reset(tls);
	tls->role = role;
	WOLFSSL *ssl = wolfSSL_new(ctx->wolf_ctx);
	if (ssl == NULL) {
		tls->is_failed = true;
		snprintf(tls->error_text, sizeof(tls->error_text), "TLS: out of memory");
		return -ENOMEM;
	}
	eng_tls_ctx_get(ctx);
	tls->ctx = ctx;
	tls->ssl = ssl;
	wolfSSL_SSLSetIORecv(ssl, eng_tls_recv_callback);
	wolfSSL_SSLSetIOSend(ssl, eng_tls_send_callback);
	wolfSSL_SetIOReadCtx(ssl, tls);
	wolfSSL_SetIOWriteCtx(ssl, tls);
	return 0;
}

static bool
eng_tls_host_is_address(const char *host)
{
	/* An address literal is never sent as SNI (RFC 6066 3). */
	return strchr(host, ':') != NULL || strspn(host, "0123456789.") == strlen(host);
}

/* Offer the cached session for the key, when there is a usable one. */
static void
eng_tls_resume_offer(struct eng_tls *tls)
{
	struct eng_tls_session_entry *entry =
		eng_tls_cache_find(tls->cache, tls->session_key, strlen(tls->session_key));
	if (entry == NULL) {
		return;
	}
	if (tls->verify == ENG_TLS_VERIFY_PEER && !entry->is_verified) {
		return; /* a resumed handshake would skip the check */
	}
	if (wolfSSL_set_session(tls->ssl, entry->session) != WOLFSSL_SUCCESS) {
		eng_tls_cache_remove(tls->cache, entry); /* expired */
		return;
	}
	tls->resume_is_verified = entry->is_verified;
}

static int
eng_tls_client_fail(struct eng_tls *tls, int rc, const char *what)
{
	tls->is_failed = true;
	snprintf(tls->error_text, sizeof(tls->error_text), "TLS: %s", what);
	return rc;
}

int
eng_tls_client_start(struct eng_tls *tls, struct eng_tls_ctx *ctx, const char *sni_host,
		     size_t sni_host_len, enum eng_tls_verify verify,
		     struct eng_tls_session_cache *cache, const char *session_key,
		     size_t session_key_len)
{
	ENG_ASSERT(sni_host != NULL && sni_host_len > 0);
	ENG_ASSERT(verify == ENG_TLS_VERIFY_NONE || verify == ENG_TLS_VERIFY_PEER);
	int rc = eng_tls_start(tls, ctx, ENG_TLS_ROLE_CLIENT);
	if (rc < 0) {
		return rc;
	}
	tls->verify = verify;
	if (sni_host_len >= ENG_TLS_HOST_SIZE || memchr(sni_host, '\0', sni_host_len) != NULL) {
		return eng_tls_client_fail(tls, -EINVAL, "bad peer host name");
	}
	char host[ENG_TLS_HOST_SIZE];
	memcpy(host, sni_host, sni_host_len);
	host[sni_host_len] = '\0';
	WOLFSSL *ssl = tls->ssl;
	wolfSSL_set_verify(ssl, WOLFSSL_VERIFY_PEER, eng_tls_verify_callback);
	wolfSSL_SetCertCbCtx(ssl, tls);
	if (wolfSSL_check_domain_name(ssl, host) != WOLFSSL_SUCCESS) {
		return eng_tls_client_fail(tls, -ENOMEM, "out of memory");
	}
	if (!eng_tls_host_is_address(host) &&
	    wolfSSL_UseSNI(ssl, WOLFSSL_SNI_HOST_NAME, host, (unsigned short)sni_host_len) !=
		    WOLFSSL_SUCCESS) {
		return eng_tls_client_fail(tls, -ENOMEM, "out of memory");
	}
	if (wolfSSL_UseSessionTicket(ssl) != WOLFSSL_SUCCESS) {
		return eng_tls_client_fail(tls, -ENOMEM, "out of memory");
	}
	if (cache != NULL && session_key != NULL && session_key_len > 0) {
		if (session_key_len >= ENG_TLS_SESSION_KEY_SIZE ||
		    memchr(session_key, '\0', session_key_len) != NULL) {
			return eng_tls_client_fail(tls, -EINVAL, "bad session key");
		}
		memcpy(tls->session_key, session_key, session_key_len);
		tls->session_key[session_key_len] = '\0';
		tls->cache = cache;
		eng_tls_resume_offer(tls);
	}
	return 0;
}

int
eng_tls_server_start(struct eng_tls *tls, struct eng_tls_ctx *ctx)
{
	return eng_tls_start(tls, ctx, ENG_TLS_ROLE_SERVER);
}

/* ---- buffers ---- */

void
eng_tls_input_space(struct eng_tls *tls, uint8_t **ptr, size_t *size)
{
	ENG_ASSERT(tls != NULL && ptr != NULL && size != NULL);
	ENG_ASSERT(tls->in_start <= tls->in_end && tls->in_end <= ENG_TLS_CIPHER_IN_SIZE);
	if (tls->in_start > 0) {
		/* Keep what wolfSSL has not read yet at the front. */
		uint32_t pending = tls->in_end - tls->in_start;
		memmove(tls->cipher_in, tls->cipher_in + tls->in_start, pending);
		tls->in_start = 0;
		tls->in_end = pending;
	}
	*ptr = tls->cipher_in + tls->in_end;
	*size = ENG_TLS_CIPHER_IN_SIZE - tls->in_end;
}

void
eng_tls_input_commit(struct eng_tls *tls, size_t size)
{
	ENG_ASSERT(tls != NULL);
	ENG_ASSERT(size <= ENG_TLS_CIPHER_IN_SIZE - tls->in_end);
	tls->in_end += (uint32_t)size;
}

void
eng_tls_output(const struct eng_tls *tls, const uint8_t **ptr, size_t *size)
{
	ENG_ASSERT(tls != NULL && ptr != NULL && size != NULL);
	ENG_ASSERT(tls->out_end <= ENG_TLS_CIPHER_OUT_SIZE);
	*ptr = tls->cipher_out;
	*size = tls->out_end;
}

void
eng_tls_output_consume(struct eng_tls *tls, size_t size)
{
	ENG_ASSERT(tls != NULL);
	ENG_ASSERT(size <= tls->out_end);
	uint32_t rest = tls->out_end - (uint32_t)size;
	if (rest > 0 && size > 0) {
		memmove(tls->cipher_out, tls->cipher_out + size, rest);
	}
	tls->out_end = rest;
}

bool
eng_tls_output_is_pending(const struct eng_tls *tls)
{
	ENG_ASSERT(tls != NULL);
	ENG_ASSERT(tls->out_end <= ENG_TLS_CIPHER_OUT_SIZE);
	return tls->out_end > 0;
}

/* ---- handshake, read, write ---- */

/* Fill error_text for a failed wolfSSL call whose error is error. */
static void
eng_tls_describe_error(struct eng_tls *tls, int error, const char *what)
{
	if (tls->verify_has_failed && tls->verify == ENG_TLS_VERIFY_PEER) {
		snprintf(tls->error_text, sizeof(tls->error_text), "%s", tls->verify_text);
		return;
	}
	WOLFSSL_ALERT_HISTORY history;
	memset(&history, 0, sizeof(history));
	if (error == FATAL_ERROR &&
	    wolfSSL_get_alert_history(tls->ssl, &history) == WOLFSSL_SUCCESS &&
	    history.last_rx.code > 0) {
		snprintf(tls->error_text, sizeof(tls->error_text), "%s: peer sent alert %s", what,
			 wolfSSL_alert_desc_string_long(history.last_rx.code));
		return;
	}
	char text[WOLFSSL_MAX_ERROR_SZ];
	wolfSSL_ERR_error_string_n((unsigned long)error, text, sizeof(text));
	snprintf(tls->error_text, sizeof(tls->error_text), "%s: %s (%d)", what, text, error);
}

/* Map a failed wolfSSL call (ret <= 0). */
static enum eng_tls_result
eng_tls_result_of(struct eng_tls *tls, int ret, const char *what)
{
	int code = wolfSSL_get_error(tls->ssl, ret);
	switch (code) {
	case WOLFSSL_ERROR_WANT_READ:
	case WOLFSSL_ERROR_WANT_WRITE:
		return ENG_TLS_WANT_IO;
	case WOLFSSL_ERROR_ZERO_RETURN:
		return ENG_TLS_CLOSED;
	default:
		tls->is_failed = true;
		eng_tls_describe_error(tls, code, what);
		return ENG_TLS_ERROR;
	}
}

enum eng_tls_result
eng_tls_handshake(struct eng_tls *tls)
{
	ENG_ASSERT(tls != NULL && tls->ssl != NULL);
	if (tls->is_failed) {
		return ENG_TLS_ERROR;
	}
	if (tls->is_handshake_done) {
		return ENG_TLS_OK;
	}
	int ret = tls->role == ENG_TLS_ROLE_CLIENT ? wolfSSL_connect(tls->ssl)
						   : wolfSSL_accept(tls->ssl);
	if (ret == WOLFSSL_SUCCESS) {
		tls->is_handshake_done = true;
		return ENG_TLS_OK;
	}
	enum eng_tls_result result = eng_tls_result_of(tls, ret, "TLS handshake failed");
	if (result == ENG_TLS_CLOSED) {
		/* close_notify before the handshake ended is a failure. */
		tls->is_failed = true;
		snprintf(tls->error_text, sizeof(tls->error_text),
			 "TLS handshake failed: peer closed");
		return ENG_TLS_ERROR;
	}
	return result;
}

enum eng_tls_result
eng_tls_read(struct eng_tls *tls, uint8_t *buf, size_t cap, size_t *got)
{
	ENG_ASSERT(tls != NULL && tls->ssl != NULL);
	ENG_ASSERT(buf != NULL && cap > 0 && got != NULL);
	ENG_ASSERT(tls->is_handshake_done);
	*got = 0;
	if (tls->is_failed) {
		return ENG_TLS_ERROR;
	}
	int want = (int)ENG_MIN(cap, (size_t)INT32_MAX);
	int ret = wolfSSL_read(tls->ssl, buf, want);
	if (ret > 0) {
		ENG_ASSERT(ret <= want);
		*got = (size_t)ret;
		return ENG_TLS_OK;
	}
	return eng_tls_result_of(tls, ret, "TLS read failed");
}

enum eng_tls_result
eng_tls_write(struct eng_tls *tls, const uint8_t *ptr, size_t len, size_t *taken)
{
	ENG_ASSERT(tls != NULL && tls->ssl != NULL);
	ENG_ASSERT(ptr != NULL && len > 0 && taken != NULL);
	ENG_ASSERT(tls->is_handshake_done);
	*taken = 0;
	if (tls->is_failed) {
		return ENG_TLS_ERROR;
	}
	/* One record at a time, and only when it fits: wolfSSL then never
	 * has to hold an encrypted record the output buffer refused. */
	uint32_t space = ENG_TLS_CIPHER_OUT_SIZE - tls->out_end;
	if (space <= ENG_TLS_RECORD_OVERHEAD_MAX) {
		return ENG_TLS_WANT_IO;
	}
	size_t chunk = ENG_MIN(len, (size_t)ENG_MIN(ENG_TLS_RECORD_PLAIN_MAX,
						    space - ENG_TLS_RECORD_OVERHEAD_MAX));
	int ret = wolfSSL_write(tls->ssl, ptr, (int)chunk);
	if (ret > 0) {
		ENG_ASSERT((size_t)ret <= len);
		*taken = (size_t)ret;
		return ENG_TLS_OK;
	}
	enum eng_tls_result result = eng_tls_result_of(tls, ret, "TLS write failed");
	if (result == ENG_TLS_CLOSED) {
		return ENG_TLS_CLOSED;
	}
	return result;
}

void
eng_tls_shutdown(struct eng_tls *tls)
{
	ENG_ASSERT(tls != NULL);
	if (tls->ssl == NULL || tls->is_failed || !tls->is_handshake_done ||
	    tls->is_shutdown_sent) {
		return;
	}
	tls->is_shutdown_sent = true;
	(void)wolfSSL_shutdown(tls->ssl); /* queues close_notify; no wait */
}

void
eng_tls_get_info(const struct eng_tls *tls, struct eng_tls_info *info)
{
	ENG_ASSERT(tls != NULL && info != NULL);
	ENG_ASSERT(tls->ssl != NULL && tls->is_handshake_done);
	WOLFSSL *ssl = tls->ssl;
	memset(info, 0, sizeof(*info));
	const char *version = wolfSSL_get_version(ssl);
	const char *cipher = wolfSSL_get_cipher_name(ssl);
	snprintf(info->version, sizeof(info->version), "%s", version != NULL ? version : "");
	snprintf(info->cipher, sizeof(info->cipher), "%s", cipher != NULL ? cipher : "");
	info->is_resumed = wolfSSL_session_reused(ssl) != 0;
	if (tls->role == ENG_TLS_ROLE_CLIENT) {
		info->is_verified = info->is_resumed ? tls->resume_is_verified
						     : tls->verify_is_ok && !tls->verify_has_failed;
	}
}

size_t
eng_tls_server_sni(const struct eng_tls *tls, char *buf, size_t size)
{
	ENG_ASSERT(tls != NULL && buf != NULL && size > 0);
	ENG_ASSERT(tls->role == ENG_TLS_ROLE_SERVER);
	buf[0] = '\0';
	if (tls->ssl == NULL) {
		return 0;
	}
	void *name = NULL;
	unsigned short len = wolfSSL_SNI_GetRequest(tls->ssl, WOLFSSL_SNI_HOST_NAME, &name);
	if (name == NULL || len == 0 || len >= size) {
		return 0;
	}
	memcpy(buf, name, len);
	buf[len] = '\0';
	return len;
}

const char *
eng_tls_error_text(const struct eng_tls *tls)
{
	ENG_ASSERT(tls != NULL);
	ENG_ASSERT(memchr(tls->error_text, '\0', sizeof(tls->error_text)) != NULL);
	return tls->error_text;
}

/* Client: keep the newest session, or forget one that led to a failure. */
static void
eng_tls_session_keep(struct eng_tls *tls)
{
	struct eng_tls_session_cache *cache = tls->cache;
	size_t key_len = strlen(tls->session_key);
	if (!tls->is_handshake_done || tls->is_failed) {
		struct eng_tls_session_entry *entry =
			eng_tls_cache_find(cache, tls->session_key, key_len);
		if (entry != NULL) {
			eng_tls_cache_remove(cache, entry);
		}
		return;
	}
	WOLFSSL_SESSION *session = wolfSSL_get1_session(tls->ssl);
	if (session == NULL) {
		return;
	}
	struct eng_tls_info info;
	eng_tls_get_info(tls, &info);
	eng_tls_cache_store(cache, tls->session_key, key_len, session, info.is_verified);
}

void
eng_tls_end(struct eng_tls *tls)
{
	ENG_ASSERT(tls != NULL);
	if (tls->ssl == NULL) {
		eng_tls_ctx_put(tls->ctx);
		tls->ctx = NULL;
		return;
	}
	if (tls->role == ENG_TLS_ROLE_CLIENT && tls->cache != NULL && tls->session_key[0] != '\0') {
		eng_tls_session_keep(tls);
	}
	wolfSSL_free(tls->ssl);
	tls->ssl = NULL;
	tls->cache = NULL;
	eng_tls_ctx_put(tls->ctx);
	tls->ctx = NULL;
}
