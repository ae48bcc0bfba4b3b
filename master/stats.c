/*
 * stats.c - usage statistics: the stored usage records of a time range,
 * filtered and grouped by key, user, tenant, model, target, status class
 * or calendar period, with their sums and averages (usage.stats), and the
 * records themselves, newest first (usage.detail).  The master computes
 * them (it owns the store and drains the ring first); aigwctl prints or
 * exports the rows.
 *
 * Detail records are kept for usage.detail_days; before the time the
 * store says they were pruned, statistics come from the daily aggregates
 * written with each record, so grouping by day, month or anything but the
 * hour still answers for old periods, in whole UTC days.
 *
 * A scope narrows everything to what a caller who is not a gateway admin
 * may see: the records of keys they own and of models they hold a grant
 * on.  The master applies it; the client's word is never taken.
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
/* usage.detail answers at most this many records per request. */
#define DETAIL_PAGE_MAX 1000
#define DAY_US (86400LL * 1000000)

static const char *const dim_names[GW_STATS_NDIMS] = {
    [GW_STATS_KEY] = "key",
    [GW_STATS_USER] = "user",
    [GW_STATS_TENANT] = "tenant",
    [GW_STATS_MODEL] = "model",
    [GW_STATS_TARGET] = "target",
    [GW_STATS_STATUS] = "status",
    [GW_STATS_DAY] = "day",
    [GW_STATS_MONTH] = "month",
    [GW_STATS_HOUR] = "hour",
    [GW_STATS_BYOK] = "byok",
    [GW_STATS_CAPABILITY] = "capability",
    [GW_STATS_TIER] = "tier",
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
gw_master_stats_when_parse(const char *s, int64_t now_us, int64_t *us)
{
    static const struct {
        char unit;
        int64_t seconds;
    } units[] = {{'s', 1}, {'m', 60}, {'h', 3600}, {'d', 86400}, {'w', 7 * 86400}};
    const char *p = s;
    int64_t n = 0;

    if (strcmp(s, "now") == 0) {
        *us = now_us;
        return 0;
    }
    if (!isdigit((unsigned char)*p))
        return GW_EINVAL;
    for (; isdigit((unsigned char)*p); p++) {
        n = n * 10 + (*p - '0');
        if (n > 100LL * 366 * 86400)
            return gw_master_stats_time_parse(s, us); /* a date, or nothing */
    }
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
        if (p[0] == units[i].unit && p[1] == '\0' && p - s <= 9) {
            *us = now_us - n * units[i].seconds * 1000000;
            return 0;
        }
    return gw_master_stats_time_parse(s, us);
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
    struct gw_usage_sums sums;
};

/* The filters of a request, and the caller's scope. */
struct filter {
    const char *key, *user, *tenant, *model, *target; /* NULL: any */
    const struct gw_stats_scope *scope;               /* NULL: everything */
};

struct agg {
    struct filter f;
    int dims[GW_STATS_NDIMS];
    size_t ndims;
    struct group *slots; /* open addressing, cap a power of two */
    size_t cap, n;
    uint64_t scanned;
    struct gw_usage_sums total;
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

/* A record's text fields, NUL-terminated and clean. */
struct fields {
    char key_id[sizeof(((struct gw_usage *)0)->key_id) + 1];
    char user[sizeof(((struct gw_usage *)0)->user) + 1];
    char tenant[sizeof(((struct gw_usage *)0)->tenant) + 1];
    char model[sizeof(((struct gw_usage *)0)->model) + 1];
    char target[sizeof(((struct gw_usage *)0)->target) + 1];
    char request_id[sizeof(((struct gw_usage *)0)->request_id) + 1];
    char tier[sizeof(((struct gw_usage *)0)->tier) + 1];
};

#define FIELD(out, rec, f) field_copy((out)->f, (rec)->f, sizeof((rec)->f))

static void
fields_get(struct fields *fl, const struct gw_usage *rec)
{
    FIELD(fl, rec, key_id);
    FIELD(fl, rec, user);
    FIELD(fl, rec, tenant);
    FIELD(fl, rec, model);
    FIELD(fl, rec, target);
    FIELD(fl, rec, request_id);
    FIELD(fl, rec, tier);
}

/* A record's capability by name; records older than capabilities were
 * text (chat or embeddings: their tokens tell). */
static const char *
capability_name(const struct gw_usage *rec)
{
    if (rec->capability == GW_CAP_NONE || rec->capability >= GW_CAP_COUNT)
        return "text";
    return gw_usage_capability_names[rec->capability];
}

static bool
in_names(char *const *names, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(names[i], s) == 0)
            return true;
    return false;
}

/* Does the record pass the filters, and may the caller see it? */
static bool
filter_pass(const struct filter *f, const struct fields *fl)
{
    if ((f->key != NULL && strcmp(f->key, fl->key_id) != 0) ||
        (f->user != NULL && strcmp(f->user, fl->user) != 0) ||
        (f->tenant != NULL && strcmp(f->tenant, fl->tenant) != 0) ||
        (f->model != NULL && strcmp(f->model, fl->model) != 0) ||
        (f->target != NULL && strcmp(f->target, fl->target) != 0))
        return false;
    const struct gw_stats_scope *sc = f->scope;
    return sc == NULL || (fl->user[0] != '\0' && strcmp(fl->user, sc->user) == 0) ||
           in_names(sc->keys, sc->nkeys, fl->key_id) ||
           in_names(sc->models, sc->nmodels, fl->model);
}

static void
sums_add(struct gw_usage_sums *to, const struct gw_usage_sums *s)
{
    to->requests += s->requests;
    to->errors += s->errors;
    to->input_tokens += s->input_tokens;
    to->output_tokens += s->output_tokens;
    to->cached += s->cached;
    to->duration_ms += s->duration_ms;
    to->ttfb_ms += s->ttfb_ms;
    to->cost_nano += s->cost_nano;
    to->audio_ms += s->audio_ms;
    to->characters += s->characters;
    to->images += s->images;
    to->videos += s->videos;
}

static void
sums_of(struct gw_usage_sums *s, const struct gw_usage *rec)
{
    memset(s, 0, sizeof(*s));
    s->requests = 1;
    s->errors = rec->status >= 400;
    s->input_tokens = (uint64_t)(rec->input_tokens > 0 ? rec->input_tokens : 0);
    s->output_tokens = (uint64_t)(rec->output_tokens > 0 ? rec->output_tokens : 0);
    s->cached = rec->cached != 0;
    s->duration_ms = rec->duration_ms;
    s->ttfb_ms = rec->ttfb_ms;
    s->cost_nano = rec->cost_nano;
    uint64_t units = (uint64_t)(rec->units > 0 ? rec->units : 0);
    if (rec->capability == GW_CAP_TRANSCRIPTION)
        s->audio_ms = units;
    else if (rec->capability == GW_CAP_SPEECH)
        s->characters = units;
    else if (rec->capability == GW_CAP_IMAGES)
        s->images = units;
    else if (rec->capability == GW_CAP_VIDEO)
        s->videos = units;
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

/* Add sums to the group of rec's dimensions (rec: a record, or the
 * dimensions of a daily aggregate). */
static int
agg_add(struct agg *ag, const struct gw_usage *rec, const struct gw_usage_sums *sums)
{
    struct fields fl;
    char k[1024];
    size_t klen = 0;

    if (++ag->scanned > STATS_MAX_RECORDS) {
        ag->why = 1;
        return GW_ETOOBIG;
    }
    fields_get(&fl, rec);
    if (!filter_pass(&ag->f, &fl))
        return 0;
    sums_add(&ag->total, sums);

    time_t secs = (time_t)(rec->time_us / 1000000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    for (size_t i = 0; i < ag->ndims; i++) {
        char v[128];
        const char *val = v;
        switch (ag->dims[i]) {
        case GW_STATS_KEY: val = fl.key_id; break;
        case GW_STATS_USER: val = fl.user; break;
        case GW_STATS_TENANT: val = fl.tenant; break;
        case GW_STATS_MODEL: val = fl.model; break;
        case GW_STATS_TARGET: val = fl.target; break;
        case GW_STATS_STATUS:
            if (rec->status >= 100 && rec->status <= 599)
                snprintf(v, sizeof(v), "%dxx", rec->status / 100);
            else
                snprintf(v, sizeof(v), "other");
            break;
        case GW_STATS_DAY: strftime(v, sizeof(v), "%Y-%m-%d", &tm); break;
        case GW_STATS_MONTH: strftime(v, sizeof(v), "%Y-%m", &tm); break;
        case GW_STATS_BYOK: val = rec->byok ? "yes" : "no"; break;
        case GW_STATS_CAPABILITY: val = capability_name(rec); break;
        case GW_STATS_TIER: val = fl.tier; break;
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
    sums_add(&g->sums, sums);
    return 0;
}

static int
agg_record(const struct gw_usage *rec, void *ctx)
{
    struct gw_usage_sums one;

    sums_of(&one, rec);
    return agg_add(ctx, rec, &one);
}

static int
agg_daily(const struct gw_usage *dims, const struct gw_usage_sums *sums, void *ctx)
{
    return agg_add(ctx, dims, sums);
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

/* A cost in 1e-9 units as a number with six decimals. */
static struct json_object *
cost_json(int64_t nano)
{
    char text[48];

    snprintf(text, sizeof(text), "%s%lld.%06lld", nano < 0 ? "-" : "",
             (long long)(llabs(nano) / 1000000000), (long long)(llabs(nano) / 1000 % 1000000));
    return json_object_new_double_s((double)nano / 1e9, text);
}

/* Milliseconds as seconds with three decimals. */
static struct json_object *
seconds_json(uint64_t ms)
{
    char text[32];

    snprintf(text, sizeof(text), "%llu.%03llu", (unsigned long long)(ms / 1000),
             (unsigned long long)(ms % 1000));
    return json_object_new_double_s((double)ms / 1000.0, text);
}

static void
metrics_add(struct json_object *o, const struct gw_usage_sums *g)
{
    json_object_object_add(o, "requests", json_object_new_int64((int64_t)g->requests));
    json_object_object_add(o, "errors", json_object_new_int64((int64_t)g->errors));
    json_object_object_add(o, "input_tokens", json_object_new_int64((int64_t)g->input_tokens));
    json_object_object_add(o, "output_tokens", json_object_new_int64((int64_t)g->output_tokens));
    json_object_object_add(o, "cached", json_object_new_int64((int64_t)g->cached));
    json_object_object_add(o, "cost", cost_json(g->cost_nano));
    json_object_object_add(o, "avg_duration_ms", avg(g->duration_ms, g->requests));
    json_object_object_add(o, "avg_ttfb_ms", avg(g->ttfb_ms, g->requests));
    json_object_object_add(o, "audio_seconds", seconds_json(g->audio_ms));
    json_object_object_add(o, "characters", json_object_new_int64((int64_t)g->characters));
    json_object_object_add(o, "images", json_object_new_int64((int64_t)g->images));
    json_object_object_add(o, "videos", json_object_new_int64((int64_t)g->videos));
}

/*
 * The time range and filters every usage command takes: since (or from)
 * and until (or to), absolute or relative; key, user, tenant, model,
 * target.  NULL, or an error reply (owned by the caller).
 */
static struct json_object *
range_parse(struct json_object *req, int64_t *from_us, int64_t *to_us, struct filter *f)
{
    static const char *const names[2][2] = {{"since", "from"}, {"until", "to"}};
    int64_t *out[2] = {from_us, to_us};
    int64_t now = gw_wall_us();
    *from_us = 0;
    *to_us = INT64_MAX;
    for (int i = 0; i < 2; i++) {
        for (int j = 0; j < 2; j++) {
            const char *v = gw_master_arg_string(req, names[i][j]);
            if (v == NULL)
                continue;
            if (gw_master_stats_when_parse(v, now, out[i]) != 0)
                return gw_master_reply_error(
                    "--%s %s: expected YYYY-MM-DD, an ISO 8601 time such as "
                    "2025-01-31T12:00:00Z, or a time ago such as 24h or 7d",
                    names[i][j], v);
            break;
        }
    }
    f->key = gw_master_arg_string(req, "key");
    f->user = gw_master_arg_string(req, "user");
    f->tenant = gw_master_arg_string(req, "tenant");
    f->model = gw_master_arg_string(req, "model");
    f->target = gw_master_arg_string(req, "target");
    return NULL;
}

static struct json_object *
scan_error(int rc, int why)
{
    if (why == 1)
        return gw_master_reply_error("the range holds more than %d usage records; narrow it with "
                                     "--since and --until",
                                     STATS_MAX_RECORDS);
    if (why == 2)
        return gw_master_reply_error(
            "more than %d groups; group by fewer or coarser dimensions, or "
            "narrow the range",
            STATS_MAX_GROUPS);
    return gw_master_reply_error("could not read usage: %s", gw_strerror(rc));
}

/* The reply is one protocol line: NULL when o fits, else an error reply
 * (o released). */
static struct json_object *
reply_fits(struct json_object *o, const char *what)
{
    size_t len;

    json_object_to_json_string_length(o, JSON_C_TO_STRING_PLAIN, &len);
    if (len + 1 <= GW_PROTO_MAX_LINE)
        return o;
    json_object_put(o);
    return gw_master_reply_error("the answer does not fit in one reply; %s", what);
}

struct json_object *
gw_master_stats_usage(struct gw_master *m, struct json_object *req, struct gw_arena *a,
                      const struct gw_stats_scope *scope)
{
    struct agg ag = {.f.scope = scope};
    struct json_object *o = NULL, *rows, *by;
    struct group *sorted = NULL;
    const char *dims = gw_master_arg_string(req, "by");
    int64_t from_us, to_us, pruned = 0;
    int rc;

    (void)a;
    if ((o = range_parse(req, &from_us, &to_us, &ag.f)) != NULL)
        return o;
    if (dims != NULL && dims[0] != '\0' &&
        (rc = gw_master_stats_dims_parse(dims, ag.dims, &ag.ndims)) != 0)
        return gw_master_reply_error("--by %s: %s", dims,
                                     rc == GW_EEXIST
                                         ? "a dimension is named twice"
                                         : "dimensions are key, user, tenant, model, target, "
                                           "status, day, month, hour, byok, capability, tier "
                                           "(comma-separated)");

    /* What workers accounted a moment ago is in the ring: store it first. */
    gw_master_usage_drain(m);
    if ((rc = gw_store_usage_pruned_before(m->store, &pruned)) != 0)
        return gw_master_reply_error("could not read usage: %s", gw_strerror(rc));
    /* Before pruned_before the records may be gone: whole days from the
     * aggregates there, the records from then on. */
    bool since_given =
        gw_master_arg_string(req, "since") != NULL || gw_master_arg_string(req, "from") != NULL;
    bool hourly = false;
    for (size_t i = 0; i < ag.ndims; i++)
        hourly |= ag.dims[i] == GW_STATS_HOUR;
    /* --by hour without --since: from the oldest records kept (said in
     * the reply), rather than refused once the first prune has run. */
    int64_t narrowed_from = 0;
    if (hourly && !since_given && from_us < pruned)
        from_us = narrowed_from = pruned;
    if (from_us < pruned) {
        for (size_t i = 0; i < ag.ndims; i++) {
            if (ag.dims[i] != GW_STATS_HOUR)
                continue;
            time_t t = (time_t)(pruned / 1000000);
            struct tm tm;
            char when[32];
            gmtime_r(&t, &tm);
            strftime(when, sizeof(when), "%Y-%m-%d", &tm);
            return gw_master_reply_error("--by hour needs the records of each request, which are "
                                         "kept from %s on (usage.detail_days); give --since %s "
                                         "or later, or group by day",
                                         when, when);
        }
        rc = gw_store_usage_agg_scan(m->store, from_us, to_us < pruned ? to_us : pruned, agg_daily,
                                     &ag);
        if (rc != 0) {
            o = scan_error(rc, ag.why);
            goto out;
        }
        from_us = pruned;
    }
    if (from_us < to_us &&
        (rc = gw_store_usage_scan(m->store, from_us, to_us, false, agg_record, &ag)) != 0) {
        o = scan_error(rc, ag.why);
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
    if (narrowed_from > 0) {
        time_t t = (time_t)(narrowed_from / 1000000);
        struct tm tm;
        char when[32];
        gmtime_r(&t, &tm);
        strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
        json_object_object_add(o, "since", json_object_new_string(when));
    }
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
        metrics_add(row, &sorted[i].sums);
        json_object_array_add(rows, row);
    }
    json_object_object_add(o, "rows", rows);
    struct json_object *totals = json_object_new_object();
    metrics_add(totals, &ag.total);
    json_object_object_add(o, "totals", totals);
    o = reply_fits(o, "group by fewer or coarser dimensions, or narrow the range");
out:
    free(sorted);
    for (size_t i = 0; i < ag.cap; i++)
        free(ag.slots[i].key);
    free(ag.slots);
    return o;
}

/* ------------------------------------------------------------- detail */

struct detail {
    struct filter f;
    struct json_object *rows;
    int64_t skip;    /* matching records to pass over first (paging) */
    int64_t limit;   /* rows to answer */
    int64_t last_us; /* time of the last row answered */
    uint64_t scanned;
    bool more;
};

static struct json_object *
detail_row(const struct gw_usage *rec, const struct fields *fl)
{
    struct json_object *o = json_object_new_object();
    time_t secs = (time_t)(rec->time_us / 1000000);
    struct tm tm;
    char when[48], frac[8];

    gmtime_r(&secs, &tm);
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(frac, sizeof(frac), ".%03dZ", (int)(rec->time_us / 1000 % 1000));
    strcat(when, frac);
    json_object_object_add(o, "time", json_object_new_string(when));
    json_object_object_add(o, "time_us", json_object_new_int64(rec->time_us));
    json_object_object_add(o, "request_id", json_object_new_string(fl->request_id));
    json_object_object_add(o, "key", json_object_new_string(fl->key_id));
    json_object_object_add(o, "user", json_object_new_string(fl->user));
    json_object_object_add(o, "tenant", json_object_new_string(fl->tenant));
    json_object_object_add(o, "model", json_object_new_string(fl->model));
    json_object_object_add(o, "target", json_object_new_string(fl->target));
    json_object_object_add(o, "status", json_object_new_int(rec->status));
    json_object_object_add(o, "input_tokens", json_object_new_int64(rec->input_tokens));
    json_object_object_add(o, "output_tokens", json_object_new_int64(rec->output_tokens));
    json_object_object_add(o, "cached", json_object_new_boolean(rec->cached));
    json_object_object_add(o, "stream", json_object_new_boolean(rec->stream));
    json_object_object_add(o, "latency_ms", json_object_new_int64(rec->duration_ms));
    json_object_object_add(o, "ttfb_ms", json_object_new_int64(rec->ttfb_ms));
    json_object_object_add(o, "cost", cost_json(rec->cost_nano));
    json_object_object_add(o, "capability", json_object_new_string(capability_name(rec)));
    json_object_object_add(o, "units", json_object_new_int64(rec->units));
    json_object_object_add(o, "tier", json_object_new_string(fl->tier));
    return o;
}

static int
detail_record(const struct gw_usage *rec, void *ctx)
{
    struct detail *d = ctx;
    struct fields fl;

    if (++d->scanned > STATS_MAX_RECORDS)
        return GW_ETOOBIG;
    fields_get(&fl, rec);
    if (!filter_pass(&d->f, &fl))
        return 0;
    if (d->skip > 0) {
        d->skip--;
        return 0;
    }
    if ((int64_t)json_object_array_length(d->rows) >= d->limit) {
        d->more = true;
        return 1;
    }
    json_object_array_add(d->rows, detail_row(rec, &fl));
    d->last_us = rec->time_us;
    return 0;
}

struct json_object *
gw_master_stats_detail(struct gw_master *m, struct json_object *req, struct gw_arena *a,
                       const struct gw_stats_scope *scope)
{
    struct detail d = {.f.scope = scope, .limit = DETAIL_PAGE_MAX};
    struct json_object *o, *v;
    int64_t from_us, to_us;
    int rc;

    (void)a;
    if ((o = range_parse(req, &from_us, &to_us, &d.f)) != NULL)
        return o;
    /* Paging: until_us (exclusive) and the matching records at its last
     * microsecond already answered. */
    if (json_object_object_get_ex(req, "until_us", &v))
        to_us = json_object_get_int64(v);
    if (json_object_object_get_ex(req, "skip", &v))
        d.skip = json_object_get_int64(v);
    if (json_object_object_get_ex(req, "limit", &v))
        d.limit = json_object_get_int64(v);
    if (d.limit <= 0 || d.limit > DETAIL_PAGE_MAX)
        return gw_master_reply_error("limit must be from 1 to %d records per request",
                                     DETAIL_PAGE_MAX);
    gw_master_usage_drain(m);
    d.rows = json_object_new_array();
    rc = gw_store_usage_scan(m->store, from_us, to_us, true, detail_record, &d);
    if (rc != 0 && rc != 1) {
        json_object_put(d.rows);
        return rc == GW_ETOOBIG ? scan_error(rc, 1) : scan_error(rc, 0);
    }
    o = gw_master_reply_ok();
    json_object_object_add(o, "rows", d.rows);
    json_object_object_add(o, "more", json_object_new_boolean(d.more));
    return reply_fits(o, "ask for fewer records (limit)");
}

/* ------------------------------------------------------------- totals */

struct json_object *
gw_master_stats_totals(struct gw_master *m, struct json_object *req, struct gw_arena *a,
                       const struct gw_stats_scope *scope)
{
    struct json_object *r = gw_master_stats_usage(m, req, a, scope), *ok, *totals, *v;

    if (!json_object_object_get_ex(r, "ok", &ok) || !json_object_get_boolean(ok) ||
        !json_object_object_get_ex(r, "totals", &totals))
        return r;
    struct json_object *o = gw_master_reply_ok();
    for (size_t i = 0; i < 3; i++) {
        static const char *const names[] = {"requests", "input_tokens", "output_tokens"};
        if (json_object_object_get_ex(totals, names[i], &v))
            json_object_object_add(o, names[i], json_object_get(v));
    }
    json_object_put(r);
    return o;
}
