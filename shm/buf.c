/*
 * buf.c - growable heap byte buffers.  The data is always NUL-terminated
 * past len (not counted), so text in a buffer can be used as a C string.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shm/shm.h"

int
gw_buf_reserve(struct gw_buf *b, size_t extra)
{
    if (b->cap - b->len > extra && b->data != NULL)
        return 0;
    size_t want = b->len + extra + 1;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < want)
        cap *= 2;
    char *p = realloc(b->data, cap);
    if (p == NULL)
        return GW_ENOMEM;
    b->data = p;
    b->cap = cap;
    return 0;
}

int
gw_buf_append_str(struct gw_buf *b, const char *s)
{
    return gw_buf_append(b, s, strlen(s));
}

int
gw_buf_append_u64(struct gw_buf *b, uint64_t v)
{
    char text[GW_U64_TEXT_MAX];

    return gw_buf_append(b, text, gw_u64_text(v, text));
}

int
gw_buf_append_i64(struct gw_buf *b, int64_t v)
{
    if (v >= 0)
        return gw_buf_append_u64(b, (uint64_t)v);
    int rc = gw_buf_append(b, "-", 1);
    return rc != 0 ? rc : gw_buf_append_u64(b, -(uint64_t)v);
}

int
gw_buf_printf(struct gw_buf *b, const char *fmt, ...)
{
    size_t room = b->data != NULL ? b->cap - b->len : 0;
    va_list ap;

    /* Most text fits in the room the buffer has: format once, there. */
    va_start(ap, fmt);
    int n = vsnprintf(room > 0 ? b->data + b->len : NULL, room, fmt, ap);
    va_end(ap);
    if (n < 0) {
        if (b->data != NULL)
            b->data[b->len] = '\0';
        return GW_EINVAL;
    }
    if ((size_t)n >= room) {
        int rc = gw_buf_reserve(b, (size_t)n);
        if (rc != 0) {
            if (b->data != NULL)
                b->data[b->len] = '\0';
            return rc;
        }
        va_start(ap, fmt);
        vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
        va_end(ap);
    }
    b->len += (size_t)n;
    return 0;
}

void
gw_buf_consume(struct gw_buf *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
    } else {
        memmove(b->data, b->data + n, b->len - n);
        b->len -= n;
    }
    if (b->data != NULL)
        b->data[b->len] = '\0';
}

void
gw_buf_free(struct gw_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}
