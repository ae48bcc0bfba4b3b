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

#endif
