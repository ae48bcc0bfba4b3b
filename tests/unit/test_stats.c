/*
 * test_stats.c - usage statistics: the parsers behind `aigwctl usage`
 * (times of --since/--until, absolute and relative, and the dimension list
 * of --by); the store's daily aggregates, retention and upgrade of older
 * records; and the master's answers over a store whose old days were
 * pruned, narrowed or not to a scope.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>
#include <lmdb.h>

#include "master/master.h"

static int64_t
parse_ok(const char *s)
{
    int64_t us = -1;

    assert_int_equal(gw_master_stats_time_parse(s, &us), 0);
    return us;
}

static void
test_dates_are_utc_midnight(void **state)
{
    (void)state;
    assert_int_equal(parse_ok("1970-01-01"), 0);
    assert_int_equal(parse_ok("2024-02-29"), 1709164800LL * 1000000);
    assert_int_equal(parse_ok("2025-01-01"), 1735689600LL * 1000000);
}

static void
test_times_with_zone_and_fraction(void **state)
{
    (void)state;
    assert_int_equal(parse_ok("2025-01-01T00:00:00Z"), 1735689600LL * 1000000);
    assert_int_equal(parse_ok("2025-01-01T12:30"), (1735689600LL + 45000) * 1000000);
    assert_int_equal(parse_ok("2025-01-01T12:30:15.25Z"),
                     (1735689600LL + 45015) * 1000000 + 250000);
    /* 14:30 at +02:00 is 12:30 UTC. */
    assert_int_equal(parse_ok("2025-01-01T14:30:00+02:00"), (1735689600LL + 45000) * 1000000);
    assert_int_equal(parse_ok("2025-01-01 12:30:00-0100"), (1735689600LL + 48600) * 1000000);
}

static void
test_bad_times_are_refused(void **state)
{
    static const char *const bad[] = {
        "",
        "2025",
        "2025-1-01",
        "2025-13-01",
        "2025-02-29",
        "2025-04-31",
        "1969-12-31",
        "2025-01-01T",
        "2025-01-01T24:00",
        "2025-01-01T12:60",
        "2025-01-01T12:00:61",
        "2025-01-01T12:00:00.",
        "2025-01-01T12:00Zx",
        "2025-01-01x",
        "2025-01-01T12:00+25:00",
    };
    int64_t us;

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (gw_master_stats_time_parse(bad[i], &us) != GW_EINVAL)
            fail_msg("accepted \"%s\"", bad[i]);
}

static void
test_relative_times_count_back_from_now(void **state)
{
    const int64_t now = 1735689600LL * 1000000;
    int64_t us = 0;

    (void)state;
    assert_int_equal(gw_master_stats_when_parse("24h", now, &us), 0);
    assert_int_equal(us, now - 86400LL * 1000000);
    assert_int_equal(gw_master_stats_when_parse("7d", now, &us), 0);
    assert_int_equal(us, now - 7 * 86400LL * 1000000);
    assert_int_equal(gw_master_stats_when_parse("30m", now, &us), 0);
    assert_int_equal(us, now - 1800LL * 1000000);
    assert_int_equal(gw_master_stats_when_parse("2w", now, &us), 0);
    assert_int_equal(us, now - 14 * 86400LL * 1000000);
    assert_int_equal(gw_master_stats_when_parse("90s", now, &us), 0);
    assert_int_equal(us, now - 90LL * 1000000);
    assert_int_equal(gw_master_stats_when_parse("now", now, &us), 0);
    assert_int_equal(us, now);
    /* Absolute times are the same as for time_parse. */
    assert_int_equal(gw_master_stats_when_parse("2025-01-01", now, &us), 0);
    assert_int_equal(us, now);
    assert_int_equal(gw_master_stats_when_parse("2025-01-01T00:00Z", now, &us), 0);
    assert_int_equal(us, now);
    static const char *const bad[] = {"h", "24", "24x", "-1d", "7dd", "d7", "1.5h", "now!", ""};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (gw_master_stats_when_parse(bad[i], now, &us) != GW_EINVAL)
            fail_msg("accepted \"%s\"", bad[i]);
}

static void
test_dims_in_order(void **state)
{
    static const char *const names[] = {"key", "user",  "tenant", "model", "target",     "status",
                                        "day", "month", "hour",   "byok",  "capability", "tier"};
    int dims[GW_STATS_NDIMS];
    size_t n;

    (void)state;
    assert_int_equal(gw_master_stats_dims_parse("model,day", dims, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(dims[0], GW_STATS_MODEL);
    assert_int_equal(dims[1], GW_STATS_DAY);
    assert_int_equal(gw_master_stats_dims_parse("user,tenant", dims, &n), 0);
    assert_int_equal(dims[0], GW_STATS_USER);
    assert_int_equal(dims[1], GW_STATS_TENANT);
    assert_int_equal(
        gw_master_stats_dims_parse(
            "key,user,tenant,model,target,status,day,month,hour,byok,capability,tier", dims, &n),
        0);
    assert_int_equal(n, GW_STATS_NDIMS);
    for (size_t i = 0; i < n; i++)
        assert_string_equal(gw_master_stats_dim_name(dims[i]), names[i]);
}

static void
test_bad_dims_are_refused(void **state)
{
    int dims[GW_STATS_NDIMS];
    size_t n;

    (void)state;
    assert_int_equal(gw_master_stats_dims_parse("colour", dims, &n), GW_EINVAL);
    assert_int_equal(gw_master_stats_dims_parse("key,", dims, &n), GW_EINVAL);
    assert_int_equal(gw_master_stats_dims_parse(",key", dims, &n), GW_EINVAL);
    assert_int_equal(gw_master_stats_dims_parse("", dims, &n), GW_EINVAL);
    assert_int_equal(gw_master_stats_dims_parse("keys", dims, &n), GW_EINVAL);
    assert_int_equal(gw_master_stats_dims_parse("model,key,model", dims, &n), GW_EEXIST);
}

/* ------------------------------------------------- store and master */

#define DAY_US (86400LL * 1000000)

struct fx {
    char dir[64];
    char shm_name[64];
    struct gw_master m;
    int64_t today; /* start of the current UTC day, us */
};

static int
fx_setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    struct gw_shm_geometry geo = {
        .nworkers = 4, .nstats = 16, .nbuckets = 16, .nring = 64, .gen_size = 64 * 1024};
    bool attached;

    if (f == NULL)
        return -1;
    snprintf(f->dir, sizeof(f->dir), "/tmp/aigw-test-stats-XXXXXX");
    snprintf(f->shm_name, sizeof(f->shm_name), "/aigw-test-stats-%d", (int)getpid());
    gw_shm_unlink(f->shm_name);
    if (mkdtemp(f->dir) == NULL || gw_store_open(f->dir, &f->m.store) != 0 ||
        gw_shm_open(f->shm_name, &geo, &f->m.shm, &attached) != 0)
        return -1;
    f->today = (int64_t)time(NULL) / 86400 * DAY_US;
    *state = f;
    return 0;
}

static int
fx_teardown(void **state)
{
    struct fx *f = *state;
    char cmd[128];

    gw_store_close(f->m.store);
    gw_shm_close(&f->m.shm);
    gw_shm_unlink(f->shm_name);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

static struct gw_usage
rec(int64_t time_us, const char *key, const char *user, const char *tenant, const char *model,
    int status, int64_t in, int64_t out, int64_t cost_nano)
{
    struct gw_usage u = {.time_us = time_us,
                         .input_tokens = in,
                         .output_tokens = out,
                         .status = status,
                         .duration_ms = 10,
                         .cost_nano = cost_nano};

    snprintf(u.key_id, sizeof(u.key_id), "%s", key);
    snprintf(u.user, sizeof(u.user), "%s", user);
    snprintf(u.tenant, sizeof(u.tenant), "%s", tenant);
    snprintf(u.model, sizeof(u.model), "%s", model);
    snprintf(u.target, sizeof(u.target), "local/%s", model);
    snprintf(u.request_id, sizeof(u.request_id), "req-%lld", (long long)time_us);
    return u;
}

static int
sum_agg(const struct gw_usage *dims, const struct gw_usage_sums *s, void *ctx)
{
    struct gw_usage_sums *t = ctx;

    (void)dims;
    t->requests += s->requests;
    t->input_tokens += s->input_tokens;
    t->output_tokens += s->output_tokens;
    t->errors += s->errors;
    t->cost_nano += s->cost_nano;
    return 0;
}

static int
count_rec(const struct gw_usage *r, void *ctx)
{
    (void)r;
    ++*(int *)ctx;
    return 0;
}

static void
test_aggregates_are_written_once_with_each_record(void **state)
{
    struct fx *f = *state;
    struct gw_usage recs[3] = {
        rec(f->today - 10 * DAY_US + 5, "k1", "ann", "acme", "demo", 200, 10, 5, 1500),
        rec(f->today - 10 * DAY_US + 6, "k1", "ann", "acme", "demo", 200, 1, 2, 30),
        rec(f->today + 7, "k2", "bob", "beta", "other", 500, 0, 0, 0),
    };
    struct gw_usage_sums t = {0};

    /* The same ring batch stored twice (a master that died between the
     * commit and the release) counts once. */
    assert_int_equal(gw_store_usage_add(f->m.store, recs, 3, 77, 3), 0);
    assert_int_equal(gw_store_usage_add(f->m.store, recs, 3, 77, 3), 0);
    assert_int_equal(gw_store_usage_agg_scan(f->m.store, 0, INT64_MAX, sum_agg, &t), 0);
    assert_int_equal(t.requests, 3);
    assert_int_equal(t.input_tokens, 11);
    assert_int_equal(t.output_tokens, 7);
    assert_int_equal(t.errors, 1);
    assert_int_equal(t.cost_nano, 1530);
    struct gw_usage_totals tot;
    assert_int_equal(gw_store_usage_totals(f->m.store, &tot), 0);
    assert_int_equal(tot.requests, 3);
    /* Only the days whose start is in the range. */
    memset(&t, 0, sizeof(t));
    assert_int_equal(
        gw_store_usage_agg_scan(f->m.store, f->today - DAY_US + 1, INT64_MAX, sum_agg, &t), 0);
    assert_int_equal(t.requests, 1);
}

static void
test_prune_deletes_old_records_in_batches_and_keeps_aggregates(void **state)
{
    struct fx *f = *state;
    struct gw_usage recs[5];
    size_t deleted;
    int64_t pruned;
    int n = 0;

    for (int i = 0; i < 4; i++)
        recs[i] = rec(f->today - 10 * DAY_US + i, "k1", "ann", "acme", "demo", 200, 1, 1, 0);
    recs[4] = rec(f->today + 1, "k1", "ann", "acme", "demo", 200, 1, 1, 0);
    assert_int_equal(gw_store_usage_add(f->m.store, recs, 5, 0, 0), 0);
    assert_int_equal(gw_store_usage_pruned_before(f->m.store, &pruned), 0);
    assert_int_equal(pruned, 0);

    /* At most max deletions per transaction. */
    assert_int_equal(gw_store_usage_prune(f->m.store, f->today - 5 * DAY_US, 0, 3, &deleted), 0);
    assert_int_equal(deleted, 3);
    assert_int_equal(gw_store_usage_pruned_before(f->m.store, &pruned), 0);
    assert_int_equal(pruned, f->today - 5 * DAY_US);
    assert_int_equal(gw_store_usage_prune(f->m.store, f->today - 5 * DAY_US, 0, 3, &deleted), 0);
    assert_int_equal(deleted, 1);
    assert_int_equal(gw_store_usage_prune(f->m.store, f->today - 5 * DAY_US, 0, 3, &deleted), 0);
    assert_int_equal(deleted, 0);
    assert_int_equal(gw_store_usage_scan(f->m.store, 0, INT64_MAX, false, count_rec, &n), 0);
    assert_int_equal(n, 1);

    struct gw_usage_sums t = {0};
    assert_int_equal(gw_store_usage_agg_scan(f->m.store, 0, INT64_MAX, sum_agg, &t), 0);
    assert_int_equal(t.requests, 5);
    /* Aggregates go by their own bound. */
    assert_int_equal(gw_store_usage_prune(f->m.store, 0, f->today - 5 * DAY_US, 1000, &deleted), 0);
    assert_int_equal(deleted, 1);
    memset(&t, 0, sizeof(t));
    assert_int_equal(gw_store_usage_agg_scan(f->m.store, 0, INT64_MAX, sum_agg, &t), 0);
    assert_int_equal(t.requests, 1);
}

/* A record in the format of the version before user, tenant and cost. */
/* The usage database opened behind the store's back (the store closed
 * meanwhile), to write or read records as they are stored. */
static MDB_txn *
usage_raw_open(struct fx *f, MDB_env **env, MDB_dbi *dbi)
{
    MDB_txn *txn;

    gw_store_close(f->m.store);
    assert_int_equal(mdb_env_create(env), 0);
    mdb_env_set_maxdbs(*env, 16);
    assert_int_equal(mdb_env_open(*env, f->dir, MDB_NOTLS, 0600), 0);
    assert_int_equal(mdb_txn_begin(*env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "usage", 0, dbi), 0);
    return txn;
}

/* Commit, and give the database back to the store. */
static void
usage_raw_close(struct fx *f, MDB_env *env, MDB_txn *txn)
{
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
    assert_int_equal(gw_store_open(f->dir, &f->m.store), 0);
}

struct usage_v1 {
    int64_t time_us, input_tokens, output_tokens;
    int32_t status;
    uint32_t duration_ms, ttfb_ms;
    uint8_t stream, pad[3];
    char request_id[72], key_id[24], model[64], target[96];
};

static void
test_records_of_an_older_version_are_read_and_upgraded_once(void **state)
{
    struct fx *f = *state;
    struct usage_v1 old = {
        .time_us = f->today - 3 * DAY_US, .input_tokens = 4, .output_tokens = 6, .status = 200};
    unsigned char key[16] = {0};
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    size_t n;
    bool done;

    snprintf(old.key_id, sizeof(old.key_id), "k-old");
    snprintf(old.model, sizeof(old.model), "demo");
    for (int b = 0; b < 8; b++)
        key[b] = (unsigned char)((uint64_t)old.time_us >> (56 - 8 * b));
    /* Written the way the older version did, behind the store's back. */
    txn = usage_raw_open(f, &env, &dbi);
    MDB_val k = {sizeof(key), key}, v = {sizeof(old), &old};
    assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
    usage_raw_close(f, env, txn);

    int seen = 0;
    assert_int_equal(gw_store_usage_scan(f->m.store, 0, INT64_MAX, false, count_rec, &seen), 0);
    assert_int_equal(seen, 1);
    /* Not in an aggregate yet, so not pruned yet. */
    assert_int_equal(gw_store_usage_prune(f->m.store, f->today, 0, 10, &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(gw_store_usage_upgrade(f->m.store, 10, &n, &done), 0);
    assert_int_equal(n, 1);
    assert_true(done);
    assert_int_equal(gw_store_usage_upgrade(f->m.store, 10, &n, &done), 0);
    assert_int_equal(n, 0);
    assert_true(done);
    struct gw_usage_sums t = {0};
    assert_int_equal(gw_store_usage_agg_scan(f->m.store, 0, INT64_MAX, sum_agg, &t), 0);
    assert_int_equal(t.requests, 1);
    assert_int_equal(t.output_tokens, 6);
    assert_int_equal(gw_store_usage_prune(f->m.store, f->today, 0, 10, &n), 0);
    assert_int_equal(n, 1);
}

/* A record with each string filled to the given lengths (no NUL when a
 * length is its field's size). */
static struct gw_usage
rec_sized(int64_t time_us, const size_t len[7])
{
    struct gw_usage u = {.time_us = time_us,
                         .input_tokens = 7,
                         .output_tokens = 9,
                         .cost_nano = -3,
                         .units = 1234,
                         .status = 429,
                         .duration_ms = 15,
                         .ttfb_ms = 4,
                         .stream = 1,
                         .cached = 1,
                         .byok = 1,
                         .capability = GW_CAP_IMAGES};
    char *const strs[] = {u.request_id, u.key_id, u.model, u.target, u.user, u.tenant, u.tier};

    for (size_t i = 0; i < 7; i++)
        memset(strs[i], 'a' + (int)i, len[i]);
    return u;
}

struct collected {
    struct gw_usage recs[8];
    int n;
};

static int
collect_rec(const struct gw_usage *r, void *ctx)
{
    struct collected *c = ctx;

    if (c->n < 8)
        c->recs[c->n] = *r;
    c->n++;
    return 0;
}

static void
test_records_are_stored_compact_and_read_back_whole_beside_whole_struct_ones(void **state)
{
    struct fx *f = *state;
    int64_t t0 = f->today - DAY_US;
    /* 64 bytes besides the strings: 296, 448 and 480 are the sizes of the
     * forms before the compact one, which must not be taken for them. */
    static const size_t lens[][7] = {
        {36, 16, 4, 10, 5, 0, 0},     {72, 24, 64, 72, 0, 0, 0},    {72, 24, 64, 96, 72, 56, 0},
        {72, 24, 64, 96, 72, 72, 16}, {72, 24, 64, 96, 72, 72, 24},
    };
    struct gw_usage recs[5], whole = rec(t0, "k-whole", "u", "t", "demo", 200, 1, 2, 0);
    unsigned char key[16] = {0};
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;

    for (size_t i = 0; i < 5; i++)
        recs[i] = rec_sized(t0 + 1 + (int64_t)i, lens[i]);
    assert_int_equal(gw_store_usage_add(f->m.store, recs, 5, 0, 0), 0);
    /* A record as the previous version stored it, the whole struct,
     * written behind the store's back. */
    for (int b = 0; b < 8; b++)
        key[b] = (unsigned char)((uint64_t)whole.time_us >> (56 - 8 * b));
    txn = usage_raw_open(f, &env, &dbi);
    MDB_val k = {sizeof(key), key}, v = {sizeof(whole), &whole};
    assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
    /* What the compact ones take. */
    MDB_cursor *cur;
    size_t sizes[8], n = 0;
    assert_int_equal(mdb_cursor_open(txn, dbi, &cur), 0);
    for (int rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0 && n < 8;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT))
        sizes[n++] = v.mv_size;
    mdb_cursor_close(cur);
    usage_raw_close(f, env, txn);
    assert_int_equal(n, 6);
    assert_int_equal(sizes[0], sizeof(whole));
    assert_int_equal(sizes[1], 64 + 36 + 16 + 4 + 10 + 5);
    /* One zero byte more for each size an older form has; every string
     * full takes 488 bytes. */
    assert_int_equal(sizes[2], 297);
    assert_int_equal(sizes[3], 449);
    assert_int_equal(sizes[4], 481);
    assert_int_equal(sizes[5], 488);

    struct collected c = {0};
    assert_int_equal(gw_store_usage_scan(f->m.store, 0, INT64_MAX, false, collect_rec, &c), 0);
    assert_int_equal(c.n, 6);
    assert_memory_equal(&c.recs[0], &whole, sizeof(whole));
    for (size_t i = 0; i < 5; i++)
        assert_memory_equal(&c.recs[1 + i], &recs[i], sizeof(recs[i]));
}

static struct json_object *
ask(struct fx *f, const char *json, const struct gw_stats_scope *scope)
{
    struct json_object *req = json_tokener_parse(json), *ok;
    struct json_object *r = gw_master_stats_usage(&f->m, req, NULL, scope);

    json_object_put(req);
    if (!json_object_object_get_ex(r, "ok", &ok) || !json_object_get_boolean(ok))
        fail_msg("%s: %s", json, json_object_to_json_string(r));
    return r;
}

static int64_t
num(struct json_object *o, const char *path1, const char *path2)
{
    struct json_object *v = o;

    json_object_object_get_ex(v, path1, &v);
    if (path2 != NULL)
        json_object_object_get_ex(v, path2, &v);
    return json_object_get_int64(v);
}

static void
test_by_day_answers_pruned_days_from_aggregates(void **state)
{
    struct fx *f = *state;
    struct gw_usage recs[] = {
        rec(f->today - 9 * DAY_US + 3600LL * 1000000, "k1", "ann", "acme", "demo", 200, 5, 5, 0),
        rec(f->today - 9 * DAY_US + 7200LL * 1000000, "k2", "bob", "beta", "other", 200, 1, 1, 0),
        rec(f->today - 8 * DAY_US, "k1", "ann", "acme", "demo", 429, 0, 0, 0),
        rec(f->today + 1000, "k2", "bob", "beta", "other", 200, 2, 3, 2000000000),
    };
    size_t n;

    assert_int_equal(gw_store_usage_add(f->m.store, recs, 4, 0, 0), 0);
    struct json_object *before = ask(f, "{\"by\": \"day,user\"}", NULL);
    assert_int_equal(gw_store_usage_prune(f->m.store, f->today - 2 * DAY_US, 0, 1000, &n), 0);
    assert_int_equal(n, 3);
    struct json_object *after = ask(f, "{\"by\": \"day,user\"}", NULL);
    /* The same rows and totals, the old ones now from the aggregates. */
    assert_string_equal(json_object_to_json_string(before), json_object_to_json_string(after));
    assert_int_equal(json_object_array_length(json_object_object_get(after, "rows")), 4);
    assert_int_equal(num(after, "totals", "requests"), 4);
    assert_int_equal(num(after, "totals", "input_tokens"), 8);
    assert_int_equal(num(after, "totals", "errors"), 1);
    assert_string_equal(json_object_get_string(json_object_object_get(
                            json_object_object_get(after, "totals"), "cost")),
                        "2.000000");
    json_object_put(before);
    json_object_put(after);

    /* Filters apply to the aggregates too. */
    struct json_object *r = ask(f, "{\"by\": \"tenant\", \"tenant\": \"acme\"}", NULL);
    assert_int_equal(num(r, "totals", "requests"), 2);
    json_object_put(r);
    /* The hour is not in the aggregates: a --since before the records
     * kept is refused, said, not guessed. */
    char since[128];
    time_t t = (time_t)((f->today - 9 * DAY_US) / 1000000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(since, sizeof(since), "{\"by\": \"hour\", \"since\": \"%Y-%m-%d\"}", &tm);
    struct json_object *req = json_tokener_parse(since), *ok;
    r = gw_master_stats_usage(&f->m, req, NULL, NULL);
    assert_true(json_object_object_get_ex(r, "ok", &ok));
    assert_false(json_object_get_boolean(ok));
    assert_non_null(strstr(json_object_get_string(json_object_object_get(r, "error")),
                           "--by hour needs the records"));
    json_object_put(r);
    json_object_put(req);
    /* Without --since, hours answer from the oldest records kept, and the
     * reply says from when. */
    t = (time_t)((f->today - 2 * DAY_US) / 1000000);
    gmtime_r(&t, &tm);
    char from[32];
    strftime(from, sizeof(from), "%Y-%m-%dT%H:%M:%SZ", &tm);
    r = ask(f, "{\"by\": \"hour\"}", NULL);
    assert_int_equal(num(r, "totals", "requests"), 1);
    assert_string_equal(json_object_get_string(json_object_object_get(r, "since")), from);
    json_object_put(r);
    /* From pruned_before on, hours answer. */
    strftime(since, sizeof(since), "{\"by\": \"hour\", \"since\": \"%Y-%m-%d\"}", &tm);
    r = ask(f, since, NULL);
    assert_int_equal(num(r, "totals", "requests"), 1);
    assert_null(json_object_object_get(r, "since"));
    json_object_put(r);
}

static void
test_a_scope_sees_its_keys_and_models_only(void **state)
{
    struct fx *f = *state;
    struct gw_usage recs[] = {
        rec(f->today + 1, "k1", "ann", "acme", "demo", 200, 1, 0, 0),
        rec(f->today + 2, "k2", "bob", "beta", "other", 200, 10, 0, 0),
        rec(f->today + 3, "k3", "cat", "beta", "viewed", 200, 100, 0, 0),
        rec(f->today + 4, "k4", "", "", "other", 200, 1000, 0, 0),
    };
    char *models[] = {"viewed"}, *keys[] = {"k4"};
    struct gw_stats_scope ann = {.user = "ann"};
    struct gw_stats_scope viewer = {.user = "dan", .models = models, .nmodels = 1};
    struct gw_stats_scope owner = {.user = "eve", .keys = keys, .nkeys = 1};

    assert_int_equal(gw_store_usage_add(f->m.store, recs, 4, 0, 0), 0);
    struct json_object *r = ask(f, "{\"by\": \"key\"}", &ann);
    assert_int_equal(num(r, "totals", "input_tokens"), 1);
    json_object_put(r);
    r = ask(f, "{\"by\": \"user\"}", &viewer);
    assert_int_equal(num(r, "totals", "input_tokens"), 100);
    json_object_put(r);
    r = ask(f, "{}", &owner);
    assert_int_equal(num(r, "totals", "input_tokens"), 1000);
    json_object_put(r);
    /* A filter cannot widen a scope. */
    r = ask(f, "{\"user\": \"bob\"}", &ann);
    assert_int_equal(num(r, "totals", "requests"), 0);
    json_object_put(r);
    r = ask(f, "{}", NULL);
    assert_int_equal(num(r, "totals", "input_tokens"), 1111);
    json_object_put(r);
}

/* The master drains the usage ring as often as the rate of records asks:
 * an eighth of the ring between two drains, from 10 ms to 500 ms. */
static void
test_drain_follows_the_rate_of_records(void **state)
{
    (void)state;
    /* Idle: the slowest cadence. */
    assert_int_equal(gw_master_usage_drain_every(16384, 0, 500), GW_USAGE_DRAIN_MAX_MS);
    /* 100 records a second: an eighth of the ring takes longer than the cap. */
    assert_int_equal(gw_master_usage_drain_every(16384, 50, 500), GW_USAGE_DRAIN_MAX_MS);
    /* 32,000 a second (16,000 in half a second): 2,048 slots in 64 ms. */
    assert_int_equal(gw_master_usage_drain_every(16384, 16000, 500), 64);
    /* A ring filled in a millisecond: the fastest cadence, no lower. */
    assert_int_equal(gw_master_usage_drain_every(16384, 16384, 1), GW_USAGE_DRAIN_MIN_MS);
    /* 10,000 a second: 2,048 slots in 204 ms. */
    assert_int_equal(gw_master_usage_drain_every(16384, 1000, 100), 204);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dates_are_utc_midnight),
        cmocka_unit_test(test_times_with_zone_and_fraction),
        cmocka_unit_test(test_bad_times_are_refused),
        cmocka_unit_test(test_relative_times_count_back_from_now),
        cmocka_unit_test(test_dims_in_order),
        cmocka_unit_test(test_bad_dims_are_refused),
        cmocka_unit_test(test_drain_follows_the_rate_of_records),
        cmocka_unit_test_setup_teardown(test_aggregates_are_written_once_with_each_record, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(
            test_prune_deletes_old_records_in_batches_and_keeps_aggregates, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(
            test_records_are_stored_compact_and_read_back_whole_beside_whole_struct_ones, fx_setup,
            fx_teardown),
        cmocka_unit_test_setup_teardown(test_records_of_an_older_version_are_read_and_upgraded_once,
                                        fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_by_day_answers_pruned_days_from_aggregates, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_a_scope_sees_its_keys_and_models_only, fx_setup,
                                        fx_teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
