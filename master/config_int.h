/*
 * config_int.h - what the parts of the configuration loader share, and
 * nothing else may use: master/config.c reads the YAML file into a tree of
 * nodes and walks it with tables; master/schema.c holds those tables, the
 * defaults and the checks made at the end; master/confval.c the parsers of
 * single values (strings, integers, numbers, sizes, durations, addresses)
 * that the rows name; master/confroute.c the parsers and checks of the
 * routing keys (health checks, weights, prices, strategies, fallbacks).
 * The public face of all four is gw_master_config_* in master/master.h.
 */
#ifndef GW_MASTER_CONFIG_INT_H
#define GW_MASTER_CONFIG_INT_H

#include <string.h>
#include <strings.h>

#include "master/master.h"

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

/*
 * A name that refers to something that may come later in the file,
 * resolved when the whole file is read: a target's provider, or a model
 * in another model's fallbacks.
 */
struct ref {
    struct ref *next;
    size_t *slot;                /* targets: the provider index to fill */
    const struct gw_model *from; /* fallbacks: the model that lists the name */
    const char *name;            /* fallbacks: the item's path for messages */
    const struct node *node;     /* the name as written */
};

/* The state of one load. */
struct load {
    const char *path;
    const char *data;        /* the file's text */
    const struct node *root; /* the top-level mapping, for checks across keys */
    size_t len;
    char *err;
    size_t errlen;
    struct gw_arena *tmp;  /* the tree and everything else thrown away */
    struct gw_config *cfg; /* what we build, in its own arena */
    struct ref *refs;      /* target -> provider references, in file order */
    struct ref **refs_tail;
    struct ref *fallbacks; /* model -> fallback model references, in file order */
    struct ref **fallbacks_tail;
    struct ref *safety_refs;            /* model -> safety rule names (confsafety.c) */
    const struct node *moderation_node; /* safety.moderation.model, for errors */
    struct ref **safety_refs_tail;
    const struct node **provider_names; /* name nodes, to point at duplicates */
    const struct node **model_names;
};

/* A plain ~, null or nothing at all: YAML's null. */
static inline bool
node_is_null(const struct node *n)
{
    return n->kind == NODE_SCALAR && n->plain &&
           (n->len == 0 || strcmp(n->value, "~") == 0 || strcasecmp(n->value, "null") == 0);
}

/* The key node of key in mapping map, or NULL. */
static inline const struct node *
map_key(const struct node *map, const char *key)
{
    for (size_t i = 0; i + 1 < map->nitems; i += 2)
        if (map->items[i]->kind == NODE_SCALAR && strcmp(map->items[i]->value, key) == 0)
            return map->items[i];
    return NULL;
}

/* The value node of key in mapping map, or NULL. */
static inline const struct node *
map_value(const struct node *map, const char *key)
{
    for (size_t i = 0; i + 1 < map->nitems; i += 2)
        if (map->items[i]->kind == NODE_SCALAR && strcmp(map->items[i]->value, key) == 0)
            return map->items[i + 1];
    return NULL;
}

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

/* ------------------------------------------------- config.c: the tree */

/* Report a problem at the start of node n; always returns GW_ECONFIG. */
int gw_master_config_error(struct load *ld, const struct node *n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * Text from the file, fit to be quoted in a one-line message: in double
 * quotes, with control characters escaped, cut after 80 bytes.  The result
 * lives in ld->tmp.
 */
const char *gw_master_config_show(struct load *ld, const char *s, size_t len);
const char *gw_master_config_show_node(struct load *ld, const struct node *n);

/*
 * Read a whole regular file into a NUL-terminated heap buffer of at most
 * max bytes; the caller frees *out.  Returns 0, or -1 with errno set
 * (EFBIG when over max).
 */
int gw_master_config_read_file(const char *path, size_t max, char **out, size_t *outlen);

/*
 * Walk mapping map with table: refuse unknown and repeated keys, parse each
 * value into base + its field's offset, then insist on the required keys.
 * name is the mapping's path for messages, NULL at the top level.
 */
int gw_master_config_walk(struct load *ld, const struct node *map, const char *name,
                          const struct field *table, void *base);

/* --------------------------------------- confval.c: single values */

/*
 * The text of a scalar that must be non-empty and free of NUL characters,
 * or NULL after reporting that name must be what ("a string").
 */
const char *gw_master_confval_scalar(struct load *ld, const struct node *n, const char *name,
                                     const char *what);
/* Check that n is a non-empty sequence; what names one item ("address"). */
int gw_master_confval_sequence(struct load *ld, const struct node *n, const char *name,
                               const char *what);
/* Check one "host:port" scalar, as listen takes it; stores nothing. */
int gw_master_confval_address_check(struct load *ld, const struct node *n, const char *name);
/* "30s" rather than 30000 in messages; the text lives in ld->tmp. */
const char *gw_master_confval_duration_text(struct load *ld, long long ms);

/*
 * Field parsers, for the rows of the tables.  Strings are copied into the
 * configuration's arena.  Bounds come from the row's min and max.
 */
int gw_master_confval_string(struct load *ld, const struct node *n, const char *name,
                             const struct field *f, void *dst); /* char * */
int gw_master_confval_socket(struct load *ld, const struct node *n, const char *name,
                             const struct field *f, void *dst); /* char *, fits sun_path */
int gw_master_confval_mode(struct load *ld, const struct node *n, const char *name,
                           const struct field *f, void *dst); /* unsigned, octal, no o+rwx */
int gw_master_confval_int(struct load *ld, const struct node *n, const char *name,
                          const struct field *f, void *dst); /* int */
int gw_master_confval_count(struct load *ld, const struct node *n, const char *name,
                            const struct field *f, void *dst); /* uint64_t, digits only */
int gw_master_confval_uint(struct load *ld, const struct node *n, const char *name,
                           const struct field *f, void *dst); /* unsigned, digits only */
int gw_master_confval_number(struct load *ld, const struct node *n, const char *name,
                             const struct field *f, void *dst); /* double, decimal */
int gw_master_confval_level(struct load *ld, const struct node *n, const char *name,
                            const struct field *f, void *dst); /* int, GW_LOG_* */
int gw_master_confval_bool(struct load *ld, const struct node *n, const char *name,
                           const struct field *f, void *dst); /* bool */
int gw_master_confval_size(struct load *ld, const struct node *n, const char *name,
                           const struct field *f, void *dst); /* size_t, bytes */
int gw_master_confval_duration(struct load *ld, const struct node *n, const char *name,
                               const struct field *f, void *dst); /* long, ms */
/* A nested mapping: walks n with f->sub into dst. */
int gw_master_confval_section(struct load *ld, const struct node *n, const char *name,
                              const struct field *f, void *dst);

/* ------------------------------------ confroute.c: the routing keys */

/*
 * Field parsers of the routing keys, for the rows of master/schema.c.
 * health, tags and fallbacks fill more than one member, so their rows
 * give offset 0 and dst is the whole provider, target or model.
 */
int gw_master_confroute_health(struct load *ld, const struct node *n, const char *name,
                               const struct field *f, void *dst); /* struct gw_provider */
int gw_master_confroute_path(struct load *ld, const struct node *n, const char *name,
                             const struct field *f, void *dst); /* char *, "/..." */
int gw_master_confroute_label(struct load *ld, const struct node *n, const char *name,
                              const struct field *f, void *dst); /* char *, no blanks */
int gw_master_confroute_tags(struct load *ld, const struct node *n, const char *name,
                             const struct field *f, void *dst); /* struct gw_target */
int gw_master_confroute_strategy(struct load *ld, const struct node *n, const char *name,
                                 const struct field *f, void *dst); /* enum gw_route_strategy */
int gw_master_confroute_header(struct load *ld, const struct node *n, const char *name,
                               const struct field *f, void *dst); /* char *, lowercased */
int gw_master_confroute_fallbacks(struct load *ld, const struct node *n, const char *name,
                                  const struct field *f, void *dst); /* struct gw_model */

/* Give m's routing its defaults, before the model's mapping is walked. */
void gw_master_confroute_model_defaults(struct load *ld, struct gw_model *m);

/*
 * The routing checks of one model once its mapping map (at path name) is
 * walked: the default of retries, which depends on the targets, and the
 * prices that strategy price needs.
 */
int gw_master_confroute_model_finish(struct load *ld, struct gw_model *m, const struct node *map,
                                     const char *name);

/* Resolve the models' fallbacks once every model is known. */
int gw_master_confroute_finish(struct load *ld);

/* ------------------------------------- confsafety.c: content safety */

/* safety: at the top level (dst: struct gw_config), a model's safety:
 * list of rule names (dst: struct gw_model), and the names resolved once
 * the whole file is read. */
int gw_master_confsafety_section(struct load *ld, const struct node *n, const char *name,
                                 const struct field *f, void *dst);
int gw_master_confsafety_model(struct load *ld, const struct node *n, const char *name,
                               const struct field *f, void *dst);
int gw_master_confsafety_finish(struct load *ld);
/* ------------------------ confcache.c: the cache and capture keys */

int gw_master_confcache_rotate(struct load *ld, const struct node *n, const char *name,
                               const struct field *f, void *dst); /* int, gw_capture_rotate */
int gw_master_confcache_names(struct load *ld, const struct node *n, const char *name,
                              const struct field *f, void *dst); /* struct gw_names */
int gw_master_confcache_capture(struct load *ld, const struct node *n, const char *name,
                                const struct field *f, void *dst); /* struct gw_config */
int gw_master_confcache_when(struct load *ld, const struct node *n, const char *name,
                             const struct field *f, void *dst); /* bool, deterministic */
/* ------------------------------------ confprov.c: type-dependent keys */

int gw_master_confprov_preset(struct load *ld, const struct node *n, const char *name,
                              const struct field *f, void *dst); /* char *, a known preset */
int gw_master_confprov_stream_usage(struct load *ld, const struct node *n, const char *name,
                                    const struct field *f, void *dst); /* unsigned quirks */
/* Defaults and checks of provider p by its type, once map is walked. */
int gw_master_confprov_finish(struct load *ld, struct gw_provider *p, const struct node *map);

/* ----------------------------------------------- schema.c: the schema */

/* The table of the top level, which fills struct gw_config. */
extern const struct field gw_master_config_fields[];

/* Fill cfg with the value of every setting the file may leave out. */
void gw_master_config_defaults(struct gw_config *cfg);

/*
 * What can only be settled once the whole file has been read: targets'
 * provider names, inherited timeouts, the default listener.
 */
int gw_master_config_finish(struct load *ld);

#endif
