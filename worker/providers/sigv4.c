/*
 * sigv4.c - AWS Signature Version 4, the request signing Bedrock wants.
 *
 * The signature is an HMAC-SHA-256 chain: a signing key derived from the
 * secret, the date, the region and the service, applied to a "string to
 * sign" that holds the hash of the canonical request (method, path,
 * sorted query, the signed headers, the payload's hash).  Services other
 * than S3 take the path URI-encoded once more for the canonical request,
 * so a Bedrock model id "a:0", sent as "a%3A0", is signed as "a%253A0".
 * Checked against AWS's published test suite and documented example
 * (tests/unit/test_providers.c).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "worker/worker.h"

static void
hex(const unsigned char *in, size_t len, char *out)
{
    static const char digits[] = "0123456789abcdef";

    for (size_t i = 0; i < len; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * len] = '\0';
}

static void
sha256_hex(const void *data, size_t len, char out[65])
{
    unsigned char md[32];
    unsigned int mdlen = sizeof(md);

    EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL);
    hex(md, sizeof(md), out);
}

static void
hmac(const void *key, size_t keylen, const char *msg, unsigned char out[32])
{
    unsigned int len = 32;

    HMAC(EVP_sha256(), key, (int)keylen, (const unsigned char *)msg, strlen(msg), out, &len);
}

void
gw_worker_sigv4_key(const char *secret, const char *date, const char *region, const char *service,
                    unsigned char key[32])
{
    size_t klen = strlen(secret) + 4;
    char *k = malloc(klen + 1);
    unsigned char a[32], b[32];

    if (k == NULL) {
        memset(key, 0, 32);
        return;
    }
    snprintf(k, klen + 1, "AWS4%s", secret);
    hmac(k, klen, date, a);
    explicit_bzero(k, klen);
    free(k);
    hmac(a, 32, region, b);
    hmac(b, 32, service, a);
    hmac(a, 32, "aws4_request", key);
    explicit_bzero(a, sizeof(a));
    explicit_bzero(b, sizeof(b));
}

/* s URI-encoded as SigV4 wants it: unreserved kept, '/' too when keep_slash. */
static void
uri_encode(struct gw_buf *b, const char *s, bool keep_slash)
{
    static const char digits[] = "0123456789ABCDEF";

    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '.' || c == '_' || c == '~' || (keep_slash && c == '/')) {
            gw_buf_append(b, (const char *)&c, 1);
        } else {
            char e[3] = {'%', digits[c >> 4], digits[c & 15]};
            gw_buf_append(b, e, 3);
        }
    }
}

static int
cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

char *
gw_worker_sigv4_canonical(struct gw_arena *a, const char *method, const char *path,
                          const char *query, const char *const *headers, size_t nheaders,
                          const char *payload_hash)
{
    struct gw_buf b = {0};
    char *out = NULL, *q = NULL, **params = NULL;
    size_t np = 0;

    gw_buf_printf(&b, "%s\n", method);
    uri_encode(&b, path[0] ? path : "/", true);
    gw_buf_append(&b, "\n", 1);
    /* The query's parameters sorted; they come encoded already. */
    if (query != NULL && query[0] != '\0') {
        q = strdup(query);
        params = calloc(strlen(query) + 1, sizeof(*params));
        if (q == NULL || params == NULL)
            goto out;
        for (char *save = NULL, *p = strtok_r(q, "&", &save); p; p = strtok_r(NULL, "&", &save))
            params[np++] = p;
        qsort(params, np, sizeof(*params), cmp_str);
        for (size_t i = 0; i < np; i++)
            gw_buf_printf(&b, "%s%s%s", i ? "&" : "", params[i], strchr(params[i], '=') ? "" : "=");
    }
    gw_buf_append(&b, "\n", 1);
    for (size_t i = 0; i < nheaders; i++)
        gw_buf_printf(&b, "%s\n", headers[i]);
    gw_buf_append(&b, "\n", 1);
    for (size_t i = 0; i < nheaders; i++)
        gw_buf_printf(&b, "%s%.*s", i ? ";" : "", (int)strcspn(headers[i], ":"), headers[i]);
    gw_buf_printf(&b, "\n%s", payload_hash);
    if (b.data != NULL)
        out = gw_arena_strndup(a, b.data, b.len);
out:
    free(params);
    free(q);
    gw_buf_free(&b);
    return out;
}

int
gw_worker_sigv4_sign(const struct gw_sigv4 *k, const char *method, const char *path,
                     const char *query, const char *const *headers, size_t nheaders,
                     const char *payload, size_t payload_len, char *auth, size_t auth_size)
{
    struct gw_arena *a = gw_arena_create(4096);
    char payload_hash[65], creq_hash[65], date[9], sig[65], *sts, *creq;
    unsigned char key[32], mac[32];
    struct gw_buf signed_headers = {0};
    int rc = GW_EINVAL;

    if (a == NULL || strlen(k->amz_date) != 16)
        goto out;
    memcpy(date, k->amz_date, 8);
    date[8] = '\0';
    sha256_hex(payload != NULL ? payload : "", payload_len, payload_hash);
    creq = gw_worker_sigv4_canonical(a, method, path, query, headers, nheaders, payload_hash);
    if (creq == NULL)
        goto out;
    sha256_hex(creq, strlen(creq), creq_hash);
    sts = gw_arena_printf(a, "AWS4-HMAC-SHA256\n%s\n%s/%s/%s/aws4_request\n%s", k->amz_date, date,
                          k->region, k->service, creq_hash);
    gw_worker_sigv4_key(k->secret_key, date, k->region, k->service, key);
    hmac(key, sizeof(key), sts, mac);
    explicit_bzero(key, sizeof(key));
    hex(mac, sizeof(mac), sig);
    for (size_t i = 0; i < nheaders; i++)
        gw_buf_printf(&signed_headers, "%s%.*s", i ? ";" : "", (int)strcspn(headers[i], ":"),
                      headers[i]);
    int n = snprintf(auth, auth_size,
                     "AWS4-HMAC-SHA256 Credential=%s/%s/%s/%s/aws4_request, SignedHeaders=%s, "
                     "Signature=%s",
                     k->access_key, date, k->region, k->service,
                     signed_headers.data != NULL ? signed_headers.data : "", sig);
    if (n > 0 && (size_t)n < auth_size)
        rc = 0;
out:
    gw_buf_free(&signed_headers);
    gw_arena_destroy(a);
    return rc;
}
