/*
 * config.c - the YAML configuration file: read it, check it, build the
 * running configuration from it.
 *
 * Loading happens in two steps.  libyaml's event parser turns the file into
 * a small tree of nodes (scalars, sequences, mappings), each remembering
 * where it starts, so that every later complaint can name a line and a
 * column.  Then the tree is walked with one table per kind of mapping (the
 * top level, admin, http, a provider, a model, ...): a row names a key, the
 * function that parses its value and where in the configuration the value
 * goes.  Adding a setting is adding a row.
 *
 * The first problem found stops the load and is reported as one line,
 * "FILE:LINE:COLUMN: message".  The tree lives in a scratch arena that is
 * gone when the load returns; the configuration lives in its own arena.
 *
 * Scalars are typed by the key they belong to, not by YAML's own rules, so
 * workers: "8" is the integer 8 and mode: 0660 is octal, whatever the YAML
 * version would say.  Anchors are allowed but aliases are refused: in a
 * file this small, a value written out is easier to read than a reference.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <yaml.h>

#include "master/master.h"

#define KIB 1024LL
#define MIB (1024 * KIB)
#define GIB (1024 * MIB)
#define SECOND_MS 1000LL
#define DAY_MS (24 * 3600 * SECOND_MS)

#define CONFIG_MAX_FILE (16 * 1024 * 1024) /* bytes of YAML we agree to read */
#define CONFIG_MAX_DEPTH 64                /* nesting; deeper is an attack or a mistake */
#define CONFIG_MAX_SECRET (64 * 1024)      /* bytes of an api_key_file */
#define CONFIG_MAX_WORKERS 1024

/* ------------------------------------------------------------ the tree */

enum node_kind {
    NODE_SCALAR,
    NODE_SEQUENCE,
    NODE_MAPPING,
};

struct node {
    enum node_kind kind;
    int line;            /* 1-based, where the node starts */
    int column;          /* 1-based, in characters */
    char *value;         /* scalar: its text, NUL-terminated */
    size_t len;          /* scalar: its length (a "\0" escape makes strlen differ) */
    bool plain;          /* scalar: written without quotes (so "~" and "null" are null) */
    struct node **items; /* sequence: the elements; mapping: key, value, key, ... */
    size_t nitems;
};

/* A target's provider name, resolved when all providers are known. */
struct ref {
    struct ref *next;
    size_t *slot; /* the target's provider index */
    const struct node *node;
};

/* The state of one load. */
struct load {
    const char *path;
    const char *data; /* the file's text */
    size_t len;
    char *err;
    size_t errlen;
    struct gw_arena *tmp;  /* the tree and everything else thrown away */
    struct gw_config *cfg; /* what we build, in its own arena */
    struct ref *refs;      /* target -> provider references, in file order */
    struct ref **refs_tail;
    const struct node **provider_names; /* name nodes, to point at duplicates */
    const struct node **model_names;
};

/* ----------------------------------------------------- schema types */

struct field;

/*
 * A field parser checks the value node of one key and stores it at dst.
 * name is the key's full path for messages ("http.max_body_size").
 * Returns 0, or GW_ECONFIG after writing the error.
 */
typedef int (*config_parse_fn)(struct load *ld, const struct node *n, const char *name,
                               const struct field *f, void *dst);

struct field {
    const char *key;
    config_parse_fn parse;
    size_t offset;           /* of dst from the start of the struct the table fills */
    long long min, max;      /* bounds of integers, sizes and durations */
    const struct field *sub; /* a nested mapping's own table */
    bool required;
};

static const char *const provider_types[] = {
    [GW_PROVIDER_OPENAI] = "openai",
};

/* -------------------------------------------------------------- errors */

static int load_error_at(struct load *ld, int line, int column, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int load_error(struct load *ld, const struct node *n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int
load_verror(struct load *ld, int line, int column, const char *fmt, va_list ap)
{
    char msg[1024];

    vsnprintf(msg, sizeof(msg), fmt, ap);
    if (ld->err != NULL && ld->errlen > 0)
        snprintf(ld->err, ld->errlen, "%s:%d:%d: %s", ld->path, line, column, msg);
    return GW_ECONFIG;
}

/* Report a problem at a position; always returns GW_ECONFIG. */
static int
load_error_at(struct load *ld, int line, int column, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    int rc = load_verror(ld, line, column, fmt, ap);
    va_end(ap);
    return rc;
}

/* Report a problem at the start of node n; always returns GW_ECONFIG. */
static int
load_error(struct load *ld, const struct node *n, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    int rc = load_verror(ld, n->line, n->column, fmt, ap);
    va_end(ap);
    return rc;
}

/*
 * Text from the file, fit to be quoted in a one-line message: in double
 * quotes, with control characters escaped, cut after 80 bytes.
 */
static const char *
show(struct load *ld, const char *s, size_t len)
{
    char *out = gw_arena_alloc(ld->tmp, 80 * 4 + 8);
    size_t o = 0;

    out[o++] = '"';
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (i == 80) {
            memcpy(out + o, "...", 3);
            o += 3;
            break;
        }
        if (c == '"' || c == '\\') {
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (c < 0x20 || c == 0x7f) {
            o += (size_t)sprintf(out + o, "\\x%02x", c);
        } else {
            out[o++] = (char)c;
        }
    }
    out[o++] = '"';
    out[o] = '\0';
    return out;
}

static const char *
show_node(struct load *ld, const struct node *n)
{
    return show(ld, n->value, n->len);
}

/* ----------------------------------------------------------- file input */

/*
 * Read a whole regular file into a NUL-terminated heap buffer of at most
 * max bytes.  Returns 0, or -1 with errno set (EFBIG when over max).
 */
static int
read_file(const char *path, size_t max, char **out, size_t *outlen)
{
    char *data = NULL;
    size_t len = 0, cap = 0;
    int fd, saved;

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        goto fail;
    for (;;) {
        if (cap - len < 4096) {
            cap = cap == 0 ? 8192 : cap * 2;
            char *bigger = realloc(data, cap + 1);
            if (bigger == NULL) {
                errno = ENOMEM;
                goto fail;
            }
            data = bigger;
        }
        ssize_t n = read(fd, data + len, cap - len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            goto fail;
        }
        if (n == 0)
            break;
        len += (size_t)n;
        if (len > max) {
            errno = EFBIG;
            goto fail;
        }
    }
    close(fd);
    data[len] = '\0';
    *out = data;
    *outlen = len;
    return 0;

fail:
    saved = errno;
    if (data != NULL) {
        explicit_bzero(data, len);
        free(data);
    }
    if (fd >= 0)
        close(fd);
    errno = saved;
    return -1;
}

/* ------------------------------------------------------ YAML to a tree */

static int
syntax_error(struct load *ld, const yaml_parser_t *p)
{
    const char *problem = p->problem != NULL ? p->problem : "cannot parse the file";

    switch (p->error) {
    case YAML_MEMORY_ERROR:
        return load_error_at(ld, (int)p->mark.line + 1, (int)p->mark.column + 1,
                             "out of memory while parsing YAML");
    case YAML_READER_ERROR: {
        /* Bad encoding: libyaml knows the byte offset only; count lines ourselves. */
        int line = 1, column = 1;
        for (size_t i = 0; i < p->problem_offset && i < ld->len; i++, column++)
            if (ld->data[i] == '\n')
                line++, column = 0;
        return load_error_at(ld, line, column, "%s (the file must be UTF-8 text)", problem);
    }
    default: break;
    }
    if (p->context != NULL && strcmp(p->context, "while scanning an alias") == 0)
        return load_error_at(ld, (int)p->context_mark.line + 1, (int)p->context_mark.column + 1,
                             "YAML syntax error: %s after '*'; quote a value that starts with "
                             "'*', such as \"*:8080\"",
                             problem);
    if (p->context != NULL)
        return load_error_at(ld, (int)p->problem_mark.line + 1, (int)p->problem_mark.column + 1,
                             "YAML syntax error: %s (%s at line %zu, column %zu)", problem,
                             p->context, p->context_mark.line + 1, p->context_mark.column + 1);
    return load_error_at(ld, (int)p->problem_mark.line + 1, (int)p->problem_mark.column + 1,
                         "YAML syntax error: %s", problem);
}

static int
tree_next(struct load *ld, yaml_parser_t *p, yaml_event_t *ev)
{
    if (yaml_parser_parse(p, ev))
        return 0;
    return syntax_error(ld, p);
}

/*
 * Build the node that the event *ev starts, reading its children from p.
 * Always deletes *ev.  The node lives in ld->tmp.
 */
static int
tree_node(struct load *ld, yaml_parser_t *p, yaml_event_t *ev, int depth, struct node **out)
{
    struct node *n = gw_arena_zalloc(ld->tmp, sizeof(*n));
    yaml_event_type_t end = YAML_NO_EVENT;
    size_t cap = 0;
    int rc = 0;

    n->line = (int)ev->start_mark.line + 1;
    n->column = (int)ev->start_mark.column + 1;
    switch (ev->type) {
    case YAML_SCALAR_EVENT:
        n->kind = NODE_SCALAR;
        n->len = ev->data.scalar.length;
        n->value = gw_arena_strndup(ld->tmp, (const char *)ev->data.scalar.value, n->len);
        n->plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
        break;
    case YAML_SEQUENCE_START_EVENT:
        n->kind = NODE_SEQUENCE;
        end = YAML_SEQUENCE_END_EVENT;
        break;
    case YAML_MAPPING_START_EVENT:
        n->kind = NODE_MAPPING;
        end = YAML_MAPPING_END_EVENT;
        break;
    case YAML_ALIAS_EVENT:
        rc = load_error(ld, n, "YAML aliases (*%s) are not supported; write the value out",
                        (const char *)ev->data.alias.anchor);
        break;
    default: rc = load_error(ld, n, "unexpected YAML event %d", (int)ev->type); break;
    }
    yaml_event_delete(ev);
    if (rc != 0)
        goto fail;
    if (n->kind != NODE_SCALAR && depth >= CONFIG_MAX_DEPTH) {
        rc = load_error(ld, n, "nested deeper than %d levels", CONFIG_MAX_DEPTH);
        goto fail;
    }
    while (n->kind != NODE_SCALAR) {
        yaml_event_t child_ev;
        struct node *child;

        if ((rc = tree_next(ld, p, &child_ev)) != 0)
            goto fail;
        if (child_ev.type == end) {
            yaml_event_delete(&child_ev);
            break;
        }
        if ((rc = tree_node(ld, p, &child_ev, depth + 1, &child)) != 0)
            goto fail;
        if (n->nitems == cap) {
            /* The old array stays in the scratch arena: at most twice the space. */
            struct node **items =
                gw_arena_alloc(ld->tmp, (cap = cap ? cap * 2 : 8) * sizeof(*items));
            if (n->nitems > 0)
                memcpy(items, n->items, n->nitems * sizeof(*items));
            n->items = items;
        }
        n->items[n->nitems++] = child;
    }
    *out = n;

fail:
    return rc;
}

/*
 * Parse YAML text into a tree: exactly one document is expected.  The tree
 * lives in ld->tmp.
 */
static int
tree_load(struct load *ld, const char *data, size_t len, struct node **root)
{
    yaml_parser_t p;
    yaml_event_t ev;
    int rc;

    if (!yaml_parser_initialize(&p))
        return load_error_at(ld, 1, 1, "out of memory while parsing YAML");
    ld->data = data;
    ld->len = len;
    yaml_parser_set_input_string(&p, (const unsigned char *)data, len);

    if ((rc = tree_next(ld, &p, &ev)) != 0) /* stream start */
        goto fail;
    yaml_event_delete(&ev);
    if ((rc = tree_next(ld, &p, &ev)) != 0)
        goto fail;
    if (ev.type == YAML_STREAM_END_EVENT) {
        yaml_event_delete(&ev);
        rc = load_error_at(ld, 1, 1, "the file is empty; it must declare providers and models");
        goto fail;
    }
    yaml_event_delete(&ev); /* document start */
    if ((rc = tree_next(ld, &p, &ev)) != 0)
        goto fail;
    if ((rc = tree_node(ld, &p, &ev, 0, root)) != 0)
        goto fail;
    if ((rc = tree_next(ld, &p, &ev)) != 0) /* document end */
        goto fail;
    yaml_event_delete(&ev);
    if ((rc = tree_next(ld, &p, &ev)) != 0)
        goto fail;
    if (ev.type != YAML_STREAM_END_EVENT)
        rc = load_error_at(ld, (int)ev.start_mark.line + 1, (int)ev.start_mark.column + 1,
                           "a second YAML document: the file must hold exactly one");
    yaml_event_delete(&ev);

fail:
    yaml_parser_delete(&p);
    return rc;
}

/* ---------------------------------------------------------- tree access */

/* A plain ~, null or nothing at all: YAML's null. */
static bool
node_is_null(const struct node *n)
{
    return n->kind == NODE_SCALAR && n->plain &&
           (n->len == 0 || strcmp(n->value, "~") == 0 || strcasecmp(n->value, "null") == 0);
}

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
        load_error(ld, n, "\"%s\" must be %s", name, what);
        return NULL;
    }
    if (strlen(n->value) != n->len) {
        load_error(ld, n, "\"%s\" must not contain a NUL character", name);
        return NULL;
    }
    if (n->len == 0) {
        load_error(ld, n, "\"%s\" must not be empty", name);
        return NULL;
    }
    return n->value;
}

/* Check that n is a non-empty sequence; what names one item in messages. */
static int
sequence(struct load *ld, const struct node *n, const char *name, const char *what)
{
    if (n->kind != NODE_SEQUENCE)
        return load_error(ld, n, "\"%s\" must be a list of %ss", name, what);
    if (n->nitems == 0)
        return load_error(ld, n, "\"%s\" must list at least one %s", name, what);
    return 0;
}

static const char *
table_keys(struct load *ld, const struct field *table)
{
    struct gw_buf b = {0};
    const char *s;

    for (const struct field *f = table; f->key != NULL; f++)
        gw_buf_printf(&b, "%s%s", f == table ? "" : ", ", f->key);
    s = gw_arena_strndup(ld->tmp, b.data != NULL ? b.data : "", b.len);
    gw_buf_free(&b);
    return s;
}

/*
 * Walk mapping map with table: refuse unknown and repeated keys, parse each
 * value into base + its field's offset, then insist on the required keys.
 * name is the mapping's path for messages, NULL at the top level.
 */
static int
walk_mapping(struct load *ld, const struct node *map, const char *name, const struct field *table,
             void *base)
{
    const char *in = name != NULL ? gw_arena_printf(ld->tmp, " in %s", name) : "";
    unsigned long seen = 0;

    if (map->kind != NODE_MAPPING) {
        if (name == NULL)
            return load_error(ld, map,
                              "the file must be a mapping of keys such as "
                              "\"providers:\" and \"models:\"");
        return load_error(ld, map, "\"%s\" must be a mapping of keys (%s)", name,
                          table_keys(ld, table));
    }
    for (size_t i = 0; i + 1 < map->nitems; i += 2) {
        const struct node *key = map->items[i], *value = map->items[i + 1];
        const struct field *f;

        if (key->kind != NODE_SCALAR || strlen(key->value) != key->len)
            return load_error(ld, key, "keys must be plain words%s", in);
        for (size_t j = 0; j < i; j += 2)
            if (strcmp(map->items[j]->value, key->value) == 0)
                return load_error(ld, key, "duplicate key %s%s (first at line %d)",
                                  show_node(ld, key), in, map->items[j]->line);
        for (f = table; f->key != NULL; f++)
            if (strcmp(f->key, key->value) == 0)
                break;
        if (f->key == NULL)
            return load_error(ld, key, "unknown key %s%s (expected one of: %s)", show_node(ld, key),
                              in, table_keys(ld, table));
        seen |= 1UL << (f - table);
        const char *path = name != NULL ? gw_arena_printf(ld->tmp, "%s.%s", name, f->key) : f->key;
        int rc = f->parse(ld, value, path, f, (char *)base + f->offset);
        if (rc != 0)
            return rc;
    }
    for (const struct field *f = table; f->key != NULL; f++)
        if (f->required && !(seen & (1UL << (f - table))))
            return load_error(ld, map, "missing required key \"%s\"%s", f->key, in);
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
        return load_error(ld, n, "\"%s\" is %zu bytes long; a Unix socket path holds at most %zu",
                          name, n->len, max);
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
        return load_error(ld, n, "\"%s\" must be octal permission bits such as 0600 or 0660", name);
    if (mode & 0007)
        return load_error(ld, n,
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
        return load_error(ld, n, "\"%s\" must be an integer", name);
    if (v < f->min || v > f->max)
        return load_error(ld, n, "\"%s\" must be between %lld and %lld (got %s)", name, f->min,
                          f->max, s);
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
        return load_error(ld, n, "\"%s\" must be one of error, warn, info, debug (got %s)", name,
                          show_node(ld, n));
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
    return load_error(ld, n, "\"%s\" must be true or false (got %s)", name, show_node(ld, n));
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
        return load_error(ld, n, "\"%s\" must be %s (got %s)", name, what, show_node(ld, n));
    if ((long long)v < f->min || (long long)v > f->max)
        return load_error(ld, n, "\"%s\" must be between %s and %s (got %s)", name,
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
            return load_error(ld, n, "\"%s\" must be longer than zero (got %s)", name,
                              show_node(ld, n));
        return load_error(ld, n, "\"%s\" must be %s (got %s)", name, what, show_node(ld, n));
    }
    if (v < f->min || v > f->max)
        return load_error(ld, n, "\"%s\" must be between %s and %s (got %s)", name,
                          duration_text(ld, f->min), duration_text(ld, f->max), s);
    *(long *)dst = v;
    return 0;
}

static int
parse_section(struct load *ld, const struct node *n, const char *name, const struct field *f,
              void *dst)
{
    return walk_mapping(ld, n, name, f->sub, dst);
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
        return load_error(ld, n, "\"%s\" must be host:port, such as 127.0.0.1:8080 (got %s)", name,
                          show_node(ld, n));
    port = colon + 1;
    for (const char *c = port; *c != '\0'; c++) {
        if (*c < '0' || *c > '9' || p > 65535) {
            p = -1;
            break;
        }
        p = p * 10 + (*c - '0');
    }
    if (p < 1 || p > 65535)
        return load_error(ld, n, "\"%s\": port must be a number from 1 to 65535 (got %s)", name,
                          show(ld, port, strlen(port)));

    size_t hlen = (size_t)(colon - s);
    if (s[0] == '[') {
        if (hlen < 2 || s[hlen - 1] != ']' || hlen - 2 >= sizeof(buf))
            return load_error(ld, n, "\"%s\": bad IPv6 address in %s; write it as [::1]:8080", name,
                              show_node(ld, n));
        memcpy(buf, s + 1, hlen - 2);
        buf[hlen - 2] = '\0';
        if (inet_pton(AF_INET6, buf, &a6) != 1)
            return load_error(ld, n, "\"%s\": bad IPv6 address in %s", name, show_node(ld, n));
    } else if (memchr(s, ':', hlen) != NULL) {
        return load_error(ld, n, "\"%s\": an IPv6 address must be in brackets, as in [::1]:8080",
                          name);
    } else if (hlen > 0 && !(hlen == 1 && s[0] == '*') && !host_name_ok(s, hlen)) {
        return load_error(ld, n, "\"%s\": bad host in %s", name, show_node(ld, n));
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
                return load_error(ld, item, "\"%s\": %s is listed twice", item_name,
                                  show_node(ld, item));
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
        return load_error(ld, n, "\"%s\" may hold only letters, digits, '.', '_' and '-' (got %s)",
                          name, show_node(ld, n));
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
    rc = load_error(ld, n, "provider type %s is not supported (supported: %s)", show_node(ld, n),
                    b.data != NULL ? b.data : "");
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
        return load_error(ld, n,
                          "\"%s\" must not hold credentials; name them with api_key_env or "
                          "api_key_file",
                          name);
    if (strncmp(s, "http://", 7) == 0)
        host = s + 7;
    else if (strncmp(s, "https://", 8) == 0)
        host = s + 8;
    else
        return load_error(ld, n, "\"%s\" must start with http:// or https:// (got %s)", name,
                          show_node(ld, n));
    size_t hostlen = strcspn(host, "/?#");
    if (hostlen == 0 || host[0] == ':')
        return load_error(ld, n, "\"%s\" has no host (got %s)", name, show_node(ld, n));
    for (const char *c = s; *c != '\0'; c++)
        if ((unsigned char)*c <= ' ' || *c == 0x7f)
            return load_error(ld, n, "\"%s\" must not contain spaces or control characters", name);
    if (strpbrk(s, "?#") != NULL)
        return load_error(ld, n, "\"%s\" must not have a query or fragment (got %s)", name,
                          show_node(ld, n));
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
        return load_error(ld, n,
                          "\"%s\" must be the name of an environment variable, "
                          "such as OPENAI_API_KEY (got %s)",
                          name, show_node(ld, n));
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

    if (read_file(p->api_key_file, CONFIG_MAX_SECRET, &data, &len) != 0) {
        rc =
            load_error(ld, n, "cannot read api_key_file %s: %s", show_node(ld, n), strerror(errno));
        goto fail;
    }
    while (len > 0 && strchr(" \t\r\n", data[len - 1]) != NULL)
        data[--len] = '\0';
    while (start < len && strchr(" \t\r\n", data[start]) != NULL)
        start++;
    if (start == len) {
        rc = load_error(ld, n, "api_key_file %s is empty", show_node(ld, n));
        goto fail;
    }
    if (strlen(data + start) != len - start || !secret_ok(data + start)) {
        rc = load_error(ld, n, "api_key_file %s must hold one line without control characters",
                        show_node(ld, n));
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
        return load_error(ld, later, "provider \"%s\": set api_key_env or api_key_file, not both",
                          p->name);
    }
    if (file != NULL)
        return secret_from_file(ld, p, map_value(map, "api_key_file"));
    if (env != NULL) {
        const char *v = getenv(p->api_key_env);
        /* Unset is fine (a local server may want no key): warned once the load succeeds. */
        if (v != NULL && *v != '\0') {
            if (!secret_ok(v))
                return load_error(ld, map_value(map, "api_key_env"),
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

        if (walk_mapping(ld, item, item_name, f->sub, p) != 0)
            return GW_ECONFIG;
        const struct node *pname = map_value(item, "name");
        for (size_t j = 0; j < i; j++)
            if (strcmp(cfg->providers[j].name, p->name) == 0)
                return load_error(ld, pname, "duplicate provider name %s (first at line %d)",
                                  show_node(ld, pname), ld->provider_names[j]->line);
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
            return load_error(ld, n,
                              "\"%s\" must not contain spaces or control characters (got %s)", name,
                              show_node(ld, n));
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
        if (walk_mapping(ld, n->items[i], item_name, f->sub, &m->targets[i]) != 0)
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
        if (walk_mapping(ld, item, item_name, f->sub, m) != 0)
            return GW_ECONFIG;
        const struct node *mname = map_value(item, "name");
        for (size_t j = 0; j < i; j++)
            if (strcmp(cfg->models[j].name, m->name) == 0)
                return load_error(ld, mname, "duplicate model name %s (first at line %d)",
                                  show_node(ld, mname), ld->model_names[j]->line);
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

static const struct field top_fields[] = {
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

/* ------------------------------------------------------------ the load */

static void
config_defaults(struct gw_config *cfg)
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

/* What can only be settled once the whole file has been read. */
static int
config_finish(struct load *ld)
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
            int rc = load_error(ld, r->node, "no provider named %s (declared: %s)",
                                show_node(ld, r->node), b.data != NULL ? b.data : "");
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

/*
 * gw_master_config_load - read, check and build the configuration in the
 * file at path.  The new configuration is the caller's (gw_config_free);
 * nothing is kept on failure.  Secrets are resolved here; an unset
 * api_key_env variable is only a warning, logged once the file is valid.
 */
int
gw_master_config_load(const char *path, struct gw_config **out, char *err, size_t errlen)
{
    struct load ld = {.path = path, .err = err, .errlen = errlen};
    struct gw_config *cfg = NULL;
    struct gw_arena *arena;
    struct node *root = NULL;
    char *data = NULL;
    size_t len = 0;
    int rc;

    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (read_file(path, CONFIG_MAX_FILE, &data, &len) != 0) {
        if (err != NULL && errlen > 0)
            snprintf(err, errlen, "%s: %s", path, strerror(errno));
        rc = GW_EIO;
        goto fail;
    }
    arena = gw_arena_create(16 * 1024);
    cfg = gw_arena_zalloc(arena, sizeof(*cfg));
    cfg->arena = arena;
    cfg->path = gw_arena_strdup(arena, path);
    config_defaults(cfg);
    ld.cfg = cfg;
    ld.tmp = gw_arena_create(64 * 1024);
    ld.refs_tail = &ld.refs;

    if ((rc = tree_load(&ld, data, len, &root)) != 0)
        goto fail;
    if (node_is_null(root)) {
        rc = load_error_at(&ld, 1, 1, "the file is empty; it must declare providers and models");
        goto fail;
    }
    if ((rc = walk_mapping(&ld, root, NULL, top_fields, cfg)) != 0)
        goto fail;
    if ((rc = config_finish(&ld)) != 0)
        goto fail;
    for (size_t i = 0; i < cfg->nproviders; i++)
        if (cfg->providers[i].api_key_env != NULL && cfg->providers[i].api_key == NULL)
            gw_log(GW_LOG_WARN,
                   "provider \"%s\": environment variable %s is not set; "
                   "requests go without a credential",
                   cfg->providers[i].name, cfg->providers[i].api_key_env);
    *out = cfg;
    cfg = NULL;
    rc = 0;

fail:
    if (cfg != NULL) {
        /* Secrets already read must not linger in freed memory. */
        for (size_t i = 0; i < cfg->nproviders; i++)
            if (cfg->providers[i].api_key != NULL)
                explicit_bzero(cfg->providers[i].api_key, strlen(cfg->providers[i].api_key));
        gw_config_free(cfg);
    }
    gw_arena_destroy(ld.tmp);
    free(data);
    return rc;
}
