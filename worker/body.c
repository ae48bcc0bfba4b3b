/*
 * body.c - rewriting a request body without re-serializing it.
 *
 * A chat request can be megabytes of prompt, and all the gateway changes
 * is the model's name (and, for a stream, asks for usage).  The body was
 * already parsed and checked by json-c; here the top-level members are
 * walked by bytes to find where the "model" value sits, and the new body
 * is the old one with that value replaced: the prompt is copied once, not
 * rebuilt from a tree.  The same walk reads a few integer members of an
 * answer's usage object without parsing it.
 */
#include <string.h>

#include "worker/worker.h"

static const char *
skip_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
        p++;
    return p;
}

/* p at an opening quote; returns just past the closing one, or NULL. */
static const char *
skip_string(const char *p, const char *end)
{
    for (p++; p < end; p++) {
        if (*p == '\\')
            p++;
        else if (*p == '"')
            return p + 1;
    }
    return NULL;
}

/* Past one JSON value starting at p, or NULL. */
static const char *
skip_value(const char *p, const char *end)
{
    if (p >= end)
        return NULL;
    if (*p == '"')
        return skip_string(p, end);
    if (*p == '{' || *p == '[') {
        int depth = 0;
        for (; p < end; p++) {
            if (*p == '"') {
                if ((p = skip_string(p, end)) == NULL)
                    return NULL;
                p--;
            } else if (*p == '{' || *p == '[') {
                depth++;
            } else if ((*p == '}' || *p == ']') && --depth == 0) {
                return p + 1;
            }
        }
        return NULL;
    }
    while (p < end && *p != ',' && *p != '}' && *p != ']' && *p != ' ' && *p != '\t' &&
           *p != '\r' && *p != '\n')
        p++;
    return p;
}

int
gw_worker_body_rewrite(struct gw_arena *a, const char *body, size_t len, const char *model,
                       bool add_usage, const char **out, size_t *out_len)
{
    const char *p = body, *end = body + len, *vs = NULL, *ve = NULL, *close;
    bool has_stream_options = false;

    p = skip_ws(p, end);
    if (p >= end || *p != '{')
        return GW_EINVAL;
    p = skip_ws(p + 1, end);
    while (p < end && *p != '}') {
        if (*p != '"')
            return GW_EINVAL;
        const char *ks = p, *ke = skip_string(p, end);
        if (ke == NULL)
            return GW_EINVAL;
        p = skip_ws(ke, end);
        if (p >= end || *p != ':')
            return GW_EINVAL;
        p = skip_ws(p + 1, end);
        const char *v = p;
        if ((p = skip_value(p, end)) == NULL)
            return GW_EINVAL;
        size_t klen = (size_t)(ke - ks);
        if (klen == 7 && memcmp(ks, "\"model\"", 7) == 0 && *v == '"') {
            vs = v; /* the last one wins, as in json-c */
            ve = p;
        } else if (klen == 16 && memcmp(ks, "\"stream_options\"", 16) == 0) {
            has_stream_options = true;
        }
        p = skip_ws(p, end);
        if (p < end && *p == ',')
            p = skip_ws(p + 1, end);
    }
    close = p;
    /* Unusual shapes (an escaped key, stream_options to amend) are left to
     * the caller's general path. */
    if (close >= end || vs == NULL || (add_usage && has_stream_options))
        return GW_EINVAL;

    static const char usage[] = ",\"stream_options\":{\"include_usage\":true}";
    size_t mlen = strlen(model), cap = len + 2 * mlen + 2 + sizeof(usage);
    char *o = gw_arena_alloc(a, cap), *w = o;

    memcpy(w, body, (size_t)(vs - body));
    w += vs - body;
    *w++ = '"';
    for (const char *m = model; *m; m++) {
        if (*m == '"' || *m == '\\')
            *w++ = '\\';
        *w++ = *m;
    }
    *w++ = '"';
    memcpy(w, ve, (size_t)(close - ve));
    w += close - ve;
    if (add_usage) {
        memcpy(w, usage, sizeof(usage) - 1);
        w += sizeof(usage) - 1;
    }
    memcpy(w, close, (size_t)(end - close));
    w += end - close;
    *out = o;
    *out_len = (size_t)(w - o);
    return 0;
}

int
gw_worker_body_int_members(const char *obj, size_t len, const char *const *keys, size_t nkeys,
                           int64_t *vals)
{
    const char *p = obj, *end = obj + len;

    p = skip_ws(p, end);
    if (p >= end || *p != '{')
        return GW_EINVAL;
    p = skip_ws(p + 1, end);
    while (p < end && *p != '}') {
        if (*p != '"')
            return GW_EINVAL;
        const char *ks = p + 1, *ke = skip_string(p, end);
        if (ke == NULL)
            return GW_EINVAL;
        p = skip_ws(ke, end);
        if (p >= end || *p != ':')
            return GW_EINVAL;
        p = skip_ws(p + 1, end);
        const char *v = p;
        if ((p = skip_value(p, end)) == NULL || p == v)
            return GW_EINVAL;
        size_t klen = (size_t)(ke - 1 - ks);
        for (size_t i = 0; i < nkeys; i++) {
            if (strlen(keys[i]) != klen || memcmp(ks, keys[i], klen) != 0)
                continue;
            /* A number (json-c reads a quoted one and cuts a fraction
             * too); anything else counts as 0, as json-c's get_int64. */
            const char *d = *v == '"' ? v + 1 : v;
            int64_t n = 0;
            bool neg = d < end && *d == '-';
            for (d += neg; d < end && *d >= '0' && *d <= '9'; d++)
                n = n < INT64_MAX / 10 ? n * 10 + (*d - '0') : INT64_MAX;
            vals[i] = neg ? -n : n;
        }
        p = skip_ws(p, end);
        if (p < end && *p == ',')
            p = skip_ws(p + 1, end);
        else if (p < end && *p != '}')
            return GW_EINVAL;
    }
    return p < end ? 0 : GW_EINVAL;
}
