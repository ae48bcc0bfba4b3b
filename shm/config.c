/*
 * config.c - lookups in the running configuration that every process
 * needs.  Parsing and validation are the master's (master/config.c).
 */
#include <string.h>

#include "shm/shm.h"

const struct gw_model *
gw_config_model_find(const struct gw_config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->nmodels; i++)
        if (strcmp(cfg->models[i].name, name) == 0)
            return &cfg->models[i];
    return NULL;
}

bool
gw_config_callable(const struct gw_config *cfg, const char *name)
{
    const char *slash = strchr(name, '/');

    if (gw_config_model_find(cfg, name) != NULL)
        return true;
    if (slash == NULL)
        return false;
    for (size_t i = 0; i < cfg->npassthru; i++) {
        const char *kind = gw_passthru_kind_names[cfg->passthru[i].kind];
        if (strlen(kind) == (size_t)(slash - name) && strncmp(name, kind, strlen(kind)) == 0 &&
            strcmp(slash + 1, cfg->passthru[i].name) == 0)
            return true;
    }
    return false;
}

void
gw_config_free(struct gw_config *cfg)
{
    if (cfg == NULL)
        return;
    /* Leave no provider secret behind in freed memory. */
    for (size_t i = 0; i < cfg->nproviders; i++)
        if (cfg->providers[i].api_key != NULL)
            explicit_bzero(cfg->providers[i].api_key, strlen(cfg->providers[i].api_key));
    /* The struct itself lives in its own arena. */
    gw_arena_destroy(cfg->arena);
}
