/*
 * stats.c - usage statistics: the stored usage records of a time range,
 * filtered and grouped by key, model, target, status class or calendar
 * period, with their sums and averages.  The master computes them (it owns
 * the store and drains the ring first); aigwctl prints or exports the rows.
 *
 * The work is bounded: a range that holds more than STATS_MAX_RECORDS
 * records, or a grouping into more than STATS_MAX_GROUPS groups, is
 * refused with an error that says how to narrow it, because the master
 * serves nothing else while it scans.
 */
#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <json-c/json.h>

#include "master/master.h"

#define STATS_MAX_RECORDS 10000000
#define STATS_MAX_GROUPS 100000
/* Separates the dimension values inside a group key; values never hold it
 * (control characters are replaced when a value is copied in). */
#define STATS_SEP '\x1f'

static const char *const dim_names[GW_STATS_NDIMS] = {
    [GW_STATS_KEY] = "key",       [GW_STATS_MODEL] = "model", [GW_STATS_TARGET] = "target",
    [GW_STATS_STATUS] = "status", [GW_STATS_DAY] = "day",     [GW_STATS_MONTH] = "month",
    [GW_STATS_HOUR] = "hour",     [GW_STATS_BYOK] = "byok",
};

const char *
gw_master_stats_dim_name(int dim)
{
    return dim >= 0 && dim < GW_STATS_NDIMS ? dim_names[dim] : "?";
}

/* ------------------------------------------------------------- parsing */

static bool
digits(const char **p, int n, int *out)
{
    int v = 0;

    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)(*p)[i]))
            return false;
        v = v * 10 + ((*p)[i] - '0');
    }
    *p += n;
    *out = v;
    return true;
}

/* Days from 1970-01-01 to y-m-d in the proleptic Gregorian calendar. */
static int64_t
days_from_civil(int y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int
days_in_month(int y, int m)
{
    static const int mdays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;

    return m == 2 && leap ? 29 : mdays[m - 1];
}

int
gw_master_stats_time_parse(const char *s, int64_t *us)
{
    const char *p = s;
    int y, mo, d, h = 0, mi = 0, se = 0, off_s = 0;
    int64_t frac_us = 0;

    if (!digits(&p, 4, &y) || *p++ != '-' || !digits(&p, 2, &mo) || *p++ != '-' ||
        !digits(&p, 2, &d))
        return GW_EINVAL;
    if (*p == 'T' || *p == 't' || *p == ' ') {
        p++;
        if (!digits(&p, 2, &h) || *p++ != ':' || !digits(&p, 2, &mi))
            return GW_EINVAL;
        if (*p == ':') {
            p++;
            if (!digits(&p, 2, &se))
                return GW_EINVAL;
            if (*p == '.' || *p == ',') {
                int64_t scale = 100000;
                if (!isdigit((unsigned char)*++p))
                    return GW_EINVAL;
                for (; isdigit((unsigned char)*p); p++, scale /= 10)
                    frac_us += (*p - '0') * scale;
            }
        }
        if (*p == 'Z' || *p == 'z') {
            p++;
        } else if (*p == '+' || *p == '-') {
            int sign = *p++ == '-' ? -1 : 1, oh, om;
            if (!digits(&p, 2, &oh))
                return GW_EINVAL;
            if (*p == ':')
                p++;
            if (!digits(&p, 2, &om) || oh > 23 || om > 59)
                return GW_EINVAL;
            off_s = sign * (oh * 3600 + om * 60);
        }
    }
    if (*p != '\0' || y < 1970 || mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo) ||
        h > 23 || mi > 59 || se > 59)
        return GW_EINVAL;
    int64_t secs = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + se - off_s;
    *us = secs * 1000000 + frac_us;
    return 0;
}

int
gw_master_stats_dims_parse(const char *s, int *dims, size_t *n)
{
    const char *p = s;

    *n = 0;
    for (;;) {
        size_t len = strcspn(p, ",");
        int found = -1;
        for (int d = 0; d < GW_STATS_NDIMS; d++)
            if (strlen(dim_names[d]) == len && strncmp(p, dim_names[d], len) == 0)
                found = d;
        if (found < 0)
            return GW_EINVAL;
        for (size_t i = 0; i < *n; i++)
            if (dims[i] == found)
                return GW_EEXIST;
        dims[(*n)++] = found;
        if (p[len] == '\0')
            break;
        p += len + 1;
    }
    return 0;
}

/* --------------------------------------------------------- aggregation */

struct group {
    char *key; /* NULL: free slot */
    uint64_t hash;
    uint64_t requests, input_tokens, output_tokens, errors, duration_ms, ttfb_ms;
};

struct agg {
    const char *key, *model, *target; /* filters; NULL: any */
    int dims[GW_STATS_NDIMS];
    size_t ndims;
    struct group *slots; /* open addressing, cap a power of two */
    size_t cap, n;
    uint64_t scanned;
    struct group total;
    int why; /* GW_ENOMEM, or which bound was hit (1 records, 2 groups) */
};

/* Copy a fixed-size record field, NUL-terminated, control characters
 * (and so STATS_SEP) replaced. */
static void
field_copy(char *out, const char *in, size_t inlen)
{
    size_t i = 0;

    for (; i < inlen && in[i] != '\0'; i++)
        out[i] = (unsigned char)in[i] < 0x20 || in[i] == 0x7f ? '?' : in[i];
    out[i] = '\0';
}

#define FIELD(out, rec, f) field_copy(out, (rec)->f, sizeof((rec)->f))

static void
group_add(struct group *g, const struct gw_usage *rec)
{
    g->requests++;
    g->input_tokens += (uint64_t)(rec->input_tokens > 0 ? rec->input_tokens : 0);
    g->output_tokens += (uint64_t)(rec->output_tokens > 0 ? rec->output_tokens : 0);
    g->errors += rec->status >= 400;
    g->duration_ms += rec->duration_ms;
    g->ttfb_ms += rec->ttfb_ms;
}

static int
agg_grow(struct agg *ag)
{
    size_t cap = ag->cap ? ag->cap * 2 : 1024;
    struct group *slots = calloc(cap, sizeof(*slots));

    if (slots == NULL)
        return GW_ENOMEM;
    for (size_t i = 0; i < ag->cap; i++) {
        if (ag->slots[i].key == NULL)
            continue;
        size_t j = ag->slots[i].hash & (cap - 1);
        while (slots[j].key != NULL)
            j = (j + 1) & (cap - 1);
        slots[j] = ag->slots[i];
    }
    free(ag->slots);
    ag->slots = slots;
    ag->cap = cap;
    return 0;
}

static int
agg_record(const struct gw_usage *rec, void *ctx)
{
    struct agg *ag = ctx;
    char key_id[sizeof(rec->key_id) + 1], model[sizeof(rec->model) + 1];
    char target[sizeof(rec->target) + 1], k[512];
    size_t klen = 0;

    if (++ag->scanned > STATS_MAX_RECORDS) {
        ag->why = 1;
        return GW_ETOOBIG;
    }
    FIELD(key_id, rec, key_id);
    FIELD(model, rec, model);
    FIELD(target, rec, target);
    if ((ag->key != NULL && strcmp(ag->key, key_id) != 0) ||
        (ag->model != NULL && strcmp(ag->model, model) != 0) ||
        (ag->target != NULL && strcmp(ag->target, target) != 0))
        return 0;
    group_add(&ag->total, rec);

    time_t secs = (time_t)(rec->time_us / 1000000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    for (size_t i = 0; i < ag->ndims; i++) {
        char v[128];
        const char *val = v;
        switch (ag->dims[i]) {
        case GW_STATS_KEY: val = key_id; break;
        case GW_STATS_MODEL: val = model; break;
        case GW_STATS_TARGET: val = target; break;
        case GW_STATS_STATUS:
            if (rec->status >= 100 && rec->status <= 599)
                snprintf(v, sizeof(v), "%dxx", rec->status / 100);
            else
                snprintf(v, sizeof(v), "other");
            break;
        case GW_STATS_DAY: strftime(v, sizeof(v), "%Y-%m-%d", &tm); break;
        case GW_STATS_MONTH: strftime(v, sizeof(v), "%Y-%m", &tm); break;
        case GW_STATS_BYOK: val = rec->byok ? "yes" : "no"; break;
        default: /* GW_STATS_HOUR */ strftime(v, sizeof(v), "%Y-%m-%dT%H:00:00Z", &tm); break;
        }
        int w = snprintf(k + klen, sizeof(k) - klen, "%s%s", i ? "\x1f" : "", val);
        klen += (size_t)w < sizeof(k) - klen ? (size_t)w : sizeof(k) - klen - 1;
    }
    k[klen] = '\0';

    uint64_t hash = 14695981039346656037ULL;
    for (size_t i = 0; i < klen; i++)
        hash = (hash ^ (unsigned char)k[i]) * 1099511628211ULL;
    if (ag->n * 2 >= ag->cap && agg_grow(ag) != 0) {
        ag->why = GW_ENOMEM;
        return GW_ENOMEM;
    }
    size_t j = hash & (ag->cap - 1);
    while (ag->slots[j].key != NULL &&
           (ag->slots[j].hash != hash || strcmp(ag->slots[j].key, k) != 0))
        j = (j + 1) & (ag->cap - 1);
    struct group *g = &ag->slots[j];
    if (g->key == NULL) {
        if (ag->n >= STATS_MAX_GROUPS) {
            ag->why = 2;
            return GW_ETOOBIG;
        }
        if ((g->key = strdup(k)) == NULL) {
            ag->why = GW_ENOMEM;
            return GW_ENOMEM;
        }
        g->hash = hash;
        ag->n++;
    }
    group_add(g, rec);
    return 0;
}

static int
group_cmp(const void *a, const void *b)
{
    /* STATS_SEP sorts below every character a value holds, so this orders
     * by the first dimension, then the second, ... */
    return strcmp(((const struct group *)a)->key, ((const struct group *)b)->key);
}

/* An average to one decimal, serialized as such (not as 0.69999...). */
static struct json_object *
avg(uint64_t sum, uint64_t n)
{
    double v = n == 0 ? 0.0 : round((double)sum * 10.0 / (double)n) / 10.0;
    char text[32];

    snprintf(text, sizeof(text), "%.1f", v);
    return json_object_new_double_s(v, text);
}

static void
metrics_add(struct json_object *o, const struct group *g)
{
    json_object_object_add(o, "requests", json_object_new_int64((int64_t)g->requests));
    json_object_object_add(o, "input_tokens", json_object_new_int64((int64_t)g->input_tokens));
    json_object_object_add(o, "output_tokens", json_object_new_int64((int64_t)g->output_tokens));
    json_object_object_add(o, "errors", json_object_new_int64((int64_t)g->errors));
    json_object_object_add(o, "avg_duration_ms", avg(g->duration_ms, g->requests));
    json_object_object_add(o, "avg_ttfb_ms", avg(g->ttfb_ms, g->requests));
}

struct json_object *
gw_master_stats_usage(struct gw_master *m, struct json_object *req, struct gw_arena *a)
{
    struct agg ag = {0};
    struct json_object *o = NULL, *rows, *by;
    struct group *sorted = NULL;
    const char *from = gw_master_arg_string(req, "from"), *to = gw_master_arg_string(req, "to"),
               *dims = gw_master_arg_string(req, "by");
    int64_t from_us = 0, to_us = INT64_MAX;
    int rc;

    (void)a;
    if (from != NULL && gw_master_stats_time_parse(from, &from_us) != 0)
        return gw_master_reply_error("--from %s: expected YYYY-MM-DD or an ISO 8601 time such as "
                                     "2025-01-31T12:00:00Z",
                                     from);
    if (to != NULL && gw_master_stats_time_parse(to, &to_us) != 0)
        return gw_master_reply_error("--to %s: expected YYYY-MM-DD or an ISO 8601 time such as "
                                     "2025-01-31T12:00:00Z",
                                     to);
    if (dims != NULL && dims[0] != '\0' &&
        (rc = gw_master_stats_dims_parse(dims, ag.dims, &ag.ndims)) != 0)
        return gw_master_reply_error("--by %s: %s", dims,
                                     rc == GW_EEXIST
                                         ? "a dimension is named twice"
                                         : "dimensions are key, model, target, status, day, "
                                           "month, hour (comma-separated)");
    ag.key = gw_master_arg_string(req, "key");
    ag.model = gw_master_arg_string(req, "model");
    ag.target = gw_master_arg_string(req, "target");

    /* What workers accounted a moment ago is in the ring: store it first. */
    gw_master_usage_drain(m);
    rc = gw_store_usage_scan(m->store, from_us, to_us, agg_record, &ag);
    if (rc != 0) {
        if (ag.why == 1)
            o = gw_master_reply_error("the range holds more than %d usage records; narrow it with "
                                      "--from and --to",
                                      STATS_MAX_RECORDS);
        else if (ag.why == 2)
            o = gw_master_reply_error(
                "more than %d groups; group by fewer or coarser dimensions, or "
                "narrow the range",
                STATS_MAX_GROUPS);
        else
            o = gw_master_reply_error("could not read usage: %s", gw_strerror(rc));
        goto out;
    }

    if (ag.n > 0 && (sorted = malloc(ag.n * sizeof(*sorted))) == NULL) {
        o = gw_master_reply_error("could not read usage: %s", gw_strerror(GW_ENOMEM));
        goto out;
    }
    size_t n = 0;
    for (size_t i = 0; i < ag.cap; i++)
        if (ag.slots[i].key != NULL)
            sorted[n++] = ag.slots[i];
    if (n > 0)
        qsort(sorted, n, sizeof(*sorted), group_cmp);

    o = json_object_new_object();
    json_object_object_add(o, "ok", json_object_new_boolean(1));
    by = json_object_new_array();
    for (size_t i = 0; i < ag.ndims; i++)
        json_object_array_add(by, json_object_new_string(dim_names[ag.dims[i]]));
    json_object_object_add(o, "by", by);
    rows = json_object_new_array();
    for (size_t i = 0; i < n; i++) {
        struct json_object *row = json_object_new_object();
        const char *p = sorted[i].key;
        for (size_t d = 0; d < ag.ndims; d++) {
            size_t len = strcspn(p, "\x1f");
            json_object_object_add(row, dim_names[ag.dims[d]],
                                   json_object_new_string_len(p, (int)len));
            p += len + (p[len] != '\0');
        }
        metrics_add(row, &sorted[i]);
        json_object_array_add(rows, row);
    }
    json_object_object_add(o, "rows", rows);
    struct json_object *totals = json_object_new_object();
    metrics_add(totals, &ag.total);
    json_object_object_add(o, "totals", totals);

    /* The reply is one protocol line: say so rather than send one the
     * client refuses. */
    size_t len;
    json_object_to_json_string_length(o, JSON_C_TO_STRING_PLAIN, &len);
    if (len + 1 > GW_PROTO_MAX_LINE) {
        json_object_put(o);
        o = gw_master_reply_error("%zu rows do not fit in one reply; group by fewer or coarser "
                                  "dimensions, or narrow the range",
                                  n);
    }
out:
    free(sorted);
    for (size_t i = 0; i < ag.cap; i++)
        free(ag.slots[i].key);
    free(ag.slots);
    return o;
}
