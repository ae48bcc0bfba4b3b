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
    /* The struct itself lives in its own arena. */
    if (cfg != NULL)
        gw_arena_destroy(cfg->arena);
}
