/*
 * proto.c - framing of the admin protocol: JSON objects, one per line.
 * The framing is checked: a line longer than GW_PROTO_MAX_LINE is refused
 * rather than buffered without bound.
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "shm/shm.h"

int
gw_proto_line_take(struct gw_buf *b, char **line, size_t *consumed)
{
    char *nl = b->len > 0 ? memchr(b->data, '\n', b->len) : NULL;

    if (nl == NULL)
        return b->len > GW_PROTO_MAX_LINE ? GW_ETOOBIG : GW_ENOENT;
    if ((size_t)(nl - b->data) > GW_PROTO_MAX_LINE)
        return GW_ETOOBIG;
    *nl = '\0';
    *line = b->data;
    *consumed = (size_t)(nl - b->data) + 1;
    return (int)(nl - b->data);
}

int
gw_proto_read_line(int fd, struct gw_buf *b, char **line, size_t *consumed)
{
    for (;;) {
        int rc = gw_proto_line_take(b, line, consumed);
        if (rc != GW_ENOENT)
            return rc;
        if (gw_buf_reserve(b, 65536) != 0)
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
