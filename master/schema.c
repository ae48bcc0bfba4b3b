/*
 * schema.c - what the keys of the configuration file mean: one table per
 * kind of mapping (the top level, admin, workers, log, http, a provider, a
 * model, ...), the parsers of values whose meaning goes beyond their type
 * (the worker pool, users, providers, models), the defaults of what the
 * file leaves out and the checks that need the whole file.
 * master/config.c reads the file into a tree and walks it with these
 * tables; master/confval.c parses plain values (strings, integers, sizes,
 * durations, addresses) and master/confroute.c the routing keys (health
 * checks, prices, strategies, fallbacks).  Adding a setting is adding a
 * row.
 *
 * Scalars are typed by the key they belong to, not by YAML's own rules, so
 * workers: "8" is the integer 8 and mode: 0660 is octal, whatever the YAML
 * version would say.
 */
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "master/config_int.h"

#define KIB 1024LL
#define MIB (1024 * KIB)
#define GIB (1024 * MIB)
#define SECOND_MS 1000LL
#define HOUR_MS (3600 * SECOND_MS)
#define DAY_MS (24 * HOUR_MS)

#define CONFIG_MAX_SECRET (64 * 1024) /* bytes of an api_key_file */
#define CONFIG_MAX_WORKERS 1024
#define CONFIG_MAX_WORKER_CONNECTIONS 65536
#define CONFIG_POOL_MAX 256 /* default workers.max of a pool with spares */
#define CONFIG_MAX_REQUESTS 1000000000LL
#define CONFIG_METRICS_LISTEN "127.0.0.1:9464"
#define CONFIG_MAX_WEIGHT 1000
#define CONFIG_MAX_PRICE 1000000 /* USD per million tokens */
#define CONFIG_MAX_RETRIES 10
#define CONFIG_MAX_FAILURES 1000
#define CONFIG_MAX_MIN_REQUESTS 100000  /* breaker.min_requests */
#define CONFIG_MAX_RATE 1000000000LL    /* limits: rpm and tpm */
#define CONFIG_MAX_PASSTHRU 256         /* mcp, agents and sandboxes together */
#define CONFIG_MAX_RETENTION_DAYS 36500 /* usage: a hundred years */
#define CONFIG_MAX_CONTEXT 1000000000LL /* models: context_length, tokens */

static const char *const provider_types[] = {
    [GW_PROVIDER_OPENAI] = "openai",       [GW_PROVIDER_AZURE] = "azure",
    [GW_PROVIDER_ANTHROPIC] = "anthropic", [GW_PROVIDER_GEMINI] = "gemini",
    [GW_PROVIDER_BEDROCK] = "bedrock",
};

/* -------------------------------------------------------------- listen */

/* One "host:port" or a sequence of them, none listed twice, into *out. */
static int
parse_addresses(struct load *ld, const struct node *n, const char *name, char ***out, size_t *nout)
{
    struct gw_config *cfg = ld->cfg;
    size_t count = n->kind == NODE_SEQUENCE ? n->nitems : 1;
    char **list;

    if (n->kind == NODE_SEQUENCE && gw_master_confval_sequence(ld, n, name, "address") != 0)
        return GW_ECONFIG;
    list = gw_arena_zalloc(cfg->arena, (count ? count : 1) * sizeof(*list));
    for (size_t i = 0; i < count; i++) {
        const struct node *item = n->kind == NODE_SEQUENCE ? n->items[i] : n;
        const char *item_name =
            n->kind == NODE_SEQUENCE ? gw_arena_printf(ld->tmp, "%s[%zu]", name, i) : name;

        if (gw_master_confval_address_check(ld, item, item_name) != 0)
            return GW_ECONFIG;
        for (size_t j = 0; j < i; j++)
            if (strcmp(list[j], item->value) == 0)
                return gw_master_config_error(ld, item, "\"%s\": %s is listed twice", item_name,
                                              gw_master_config_show_node(ld, item));
        list[i] = gw_arena_strdup(cfg->arena, item->value);
    }
    *out = list;
    *nout = count;
    return 0;
}

static int
parse_listen(struct load *ld, const struct node *n, const char *name, const struct field *f,
             void *dst)
{
    struct gw_config *cfg = dst;

    (void)f;
    return parse_addresses(ld, n, name, &cfg->listen, &cfg->nlisten);
}

/* admin.listen: where the HTTP admin API is served (none by default). */
static int
parse_admin_listen(struct load *ld, const struct node *n, const char *name, const struct field *f,
                   void *dst)
{
    struct gw_config *cfg = dst;

    (void)f;
    return parse_addresses(ld, n, name, &cfg->admin_listen, &cfg->nadmin_listen);
}

/* A host:port, checked as listen takes it, into a char *. */
static int
parse_address(struct load *ld, const struct node *n, const char *name, const struct field *f,
              void *dst)
{
    if (gw_master_confval_address_check(ld, n, name) != 0)
        return GW_ECONFIG;
    return gw_master_confval_string(ld, n, name, f, dst);
}

/* metrics: a mapping, given at all, turns the /metrics listener on. */
static int
parse_metrics(struct load *ld, const struct node *n, const char *name, const struct field *f,
              void *dst)
{
    struct gw_config *cfg = dst;

    if (gw_master_confval_section(ld, n, name, f, dst) != 0)
        return GW_ECONFIG;
    if (cfg->metrics_listen == NULL)
        cfg->metrics_listen = gw_arena_strdup(cfg->arena, CONFIG_METRICS_LISTEN);
    return 0;
}

/* The host of "host:port" is every address of its family, or of all. */
static bool
host_is_any(const char *host, size_t len, const char *other)
{
    if (len == 0 || (len == 1 && host[0] == '*') || (len == 4 && memcmp(host, "[::]", 4) == 0))
        return true;
    /* 0.0.0.0 takes the port of every IPv4 address, not of an IPv6 one. */
    return len == 7 && memcmp(host, "0.0.0.0", 7) == 0 && other[0] != '[';
}

/*
 * Whether two checked "host:port" addresses cannot both be bound: the same
 * port on the same host, or on a host that stands for every address.
 */
static bool
addresses_clash(const char *a, const char *b)
{
    const char *pa = strrchr(a, ':'), *pb = strrchr(b, ':');
    size_t la = (size_t)(pa - a), lb = (size_t)(pb - b);

    if (atoi(pa + 1) != atoi(pb + 1))
        return false;
    return (la == lb && memcmp(a, b, la) == 0) || host_is_any(a, la, b) || host_is_any(b, lb, a);
}

/* ------------------------------------------ the process: pool, user, logs */

/* A failed getpwnam or getgrnam: a name that is not there, or a lookup
 * that could not be made (NSS down, out of files), which says so. */
static int
lookup_error(struct load *ld, const struct node *n, const char *what, int err)
{
    if (err == 0 || err == ENOENT || err == ESRCH || err == EBADF || err == EPERM)
        return gw_master_config_error(ld, n, "no such %s %s", what,
                                      gw_master_config_show_node(ld, n));
    return gw_master_config_error(ld, n, "cannot look up %s %s: %s", what,
                                  gw_master_config_show_node(ld, n), strerror(err));
}

/*
 * Check that the user (or group) named by n exists.  A number that names
 * none is taken as an id, as master/privs.c takes it.
 */
static int
account_check(struct load *ld, const struct node *n, const char *name, bool group)
{
    const char *what = group ? "group" : "user";
    unsigned long id;
    char *end;
    bool found;

    if (gw_master_confval_scalar(ld, n, name,
                                 group ? "the name of a group" : "the name of a user") == NULL)
        return GW_ECONFIG;
    errno = 0;
    found = group ? getgrnam(n->value) != NULL : getpwnam(n->value) != NULL;
    if (!found && n->value[0] >= '0' && n->value[0] <= '9') {
        int saved = errno;
        errno = 0;
        id = strtoul(n->value, &end, 10);
        if (errno == 0 && *end == '\0')
            found = group ? getgrgid((gid_t)id) != NULL : getpwuid((uid_t)id) != NULL;
        else
            errno = saved;
    }
    return found ? 0 : lookup_error(ld, n, what, errno);
}

static int
parse_user(struct load *ld, const struct node *n, const char *name, const struct field *f,
           void *dst)
{
    if (account_check(ld, n, name, false) != 0)
        return GW_ECONFIG;
    return gw_master_confval_string(ld, n, name, f, dst);
}

static int
parse_group(struct load *ld, const struct node *n, const char *name, const struct field *f,
            void *dst)
{
    if (account_check(ld, n, name, true) != 0)
        return GW_ECONFIG;
    return gw_master_confval_string(ld, n, name, f, dst);
}

/* log.access_file: a path, or "journal" for journald. */
static int
parse_access_file(struct load *ld, const struct node *n, const char *name, const struct field *f,
                  void *dst)
{
    struct gw_config *cfg = dst;

    if (gw_master_confval_scalar(ld, n, name, "a path or journal") == NULL)
        return GW_ECONFIG;
    cfg->access_journal = strcmp(n->value, "journal") == 0;
    cfg->access_file = NULL;
    if (cfg->access_journal)
        return 0;
    return gw_master_confval_string(ld, n, name, f, &cfg->access_file);
}

/* workers: as a mapping, read whole before its defaults, which depend on
 * each other, are settled. */
struct workers_spec {
    int start, min_spare, max_spare, max, connections;
    uint64_t max_requests;
    bool cpu_affinity;
};

/*
 * The worker pool as a mapping: a fixed pool of start workers when
 * min_spare is 0 or absent, else one that keeps between min_spare and
 * max_spare idle workers, at most max in all.  A message about keys that
 * disagree points at the key that has to change.
 */
static int
workers_mapping(struct load *ld, const struct node *n, const char *name, const struct field *f,
                struct gw_config *cfg)
{
    const struct node *start = map_key(n, "start"), *max = map_key(n, "max");
    const struct node *min_spare = map_key(n, "min_spare"), *max_spare = map_key(n, "max_spare");
    struct workers_spec w = {.connections = 1};

    if (gw_master_config_walk(ld, n, name, f->sub, &w) != 0)
        return GW_ECONFIG;
    if (w.min_spare == 0) {
        if (max_spare != NULL)
            return gw_master_config_error(ld, max_spare,
                                          "\"%s.max_spare\" needs %s.min_spare: without it the "
                                          "pool is fixed at %s.start",
                                          name, name, name);
        if (start == NULL) /* as many as without a workers key, within max */
            w.start = max != NULL && cfg->workers > w.max ? w.max : cfg->workers;
        if (max != NULL && w.start > w.max)
            return gw_master_config_error(ld, start, "\"%s.start\" must be at most %s.max (%d)",
                                          name, name, w.max);
        w.max = w.start;
    } else {
        if (start == NULL)
            w.start = w.min_spare;
        if (max == NULL) {
            w.max = w.start > CONFIG_POOL_MAX ? w.start : CONFIG_POOL_MAX;
            w.max = max_spare != NULL && w.max_spare > w.max ? w.max_spare : w.max;
        }
        if (max_spare == NULL)
            w.max_spare = w.min_spare * 2 < w.max ? w.min_spare * 2 : w.max;
        if (w.min_spare >= w.max)
            return gw_master_config_error(
                ld, min_spare, "\"%s.min_spare\" must be less than %s.max (%d)", name, name, w.max);
        if (w.max_spare <= w.min_spare)
            return gw_master_config_error(ld, max_spare,
                                          "\"%s.max_spare\" must be more than %s.min_spare (%d)",
                                          name, name, w.min_spare);
        if (w.max_spare > w.max)
            return gw_master_config_error(
                ld, max_spare, "\"%s.max_spare\" must be at most %s.max (%d)", name, name, w.max);
        if (w.start > w.max)
            return gw_master_config_error(ld, start, "\"%s.start\" must be at most %s.max (%d)",
                                          name, name, w.max);
    }
    cfg->workers = w.start;
    cfg->workers_min_spare = w.min_spare;
    cfg->workers_max_spare = w.min_spare == 0 ? 0 : w.max_spare;
    cfg->workers_max = w.max;
    cfg->max_requests = w.max_requests;
    cfg->worker_connections = w.connections;
    cfg->worker_cpu_affinity = w.cpu_affinity;
    return 0;
}

/* workers: a number (a fixed pool) or a mapping. */
static int
parse_workers(struct load *ld, const struct node *n, const char *name, const struct field *f,
              void *dst)
{
    static const struct field fixed = {.min = 1, .max = CONFIG_MAX_WORKERS};
    struct gw_config *cfg = dst;
    struct gw_buf keys = {0};
    int rc;

    if (n->kind == NODE_MAPPING)
        return workers_mapping(ld, n, name, f, cfg);
    if (n->kind == NODE_SCALAR) {
        if (gw_master_confval_int(ld, n, name, &fixed, &cfg->workers) != 0)
            return GW_ECONFIG;
        cfg->workers_min_spare = cfg->workers_max_spare = 0;
        cfg->workers_max = cfg->workers;
        cfg->max_requests = 0;
        cfg->worker_connections = 1;
        return 0;
    }
    for (const struct field *k = f->sub; k->key != NULL; k++)
        gw_buf_printf(&keys, "%s%s", k == f->sub ? "" : ", ", k->key);
    rc = gw_master_config_error(ld, n, "\"%s\" must be an integer or a mapping of keys (%s)", name,
                                keys.data != NULL ? keys.data : "");
    gw_buf_free(&keys);
    return rc;
}

/* ----------------------------------------------------------- providers */

static int
parse_provider_name(struct load *ld, const struct node *n, const char *name, const struct field *f,
                    void *dst)
{
    const char *s = gw_master_confval_scalar(ld, n, name, "a string");

    if (s == NULL)
        return GW_ECONFIG;
    if (strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != n->len)
        return gw_master_config_error(
            ld, n, "\"%s\" may hold only letters, digits, '.', '_' and '-' (got %s)", name,
            gw_master_config_show_node(ld, n));
    return gw_master_confval_string(ld, n, name, f, dst);
}

static int
parse_provider_type(struct load *ld, const struct node *n, const char *name, const struct field *f,
                    void *dst)
{
    const char *s = gw_master_confval_scalar(ld, n, name, "a provider type");
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
    }
    /* Listed only now: a match after the first type would leak the list. */
    for (size_t i = 0; i < sizeof(provider_types) / sizeof(provider_types[0]); i++)
        gw_buf_printf(&b, "%s%s", i == 0 ? "" : ", ", provider_types[i]);
    rc = gw_master_config_error(ld, n, "provider type %s is not supported (supported: %s)",
                                gw_master_config_show_node(ld, n), b.data != NULL ? b.data : "");
    gw_buf_free(&b);
    return rc;
}

/* An http:// or https:// URL with a host; trailing slashes are dropped. */
static int
parse_url(struct load *ld, const struct node *n, const char *name, const struct field *f, void *dst)
{
    const char *s =
        gw_master_confval_scalar(ld, n, name, "a URL such as https://api.openai.com/v1");
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
    const char *s = gw_master_confval_scalar(ld, n, name, "the name of an environment variable");

    if (s == NULL)
        return GW_ECONFIG;
    if ((s[0] >= '0' && s[0] <= '9') ||
        strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_") != n->len)
        return gw_master_config_error(ld, n,
                                      "\"%s\" must be the name of an environment variable, "
                                      "such as OPENAI_API_KEY (got %s)",
                                      name, gw_master_config_show_node(ld, n));
    return gw_master_confval_string(ld, n, name, f, dst);
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

    if (gw_master_confprov_finish(ld, p, map) != 0)
        return GW_ECONFIG;
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

    if (gw_master_confval_sequence(ld, n, name, "provider") != 0)
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
    const char *s = gw_master_confval_scalar(ld, n, name, "a string");

    if (s == NULL)
        return GW_ECONFIG;
    for (const char *c = s; *c != '\0'; c++)
        if ((unsigned char)*c <= ' ' || *c == 0x7f)
            return gw_master_config_error(
                ld, n, "\"%s\" must not contain spaces or control characters (got %s)", name,
                gw_master_config_show_node(ld, n));
    return gw_master_confval_string(ld, n, name, f, dst);
}

static int
parse_target_provider(struct load *ld, const struct node *n, const char *name,
                      const struct field *f, void *dst)
{
    struct ref *r;

    (void)f;
    if (gw_master_confval_scalar(ld, n, name, "the name of a provider") == NULL)
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

    if (gw_master_confval_sequence(ld, n, name, "target") != 0)
        return GW_ECONFIG;
    m->targets = gw_arena_zalloc(ld->cfg->arena, n->nitems * sizeof(*m->targets));
    for (size_t i = 0; i < n->nitems; i++) {
        const char *item_name = gw_arena_printf(ld->tmp, "%s[%zu]", name, i);
        m->targets[i].weight = 1;
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

    if (gw_master_confval_sequence(ld, n, name, "model") != 0)
        return GW_ECONFIG;
    cfg->models = gw_arena_zalloc(cfg->arena, n->nitems * sizeof(*cfg->models));
    ld->model_names = gw_arena_zalloc(ld->tmp, n->nitems * sizeof(*ld->model_names));
    for (size_t i = 0; i < n->nitems; i++) {
        const struct node *item = n->items[i];
        struct gw_model *m = &cfg->models[i];
        const char *item_name = gw_arena_printf(ld->tmp, "%s[%zu]", name, i);

        /* Timeouts left at 0 take the top-level values at the end, and
         * limits left unset the top-level limits.model. */
        gw_master_confroute_model_defaults(ld, m);
        m->limits.rpm = m->limits.tpm = GW_LIMIT_UNSET;
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
        if (gw_master_confroute_model_finish(ld, m, item, item_name) != 0)
            return GW_ECONFIG;
    }
    return 0;
}

/* ------------------------------------------------ pass-through upstreams */

/* A name that fits in a URL path segment: letters, digits, '.', '_', '-'. */
static int
parse_passthru_name(struct load *ld, const struct node *n, const char *name, const struct field *f,
                    void *dst)
{
    const char *s = gw_master_confval_scalar(ld, n, name, "a name");

    if (s == NULL)
        return GW_ECONFIG;
    if (s[0] == '\0' ||
        strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != strlen(s))
        return gw_master_config_error(ld, n,
                                      "\"%s\" must be letters, digits, '.', '_' or '-' (got %s)",
                                      name, gw_master_config_show_node(ld, n));
    return gw_master_confval_string(ld, n, name, f, dst);
}

/* A path appended to the provider's base URL: "/..." without a query. */
static int
parse_passthru_path(struct load *ld, const struct node *n, const char *name, const struct field *f,
                    void *dst)
{
    const char *s = gw_master_confval_scalar(ld, n, name, "a path such as /mcp");

    if (s == NULL)
        return GW_ECONFIG;
    if (s[0] != '/' || strpbrk(s, "?# \t") != NULL)
        return gw_master_config_error(ld, n, "\"%s\" must start with / and hold no query (got %s)",
                                      name, gw_master_config_show_node(ld, n));
    return gw_master_confval_string(ld, n, name, f, dst);
}

/* mcp:, agents:, sandboxes: - one list each, all kept in cfg->passthru. */
static int
parse_passthru(struct load *ld, const struct node *n, const char *name, const struct field *f,
               enum gw_passthru_kind kind)
{
    struct gw_config *cfg = ld->cfg;

    if (gw_master_confval_sequence(ld, n, name, "upstream") != 0)
        return GW_ECONFIG;
    /* One array for the three lists, never moved: the provider references
     * point into it until the end of the file resolves them. */
    if (cfg->passthru == NULL)
        cfg->passthru = gw_arena_zalloc(cfg->arena, CONFIG_MAX_PASSTHRU * sizeof(*cfg->passthru));
    if (cfg->npassthru + n->nitems > CONFIG_MAX_PASSTHRU)
        return gw_master_config_error(ld, n, "at most %d mcp, agents and sandboxes together",
                                      CONFIG_MAX_PASSTHRU);
    for (size_t i = 0; i < n->nitems; i++) {
        struct gw_passthru *p = &cfg->passthru[cfg->npassthru];
        const char *item_name = gw_arena_printf(ld->tmp, "%s[%zu]", name, i);
        p->kind = kind;
        if (gw_master_config_walk(ld, n->items[i], item_name, f->sub, p) != 0)
            return GW_ECONFIG;
        for (size_t j = 0; j < cfg->npassthru; j++)
            if (cfg->passthru[j].kind == kind && strcmp(cfg->passthru[j].name, p->name) == 0)
                return gw_master_config_error(ld, map_value(n->items[i], "name"),
                                              "duplicate name %s in %s", p->name, name);
        cfg->npassthru++;
    }
    return 0;
}

static int
parse_mcp(struct load *ld, const struct node *n, const char *name, const struct field *f, void *dst)
{
    (void)dst;
    return parse_passthru(ld, n, name, f, GW_PASSTHRU_MCP);
}

static int
parse_agents(struct load *ld, const struct node *n, const char *name, const struct field *f,
             void *dst)
{
    (void)dst;
    return parse_passthru(ld, n, name, f, GW_PASSTHRU_AGENT);
}

static int
parse_sandboxes(struct load *ld, const struct node *n, const char *name, const struct field *f,
                void *dst)
{
    (void)dst;
    return parse_passthru(ld, n, name, f, GW_PASSTHRU_SANDBOX);
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

/* admin:, log:, metrics: and upstream: fill struct gw_config itself. */
static const struct field admin_fields[] = {
    FIELD("socket", gw_master_confval_socket, offsetof(struct gw_config, admin_socket)),
    FIELD("mode", gw_master_confval_mode, offsetof(struct gw_config, admin_mode)),
    FIELD("listen", parse_admin_listen, 0),
    {.key = NULL},
};

static const struct field log_fields[] = {
    FIELD("level", gw_master_confval_level, offsetof(struct gw_config, log_level)),
    FIELD("access", gw_master_confval_bool, offsetof(struct gw_config, access_log)),
    FIELD("file", gw_master_confval_string, offsetof(struct gw_config, log_file)),
    FIELD("access_file", parse_access_file, 0),
    FIELD("access_buffer", gw_master_confval_size, offsetof(struct gw_config, access_buffer),
          .min = 0, .max = 16 * MIB),
    FIELD("access_flush", gw_master_confval_duration, offsetof(struct gw_config, access_flush_ms),
          .min = 1, .max = 3600 * SECOND_MS),
    {.key = NULL},
};

/* workers: as a mapping fills a struct workers_spec. */
static const struct field workers_fields[] = {
    FIELD("start", gw_master_confval_int, offsetof(struct workers_spec, start), .min = 1,
          .max = CONFIG_MAX_WORKERS),
    FIELD("min_spare", gw_master_confval_int, offsetof(struct workers_spec, min_spare), .min = 0,
          .max = CONFIG_MAX_WORKERS - 1),
    FIELD("max_spare", gw_master_confval_int, offsetof(struct workers_spec, max_spare), .min = 1,
          .max = CONFIG_MAX_WORKERS),
    FIELD("max", gw_master_confval_int, offsetof(struct workers_spec, max), .min = 1,
          .max = CONFIG_MAX_WORKERS),
    FIELD("max_requests", gw_master_confval_count, offsetof(struct workers_spec, max_requests),
          .min = 0, .max = CONFIG_MAX_REQUESTS),
    FIELD("connections", gw_master_confval_int, offsetof(struct workers_spec, connections),
          .min = 1, .max = CONFIG_MAX_WORKER_CONNECTIONS),
    FIELD("cpu_affinity", gw_master_confval_bool, offsetof(struct workers_spec, cpu_affinity)),
    {.key = NULL},
};

static const struct field passthru_fields[] = {
    FIELD("name", parse_passthru_name, offsetof(struct gw_passthru, name), .required = true),
    FIELD("provider", parse_target_provider, offsetof(struct gw_passthru, provider),
          .required = true),
    FIELD("path", parse_passthru_path, offsetof(struct gw_passthru, path)),
    {.key = NULL},
};

static const struct field quotas_fields[] = {
    FIELD("webhook", parse_url, offsetof(struct gw_config, quota_webhook)),
    FIELD("webhook_timeout", gw_master_confval_duration,
          offsetof(struct gw_config, quota_webhook_timeout_ms), .min = 1, .max = 60000),
    {.key = NULL},
};

/* cache: and capture: fill struct gw_config itself. */
/* cache: bypass: and capture: bypass: (dst: struct gw_bypass). */
static const struct field bypass_fields[] = {
    FIELD("keys", gw_master_confcache_names, offsetof(struct gw_bypass, keys)),
    FIELD("tenants", gw_master_confcache_names, offsetof(struct gw_bypass, tenants)),
    {.key = NULL},
};

static const struct field cache_fields[] = {
    FIELD("max_size", gw_master_confval_size, offsetof(struct gw_config, cache_max_size),
          .min = MIB, .max = 32 * GIB),
    FIELD("bypass", gw_master_confval_section, offsetof(struct gw_config, cache_bypass),
          .sub = bypass_fields),
    {.key = NULL},
};

static const struct field capture_fields[] = {
    FIELD("dir", gw_master_confval_string, offsetof(struct gw_config, capture_dir)),
    FIELD("journal", gw_master_confval_bool, offsetof(struct gw_config, capture_journal)),
    FIELD("rotate", gw_master_confcache_rotate, offsetof(struct gw_config, capture_rotate)),
    FIELD("max_size", gw_master_confval_size, offsetof(struct gw_config, capture_max_size),
          .min = 64 * KIB, .max = 1024 * GIB),
    FIELD("max_record", gw_master_confval_size, offsetof(struct gw_config, capture_max_record),
          .min = 4 * KIB, .max = GIB),
    FIELD("keys", gw_master_confcache_names, offsetof(struct gw_config, capture_keys)),
    FIELD("tenants", gw_master_confcache_names, offsetof(struct gw_config, capture_tenants)),
    FIELD("bypass", gw_master_confval_section, offsetof(struct gw_config, capture_bypass),
          .sub = bypass_fields),
    {.key = NULL},
};

/* A model's cache: fills struct gw_model itself. */
static const struct field model_cache_fields[] = {
    FIELD("ttl", gw_master_confval_duration, offsetof(struct gw_model, cache_ttl_ms), .min = 1,
          .max = 365 * DAY_MS, .required = true),
    FIELD("when", gw_master_confcache_when, offsetof(struct gw_model, cache_deterministic)),
    {.key = NULL},
};

static const struct field metrics_fields[] = {
    FIELD("listen", parse_address, offsetof(struct gw_config, metrics_listen)),
    {.key = NULL},
};

static const struct field http_fields[] = {
    FIELD("max_header_size", gw_master_confval_size,
          offsetof(struct gw_http_limits, max_header_size), .min = KIB, .max = MIB),
    FIELD("max_body_size", gw_master_confval_size, offsetof(struct gw_http_limits, max_body_size),
          .min = KIB, .max = GIB),
    FIELD("max_upload_size", gw_master_confval_size,
          offsetof(struct gw_http_limits, max_upload_size), .min = KIB, .max = 64 * GIB),
    FIELD("keepalive_timeout", gw_master_confval_duration,
          offsetof(struct gw_http_limits, keepalive_timeout_ms), .min = 1, .max = DAY_MS),
    FIELD("read_timeout", gw_master_confval_duration,
          offsetof(struct gw_http_limits, read_timeout_ms), .min = 1, .max = DAY_MS),
    FIELD("write_timeout", gw_master_confval_duration,
          offsetof(struct gw_http_limits, write_timeout_ms), .min = 1, .max = DAY_MS),
    {.key = NULL},
};

static const struct field upstream_fields[] = {
    FIELD("max_response_size", gw_master_confval_size,
          offsetof(struct gw_config, max_response_size), .min = KIB, .max = GIB),
    {.key = NULL},
};

/* Used three times: the top-level defaults, a model's and a provider's own. */
static const struct field timeouts_fields[] = {
    FIELD("connect", gw_master_confval_duration, offsetof(struct gw_timeouts, connect_ms), .min = 1,
          .max = DAY_MS),
    FIELD("first_byte", gw_master_confval_duration, offsetof(struct gw_timeouts, first_byte_ms),
          .min = 1, .max = DAY_MS),
    FIELD("idle", gw_master_confval_duration, offsetof(struct gw_timeouts, idle_ms), .min = 1,
          .max = DAY_MS),
    FIELD("total", gw_master_confval_duration, offsetof(struct gw_timeouts, total_ms), .min = 1,
          .max = DAY_MS),
    {.key = NULL},
};

/* health: fills struct gw_provider itself. */
static const struct field health_fields[] = {
    FIELD("interval", gw_master_confval_duration, offsetof(struct gw_provider, health_interval_ms),
          .min = 100, .max = HOUR_MS),
    FIELD("timeout", gw_master_confval_duration, offsetof(struct gw_provider, health_timeout_ms),
          .min = 1, .max = HOUR_MS),
    FIELD("path", gw_master_confroute_path, offsetof(struct gw_provider, health_path)),
    {.key = NULL},
};

static const struct field provider_fields[] = {
    FIELD("name", parse_provider_name, offsetof(struct gw_provider, name), .required = true),
    FIELD("type", parse_provider_type, offsetof(struct gw_provider, type), .required = true),
    FIELD("base_url", parse_url, offsetof(struct gw_provider, base_url)),
    FIELD("preset", gw_master_confprov_preset, offsetof(struct gw_provider, preset)),
    FIELD("stream_usage", gw_master_confprov_stream_usage, offsetof(struct gw_provider, quirks)),
    FIELD("api_version", gw_master_confroute_label, offsetof(struct gw_provider, api_version)),
    FIELD("region", gw_master_confroute_label, offsetof(struct gw_provider, region)),
    FIELD("max_tokens", gw_master_confval_uint, offsetof(struct gw_provider, max_tokens), .min = 1,
          .max = 10000000),
    FIELD("api_key_env", parse_env_name, offsetof(struct gw_provider, api_key_env)),
    FIELD("api_key_file", gw_master_confval_string, offsetof(struct gw_provider, api_key_file)),
    FIELD("health", gw_master_confroute_health, 0, .sub = health_fields),
    FIELD("timeouts", gw_master_confval_section, offsetof(struct gw_provider, timeouts),
          .sub = timeouts_fields),
    {.key = NULL},
};

/* price: fills struct gw_target itself. */
static const struct field price_fields[] = {
    FIELD("input", gw_master_confval_number, offsetof(struct gw_target, price_input), .min = 0,
          .max = CONFIG_MAX_PRICE, .required = true),
    FIELD("output", gw_master_confval_number, offsetof(struct gw_target, price_output), .min = 0,
          .max = CONFIG_MAX_PRICE, .required = true),
    {.key = NULL},
};

static const struct field target_fields[] = {
    FIELD("provider", parse_target_provider, offsetof(struct gw_target, provider),
          .required = true),
    FIELD("model", parse_model_name, offsetof(struct gw_target, model), .required = true),
    FIELD("weight", gw_master_confval_uint, offsetof(struct gw_target, weight), .min = 1,
          .max = CONFIG_MAX_WEIGHT),
    FIELD("price", gw_master_confval_section, 0, .sub = price_fields),
    FIELD("region", gw_master_confroute_label, offsetof(struct gw_target, region)),
    FIELD("tags", gw_master_confroute_tags, 0),
    FIELD("deployment", gw_master_confroute_label, offsetof(struct gw_target, deployment)),
    FIELD("api_version", gw_master_confroute_label, offsetof(struct gw_target, api_version)),
    {.key = NULL},
};

/* breaker: fills struct gw_routing itself. */
static const struct field breaker_fields[] = {
    FIELD("failures", gw_master_confval_uint, offsetof(struct gw_routing, breaker_failures),
          .min = 0, .max = CONFIG_MAX_FAILURES),
    FIELD("cooldown", gw_master_confval_duration, offsetof(struct gw_routing, breaker_cooldown_ms),
          .min = 1, .max = HOUR_MS),
    /* A share of attempts: 0 (off) to 1. */
    FIELD("error_rate", gw_master_confval_number, offsetof(struct gw_routing, breaker_error_rate),
          .min = 0, .max = 1),
    FIELD("window", gw_master_confval_duration, offsetof(struct gw_routing, breaker_window_ms),
          .min = SECOND_MS, .max = HOUR_MS),
    FIELD("min_requests", gw_master_confval_uint, offsetof(struct gw_routing, breaker_min_requests),
          .min = 1, .max = CONFIG_MAX_MIN_REQUESTS),
    {.key = NULL},
};

static const struct field routing_fields[] = {
    FIELD("strategy", gw_master_confroute_strategy, offsetof(struct gw_routing, strategy)),
    FIELD("retries", gw_master_confval_uint, offsetof(struct gw_routing, retries), .min = 0,
          .max = CONFIG_MAX_RETRIES),
    FIELD("deadline", gw_master_confval_duration, offsetof(struct gw_routing, deadline_ms),
          .min = 1, .max = DAY_MS),
    FIELD("breaker", gw_master_confval_section, 0, .sub = breaker_fields),
    FIELD("session_header", gw_master_confroute_header,
          offsetof(struct gw_routing, session_header)),
    {.key = NULL},
};

/* Rate limits of one scope: limits.key, limits.model, a model's limits. */
static const struct field limit_fields[] = {
    FIELD("rpm", gw_master_confval_count, offsetof(struct gw_limits, rpm), .min = 0,
          .max = CONFIG_MAX_RATE),
    FIELD("tpm", gw_master_confval_count, offsetof(struct gw_limits, tpm), .min = 0,
          .max = CONFIG_MAX_RATE),
    {.key = NULL},
};

/* limits: at the top level fills struct gw_config itself. */
static const struct field limits_fields[] = {
    FIELD("key", gw_master_confval_section, offsetof(struct gw_config, key_limits),
          .sub = limit_fields),
    FIELD("user", gw_master_confval_section, offsetof(struct gw_config, user_limits),
          .sub = limit_fields),
    FIELD("tenant", gw_master_confval_section, offsetof(struct gw_config, tenant_limits),
          .sub = limit_fields),
    FIELD("model", gw_master_confval_section, offsetof(struct gw_config, model_limits),
          .sub = limit_fields),
    {.key = NULL},
};

/* usage: retention (master/usage.c prunes). */
static const struct field usage_fields[] = {
    FIELD("detail_days", gw_master_confval_count, offsetof(struct gw_config, usage_detail_days),
          .min = 0, .max = CONFIG_MAX_RETENTION_DAYS),
    FIELD("aggregate_days", gw_master_confval_count,
          offsetof(struct gw_config, usage_aggregate_days), .min = 0,
          .max = CONFIG_MAX_RETENTION_DAYS),
    {.key = NULL},
};
/* A model's type: one of gw_model_type_names. */
static int
parse_model_type(struct load *ld, const struct node *n, const char *name, const struct field *f,
                 void *dst)
{
    const char *s = gw_master_confval_scalar(ld, n, name, "a model type");

    (void)f;
    if (s == NULL)
        return GW_ECONFIG;
    for (int i = 0; i < GW_MODEL_NTYPES; i++) {
        if (strcmp(s, gw_model_type_names[i]) == 0) {
            *(enum gw_model_type *)dst = (enum gw_model_type)i;
            return 0;
        }
    }
    return gw_master_config_error(ld, n,
                                  "\"%s\": unknown model type %s (chat, completions, embeddings, "
                                  "images, audio, moderations, responses, video)",
                                  name, gw_master_config_show_node(ld, n));
}

static const struct field model_fields[] = {
    FIELD("name", parse_model_name, offsetof(struct gw_model, name), .required = true),
    FIELD("type", parse_model_type, offsetof(struct gw_model, type)),
    FIELD("context_length", gw_master_confval_count, offsetof(struct gw_model, context_length),
          .min = 1, .max = CONFIG_MAX_CONTEXT),
    FIELD("timeouts", gw_master_confval_section, offsetof(struct gw_model, timeouts),
          .sub = timeouts_fields),
    FIELD("targets", parse_targets, 0, .sub = target_fields, .required = true),
    FIELD("routing", gw_master_confval_section, offsetof(struct gw_model, routing),
          .sub = routing_fields),
    FIELD("fallbacks", gw_master_confroute_fallbacks, 0),
    FIELD("limits", gw_master_confval_section, offsetof(struct gw_model, limits),
          .sub = limit_fields),
    FIELD("cache", gw_master_confval_section, 0, .sub = model_cache_fields),
    FIELD("capture", gw_master_confval_bool, offsetof(struct gw_model, capture)),
    FIELD("safety", gw_master_confsafety_model, 0),
    {.key = NULL},
};

/* secrets: where the keys that protect stored secrets come from. */
static const struct field secrets_fields[] = {
    FIELD("provider_key_file", gw_master_confval_string,
          offsetof(struct gw_config, provider_key_file)),
    {.key = NULL},
};

/* gw_master_config_fields - the top level; walked by gw_master_config_load. */
const struct field gw_master_config_fields[] = {
    FIELD("listen", parse_listen, 0),
    FIELD("state_dir", gw_master_confval_string, offsetof(struct gw_config, state_dir)),
    FIELD("admin", gw_master_confval_section, 0, .sub = admin_fields),
    FIELD("user", parse_user, offsetof(struct gw_config, user)),
    FIELD("group", parse_group, offsetof(struct gw_config, group)),
    FIELD("workers", parse_workers, 0, .sub = workers_fields),
    FIELD("shutdown_timeout", gw_master_confval_duration,
          offsetof(struct gw_config, shutdown_timeout_ms), .min = 1, .max = DAY_MS),
    FIELD("log", gw_master_confval_section, 0, .sub = log_fields),
    FIELD("metrics", parse_metrics, 0, .sub = metrics_fields),
    FIELD("http", gw_master_confval_section, offsetof(struct gw_config, http), .sub = http_fields),
    FIELD("upstream", gw_master_confval_section, 0, .sub = upstream_fields),
    FIELD("timeouts", gw_master_confval_section, offsetof(struct gw_config, timeouts),
          .sub = timeouts_fields),
    FIELD("providers", parse_providers, 0, .sub = provider_fields, .required = true),
    FIELD("models", parse_models, 0, .sub = model_fields, .required = true),
    FIELD("limits", gw_master_confval_section, 0, .sub = limits_fields),
    FIELD("quotas", gw_master_confval_section, 0, .sub = quotas_fields),
    FIELD("mcp", parse_mcp, 0, .sub = passthru_fields),
    FIELD("agents", parse_agents, 0, .sub = passthru_fields),
    FIELD("sandboxes", parse_sandboxes, 0, .sub = passthru_fields),
    FIELD("usage", gw_master_confval_section, 0, .sub = usage_fields),
    FIELD("safety", gw_master_confsafety_section, 0),
    FIELD("secrets", gw_master_confval_section, 0, .sub = secrets_fields),
    FIELD("cache", gw_master_confval_section, 0, .sub = cache_fields),
    FIELD("capture", gw_master_confcache_capture, 0, .sub = capture_fields),
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
    cfg->quota_webhook_timeout_ms = 5000;
    cfg->workers = cpus < 2 ? 2 : cpus > CONFIG_MAX_WORKERS ? CONFIG_MAX_WORKERS : (int)cpus;
    cfg->workers_max = cfg->workers; /* a fixed pool: no spares, no recycling */
    cfg->worker_connections = 1;
    cfg->shutdown_timeout_ms = 30 * SECOND_MS;
    cfg->log_level = GW_LOG_INFO;
    cfg->access_log = true;
    cfg->access_flush_ms = SECOND_MS;
    cfg->http.max_header_size = 16 * KIB;
    cfg->http.max_body_size = 8 * MIB;
    cfg->http.max_upload_size = 25 * MIB;
    cfg->http.keepalive_timeout_ms = 75 * SECOND_MS;
    cfg->http.read_timeout_ms = 30 * SECOND_MS;
    cfg->http.write_timeout_ms = 30 * SECOND_MS;
    cfg->max_response_size = 64 * MIB;
    cfg->timeouts.connect_ms = 5 * SECOND_MS;
    cfg->timeouts.first_byte_ms = 120 * SECOND_MS;
    cfg->timeouts.idle_ms = 60 * SECOND_MS;
    cfg->timeouts.total_ms = 600 * SECOND_MS;
    /* A month of requests one by one (about half a KiB each), two years
     * of daily sums. */
    cfg->usage_detail_days = 30;
    cfg->usage_aggregate_days = 730;
    cfg->cache_max_size = GIB;
    cfg->capture_max_size = 100 * MIB;
    cfg->capture_max_record = 16 * MIB;
}

/* The node of section.listen (or of section itself), for an error. */
static const struct node *
listen_node(struct load *ld, const char *section, size_t i)
{
    const struct node *sec = map_value(ld->root, section);
    const struct node *at = sec != NULL ? map_value(sec, "listen") : NULL;

    if (at == NULL)
        return sec != NULL ? sec : ld->root;
    return at->kind == NODE_SEQUENCE && i < at->nitems ? at->items[i] : at;
}

/*
 * Checks across top-level keys that may come in any order: a group needs a
 * user, and the metrics and admin listeners addresses no client listener
 * (and neither of them the other's) takes.  Runs after the default listen
 * address is in place.
 */
static int
process_finish(struct load *ld)
{
    struct gw_config *cfg = ld->cfg;

    if (cfg->group != NULL && cfg->user == NULL)
        return gw_master_config_error(ld, map_key(ld->root, "group"),
                                      "\"group\" is set without \"user\"; name the user "
                                      "to run as too");
    /* Periods whose records are gone are answered from the aggregates:
     * those must not go first.  Records kept forever keep the default
     * aggregates forever too. */
    const struct node *usage = map_value(ld->root, "usage");
    const struct node *agg = usage != NULL ? map_value(usage, "aggregate_days") : NULL;
    if (agg == NULL && cfg->usage_detail_days == 0)
        cfg->usage_aggregate_days = 0;
    if (agg != NULL && cfg->usage_aggregate_days != 0 &&
        (cfg->usage_detail_days == 0 || cfg->usage_aggregate_days < cfg->usage_detail_days))
        return gw_master_config_error(
            ld, agg,
            "\"usage.aggregate_days\" (%llu) must be 0 (forever) or at least "
            "\"usage.detail_days\" (%llu%s)",
            (unsigned long long)cfg->usage_aggregate_days,
            (unsigned long long)cfg->usage_detail_days,
            cfg->usage_detail_days == 0 ? ", forever" : "");
    for (size_t i = 0; cfg->metrics_listen != NULL && i < cfg->nlisten; i++) {
        if (!addresses_clash(cfg->metrics_listen, cfg->listen[i]))
            continue;
        return gw_master_config_error(
            ld, listen_node(ld, "metrics", 0),
            "\"metrics.listen\" %s clashes with the listen address %s; metrics need an "
            "address of their own",
            gw_master_config_show(ld, cfg->metrics_listen, strlen(cfg->metrics_listen)),
            gw_master_config_show(ld, cfg->listen[i], strlen(cfg->listen[i])));
    }
    for (size_t a = 0; a < cfg->nadmin_listen; a++) {
        const char *addr = cfg->admin_listen[a], *other = NULL;
        for (size_t i = 0; i < cfg->nlisten && other == NULL; i++)
            if (addresses_clash(addr, cfg->listen[i]))
                other = cfg->listen[i];
        if (other == NULL && cfg->metrics_listen != NULL &&
            addresses_clash(addr, cfg->metrics_listen))
            other = cfg->metrics_listen;
        if (other == NULL)
            continue;
        return gw_master_config_error(
            ld, listen_node(ld, "admin", a),
            "\"admin.listen\" %s clashes with the %s address %s; the admin API needs an "
            "address of its own",
            gw_master_config_show(ld, addr, strlen(addr)),
            other == cfg->metrics_listen ? "metrics.listen" : "listen",
            gw_master_config_show(ld, other, strlen(other)));
    }
    return 0;
}

/*
 * gw_master_config_finish - what can only be settled once the whole file
 * has been read: resolve each target's provider name and each model's
 * fallbacks, give models the top-level timeouts they did not set, listen
 * on 127.0.0.1:8080 when no address is given, and check the keys that
 * depend on each other across the top level (group and user,
 * metrics.listen, admin.listen and listen).
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
    if (gw_master_confroute_finish(ld) != 0 || gw_master_confsafety_finish(ld) != 0)
        return GW_ECONFIG;
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
        struct gw_limits *l = &cfg->models[i].limits;
        if (l->rpm == GW_LIMIT_UNSET)
            l->rpm = cfg->model_limits.rpm;
        if (l->tpm == GW_LIMIT_UNSET)
            l->tpm = cfg->model_limits.tpm;
    }
    if (cfg->nlisten == 0) {
        cfg->listen = gw_arena_alloc(cfg->arena, sizeof(*cfg->listen));
        cfg->listen[0] = gw_arena_strdup(cfg->arena, "127.0.0.1:8080");
        cfg->nlisten = 1;
    }
    return process_finish(ld);
}
