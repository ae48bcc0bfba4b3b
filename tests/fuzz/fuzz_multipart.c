/*
 * fuzz_multipart.c - multipart/form-data read as it streams
 * (worker/multipart.c): the uploads of the audio, image and video routes.
 * The input's first line is the Content-Type, the rest the body.
 *
 * Promises checked: however the body is cut, the same parts are reported
 * (names, file or not, offsets, first bytes) and it is malformed, complete
 * or incomplete alike; a part's value lies inside the body.
 */
#include "tests/fuzz/fuzz.h"
#include "worker/worker.h"

struct parts {
    struct gw_buf log; /* each part, as bytes */
    uint64_t body_len;
};

static void
on_part(void *ctx, const struct gw_multipart_part *p)
{
    struct parts *r = ctx;

    FUZZ_CHECK(p->start <= p->end && p->end <= r->body_len);
    FUZZ_CHECK(p->value_len <= GW_MULTIPART_VALUE_MAX && p->value_len <= p->end - p->start);
    FUZZ_CHECK(memchr(p->name, 0, sizeof(p->name)) != NULL);
    gw_buf_printf(&r->log, "%s|%d|%llu|%llu|%zu:", p->name, p->file, (unsigned long long)p->start,
                  (unsigned long long)p->end, p->value_len);
    gw_buf_append(&r->log, p->value, p->value_len);
}

/* 0: complete, 1: incomplete, 2: malformed; -1: no such content type. */
static int
read_body(const char *ctype, const char *body, size_t len, uint8_t cut, struct parts *r)
{
    struct gw_multipart mp;
    int rc = 0;

    memset(r, 0, sizeof(*r));
    r->body_len = len;
    if (gw_worker_multipart_init(&mp, ctype, on_part, r) != 0)
        return -1;
    for (size_t off = 0; off < len && rc == 0;) {
        size_t n = fuzz_piece(cut, len - off);
        rc = gw_worker_multipart_feed(&mp, body + off, n);
        off += n;
    }
    FUZZ_CHECK(rc == 0 || rc == GW_EPROTO);
    return rc != 0 ? 2 : gw_worker_multipart_done(&mp) ? 0 : 1;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *nl = memchr(data, '\n', size);
    char ctype[512], boundary[128];

    if (nl == NULL || nl == (const char *)data || (size_t)(nl - (const char *)data) > sizeof(ctype))
        return 0;
    uint8_t cut = data[0];
    size_t clen = (size_t)(nl - (const char *)data) - 1;
    memcpy(ctype, data + 1, clen);
    ctype[clen] = '\0';
    if (gw_worker_multipart_boundary(ctype, boundary, sizeof(boundary)) == 0)
        FUZZ_CHECK(boundary[0] != '\0' && strlen(boundary) <= 70);

    const char *body = nl + 1;
    size_t len = size - (size_t)(body - (const char *)data);
    struct parts whole, bytes, pieces;
    int a = read_body(ctype, body, len, 0, &whole);
    int b = read_body(ctype, body, len, 1, &bytes);
    int c = read_body(ctype, body, len, cut, &pieces);

    FUZZ_CHECK(a == b && a == c);
    FUZZ_CHECK(fuzz_same(&whole.log, &bytes.log) && fuzz_same(&whole.log, &pieces.log));
    gw_buf_free(&whole.log);
    gw_buf_free(&bytes.log);
    gw_buf_free(&pieces.log);
    return 0;
}
