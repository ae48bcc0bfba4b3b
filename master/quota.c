/*
 * quota.c - the quota commands (aigwctl quota set|show|clear), seeding a
 * quota's shm counter from the usage already stored, and the alerts.
 *
 * A quota is stored in LMDB under "SCOPE|PERIOD" ("tenant:acme|month");
 * workers check it against its counter in shm (worker/quota.c).  When a
 * quota is set, or the master starts on a fresh segment (after a reboot),
 * the counter is filled from the usage records of the current period, so
 * a quota set in the middle of a month counts what the month has used.
 *
 * Alerts: once a second the master compares each quota that has an
 * alert threshold with its counter; the first time in a period that the
 * threshold is crossed it logs a warning and, when quotas.webhook is set,
 * POSTs a JSON description there from a short-lived child process.  The
 * period alerted is stored with the quota, so a restart does not alert
 * twice.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <json-c/json.h>

#include "master/master.h"

#define QUOTA_MAX 1000000000000000LL /* 10^15: more than any bill */

/* --period: day, month or total; month when absent. */
static int
quota_period(struct json_object *req, struct json_object **err)
{
    const char *s = gw_master_arg_string(req, "period");
    int p = s == NULL ? GW_QUOTA_MONTH : gw_quota_period_parse(s);

    if (p < 0)
        *err = gw_master_reply_error("--period %s: expected day, month or total", s);
    return p;
}

/* A whole-number argument from 0 to max; -2 when absent, -3 when bad. */
static int64_t
count_arg(struct json_object *req, const char *name, int64_t max)
{
    struct json_object *v;

    if (!json_object_object_get_ex(req, name, &v))
        return -2;
    if (!json_object_is_type(v, json_type_int) || json_object_get_int64(v) < 0 ||
        json_object_get_int64(v) > max)
        return -3;
    return json_object_get_int64(v);
}

/* The key id -> owner and tenant map, for usage records of user and
 * tenant scopes. */
struct key_map {
    struct gw_key **keys;
    size_t n;
};

static bool
record_in_scope(const struct gw_usage *rec, const char *scope, const struct key_map *km)
{
    const char *colon = strchr(scope, ':'), *id = colon + 1;

    if (strncmp(scope, "key:", 4) == 0)
        return strcmp(rec->key_id, id) == 0;
    if (strncmp(scope, "model:", 6) == 0)
        return strcmp(rec->model, id) == 0;
    const char *rv = scope[0] == 'u' ? rec->user : rec->tenant;
    if (rv[0] != '\0')
        return strcmp(rv, id) == 0;
    /* A record stored before records named their user: by its key. */
    for (size_t i = 0; i < km->n; i++) {
        if (strcmp(km->keys[i]->id, rec->key_id) != 0)
            continue;
        const char *v = scope[0] == 'u' ? km->keys[i]->owner : km->keys[i]->tenant;
        return v != NULL && strcmp(v, id) == 0;
    }
    return false;
}

struct seed {
    const char *scope;
    const struct key_map *km;
    int64_t tokens, calls;
};

static int
seed_one(const struct gw_usage *rec, void *ctx)
{
    struct seed *s = ctx;

    if (!record_in_scope(rec, s->scope, s->km))
        return 0;
    s->tokens += rec->input_tokens + rec->output_tokens;
    /* As the workers count: a call is one that did not fail. */
    if (rec->status > 0 && rec->status < 400)
        s->calls++;
    return 0;
}

/*
 * Fill the counter of q from the stored usage of its current period.  The
 * ring is drained first, so the count is exact but for requests still in
 * flight, which the workers add when they end.
 */
static int
quota_seed(struct gw_master *m, const struct gw_quota *q, const struct key_map *km)
{
    int64_t now = time(NULL);
    struct seed s = {.scope = q->scope, .km = km};
    struct gw_shm_quota *c;
    char name[GW_SHM_NAME_LEN + 8];
    int rc;

    if (!gw_quota_name(q, name, sizeof(name)) ||
        (c = gw_shm_quota_get(&m->shm, name, true)) == NULL) {
        gw_log(GW_LOG_ERROR, "quota %s: the shared-memory quota table is full", q->scope);
        return GW_ETOOBIG;
    }
    rc = gw_store_usage_scan(m->store, gw_quota_period_start(q->period, now) * 1000000, INT64_MAX,
                             false, seed_one, &s);
    if (rc != 0)
        return rc;
    atomic_store(&c->period, gw_quota_period_id(q->period, now));
    atomic_store(&c->tokens, s.tokens);
    atomic_store(&c->calls, s.calls);
    return 0;
}

static int
key_map_load(struct gw_master *m, struct gw_arena *a, struct key_map *km)
{
    return gw_store_key_list(m->store, a, &km->keys, &km->n);
}

int
gw_master_quota_seed_all(struct gw_master *m)
{
    struct gw_arena *a = gw_arena_create(4096);
    struct key_map km = {0};
    char **json;
    size_t n;
    int rc;

    if (a == NULL)
        return GW_ENOMEM;
    gw_master_usage_drain(m);
    if ((rc = gw_store_rec_list(m->store, GW_DB_QUOTAS, false, 0, a, &json, &n)) == 0 && n > 0 &&
        (rc = key_map_load(m, a, &km)) == 0) {
        for (size_t i = 0; i < n; i++) {
            struct gw_quota q;
            if (gw_quota_decode(json[i], &q) == 0 && quota_seed(m, &q, &km) != 0)
                gw_log(GW_LOG_WARN, "quota %s: could not count its usage so far", q.scope);
        }
        gw_log(GW_LOG_INFO, "quotas: %zu counted from the stored usage", n);
    }
    gw_arena_destroy(a);
    return rc;
}

/* What q has used in the current period, from its counter. */
static void
quota_used(struct gw_master *m, const struct gw_quota *q, int64_t now, int64_t *tokens,
           int64_t *calls)
{
    char name[GW_SHM_NAME_LEN + 8];
    struct gw_shm_quota *c =
        gw_quota_name(q, name, sizeof(name)) ? gw_shm_quota_get(&m->shm, name, false) : NULL;

    *tokens = *calls = 0;
    if (c != NULL && atomic_load(&c->period) == gw_quota_period_id(q->period, now)) {
        *tokens = atomic_load(&c->tokens);
        *calls = atomic_load(&c->calls);
    }
}

static void
add_limit(struct json_object *o, const char *what, int64_t limit, int64_t used)
{
    struct json_object *d;

    if (limit < 0)
        return;
    d = json_object_new_object();
    json_object_object_add(d, "limit", json_object_new_int64(limit));
    json_object_object_add(d, "used", json_object_new_int64(used));
    json_object_object_add(d, "remaining", json_object_new_int64(used < limit ? limit - used : 0));
    json_object_object_add(o, what, d);
}

static struct json_object *
quota_json(struct gw_master *m, const struct gw_quota *q)
{
    struct json_object *o = json_object_new_object();
    int64_t now = time(NULL), tokens, calls, end = gw_quota_period_end(q->period, now);

    quota_used(m, q, now, &tokens, &calls);
    json_object_object_add(o, "scope", json_object_new_string(q->scope));
    json_object_object_add(o, "period", json_object_new_string(gw_quota_period_names[q->period]));
    add_limit(o, "tokens", q->tokens, tokens);
    add_limit(o, "calls", q->calls, calls);
    if (q->alert_pct > 0)
        json_object_object_add(o, "alert_at", json_object_new_int64(q->alert_pct));
    json_object_object_add(o, "resets", end > 0 ? json_object_new_int64(end) : NULL);
    return o;
}

/* Workers cache the quotas with the keys: this makes them read again. */
static void
quotas_changed(struct gw_master *m)
{
    atomic_fetch_add(&m->shm.hdr->keys_generation, 1);
}

struct json_object *
gw_master_quota_set(struct gw_master *m, struct json_object *req, struct gw_arena *a)
{
    struct json_object *err = NULL, *o;
    const char *scope = gw_master_scope_arg(m, req, a, true, &err);
    struct gw_quota q = {0}, old;
    char name[GW_SHM_NAME_LEN + 8], *json;
    struct key_map km = {0};
    int rc, period;

    if (scope == NULL || (period = quota_period(req, &err)) < 0)
        return err;
    snprintf(q.scope, sizeof(q.scope), "%s", scope);
    q.period = (enum gw_quota_period)period;
    q.tokens = count_arg(req, "tokens", QUOTA_MAX);
    q.calls = count_arg(req, "calls", QUOTA_MAX);
    int64_t alert = count_arg(req, "alert_at", 100);
    if (q.tokens == -3 || q.calls == -3)
        return gw_master_reply_error("--tokens and --calls take a whole number from 0 to %lld",
                                     QUOTA_MAX);
    if (alert == -3 || alert == 0)
        return gw_master_reply_error("--alert-at takes a percentage from 1 to 100");
    gw_quota_name(&q, name, sizeof(name));
    /* What is not given keeps what an earlier set gave it. */
    rc = gw_store_rec_get(m->store, GW_DB_QUOTAS, name, a, &json);
    if (rc == 0 && gw_quota_decode(json, &old) == 0) {
        if (q.tokens == -2)
            q.tokens = old.tokens;
        if (q.calls == -2)
            q.calls = old.calls;
        if (alert == -2)
            alert = old.alert_pct;
        q.alerted = old.alerted;
    } else if (rc != 0 && rc != GW_ENOENT) {
        return gw_master_reply_error("could not read quota %s: %s", name, gw_strerror(rc));
    }
    q.tokens = q.tokens < 0 ? -1 : q.tokens;
    q.calls = q.calls < 0 ? -1 : q.calls;
    q.alert_pct = alert < 0 ? 0 : (int32_t)alert;
    if (q.tokens < 0 && q.calls < 0)
        return gw_master_reply_error("give --tokens N, --calls N or both");

    o = gw_quota_encode(&q);
    rc = gw_store_rec_put(m->store, GW_DB_QUOTAS, name,
                          json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN), false);
    json_object_put(o);
    if (rc != 0)
        return gw_master_reply_error("could not store quota %s: %s", name, gw_strerror(rc));
    gw_master_usage_drain(m);
    if ((rc = key_map_load(m, a, &km)) != 0 || (rc = quota_seed(m, &q, &km)) != 0)
        gw_log(GW_LOG_WARN, "quota %s: could not count its usage so far: %s", name,
               gw_strerror(rc));
    quotas_changed(m);
    gw_log(GW_LOG_INFO, "quota %s set", name);
    o = gw_master_reply_ok();
    json_object_object_add(o, "quota", quota_json(m, &q));
    return o;
}

struct json_object *
gw_master_quota_show(struct gw_master *m, struct json_object *req, struct gw_arena *a)
{
    struct json_object *err = NULL, *arr, *o;
    const char *scope = NULL;
    char **json;
    size_t n;
    int rc;

    if ((gw_master_arg_string(req, "tenant") != NULL || gw_master_arg_string(req, "user") != NULL ||
         gw_master_arg_string(req, "key") != NULL || gw_master_arg_string(req, "model") != NULL) &&
        (scope = gw_master_scope_arg(m, req, a, false, &err)) == NULL)
        return err;
    if ((rc = gw_store_rec_list(m->store, GW_DB_QUOTAS, false, 0, a, &json, &n)) != 0)
        return gw_master_reply_error("could not list quotas: %s", gw_strerror(rc));
    arr = json_object_new_array();
    for (size_t i = 0; i < n; i++) {
        struct gw_quota q;
        if (gw_quota_decode(json[i], &q) != 0 || (scope != NULL && strcmp(q.scope, scope) != 0))
            continue;
        json_object_array_add(arr, quota_json(m, &q));
    }
    o = gw_master_reply_ok();
    json_object_object_add(o, "quotas", arr);
    return o;
}

struct json_object *
gw_master_quota_clear(struct gw_master *m, struct json_object *req, struct gw_arena *a)
{
    struct json_object *err = NULL;
    /* A deleted key or tenant may still have a quota to clear. */
    const char *scope = gw_master_scope_arg(m, req, a, false, &err);
    int cleared = 0, rc;

    if (scope == NULL)
        return err;
    bool one = gw_master_arg_string(req, "period") != NULL;
    int period = one ? quota_period(req, &err) : 0;
    if (period < 0)
        return err;
    for (int p = 0; p < GW_QUOTA_NPERIODS; p++) {
        if (one && p != period)
            continue;
        const char *name = gw_arena_printf(a, "%s|%s", scope, gw_quota_period_names[p]);
        if ((rc = gw_store_rec_del(m->store, GW_DB_QUOTAS, name)) == 0)
            cleared++;
        else if (rc != GW_ENOENT)
            return gw_master_reply_error("could not clear quota %s: %s", name, gw_strerror(rc));
    }
    if (cleared == 0)
        return gw_master_reply_error("%s has no %s%squota", scope,
                                     one ? gw_quota_period_names[period] : "", one ? " " : "");
    quotas_changed(m);
    gw_log(GW_LOG_INFO, "quotas of %s cleared (%d)", scope, cleared);
    struct json_object *o = gw_master_reply_ok();
    json_object_object_add(o, "cleared", json_object_new_int(cleared));
    return o;
}

/* ----------------------------------------------------------------- alerts */

/* POST body to url from a child, so the master never waits on it. */
static void
webhook_post(struct gw_master *m, const char *body)
{
    const char *url = m->cfg->quota_webhook;
    long timeout = m->cfg->quota_webhook_timeout_ms;
    pid_t pid = fork();

    if (pid < 0) {
        gw_log(GW_LOG_ERROR, "quota webhook: fork: %s", strerror(errno));
        return;
    }
    if (pid > 0)
        return; /* reaped with the workers (gw_master_pool_reap) */
    CURL *c = curl_easy_init();
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    long status = 0;
    CURLcode cc = CURLE_FAILED_INIT;
    if (c != NULL) {
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout);
        curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
        cc = curl_easy_perform(c);
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    }
    if (cc != CURLE_OK)
        gw_log(GW_LOG_WARN, "quota webhook %s: %s", url, curl_easy_strerror(cc));
    else if (status >= 300)
        gw_log(GW_LOG_WARN, "quota webhook %s answered %ld", url, status);
    _exit(cc == CURLE_OK && status < 300 ? 0 : 1);
}

/* Alert q when it crossed its threshold in this period for the first
 * time: log, webhook, and remember the period. */
static void
quota_alert_check(struct gw_master *m, struct gw_quota *q, const char *name, int64_t now)
{
    int64_t tokens, calls, period = gw_quota_period_id(q->period, now);
    double pt, pc, pct;

    if (q->alert_pct <= 0 || q->alerted == period)
        return;
    quota_used(m, q, now, &tokens, &calls);
    pt = q->tokens > 0 ? 100.0 * (double)tokens / (double)q->tokens : q->tokens == 0 ? 100 : 0;
    pc = q->calls > 0 ? 100.0 * (double)calls / (double)q->calls : q->calls == 0 ? 100 : 0;
    pct = pt > pc ? pt : pc;
    if (pct < q->alert_pct)
        return;
    q->alerted = period;
    struct json_object *o = gw_quota_encode(q);
    if (gw_store_rec_put(m->store, GW_DB_QUOTAS, name,
                         json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN), false) != 0)
        gw_log(GW_LOG_ERROR, "quota %s: could not record its alert", name);
    json_object_put(o);

    gw_log(GW_LOG_WARN,
           "quota %s at %.0f%% (alert at %d%%): %" PRId64 " tokens, %" PRId64 " calls used", name,
           pct, q->alert_pct, tokens, calls);
    if (m->cfg->quota_webhook == NULL)
        return;
    struct json_object *e = quota_json(m, q);
    json_object_object_add(e, "event", json_object_new_string("quota.threshold"));
    json_object_object_add(e, "percent", json_object_new_double(pct));
    json_object_object_add(e, "time", json_object_new_int64(now));
    webhook_post(m, json_object_to_json_string_ext(e, JSON_C_TO_STRING_PLAIN));
    json_object_put(e);
}

void
gw_master_quota_tick(struct gw_master *m)
{
    struct gw_arena *a = gw_arena_create(4096);
    int64_t now = time(NULL);
    char **json;
    size_t n;

    if (a == NULL)
        return;
    if (gw_store_rec_list(m->store, GW_DB_QUOTAS, false, 0, a, &json, &n) == 0) {
        for (size_t i = 0; i < n; i++) {
            struct gw_quota q;
            char name[GW_SHM_NAME_LEN + 8];
            if (gw_quota_decode(json[i], &q) == 0 && gw_quota_name(&q, name, sizeof(name)))
                quota_alert_check(m, &q, name, now);
        }
    }
    gw_arena_destroy(a);
}
