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
 * goes.  This file owns the first step and the walk; the tables are
 * master/schema.c, where adding a setting is adding a row, the parsers
 * of single values master/confval.c, and those of the routing keys
 * master/confroute.c.
 *
 * The first problem found stops the load and is reported as one line,
 * "FILE:LINE:COLUMN: message".  The tree lives in a scratch arena that is
 * gone when the load returns; the configuration lives in its own arena.
 *
 * Anchors are allowed but aliases are refused: in a file this small, a
 * value written out is easier to read than a reference.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <yaml.h>

#include "master/config_int.h"

#define CONFIG_MAX_FILE (16 * 1024 * 1024) /* bytes of YAML we agree to read */
#define CONFIG_MAX_DEPTH 64                /* nesting; deeper is an attack or a mistake */

/* -------------------------------------------------------------- errors */

static int load_error_at(struct load *ld, int line, int column, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

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

/*
 * gw_master_config_error - report a problem at the start of node n into the
 * load's error buffer.  Always returns GW_ECONFIG, so that a parser can
 * return what it returns.
 */
int
gw_master_config_error(struct load *ld, const struct node *n, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    int rc = load_verror(ld, n->line, n->column, fmt, ap);
    va_end(ap);
    return rc;
}

/*
 * gw_master_config_show - text from the file, fit to be quoted in a one-line
 * message: in double quotes, with control characters escaped, cut after 80
 * bytes.  The result lives in ld->tmp.
 */
const char *
gw_master_config_show(struct load *ld, const char *s, size_t len)
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

/* gw_master_config_show_node - gw_master_config_show of a scalar node's text. */
const char *
gw_master_config_show_node(struct load *ld, const struct node *n)
{
    return gw_master_config_show(ld, n->value, n->len);
}

/* ----------------------------------------------------------- file input */

/*
 * gw_master_config_read_file - read a whole regular file into a
 * NUL-terminated heap buffer of at most max bytes, which the caller frees
 * (the YAML file, and api_key_file secrets in master/schema.c).  Returns 0,
 * or -1 with errno set (EFBIG when over max).
 */
int
gw_master_config_read_file(const char *path, size_t max, char **out, size_t *outlen)
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
        rc = gw_master_config_error(ld, n,
                                    "YAML aliases (*%s) are not supported; write the value out",
                                    (const char *)ev->data.alias.anchor);
        break;
    default: rc = gw_master_config_error(ld, n, "unexpected YAML event %d", (int)ev->type); break;
    }
    yaml_event_delete(ev);
    if (rc != 0)
        goto fail;
    if (n->kind != NODE_SCALAR && depth >= CONFIG_MAX_DEPTH) {
        rc = gw_master_config_error(ld, n, "nested deeper than %d levels", CONFIG_MAX_DEPTH);
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

/* ------------------------------------------------------------ the walk */

/* The keys of table, listed for a message; the text lives in ld->tmp. */
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
 * gw_master_config_walk - walk mapping map with table: refuse unknown and repeated keys, parse each
 * value into base + its field's offset, then insist on the required keys.
 * name is the mapping's path for messages, NULL at the top level.
 */
int
gw_master_config_walk(struct load *ld, const struct node *map, const char *name,
                      const struct field *table, void *base)
{
    const char *in = name != NULL ? gw_arena_printf(ld->tmp, " in %s", name) : "";
    unsigned long seen = 0;

    if (map->kind != NODE_MAPPING) {
        if (name == NULL)
            return gw_master_config_error(ld, map,
                                          "the file must be a mapping of keys such as "
                                          "\"providers:\" and \"models:\"");
        return gw_master_config_error(ld, map, "\"%s\" must be a mapping of keys (%s)", name,
                                      table_keys(ld, table));
    }
    for (size_t i = 0; i + 1 < map->nitems; i += 2) {
        const struct node *key = map->items[i], *value = map->items[i + 1];
        const struct field *f;

        if (key->kind != NODE_SCALAR || strlen(key->value) != key->len)
            return gw_master_config_error(ld, key, "keys must be plain words%s", in);
        for (size_t j = 0; j < i; j += 2)
            if (strcmp(map->items[j]->value, key->value) == 0)
                return gw_master_config_error(ld, key, "duplicate key %s%s (first at line %d)",
                                              gw_master_config_show_node(ld, key), in,
                                              map->items[j]->line);
        for (f = table; f->key != NULL; f++)
            if (strcmp(f->key, key->value) == 0)
                break;
        if (f->key == NULL)
            return gw_master_config_error(ld, key, "unknown key %s%s (expected one of: %s)",
                                          gw_master_config_show_node(ld, key), in,
                                          table_keys(ld, table));
        seen |= 1UL << (f - table);
        const char *path = name != NULL ? gw_arena_printf(ld->tmp, "%s.%s", name, f->key) : f->key;
        int rc = f->parse(ld, value, path, f, (char *)base + f->offset);
        if (rc != 0)
            return rc;
    }
    for (const struct field *f = table; f->key != NULL; f++)
        if (f->required && !(seen & (1UL << (f - table))))
            return gw_master_config_error(ld, map, "missing required key \"%s\"%s", f->key, in);
    return 0;
}

/* ------------------------------------------------------------ the load */

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
    if (gw_master_config_read_file(path, CONFIG_MAX_FILE, &data, &len) != 0) {
        if (err != NULL && errlen > 0)
            snprintf(err, errlen, "%s: %s", path, strerror(errno));
        rc = GW_EIO;
        goto fail;
    }
    arena = gw_arena_create(16 * 1024);
    cfg = gw_arena_zalloc(arena, sizeof(*cfg));
    cfg->arena = arena;
    cfg->path = gw_arena_strdup(arena, path);
    gw_master_config_defaults(cfg);
    ld.cfg = cfg;
    ld.tmp = gw_arena_create(64 * 1024);
    ld.refs_tail = &ld.refs;
    ld.fallbacks_tail = &ld.fallbacks;

    if ((rc = tree_load(&ld, data, len, &root)) != 0)
        goto fail;
    if (node_is_null(root)) {
        rc = load_error_at(&ld, 1, 1, "the file is empty; it must declare providers and models");
        goto fail;
    }
    ld.root = root;
    if ((rc = gw_master_config_walk(&ld, root, NULL, gw_master_config_fields, cfg)) != 0)
        goto fail;
    if ((rc = gw_master_config_finish(&ld)) != 0)
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
