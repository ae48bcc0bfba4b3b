/*
 * quota.c - quota periods, the stored form of a quota, and the usage
 * counters of quotas in shared memory.
 *
 * A counter holds the tokens and calls of one quota's scope in one period
 * and the number of that period.  Whoever first sees that the period has
 * moved on (a new UTC day or month) moves the counter on with a
 * compare-and-swap and zeroes it; nobody waits for anybody.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <json-c/json.h>

#include "shm/shm.h"

const char *const gw_quota_period_names[GW_QUOTA_NPERIODS] = {"day", "month", "total"};

int
gw_quota_period_parse(const char *s)
{
    for (int i = 0; s != NULL && i < GW_QUOTA_NPERIODS; i++)
        if (strcmp(s, gw_quota_period_names[i]) == 0)
            return i;
    return -1;
}

int64_t
gw_quota_period_id(enum gw_quota_period p, int64_t t)
{
    time_t tt = (time_t)t;
    struct tm tm;

    switch (p) {
    case GW_QUOTA_DAY: return (t >= 0 ? t / 86400 : (t - 86399) / 86400) + 1;
    case GW_QUOTA_MONTH: gmtime_r(&tt, &tm); return (int64_t)(tm.tm_year - 70) * 12 + tm.tm_mon + 1;
    default: return 1;
    }
}

int64_t
gw_quota_period_start(enum gw_quota_period p, int64_t t)
{
    time_t tt = (time_t)t;
    struct tm tm;

    switch (p) {
    case GW_QUOTA_DAY: return (gw_quota_period_id(p, t) - 1) * 86400;
    case GW_QUOTA_MONTH:
        gmtime_r(&tt, &tm);
        tm.tm_mday = 1;
        tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
        return (int64_t)timegm(&tm);
    default: return 0;
    }
}

int64_t
gw_quota_period_end(enum gw_quota_period p, int64_t t)
{
    time_t tt = (time_t)t;
    struct tm tm;

    switch (p) {
    case GW_QUOTA_DAY: return gw_quota_period_id(p, t) * 86400;
    case GW_QUOTA_MONTH:
        gmtime_r(&tt, &tm);
        tm.tm_mday = 1;
        tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
        tm.tm_mon++; /* timegm carries December over into January */
        return (int64_t)timegm(&tm);
    default: return 0;
    }
}

bool
gw_quota_name(const struct gw_quota *q, char *out, size_t len)
{
    int n = snprintf(out, len, "%s|%s", q->scope, gw_quota_period_names[q->period]);

    return n > 0 && (size_t)n < len;
}

static int64_t
int_field(struct json_object *o, const char *name, int64_t absent)
{
    struct json_object *v;

    if (!json_object_object_get_ex(o, name, &v) || !json_object_is_type(v, json_type_int))
        return absent;
    return json_object_get_int64(v);
}

int
gw_quota_decode(const char *json, struct gw_quota *out)
{
    struct json_object *o = json_tokener_parse(json), *v;
    int rc = GW_EINVAL;

    memset(out, 0, sizeof(*out));
    if (o == NULL || !json_object_is_type(o, json_type_object))
        goto out;
    if (!json_object_object_get_ex(o, "scope", &v) || !json_object_is_type(v, json_type_string) ||
        (size_t)json_object_get_string_len(v) >= sizeof(out->scope))
        goto out;
    snprintf(out->scope, sizeof(out->scope), "%s", json_object_get_string(v));
    int p = json_object_object_get_ex(o, "period", &v)
                ? gw_quota_period_parse(json_object_get_string(v))
                : -1;
    if (p < 0)
        goto out;
    out->period = (enum gw_quota_period)p;
    out->tokens = int_field(o, "tokens", -1);
    out->calls = int_field(o, "calls", -1);
    out->alert_pct = (int32_t)int_field(o, "alert_at", 0);
    out->alerted = int_field(o, "alerted", 0);
    rc = 0;
out:
    json_object_put(o);
    return rc;
}

struct json_object *
gw_quota_encode(const struct gw_quota *q)
{
    struct json_object *o = json_object_new_object();

    json_object_object_add(o, "scope", json_object_new_string(q->scope));
    json_object_object_add(o, "period", json_object_new_string(gw_quota_period_names[q->period]));
    if (q->tokens >= 0)
        json_object_object_add(o, "tokens", json_object_new_int64(q->tokens));
    if (q->calls >= 0)
        json_object_object_add(o, "calls", json_object_new_int64(q->calls));
    if (q->alert_pct > 0)
        json_object_object_add(o, "alert_at", json_object_new_int64(q->alert_pct));
    if (q->alerted > 0)
        json_object_object_add(o, "alerted", json_object_new_int64(q->alerted));
    return o;
}

static void
quota_init(void *entry)
{
    struct gw_shm_quota *q = entry;

    atomic_store(&q->period, 0);
    atomic_store(&q->tokens, 0);
    atomic_store(&q->calls, 0);
}

struct gw_shm_quota *
gw_shm_quota_get(const struct gw_shm *shm, const char *name, bool create)
{
    struct gw_shm_header *h = shm->hdr;
    struct gw_shm_quota *t = (struct gw_shm_quota *)((char *)h + h->quotas_off);
    long i = gw_shm_named_find(t, sizeof(*t), h->nquotas, name, create, quota_init);

    return i < 0 ? NULL : &t[i];
}

void
gw_shm_quota_roll(struct gw_shm_quota *q, int64_t period)
{
    int64_t cur = atomic_load(&q->period);

    /* The winner zeroes; what another worker adds between the swap and
     * the zeroing is lost to the new period, a few requests at most. */
    while (cur < period) {
        if (atomic_compare_exchange_weak(&q->period, &cur, period)) {
            atomic_store(&q->tokens, 0);
            atomic_store(&q->calls, 0);
            return;
        }
    }
}
