#ifndef AGENTFLOW_COPENSSL_SHIM_H
#define AGENTFLOW_COPENSSL_SHIM_H

#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/bio.h>
#include <openssl/opensslv.h>

// OpenSSL exposes these as function-like macros, which Swift does not import.
// Each wrapper is a typed, inline stand-in for exactly one macro.

/// `SSL_CTX_set_min_proto_version` is a macro over `SSL_CTX_ctrl`.
static inline int agentflow_SSL_CTX_set_min_proto_version(SSL_CTX *ctx, int version) {
    return (int)SSL_CTX_set_min_proto_version(ctx, version);
}

/// `SSL_CTX_set_mode` is a macro over `SSL_CTX_ctrl`.
static inline long agentflow_SSL_CTX_set_mode(SSL_CTX *ctx, long mode) {
    return SSL_CTX_set_mode(ctx, mode);
}

/// `SSL_set_tlsext_host_name` (SNI) is a macro over `SSL_ctrl`.
static inline int agentflow_SSL_set_tlsext_host_name(SSL *ssl, const char *name) {
    return (int)SSL_set_tlsext_host_name(ssl, name);
}

/// `BIO_get_mem_data` is a macro over `BIO_ctrl`.
static inline long agentflow_BIO_get_mem_data(BIO *bio, char **data) {
    return BIO_get_mem_data(bio, data);
}

/// `BIO_set_retry_read` is a macro over `BIO_set_flags`.
static inline void agentflow_BIO_set_retry_read(BIO *bio) {
    BIO_set_retry_read(bio);
}

/// `BIO_clear_retry_flags` is a macro over `BIO_clear_flags`.
static inline void agentflow_BIO_clear_retry_flags(BIO *bio) {
    BIO_clear_retry_flags(bio);
}

#endif
