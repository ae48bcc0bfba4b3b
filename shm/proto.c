/*
 * proto.c - framing of the admin protocol: JSON objects, one per line.
 * The framing is checked: a line longer than its limit (GW_PROTO_MAX_LINE
 * for a request, GW_PROTO_MAX_REPLY for a reply) is refused rather than
 * buffered without bound.
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "shm/shm.h"

/* gw_proto_line_take with a limit of max bytes, looking for the newline
 * only from offset from on (the bytes before it were searched already). */
static int
line_take(struct gw_buf *b, size_t max, size_t from, char **line, size_t *consumed)
{
    char *nl = b->len > from ? memchr(b->data + from, '\n', b->len - from) : NULL;

    if (nl == NULL)
        return b->len > max ? GW_ETOOBIG : GW_ENOENT;
    if ((size_t)(nl - b->data) > max)
        return GW_ETOOBIG;
    *nl = '\0';
    *line = b->data;
    *consumed = (size_t)(nl - b->data) + 1;
    return (int)(nl - b->data);
}

int
gw_proto_line_take(struct gw_buf *b, char **line, size_t *consumed)
{
    return line_take(b, GW_PROTO_MAX_LINE, 0, line, consumed);
}

int
gw_proto_read_line_max(int fd, struct gw_buf *b, size_t max, char **line, size_t *consumed)
{
    size_t searched = 0;

    for (;;) {
        int rc = line_take(b, max, searched, line, consumed);
        if (rc != GW_ENOENT)
            return rc;
        searched = b->len;
        /* Grow geometrically: a reply of many megabytes takes a few
         * dozen reads, not one per 64 KiB with a copy each time. */
        if (gw_buf_reserve(b, b->len < 65536 ? 65536 : b->len) != 0)
            return GW_ENOMEM;
        ssize_t n = read(fd, b->data + b->len, b->cap - b->len - 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return errno == EAGAIN || errno == EWOULDBLOCK ? GW_ETIMEDOUT : GW_EIO;
        if (n == 0)
            return GW_ECLOSED;
        b->len += (size_t)n;
        b->data[b->len] = '\0';
    }
}

int
gw_proto_read_line(int fd, struct gw_buf *b, char **line, size_t *consumed)
{
    return gw_proto_read_line_max(fd, b, GW_PROTO_MAX_LINE, line, consumed);
}
