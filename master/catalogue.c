/*
 * catalogue.c - the admin commands behind "aigwctl model list|show": the
 * catalogue of the running generation, as GET /v1/models gives it
 * (shm/catalogue.c), and for show the address clients reach it at, from
 * which aigwctl model example writes a ready invocation.
 */
#include <stdio.h>
#include <string.h>

#include <json-c/json.h>

#include "master/master.h"

struct json_object *
gw_master_model_list(struct gw_master *m, struct json_object *req, struct gw_arena *a)
{
    const struct gw_gen *g = gw_shm_gen_current(&m->shm);
    struct json_object *arr = json_object_new_array();

    (void)req, (void)a;
    for (uint32_t i = 0; g != NULL && i < g->nmodels; i++)
        json_object_array_add(arr, gw_shm_catalogue_model(&m->shm, g, gw_gen_model_at(g, i)));
    struct json_object *o = gw_master_reply_ok();
    json_object_object_add(o, "models", arr);
    return o;
}

/*
 * The base URL of the first listener as a client on this host reaches it:
 * a wildcard host becomes the loopback address of its family.
 */
static char *
listen_url(const struct gw_config *cfg, struct gw_arena *a)
{
    const char *l = cfg->nlisten > 0 ? cfg->listen[0] : "127.0.0.1:8080";
    const char *colon = strrchr(l, ':');
    size_t hlen = colon != NULL ? (size_t)(colon - l) : 0;
    const char *host = gw_arena_strndup(a, l, hlen);

    if (hlen == 0 || strcmp(host, "*") == 0 || strcmp(host, "0.0.0.0") == 0)
        host = "127.0.0.1";
    else if (strcmp(host, "[::]") == 0)
        host = "[::1]";
    return gw_arena_printf(a, "http://%s:%s", host, colon != NULL ? colon + 1 : "8080");
}

struct json_object *
gw_master_model_show(struct gw_master *m, struct json_object *req, struct gw_arena *a)
{
    const char *name = gw_master_arg_string(req, "model");
    const struct gw_gen *g = gw_shm_gen_current(&m->shm);
    const struct gw_gen_model *gm;

    if (name == NULL || name[0] == '\0')
        return gw_master_reply_error("which model? (give its name)");
    if (g == NULL || (gm = gw_gen_model_find(g, name)) == NULL)
        return gw_master_reply_error("unknown model \"%s\" (not in %s)", name, m->cfg->path);
    struct json_object *o = gw_master_reply_ok();
    json_object_object_add(o, "model", gw_shm_catalogue_model(&m->shm, g, gm));
    json_object_object_add(o, "url", json_object_new_string(listen_url(m->cfg, a)));
    return o;
}
