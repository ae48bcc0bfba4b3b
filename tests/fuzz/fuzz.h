/*
 * fuzz.h - what the fuzz targets of tests/fuzz/ share.
 *
 * Each target is a libFuzzer entry point (LLVMFuzzerTestOneInput) over
 * one parser that reads bytes someone else chose: a client, a provider,
 * the administrator's configuration.  Besides not crashing (AddressSanitizer
 * and UBSan watch), each checks what the parser promises: a stream parser
 * gives the same result however its input is cut, a byte scanner agrees
 * with json-c.  A broken promise is an abort(), which libFuzzer reports
 * as a crash with the input that caused it.
 */
#ifndef GW_FUZZ_H
#define GW_FUZZ_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "shm/shm.h"

/* A promise broken: say which, and let libFuzzer keep the input. */
#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);               \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/*
 * The first byte of an input says how the rest is cut into pieces for a
 * stream parser: 0 whole, else pieces of that many bytes (1 to 255).
 */
static inline size_t
fuzz_piece(uint8_t cut, size_t left)
{
    return cut == 0 || cut > left ? left : cut;
}

/* An emit function that appends to a gw_buf. */
static inline int
fuzz_sink(void *ctx, const char *data, size_t len)
{
    return gw_buf_append(ctx, data, len);
}

/* Two buffers hold the same bytes. */
static inline int
fuzz_same(const struct gw_buf *a, const struct gw_buf *b)
{
    return a->len == b->len && (a->len == 0 || memcmp(a->data, b->data, a->len) == 0);
}

/* json-c's parse of data[0..len), nothing but whitespace after the
 * value, or NULL. */
static inline struct json_object *
fuzz_json(const char *data, size_t len)
{
    struct json_tokener *tok = json_tokener_new_ex(64);
    struct json_object *o = json_tokener_parse_ex(tok, data, (int)len);

    if (o != NULL && json_tokener_get_error(tok) == json_tokener_success) {
        for (size_t i = json_tokener_get_parse_end(tok); i < len; i++) {
            if (data[i] != ' ' && data[i] != '\t' && data[i] != '\r' && data[i] != '\n') {
                json_object_put(o);
                o = NULL;
                break;
            }
        }
    } else {
        json_object_put(o);
        o = NULL;
    }
    json_tokener_free(tok);
    return o;
}

/* data[0..len) is one JSON object. */
static inline bool
fuzz_is_object(const char *data, size_t len)
{
    struct json_object *o = fuzz_json(data, len);
    bool ok = json_object_is_type(o, json_type_object);

    json_object_put(o);
    return ok;
}

/* out is OpenAI stream events: "data: " and a JSON object, or
 * "data: [DONE]", each ended by a blank line. */
static inline void
fuzz_openai_events(const struct gw_buf *out)
{
    if (out->len == 0)
        return;
    for (const char *p = out->data, *end = out->data + out->len; p < end;) {
        const char *e = memmem(p, (size_t)(end - p), "\n\n", 2);
        FUZZ_CHECK(e != NULL && (size_t)(e - p) >= 6 && memcmp(p, "data: ", 6) == 0);
        FUZZ_CHECK((e - p == 12 && memcmp(p + 6, "[DONE]", 6) == 0) ||
                   fuzz_is_object(p + 6, (size_t)(e - p - 6)));
        p = e + 2;
    }
}

#endif
