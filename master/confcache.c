/*
 * confcache.c - the configuration keys of the response cache and of
 * request capture: the top-level cache: and capture: mappings and a
 * model's cache:.  Their rows sit in master/schema.c with every other row;
 * what is here is what the keys mean beyond their type: the rotation
 * names, the lists of keys and tenants, and the checks across the keys of
 * capture: (files or journald, not both).
 */
#include <stdio.h>
#include <string.h>

#include "master/config_int.h"

static const char *const rotate_names[] = {
    [GW_CAPTURE_DAILY] = "daily",
    [GW_CAPTURE_SIZE] = "size",
};

/* gw_master_confcache_rotate - capture.rotate: daily or size, into an int. */
int
gw_master_confcache_rotate(struct load *ld, const struct node *n, const char *name,
                           const struct field *f, void *dst)
{
    const char *s = gw_master_confval_scalar(ld, n, name, "daily or size");

    (void)f;
    if (s == NULL)
        return GW_ECONFIG;
    for (size_t i = 0; i < sizeof(rotate_names) / sizeof(rotate_names[0]); i++) {
        if (strcmp(s, rotate_names[i]) == 0) {
            *(int *)dst = (int)i;
            return 0;
        }
    }
    return gw_master_config_error(ld, n, "\"%s\" must be daily or size (got %s)", name,
                                  gw_master_config_show_node(ld, n));
}

/*
 * gw_master_confcache_names - a list of names (key ids, tenants) into a
 * struct gw_names: strings without blanks, none twice.  An empty list is
 * fine: it names no one.
 */
int
gw_master_confcache_names(struct load *ld, const struct node *n, const char *name,
                          const struct field *f, void *dst)
{
    struct gw_names *l = dst;

    (void)f;
    if (n->kind != NODE_SEQUENCE)
        return gw_master_config_error(ld, n, "\"%s\" must be a list of names", name);
    l->v = gw_arena_zalloc(ld->cfg->arena, (n->nitems + 1) * sizeof(*l->v));
    l->n = 0;
    for (size_t i = 0; i < n->nitems; i++) {
        const struct node *item = n->items[i];
        const char *item_name = gw_arena_printf(ld->tmp, "%s[%zu]", name, i);
        const char *s = gw_master_confval_scalar(ld, item, item_name, "a name");

        if (s == NULL)
            return GW_ECONFIG;
        if (strpbrk(s, " \t\r\n") != NULL)
            return gw_master_config_error(ld, item, "\"%s\" must not contain blanks (got %s)",
                                          item_name, gw_master_config_show_node(ld, item));
        for (size_t j = 0; j < l->n; j++)
            if (strcmp(l->v[j], s) == 0)
                return gw_master_config_error(ld, item, "\"%s\": %s is listed twice", item_name,
                                              gw_master_config_show_node(ld, item));
        l->v[l->n++] = gw_arena_strdup(ld->cfg->arena, s);
    }
    return 0;
}

/*
 * gw_master_confcache_capture - the top-level capture: mapping.  Records
 * go to files in dir or, with journal: true, to journald: exactly one of
 * the two.  dir must be absolute (workers open it after the master
 * changed directory and user).
 */
int
gw_master_confcache_capture(struct load *ld, const struct node *n, const char *name,
                            const struct field *f, void *dst)
{
    struct gw_config *cfg = dst;
    const struct node *dir, *journal;

    if (gw_master_confval_section(ld, n, name, f, dst) != 0)
        return GW_ECONFIG;
    dir = map_value(n, "dir");
    journal = map_value(n, "journal");
    if (cfg->capture_journal && cfg->capture_dir != NULL)
        return gw_master_config_error(
            ld, journal->line > dir->line ? journal : dir,
            "\"%s\": set dir (files) or journal: true (journald), not both", name);
    if (!cfg->capture_journal && cfg->capture_dir == NULL)
        return gw_master_config_error(
            ld, n, "\"%s\" needs dir (a directory for the files) or journal: true", name);
    if (cfg->capture_dir != NULL && cfg->capture_dir[0] != '/')
        return gw_master_config_error(ld, dir, "\"%s.dir\" must be an absolute path (got %s)", name,
                                      gw_master_config_show_node(ld, dir));
    return 0;
}

/* gw_master_confcache_when - a model's cache.when: always or deterministic. */
int
gw_master_confcache_when(struct load *ld, const struct node *n, const char *name,
                         const struct field *f, void *dst)
{
    const char *s = gw_master_confval_scalar(ld, n, name, "always or deterministic");

    (void)f;
    if (s == NULL)
        return GW_ECONFIG;
    if (strcmp(s, "always") == 0 || strcmp(s, "deterministic") == 0) {
        *(bool *)dst = s[0] == 'd';
        return 0;
    }
    return gw_master_config_error(ld, n, "\"%s\" must be always or deterministic (got %s)", name,
                                  gw_master_config_show_node(ld, n));
}
