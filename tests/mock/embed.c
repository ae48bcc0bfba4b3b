/*
 * embed.c - POST /v1/embeddings.
 *
 * Each input (a string or an array of token ids) gets a unit vector of
 * "dimensions" floats (default 8) drawn from a generator seeded with a hash
 * of the input, so the same input always gets the same vector.  The values
 * are float32 whether sent as JSON numbers or, for encoding_format
 * "base64", as the base64 of the little-endian float32 array (what the
 * OpenAI SDKs ask for by default and decode).
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "tests/mock/mock.h"

#define DIMS_DEFAULT 8
#define DIMS_MAX 65536

enum encoding { ENC_FLOAT, ENC_BASE64 };

static uint64_t
fnv1a(uint64_t h, const void *data, size_t len)
{
    const unsigned char *p = data;

    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

static uint64_t
splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Square root by Newton's method: keeps the mock off libm. */
static double
root(double x)
{
    double r = x > 1 ? x : 1;

    if (x <= 0)
        return 0;
    for (int i = 0; i < 200; i++) {
        double next = 0.5 * (r + x / r);
        if (next >= r)
            break;
        r = next;
    }
    return r;
}

/*
 * Hash and token count of one input: a string (its words) or an array of
 * token ids (their number).  Returns -1 for anything else.
 */
static int
input_measure(struct json_object *in, uint64_t *hash, size_t *tokens)
{
    uint64_t h = 0xcbf29ce484222325ULL;

    if (json_object_is_type(in, json_type_string)) {
        const char *s = json_object_get_string(in);
        size_t len = (size_t)json_object_get_string_len(in);
        *hash = fnv1a(h, s, len);
        *tokens = gw_mock_words(s, len);
        return 0;
    }
    if (!json_object_is_type(in, json_type_array))
        return -1;
    size_t n = json_object_array_length(in);
    for (size_t i = 0; i < n; i++) {
        struct json_object *t = json_object_array_get_idx(in, i);
        if (!json_object_is_type(t, json_type_int))
            return -1;
        int64_t id = json_object_get_int64(t);
        h = fnv1a(h, &id, sizeof(id));
    }
    *hash = fnv1a(h, "t", 1); /* tokens never hash like a string */
    *tokens = n;
    return 0;
}

static void
base64_append(struct gw_buf *b, const unsigned char *p, size_t len)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    if (gw_buf_reserve(b, (len + 2) / 3 * 4) != 0)
        return;
    char *o = b->data + b->len;
    size_t i = 0;
    for (; i + 2 < len; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        *o++ = tab[v >> 18];
        *o++ = tab[(v >> 12) & 63];
        *o++ = tab[(v >> 6) & 63];
        *o++ = tab[v & 63];
    }
    if (i < len) {
        uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < len ? (uint32_t)p[i + 1] << 8 : 0);
        *o++ = tab[v >> 18];
        *o++ = tab[(v >> 12) & 63];
        *o++ = i + 1 < len ? tab[(v >> 6) & 63] : '=';
        *o++ = '=';
    }
    b->len = (size_t)(o - b->data);
    b->data[b->len] = '\0';
}

/*
 * Append {"object":"embedding","index":i,"embedding":...} for an input of
 * hash h to c->ev, using c->pre for the vector.
 */
static int
embedding_append(struct gw_mock_conn *c, size_t index, uint64_t h, size_t dims, enum encoding enc)
{
    struct gw_buf *b = &c->ev;
    uint64_t state = h;
    double norm = 0;

    c->pre.len = 0;
    if (gw_buf_reserve(&c->pre, dims * sizeof(float)) != 0)
        return GW_ENOMEM;
    float *vec = (float *)(void *)c->pre.data;
    for (size_t d = 0; d < dims; d++) {
        double v = (double)(splitmix64(&state) >> 11) * 0x1.0p-53 * 2.0 - 1.0;
        vec[d] = (float)v;
        norm += v * v;
    }
    norm = root(norm);
    for (size_t d = 0; d < dims && norm > 0; d++)
        vec[d] = (float)(vec[d] / norm);

    (void)gw_buf_printf(
        b, "%s{\"object\":\"embedding\",\"index\":%zu,\"embedding\":", index > 0 ? "," : "", index);
    if (enc == ENC_BASE64) {
        /* little-endian float32, whatever this machine's byte order */
        unsigned char *bytes = (unsigned char *)(void *)vec;
        for (size_t d = 0; d < dims; d++) {
            uint32_t u;
            memcpy(&u, &vec[d], sizeof(u));
            bytes[4 * d] = (unsigned char)u;
            bytes[4 * d + 1] = (unsigned char)(u >> 8);
            bytes[4 * d + 2] = (unsigned char)(u >> 16);
            bytes[4 * d + 3] = (unsigned char)(u >> 24);
        }
        (void)GW_MOCK_APPEND(b, "\"");
        base64_append(b, bytes, dims * sizeof(float));
        (void)GW_MOCK_APPEND(b, "\"");
    } else {
        (void)GW_MOCK_APPEND(b, "[");
        for (size_t d = 0; d < dims; d++)
            (void)gw_buf_printf(b, "%s%.9g", d > 0 ? "," : "", (double)vec[d]);
        (void)GW_MOCK_APPEND(b, "]");
    }
    return GW_MOCK_APPEND(b, "}");
}

static int
bad_request(struct gw_mock_conn *c, const char *code, const char *message)
{
    return gw_mock_respond_error(c, 400, "invalid_request_error", code, message);
}

/*
 * POST /v1/embeddings.  input is a string, an array of strings, an array of
 * token ids or an array of those; usage counts words or token ids.  The
 * x-mock-* headers apply as for a chat completion that is not streamed.
 */
int
gw_mock_embed_handle(struct gw_mock_conn *c)
{
    struct gw_mock_fault f;
    struct json_object *req = NULL, *input, *v;
    const char *model = "mock-embed";
    size_t model_len = 10, dims = DIMS_DEFAULT, tokens_total = 0;
    enum encoding enc = ENC_FLOAT;
    int rc;

    if ((rc = gw_mock_fault_parse(c, &f)) != 0 || (rc = gw_mock_fault_apply(c, &f)) != 0)
        return rc > 0 ? 0 : rc;
    if ((rc = gw_mock_body_json(c, &req)) != 0)
        return rc > 0 ? 0 : rc;
    if (!json_object_object_get_ex(req, "input", &input) || input == NULL) {
        rc = bad_request(c, "invalid_input", "'input' is a required property.");
        goto done;
    }
    if (json_object_object_get_ex(req, "model", &v) && json_object_is_type(v, json_type_string)) {
        model = json_object_get_string(v);
        model_len = (size_t)json_object_get_string_len(v);
    }
    if (json_object_object_get_ex(req, "dimensions", &v) && v != NULL) {
        int64_t d = json_object_get_int64(v);
        if (!json_object_is_type(v, json_type_int) || d < 1 || d > DIMS_MAX) {
            rc = bad_request(c, "invalid_dimensions",
                             "'dimensions' must be an integer from 1 to 65536.");
            goto done;
        }
        dims = (size_t)d;
    }
    if (json_object_object_get_ex(req, "encoding_format", &v) && v != NULL) {
        const char *e = json_object_get_string(v);
        if (json_object_is_type(v, json_type_string) && strcmp(e, "base64") == 0) {
            enc = ENC_BASE64;
        } else if (!json_object_is_type(v, json_type_string) || strcmp(e, "float") != 0) {
            rc = bad_request(c, "invalid_encoding_format",
                             "'encoding_format' must be \"float\" or \"base64\".");
            goto done;
        }
    }

    /* one input (a string, or token ids) or an array of them */
    bool single =
        json_object_is_type(input, json_type_string) ||
        (json_object_is_type(input, json_type_array) && json_object_array_length(input) > 0 &&
         json_object_is_type(json_object_array_get_idx(input, 0), json_type_int));
    size_t n = 0;
    if (single)
        n = 1;
    else if (json_object_is_type(input, json_type_array))
        n = json_object_array_length(input);
    if (n == 0) {
        rc = bad_request(c, "invalid_input",
                         "'input' must be a string, an array of strings or token arrays, "
                         "and not empty.");
        goto done;
    }
    c->ev.len = 0;
    (void)GW_MOCK_APPEND(&c->ev, "{\"object\":\"list\",\"data\":[");
    for (size_t i = 0; i < n; i++) {
        struct json_object *in = single ? input : json_object_array_get_idx(input, i);
        uint64_t h;
        size_t tokens;
        if (input_measure(in, &h, &tokens) != 0) {
            rc = bad_request(c, "invalid_input",
                             "Each input must be a string or an array of integers.");
            goto done;
        }
        tokens_total += tokens;
        if ((rc = embedding_append(c, i, h, dims, enc)) != 0)
            goto done;
    }
    (void)GW_MOCK_APPEND(&c->ev, "],\"model\":");
    (void)gw_mock_json_str(&c->ev, model, model_len);
    if (gw_buf_printf(&c->ev, ",\"usage\":{\"prompt_tokens\":%zu,\"total_tokens\":%zu}}",
                      tokens_total, tokens_total) != 0) {
        rc = GW_ENOMEM;
        goto done;
    }
    if (f.drop_after >= 0)
        rc = gw_mock_respond_cut(c, c->ev.data, c->ev.len, f.drop_after);
    else
        rc = gw_mock_respond(c, 200, NULL, c->ev.data, c->ev.len);

done:
    json_object_put(req);
    return rc;
}
