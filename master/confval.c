/*
 * confval.c - the parsers of single values in the configuration file:
 * strings, integers, counts, decimal numbers, booleans, sizes, durations,
 * permission bits, log levels and "host:port" addresses.  master/schema.c names them in its
 * tables; each checks one value node and stores what it means, or reports
 * the problem at the node ("FILE:LINE:COLUMN: message") and returns
 * GW_ECONFIG.  What a key means beyond its type stays in schema.c.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/un.h>

#include "master/config_int.h"

#define KIB 1024LL
#define MIB (1024 * KIB)
#define GIB (1024 * MIB)
#define SECOND_MS 1000LL

/* ---------------------------------------------------------- node shapes */

/*
 * gw_master_confval_scalar - the text of a scalar that must be non-empty and
 * free of NUL characters, or NULL after reporting that name must be what.
 * The text is the node's, in the load's scratch arena.
 */
const char *
gw_master_confval_scalar(struct load *ld, const struct node *n, const char *name, const char *what)
{
    if (n->kind != NODE_SCALAR || node_is_null(n)) {
        gw_master_config_error(ld, n, "\"%s\" must be %s", name, what);
        return NULL;
    }
    if (strlen(n->value) != n->len) {
        gw_master_config_error(ld, n, "\"%s\" must not contain a NUL character", name);
        return NULL;
    }
    if (n->len == 0) {
        gw_master_config_error(ld, n, "\"%s\" must not be empty", name);
        return NULL;
    }
    return n->value;
}

/*
 * gw_master_confval_sequence - check that n is a non-empty sequence; what
 * names one item in messages.
 */
int
gw_master_confval_sequence(struct load *ld, const struct node *n, const char *name,
                           const char *what)
{
    if (n->kind != NODE_SEQUENCE)
        return gw_master_config_error(ld, n, "\"%s\" must be a list of %ss", name, what);
    if (n->nitems == 0)
        return gw_master_config_error(ld, n, "\"%s\" must list at least one %s", name, what);
    return 0;
}

/*
 * gw_master_config_parse_duration - "500ms", "30s", "5m", "1h" or a bare
 * number of seconds, more than zero, into milliseconds.
 */
int
gw_master_config_parse_duration(const char *s, long *ms)
{
    static const struct {
        const char *unit;
        long long ms;
    } units[] = {{"", SECOND_MS},
                 {"ms", 1},
                 {"s", SECOND_MS},
                 {"m", 60 * SECOND_MS},
                 {"h", 3600 * SECOND_MS}};
    long long n = 0;
    const char *p = s;

    if (s == NULL || *p < '0' || *p > '9')
        return GW_EINVAL;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (n > (LLONG_MAX - 9) / 10)
            return GW_EINVAL;
        n = n * 10 + (*p - '0');
    }
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (strcmp(p, units[i].unit) != 0)
            continue;
        if (n == 0 || n > LONG_MAX / units[i].ms)
            return GW_EINVAL;
        *ms = (long)(n * units[i].ms);
        return 0;
    }
    return GW_EINVAL;
}

/*
 * gw_master_config_parse_size - a number of bytes with an optional binary
 * multiple k, m or g (either case) and an optional b: "512", "16k", "8MB".
 */
int
gw_master_config_parse_size(const char *s, size_t *bytes)
{
    unsigned long long n = 0, mult = 1;
    const char *p = s;

    if (s == NULL || *p < '0' || *p > '9')
        return GW_EINVAL;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (n > (ULLONG_MAX - 9) / 10)
            return GW_EINVAL;
        n = n * 10 + (unsigned long long)(*p - '0');
    }
    switch (*p) {
    case 'k':
    case 'K': mult = KIB, p++; break;
    case 'm':
    case 'M': mult = MIB, p++; break;
    case 'g':
    case 'G': mult = GIB, p++; break;
    default: break;
    }
    if (*p == 'b' || *p == 'B')
        p++;
    if (*p != '\0' || n > SIZE_MAX / mult)
        return GW_EINVAL;
    *bytes = (size_t)(n * mult);
    return 0;
}

/* ------------------------------------------------------- value parsers */

/* "16k" rather than 16384 in messages about bounds. */
static const char *
size_text(struct load *ld, long long bytes)
{
    if (bytes == 0)
        return "0";
    if (bytes % GIB == 0)
        return gw_arena_printf(ld->tmp, "%lldg", bytes / GIB);
    if (bytes % MIB == 0)
        return gw_arena_printf(ld->tmp, "%lldm", bytes / MIB);
    if (bytes % KIB == 0)
        return gw_arena_printf(ld->tmp, "%lldk", bytes / KIB);
    return gw_arena_printf(ld->tmp, "%lld", bytes);
}

/*
 * gw_master_confval_duration_text - "30s" rather than 30000 in messages,
 * in the largest unit that divides ms.  The text lives in ld->tmp.
 */
const char *
gw_master_confval_duration_text(struct load *ld, long long ms)
{
    if (ms % (3600 * SECOND_MS) == 0)
        return gw_arena_printf(ld->tmp, "%lldh", ms / (3600 * SECOND_MS));
    if (ms % (60 * SECOND_MS) == 0)
        return gw_arena_printf(ld->tmp, "%lldm", ms / (60 * SECOND_MS));
    if (ms % SECOND_MS == 0)
        return gw_arena_printf(ld->tmp, "%llds", ms / SECOND_MS);
    return gw_arena_printf(ld->tmp, "%lldms", ms);
}

/* gw_master_confval_string - a non-empty string, copied into the configuration's arena. */
int
gw_master_confval_string(struct load *ld, const struct node *n, const char *name,
                         const struct field *f, void *dst)
{
    const char *s = gw_master_confval_scalar(ld, n, name, "a string");

    (void)f;
    if (s == NULL)
        return GW_ECONFIG;
    *(char **)dst = gw_arena_strdup(ld->cfg->arena, s);
    return 0;
}

/* gw_master_confval_socket - a string that fits in sun_path. */
int
gw_master_confval_socket(struct load *ld, const struct node *n, const char *name,
                         const struct field *f, void *dst)
{
    const size_t max = sizeof(((struct sockaddr_un *)NULL)->sun_path) - 1;

    if (gw_master_confval_string(ld, n, name, f, dst) != 0)
        return GW_ECONFIG;
    if (n->len > max)
        return gw_master_config_error(
            ld, n, "\"%s\" is %zu bytes long; a Unix socket path holds at most %zu", name, n->len,
            max);
    return 0;
}

/*
 * gw_master_confval_mode - octal permission bits of the admin socket,
 * without any bit for other users, into an unsigned.
 */
int
gw_master_confval_mode(struct load *ld, const struct node *n, const char *name,
                       const struct field *f, void *dst)
{
    const char *s =
        gw_master_confval_scalar(ld, n, name, "octal permission bits such as 0600 or 0660");
    unsigned long mode = 0;
    const char *p;

    (void)f;
    if (s == NULL)
        return GW_ECONFIG;
    for (p = s; *p >= '0' && *p <= '7'; p++)
        mode = mode * 8 + (unsigned long)(*p - '0');
    if (*p != '\0' || p - s > 4 || mode > 0777)
        return gw_master_config_error(
            ld, n, "\"%s\" must be octal permission bits such as 0600 or 0660", name);
    if (mode & 0007)
        return gw_master_config_error(ld, n,
                                      "\"%s\" %04lo lets every local user reach the admin socket; "
                                      "use 0600 or 0660",
                                      name, mode);
    *(unsigned *)dst = (unsigned)mode;
    return 0;
}

/* gw_master_confval_int - a decimal integer from f->min to f->max, into an int. */
int
gw_master_confval_int(struct load *ld, const struct node *n, const char *name,
                      const struct field *f, void *dst)
{
    const char *s = gw_master_confval_scalar(ld, n, name, "an integer");
    long long v;
    char *end;

    if (s == NULL)
        return GW_ECONFIG;
    errno = 0;
    v = strtoll(s, &end, 10);
    if (*end != '\0' || errno != 0 || !(*s == '-' || *s == '+' || (*s >= '0' && *s <= '9')))
        return gw_master_config_error(ld, n, "\"%s\" must be an integer", name);
    if (v < f->min || v > f->max)
        return gw_master_config_error(ld, n, "\"%s\" must be between %lld and %lld (got %s)", name,
                                      f->min, f->max, s);
    *(int *)dst = (int)v;
    return 0;
}

/*
 * gw_master_confval_count - a number of things (digits only) from f->min to
 * f->max, into a uint64_t.
 */
int
gw_master_confval_count(struct load *ld, const struct node *n, const char *name,
                        const struct field *f, void *dst)
{
    const char *s = gw_master_confval_scalar(ld, n, name, "a whole number");
    unsigned long long v;
    char *end;

    if (s == NULL)
        return GW_ECONFIG;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (*end != '\0' || errno != 0 || *s < '0' || *s > '9')
        return gw_master_config_error(ld, n, "\"%s\" must be a whole number (got %s)", name,
                                      gw_master_config_show_node(ld, n));
    if (v < (unsigned long long)f->min || v > (unsigned long long)f->max)
        return gw_master_config_error(ld, n, "\"%s\" must be between %lld and %lld (got %s)", name,
                                      f->min, f->max, s);
    *(uint64_t *)dst = (uint64_t)v;
    return 0;
}

/*
 * gw_master_confval_uint - a number of things (digits only) from f->min to
 * f->max, into an unsigned: weights, retries, failures.
 */
int
gw_master_confval_uint(struct load *ld, const struct node *n, const char *name,
                       const struct field *f, void *dst)
{
    uint64_t v;

    if (gw_master_confval_count(ld, n, name, f, &v) != 0)
        return GW_ECONFIG;
    *(unsigned *)dst = (unsigned)v; /* within f->max, which fits */
    return 0;
}

/*
 * gw_master_confval_number - a decimal number such as 15, 0.4 or 2.5e-1,
 * from f->min to f->max, into a double: prices.
 */
int
gw_master_confval_number(struct load *ld, const struct node *n, const char *name,
                         const struct field *f, void *dst)
{
    const char *s = gw_master_confval_scalar(ld, n, name, "a number such as 0.4");
    double v;
    char *end;

    if (s == NULL)
        return GW_ECONFIG;
    /* Decimal only: strtod would also take hex, inf and nan. */
    errno = 0;
    v = strtod(s, &end);
    if (strspn(s, "0123456789.eE+-") != n->len || *end != '\0' || errno != 0 || !isfinite(v))
        return gw_master_config_error(ld, n, "\"%s\" must be a number such as 0.4 (got %s)", name,
                                      gw_master_config_show_node(ld, n));
    if (v < (double)f->min || v > (double)f->max)
        return gw_master_config_error(ld, n, "\"%s\" must be between %lld and %lld (got %s)", name,
                                      f->min, f->max, s);
    *(double *)dst = v;
    return 0;
}

/* gw_master_confval_level - error, warn, info or debug, into a GW_LOG_* int. */
int
gw_master_confval_level(struct load *ld, const struct node *n, const char *name,
                        const struct field *f, void *dst)
{
    const char *s = gw_master_confval_scalar(ld, n, name, "one of error, warn, info, debug");
    int level;

    (void)f;
    if (s == NULL)
        return GW_ECONFIG;
    if ((level = gw_log_level_parse(s)) < 0)
        return gw_master_config_error(ld, n,
                                      "\"%s\" must be one of error, warn, info, debug (got %s)",
                                      name, gw_master_config_show_node(ld, n));
    *(int *)dst = level;
    return 0;
}

/* gw_master_confval_bool - true, yes, on, false, no or off, in any case. */
int
gw_master_confval_bool(struct load *ld, const struct node *n, const char *name,
                       const struct field *f, void *dst)
{
    static const char *const yes[] = {"true", "yes", "on"}, *const no[] = {"false", "no", "off"};
    const char *s = gw_master_confval_scalar(ld, n, name, "true or false");

    (void)f;
    if (s == NULL)
        return GW_ECONFIG;
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *(bool *)dst = true;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *(bool *)dst = false;
            return 0;
        }
    }
    return gw_master_config_error(ld, n, "\"%s\" must be true or false (got %s)", name,
                                  gw_master_config_show_node(ld, n));
}

/* gw_master_confval_size - a size from f->min to f->max bytes, into a size_t. */
int
gw_master_confval_size(struct load *ld, const struct node *n, const char *name,
                       const struct field *f, void *dst)
{
    const char *what = "a size such as 512, 16k, 8m or 1g";
    const char *s = gw_master_confval_scalar(ld, n, name, what);
    size_t v;

    if (s == NULL)
        return GW_ECONFIG;
    if (gw_master_config_parse_size(s, &v) != 0)
        return gw_master_config_error(ld, n, "\"%s\" must be %s (got %s)", name, what,
                                      gw_master_config_show_node(ld, n));
    if ((long long)v < f->min || (long long)v > f->max)
        return gw_master_config_error(ld, n, "\"%s\" must be between %s and %s (got %s)", name,
                                      size_text(ld, f->min), size_text(ld, f->max), s);
    *(size_t *)dst = v;
    return 0;
}

/*
 * gw_master_confval_duration - a duration from f->min to f->max
 * milliseconds, into a long.
 */
int
gw_master_confval_duration(struct load *ld, const struct node *n, const char *name,
                           const struct field *f, void *dst)
{
    const char *what = "a duration such as 500ms, 30s, 5m or 1h";
    const char *s = gw_master_confval_scalar(ld, n, name, what);
    long v;

    if (s == NULL)
        return GW_ECONFIG;
    if (gw_master_config_parse_duration(s, &v) != 0) {
        char after_zeros = s[strspn(s, "0")];
        if (s[0] == '0' && (after_zeros < '0' || after_zeros > '9'))
            return gw_master_config_error(ld, n, "\"%s\" must be longer than zero (got %s)", name,
                                          gw_master_config_show_node(ld, n));
        return gw_master_config_error(ld, n, "\"%s\" must be %s (got %s)", name, what,
                                      gw_master_config_show_node(ld, n));
    }
    if (v < f->min || v > f->max)
        return gw_master_config_error(ld, n, "\"%s\" must be between %s and %s (got %s)", name,
                                      gw_master_confval_duration_text(ld, f->min),
                                      gw_master_confval_duration_text(ld, f->max), s);
    *(long *)dst = v;
    return 0;
}

/* gw_master_confval_section - a nested mapping walked with f->sub into dst. */
int
gw_master_confval_section(struct load *ld, const struct node *n, const char *name,
                          const struct field *f, void *dst)
{
    return gw_master_config_walk(ld, n, name, f->sub, dst);
}

/* ------------------------------------------------------------- listen */

/* A host name: letters, digits, '-', '_' and dots. */
static bool
host_name_ok(const char *s, size_t len)
{
    bool digits_only = true;

    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.'))
            return false;
        if (!((c >= '0' && c <= '9') || c == '.'))
            digits_only = false;
    }
    if (digits_only) {
        /* Looks like an IPv4 address: then it must be one. */
        char buf[INET_ADDRSTRLEN];
        struct in_addr a;
        if (len >= sizeof(buf))
            return false;
        memcpy(buf, s, len);
        buf[len] = '\0';
        return inet_pton(AF_INET, buf, &a) == 1;
    }
    return true;
}

/*
 * gw_master_confval_address_check - check one "host:port" scalar, where
 * host is an IPv4 address, [IPv6], a name, "*" or empty and port is from 1
 * to 65535.  Stores nothing: the callers keep the text.
 */
int
gw_master_confval_address_check(struct load *ld, const struct node *n, const char *name)
{
    const char *s = gw_master_confval_scalar(ld, n, name, "an address such as 127.0.0.1:8080");
    const char *colon, *port;
    char buf[INET6_ADDRSTRLEN];
    struct in6_addr a6;
    long p = 0;

    if (s == NULL)
        return GW_ECONFIG;
    colon = strrchr(s, ':');
    if (colon == NULL)
        return gw_master_config_error(ld, n,
                                      "\"%s\" must be host:port, such as 127.0.0.1:8080 (got %s)",
                                      name, gw_master_config_show_node(ld, n));
    port = colon + 1;
    for (const char *c = port; *c != '\0'; c++) {
        if (*c < '0' || *c > '9' || p > 65535) {
            p = -1;
            break;
        }
        p = p * 10 + (*c - '0');
    }
    if (p < 1 || p > 65535)
        return gw_master_config_error(ld, n,
                                      "\"%s\": port must be a number from 1 to 65535 (got %s)",
                                      name, gw_master_config_show(ld, port, strlen(port)));

    size_t hlen = (size_t)(colon - s);
    if (s[0] == '[') {
        if (hlen < 2 || s[hlen - 1] != ']' || hlen - 2 >= sizeof(buf))
            return gw_master_config_error(ld, n,
                                          "\"%s\": bad IPv6 address in %s; write it as [::1]:8080",
                                          name, gw_master_config_show_node(ld, n));
        memcpy(buf, s + 1, hlen - 2);
        buf[hlen - 2] = '\0';
        if (inet_pton(AF_INET6, buf, &a6) != 1)
            return gw_master_config_error(ld, n, "\"%s\": bad IPv6 address in %s", name,
                                          gw_master_config_show_node(ld, n));
    } else if (memchr(s, ':', hlen) != NULL) {
        return gw_master_config_error(
            ld, n, "\"%s\": an IPv6 address must be in brackets, as in [::1]:8080", name);
    } else if (hlen > 0 && !(hlen == 1 && s[0] == '*') && !host_name_ok(s, hlen)) {
        return gw_master_config_error(ld, n, "\"%s\": bad host in %s", name,
                                      gw_master_config_show_node(ld, n));
    }
    return 0;
}
