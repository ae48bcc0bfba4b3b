/*
 * store.c - the LMDB state store under state_dir.
 *
 * Databases:
 *   keys     key id -> JSON record {"id","name","prefix","hash","models",
 *            "disabled","created"}
 *   keyhash  HMAC of the secret (32 bytes) -> key id
 *   usage    time (8 bytes, big-endian us) + 8 unique bytes -> the record
 *            in its compact form (usage_encode); records that earlier
 *            versions stored as a whole struct gw_usage, or as an older,
 *            smaller one, are read too (and upgraded when they are not in an
 *            aggregate yet)
 *   usage_daily  UTC day (4 bytes, big-endian) + status (2) + key id, user,
 *            tenant, model, target (each NUL-ended) [+ capability (1) +
 *            tier (NUL-ended), for records that have them] ->
 *            struct gw_usage_sums (an older, shorter one is its prefix)
 *   limits   "key:ID" / "model:NAME" -> JSON {"rpm","tpm"} (rate-limit
 *            overrides; a field left out is not overridden)
 *   tenants  name -> JSON {"name","created"}
 *   users    name -> JSON {"name","tenant","uid","created",
 *            "grants":[{"role","model"}]}
 *   audit    time (8 bytes, big-endian us) + 8 random bytes -> JSON entry
 *   providers  BYOK credential name -> JSON {"name","tenant","type","for",
 *            "base_url","created","fingerprint","sealed"} (master/providers.c;
 *            "sealed" is the AES-256-GCM sealed secret, base64)
 *   meta     "usage.totals" -> struct gw_usage_totals;
 *            "ring.head" -> {incarnation, head} of the last drained record;
 *            "usage.pruned_before" -> int64 us: detail before it may be gone;
 *            "usage.format" -> uint32 2 once no older record is left
 *
 * The master is the only writer; workers look keys up on every request,
 * so reads reuse one read-only transaction per process (reset/renew), which
 * costs no allocation and no lock.  A commit by the master is visible to
 * the next lookup of every worker: that is what makes "key disable" take
 * effect at once everywhere.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <json-c/json.h>
#include <lmdb.h>

#include "shm/shm.h"

/* Address space, not memory or disk: the file grows with what is stored.
 * 16 GiB holds some 30 million usage records; every process maps it, so
 * it is kept well below what a thousand workers can reserve together. */
#define STORE_MAP_SIZE ((size_t)16 << 30)
#define STORE_MAX_READERS 4096

struct gw_store {
    MDB_env *env;
    MDB_dbi keys;
    MDB_dbi keyhash;
    MDB_dbi usage;
    MDB_dbi usage_agg; /* usage_daily */
    MDB_dbi meta;
    MDB_dbi limits;
    MDB_dbi recs[GW_DB_COUNT]; /* enum gw_store_db: tenants, users, audit, quotas, providers */
    MDB_txn *rtxn;             /* reused read transaction, reset between uses */
    /* Where gw_store_usage_upgrade goes on (the key it looked at last). */
    unsigned char upgrade_pos[16];
    void (*pace)(void *ctx); /* gw_store_set_pace */
    void *pace_ctx;
};

void
gw_store_set_pace(struct gw_store *st, void (*pace)(void *ctx), void *ctx)
{
    st->pace = pace;
    st->pace_ctx = ctx;
}

/* Called with the count of records written or deleted so far. */
static void
store_pace(struct gw_store *st, size_t done)
{
    if (st->pace != NULL && done % GW_STORE_PACE_EVERY == GW_STORE_PACE_EVERY - 1)
        st->pace(st->pace_ctx);
}

static int
store_fail(const char *call, const char *arg, int mrc)
{
    gw_log(GW_LOG_ERROR, "%s(%s): %s", call, arg, mdb_strerror(mrc));
    /* A full disk (or map) is its own error: the remedy is the
     * administrator's, and the callers tell it to the clients. */
    return mrc == ENOSPC || mrc == EDQUOT || mrc == MDB_MAP_FULL ? GW_ENOSPC : GW_ESTORE;
}

int
gw_store_open(const char *state_dir, struct gw_store **out)
{
    struct gw_store *st = calloc(1, sizeof(*st));
    MDB_txn *txn = NULL;
    int mrc, rc = GW_ESTORE;

    if (st == NULL)
        return GW_ENOMEM;
    if ((mrc = mdb_env_create(&st->env)) != 0) {
        rc = store_fail("mdb_env_create", state_dir, mrc);
        goto fail;
    }
    mdb_env_set_mapsize(st->env, STORE_MAP_SIZE);
    mdb_env_set_maxdbs(st->env, 16);
    mdb_env_set_maxreaders(st->env, STORE_MAX_READERS);
    /* MDB_NOTLS: reader slots belong to the transaction, not the thread,
     * which is what a reused read transaction needs. */
    if ((mrc = mdb_env_open(st->env, state_dir, MDB_NOTLS, 0600)) != 0) {
        rc = store_fail("mdb_env_open", state_dir, mrc);
        goto fail;
    }
    if ((mrc = mdb_txn_begin(st->env, NULL, 0, &txn)) != 0) {
        rc = store_fail("mdb_txn_begin", state_dir, mrc);
        goto fail;
    }
    if ((mrc = mdb_dbi_open(txn, "keys", MDB_CREATE, &st->keys)) != 0 ||
        (mrc = mdb_dbi_open(txn, "keyhash", MDB_CREATE, &st->keyhash)) != 0 ||
        (mrc = mdb_dbi_open(txn, "usage", MDB_CREATE, &st->usage)) != 0 ||
        (mrc = mdb_dbi_open(txn, "usage_daily", MDB_CREATE, &st->usage_agg)) != 0 ||
        (mrc = mdb_dbi_open(txn, "meta", MDB_CREATE, &st->meta)) != 0 ||
        (mrc = mdb_dbi_open(txn, "limits", MDB_CREATE, &st->limits)) != 0 ||
        (mrc = mdb_dbi_open(txn, "tenants", MDB_CREATE, &st->recs[GW_DB_TENANTS])) != 0 ||
        (mrc = mdb_dbi_open(txn, "users", MDB_CREATE, &st->recs[GW_DB_USERS])) != 0 ||
        (mrc = mdb_dbi_open(txn, "audit", MDB_CREATE, &st->recs[GW_DB_AUDIT])) != 0 ||
        (mrc = mdb_dbi_open(txn, "quotas", MDB_CREATE, &st->recs[GW_DB_QUOTAS])) != 0 ||
        (mrc = mdb_dbi_open(txn, "providers", MDB_CREATE, &st->recs[GW_DB_PROVIDERS])) != 0) {
        rc = store_fail("mdb_dbi_open", state_dir, mrc);
        goto fail;
    }
    if ((mrc = mdb_txn_commit(txn)) != 0) {
        txn = NULL;
        rc = store_fail("mdb_txn_commit", state_dir, mrc);
        goto fail;
    }
    *out = st;
    return 0;
fail:
    if (txn != NULL)
        mdb_txn_abort(txn);
    if (st->env != NULL)
        mdb_env_close(st->env);
    free(st);
    return rc;
}

void
gw_store_close(struct gw_store *st)
{
    if (st == NULL)
        return;
    if (st->rtxn != NULL)
        mdb_txn_abort(st->rtxn);
    mdb_env_close(st->env);
    free(st);
}

int
gw_store_reader_check(struct gw_store *st)
{
    int dead = 0;

    mdb_reader_check(st->env, &dead);
    return dead;
}

/* Begin (or renew) the reusable read transaction. */
static int
store_read_begin(struct gw_store *st, MDB_txn **txn)
{
    int mrc;

    if (st->rtxn == NULL)
        mrc = mdb_txn_begin(st->env, NULL, MDB_RDONLY, &st->rtxn);
    else
        mrc = mdb_txn_renew(st->rtxn);
    if (mrc != 0) {
        if (st->rtxn != NULL) {
            mdb_txn_abort(st->rtxn);
            st->rtxn = NULL;
        }
        return store_fail("mdb_txn_begin", "read", mrc);
    }
    *txn = st->rtxn;
    return 0;
}

static void
store_read_end(struct gw_store *st)
{
    mdb_txn_reset(st->rtxn);
}

/*
 * Call fn for each record of dbi, in key order (or newest first), inside
 * one read transaction; fn returns 0 to go on, 1 to stop, or a GW_E* code.
 * The values are LMDB's: fn copies what it keeps.
 */
typedef int (*store_each_fn)(const MDB_val *k, const MDB_val *v, void *ctx);

static int
store_each(struct gw_store *st, MDB_dbi dbi, const char *what, bool newest_first, store_each_fn fn,
           void *ctx)
{
    MDB_txn *txn;
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    MDB_cursor_op first = newest_first ? MDB_LAST : MDB_FIRST;
    MDB_cursor_op next = newest_first ? MDB_PREV : MDB_NEXT;
    int rc = store_read_begin(st, &txn), mrc;

    if (rc != 0)
        return rc;
    if ((mrc = mdb_cursor_open(txn, dbi, &cur)) != 0) {
        rc = store_fail("mdb_cursor_open", what, mrc);
        goto out;
    }
    for (mrc = mdb_cursor_get(cur, &k, &v, first); mrc == 0 && rc == 0;
         mrc = mdb_cursor_get(cur, &k, &v, next))
        rc = fn(&k, &v, ctx);
    if (rc == 1)
        rc = 0;
    else if (rc == 0 && mrc != MDB_NOTFOUND)
        rc = store_fail("mdb_cursor_get", what, mrc);
out:
    if (cur != NULL)
        mdb_cursor_close(cur);
    store_read_end(st);
    return rc;
}

/* Make room for one more element in an arena array (doubling). */
static void *
arena_grow(struct gw_arena *a, void *arr, size_t len, size_t *cap, size_t elem)
{
    if (arr != NULL && len < *cap)
        return arr;
    size_t next = *cap ? 2 * *cap : 16;
    void *bigger = gw_arena_alloc(a, next * elem);
    if (len > 0)
        memcpy(bigger, arr, len * elem);
    *cap = next;
    return bigger;
}

/* Keys of time-ordered databases: big-endian time, then 8 unique bytes. */
static void
time_key(unsigned char key[16], uint64_t when, uint64_t uniq)
{
    for (int b = 0; b < 8; b++)
        key[b] = (unsigned char)(when >> (56 - 8 * b));
    memcpy(key + 8, &uniq, 8);
}

static uint64_t
key_time(const unsigned char *key)
{
    uint64_t when = 0;

    for (int b = 0; b < 8; b++)
        when = when << 8 | key[b];
    return when;
}

/* Decode a JSON key record into a. */
static int
key_decode(const char *data, size_t len, struct gw_arena *a, struct gw_key **out)
{
    struct json_tokener *tok = json_tokener_new();
    struct json_object *o = NULL, *v;
    struct gw_key *k;
    int rc = GW_ESTORE;

    if (tok == NULL)
        return GW_ENOMEM;
    o = json_tokener_parse_ex(tok, data, (int)len);
    if (o == NULL || !json_object_is_type(o, json_type_object)) {
        gw_log(GW_LOG_ERROR, "key record is not a JSON object");
        goto fail;
    }
    k = gw_arena_zalloc(a, sizeof(*k));
#define STR(field)                                                                                 \
    k->field = gw_arena_strdup(                                                                    \
        a, json_object_object_get_ex(o, #field, &v) ? json_object_get_string(v) : "")
    STR(id);
    STR(name);
    STR(prefix);
    STR(route);
    STR(owner);
    STR(tenant);
#undef STR
    if (json_object_object_get_ex(o, "route_header", &v))
        k->route_header = json_object_get_boolean(v);
    if (json_object_object_get_ex(o, "disabled", &v))
        k->disabled = json_object_get_boolean(v);
    if (json_object_object_get_ex(o, "created", &v))
        k->created = json_object_get_int64(v);
    if (json_object_object_get_ex(o, "expires", &v))
        k->expires = json_object_get_int64(v);
    if (json_object_object_get_ex(o, "models", &v) && json_object_is_type(v, json_type_array)) {
        k->nmodels = json_object_array_length(v);
        k->models = gw_arena_alloc(a, (k->nmodels + 1) * sizeof(char *));
        for (size_t i = 0; i < k->nmodels; i++)
            k->models[i] =
                gw_arena_strdup(a, json_object_get_string(json_object_array_get_idx(v, i)));
    }
    *out = k;
    rc = 0;
fail:
    json_object_put(o);
    json_tokener_free(tok);
    return rc;
}

static struct json_object *
key_encode(const struct gw_key *k, const char *hash_hex)
{
    struct json_object *o = json_object_new_object();
    struct json_object *models = json_object_new_array();

    json_object_object_add(o, "id", json_object_new_string(k->id));
    json_object_object_add(o, "name", json_object_new_string(k->name));
    json_object_object_add(o, "prefix", json_object_new_string(k->prefix));
    json_object_object_add(o, "hash", json_object_new_string(hash_hex));
    for (size_t i = 0; i < k->nmodels; i++)
        json_object_array_add(models, json_object_new_string(k->models[i]));
    json_object_object_add(o, "models", models);
    json_object_object_add(o, "disabled", json_object_new_boolean(k->disabled));
    json_object_object_add(o, "created", json_object_new_int64(k->created));
    if (k->expires > 0)
        json_object_object_add(o, "expires", json_object_new_int64(k->expires));
    json_object_object_add(o, "route", json_object_new_string(k->route ? k->route : ""));
    json_object_object_add(o, "route_header", json_object_new_boolean(k->route_header));
    json_object_object_add(o, "owner", json_object_new_string(k->owner ? k->owner : ""));
    json_object_object_add(o, "tenant", json_object_new_string(k->tenant ? k->tenant : ""));
    return o;
}

static int
store_put_json(MDB_txn *txn, MDB_dbi dbi, const char *id, struct json_object *o, unsigned flags)
{
    size_t len;
    const char *s = json_object_to_json_string_length(o, JSON_C_TO_STRING_PLAIN, &len);
    MDB_val k = {strlen(id), (void *)id}, v = {len, (void *)s};
    int mrc = mdb_put(txn, dbi, &k, &v, flags);

    if (mrc == MDB_KEYEXIST)
        return GW_EEXIST;
    if (mrc != 0)
        return store_fail("mdb_put", id, mrc);
    return 0;
}

static int
store_commit(MDB_txn *txn, int rc, const char *what)
{
    int mrc;

    if (rc != 0) {
        mdb_txn_abort(txn);
        return rc;
    }
    if ((mrc = mdb_txn_commit(txn)) != 0)
        return store_fail("mdb_txn_commit", what, mrc);
    return 0;
}

int
gw_store_key_add(struct gw_store *st, const struct gw_key *key,
                 const unsigned char hash[GW_KEY_HASH_LEN])
{
    char hex[2 * GW_KEY_HASH_LEN + 1];
    MDB_txn *txn;
    int mrc, rc;

    if ((mrc = mdb_txn_begin(st->env, NULL, 0, &txn)) != 0)
        return store_fail("mdb_txn_begin", key->id, mrc);
    gw_hex_encode(hash, GW_KEY_HASH_LEN, hex);
    struct json_object *o = key_encode(key, hex);
    rc = store_put_json(txn, st->keys, key->id, o, MDB_NOOVERWRITE);
    json_object_put(o);
    if (rc == 0) {
        MDB_val k = {GW_KEY_HASH_LEN, (void *)hash}, v = {strlen(key->id), key->id};
        mrc = mdb_put(txn, st->keyhash, &k, &v, MDB_NOOVERWRITE);
        if (mrc != 0)
            rc = mrc == MDB_KEYEXIST ? GW_EEXIST : store_fail("mdb_put", "keyhash", mrc);
    }
    return store_commit(txn, rc, "keys");
}

/*
 * Fill the models the owner of k may call from the owner's user record,
 * read in the same transaction as the key: a grant or revoke is seen by
 * the next lookup.  An owner that no longer exists may call nothing.
 */
static int
key_owner_grants(struct gw_store *st, MDB_txn *txn, struct gw_key *k, struct gw_arena *a)
{
    MDB_val uk = {strlen(k->owner), k->owner}, uv;
    struct json_object *o = NULL, *grants, *g, *role, *model;
    int mrc = mdb_get(txn, st->recs[GW_DB_USERS], &uk, &uv);

    if (mrc == MDB_NOTFOUND)
        return 0;
    if (mrc != 0)
        return store_fail("mdb_get", k->owner, mrc);
    struct json_tokener *tok = json_tokener_new();
    if (tok == NULL)
        return GW_ENOMEM;
    o = json_tokener_parse_ex(tok, uv.mv_data, (int)uv.mv_size);
    json_tokener_free(tok);
    if (o == NULL || !json_object_object_get_ex(o, "grants", &grants) ||
        !json_object_is_type(grants, json_type_array)) {
        json_object_put(o);
        return 0;
    }
    size_t n = json_object_array_length(grants);
    k->owner_models = gw_arena_alloc(a, (n + 1) * sizeof(char *));
    for (size_t i = 0; i < n; i++) {
        g = json_object_array_get_idx(grants, i);
        if (!json_object_object_get_ex(g, "role", &role))
            continue;
        const char *r = json_object_get_string(role);
        if (strcmp(r, "gateway-admin") == 0)
            k->owner_all = true;
        else if (gw_role_calls(r) && json_object_object_get_ex(g, "model", &model))
            k->owner_models[k->nowner_models++] = gw_arena_strdup(a, json_object_get_string(model));
    }
    json_object_put(o);
    return 0;
}

/* Get the record of id inside txn into a. */
static int
key_get_txn(struct gw_store *st, MDB_txn *txn, const char *id, size_t idlen, struct gw_arena *a,
            struct gw_key **out)
{
    MDB_val k = {idlen, (void *)id}, v;
    int mrc = mdb_get(txn, st->keys, &k, &v);

    if (mrc == MDB_NOTFOUND)
        return GW_ENOENT;
    if (mrc != 0)
        return store_fail("mdb_get", "keys", mrc);
    int rc = key_decode(v.mv_data, v.mv_size, a, out);
    if (rc == 0 && (*out)->owner[0] != '\0')
        rc = key_owner_grants(st, txn, *out, a);
    return rc;
}

int
gw_store_key_lookup(struct gw_store *st, const unsigned char hash[GW_KEY_HASH_LEN],
                    struct gw_arena *a, struct gw_key **out)
{
    MDB_txn *txn;
    MDB_val k = {GW_KEY_HASH_LEN, (void *)hash}, v;
    int rc = store_read_begin(st, &txn);

    if (rc != 0)
        return rc;
    int mrc = mdb_get(txn, st->keyhash, &k, &v);
    if (mrc == MDB_NOTFOUND)
        rc = GW_ENOENT;
    else if (mrc != 0)
        rc = store_fail("mdb_get", "keyhash", mrc);
    else
        rc = key_get_txn(st, txn, v.mv_data, v.mv_size, a, out);
    store_read_end(st);
    return rc;
}

int
gw_store_key_get(struct gw_store *st, const char *id, struct gw_arena *a, struct gw_key **out)
{
    MDB_txn *txn;
    int rc = store_read_begin(st, &txn);

    if (rc != 0)
        return rc;
    rc = key_get_txn(st, txn, id, strlen(id), a, out);
    store_read_end(st);
    return rc;
}

struct key_list {
    struct gw_arena *a;
    struct gw_key **keys;
    size_t len, cap;
};

static int
key_list_one(const MDB_val *k, const MDB_val *v, void *ctx)
{
    struct key_list *l = ctx;

    (void)k;
    l->keys = arena_grow(l->a, l->keys, l->len, &l->cap, sizeof(*l->keys));
    int rc = key_decode(v->mv_data, v->mv_size, l->a, &l->keys[l->len]);
    if (rc == 0)
        l->len++;
    return rc;
}

int
gw_store_key_list(struct gw_store *st, struct gw_arena *a, struct gw_key ***out, size_t *n)
{
    struct key_list l = {.a = a};
    int rc = store_each(st, st->keys, "keys", false, key_list_one, &l);

    *out = l.keys;
    *n = l.len;
    return rc;
}

/*
 * In txn: key id's record, parsed (*o, the caller's), with the entry of
 * its hash in keyhash removed when unhash: what a delete and a rotation
 * both start with.  GW_ENOENT when there is no such key.
 */
static int
key_take(struct gw_store *st, MDB_txn *txn, const char *id, bool unhash, struct json_object **o)
{
    MDB_val k = {strlen(id), (void *)id}, v;
    struct json_tokener *tok;
    struct json_object *h;
    unsigned char hash[GW_KEY_HASH_LEN] = {0};
    int mrc = mdb_get(txn, st->keys, &k, &v);

    *o = NULL;
    if (mrc != 0)
        return mrc == MDB_NOTFOUND ? GW_ENOENT : store_fail("mdb_get", id, mrc);
    if ((tok = json_tokener_new()) == NULL)
        return GW_ENOMEM;
    *o = json_tokener_parse_ex(tok, v.mv_data, (int)v.mv_size);
    json_tokener_free(tok);
    if (*o == NULL || !json_object_object_get_ex(*o, "hash", &h)) {
        gw_log(GW_LOG_ERROR, "key record %s is corrupt", id);
        return GW_ESTORE;
    }
    if (!unhash)
        return 0;
    const char *hex = json_object_get_string(h);
    for (size_t i = 0; i < GW_KEY_HASH_LEN && hex[2 * i] && hex[2 * i + 1]; i++)
        sscanf(hex + 2 * i, "%2hhx", &hash[i]);
    MDB_val hk = {GW_KEY_HASH_LEN, hash};
    if ((mrc = mdb_del(txn, st->keyhash, &hk, NULL)) != 0 && mrc != MDB_NOTFOUND)
        return store_fail("mdb_del", "keyhash", mrc);
    return 0;
}

/* Read-modify-write of one record, or its deletion (with its hash entry). */
static int
key_update(struct gw_store *st, const char *id, bool disabled, bool del)
{
    struct json_object *o = NULL;
    MDB_txn *txn;
    MDB_val k = {strlen(id), (void *)id};
    int mrc, rc;

    if ((mrc = mdb_txn_begin(st->env, NULL, 0, &txn)) != 0)
        return store_fail("mdb_txn_begin", id, mrc);
    if ((rc = key_take(st, txn, id, del, &o)) == 0) {
        if (!del) {
            json_object_object_add(o, "disabled", json_object_new_boolean(disabled));
            rc = store_put_json(txn, st->keys, id, o, 0);
        } else if ((mrc = mdb_del(txn, st->keys, &k, NULL)) != 0) {
            rc = store_fail("mdb_del", id, mrc);
        }
    }
    json_object_put(o);
    return store_commit(txn, rc, "keys");
}

int
gw_store_key_set_disabled(struct gw_store *st, const char *id, bool disabled)
{
    return key_update(st, id, disabled, false);
}

int
gw_store_key_del(struct gw_store *st, const char *id)
{
    return key_update(st, id, false, true);
}

int
gw_store_key_rotate(struct gw_store *st, const char *id, const unsigned char hash[GW_KEY_HASH_LEN],
                    const char *prefix)
{
    struct json_object *o = NULL;
    char hex[2 * GW_KEY_HASH_LEN + 1];
    MDB_txn *txn;
    int mrc, rc;

    if ((mrc = mdb_txn_begin(st->env, NULL, 0, &txn)) != 0)
        return store_fail("mdb_txn_begin", id, mrc);
    if ((rc = key_take(st, txn, id, true, &o)) != 0)
        goto done;
    MDB_val nk = {GW_KEY_HASH_LEN, (void *)hash}, nv = {strlen(id), (void *)id};
    if ((mrc = mdb_put(txn, st->keyhash, &nk, &nv, MDB_NOOVERWRITE)) != 0) {
        rc = mrc == MDB_KEYEXIST ? GW_EEXIST : store_fail("mdb_put", "keyhash", mrc);
        goto done;
    }
    gw_hex_encode(hash, GW_KEY_HASH_LEN, hex);
    json_object_object_add(o, "hash", json_object_new_string(hex));
    json_object_object_add(o, "prefix", json_object_new_string(prefix));
    rc = store_put_json(txn, st->keys, id, o, 0);
done:
    json_object_put(o);
    return store_commit(txn, rc, "keys");
}

/* ---------------------------------------------------- account records */

int
gw_store_rec_put(struct gw_store *st, enum gw_store_db db, const char *name, const char *json,
                 bool create_only)
{
    MDB_txn *txn;
    MDB_val k = {strlen(name), (void *)name}, v = {strlen(json), (void *)json};
    int mrc, rc = 0;

    if ((mrc = mdb_txn_begin(st->env, NULL, 0, &txn)) != 0)
        return store_fail("mdb_txn_begin", name, mrc);
    if ((mrc = mdb_put(txn, st->recs[db], &k, &v, create_only ? MDB_NOOVERWRITE : 0)) != 0)
        rc = mrc == MDB_KEYEXIST ? GW_EEXIST : store_fail("mdb_put", name, mrc);
    return store_commit(txn, rc, name);
}

int
gw_store_rec_get(struct gw_store *st, enum gw_store_db db, const char *name, struct gw_arena *a,
                 char **json)
{
    MDB_txn *txn;
    MDB_val k = {strlen(name), (void *)name}, v;
    int rc = store_read_begin(st, &txn);

    if (rc != 0)
        return rc;
    int mrc = mdb_get(txn, st->recs[db], &k, &v);
    if (mrc == MDB_NOTFOUND)
        rc = GW_ENOENT;
    else if (mrc != 0)
        rc = store_fail("mdb_get", name, mrc);
    else
        *json = gw_arena_strndup(a, v.mv_data, v.mv_size);
    store_read_end(st);
    return rc;
}

int
gw_store_rec_del(struct gw_store *st, enum gw_store_db db, const char *name)
{
    MDB_txn *txn;
    MDB_val k = {strlen(name), (void *)name};
    int mrc, rc = 0;

    if ((mrc = mdb_txn_begin(st->env, NULL, 0, &txn)) != 0)
        return store_fail("mdb_txn_begin", name, mrc);
    if ((mrc = mdb_del(txn, st->recs[db], &k, NULL)) != 0)
        rc = mrc == MDB_NOTFOUND ? GW_ENOENT : store_fail("mdb_del", name, mrc);
    return store_commit(txn, rc, name);
}

struct rec_list {
    struct gw_arena *a;
    char **json;
    size_t len, cap, limit;
};

static int
rec_list_one(const MDB_val *k, const MDB_val *v, void *ctx)
{
    struct rec_list *l = ctx;

    (void)k;
    if (l->limit != 0 && l->len >= l->limit)
        return 1;
    l->json = arena_grow(l->a, l->json, l->len, &l->cap, sizeof(*l->json));
    l->json[l->len++] = gw_arena_strndup(l->a, v->mv_data, v->mv_size);
    return 0;
}

int
gw_store_rec_list(struct gw_store *st, enum gw_store_db db, bool newest_first, size_t limit,
                  struct gw_arena *a, char ***json, size_t *n)
{
    struct rec_list l = {.a = a, .limit = limit};
    int rc = store_each(st, st->recs[db], "records", newest_first, rec_list_one, &l);

    *json = l.json;
    *n = l.len;
    return rc;
}

int
gw_store_audit_add(struct gw_store *st, const char *json)
{
    unsigned char key[16];
    uint64_t when, uniq;

    /* Wall clock, not monotonic: the order must hold across reboots. */
    when = (uint64_t)gw_wall_us();
    MDB_txn *txn;
    int mrc, rc = 0;

    if (gw_random_bytes(&uniq, sizeof(uniq)) != 0)
        uniq = when;
    time_key(key, when, uniq);
    MDB_val k = {sizeof(key), key}, v = {strlen(json), (void *)json};
    if ((mrc = mdb_txn_begin(st->env, NULL, 0, &txn)) != 0)
        return store_fail("mdb_txn_begin", "audit", mrc);
    if ((mrc = mdb_put(txn, st->recs[GW_DB_AUDIT], &k, &v, 0)) != 0)
        rc = store_fail("mdb_put", "audit", mrc);
    return store_commit(txn, rc, "audit");
}

/* ------------------------------------------------------------------ usage */

static const char totals_key[] = "usage.totals";
static const char head_key[] = "ring.head";
static const char pruned_key[] = "usage.pruned_before";
static const char format_key[] = "usage.format";

#define DAY_US (86400LL * 1000000)
/* usage.format once every record is in today's format and aggregated. */
#define USAGE_FORMAT 2
/* An upgrade step looks at no more than this many records per record it
 * may convert: records already in today's format cost a read each. */
#define UPGRADE_SCAN_FACTOR 8

struct ring_head {
    uint64_t incarnation;
    uint64_t head;
};

const char *const gw_usage_capability_names[GW_CAP_COUNT] = {
    [GW_CAP_NONE] = "",
    [GW_CAP_CHAT] = "chat",
    [GW_CAP_EMBEDDINGS] = "embeddings",
    [GW_CAP_TRANSCRIPTION] = "transcription",
    [GW_CAP_SPEECH] = "speech",
    [GW_CAP_IMAGES] = "images",
    [GW_CAP_VIDEO] = "video",
};

/* A record as versions before capabilities stored it: today's without
 * units and tier at the end (capability was a zero pad byte).  It is in
 * its aggregate already, so it needs no upgrade. */
#define USAGE_V2_SIZE offsetof(struct gw_usage, units)
/* The sums as versions before capabilities stored them. */
#define SUMS_V1_SIZE offsetof(struct gw_usage_sums, audio_ms)

/* A record as versions before user, tenant, cost and cached stored it:
 * read, never written; gw_store_usage_upgrade rewrites them. */
struct usage_v1 {
    int64_t time_us;
    int64_t input_tokens;
    int64_t output_tokens;
    int32_t status;
    uint32_t duration_ms;
    uint32_t ttfb_ms;
    uint8_t stream;
    uint8_t pad[3];
    char request_id[72];
    char key_id[24];
    char model[64];
    char target[96];
};

/*
 * The compact form in which records are stored: a version byte (1), the
 * numbers (time_us, input_tokens, output_tokens, cost_nano, units,
 * status, duration_ms, ttfb_ms, stream, cached, byok, capability, in the
 * host's byte order as struct gw_usage has them), then each string
 * (request_id, key_id, model, target, user, tenant, tier) as a length
 * byte and its bytes.  A typical record takes some 150 bytes where the
 * whole struct took 480, most of them the padding of its fixed-size
 * strings: the master's drains copy and write a third of the bytes, and
 * the usage database grows at a third of the pace.
 *
 * The forms before it are told apart by their size alone, so a compact
 * record that would have one of their sizes gets zero bytes after its
 * strings until it has not (usage_decode_compact skips them).
 */
#define COMPACT_VERSION 1
#define COMPACT_NUMBERS (5 * 8 + 3 * 4 + 4)
#define COMPACT_MAX (1 + COMPACT_NUMBERS + 7 + sizeof(struct gw_usage) + 4)

#define USAGE_STRINGS(r)                                                                           \
    {                                                                                              \
        (r)->request_id, (r)->key_id, (r)->model, (r)->target, (r)->user, (r)->tenant, (r)->tier   \
    }
#define USAGE_STRING_SIZES(r)                                                                      \
    {                                                                                              \
        sizeof((r)->request_id), sizeof((r)->key_id), sizeof((r)->model), sizeof((r)->target),     \
            sizeof((r)->user), sizeof((r)->tenant), sizeof((r)->tier)                              \
    }

static bool
legacy_size(size_t n)
{
    return n == sizeof(struct gw_usage) || n == USAGE_V2_SIZE || n == sizeof(struct usage_v1);
}

/* r in its compact form into out (COMPACT_MAX bytes); returns its size. */
static size_t
usage_encode(const struct gw_usage *r, unsigned char *out)
{
    const char *const strs[] = USAGE_STRINGS(r);
    const size_t sizes[] = USAGE_STRING_SIZES(r);
    unsigned char *o = out;

    *o++ = COMPACT_VERSION;
#define PUT(f)                                                                                     \
    do {                                                                                           \
        memcpy(o, &r->f, sizeof(r->f));                                                            \
        o += sizeof(r->f);                                                                         \
    } while (0)
    PUT(time_us);
    PUT(input_tokens);
    PUT(output_tokens);
    PUT(cost_nano);
    PUT(units);
    PUT(status);
    PUT(duration_ms);
    PUT(ttfb_ms);
    PUT(stream);
    PUT(cached);
    PUT(byok);
    PUT(capability);
#undef PUT
    for (size_t i = 0; i < 7; i++) {
        size_t n = strnlen(strs[i], sizes[i]);
        *o++ = (unsigned char)n;
        memcpy(o, strs[i], n);
        o += n;
    }
    while (legacy_size((size_t)(o - out)))
        *o++ = 0;
    return (size_t)(o - out);
}

/* A compact record into out; false when v is not one. */
static bool
usage_decode_compact(const MDB_val *v, struct gw_usage *out)
{
    const unsigned char *p = v->mv_data, *end = p + v->mv_size;
    char *const strs[] = USAGE_STRINGS(out);
    const size_t sizes[] = USAGE_STRING_SIZES(out);

    if (v->mv_size < 1 + COMPACT_NUMBERS + 7 || *p++ != COMPACT_VERSION)
        return false;
    memset(out, 0, sizeof(*out));
#define GET(f)                                                                                     \
    do {                                                                                           \
        memcpy(&out->f, p, sizeof(out->f));                                                        \
        p += sizeof(out->f);                                                                       \
    } while (0)
    GET(time_us);
    GET(input_tokens);
    GET(output_tokens);
    GET(cost_nano);
    GET(units);
    GET(status);
    GET(duration_ms);
    GET(ttfb_ms);
    GET(stream);
    GET(cached);
    GET(byok);
    GET(capability);
#undef GET
    for (size_t i = 0; i < 7; i++) {
        if (p >= end || *p > sizes[i] || (size_t)(end - p - 1) < *p)
            return false;
        memcpy(strs[i], p + 1, *p);
        p += 1 + *p;
    }
    for (; p < end; p++)
        if (*p != 0)
            return false;
    return true;
}

/* Decode a stored value into out: 0 for today's format, 1 for a record
 * of an older version that needs upgrading (converted), -1 for neither. */
static int
usage_decode(const MDB_val *v, struct gw_usage *out)
{
    struct usage_v1 old;

    if (!legacy_size(v->mv_size))
        return usage_decode_compact(v, out) ? 0 : -1;
    /* Copied out: LMDB's pages need not be aligned for the struct. */
    if (v->mv_size == sizeof(*out)) {
        memcpy(out, v->mv_data, sizeof(*out));
        return 0;
    }
    if (v->mv_size == USAGE_V2_SIZE) {
        memset(out, 0, sizeof(*out));
        memcpy(out, v->mv_data, USAGE_V2_SIZE);
        return 0;
    }
    if (v->mv_size != sizeof(old))
        return -1;
    memcpy(&old, v->mv_data, sizeof(old));
    memset(out, 0, sizeof(*out));
    out->time_us = old.time_us;
    out->input_tokens = old.input_tokens;
    out->output_tokens = old.output_tokens;
    out->status = old.status;
    out->duration_ms = old.duration_ms;
    out->ttfb_ms = old.ttfb_ms;
    out->stream = old.stream;
    memcpy(out->request_id, old.request_id, sizeof(old.request_id));
    memcpy(out->key_id, old.key_id, sizeof(old.key_id));
    memcpy(out->model, old.model, sizeof(old.model));
    memcpy(out->target, old.target, sizeof(old.target));
    return 1;
}

static int64_t
day_of(int64_t time_us)
{
    return time_us >= 0 ? time_us / DAY_US : 0;
}

static void
be32_put(unsigned char *p, uint32_t v)
{
    for (int b = 0; b < 4; b++)
        p[b] = (unsigned char)(v >> (24 - 8 * b));
}

static uint32_t
be32_get(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/*
 * The key of a record's daily aggregate: the day (4 bytes, big-endian, so
 * keys sort by day), the status (2 bytes), then key id, user, tenant,
 * model and target, each ended by a NUL.  At most AGG_KEY_MAX bytes,
 * under LMDB's 511.
 */
#define AGG_KEY_MAX                                                                                \
    (6 + sizeof(((struct gw_usage *)0)->key_id) + sizeof(((struct gw_usage *)0)->user) +           \
     sizeof(((struct gw_usage *)0)->tenant) + sizeof(((struct gw_usage *)0)->model) +              \
     sizeof(((struct gw_usage *)0)->target) + 5 + 1 + sizeof(((struct gw_usage *)0)->tier) + 1)

static size_t
agg_key(unsigned char key[AGG_KEY_MAX], const struct gw_usage *r)
{
    const char *const fields[] = {r->key_id, r->user, r->tenant, r->model, r->target};
    const size_t sizes[] = {sizeof(r->key_id), sizeof(r->user), sizeof(r->tenant), sizeof(r->model),
                            sizeof(r->target)};
    uint32_t status = r->status < 0 ? 0 : r->status > 0xffff ? 0xffff : (uint32_t)r->status;
    size_t len = 6;

    be32_put(key, (uint32_t)day_of(r->time_us));
    key[4] = (unsigned char)(status >> 8);
    key[5] = (unsigned char)status;
    for (size_t i = 0; i < 5; i++) {
        size_t n = strnlen(fields[i], sizes[i]);
        memcpy(key + len, fields[i], n);
        len += n;
        key[len++] = '\0';
    }
    /* A record without capability keeps the key older versions wrote, so
     * that it adds to the same aggregate. */
    size_t tn = strnlen(r->tier, sizeof(r->tier));
    if (r->capability != GW_CAP_NONE || tn > 0) {
        key[len++] = r->capability;
        memcpy(key + len, r->tier, tn);
        len += tn;
        key[len++] = '\0';
    }
    return len;
}

/* The dimensions an aggregate key holds, into a record (time_us: the
 * day's start).  -1 when the key is malformed. */
static int
agg_key_decode(const MDB_val *k, struct gw_usage *dims)
{
    const unsigned char *p = k->mv_data, *end = p + k->mv_size;
    char *const fields[] = {dims->key_id, dims->user, dims->tenant, dims->model, dims->target};
    const size_t sizes[] = {sizeof(dims->key_id), sizeof(dims->user), sizeof(dims->tenant),
                            sizeof(dims->model), sizeof(dims->target)};

    memset(dims, 0, sizeof(*dims));
    if (k->mv_size < 6)
        return -1;
    dims->time_us = (int64_t)be32_get(p) * DAY_US;
    dims->status = p[4] << 8 | p[5];
    p += 6;
    for (size_t i = 0; i < 5; i++) {
        const unsigned char *nul = memchr(p, '\0', (size_t)(end - p));
        if (nul == NULL || (size_t)(nul - p) > sizes[i])
            return -1;
        memcpy(fields[i], p, (size_t)(nul - p));
        p = nul + 1;
    }
    if (p < end) {
        const unsigned char *nul = memchr(p + 1, '\0', (size_t)(end - p - 1));
        if (nul == NULL || (size_t)(nul - p - 1) > sizeof(dims->tier))
            return -1;
        dims->capability = *p < GW_CAP_COUNT ? *p : GW_CAP_NONE;
        memcpy(dims->tier, p + 1, (size_t)(nul - p - 1));
    }
    return 0;
}

static void
sums_add_record(struct gw_usage_sums *s, const struct gw_usage *r)
{
    s->requests++;
    s->errors += r->status >= 400;
    s->input_tokens += (uint64_t)(r->input_tokens > 0 ? r->input_tokens : 0);
    s->output_tokens += (uint64_t)(r->output_tokens > 0 ? r->output_tokens : 0);
    s->cached += r->cached != 0;
    s->duration_ms += r->duration_ms;
    s->ttfb_ms += r->ttfb_ms;
    s->cost_nano += r->cost_nano;
    uint64_t units = (uint64_t)(r->units > 0 ? r->units : 0);
    switch (r->capability) {
    case GW_CAP_TRANSCRIPTION: s->audio_ms += units; break;
    case GW_CAP_SPEECH: s->characters += units; break;
    case GW_CAP_IMAGES: s->images += units; break;
    case GW_CAP_VIDEO: s->videos += units; break;
    default: break;
    }
}

/* A stored aggregate into s: today's size, or an older version's prefix. */
static bool
sums_decode(const MDB_val *v, struct gw_usage_sums *s)
{
    if (v->mv_size < SUMS_V1_SIZE || v->mv_size > sizeof(*s))
        return false;
    memset(s, 0, sizeof(*s));
    memcpy(s, v->mv_data, v->mv_size);
    return true;
}

/* Add r to its daily aggregate inside txn. */
static int
agg_add(struct gw_store *st, MDB_txn *txn, const struct gw_usage *r)
{
    unsigned char key[AGG_KEY_MAX];
    struct gw_usage_sums s = {0};
    MDB_val k = {agg_key(key, r), key}, v;
    int mrc = mdb_get(txn, st->usage_agg, &k, &v);

    if (mrc == 0)
        (void)sums_decode(&v, &s);
    else if (mrc != 0 && mrc != MDB_NOTFOUND)
        return store_fail("mdb_get", "usage_daily", mrc);
    sums_add_record(&s, r);
    v.mv_size = sizeof(s);
    v.mv_data = &s;
    if ((mrc = mdb_put(txn, st->usage_agg, &k, &v, 0)) != 0)
        return store_fail("mdb_put", "usage_daily", mrc);
    return 0;
}

int
gw_store_usage_add(struct gw_store *st, const struct gw_usage *recs, size_t n, uint64_t incarnation,
                   uint64_t head)
{
    struct gw_usage_totals t = {0};
    MDB_txn *txn;
    MDB_val k = {sizeof(totals_key) - 1, (void *)totals_key}, v;
    int mrc, rc = 0;

    if ((mrc = mdb_txn_begin(st->env, NULL, 0, &txn)) != 0)
        return store_fail("mdb_txn_begin", "usage", mrc);
    if ((mrc = mdb_get(txn, st->meta, &k, &v)) == 0 && v.mv_size == sizeof(t))
        memcpy(&t, v.mv_data, sizeof(t));
    for (size_t i = 0; i < n && rc == 0; i++) {
        unsigned char key[16];
        uint64_t when = (uint64_t)recs[i].time_us, uniq;
        /* Ring records are unique by position; others by chance (64 bits). */
        if (incarnation != 0)
            uniq = incarnation ^ (head - n + i);
        else if (gw_random_bytes(&uniq, sizeof(uniq)) != 0)
            uniq = (uint64_t)gw_now_us();
        time_key(key, when, uniq);
        unsigned char val[COMPACT_MAX];
        MDB_val uk = {sizeof(key), key}, uv = {usage_encode(&recs[i], val), val};
        /* A record stored already is not counted again, in the totals or
         * its aggregate. */
        if ((mrc = mdb_put(txn, st->usage, &uk, &uv, MDB_NOOVERWRITE)) == MDB_KEYEXIST)
            continue;
        if (mrc != 0) {
            rc = store_fail("mdb_put", "usage", mrc);
            break;
        }
        rc = agg_add(st, txn, &recs[i]);
        store_pace(st, i);
        t.requests++;
        t.input_tokens += (uint64_t)(recs[i].input_tokens > 0 ? recs[i].input_tokens : 0);
        t.output_tokens += (uint64_t)(recs[i].output_tokens > 0 ? recs[i].output_tokens : 0);
    }
    if (rc == 0) {
        v.mv_size = sizeof(t);
        v.mv_data = &t;
        if ((mrc = mdb_put(txn, st->meta, &k, &v, 0)) != 0)
            rc = store_fail("mdb_put", totals_key, mrc);
    }
    if (rc == 0 && incarnation != 0) {
        struct ring_head rh = {incarnation, head};
        MDB_val hk = {sizeof(head_key) - 1, (void *)head_key}, hv = {sizeof(rh), &rh};
        if ((mrc = mdb_put(txn, st->meta, &hk, &hv, 0)) != 0)
            rc = store_fail("mdb_put", head_key, mrc);
    }
    return store_commit(txn, rc, "usage");
}

int
gw_store_usage_head(struct gw_store *st, uint64_t incarnation, uint64_t *head)
{
    MDB_txn *txn;
    MDB_val k = {sizeof(head_key) - 1, (void *)head_key}, v;
    int rc = store_read_begin(st, &txn);

    if (rc != 0)
        return rc;
    int mrc = mdb_get(txn, st->meta, &k, &v);
    if (mrc == 0 && v.mv_size == sizeof(struct ring_head)) {
        struct ring_head rh;
        memcpy(&rh, v.mv_data, sizeof(rh));
        rc = rh.incarnation == incarnation ? 0 : GW_ENOENT;
        *head = rh.head;
    } else {
        rc = mrc == MDB_NOTFOUND || mrc == 0 ? GW_ENOENT : store_fail("mdb_get", head_key, mrc);
    }
    store_read_end(st);
    return rc;
}

/* A fixed-size meta value into out (left as it is when absent). */
static int
meta_get(struct gw_store *st, MDB_txn *txn, const char *name, void *out, size_t len)
{
    MDB_val k = {strlen(name), (void *)name}, v;
    int mrc = mdb_get(txn, st->meta, &k, &v);

    if (mrc == 0 && v.mv_size == len)
        memcpy(out, v.mv_data, len);
    else if (mrc != 0 && mrc != MDB_NOTFOUND)
        return store_fail("mdb_get", name, mrc);
    return 0;
}

static int
meta_put(struct gw_store *st, MDB_txn *txn, const char *name, const void *val, size_t len)
{
    MDB_val k = {strlen(name), (void *)name}, v = {len, (void *)val};
    int mrc = mdb_put(txn, st->meta, &k, &v, 0);

    return mrc != 0 ? store_fail("mdb_put", name, mrc) : 0;
}

int
gw_store_usage_totals(struct gw_store *st, struct gw_usage_totals *out)
{
    MDB_txn *txn;
    int rc = store_read_begin(st, &txn);

    memset(out, 0, sizeof(*out));
    if (rc != 0)
        return rc;
    rc = meta_get(st, txn, totals_key, out, sizeof(*out));
    store_read_end(st);
    return rc;
}

int
gw_store_usage_pruned_before(struct gw_store *st, int64_t *us)
{
    MDB_txn *txn;
    int rc = store_read_begin(st, &txn);

    *us = 0;
    if (rc != 0)
        return rc;
    rc = meta_get(st, txn, pruned_key, us, sizeof(*us));
    store_read_end(st);
    return rc;
}

int
gw_store_usage_scan(struct gw_store *st, int64_t from_us, int64_t to_us, bool newest_first,
                    gw_store_usage_fn fn, void *ctx)
{
    unsigned char start[8];
    uint64_t from = from_us > 0 ? (uint64_t)from_us : 0;
    uint64_t to = to_us > 0 ? (uint64_t)to_us : 0;
    MDB_txn *txn;
    MDB_cursor *cur = NULL;
    MDB_val k = {sizeof(start), start}, v;
    MDB_cursor_op next = newest_first ? MDB_PREV : MDB_NEXT;
    int rc = store_read_begin(st, &txn), mrc;

    if (rc != 0)
        return rc;
    for (int b = 0; b < 8; b++)
        start[b] = (unsigned char)((newest_first ? to : from) >> (56 - 8 * b));
    if ((mrc = mdb_cursor_open(txn, st->usage, &cur)) != 0) {
        rc = store_fail("mdb_cursor_open", "usage", mrc);
        goto out;
    }
    mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    if (newest_first) {
        /* The first key at or after the end, or none: step back from it. */
        if (mrc == MDB_NOTFOUND)
            mrc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
        else if (mrc == 0)
            mrc = mdb_cursor_get(cur, &k, &v, MDB_PREV);
    }
    for (; mrc == 0 && rc == 0; mrc = mdb_cursor_get(cur, &k, &v, next)) {
        struct gw_usage rec;
        if (usage_decode(&v, &rec) < 0)
            continue;
        if (newest_first ? rec.time_us < from_us : rec.time_us >= to_us)
            break;
        if (rec.time_us >= to_us || rec.time_us < from_us)
            continue;
        rc = fn(&rec, ctx);
    }
    if (rc == 0 && mrc != 0 && mrc != MDB_NOTFOUND)
        rc = store_fail("mdb_cursor_get", "usage", mrc);
out:
    if (cur != NULL)
        mdb_cursor_close(cur);
    store_read_end(st);
    return rc;
}

int
gw_store_usage_agg_scan(struct gw_store *st, int64_t from_us, int64_t to_us,
                        gw_store_usage_agg_fn fn, void *ctx)
{
    /* The first day whose start is at or after from_us. */
    int64_t first = from_us > 0 ? (from_us + DAY_US - 1) / DAY_US : 0;
    unsigned char start[4];
    MDB_txn *txn;
    MDB_cursor *cur = NULL;
    MDB_val k = {sizeof(start), start}, v;
    int rc = store_read_begin(st, &txn), mrc;

    if (rc != 0)
        return rc;
    be32_put(start, (uint32_t)first);
    if ((mrc = mdb_cursor_open(txn, st->usage_agg, &cur)) != 0) {
        rc = store_fail("mdb_cursor_open", "usage_daily", mrc);
        goto out;
    }
    for (mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); mrc == 0 && rc == 0;
         mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        struct gw_usage dims;
        struct gw_usage_sums sums;
        if (agg_key_decode(&k, &dims) != 0 || !sums_decode(&v, &sums))
            continue;
        if (dims.time_us >= to_us)
            break;
        rc = fn(&dims, &sums, ctx);
    }
    if (rc == 0 && mrc != 0 && mrc != MDB_NOTFOUND)
        rc = store_fail("mdb_cursor_get", "usage_daily", mrc);
out:
    if (cur != NULL)
        mdb_cursor_close(cur);
    store_read_end(st);
    return rc;
}

int
gw_store_usage_prune(struct gw_store *st, int64_t detail_before_us, int64_t agg_before_us,
                     size_t max, size_t *deleted)
{
    MDB_txn *txn;
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    int64_t pruned = 0;
    int mrc, rc = 0;

    *deleted = 0;
    if ((mrc = mdb_txn_begin(st->env, NULL, 0, &txn)) != 0)
        return store_fail("mdb_txn_begin", "usage prune", mrc);
    if (detail_before_us > 0) {
        /* Queries take what lies before this from the aggregates from now
         * on, before the first record goes. */
        if ((rc = meta_get(st, txn, pruned_key, &pruned, sizeof(pruned))) != 0)
            goto done;
        if (detail_before_us > pruned &&
            (rc = meta_put(st, txn, pruned_key, &detail_before_us, sizeof(detail_before_us))) != 0)
            goto done;
        if ((mrc = mdb_cursor_open(txn, st->usage, &cur)) != 0) {
            rc = store_fail("mdb_cursor_open", "usage", mrc);
            goto done;
        }
        /* The oldest record each time: a delete moves the cursor on. */
        while (*deleted < max && (mrc = mdb_cursor_get(cur, &k, &v, MDB_FIRST)) == 0) {
            struct gw_usage rec;
            if (k.mv_size < 8 || key_time(k.mv_data) >= (uint64_t)detail_before_us)
                break;
            if (usage_decode(&v, &rec) == 1)
                break; /* not in its aggregate yet: upgrade first */
            if ((mrc = mdb_cursor_del(cur, 0)) != 0)
                break;
            store_pace(st, (*deleted)++);
        }
        mdb_cursor_close(cur);
        cur = NULL;
        if (mrc != 0 && mrc != MDB_NOTFOUND) {
            rc = store_fail("mdb_cursor_del", "usage", mrc);
            goto done;
        }
    }
    if (agg_before_us > 0) {
        if ((mrc = mdb_cursor_open(txn, st->usage_agg, &cur)) != 0) {
            rc = store_fail("mdb_cursor_open", "usage_daily", mrc);
            goto done;
        }
        while (*deleted < max && (mrc = mdb_cursor_get(cur, &k, &v, MDB_FIRST)) == 0) {
            if (k.mv_size < 4 || (int64_t)be32_get(k.mv_data) * DAY_US + DAY_US > agg_before_us)
                break;
            if ((mrc = mdb_cursor_del(cur, 0)) != 0)
                break;
            store_pace(st, (*deleted)++);
        }
        mdb_cursor_close(cur);
        cur = NULL;
        if (mrc != 0 && mrc != MDB_NOTFOUND)
            rc = store_fail("mdb_cursor_del", "usage_daily", mrc);
    }
done:
    if (cur != NULL)
        mdb_cursor_close(cur);
    return store_commit(txn, rc, "usage prune");
}

int
gw_store_usage_upgrade(struct gw_store *st, size_t max, size_t *converted, bool *done)
{
    uint32_t format = 0;
    MDB_txn *txn;
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    unsigned char(*keys)[16] = NULL;
    size_t nkeys = 0, looked = 0;
    int mrc, rc;

    *converted = 0;
    *done = false;
    if ((mrc = mdb_txn_begin(st->env, NULL, 0, &txn)) != 0)
        return store_fail("mdb_txn_begin", "usage upgrade", mrc);
    if ((rc = meta_get(st, txn, format_key, &format, sizeof(format))) != 0 ||
        format >= USAGE_FORMAT) {
        *done = rc == 0;
        goto out;
    }
    if ((keys = calloc(max > 0 ? max : 1, sizeof(*keys))) == NULL) {
        rc = GW_ENOMEM;
        goto out;
    }
    if ((mrc = mdb_cursor_open(txn, st->usage, &cur)) != 0) {
        rc = store_fail("mdb_cursor_open", "usage", mrc);
        goto out;
    }
    /* Resume after the last record the previous step looked at. */
    k.mv_size = sizeof(st->upgrade_pos);
    k.mv_data = st->upgrade_pos;
    for (mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
         mrc == 0 && nkeys < max && looked < max * UPGRADE_SCAN_FACTOR;
         mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT), looked++) {
        if (v.mv_size == sizeof(struct usage_v1) && k.mv_size == sizeof(keys[0]))
            memcpy(keys[nkeys++], k.mv_data, sizeof(keys[0]));
        if (k.mv_size == sizeof(st->upgrade_pos))
            memcpy(st->upgrade_pos, k.mv_data, sizeof(st->upgrade_pos));
    }
    mdb_cursor_close(cur);
    cur = NULL;
    if (mrc != 0 && mrc != MDB_NOTFOUND) {
        rc = store_fail("mdb_cursor_get", "usage", mrc);
        goto out;
    }
    bool at_end = mrc == MDB_NOTFOUND;
    for (size_t i = 0; i < nkeys && rc == 0; i++) {
        struct gw_usage rec;
        MDB_val ok = {sizeof(keys[i]), keys[i]}, ov;
        if ((mrc = mdb_get(txn, st->usage, &ok, &ov)) != 0) {
            rc = store_fail("mdb_get", "usage", mrc);
            break;
        }
        if (usage_decode(&ov, &rec) != 1)
            continue;
        unsigned char val[COMPACT_MAX];
        MDB_val nv = {usage_encode(&rec, val), val};
        if ((mrc = mdb_put(txn, st->usage, &ok, &nv, 0)) != 0)
            rc = store_fail("mdb_put", "usage", mrc);
        else if ((rc = agg_add(st, txn, &rec)) == 0)
            store_pace(st, (*converted)++);
    }
    if (rc == 0 && at_end) {
        /* The end was reached: every record is in today's format. */
        format = USAGE_FORMAT;
        rc = meta_put(st, txn, format_key, &format, sizeof(format));
        *done = rc == 0;
    }
out:
    free(keys);
    if (cur != NULL)
        mdb_cursor_close(cur);
    if (rc != 0)
        *converted = 0, *done = false;
    return store_commit(txn, rc, "usage upgrade");
}

/* ----------------------------------------------------------------- limits */

/* Decode {"rpm","tpm"}; a field left out is GW_LIMIT_UNSET. */
static int
limit_decode(const char *data, size_t len, struct gw_limits *out)
{
    struct json_tokener *tok = json_tokener_new();
    struct json_object *o = NULL, *v;
    int rc = GW_ESTORE;

    if (tok == NULL)
        return GW_ENOMEM;
    out->rpm = out->tpm = GW_LIMIT_UNSET;
    o = json_tokener_parse_ex(tok, data, (int)len);
    if (o == NULL || !json_object_is_type(o, json_type_object)) {
        gw_log(GW_LOG_ERROR, "limit record is not a JSON object");
        goto fail;
    }
    if (json_object_object_get_ex(o, "rpm", &v))
        out->rpm = (uint64_t)json_object_get_int64(v);
    if (json_object_object_get_ex(o, "tpm", &v))
        out->tpm = (uint64_t)json_object_get_int64(v);
    rc = 0;
fail:
    json_object_put(o);
    json_tokener_free(tok);
    return rc;
}

int
gw_store_limit_set(struct gw_store *st, const char *scope, const struct gw_limits *l)
{
    struct json_object *o = json_object_new_object();
    MDB_txn *txn;
    int mrc, rc;

    if (l->rpm != GW_LIMIT_UNSET)
        json_object_object_add(o, "rpm", json_object_new_int64((int64_t)l->rpm));
    if (l->tpm != GW_LIMIT_UNSET)
        json_object_object_add(o, "tpm", json_object_new_int64((int64_t)l->tpm));
    if ((mrc = mdb_txn_begin(st->env, NULL, 0, &txn)) != 0) {
        json_object_put(o);
        return store_fail("mdb_txn_begin", scope, mrc);
    }
    rc = store_put_json(txn, st->limits, scope, o, 0);
    json_object_put(o);
    return store_commit(txn, rc, "limits");
}

int
gw_store_limit_get(struct gw_store *st, const char *scope, struct gw_limits *out)
{
    MDB_txn *txn;
    MDB_val k = {strlen(scope), (void *)scope}, v;
    int rc = store_read_begin(st, &txn);

    if (rc != 0)
        return rc;
    int mrc = mdb_get(txn, st->limits, &k, &v);
    if (mrc == MDB_NOTFOUND)
        rc = GW_ENOENT;
    else if (mrc != 0)
        rc = store_fail("mdb_get", scope, mrc);
    else
        rc = limit_decode(v.mv_data, v.mv_size, out);
    store_read_end(st);
    return rc;
}

int
gw_store_limit_count(struct gw_store *st, size_t *n)
{
    MDB_txn *txn;
    MDB_stat ms;
    int rc = store_read_begin(st, &txn), mrc;

    if (rc != 0)
        return rc;
    if ((mrc = mdb_stat(txn, st->limits, &ms)) != 0)
        rc = store_fail("mdb_stat", "limits", mrc);
    else
        *n = ms.ms_entries;
    store_read_end(st);
    return rc;
}

int
gw_store_limit_del(struct gw_store *st, const char *scope)
{
    MDB_txn *txn;
    MDB_val k = {strlen(scope), (void *)scope};
    int mrc, rc = 0;

    if ((mrc = mdb_txn_begin(st->env, NULL, 0, &txn)) != 0)
        return store_fail("mdb_txn_begin", scope, mrc);
    if ((mrc = mdb_del(txn, st->limits, &k, NULL)) != 0)
        rc = mrc == MDB_NOTFOUND ? GW_ENOENT : store_fail("mdb_del", scope, mrc);
    return store_commit(txn, rc, "limits");
}

struct limit_list {
    struct gw_arena *a;
    char **names;
    struct gw_limits *limits;
    size_t len, cap;
};

static int
limit_list_one(const MDB_val *k, const MDB_val *v, void *ctx)
{
    struct limit_list *l = ctx;
    size_t cap = l->cap;

    l->names = arena_grow(l->a, l->names, l->len, &cap, sizeof(*l->names));
    l->limits = arena_grow(l->a, l->limits, l->len, &l->cap, sizeof(*l->limits));
    l->names[l->len] = gw_arena_strndup(l->a, k->mv_data, k->mv_size);
    int rc = limit_decode(v->mv_data, v->mv_size, &l->limits[l->len]);
    if (rc == 0)
        l->len++;
    return rc;
}

int
gw_store_limit_list(struct gw_store *st, struct gw_arena *a, char ***scopes,
                    struct gw_limits **limits, size_t *n)
{
    struct limit_list l = {.a = a};
    int rc = store_each(st, st->limits, "limits", false, limit_list_one, &l);

    *scopes = l.names;
    *limits = l.limits;
    *n = l.len;
    return rc;
}
