/*
 * multipart.c - multipart/form-data (RFC 7578) read as it streams: the
 * body is fed in pieces of any size and never kept; each part is reported
 * when it ends with its name, whether it is a file, where its value lies
 * in the body (byte offsets) and the first bytes of the value.  That is
 * what an upload needs to be routed (the model field) and rewritten on
 * its way upstream (the model's value replaced) without holding the file.
 *
 * The delimiter "CRLF--boundary" is searched for with Knuth-Morris-Pratt,
 * so a delimiter split between two pieces, or one that starts inside a
 * false start, is found all the same; the body of a part is skipped with
 * memchr between carriage returns.
 */
#include <ctype.h>
#include <string.h>
#include <strings.h>

#include "worker/worker.h"

enum mp_state {
    MP_PREAMBLE = 0, /* before the first delimiter */
    MP_AFTER_DELIM,  /* "--" (the end) or CRLF (a part) follows */
    MP_DASH,         /* the second '-' of the closing delimiter */
    MP_AFTER_CR,     /* the LF after the delimiter line */
    MP_HEADERS,      /* a part's header lines */
    MP_BODY,         /* a part's value */
    MP_EPILOGUE,     /* after the closing delimiter: ignored */
};

int
gw_worker_multipart_boundary(const char *ctype, char *out, size_t size)
{
    const char *p;
    size_t n = 0;

    if (ctype == NULL || strncasecmp(ctype, "multipart/form-data", 19) != 0)
        return GW_EINVAL;
    for (p = ctype + 19; (p = strchr(p, ';')) != NULL;) {
        p++;
        while (*p == ' ' || *p == '\t')
            p++;
        if (strncasecmp(p, "boundary=", 9) != 0)
            continue;
        p += 9;
        bool quoted = *p == '"';
        p += quoted;
        while (p[n] != '\0' && (quoted ? p[n] != '"' : p[n] != ';' && p[n] != ' '))
            n++;
        /* RFC 2046: 1 to 70 characters. */
        if (n == 0 || n > 70 || n + 1 > size)
            return GW_EINVAL;
        memcpy(out, p, n);
        out[n] = '\0';
        return 0;
    }
    return GW_EINVAL;
}

int
gw_worker_multipart_init(struct gw_multipart *mp, const char *ctype, gw_multipart_part_fn fn,
                         void *ctx)
{
    char boundary[72];

    memset(mp, 0, sizeof(*mp));
    if (gw_worker_multipart_boundary(ctype, boundary, sizeof(boundary)) != 0)
        return GW_EINVAL;
    mp->dlen = (size_t)snprintf(mp->delim, sizeof(mp->delim), "\r\n--%s", boundary);
    /* KMP: fail[k] is the length of the longest proper prefix of
     * delim[0..k] that is also its suffix. */
    mp->fail[0] = 0;
    for (size_t k = 1, j = 0; k < mp->dlen; k++) {
        while (j > 0 && mp->delim[k] != mp->delim[j])
            j = mp->fail[j - 1];
        if (mp->delim[k] == mp->delim[j])
            j++;
        mp->fail[k] = (uint8_t)j;
    }
    /* The body starts with "--boundary": as if a CRLF came before it. */
    mp->match = 2;
    mp->state = MP_PREAMBLE;
    mp->fn = fn;
    mp->ctx = ctx;
    return 0;
}

/* Keep the first bytes of a value (and room for a delimiter's start,
 * which may turn out to be value after all). */
static void
value_add(struct gw_multipart *mp, const char *p, size_t n)
{
    size_t room = sizeof(mp->value) - mp->vlen;

    if (n > room)
        n = room;
    memcpy(mp->value + mp->vlen, p, n);
    mp->vlen += n;
}

/* The value of parameter name in a header value ("form-data; name=..."). */
static bool
param_get(const char *v, const char *name, char *out, size_t size)
{
    size_t nlen = strlen(name);

    for (const char *p = v; (p = strchr(p, ';')) != NULL;) {
        p++;
        while (*p == ' ' || *p == '\t')
            p++;
        if (strncasecmp(p, name, nlen) != 0 || p[nlen] != '=')
            continue;
        p += nlen + 1;
        bool quoted = *p == '"';
        size_t n = 0;
        p += quoted;
        while (p[n] != '\0' && (quoted ? p[n] != '"' : p[n] != ';' && p[n] != ' '))
            n++;
        if (n + 1 > size)
            n = size - 1;
        memcpy(out, p, n);
        out[n] = '\0';
        return true;
    }
    return false;
}

/* One header line of a part (without its CRLF). */
static void
header_line(struct gw_multipart *mp)
{
    char *line = mp->line, *colon = strchr(line, ':');
    char filename[8];

    if (colon == NULL)
        return;
    *colon = '\0';
    if (strcasecmp(line, "content-disposition") != 0)
        return;
    param_get(colon + 1, "name", mp->part.name, sizeof(mp->part.name));
    mp->part.file = param_get(colon + 1, "filename", filename, sizeof(filename));
}

/* The delimiter ended at mp->pos: the part before it is whole. */
static void
part_end(struct gw_multipart *mp)
{
    struct gw_multipart_part *p = &mp->part;

    p->end = mp->pos - mp->dlen;
    uint64_t len = p->end - p->start;
    p->value = mp->value;
    p->value_len = len < GW_MULTIPART_VALUE_MAX ? (size_t)len : GW_MULTIPART_VALUE_MAX;
    if (p->value_len > mp->vlen)
        p->value_len = mp->vlen;
    mp->nparts++;
    if (mp->fn != NULL)
        mp->fn(mp->ctx, p);
}

int
gw_worker_multipart_feed(struct gw_multipart *mp, const char *data, size_t len)
{
    size_t i = 0;

    if (mp->state < 0)
        return GW_EPROTO;
    while (i < len) {
        if (mp->state == MP_PREAMBLE || mp->state == MP_BODY) {
            bool body = mp->state == MP_BODY;
            if (mp->match == 0) {
                /* No delimiter can start before the next CR. */
                const char *cr = memchr(data + i, '\r', len - i);
                size_t skip = cr != NULL ? (size_t)(cr - (data + i)) : len - i;
                if (body)
                    value_add(mp, data + i, skip);
                i += skip;
                mp->pos += skip;
                if (i == len)
                    break;
            }
            char ch = data[i++];
            mp->pos++;
            if (body)
                value_add(mp, &ch, 1);
            while (mp->match > 0 && ch != mp->delim[mp->match])
                mp->match = mp->fail[mp->match - 1];
            if (ch == mp->delim[mp->match])
                mp->match++;
            if (mp->match == mp->dlen) {
                mp->match = 0;
                if (body)
                    part_end(mp);
                mp->state = MP_AFTER_DELIM;
            }
            continue;
        }
        char ch = data[i++];
        mp->pos++;
        switch (mp->state) {
        case MP_AFTER_DELIM:
            if (ch == '-')
                mp->state = MP_DASH;
            else if (ch == '\r')
                mp->state = MP_AFTER_CR;
            else if (ch != ' ' && ch != '\t') /* transport padding */
                goto bad;
            break;
        case MP_DASH:
            if (ch != '-')
                goto bad;
            mp->state = MP_EPILOGUE;
            mp->closed = true;
            break;
        case MP_AFTER_CR:
            if (ch != '\n')
                goto bad;
            memset(&mp->part, 0, sizeof(mp->part));
            mp->line_len = 0;
            mp->state = MP_HEADERS;
            break;
        case MP_HEADERS:
            if (ch == '\n' && mp->line_len > 0 && mp->line[mp->line_len - 1] == '\r') {
                mp->line[--mp->line_len] = '\0';
                if (mp->line_len == 0) {
                    mp->part.start = mp->pos;
                    mp->vlen = 0;
                    mp->state = MP_BODY;
                } else {
                    header_line(mp);
                    mp->line_len = 0;
                }
                break;
            }
            if (mp->line_len + 1 >= sizeof(mp->line))
                goto bad;
            mp->line[mp->line_len++] = ch;
            break;
        default: /* MP_EPILOGUE */ i = len; break;
        }
    }
    return 0;
bad:
    mp->state = -1;
    return GW_EPROTO;
}

bool
gw_worker_multipart_done(const struct gw_multipart *mp)
{
    return mp->closed;
}
