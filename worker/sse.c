/*
 * sse.c - the server-sent-events relay.
 *
 * Bytes from the upstream are forwarded event by event the moment an event
 * is complete (a blank line ends it), so nothing is held back for longer
 * than it takes the rest of its own event to arrive.  Events that arrive
 * together leave together, in one emit (one write(2) to the client).
 *
 * The relay reads two things from the stream: the usage the upstream puts
 * in a chunk of its own at the end ("choices": [], "usage": {...}), and
 * how many chunks carried generated text or tool arguments, which stands
 * for the completion tokens when the usage never comes (an upstream that
 * does not send it, a client gone mid-stream).  Only an event that
 * carries a usage object is parsed as JSON; for the others a byte search
 * decides, so a long stream costs no JSON work per chunk.
 */
#include <string.h>

#include <json-c/json.h>

#include "worker/worker.h"

/* An event that grows past this without ending is passed on as it is. */
#define SSE_MAX_PENDING (1024 * 1024)

void
gw_worker_sse_init(struct gw_sse *s, gw_sse_emit_fn emit, void *ctx, bool drop_usage)
{
    memset(s, 0, sizeof(*s));
    s->emit = emit;
    s->ctx = ctx;
    s->drop_usage = drop_usage;
}

void
gw_worker_sse_fini(struct gw_sse *s)
{
    gw_buf_free(&s->pending);
}

size_t
gw_worker_sse_event_end(const char *p, size_t len)
{
    for (const char *nl = memchr(p, '\n', len); nl != NULL;
         nl = memchr(nl + 1, '\n', len - (size_t)(nl + 1 - p))) {
        size_t i = (size_t)(nl - p) + 1;
        if (i < len && p[i] == '\n')
            return i + 1;
        if (i + 1 < len && p[i] == '\r' && p[i + 1] == '\n')
            return i + 2;
        if (i >= len)
            break;
    }
    return 0;
}

/* Does this event carry a usage object (not "usage": null)? */
static bool
event_has_usage(const char *p, size_t len)
{
    static const char needle[] = "\"usage\"";
    const char *end = p + len;

    for (const char *u = memmem(p, len, needle, sizeof(needle) - 1); u != NULL;
         u = memmem(u + 1, (size_t)(end - u - 1), needle, sizeof(needle) - 1)) {
        const char *q = u + sizeof(needle) - 1;
        while (q < end && (*q == ' ' || *q == '\t'))
            q++;
        if (q < end && *q == ':') {
            q++;
            while (q < end && (*q == ' ' || *q == '\t'))
                q++;
            if (q < end && *q == '{')
                return true;
        }
    }
    return false;
}

/* Does this event carry generated text or tool-call arguments?  A
 * non-empty "content" or "arguments" string in a delta. */
static bool
event_generated(const char *p, size_t len)
{
    static const char *const keys[] = {"\"content\":\"", "\"arguments\":\""};

    if (memmem(p, len, "\"delta\"", 7) == NULL)
        return false;
    for (size_t k = 0; k < 2; k++) {
        size_t kl = strlen(keys[k]);
        for (const char *f = memmem(p, len, keys[k], kl); f != NULL;
             f = memmem(f + 1, len - (size_t)(f + 1 - p), keys[k], kl))
            if (f + kl < p + len && f[kl] != '"')
                return true;
    }
    return false;
}

/*
 * The usage object of a JSON body, found by bytes: the last "usage" key
 * whose value is an object, and the end of that object by brace counting
 * (strings skipped).  Only that slice is then parsed: an answer of many
 * kilobytes costs a byte scan, not a whole JSON parse.  The key is looked
 * for from the end, where answers put their usage, quote by quote.
 */
static const char *
usage_slice(const char *json, size_t len, size_t *slice_len)
{
    static const char needle[] = "\"usage\"";
    const size_t nlen = sizeof(needle) - 1;
    const char *end = json + len, *found = NULL;

    for (const char *u = end; found == NULL && (size_t)(u - json) >= nlen;) {
        /* u: the closing quote of a candidate key. */
        u = memrchr(json, '"', (size_t)(u - json));
        if (u == NULL || (size_t)(u + 1 - json) < nlen)
            break;
        if (memcmp(u + 1 - nlen, needle, nlen) != 0)
            continue;
        const char *q = u + 1;
        while (q < end && (*q == ' ' || *q == '\t' || *q == '\r' || *q == '\n'))
            q++;
        if (q >= end || *q != ':')
            continue;
        q++;
        while (q < end && (*q == ' ' || *q == '\t' || *q == '\r' || *q == '\n'))
            q++;
        if (q < end && *q == '{')
            found = q;
    }
    if (found == NULL)
        return NULL;
    int depth = 0;
    bool in_string = false;
    for (const char *p = found; p < end; p++) {
        if (in_string) {
            if (*p == '\\')
                p++;
            else if (*p == '"')
                in_string = false;
        } else if (*p == '"') {
            in_string = true;
        } else if (*p == '{') {
            depth++;
        } else if (*p == '}' && --depth == 0) {
            *slice_len = (size_t)(p + 1 - found);
            return found;
        }
    }
    return NULL;
}

/* OpenAI's usage: prompt and completion tokens, or the Responses API's
 * input and output tokens. */
static void
usage_read(struct json_object *usage, int64_t *prompt, int64_t *completion)
{
    struct json_object *v;

    if (json_object_object_get_ex(usage, "prompt_tokens", &v) ||
        json_object_object_get_ex(usage, "input_tokens", &v))
        *prompt = json_object_get_int64(v);
    else
        *prompt = 0;
    if (json_object_object_get_ex(usage, "completion_tokens", &v) ||
        json_object_object_get_ex(usage, "output_tokens", &v))
        *completion = json_object_get_int64(v);
    else
        *completion = 0;
}

bool
gw_worker_usage_parse(const char *json, size_t len, int64_t *prompt, int64_t *completion)
{
    /* OpenAI's chat names, then the Responses API's. */
    static const char *const keys[] = {"prompt_tokens", "completion_tokens", "input_tokens",
                                       "output_tokens"};
    int64_t vals[4] = {-1, -1, -1, -1};
    size_t slen;
    const char *slice = usage_slice(json, len, &slen);

    /* A few integers of a small object: read by bytes, not parsed. */
    if (slice == NULL || gw_worker_body_int_members(slice, slen, keys, 4, vals) != 0)
        return false;
    *prompt = vals[0] >= 0 ? vals[0] : vals[2] >= 0 ? vals[2] : 0;
    *completion = vals[1] >= 0 ? vals[1] : vals[3] >= 0 ? vals[3] : 0;
    return true;
}

/*
 * Read usage from one event; returns true when the event is the
 * usage-only chunk that the client did not ask for.
 */
static bool
event_take_usage(struct gw_sse *s, const char *p, size_t len)
{
    /* The payload is the "data:" field; usage chunks are one line. */
    const char *d = memmem(p, len, "data:", 5);
    if (d == NULL)
        return false;
    d += 5;
    size_t dlen = len - (size_t)(d - p);

    struct json_tokener *tok = json_tokener_new();
    struct json_object *o, *usage, *choices, *resp;
    bool drop = false;

    if (tok == NULL)
        return false;
    o = json_tokener_parse_ex(tok, d, (int)dlen);
    if (o != NULL && json_object_object_get_ex(o, "usage", &usage) &&
        json_object_is_type(usage, json_type_object)) {
        s->have_usage = true;
        usage_read(usage, &s->prompt_tokens, &s->completion_tokens);
        drop = s->drop_usage && (!json_object_object_get_ex(o, "choices", &choices) ||
                                 gw_worker_json_len(choices) == 0);
    } else if (o != NULL && json_object_object_get_ex(o, "response", &resp) &&
               json_object_object_get_ex(resp, "usage", &usage) &&
               json_object_is_type(usage, json_type_object)) {
        /* The Responses API's response.completed (and .incomplete): never
         * dropped, it is the stream's last word. */
        s->have_usage = true;
        usage_read(usage, &s->prompt_tokens, &s->completion_tokens);
    }
    json_object_put(o);
    json_tokener_free(tok);
    return drop;
}

/*
 * Emit the complete events at the start of p; returns how many bytes were
 * consumed (everything up to the end of the last complete event).
 */
static int
relay_events(struct gw_sse *s, const char *p, size_t len, size_t *consumed)
{
    size_t off = 0, run = 0; /* run: start of events not yet emitted */
    int rc = 0;

    for (;;) {
        size_t n = gw_worker_sse_event_end(p + off, len - off);
        if (n == 0)
            break;
        s->events++;
        if (event_generated(p + off, n))
            s->generated++;
        if (event_has_usage(p + off, n) && event_take_usage(s, p + off, n)) {
            /* Flush what precedes the dropped event, then skip it. */
            if (off > run && (rc = s->emit(s->ctx, p + run, off - run)) != 0)
                return rc;
            run = off + n;
        }
        off += n;
    }
    if (off > run)
        rc = s->emit(s->ctx, p + run, off - run);
    *consumed = off;
    return rc;
}

int
gw_worker_sse_feed(struct gw_sse *s, const char *data, size_t len)
{
    size_t used;
    int rc;

    if (s->pending.len == 0) {
        /* Common case: work on the upstream's bytes without copying. */
        if ((rc = relay_events(s, data, len, &used)) != 0)
            return rc;
        data += used;
        len -= used;
        if (len == 0)
            return 0;
        return gw_buf_append(&s->pending, data, len);
    }
    if ((rc = gw_buf_append(&s->pending, data, len)) != 0)
        return rc;
    if ((rc = relay_events(s, s->pending.data, s->pending.len, &used)) != 0)
        return rc;
    gw_buf_consume(&s->pending, used);
    if (s->pending.len > SSE_MAX_PENDING) {
        /* Not SSE as we know it: stop interpreting, keep relaying. */
        rc = s->emit(s->ctx, s->pending.data, s->pending.len);
        s->pending.len = 0;
    }
    return rc;
}

int
gw_worker_sse_finish(struct gw_sse *s)
{
    int rc = 0;

    if (s->pending.len > 0) {
        if (event_has_usage(s->pending.data, s->pending.len))
            (void)event_take_usage(s, s->pending.data, s->pending.len);
        rc = s->emit(s->ctx, s->pending.data, s->pending.len);
        s->pending.len = 0;
    }
    return rc;
}
