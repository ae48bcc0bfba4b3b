/*
 * body.c - rewriting a request body without re-serializing it.
 *
 * A chat request can be megabytes of prompt, and all the gateway changes
 * is the model's name (and, for a stream, asks for usage).  The body is
 * checked by gw_worker_body_scan below (strict RFC 8259, by bytes), which
 * also finds where the "model" value sits, and the new body is the old
 * one with that value replaced: the prompt is copied once, not rebuilt
 * from a tree.  A body the scan does not take (json-c's leniencies, an
 * escaped key) or that names a member the gateway reads twice goes the
 * general way, through the tree.  A lighter walk reads a few integer
 * members of an answer's usage object without parsing it.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "worker/worker.h"

static const char *
skip_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
        p++;
    return p;
}

/*
 * Prompts are nearly all string bytes, so both walks below spend their time
 * looking for the few bytes that end a run of plain string characters: the
 * quote, the backslash and (when validating) a control character.  They
 * look at sixteen bytes at a time with SSE2 (every x86-64 has it), then at
 * eight in a 64-bit word (the test for a zero byte of Hacker's Delight,
 * 6-1), and byte by byte only within a word that holds a candidate.
 */
#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL

/* Nonzero when some byte of w is 0. */
static inline uint64_t
word_has_zero(uint64_t w)
{
    return (w - ONES) & ~w & HIGHS;
}

/* Nonzero when some byte of w is below 0x20 (the same test holds for any
 * bound up to 0x80; bytes of 0x80 and up never match). */
static inline uint64_t
word_has_below_space(uint64_t w)
{
    return (w - ONES * 0x20) & ~w & HIGHS;
}

/*
 * The first byte in [p, end) that is a quote or a backslash, or, with
 * controls, below 0x20; end if none.
 */
static const char *
string_run_end(const char *p, const char *end, bool controls)
{
#ifdef __SSE2__
    const __m128i quote = _mm_set1_epi8('"'), backslash = _mm_set1_epi8('\\'),
                  below_space = _mm_set1_epi8(0x1f);
    while (end - p >= 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);
        __m128i hit = _mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash));
        if (controls) /* min(v, 0x1f) == v: v <= 0x1f, unsigned */
            hit = _mm_or_si128(hit, _mm_cmpeq_epi8(_mm_min_epu8(v, below_space), v));
        unsigned mask = (unsigned)_mm_movemask_epi8(hit);
        if (mask != 0)
            return p + __builtin_ctz(mask);
        p += 16;
    }
#endif
    while (end - p >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        uint64_t hit = word_has_zero(w ^ (ONES * '"')) | word_has_zero(w ^ (ONES * '\\'));
        if (controls)
            hit |= word_has_below_space(w);
        if (hit != 0)
            break;
        p += 8;
    }
    for (; p < end; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '"' || c == '\\' || (controls && c < 0x20))
            return p;
    }
    return end;
}

/* p at an opening quote; returns just past the closing one, or NULL. */
static const char *
skip_string(const char *p, const char *end)
{
    /* At a backslash: step past it and the character it escapes. */
    for (p++; (p = string_run_end(p, end, false)) < end; p += 2) {
        if (*p == '"')
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
gw_worker_body_rewrite(struct gw_arena *a, const char *body, size_t len,
                       const struct gw_body_scan *scan, const char *model, bool add_usage,
                       const char **out, size_t *out_len)
{
    const char *end = body + len;
    struct gw_body_scan own;

    /* Only bytes that mean the same to every JSON reader are copied: a
     * body json-c took with its leniencies (a trailing comma, a comment)
     * would go out as the client wrote it, around the new model. */
    if (scan == NULL || scan->body != body || scan->len != len) {
        if (gw_worker_body_scan(body, len, &own) != 0)
            return GW_EINVAL;
        scan = &own;
    }
    /* Unusual shapes are left to the caller's general path: no "model"
     * string; a member the gateway reads named twice (the tree keeps the
     * last, which the gateway checked, where a provider that keeps the
     * first would read the client's model, or messages the safety rules
     * never saw); stream_options to amend. */
    const struct gw_body_member *mv = &scan->model;
    if (mv->v == NULL || mv->v[0] != '"' || scan->repeated ||
        (add_usage && scan->stream_options.v != NULL))
        return GW_EINVAL;
    const char *vs = mv->v, *ve = mv->v + mv->len, *close = scan->close;

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
            /* The first byte first: most keys differ there. */
            if ((klen > 0 && keys[i][0] != *ks) || strlen(keys[i]) != klen ||
                memcmp(ks, keys[i], klen) != 0)
                continue;
            /* A number (json-c reads a quoted one and cuts a fraction
             * too); anything else counts as 0, as json-c's get_int64. */
            const char *d = *v == '"' ? v + 1 : v;
            int64_t n = 0;
            bool neg = d < end && *d == '-', over = false;
            for (d += neg; d < end && *d >= '0' && *d <= '9'; d++) {
                over = over || n > (INT64_MAX - (*d - '0')) / 10;
                n = over ? INT64_MAX : n * 10 + (*d - '0');
            }
            /* Out of range: json-c's bounds. */
            vals[i] = over ? (neg ? INT64_MIN : INT64_MAX) : neg ? -n : n;
        }
        p = skip_ws(p, end);
        if (p < end && *p == ',')
            p = skip_ws(p + 1, end);
        else if (p < end && *p != '}')
            return GW_EINVAL;
    }
    return p < end ? 0 : GW_EINVAL;
}

/* ------------------------------------------------- validating scanner */

/* The scanner gives up (and json-c decides) past this nesting: json-c's
 * own limit in the worker is 64. */
#define SCAN_MAX_DEPTH 32

static bool
is_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* p at an opening quote; past the closing one when the string is valid
 * JSON (escapes checked, no raw control character), else NULL.
 * *escaped: it holds a backslash. */
static const char *
scan_string(const char *p, const char *end, bool *escaped)
{
    for (p++; (p = string_run_end(p, end, true)) < end; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '"')
            return p + 1;
        if (c < 0x20)
            return NULL;
        *escaped = true;
        if (++p >= end)
            return NULL;
        switch (*p) {
        case '"':
        case '\\':
        case '/':
        case 'b':
        case 'f':
        case 'n':
        case 'r':
        case 't': break;
        case 'u':
            if (end - p < 5 || !is_hex(p[1]) || !is_hex(p[2]) || !is_hex(p[3]) || !is_hex(p[4]))
                return NULL;
            p += 4;
            break;
        default: return NULL;
        }
    }
    return NULL;
}

static const char *
scan_digits(const char *p, const char *end)
{
    const char *start = p;

    while (p < end && *p >= '0' && *p <= '9')
        p++;
    return p > start ? p : NULL;
}

/* -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? */
static const char *
scan_number(const char *p, const char *end)
{
    if (p < end && *p == '-')
        p++;
    if (p < end && *p == '0')
        p++;
    else if ((p = scan_digits(p, end)) == NULL)
        return NULL;
    if (p < end && *p == '.' && (p = scan_digits(p + 1, end)) == NULL)
        return NULL;
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        if ((p = scan_digits(p, end)) == NULL)
            return NULL;
    }
    return p;
}

static const char *
scan_literal(const char *p, const char *end, const char *word, size_t n)
{
    return (size_t)(end - p) >= n && memcmp(p, word, n) == 0 ? p + n : NULL;
}

static const char *scan_value(const char *p, const char *end, int depth);

/* p at '{' or '['; past the matching close, or NULL. */
static const char *
scan_container(const char *p, const char *end, int depth)
{
    bool object = *p == '{';
    char close = object ? '}' : ']';

    if (depth >= SCAN_MAX_DEPTH)
        return NULL;
    p = skip_ws(p + 1, end);
    if (p < end && *p == close)
        return p + 1;
    for (;;) {
        if (object) {
            bool escaped = false;
            if (p >= end || *p != '"' || (p = scan_string(p, end, &escaped)) == NULL)
                return NULL;
            p = skip_ws(p, end);
            if (p >= end || *p != ':')
                return NULL;
            p = skip_ws(p + 1, end);
        }
        if ((p = scan_value(p, end, depth + 1)) == NULL)
            return NULL;
        p = skip_ws(p, end);
        if (p < end && *p == close)
            return p + 1;
        if (p >= end || *p != ',')
            return NULL;
        p = skip_ws(p + 1, end);
    }
}

static const char *
scan_value(const char *p, const char *end, int depth)
{
    bool escaped = false;

    if (p >= end)
        return NULL;
    switch (*p) {
    case '"': return scan_string(p, end, &escaped);
    case '{':
    case '[': return scan_container(p, end, depth);
    case 't': return scan_literal(p, end, "true", 4);
    case 'f': return scan_literal(p, end, "false", 5);
    case 'n': return scan_literal(p, end, "null", 4);
    default: return scan_number(p, end);
    }
}

int
gw_worker_body_scan(const char *body, size_t len, struct gw_body_scan *out)
{
    static const struct {
        const char *name;
        size_t off;
    } wanted[] = {
        {"model", offsetof(struct gw_body_scan, model)},
        {"messages", offsetof(struct gw_body_scan, messages)},
        {"input", offsetof(struct gw_body_scan, input)},
        {"stream", offsetof(struct gw_body_scan, stream)},
        {"stream_options", offsetof(struct gw_body_scan, stream_options)},
        {"user", offsetof(struct gw_body_scan, user)},
    };
    const char *p = body, *end = body + len;

    memset(out, 0, sizeof(*out));
    p = skip_ws(p, end);
    if (p >= end || *p != '{')
        return GW_EINVAL;
    p = skip_ws(p + 1, end);
    if (p < end && *p == '}') {
        out->close = p++;
        goto done;
    }
    for (;;) {
        bool key_escaped = false, escaped = false;
        const char *ks = p;
        if (p >= end || *p != '"' || (p = scan_string(p, end, &key_escaped)) == NULL || key_escaped)
            return GW_EINVAL; /* a key spelled with escapes: json-c's reading */
        size_t klen = (size_t)(p - ks) - 2;
        p = skip_ws(p, end);
        if (p >= end || *p != ':')
            return GW_EINVAL;
        p = skip_ws(p + 1, end);
        const char *v = p;
        if (p < end && *p == '"')
            p = scan_string(p, end, &escaped);
        else
            p = scan_value(p, end, 1);
        if (p == NULL)
            return GW_EINVAL;
        for (size_t i = 0; i < sizeof(wanted) / sizeof(wanted[0]); i++) {
            if (strlen(wanted[i].name) != klen || memcmp(ks + 1, wanted[i].name, klen) != 0)
                continue;
            /* The last of a key named twice wins, as in json-c. */
            struct gw_body_member *m = (struct gw_body_member *)((char *)out + wanted[i].off);
            out->repeated = out->repeated || m->v != NULL;
            m->v = v;
            m->len = (size_t)(p - v);
            m->escaped = escaped;
        }
        p = skip_ws(p, end);
        if (p < end && *p == '}') {
            out->close = p++;
            break;
        }
        if (p >= end || *p != ',')
            return GW_EINVAL;
        p = skip_ws(p + 1, end);
    }
done:
    /* Nothing but whitespace after the object. */
    if (skip_ws(p, end) != end)
        return GW_EINVAL;
    out->body = body;
    out->len = len;
    return 0;
}

struct json_object *
gw_worker_call_json(struct gw_call *call)
{
    static struct json_tokener *tok;
    const struct gw_request *req = call->req;

    if (call->json != NULL)
        return call->json;
    if (tok == NULL)
        tok = json_tokener_new_ex(64);
    else
        json_tokener_reset(tok);
    if (tok != NULL && req->body_len > 0)
        call->json = json_tokener_parse_ex(tok, req->body, (int)req->body_len);
    if (call->json == NULL || !json_object_is_type(call->json, json_type_object)) {
        /* The body was checked before: only memory can be missing. */
        gw_log(GW_LOG_ERROR, "req=%s the request body could not be parsed again", req->id);
        json_object_put(call->json);
        call->json = json_object_new_object();
    }
    return call->json;
}
