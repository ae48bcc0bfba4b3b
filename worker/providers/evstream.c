/*
 * evstream.c - AWS's binary event stream (application/vnd.amazon.
 * eventstream), in which Bedrock's ConverseStream answers.
 *
 * A message is a 12-byte prelude (total length, headers length, both
 * big-endian 32-bit, and the CRC-32 of those 8 bytes), the headers (a
 * one-byte name length, the name, a type byte, the value), the payload,
 * and the CRC-32 of everything before it.  Only string headers are read;
 * the others are skipped by the size their type gives them.
 */
#include <string.h>

#include <zlib.h>

#include "worker/worker.h"

#define PRELUDE 12
#define MAX_MESSAGE (16 * 1024 * 1024)

static uint32_t
be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void
put_be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* Bytes a header value of this type takes after the type byte; -1: read a length. */
static long
value_size(unsigned type)
{
    switch (type) {
    case 0:            /* true */
    case 1: return 0;  /* false */
    case 2: return 1;  /* byte */
    case 3: return 2;  /* short */
    case 4: return 4;  /* int */
    case 5: return 8;  /* long */
    case 8: return 8;  /* timestamp */
    case 9: return 16; /* uuid */
    case 6:            /* bytes */
    case 7: return -1; /* string */
    default: return -2;
    }
}

long
gw_worker_evstream_decode(const char *data, size_t len, struct gw_evstream_msg *m)
{
    const unsigned char *p = (const unsigned char *)data;

    memset(m, 0, sizeof(*m));
    if (len < PRELUDE)
        return 0;
    uint32_t total = be32(p), hlen = be32(p + 4);
    if (total < PRELUDE + 4 || total > MAX_MESSAGE || hlen > total - PRELUDE - 4 ||
        crc32(0, p, 8) != be32(p + 8))
        return GW_EPROTO;
    if (len < total)
        return 0;
    if (crc32(0, p, total - 4) != be32(p + total - 4))
        return GW_EPROTO;
    const unsigned char *h = p + PRELUDE, *hend = h + hlen;
    while (h < hend) {
        size_t nlen = *h++;
        if ((size_t)(hend - h) < nlen + 1)
            return GW_EPROTO;
        const char *name = (const char *)h;
        h += nlen;
        unsigned type = *h++;
        long vs = value_size(type);
        size_t vlen;
        if (vs == -2)
            return GW_EPROTO;
        if (vs == -1) {
            if (hend - h < 2)
                return GW_EPROTO;
            vlen = (size_t)h[0] << 8 | h[1];
            h += 2;
        } else {
            vlen = (size_t)vs;
        }
        if ((size_t)(hend - h) < vlen)
            return GW_EPROTO;
        if (type == 7) {
            const char *v = (const char *)h;
#define IS(s) (nlen == sizeof(s) - 1 && memcmp(name, s, nlen) == 0)
            if (IS(":event-type")) {
                m->event_type = v;
                m->event_type_len = vlen;
            } else if (IS(":message-type")) {
                m->message_type = v;
                m->message_type_len = vlen;
            } else if (IS(":exception-type") || IS(":error-code")) {
                m->exception_type = v;
                m->exception_type_len = vlen;
            }
#undef IS
        }
        h += vlen;
    }
    m->payload = (const char *)hend;
    m->payload_len = total - PRELUDE - hlen - 4;
    return (long)total;
}

int
gw_worker_evstream_encode(struct gw_buf *b, const char *const *names, const char *const *values,
                          size_t nheaders, const char *payload, size_t payload_len)
{
    size_t hlen = 0, start = b->len;
    unsigned char pre[PRELUDE], crc[4];

    for (size_t i = 0; i < nheaders; i++)
        hlen += 1 + strlen(names[i]) + 1 + 2 + strlen(values[i]);
    uint32_t total = (uint32_t)(PRELUDE + hlen + payload_len + 4);
    put_be32(pre, total);
    put_be32(pre + 4, (uint32_t)hlen);
    put_be32(pre + 8, (uint32_t)crc32(0, pre, 8));
    if (gw_buf_append(b, (const char *)pre, sizeof(pre)) != 0)
        return GW_ENOMEM;
    for (size_t i = 0; i < nheaders; i++) {
        size_t nl = strlen(names[i]), vl = strlen(values[i]);
        unsigned char n = (unsigned char)nl,
                      t[3] = {7, (unsigned char)(vl >> 8), (unsigned char)vl};
        if (gw_buf_append(b, (const char *)&n, 1) != 0 || gw_buf_append(b, names[i], nl) != 0 ||
            gw_buf_append(b, (const char *)t, 3) != 0 || gw_buf_append(b, values[i], vl) != 0)
            return GW_ENOMEM;
    }
    if (gw_buf_append(b, payload, payload_len) != 0)
        return GW_ENOMEM;
    put_be32(crc, (uint32_t)crc32(0, (const unsigned char *)b->data + start, b->len - start));
    return gw_buf_append(b, (const char *)crc, 4);
}
