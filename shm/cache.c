/*
 * cache.c - the response cache's LMDB environment, state_dir/cache, apart
 * from the state store so that it can be bounded, purged or thrown away
 * without touching keys or usage.
 *
 * Databases:
 *   entries  model NUL sha256 (of the canonical request) -> struct cache_rec
 *            + content type + body
 *   expiry   expiry time (8 bytes, big-endian unix us) + the entry's key
 *            -> nothing: entries in the order they expire
 *   meta     "t" and "m:MODEL" -> struct gw_cache_count
 *
 * Workers read with one reused read transaction, and store an answer with
 * a write transaction of their own that holds LMDB's writer lock for the
 * copy of one entry and a bounded number of evictions: no fsync (MDB_NOSYNC),
 * so a store costs memory copies, not a disk flush.  The master syncs the
 * file every few seconds and at a clean stop.  A system crash can leave an
 * unsynced file inconsistent: the owner (the master) notes the boot it
 * opened the environment in, and a cache left open by an earlier boot is
 * removed and begun anew.  A cache is only ever a copy of answers.
 *
 * The size bound counts the bytes of keys and values; LMDB's own pages
 * add some on disk.  To make room, the entries nearest their expiry go
 * first: for one ttl, the oldest.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lmdb.h>

#include "shm/shm.h"

/* Address space, not memory: the file grows only with what is stored.
 * Twice the largest cache.max_size (32g), for LMDB's own pages; every
 * worker maps it, so it stays well below what a thousand workers can
 * reserve together. */
#define CACHE_MAP_SIZE ((size_t)64 << 30)
#define CACHE_MAX_READERS 4096
/* Evictions one store may make before it gives up storing. */
#define CACHE_EVICT_MAX 256
#define CACHE_REC_VERSION 1

struct gw_cache {
    MDB_env *env;
    MDB_dbi entries;
    MDB_dbi expiry;
    MDB_dbi meta;
    MDB_txn *rtxn;
    bool owner;
    char dir[4096];
};

/* The head of a stored value; copied out (LMDB values are not aligned). */
struct cache_rec {
    uint32_t version;
    uint32_t ctype_len;
    int64_t created_us;
    int64_t expires_us;
    int64_t prompt_tokens;
    int64_t completion_tokens;
    uint64_t body_len;
};

static int
cache_fail(const char *call, const char *arg, int mrc)
{
    gw_log(GW_LOG_ERROR, "cache: %s(%s): %s", call, arg, mdb_strerror(mrc));
    return GW_ESTORE;
}

/* This boot's id, or "" where the kernel does not say. */
static void
boot_id(char out[64])
{
    int fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
    ssize_t n = fd >= 0 ? read(fd, out, 63) : -1;

    if (fd >= 0)
        close(fd);
    out[n > 0 ? n : 0] = '\0';
    out[strcspn(out, "\n")] = '\0';
}

/*
 * The owner's check at open: a "dirty" marker naming another boot means
 * the environment was open, unsynced, when the system went down: remove
 * it.  Then mark it open in this boot.
 */
static void
owner_check(const char *dir)
{
    char path[4200], mark[64] = "", now[64];
    int fd;

    boot_id(now);
    snprintf(path, sizeof(path), "%s/dirty", dir);
    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) >= 0) {
        ssize_t n = read(fd, mark, sizeof(mark) - 1);
        mark[n > 0 ? n : 0] = '\0';
        close(fd);
        if (strcmp(mark, now) != 0) {
            gw_log(GW_LOG_WARN,
                   "cache: %s was left open by an earlier boot (a system crash?); "
                   "starting with an empty cache",
                   dir);
            snprintf(path, sizeof(path), "%s/data.mdb", dir);
            unlink(path);
            snprintf(path, sizeof(path), "%s/lock.mdb", dir);
            unlink(path);
        }
    }
    snprintf(path, sizeof(path), "%s/dirty", dir);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || gw_write_all(fd, now, strlen(now)) != 0)
        gw_log(GW_LOG_WARN, "cache: cannot write %s: %s", path, strerror(errno));
    if (fd >= 0)
        close(fd);
}

int
gw_cache_open(const char *dir, bool owner, struct gw_cache **out)
{
    struct gw_cache *c = calloc(1, sizeof(*c));
    MDB_txn *txn = NULL;
    int mrc, rc = GW_ESTORE;

    if (c == NULL)
        return GW_ENOMEM;
    snprintf(c->dir, sizeof(c->dir), "%s", dir);
    c->owner = owner;
    if (gw_mkdir_p(dir, 0700) != 0) {
        rc = GW_EIO;
        goto fail;
    }
    if (owner)
        owner_check(dir);
    if ((mrc = mdb_env_create(&c->env)) != 0) {
        rc = cache_fail("mdb_env_create", dir, mrc);
        goto fail;
    }
    mdb_env_set_mapsize(c->env, CACHE_MAP_SIZE);
    mdb_env_set_maxdbs(c->env, 4);
    mdb_env_set_maxreaders(c->env, CACHE_MAX_READERS);
    if ((mrc = mdb_env_open(c->env, dir, MDB_NOTLS | MDB_NOSYNC | MDB_NORDAHEAD, 0600)) != 0) {
        rc = cache_fail("mdb_env_open", dir, mrc);
        goto fail;
    }
    if ((mrc = mdb_txn_begin(c->env, NULL, 0, &txn)) != 0 ||
        (mrc = mdb_dbi_open(txn, "entries", MDB_CREATE, &c->entries)) != 0 ||
        (mrc = mdb_dbi_open(txn, "expiry", MDB_CREATE, &c->expiry)) != 0 ||
        (mrc = mdb_dbi_open(txn, "meta", MDB_CREATE, &c->meta)) != 0) {
        rc = cache_fail("mdb_dbi_open", dir, mrc);
        goto fail;
    }
    mrc = mdb_txn_commit(txn);
    txn = NULL;
    if (mrc != 0) {
        rc = cache_fail("mdb_txn_commit", dir, mrc);
        goto fail;
    }
    *out = c;
    return 0;
fail:
    if (txn != NULL)
        mdb_txn_abort(txn);
    if (c->env != NULL)
        mdb_env_close(c->env);
    free(c);
    return rc;
}

void
gw_cache_close(struct gw_cache *c)
{
    char path[4200];

    if (c == NULL)
        return;
    if (c->rtxn != NULL)
        mdb_txn_abort(c->rtxn);
    if (c->owner && mdb_env_sync(c->env, 1) == 0) {
        snprintf(path, sizeof(path), "%s/dirty", c->dir);
        unlink(path);
    }
    mdb_env_close(c->env);
    free(c);
}

int
gw_cache_sync(struct gw_cache *c)
{
    int mrc = mdb_env_sync(c->env, 1);

    return mrc == 0 ? 0 : cache_fail("mdb_env_sync", c->dir, mrc);
}

void
gw_cache_reader_check(struct gw_cache *c)
{
    int dead = 0;

    mdb_reader_check(c->env, &dead);
}

/* ------------------------------------------------------------ keys */

/* The entry key: model, NUL, the hash.  Returns its length, 0 when the
 * model's name is too long to be a key. */
static size_t
entry_key(unsigned char *out, const char *model, const unsigned char hash[GW_CACHE_HASH_LEN])
{
    size_t mlen = strlen(model);

    if (mlen > GW_CACHE_MODEL_MAX)
        return 0;
    memcpy(out, model, mlen + 1);
    memcpy(out + mlen + 1, hash, GW_CACHE_HASH_LEN);
    return mlen + 1 + GW_CACHE_HASH_LEN;
}

static void
be64_put(unsigned char *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (unsigned char)v;
}

static uint64_t
be64_get(const unsigned char *p)
{
    uint64_t v = 0;

    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

/* The model's name at the start of an entry key of len bytes. */
static void
model_copy(char *dst, size_t cap, const unsigned char *key, size_t len)
{
    size_t n = strnlen((const char *)key, len);

    if (n >= cap)
        n = cap - 1;
    memcpy(dst, key, n);
    dst[n] = '\0';
}

/* ----------------------------------------------------------- counts */

static int
count_add(MDB_txn *txn, MDB_dbi meta, const char *name, int64_t entries, int64_t bytes)
{
    MDB_val k = {.mv_size = strlen(name), .mv_data = (void *)name}, v;
    struct gw_cache_count cnt = {0};
    int mrc = mdb_get(txn, meta, &k, &v);

    if (mrc == 0 && v.mv_size == sizeof(cnt))
        memcpy(&cnt, v.mv_data, sizeof(cnt));
    else if (mrc != 0 && mrc != MDB_NOTFOUND)
        return mrc;
    cnt.entries = (uint64_t)((int64_t)cnt.entries + entries);
    cnt.bytes = (uint64_t)((int64_t)cnt.bytes + bytes);
    if (cnt.entries == 0 && name[0] == 'm') {
        mrc = mdb_del(txn, meta, &k, NULL);
        return mrc == MDB_NOTFOUND ? 0 : mrc;
    }
    v.mv_size = sizeof(cnt);
    v.mv_data = &cnt;
    return mdb_put(txn, meta, &k, &v, 0);
}

/* Count an entry of model in (+1) or out (-1), with its bytes. */
static int
counts_move(MDB_txn *txn, MDB_dbi meta, const char *model, int sign, size_t bytes)
{
    char name[GW_CACHE_MODEL_MAX + 3];
    int mrc;

    snprintf(name, sizeof(name), "m:%s", model);
    if ((mrc = count_add(txn, meta, "t", sign, sign * (int64_t)bytes)) != 0)
        return mrc;
    return count_add(txn, meta, name, sign, sign * (int64_t)bytes);
}

/*
 * Delete the entry under key k (whose value is v) and its expiry index,
 * and count it out.  The model is the key up to its NUL.
 */
static int
entry_del(struct gw_cache *c, MDB_txn *txn, MDB_val *k, const MDB_val *v)
{
    struct cache_rec rec;
    unsigned char ikey[8 + GW_CACHE_MODEL_MAX + 1 + GW_CACHE_HASH_LEN];
    char model[GW_CACHE_MODEL_MAX + 1];
    size_t bytes = k->mv_size + v->mv_size;
    int mrc;

    if (v->mv_size < sizeof(rec) || k->mv_size > sizeof(ikey) - 8)
        return mdb_del(txn, c->entries, k, NULL);
    /* k and v point into pages that the deletes change: copy them first. */
    memcpy(&rec, v->mv_data, sizeof(rec));
    memcpy(ikey + 8, k->mv_data, k->mv_size);
    model_copy(model, sizeof(model), ikey + 8, k->mv_size);
    be64_put(ikey, (uint64_t)rec.expires_us);
    MDB_val ik = {.mv_size = 8 + k->mv_size, .mv_data = ikey};
    MDB_val kk = {.mv_size = k->mv_size, .mv_data = ikey + 8};
    if ((mrc = mdb_del(txn, c->expiry, &ik, NULL)) != 0 && mrc != MDB_NOTFOUND)
        return mrc;
    if ((mrc = mdb_del(txn, c->entries, &kk, NULL)) != 0)
        return mrc;
    return counts_move(txn, c->meta, model, -1, bytes);
}

/*
 * Remove the entry that expires first; its model goes to gone (for the
 * counters).  MDB_NOTFOUND when the cache is empty.
 */
static int
evict_first(struct gw_cache *c, MDB_txn *txn, int64_t before_us, char *gone, size_t gone_len)
{
    MDB_cursor *cur;
    MDB_val ik, k, v;
    int mrc;

    if ((mrc = mdb_cursor_open(txn, c->expiry, &cur)) != 0)
        return mrc;
    mrc = mdb_cursor_get(cur, &ik, &v, MDB_FIRST);
    mdb_cursor_close(cur);
    if (mrc != 0)
        return mrc;
    if (ik.mv_size <= 8)
        return MDB_CORRUPTED;
    if (before_us > 0 && (int64_t)be64_get(ik.mv_data) > before_us)
        return MDB_NOTFOUND;
    unsigned char key[GW_CACHE_MODEL_MAX + 1 + GW_CACHE_HASH_LEN];
    size_t klen = ik.mv_size - 8;
    if (klen > sizeof(key))
        return MDB_CORRUPTED;
    memcpy(key, (const unsigned char *)ik.mv_data + 8, klen);
    model_copy(gone, gone_len, key, klen);
    k.mv_size = klen;
    k.mv_data = key;
    if ((mrc = mdb_get(txn, c->entries, &k, &v)) == MDB_NOTFOUND) {
        /* An index without its entry: drop the index alone. */
        unsigned char ikey[8 + sizeof(key)];
        memcpy(ikey, ik.mv_data, ik.mv_size);
        MDB_val ik2 = {.mv_size = ik.mv_size, .mv_data = ikey};
        return mdb_del(txn, c->expiry, &ik2, NULL);
    }
    if (mrc != 0)
        return mrc;
    return entry_del(c, txn, &k, &v);
}

/* ------------------------------------------------------------ reads */

int
gw_cache_get(struct gw_cache *c, const char *model, const unsigned char hash[GW_CACHE_HASH_LEN],
             int64_t now_us, struct gw_arena *a, struct gw_cache_entry *out)
{
    unsigned char key[GW_CACHE_MODEL_MAX + 1 + GW_CACHE_HASH_LEN];
    MDB_val k = {.mv_size = entry_key(key, model, hash), .mv_data = key}, v;
    struct cache_rec rec;
    int mrc, rc = GW_ENOENT;

    if (k.mv_size == 0)
        return GW_ENOENT;
    mrc = c->rtxn == NULL ? mdb_txn_begin(c->env, NULL, MDB_RDONLY, &c->rtxn)
                          : mdb_txn_renew(c->rtxn);
    if (mrc != 0) {
        if (c->rtxn != NULL)
            mdb_txn_abort(c->rtxn);
        c->rtxn = NULL;
        return cache_fail("mdb_txn_begin", "read", mrc);
    }
    mrc = mdb_get(c->rtxn, c->entries, &k, &v);
    if (mrc != 0) {
        if (mrc != MDB_NOTFOUND)
            rc = cache_fail("mdb_get", model, mrc);
        goto out;
    }
    if (v.mv_size < sizeof(rec))
        goto out;
    memcpy(&rec, v.mv_data, sizeof(rec));
    if (rec.version != CACHE_REC_VERSION ||
        sizeof(rec) + rec.ctype_len + rec.body_len != v.mv_size || rec.expires_us <= now_us)
        goto out;
    const char *p = (const char *)v.mv_data + sizeof(rec);
    out->created_us = rec.created_us;
    out->expires_us = rec.expires_us;
    out->prompt_tokens = rec.prompt_tokens;
    out->completion_tokens = rec.completion_tokens;
    out->ctype = gw_arena_strndup(a, p, rec.ctype_len);
    out->body = gw_arena_strndup(a, p + rec.ctype_len, rec.body_len);
    out->body_len = rec.body_len;
    rc = 0;
out:
    mdb_txn_reset(c->rtxn);
    return rc;
}

/* ----------------------------------------------------------- writes */

int
gw_cache_put(struct gw_cache *c, const char *model, const unsigned char hash[GW_CACHE_HASH_LEN],
             const struct gw_cache_entry *e, uint64_t max_size, gw_cache_gone_fn gone, void *ctx)
{
    unsigned char key[GW_CACHE_MODEL_MAX + 1 + GW_CACHE_HASH_LEN];
    unsigned char ikey[8 + sizeof(key)];
    MDB_val k = {.mv_size = entry_key(key, model, hash), .mv_data = key}, v, ik;
    size_t ctype_len = e->ctype != NULL ? strlen(e->ctype) : 0;
    size_t vlen = sizeof(struct cache_rec) + ctype_len + e->body_len;
    MDB_txn *txn = NULL;
    /* The models of the entries evicted, told after the commit; on the heap
     * and only when something is evicted (64 KiB: too much for the stack
     * of a worker's connection). */
    char(*evicted)[GW_CACHE_MODEL_MAX + 1] = NULL;
    int nevicted = 0, mrc;

    if (k.mv_size == 0 || k.mv_size + vlen > max_size)
        return GW_ETOOBIG;
    if ((mrc = mdb_txn_begin(c->env, NULL, 0, &txn)) != 0)
        return cache_fail("mdb_txn_begin", "write", mrc);
    /* The same request stored again (two misses at once): replace it. */
    if ((mrc = mdb_get(txn, c->entries, &k, &v)) == 0)
        mrc = entry_del(c, txn, &k, &v);
    if (mrc != 0 && mrc != MDB_NOTFOUND)
        goto fail;
    for (;;) {
        MDB_val tk = {.mv_size = 1, .mv_data = "t"};
        struct gw_cache_count t = {0};
        if ((mrc = mdb_get(txn, c->meta, &tk, &v)) == 0 && v.mv_size == sizeof(t))
            memcpy(&t, v.mv_data, sizeof(t));
        if (t.bytes + k.mv_size + vlen <= max_size)
            break;
        if (nevicted == CACHE_EVICT_MAX) {
            mdb_txn_abort(txn);
            free(evicted);
            return GW_ETOOBIG;
        }
        if (evicted == NULL && (evicted = malloc(CACHE_EVICT_MAX * sizeof(*evicted))) == NULL) {
            mdb_txn_abort(txn);
            return GW_ENOMEM;
        }
        if ((mrc = evict_first(c, txn, 0, evicted[nevicted], sizeof(evicted[0]))) != 0) {
            if (mrc == MDB_NOTFOUND) { /* counts with no entries: start them again */
                mrc = mdb_drop(txn, c->meta, 0);
                if (mrc == 0)
                    continue;
            }
            goto fail;
        }
        nevicted++;
    }
    v.mv_size = vlen;
    if ((mrc = mdb_put(txn, c->entries, &k, &v, MDB_RESERVE)) != 0)
        goto fail;
    struct cache_rec rec = {
        .version = CACHE_REC_VERSION,
        .ctype_len = (uint32_t)ctype_len,
        .created_us = e->created_us,
        .expires_us = e->expires_us,
        .prompt_tokens = e->prompt_tokens,
        .completion_tokens = e->completion_tokens,
        .body_len = e->body_len,
    };
    memcpy(v.mv_data, &rec, sizeof(rec));
    if (ctype_len > 0)
        memcpy((char *)v.mv_data + sizeof(rec), e->ctype, ctype_len);
    if (e->body_len > 0)
        memcpy((char *)v.mv_data + sizeof(rec) + ctype_len, e->body, e->body_len);
    be64_put(ikey, (uint64_t)e->expires_us);
    memcpy(ikey + 8, key, k.mv_size);
    ik.mv_size = 8 + k.mv_size;
    ik.mv_data = ikey;
    v.mv_size = 0;
    v.mv_data = "";
    if ((mrc = mdb_put(txn, c->expiry, &ik, &v, 0)) != 0 ||
        (mrc = counts_move(txn, c->meta, model, 1, k.mv_size + vlen)) != 0)
        goto fail;
    mrc = mdb_txn_commit(txn);
    txn = NULL;
    if (mrc != 0)
        goto fail;
    for (int i = 0; i < nevicted && gone != NULL; i++)
        gone(ctx, evicted[i], false);
    free(evicted);
    return 0;
fail:
    if (txn != NULL)
        mdb_txn_abort(txn);
    free(evicted);
    /* A full disk fails every store: the answers go out all the same, and
     * the log gets one line a minute. */
    static struct gw_log_limit failing;
    gw_log_limited(&failing, GW_LOG_ERROR, "cache: store(%s): %s", model, mdb_strerror(mrc));
    return GW_ESTORE;
}

int
gw_cache_sweep(struct gw_cache *c, int64_t now_us, size_t max, gw_cache_gone_fn gone, void *ctx,
               size_t *removed)
{
    MDB_txn *txn;
    char model[GW_CACHE_MODEL_MAX + 1];
    size_t n = 0;
    int mrc;

    *removed = 0;
    if ((mrc = mdb_txn_begin(c->env, NULL, 0, &txn)) != 0)
        return cache_fail("mdb_txn_begin", "sweep", mrc);
    while (n < max && (mrc = evict_first(c, txn, now_us, model, sizeof(model))) == 0) {
        n++;
        if (gone != NULL)
            gone(ctx, model, true);
    }
    if (mrc != 0 && mrc != MDB_NOTFOUND) {
        mdb_txn_abort(txn);
        return cache_fail("sweep", c->dir, mrc);
    }
    if ((mrc = mdb_txn_commit(txn)) != 0)
        return cache_fail("mdb_txn_commit", "sweep", mrc);
    *removed = n;
    return 0;
}

int
gw_cache_purge(struct gw_cache *c, const char *model, size_t *removed)
{
    MDB_txn *txn = NULL;
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    size_t mlen = model != NULL ? strlen(model) : 0;
    int mrc;

    *removed = 0;
    if (model == NULL) {
        MDB_stat st;
        if ((mrc = mdb_txn_begin(c->env, NULL, 0, &txn)) != 0 ||
            (mrc = mdb_stat(txn, c->entries, &st)) != 0 ||
            (mrc = mdb_drop(txn, c->entries, 0)) != 0 || (mrc = mdb_drop(txn, c->expiry, 0)) != 0 ||
            (mrc = mdb_drop(txn, c->meta, 0)) != 0)
            goto fail;
        mrc = mdb_txn_commit(txn);
        txn = NULL;
        if (mrc != 0)
            goto fail;
        *removed = st.ms_entries;
        return 0;
    }
    if (mlen > GW_CACHE_MODEL_MAX)
        return 0;
    /* In batches: workers store between them. */
    for (;;) {
        size_t batch = 0;
        if ((mrc = mdb_txn_begin(c->env, NULL, 0, &txn)) != 0 ||
            (mrc = mdb_cursor_open(txn, c->entries, &cur)) != 0)
            goto fail;
        k.mv_size = mlen + 1;
        k.mv_data = (void *)model;
        for (mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); mrc == 0 && batch < 1000;
             mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE)) {
            if (k.mv_size <= mlen + 1 || memcmp(k.mv_data, model, mlen + 1) != 0) {
                mrc = MDB_NOTFOUND;
                break;
            }
            if ((mrc = entry_del(c, txn, &k, &v)) != 0)
                goto fail;
            batch++;
            k.mv_size = mlen + 1;
            k.mv_data = (void *)model;
        }
        mdb_cursor_close(cur);
        cur = NULL;
        if (mrc != 0 && mrc != MDB_NOTFOUND)
            goto fail;
        mrc = mdb_txn_commit(txn);
        txn = NULL;
        if (mrc != 0)
            goto fail;
        *removed += batch;
        if (batch < 1000)
            return 0;
    }
fail:
    if (cur != NULL)
        mdb_cursor_close(cur);
    if (txn != NULL)
        mdb_txn_abort(txn);
    return cache_fail("purge", model != NULL ? model : "all", mrc);
}

int
gw_cache_counts(struct gw_cache *c, gw_cache_count_fn fn, void *ctx)
{
    MDB_txn *txn;
    MDB_cursor *cur;
    MDB_val k, v;
    int mrc;

    if ((mrc = mdb_txn_begin(c->env, NULL, MDB_RDONLY, &txn)) != 0)
        return cache_fail("mdb_txn_begin", "counts", mrc);
    if ((mrc = mdb_cursor_open(txn, c->meta, &cur)) != 0) {
        mdb_txn_abort(txn);
        return cache_fail("mdb_cursor_open", "counts", mrc);
    }
    for (mrc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); mrc == 0;
         mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        struct gw_cache_count cnt;
        char name[GW_CACHE_MODEL_MAX + 3];
        if (v.mv_size != sizeof(cnt) || k.mv_size >= sizeof(name))
            continue;
        memcpy(&cnt, v.mv_data, sizeof(cnt));
        memcpy(name, k.mv_data, k.mv_size);
        name[k.mv_size] = '\0';
        if (strcmp(name, "t") == 0)
            fn(ctx, NULL, &cnt);
        else if (strncmp(name, "m:", 2) == 0)
            fn(ctx, name + 2, &cnt);
    }
    mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    return 0;
}
