/*
 * test_seal.c - AES-256-GCM sealing (shm/seal.c): round trip, fresh
 * nonces, tamper detection, wrong associated data or key; the provider
 * key file (created 0600, refused when open to others, hex accepted); and
 * the BYOK record built on it (shm/byok.c): no secret in clear, bound to
 * its tenant.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "shm/shm.h"

static const unsigned char key[GW_SEAL_KEY_LEN] = "0123456789abcdef0123456789abcdef";
static const char secret[] = "sk-tenant-secret-4242";
static const char ad[] = "acme\0acme-openai";

static void
round_trip_gives_the_secret_back(void **state)
{
    unsigned char sealed[sizeof(secret) + GW_SEAL_OVERHEAD], out[sizeof(secret)];
    size_t n;

    (void)state;
    assert_int_equal(gw_seal_encrypt(key, ad, sizeof(ad), secret, sizeof(secret), sealed), 0);
    assert_null(memmem(sealed, sizeof(sealed), "sk-tenant", 9));
    assert_int_equal(gw_seal_decrypt(key, ad, sizeof(ad), sealed, sizeof(sealed), out, &n), 0);
    assert_int_equal(n, sizeof(secret));
    assert_memory_equal(out, secret, sizeof(secret));
}

static void
each_seal_has_a_fresh_nonce(void **state)
{
    unsigned char a[sizeof(secret) + GW_SEAL_OVERHEAD], b[sizeof(a)];

    (void)state;
    assert_int_equal(gw_seal_encrypt(key, ad, sizeof(ad), secret, sizeof(secret), a), 0);
    assert_int_equal(gw_seal_encrypt(key, ad, sizeof(ad), secret, sizeof(secret), b), 0);
    assert_memory_not_equal(a, b, GW_SEAL_NONCE_LEN);
    assert_memory_not_equal(a + GW_SEAL_NONCE_LEN, b + GW_SEAL_NONCE_LEN, sizeof(secret));
}

static void
any_changed_byte_is_detected(void **state)
{
    unsigned char sealed[sizeof(secret) + GW_SEAL_OVERHEAD], out[sizeof(secret)];
    size_t n;

    (void)state;
    assert_int_equal(gw_seal_encrypt(key, ad, sizeof(ad), secret, sizeof(secret), sealed), 0);
    /* Nonce, ciphertext and tag: every byte counts. */
    for (size_t i = 0; i < sizeof(sealed); i++) {
        sealed[i] ^= 0x01;
        memset(out, 0x55, sizeof(out));
        assert_int_equal(gw_seal_decrypt(key, ad, sizeof(ad), sealed, sizeof(sealed), out, &n),
                         GW_EINVAL);
        assert_int_equal(n, 0);
        assert_null(memmem(out, sizeof(out), "sk-tenant", 9));
        sealed[i] ^= 0x01;
    }
    /* Cut short, or too short to hold a nonce and a tag. */
    assert_int_equal(gw_seal_decrypt(key, ad, sizeof(ad), sealed, sizeof(sealed) - 1, out, &n),
                     GW_EINVAL);
    assert_int_equal(gw_seal_decrypt(key, ad, sizeof(ad), sealed, GW_SEAL_OVERHEAD - 1, out, &n),
                     GW_EINVAL);
}

static void
wrong_associated_data_or_key_does_not_open(void **state)
{
    static const char other[] = "evil\0acme-openai";
    unsigned char sealed[sizeof(secret) + GW_SEAL_OVERHEAD], out[sizeof(secret)];
    unsigned char key2[GW_SEAL_KEY_LEN];
    size_t n;

    (void)state;
    memcpy(key2, key, sizeof(key2));
    key2[31] ^= 0x80;
    assert_int_equal(gw_seal_encrypt(key, ad, sizeof(ad), secret, sizeof(secret), sealed), 0);
    assert_int_equal(gw_seal_decrypt(key, other, sizeof(other), sealed, sizeof(sealed), out, &n),
                     GW_EINVAL);
    assert_int_equal(gw_seal_decrypt(key, NULL, 0, sealed, sizeof(sealed), out, &n), GW_EINVAL);
    assert_int_equal(gw_seal_decrypt(key2, ad, sizeof(ad), sealed, sizeof(sealed), out, &n),
                     GW_EINVAL);
}

static void
key_file_is_created_0600_and_read_back(void **state)
{
    char tmpl[] = "/tmp/aigw-test-seal-XXXXXX", path[256], from[256];
    char *dir = mkdtemp(tmpl);
    unsigned char k1[GW_SEAL_KEY_LEN], k2[GW_SEAL_KEY_LEN];
    struct stat st;

    (void)state;
    assert_non_null(dir);
    unsetenv("CREDENTIALS_DIRECTORY");
    assert_int_equal(gw_seal_key_load(NULL, dir, k1, from, sizeof(from)), 0);
    snprintf(path, sizeof(path), "%s/provider.key", dir);
    assert_string_equal(from, path);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(st.st_size, GW_SEAL_KEY_LEN);
    assert_int_equal(gw_seal_key_load(NULL, dir, k2, from, sizeof(from)), 0);
    assert_memory_equal(k1, k2, sizeof(k1));

    /* Open to the group or others: refused. */
    assert_int_equal(chmod(path, 0640), 0);
    assert_int_equal(gw_seal_key_load(NULL, dir, k2, from, sizeof(from)), GW_EPERM);
    assert_int_equal(chmod(path, 0604), 0);
    assert_int_equal(gw_seal_key_load(NULL, dir, k2, from, sizeof(from)), GW_EPERM);
    unlink(path);

    /* A configured file of 64 hex digits and a newline (openssl rand -hex 32). */
    snprintf(path, sizeof(path), "%s/hex.key", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n", f);
    fclose(f);
    assert_int_equal(chmod(path, 0600), 0);
    assert_int_equal(gw_seal_key_load(path, dir, k2, from, sizeof(from)), 0);
    for (int i = 0; i < GW_SEAL_KEY_LEN; i++)
        assert_int_equal(k2[i], i);
    /* Neither 32 bytes nor 64 hex digits. */
    f = fopen(path, "w");
    fputs("short\n", f);
    fclose(f);
    assert_int_equal(gw_seal_key_load(path, dir, k2, from, sizeof(from)), GW_EINVAL);
    unlink(path);
    rmdir(dir);
}

static void
byok_record_hides_the_secret_and_binds_the_tenant(void **state)
{
    struct gw_arena *a = gw_arena_create(4096);
    struct gw_byok b = {.name = "acme-openai",
                        .tenant = "acme",
                        .type = "openai",
                        .provider = "openai",
                        .created = 1700000000,
                        .secret = strdup(secret)};
    struct gw_byok out;

    (void)state;
    char *json = gw_byok_encode(key, &b);
    assert_non_null(json);
    assert_null(strstr(json, "sk-tenant"));
    assert_string_equal(b.fingerprint, "sha256:f783780a5c45");
    assert_int_equal(gw_byok_decode(NULL, json, a, &out), 0);
    assert_null(out.secret);
    assert_string_equal(out.tenant, "acme");
    assert_string_equal(out.fingerprint, b.fingerprint);
    assert_int_equal(gw_byok_decode(key, json, a, &out), 0);
    assert_string_equal(out.secret, secret);
    gw_byok_secret_free(out.secret);

    /* The same record moved to another tenant does not open. */
    char *moved = strdup(json), *t = strstr(moved, "\"acme\"");
    assert_non_null(t);
    memcpy(t, "\"evil\"", 6);
    assert_int_equal(gw_byok_decode(NULL, moved, a, &out), 0);
    assert_int_equal(gw_byok_decode(key, moved, a, &out), GW_EINVAL);
    assert_null(out.secret);
    free(moved);
    free(json);
    free(b.secret);
    gw_arena_destroy(a);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(round_trip_gives_the_secret_back),
        cmocka_unit_test(each_seal_has_a_fresh_nonce),
        cmocka_unit_test(any_changed_byte_is_detected),
        cmocka_unit_test(wrong_associated_data_or_key_does_not_open),
        cmocka_unit_test(key_file_is_created_0600_and_read_back),
        cmocka_unit_test(byok_record_hides_the_secret_and_binds_the_tenant),
    };

    gw_log_level = GW_LOG_ERROR - 1; /* quiet: the refusals are expected */
    return cmocka_run_group_tests(tests, NULL, NULL);
}
