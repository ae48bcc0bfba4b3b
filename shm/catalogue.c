/*
 * catalogue.c - the model catalogue: what GET /v1/models (workers) and
 * aigwctl model list|show (the master) say about a model, built from one
 * routing generation and the live figures in shm, so both say the same.
 *
 * The shape is OpenAI's model object, which every SDK parses, with one
 * member of aigw's own ("aigw") that SDKs keep as an extra field.
 */
#include <stdio.h>
#include <string.h>

#include <json-c/json.h>

#include "shm/shm.h"

const char *const gw_model_type_names[GW_MODEL_NTYPES] = {
    [GW_MODEL_CHAT] = "chat",
    [GW_MODEL_COMPLETIONS] = "completions",
    [GW_MODEL_EMBEDDINGS] = "embeddings",
    [GW_MODEL_IMAGES] = "images",
    [GW_MODEL_AUDIO] = "audio",
    [GW_MODEL_MODERATIONS] = "moderations",
    [GW_MODEL_RESPONSES] = "responses",
    [GW_MODEL_VIDEO] = "video",
};

static const char *const breaker_names[] = {"closed", "open", "half-open"};

/* Prices per million tokens, or null when the target has none. */
static struct json_object *
pricing_json(double input, double output)
{
    if (input <= 0 && output <= 0)
        return NULL;
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, "input", json_object_new_double(input));
    json_object_object_add(o, "output", json_object_new_double(output));
    json_object_object_add(o, "unit", json_object_new_string("per_million_tokens"));
    return o;
}

/*
 * A target is down when its provider's health check failed or its
 * breaker is open (and not yet due for a probe), degraded while the
 * breaker lets one probe through, else ok.
 */
static const char *
target_status(const struct gw_shm_stat *st, int32_t *breaker, bool *health_down)
{
    int64_t now = gw_now_ms();

    *breaker = GW_BREAKER_CLOSED;
    *health_down = false;
    if (st == NULL)
        return "ok";
    *breaker = atomic_load(&st->breaker_state);
    if (*breaker < GW_BREAKER_CLOSED || *breaker > GW_BREAKER_HALF_OPEN)
        *breaker = GW_BREAKER_CLOSED;
    *health_down = atomic_load(&st->health_down) != 0;
    if (*health_down || (*breaker == GW_BREAKER_OPEN && atomic_load(&st->breaker_until_ms) > now))
        return "down";
    if (*breaker != GW_BREAKER_CLOSED)
        return "degraded";
    return "ok";
}

struct json_object *
gw_shm_catalogue_model(const struct gw_shm *shm, const struct gw_gen *g,
                       const struct gw_gen_model *m)
{
    struct json_object *o = json_object_new_object(), *x = json_object_new_object();
    struct json_object *targets = json_object_new_array(), *pricing = NULL;
    size_t down = 0, ok = 0;

    json_object_object_add(o, "id", json_object_new_string(gw_gen_str(g, m->name)));
    json_object_object_add(o, "object", json_object_new_string("model"));
    json_object_object_add(o, "created", json_object_new_int64(g->published));
    json_object_object_add(o, "owned_by", json_object_new_string("aigw"));
    for (uint32_t i = 0; i < m->ntargets; i++) {
        const struct gw_gen_target *t = gw_gen_target(g, m->first_target + i);
        const struct gw_gen_provider *p = gw_gen_provider(g, t->provider);
        const struct gw_shm_stat *st = t->stat >= 0 && (uint64_t)t->stat < shm->hdr->nstats
                                           ? gw_shm_stat_at(shm, (size_t)t->stat)
                                           : NULL;
        struct json_object *e = json_object_new_object();
        int32_t breaker;
        bool health_down;
        const char *status = target_status(st, &breaker, &health_down);

        json_object_object_add(e, "provider", json_object_new_string(gw_gen_str(g, p->name)));
        json_object_object_add(e, "model", json_object_new_string(gw_gen_str(g, t->model)));
        json_object_object_add(e, "weight", json_object_new_int64(t->weight));
        json_object_object_add(e, "pricing", pricing_json(t->price_input, t->price_output));
        json_object_object_add(e, "status", json_object_new_string(status));
        json_object_object_add(e, "breaker", json_object_new_string(breaker_names[breaker]));
        json_object_object_add(e, "health", json_object_new_string(health_down ? "down" : "up"));
        json_object_array_add(targets, e);
        down += strcmp(status, "down") == 0;
        ok += strcmp(status, "ok") == 0;
        /* The model's price is its first priced target's: the one weighted
         * routing starts with and price routing compares against. */
        if (pricing == NULL)
            pricing = pricing_json(t->price_input, t->price_output);
    }
    json_object_object_add(
        x, "type",
        json_object_new_string(m->type < GW_MODEL_NTYPES ? gw_model_type_names[m->type] : "chat"));
    json_object_object_add(x, "context_length",
                           m->context_length > 0 ? json_object_new_int64(m->context_length) : NULL);
    json_object_object_add(x, "pricing", pricing);
    json_object_object_add(x, "targets", targets);
    json_object_object_add(x, "status",
                           json_object_new_string(down == m->ntargets ? "down"
                                                  : ok == m->ntargets ? "ok"
                                                                      : "degraded"));
    json_object_object_add(o, "aigw", x);
    return o;
}
