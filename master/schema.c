/*
 * schema.c - what the keys of the configuration file mean: one table per
 * kind of mapping (the top level, admin, http, a provider, a model, ...),
 * the parsers their rows name, the defaults of what the file leaves out and
 * the checks that need the whole file.  master/config.c reads the file into
 * a tree and walks it with these tables; adding a setting is adding a row.
 *
 * Scalars are typed by the key they belong to, not by YAML's own rules, so
 * workers: "8" is the integer 8 and mode: 0660 is octal, whatever the YAML
 * version would say.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "master/config_int.h"

#define KIB 1024LL
#define MIB (1024 * KIB)
#define GIB (1024 * MIB)
#define SECOND_MS 1000LL
#define DAY_MS (24 * 3600 * SECOND_MS)

#define CONFIG_MAX_SECRET (64 * 1024) /* bytes of an api_key_file */
#define CONFIG_MAX_WORKERS 1024

static const char *const provider_types[] = {
    [GW_PROVIDER_OPENAI] = "openai",
};

/* ------------------------------------------------------- reading nodes */

/* The key node of key in mapping map, or NULL. */
static const struct node *
map_key(const struct node *map, const char *key)
{
    for (size_t i = 0; i + 1 < map->nitems; i += 2)
        if (map->items[i]->kind == NODE_SCALAR && strcmp(map->items[i]->value, key) == 0)
            return map->items[i];
    return NULL;
}

/* The value node of key in mapping map, or NULL. */
static const struct node *
map_value(const struct node *map, const char *key)
{
    for (size_t i = 0; i + 1 < map->nitems; i += 2)
        if (map->items[i]->kind == NODE_SCALAR && strcmp(map->items[i]->value, key) == 0)
            return map->items[i + 1];
    return NULL;
}

/*
 * The text of a scalar that must be non-empty, or NULL after reporting that
 * name must be what.
 */
static const char *
scalar(struct load *ld, const struct node *n, const char *name, const char *what)
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

/* Check that n is a non-empty sequence; what names one item in messages. */
static int
sequence(struct load *ld, const struct node *n, const char *name, const char *what)
{
    if (n->kind != NODE_SEQUENCE)
        return gw_master_config_error(ld, n, "\"%s\" must be a list of %ss", name, what);
    if (n->nitems == 0)
        return gw_master_config_error(ld, n, "\"%s\" must list at least one %s", name, what);
    return 0;
}
/* ------------------------------------------------------- value parsers */

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

/* "16k" rather than 16384 in messages about bounds. */
static const char *
size_text(struct load *ld, long long bytes)
{
    if (bytes % GIB == 0)
        return gw_arena_printf(ld->tmp, "%lldg", bytes / GIB);
    if (bytes % MIB == 0)
        return gw_arena_printf(ld->tmp, "%lldm", bytes / MIB);
    if (bytes % KIB == 0)
        return gw_arena_printf(ld->tmp, "%lldk", bytes / KIB);
    return gw_arena_printf(ld->tmp, "%lld", bytes);
}

static const char *
duration_text(struct load *ld, long long ms)
{
    if (ms % (3600 * SECOND_MS) == 0)
        return gw_arena_printf(ld->tmp, "%lldh", ms / (3600 * SECOND_MS));
    if (ms % (60 * SECOND_MS) == 0)
        return gw_arena_printf(ld->tmp, "%lldm", ms / (60 * SECOND_MS));
    if (ms % SECOND_MS == 0)
        return gw_arena_printf(ld->tmp, "%llds", ms / SECOND_MS);
    return gw_arena_printf(ld->tmp, "%lldms", ms);
}

static int
parse_string(struct load *ld, const struct node *n, const char *name, const struct field *f,
             void *dst)
{
    const char *s = scalar(ld, n, name, "a string");

    (void)f;
    if (s == NULL)
        return GW_ECONFIG;
    *(char **)dst = gw_arena_strdup(ld->cfg->arena, s);
    return 0;
}

static int
parse_socket(struct load *ld, const struct node *n, const char *name, const struct field *f,
             void *dst)
{
    const size_t max = sizeof(((struct sockaddr_un *)NULL)->sun_path) - 1;

    if (parse_string(ld, n, name, f, dst) != 0)
        return GW_ECONFIG;
    if (n->len > max)
        return gw_master_config_error(
            ld, n, "\"%s\" is %zu bytes long; a Unix socket path holds at most %zu", name, n->len,
            max);
    return 0;
}

static int
parse_mode(struct load *ld, const struct node *n, const char *name, const struct field *f,
           void *dst)
{
    const char *s = scalar(ld, n, name, "octal permission bits such as 0600 or 0660");
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

static int
parse_int(struct load *ld, const struct node *n, const char *name, const struct field *f, void *dst)
{
    const char *s = scalar(ld, n, name, "an integer");
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

static int
parse_level(struct load *ld, const struct node *n, const char *name, const struct field *f,
            void *dst)
{
    const char *s = scalar(ld, n, name, "one of error, warn, info, debug");
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

static int
parse_bool(struct load *ld, const struct node *n, const char *name, const struct field *f,
           void *dst)
{
    static const char *const yes[] = {"true", "yes", "on"}, *const no[] = {"false", "no", "off"};
    const char *s = scalar(ld, n, name, "true or false");

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

static int
parse_size(struct load *ld, const struct node *n, const char *name, const struct field *f,
           void *dst)
{
    const char *what = "a size such as 512, 16k, 8m or 1g";
    const char *s = scalar(ld, n, name, what);
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

static int
parse_duration(struct load *ld, const struct node *n, const char *name, const struct field *f,
               void *dst)
{
    const char *what = "a duration such as 500ms, 30s, 5m or 1h";
    const char *s = scalar(ld, n, name, what);
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
                                      duration_text(ld, f->min), duration_text(ld, f->max), s);
    *(long *)dst = v;
    return 0;
}

static int
parse_section(struct load *ld, const struct node *n, const char *name, const struct field *f,
              void *dst)
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

/* Check one "host:port"; host is an IPv4 address, [IPv6], a name, "*" or empty. */
static int
listen_check(struct load *ld, const struct node *n, const char *name)
{
    const char *s = scalar(ld, n, name, "an address such as 127.0.0.1:8080");
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

static int
parse_listen(struct load *ld, const struct node *n, const char *name, const struct field *f,
             void *dst)
{
    struct gw_config *cfg = dst;
    size_t count = n->kind == NODE_SEQUENCE ? n->nitems : 1;

    (void)f;
    if (n->kind == NODE_SEQUENCE && sequence(ld, n, name, "address") != 0)
        return GW_ECONFIG;
    cfg->listen = gw_arena_zalloc(cfg->arena, count * sizeof(*cfg->listen));
    for (size_t i = 0; i < count; i++) {
        const struct node *item = n->kind == NODE_SEQUENCE ? n->items[i] : n;
        const char *item_name =
            n->kind == NODE_SEQUENCE ? gw_arena_printf(ld->tmp, "%s[%zu]", name, i) : name;

        if (listen_check(ld, item, item_name) != 0)
            return GW_ECONFIG;
        for (size_t j = 0; j < i; j++)
            if (strcmp(cfg->listen[j], item->value) == 0)
                return gw_master_config_error(ld, item, "\"%s\": %s is listed twice", item_name,
                                              gw_master_config_show_node(ld, item));
        cfg->listen[i] = gw_arena_strdup(cfg->arena, item->value);
    }
    cfg->nlisten = count;
    return 0;
}

/* ----------------------------------------------------------- providers */

static int
parse_provider_name(struct load *ld, const struct node *n, const char *name, const struct field *f,
                    void *dst)
{
    const char *s = scalar(ld, n, name, "a string");

    if (s == NULL)
        return GW_ECONFIG;
    if (strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != n->len)
        return gw_master_config_error(
            ld, n, "\"%s\" may hold only letters, digits, '.', '_' and '-' (got %s)", name,
            gw_master_config_show_node(ld, n));
    return parse_string(ld, n, name, f, dst);
}

static int
parse_provider_type(struct load *ld, const struct node *n, const char *name, const struct field *f,
                    void *dst)
{
    const char *s = scalar(ld, n, name, "a provider type");
    struct gw_buf b = {0};
    int rc;

    (void)f;
    if (s == NULL)
        return GW_ECONFIG;
    for (size_t i = 0; i < sizeof(provider_types) / sizeof(provider_types[0]); i++) {
        if (strcmp(s, provider_types[i]) == 0) {
            *(enum gw_provider_type *)dst = (enum gw_provider_type)i;
            return 0;
        }
        gw_buf_printf(&b, "%s%s", i == 0 ? "" : ", ", provider_types[i]);
    }
    rc = gw_master_config_error(ld, n, "provider type %s is not supported (supported: %s)",
                                gw_master_config_show_node(ld, n), b.data != NULL ? b.data : "");
    gw_buf_free(&b);
    return rc;
}

/* An http:// or https:// URL with a host; trailing slashes are dropped. */
static int
parse_url(struct load *ld, const struct node *n, const char *name, const struct field *f, void *dst)
{
    const char *s = scalar(ld, n, name, "a URL such as https://api.openai.com/v1");
    const char *host, *authority;
    size_t len;

    (void)f;
    if (s == NULL)
        return GW_ECONFIG;
    /* Before any message quotes the URL: it may carry a password. */
    authority = strstr(s, "://") != NULL ? strstr(s, "://") + 3 : s;
    if (memchr(authority, '@', strcspn(authority, "/?#")) != NULL)
        return gw_master_config_error(
            ld, n,
            "\"%s\" must not hold credentials; name them with api_key_env or "
            "api_key_file",
            name);
    if (strncmp(s, "http://", 7) == 0)
        host = s + 7;
    else if (strncmp(s, "https://", 8) == 0)
        host = s + 8;
    else
        return gw_master_config_error(ld, n, "\"%s\" must start with http:// or https:// (got %s)",
                                      name, gw_master_config_show_node(ld, n));
    size_t hostlen = strcspn(host, "/?#");
    if (hostlen == 0 || host[0] == ':')
        return gw_master_config_error(ld, n, "\"%s\" has no host (got %s)", name,
                                      gw_master_config_show_node(ld, n));
    for (const char *c = s; *c != '\0'; c++)
        if ((unsigned char)*c <= ' ' || *c == 0x7f)
            return gw_master_config_error(
                ld, n, "\"%s\" must not contain spaces or control characters", name);
    if (strpbrk(s, "?#") != NULL)
        return gw_master_config_error(ld, n, "\"%s\" must not have a query or fragment (got %s)",
                                      name, gw_master_config_show_node(ld, n));
    for (len = n->len; len > 0 && s[len - 1] == '/'; len--)
        ;
    *(char **)dst = gw_arena_strndup(ld->cfg->arena, s, len);
    return 0;
}

static int
parse_env_name(struct load *ld, const struct node *n, const char *name, const struct field *f,
               void *dst)
{
    const char *s = scalar(ld, n, name, "the name of an environment variable");

    if (s == NULL)
        return GW_ECONFIG;
    if ((s[0] >= '0' && s[0] <= '9') ||
        strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_") != n->len)
        return gw_master_config_error(ld, n,
                                      "\"%s\" must be the name of an environment variable, "
                                      "such as OPENAI_API_KEY (got %s)",
                                      name, gw_master_config_show_node(ld, n));
    return parse_string(ld, n, name, f, dst);
}

/* A secret may not carry a line break or control character into a header. */
static bool
secret_ok(const char *s)
{
    for (; *s != '\0'; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return false;
    return true;
}

/*
 * Read the provider's api_key_file (n is its value node) into p->api_key,
 * without surrounding whitespace.  The secret never appears in a message.
 */
static int
secret_from_file(struct load *ld, struct gw_provider *p, const struct node *n)
{
    char *data = NULL;
    size_t len = 0, start = 0;
    struct stat st;
    int rc = 0;

    if (gw_master_config_read_file(p->api_key_file, CONFIG_MAX_SECRET, &data, &len) != 0) {
        rc = gw_master_config_error(ld, n, "cannot read api_key_file %s: %s",
                                    gw_master_config_show_node(ld, n), strerror(errno));
        goto fail;
    }
    while (len > 0 && strchr(" \t\r\n", data[len - 1]) != NULL)
        data[--len] = '\0';
    while (start < len && strchr(" \t\r\n", data[start]) != NULL)
        start++;
    if (start == len) {
        rc = gw_master_config_error(ld, n, "api_key_file %s is empty",
                                    gw_master_config_show_node(ld, n));
        goto fail;
    }
    if (strlen(data + start) != len - start || !secret_ok(data + start)) {
        rc = gw_master_config_error(ld, n,
                                    "api_key_file %s must hold one line without control characters",
                                    gw_master_config_show_node(ld, n));
        goto fail;
    }
    if (stat(p->api_key_file, &st) == 0 && (st.st_mode & S_IROTH))
        gw_log(GW_LOG_WARN, "provider \"%s\": api_key_file %s is readable by every user", p->name,
               p->api_key_file);
    p->api_key = gw_arena_strndup(ld->cfg->arena, data + start, len - start);

fail:
    if (data != NULL) {
        explicit_bzero(data, len);
        free(data);
    }
    return rc;
}

/* Checks of one provider that span its keys, and its secret. */
static int
provider_finish(struct load *ld, struct gw_provider *p, const struct node *map)
{
    const struct node *env = map_key(map, "api_key_env"), *file = map_key(map, "api_key_file");

    if (env != NULL && file != NULL) {
        const struct node *later =
            (file->line > env->line || (file->line == env->line && file->column > env->column))
                ? file
                : env;
        return gw_master_config_error(
            ld, later, "provider \"%s\": set api_key_env or api_key_file, not both", p->name);
    }
    if (file != NULL)
        return secret_from_file(ld, p, map_value(map, "api_key_file"));
    if (env != NULL) {
        const char *v = getenv(p->api_key_env);
        /* Unset is fine (a local server may want no key): warned once the load succeeds. */
        if (v != NULL && *v != '\0') {
            if (!secret_ok(v))
                return gw_master_config_error(ld, map_value(map, "api_key_env"),
                                              "environment variable %s holds control characters",
                                              p->api_key_env);
            p->api_key = gw_arena_strdup(ld->cfg->arena, v);
        }
    }
    return 0;
}

static int
parse_providers(struct load *ld, const struct node *n, const char *name, const struct field *f,
                void *dst)
{
    struct gw_config *cfg = dst;

    if (sequence(ld, n, name, "provider") != 0)
        return GW_ECONFIG;
    cfg->providers = gw_arena_zalloc(cfg->arena, n->nitems * sizeof(*cfg->providers));
    ld->provider_names = gw_arena_zalloc(ld->tmp, n->nitems * sizeof(*ld->provider_names));
    for (size_t i = 0; i < n->nitems; i++) {
        const struct node *item = n->items[i];
        struct gw_provider *p = &cfg->providers[i];
        const char *item_name = gw_arena_printf(ld->tmp, "%s[%zu]", name, i);

        if (gw_master_config_walk(ld, item, item_name, f->sub, p) != 0)
            return GW_ECONFIG;
        const struct node *pname = map_value(item, "name");
        for (size_t j = 0; j < i; j++)
            if (strcmp(cfg->providers[j].name, p->name) == 0)
                return gw_master_config_error(
                    ld, pname, "duplicate provider name %s (first at line %d)",
                    gw_master_config_show_node(ld, pname), ld->provider_names[j]->line);
        ld->provider_names[i] = pname;
        cfg->nproviders = i + 1;
        if (provider_finish(ld, p, item) != 0)
            return GW_ECONFIG;
    }
    return 0;
}

/* -------------------------------------------------------------- models */

/* A model name as clients or providers spell it: any text without blanks. */
static int
parse_model_name(struct load *ld, const struct node *n, const char *name, const struct field *f,
                 void *dst)
{
    const char *s = scalar(ld, n, name, "a string");

    if (s == NULL)
        return GW_ECONFIG;
    for (const char *c = s; *c != '\0'; c++)
        if ((unsigned char)*c <= ' ' || *c == 0x7f)
            return gw_master_config_error(
                ld, n, "\"%s\" must not contain spaces or control characters (got %s)", name,
                gw_master_config_show_node(ld, n));
    return parse_string(ld, n, name, f, dst);
}

static int
parse_target_provider(struct load *ld, const struct node *n, const char *name,
                      const struct field *f, void *dst)
{
    struct ref *r;

    (void)f;
    if (scalar(ld, n, name, "the name of a provider") == NULL)
        return GW_ECONFIG;
    /* Providers may come later in the file: resolved at the end. */
    r = gw_arena_zalloc(ld->tmp, sizeof(*r));
    r->slot = dst;
    r->node = n;
    *ld->refs_tail = r;
    ld->refs_tail = &r->next;
    return 0;
}

static int
parse_targets(struct load *ld, const struct node *n, const char *name, const struct field *f,
              void *dst)
{
    struct gw_model *m = dst;

    if (sequence(ld, n, name, "target") != 0)
        return GW_ECONFIG;
    m->targets = gw_arena_zalloc(ld->cfg->arena, n->nitems * sizeof(*m->targets));
    for (size_t i = 0; i < n->nitems; i++) {
        const char *item_name = gw_arena_printf(ld->tmp, "%s[%zu]", name, i);
        if (gw_master_config_walk(ld, n->items[i], item_name, f->sub, &m->targets[i]) != 0)
            return GW_ECONFIG;
        m->ntargets = i + 1;
    }
    return 0;
}

static int
parse_models(struct load *ld, const struct node *n, const char *name, const struct field *f,
             void *dst)
{
    struct gw_config *cfg = dst;

    if (sequence(ld, n, name, "model") != 0)
        return GW_ECONFIG;
    cfg->models = gw_arena_zalloc(cfg->arena, n->nitems * sizeof(*cfg->models));
    ld->model_names = gw_arena_zalloc(ld->tmp, n->nitems * sizeof(*ld->model_names));
    for (size_t i = 0; i < n->nitems; i++) {
        const struct node *item = n->items[i];
        struct gw_model *m = &cfg->models[i];
        const char *item_name = gw_arena_printf(ld->tmp, "%s[%zu]", name, i);

        /* Timeouts left at 0 take the top-level values at the end. */
        if (gw_master_config_walk(ld, item, item_name, f->sub, m) != 0)
            return GW_ECONFIG;
        const struct node *mname = map_value(item, "name");
        for (size_t j = 0; j < i; j++)
            if (strcmp(cfg->models[j].name, m->name) == 0)
                return gw_master_config_error(
                    ld, mname, "duplicate model name %s (first at line %d)",
                    gw_master_config_show_node(ld, mname), ld->model_names[j]->line);
        ld->model_names[i] = mname;
        cfg->nmodels = i + 1;
    }
    return 0;
}

/* ----------------------------------------------------------- the schema */

/*
 * One table per kind of mapping; a key not in its table is refused with the
 * table's keys listed in the order given here.  FIELD is one row: the key,
 * its parser, where the value goes, then optionally .min and .max (bounds
 * of integers, sizes and durations), .sub (a nested table) and .required.
 */
/* clang-format off */
#define FIELD(k, fn, off, ...) {.key = (k), .parse = (fn), .offset = (off), __VA_ARGS__}
/* clang-format on */

/* admin:, log: and upstream: fill struct gw_config itself. */
static const struct field admin_fields[] = {
    FIELD("socket", parse_socket, offsetof(struct gw_config, admin_socket)),
    FIELD("mode", parse_mode, offsetof(struct gw_config, admin_mode)),
    {.key = NULL},
};

static const struct field log_fields[] = {
    FIELD("level", parse_level, offsetof(struct gw_config, log_level)),
    FIELD("access", parse_bool, offsetof(struct gw_config, access_log)),
    {.key = NULL},
};

static const struct field http_fields[] = {
    FIELD("max_header_size", parse_size, offsetof(struct gw_http_limits, max_header_size),
          .min = KIB, .max = MIB),
    FIELD("max_body_size", parse_size, offsetof(struct gw_http_limits, max_body_size), .min = KIB,
          .max = GIB),
    FIELD("keepalive_timeout", parse_duration,
          offsetof(struct gw_http_limits, keepalive_timeout_ms), .min = 1, .max = DAY_MS),
    FIELD("read_timeout", parse_duration, offsetof(struct gw_http_limits, read_timeout_ms),
          .min = 1, .max = DAY_MS),
    FIELD("write_timeout", parse_duration, offsetof(struct gw_http_limits, write_timeout_ms),
          .min = 1, .max = DAY_MS),
    {.key = NULL},
};

static const struct field upstream_fields[] = {
    FIELD("max_response_size", parse_size, offsetof(struct gw_config, max_response_size),
          .min = KIB, .max = GIB),
    {.key = NULL},
};

/* Used twice: the top-level defaults and a model's own overrides. */
static const struct field timeouts_fields[] = {
    FIELD("connect", parse_duration, offsetof(struct gw_timeouts, connect_ms), .min = 1,
          .max = DAY_MS),
    FIELD("first_byte", parse_duration, offsetof(struct gw_timeouts, first_byte_ms), .min = 1,
          .max = DAY_MS),
    FIELD("idle", parse_duration, offsetof(struct gw_timeouts, idle_ms), .min = 1, .max = DAY_MS),
    FIELD("total", parse_duration, offsetof(struct gw_timeouts, total_ms), .min = 1, .max = DAY_MS),
    {.key = NULL},
};

static const struct field provider_fields[] = {
    FIELD("name", parse_provider_name, offsetof(struct gw_provider, name), .required = true),
    FIELD("type", parse_provider_type, offsetof(struct gw_provider, type), .required = true),
    FIELD("base_url", parse_url, offsetof(struct gw_provider, base_url), .required = true),
    FIELD("api_key_env", parse_env_name, offsetof(struct gw_provider, api_key_env)),
    FIELD("api_key_file", parse_string, offsetof(struct gw_provider, api_key_file)),
    {.key = NULL},
};

static const struct field target_fields[] = {
    FIELD("provider", parse_target_provider, offsetof(struct gw_target, provider),
          .required = true),
    FIELD("model", parse_model_name, offsetof(struct gw_target, model), .required = true),
    {.key = NULL},
};

static const struct field model_fields[] = {
    FIELD("name", parse_model_name, offsetof(struct gw_model, name), .required = true),
    FIELD("timeouts", parse_section, offsetof(struct gw_model, timeouts), .sub = timeouts_fields),
    FIELD("targets", parse_targets, 0, .sub = target_fields, .required = true),
    {.key = NULL},
};

/* gw_master_config_fields - the top level; walked by gw_master_config_load. */
const struct field gw_master_config_fields[] = {
    FIELD("listen", parse_listen, 0),
    FIELD("state_dir", parse_string, offsetof(struct gw_config, state_dir)),
    FIELD("admin", parse_section, 0, .sub = admin_fields),
    FIELD("workers", parse_int, offsetof(struct gw_config, workers), .min = 1,
          .max = CONFIG_MAX_WORKERS),
    FIELD("log", parse_section, 0, .sub = log_fields),
    FIELD("http", parse_section, offsetof(struct gw_config, http), .sub = http_fields),
    FIELD("upstream", parse_section, 0, .sub = upstream_fields),
    FIELD("timeouts", parse_section, offsetof(struct gw_config, timeouts), .sub = timeouts_fields),
    FIELD("providers", parse_providers, 0, .sub = provider_fields, .required = true),
    FIELD("models", parse_models, 0, .sub = model_fields, .required = true),
    {.key = NULL},
};

/* ---------------------------------------------- defaults and the end */

/*
 * gw_master_config_defaults - fill cfg with the value of every setting the
 * file may leave out, before the file is walked.
 */
void
gw_master_config_defaults(struct gw_config *cfg)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);

    cfg->state_dir = gw_arena_strdup(cfg->arena, "/var/lib/aigw");
    cfg->admin_socket = gw_arena_strdup(cfg->arena, GW_DEFAULT_SOCKET);
    cfg->admin_mode = 0660;
    cfg->workers = cpus < 2 ? 2 : cpus > CONFIG_MAX_WORKERS ? CONFIG_MAX_WORKERS : (int)cpus;
    cfg->log_level = GW_LOG_INFO;
    cfg->access_log = true;
    cfg->http.max_header_size = 16 * KIB;
    cfg->http.max_body_size = 8 * MIB;
    cfg->http.keepalive_timeout_ms = 75 * SECOND_MS;
    cfg->http.read_timeout_ms = 30 * SECOND_MS;
    cfg->http.write_timeout_ms = 30 * SECOND_MS;
    cfg->max_response_size = 64 * MIB;
    cfg->timeouts.connect_ms = 5 * SECOND_MS;
    cfg->timeouts.first_byte_ms = 120 * SECOND_MS;
    cfg->timeouts.idle_ms = 60 * SECOND_MS;
    cfg->timeouts.total_ms = 600 * SECOND_MS;
}

/*
 * gw_master_config_finish - what can only be settled once the whole file
 * has been read: resolve each target's provider name, give models the
 * top-level timeouts they did not set, listen on 127.0.0.1:8080 when no
 * address is given.
 */
int
gw_master_config_finish(struct load *ld)
{
    struct gw_config *cfg = ld->cfg;

    for (struct ref *r = ld->refs; r != NULL; r = r->next) {
        size_t i;
        for (i = 0; i < cfg->nproviders; i++)
            if (strcmp(cfg->providers[i].name, r->node->value) == 0)
                break;
        if (i == cfg->nproviders) {
            struct gw_buf b = {0};
            for (size_t j = 0; j < cfg->nproviders; j++)
                gw_buf_printf(&b, "%s%s", j == 0 ? "" : ", ", cfg->providers[j].name);
            int rc = gw_master_config_error(ld, r->node, "no provider named %s (declared: %s)",
                                            gw_master_config_show_node(ld, r->node),
                                            b.data != NULL ? b.data : "");
            gw_buf_free(&b);
            return rc;
        }
        *r->slot = i;
    }
    for (size_t i = 0; i < cfg->nmodels; i++) {
        struct gw_timeouts *t = &cfg->models[i].timeouts;
        if (t->connect_ms == 0)
            t->connect_ms = cfg->timeouts.connect_ms;
        if (t->first_byte_ms == 0)
            t->first_byte_ms = cfg->timeouts.first_byte_ms;
        if (t->idle_ms == 0)
            t->idle_ms = cfg->timeouts.idle_ms;
        if (t->total_ms == 0)
            t->total_ms = cfg->timeouts.total_ms;
    }
    if (cfg->nlisten == 0) {
        cfg->listen = gw_arena_alloc(cfg->arena, sizeof(*cfg->listen));
        cfg->listen[0] = gw_arena_strdup(cfg->arena, "127.0.0.1:8080");
        cfg->nlisten = 1;
    }
    return 0;
}
