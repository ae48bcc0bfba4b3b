/*
 * fault.c - the x-mock-* request headers that make the mock misbehave on
 * purpose: a status, a delay before the first byte or between stream
 * events, a number of chunks, a connection dropped mid-answer, an echo of
 * the request, a stamp of when the mock read the request and wrote the
 * answer (x-mock-stamp: a chat completion that is not streamed gets
 * "x_mock_us":[READ,WRITE], CLOCK_MONOTONIC microseconds, for the bench),
 * and an error message of a given length (x-mock-error-text).
 * Only the chat and embeddings endpoints read them all; speech reads the
 * chunk delay.
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include "tests/mock/mock.h"

static const struct fault_header {
    const char *name;
    size_t offset;
    long min;
    long max;
} fault_headers[] = {
    {"x-mock-status", offsetof(struct gw_mock_fault, status), 200, 599},
    {"x-mock-delay-ms", offsetof(struct gw_mock_fault, delay_ms), 0, 3600000},
    {"x-mock-chunk-delay-ms", offsetof(struct gw_mock_fault, chunk_delay_ms), 0, 3600000},
    {"x-mock-chunks", offsetof(struct gw_mock_fault, chunks), 0, 100000},
    {"x-mock-drop-after", offsetof(struct gw_mock_fault, drop_after), 0, 100000000},
    {"x-mock-echo", offsetof(struct gw_mock_fault, echo), 0, 1},
    {"x-mock-no-usage", offsetof(struct gw_mock_fault, no_usage), 0, 1},
    {"x-mock-stamp", offsetof(struct gw_mock_fault, stamp), 0, 1},
    {"x-mock-bad-shape", offsetof(struct gw_mock_fault, bad_shape), 0, 1},
    {"x-mock-error-text", offsetof(struct gw_mock_fault, error_text), 0, 10000},
};

/*
 * Read the x-mock-* headers of the request into f.  Returns 0, or 1 after
 * answering 400 for a value that is not a number in range, or a negative
 * code when that answer could not be written.
 */
int
gw_mock_fault_parse(struct gw_mock_conn *c, struct gw_mock_fault *f)
{
    *f = (struct gw_mock_fault){.chunks = 5, .drop_after = -1};
    for (size_t i = 0; i < sizeof(fault_headers) / sizeof(fault_headers[0]); i++) {
        const struct fault_header *h = &fault_headers[i];
        const char *v = gw_mock_header(c, h->name);
        if (v == NULL)
            continue;
        char *end;
        errno = 0;
        long n = strtol(v, &end, 10);
        if (errno != 0 || end == v || *end != '\0' || n < h->min || n > h->max) {
            char msg[160];
            snprintf(msg, sizeof(msg), "Invalid %s header: expected an integer from %ld to %ld.",
                     h->name, h->min, h->max);
            if (gw_mock_respond_error(c, 400, "invalid_request_error", "invalid_mock_header",
                                      msg) != 0)
                return GW_ECLOSED;
            return 1;
        }
        *(long *)((char *)f + h->offset) = n;
    }
    return 0;
}

/*
 * Carry out the faults that come before any answer: wait x-mock-delay-ms,
 * then answer x-mock-status with an error body.  Returns 0 to go on with
 * the request, 1 when it was answered, or a negative code to close.
 */
int
gw_mock_fault_message(const struct gw_mock_fault *f, struct gw_buf *out)
{
    if (f->error_text == 0)
        return gw_buf_printf(out, "mock injected status %ld", f->status);
    if (gw_buf_append(out, "x", 1) != 0)
        return GW_ENOMEM;
    for (long i = 0; i < f->error_text; i++)
        if (gw_buf_append(out, "\xc3\xa9", 2) != 0)
            return GW_ENOMEM;
    return 0;
}

int
gw_mock_fault_apply(struct gw_mock_conn *c, const struct gw_mock_fault *f)
{
    char code[32];
    struct gw_buf msg = {0};
    int rc;

    gw_mock_sleep_ms(f->delay_ms);
    if (f->status == 0)
        return 0;
    snprintf(code, sizeof(code), "mock_status_%ld", f->status);
    rc = gw_mock_fault_message(f, &msg) != 0
             ? GW_ENOMEM
             : gw_mock_respond_error(c, (int)f->status, "mock_error", code, msg.data);
    gw_buf_free(&msg);
    return rc != 0 ? GW_ECLOSED : 1;
}
