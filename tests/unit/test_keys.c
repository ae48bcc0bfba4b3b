/*
 * test_keys.c - API key secrets: the keyed hash, key generation, the
 * server secret file, and the LMDB key records.
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

static char *
tempdir(void)
{
    char tmpl[] = "/tmp/aigw-test-keys-XXXXXX";
    char *d = mkdtemp(tmpl);

    assert_non_null(d);
    return strdup(d);
}

static void
rmtree(const char *dir)
{
    char cmd[512];

    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

/* Expected value computed independently with the openssl command line. */
static void
hash_is_hmac_sha256_under_the_secret(void **state)
{
    unsigned char secret[GW_SECRET_LEN], out[GW_KEY_HASH_LEN];
    char hex[2 * GW_KEY_HASH_LEN + 1];

    (void)state;
    for (int i = 0; i < GW_SECRET_LEN; i++)
        secret[i] = (unsigned char)i;
    gw_key_hash(secret, "sk-aigw-test-key", 16, out);
    gw_hex_encode(out, sizeof(out), hex);
    assert_string_equal(hex, "4b4afc6dafeff8b97fffbee340782b43ab2e1d8845dbf8782096c7250792f4c6");
    /* The keyed context is restarted for each key: nothing of one hash
     * may leak into the next. */
    unsigned char again[GW_KEY_HASH_LEN];
    gw_key_hash(secret, "sk-aigw-other-key-longer-than-that", 34, again);
    assert_memory_not_equal(again, out, sizeof(out));
    gw_key_hash(secret, "sk-aigw-test-key", 16, again);
    assert_memory_equal(again, out, sizeof(out));
}

static void
generated_keys_have_the_documented_shape_and_differ(void **state)
{
    char id1[GW_KEY_ID_LEN + 1], id2[GW_KEY_ID_LEN + 1];
    char k1[GW_KEY_SECRET_LEN], k2[GW_KEY_SECRET_LEN];

    (void)state;
    assert_int_equal(gw_key_generate(id1, k1), 0);
    assert_int_equal(gw_key_generate(id2, k2), 0);
    assert_int_equal(strlen(id1), GW_KEY_ID_LEN);
    assert_memory_equal(id1, "key_", 4);
    assert_int_equal(strspn(id1 + 4, "0123456789abcdef"), 12);
    assert_int_equal(strlen(k1), GW_KEY_SECRET_LEN - 1);
    assert_memory_equal(k1, GW_KEY_PREFIX, strlen(GW_KEY_PREFIX));
    assert_int_equal(
        strspn(k1 + 8, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"), 43);
    assert_string_not_equal(id1, id2);
    assert_string_not_equal(k1, k2);
}

static void
secret_is_created_once_with_mode_0600(void **state)
{
    unsigned char a[GW_SECRET_LEN], b[GW_SECRET_LEN];
    char *dir = tempdir(), path[600];
    struct stat st;

    (void)state;
    assert_int_equal(gw_secret_load(dir, false, a), GW_ENOENT);
    assert_int_equal(gw_secret_load(dir, true, a), 0);
    snprintf(path, sizeof(path), "%s/secret", dir);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(st.st_size, GW_SECRET_LEN);
    assert_int_equal(gw_secret_load(dir, true, b), 0);
    assert_memory_equal(a, b, GW_SECRET_LEN);
    rmtree(dir);
    free(dir);
}

static void
store_finds_a_key_by_hash_and_honours_disable_and_delete(void **state)
{
    char *dir = tempdir();
    struct gw_store *st;
    struct gw_arena *a = gw_arena_create(4096);
    unsigned char secret[GW_SECRET_LEN] = {1}, hash[GW_KEY_HASH_LEN], other[GW_KEY_HASH_LEN];
    char *models[] = {"demo", "chat"};
    struct gw_key k = {.id = "key_000000000001",
                       .name = "ci",
                       .prefix = "sk-aigw-abcd...",
                       .models = models,
                       .nmodels = 2,
                       .created = 1700000000};
    struct gw_key *got, **list;
    size_t n;

    (void)state;
    assert_int_equal(gw_store_open(dir, &st), 0);
    gw_key_hash(secret, "sk-aigw-one", 11, hash);
    gw_key_hash(secret, "sk-aigw-two", 11, other);
    assert_int_equal(gw_store_key_add(st, &k, hash), 0);
    assert_int_equal(gw_store_key_add(st, &k, hash), GW_EEXIST);

    assert_int_equal(gw_store_key_lookup(st, other, a, &got), GW_ENOENT);
    assert_int_equal(gw_store_key_lookup(st, hash, a, &got), 0);
    assert_string_equal(got->id, "key_000000000001");
    assert_string_equal(got->name, "ci");
    assert_int_equal(got->nmodels, 2);
    assert_true(gw_key_allows(got, "chat"));
    assert_false(gw_key_allows(got, "other"));
    assert_false(got->disabled);

    assert_int_equal(gw_store_key_set_disabled(st, "key_000000000001", true), 0);
    assert_int_equal(gw_store_key_lookup(st, hash, a, &got), 0);
    assert_true(got->disabled);
    assert_int_equal(gw_store_key_set_disabled(st, "key_missing", true), GW_ENOENT);

    assert_int_equal(gw_store_key_list(st, a, &list, &n), 0);
    assert_int_equal(n, 1);

    assert_int_equal(gw_store_key_del(st, "key_000000000001"), 0);
    assert_int_equal(gw_store_key_lookup(st, hash, a, &got), GW_ENOENT);
    assert_int_equal(gw_store_key_get(st, "key_000000000001", a, &got), GW_ENOENT);
    assert_int_equal(gw_store_key_del(st, "key_000000000001"), GW_ENOENT);

    gw_store_close(st);
    gw_arena_destroy(a);
    rmtree(dir);
    free(dir);
}

static void
a_key_with_no_model_list_allows_every_model(void **state)
{
    struct gw_key k = {.nmodels = 0};

    (void)state;
    assert_true(gw_key_allows(&k, "anything"));
}

/* What each role may do on its model, as issue 6 says. */
static void
roles_have_the_documented_capabilities(void **state)
{
    (void)state;
    assert_int_equal(gw_role_caps("gateway-admin"), GW_CAP_ALL);
    assert_int_equal(gw_role_caps("endpoint-admin"), GW_CAP_ALL);
    assert_int_equal(gw_role_caps("endpoint-operator"), GW_CAP_CALL | GW_CAP_VIEW | GW_CAP_OPERATE);
    assert_int_equal(gw_role_caps("endpoint-user"), GW_CAP_CALL);
    assert_int_equal(gw_role_caps("endpoint-viewer"), GW_CAP_VIEW);
    assert_int_equal(gw_role_caps("superuser"), 0);
    assert_int_equal(gw_role_caps(NULL), 0);
    assert_true(gw_role_calls("endpoint-user"));
    assert_false(gw_role_calls("endpoint-viewer"));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(hash_is_hmac_sha256_under_the_secret),
        cmocka_unit_test(generated_keys_have_the_documented_shape_and_differ),
        cmocka_unit_test(secret_is_created_once_with_mode_0600),
        cmocka_unit_test(store_finds_a_key_by_hash_and_honours_disable_and_delete),
        cmocka_unit_test(a_key_with_no_model_list_allows_every_model),
        cmocka_unit_test(roles_have_the_documented_capabilities),
    };

    gw_log_level = GW_LOG_ERROR;
    return cmocka_run_group_tests_name("keys", tests, NULL, NULL);
}
