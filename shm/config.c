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
