/*
 * byok.c - a tenant's own provider credentials in the worker: which
 * secret a request of that tenant sends to a provider.
 *
 * The credentials are read from LMDB and opened once per tenant, then
 * kept in a small per-worker cache until the master changes any of them
 * (byok_generation in shm): the next lookup after a change starts afresh,
 * so an added or deleted credential is in force at the next request.  The
 * cache remembers tenants without credentials too, so the common case
 * costs one comparison per cached tenant and no LMDB read.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "worker/worker.h"

#define BYOK_CACHE_TENANTS 64

struct byok_cred {
    char *provider; /* the configured provider it stands in for */
    char *type;
    char *base_url; /* or NULL */
    char *secret;   /* NULL: the record did not open (wrong key, changed) */
};

struct byok_tenant {
    char *tenant; /* NULL: free slot */
    struct byok_cred *creds;
    size_t ncreds;
};

static struct byok_tenant cache[BYOK_CACHE_TENANTS];
static uint64_t cache_generation = UINT64_MAX;
static size_t cache_next; /* the slot to reuse when all are taken */

static void
tenant_clear(struct byok_tenant *t)
{
    for (size_t i = 0; i < t->ncreds; i++) {
        gw_byok_secret_free(t->creds[i].secret);
        free(t->creds[i].provider);
        free(t->creds[i].type);
        free(t->creds[i].base_url);
    }
    free(t->creds);
    free(t->tenant);
    memset(t, 0, sizeof(*t));
}

/* Read every credential of tenant from LMDB into slot t. */
static void
tenant_load(struct gw_worker *w, struct gw_arena *a, const char *tenant, struct byok_tenant *t)
{
    char **recs;
    size_t n;

    t->tenant = strdup(tenant);
    if (gw_store_rec_list(w->store, GW_DB_PROVIDERS, false, 0, a, &recs, &n) != 0)
        n = 0;
    for (size_t i = 0; i < n; i++) {
        struct gw_byok b;
        if (gw_byok_decode(NULL, recs[i], a, &b) != 0 || strcmp(b.tenant, tenant) != 0)
            continue;
        struct byok_cred *more = realloc(t->creds, (t->ncreds + 1) * sizeof(*more));
        if (more == NULL)
            break;
        t->creds = more;
        struct byok_cred *c = &t->creds[t->ncreds++];
        memset(c, 0, sizeof(*c));
        c->provider = strdup(b.provider);
        c->type = strdup(b.type);
        c->base_url = b.base_url ? strdup(b.base_url) : NULL;
        if (gw_byok_decode(w->env->provider_key, recs[i], a, &b) == 0)
            c->secret = b.secret;
        else
            gw_log(GW_LOG_ERROR,
                   "BYOK credential \"%s\" of tenant %s does not open with the provider key "
                   "(another key, or a changed record); its provider gets no credential",
                   b.name, tenant);
    }
}

/* The cached credentials of tenant, loading them on a miss. */
static struct byok_tenant *
tenant_get(struct gw_worker *w, struct gw_arena *a, const char *tenant)
{
    uint64_t gen = atomic_load(&w->env->shm->hdr->byok_generation);
    struct byok_tenant *free_slot = NULL;

    if (gen != cache_generation) {
        for (size_t i = 0; i < BYOK_CACHE_TENANTS; i++)
            tenant_clear(&cache[i]);
        cache_generation = gen;
    }
    for (size_t i = 0; i < BYOK_CACHE_TENANTS; i++) {
        if (cache[i].tenant == NULL)
            free_slot = free_slot ? free_slot : &cache[i];
        else if (strcmp(cache[i].tenant, tenant) == 0)
            return &cache[i];
    }
    if (free_slot == NULL) {
        free_slot = &cache[cache_next];
        cache_next = (cache_next + 1) % BYOK_CACHE_TENANTS;
        tenant_clear(free_slot);
    }
    tenant_load(w, a, tenant, free_slot);
    return free_slot;
}

void
gw_worker_byok_apply(struct gw_worker *w, struct gw_call *call, const struct gw_gen_provider *p)
{
    struct gw_request *req = call->req;
    const char *name = gw_gen_str(w->gen, p->name), *type = gw_byok_type_name(p->type);

    req->byok = false;
    if (req->tenant == NULL)
        return;
    struct byok_tenant *t = tenant_get(w, req->arena, req->tenant);
    for (size_t i = 0; i < t->ncreds; i++) {
        const struct byok_cred *c = &t->creds[i];
        if (strcmp(c->provider, name) != 0)
            continue;
        /* The tenant has its own credential here: never the platform's,
         * even when this one cannot be used (it would be billed). */
        req->byok = true;
        call->api_key = NULL;
        if (c->secret == NULL)
            return;
        if (type == NULL || strcmp(type, c->type) != 0) {
            gw_log(GW_LOG_WARN,
                   "req=%s tenant %s: BYOK credential for provider %s is of type %s, the "
                   "provider of type %s; sent without a credential",
                   req->id, req->tenant, name, c->type, type ? type : "?");
            return;
        }
        /* Copies: another connection of this worker may reload the
         * cache while this request's upstream call runs. */
        call->api_key = gw_arena_strdup(req->arena, c->secret);
        if (c->base_url != NULL)
            call->base_url = gw_arena_strdup(req->arena, c->base_url);
        return;
    }
}
