/*
 * providers.c - bring your own key: the admin commands behind "aigwctl
 * provider add|list|test|delete".
 *
 * The model: routing stays configuration (providers, models, targets in
 * aigw.yaml); a tenant's credential stands in for the credential of one
 * configured provider ("--for", by default the credential's own name).
 * Requests of that tenant routed to that provider send the tenant's
 * secret (and its base URL, if it has one) and their usage is marked
 * byok; everyone else's keep the provider's own.
 *
 * The secret arrives in the request (aigwctl reads --api-key-file, so the
 * master needs no access to the administrator's files), is sealed at once
 * with the provider key (shm/seal.c, shm/byok.c) and stored; it is never
 * logged, never answered back, and taken out of the request before the
 * audit log sees it.  Each change bumps byok_generation, which makes every
 * worker read the credentials again at its next request.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "master/master.h"

#define PROVIDER_NAME_MAX 64
#define PROVIDER_SECRET_MAX (64 * 1024)

/* Names: letters, digits, '.', '_', '-' (as provider names in aigw.yaml). */
static bool
name_valid(const char *s)
{
    size_t n = s != NULL ? strlen(s) : 0;

    return n > 0 && n <= PROVIDER_NAME_MAX &&
           strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == n;
}

static const struct gw_provider *
config_provider(const struct gw_config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->nproviders; i++)
        if (strcmp(cfg->providers[i].name, name) == 0)
            return &cfg->providers[i];
    return NULL;
}

/* An http(s) URL without credentials, query or blanks; trailing '/' cut. */
static const char *
url_check(const char *s, struct gw_arena *a)
{
    size_t len = strlen(s);
    const char *host = strncmp(s, "https://", 8) == 0  ? s + 8
                       : strncmp(s, "http://", 7) == 0 ? s + 7
                                                       : NULL;

    if (host == NULL || strcspn(host, "/?#") == 0 || memchr(host, '@', strcspn(host, "/?#")) ||
        strpbrk(s, "?# \t\r\n") != NULL)
        return NULL;
    while (len > 0 && s[len - 1] == '/')
        len--;
    return gw_arena_strndup(a, s, len);
}

/* The record as admins see it: everything but the sealed secret, and
 * whether it is in force with the running configuration. */
static struct json_object *
byok_json(const struct gw_master *m, const struct gw_byok *b)
{
    struct json_object *o = json_object_new_object();
    const struct gw_provider *p = config_provider(m->cfg, b->provider);
    const char *ptype = p != NULL ? gw_byok_type_name(p->type) : NULL;
    const char *note = NULL;

    if (p == NULL)
        note = "the provider it stands in for is not configured";
    else if (ptype == NULL || strcmp(ptype, b->type) != 0)
        note = "the provider it stands in for is of another type";
    json_object_object_add(o, "name", json_object_new_string(b->name));
    json_object_object_add(o, "type", json_object_new_string(b->type));
    json_object_object_add(o, "tenant", json_object_new_string(b->tenant));
    json_object_object_add(o, "for", json_object_new_string(b->provider));
    json_object_object_add(o, "base_url", b->base_url ? json_object_new_string(b->base_url) : NULL);
    json_object_object_add(o, "created", json_object_new_int64(b->created));
    json_object_object_add(o, "fingerprint", json_object_new_string(b->fingerprint));
    json_object_object_add(o, "active", json_object_new_boolean(note == NULL));
    if (note != NULL)
        json_object_object_add(o, "note", json_object_new_string(note));
    return o;
}

static void
byok_changed(struct gw_master *m)
{
    atomic_fetch_add(&m->shm.hdr->byok_generation, 1);
}

/* Overwrite the secret in the request and take it out, so that nothing
 * after this (the audit log, a dump) can see it. */
static void
secret_scrub(struct json_object *req)
{
    struct json_object *v;

    if (json_object_object_get_ex(req, "api_key", &v) && json_object_is_type(v, json_type_string))
        explicit_bzero((char *)json_object_get_string(v), (size_t)json_object_get_string_len(v));
    json_object_object_del(req, "api_key");
}

struct json_object *
gw_master_provider_add(struct gw_master *m, struct json_object *req, struct gw_arena *a)
{
    const char *name = gw_master_arg_string(req, "name"), *type = gw_master_arg_string(req, "type");
    const char *tenant = gw_master_arg_string(req, "tenant"),
               *url = gw_master_arg_string(req, "base_url");
    const char *target = gw_master_arg_string(req, "for"),
               *key = gw_master_arg_string(req, "api_key");
    struct gw_byok b = {0};
    struct json_object *reply = NULL;
    char *json = NULL, **recs, *tjson;
    size_t n, klen;
    bool known = false;
    int rc;

    if (!name_valid(name)) {
        reply = gw_master_reply_error("a provider credential needs a name of 1 to %d letters, "
                                      "digits, '.', '_', '-'",
                                      PROVIDER_NAME_MAX);
        goto out;
    }
    for (size_t i = 0; type != NULL && gw_byok_type_names[i] != NULL; i++)
        known |= strcmp(type, gw_byok_type_names[i]) == 0;
    if (!known) {
        reply = gw_master_reply_error("--type must be openai, azure, anthropic, gemini or bedrock");
        goto out;
    }
    if (tenant == NULL ||
        (rc = gw_store_rec_get(m->store, GW_DB_TENANTS, tenant, a, &tjson)) == GW_ENOENT) {
        reply = gw_master_reply_error("no tenant \"%s\" (add it with aigwctl tenant add)",
                                      tenant ? tenant : "");
        goto out;
    }
    if (rc != 0) {
        reply = gw_master_reply_error("could not read tenant: %s", gw_strerror(rc));
        goto out;
    }
    if (gw_store_rec_get(m->store, GW_DB_PROVIDERS, name, a, &tjson) == 0) {
        reply = gw_master_reply_error("provider credential \"%s\" exists (delete it first to "
                                      "replace it)",
                                      name);
        goto out;
    }
    if (target == NULL)
        target = name;
    const struct gw_provider *p = config_provider(m->cfg, target);
    if (p == NULL) {
        reply = gw_master_reply_error("no provider \"%s\" in %s: a credential stands in for a "
                                      "configured provider (--for PROVIDER)",
                                      target, m->cfg->path);
        goto out;
    }
    const char *ptype = gw_byok_type_name(p->type);
    if (ptype == NULL || strcmp(ptype, type) != 0) {
        reply = gw_master_reply_error("provider \"%s\" is of type %s, not %s", target,
                                      ptype ? ptype : "?", type);
        goto out;
    }
    if (url != NULL && (url = url_check(url, a)) == NULL) {
        reply = gw_master_reply_error("--base-url must be an http:// or https:// URL with a host, "
                                      "without credentials, query or blanks");
        goto out;
    }
    klen = key != NULL ? strlen(key) : 0;
    while (klen > 0 && strchr(" \t\r\n", key[klen - 1]) != NULL)
        klen--;
    while (klen > 0 && strchr(" \t\r\n", key[0]) != NULL)
        key++, klen--;
    bool clean = klen > 0 && klen <= PROVIDER_SECRET_MAX;
    for (size_t i = 0; clean && i < klen; i++)
        clean = (unsigned char)key[i] >= 0x20 && key[i] != 0x7f;
    if (!clean) {
        reply = gw_master_reply_error("the API key file must hold one line of up to %d bytes "
                                      "without control characters",
                                      PROVIDER_SECRET_MAX);
        goto out;
    }
    /* One credential per tenant and provider: which one to send must be
     * clear. */
    if ((rc = gw_store_rec_list(m->store, GW_DB_PROVIDERS, false, 0, a, &recs, &n)) != 0) {
        reply =
            gw_master_reply_error("could not read the provider credentials: %s", gw_strerror(rc));
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        struct gw_byok o;
        if (gw_byok_decode(NULL, recs[i], a, &o) == 0 && strcmp(o.tenant, tenant) == 0 &&
            strcmp(o.provider, target) == 0 && strcmp(o.name, name) != 0) {
            reply = gw_master_reply_error("tenant \"%s\" has a credential for provider \"%s\" "
                                          "already: \"%s\" (delete it first)",
                                          tenant, target, o.name);
            goto out;
        }
    }
    b.name = (char *)name;
    b.tenant = (char *)tenant;
    b.type = (char *)type;
    b.provider = (char *)target;
    b.base_url = (char *)url;
    b.created = time(NULL);
    if ((b.secret = strndup(key, klen)) == NULL ||
        (json = gw_byok_encode(m->provider_key, &b)) == NULL) {
        reply = gw_master_reply_error("could not seal the credential");
        goto out;
    }
    if ((rc = gw_store_rec_put(m->store, GW_DB_PROVIDERS, name, json, true)) != 0) {
        reply = rc == GW_EEXIST
                    ? gw_master_reply_error("provider credential \"%s\" exists "
                                            "(delete it first to replace it)",
                                            name)
                    : gw_master_reply_error("could not store the credential: %s", gw_strerror(rc));
        goto out;
    }
    byok_changed(m);
    gw_log(GW_LOG_INFO, "provider credential %s added: tenant %s, for provider %s (%s)", name,
           tenant, target, b.fingerprint);
    reply = gw_master_reply_ok();
    json_object_object_add(reply, "provider", byok_json(m, &b));
out:
    gw_byok_secret_free(b.secret);
    free(json);
    secret_scrub(req);
    return reply;
}

struct json_object *
gw_master_provider_list(struct gw_master *m, struct json_object *req, struct gw_arena *a)
{
    const char *tenant = gw_master_arg_string(req, "tenant");
    struct json_object *arr;
    char **recs;
    size_t n;
    int rc;

    if ((rc = gw_store_rec_list(m->store, GW_DB_PROVIDERS, false, 0, a, &recs, &n)) != 0)
        return gw_master_reply_error("could not read the provider credentials: %s",
                                     gw_strerror(rc));
    arr = json_object_new_array();
    for (size_t i = 0; i < n; i++) {
        struct gw_byok b;
        if (gw_byok_decode(NULL, recs[i], a, &b) != 0)
            continue;
        if (tenant == NULL || strcmp(tenant, b.tenant) == 0)
            json_object_array_add(arr, byok_json(m, &b));
    }
    struct json_object *o = gw_master_reply_ok();
    json_object_object_add(o, "providers", arr);
    return o;
}

struct json_object *
gw_master_provider_delete(struct gw_master *m, struct json_object *req, struct gw_arena *a)
{
    const char *name = gw_master_arg_string(req, "name");
    int rc;

    (void)a;
    if (name == NULL)
        return gw_master_reply_error("which provider credential? (give its name)");
    if ((rc = gw_store_rec_del(m->store, GW_DB_PROVIDERS, name)) != 0)
        return rc == GW_ENOENT ? gw_master_reply_error("no provider credential \"%s\"", name)
                               : gw_master_reply_error("could not delete it: %s", gw_strerror(rc));
    byok_changed(m);
    gw_log(GW_LOG_INFO, "provider credential %s deleted", name);
    return gw_master_reply_ok();
}

/*
 * The test itself, in the child: a copy of the configuration whose
 * provider carries the tenant's secret and base URL, and one model
 * reduced to its first target on that provider, through the endpoint
 * test's call (master/endpoint.c).
 */
static struct json_object *
provider_probe(struct gw_master *m, const struct gw_byok *b)
{
    struct gw_config cfg = *m->cfg;
    struct gw_provider *providers = calloc(cfg.nproviders, sizeof(*providers));
    struct gw_model model;
    size_t pi = cfg.nproviders;
    const struct gw_target *target = NULL;
    struct json_object *reply = NULL;
    bool ok;

    if (providers == NULL)
        return gw_master_reply_error("could not run the test: out of memory");
    memcpy(providers, cfg.providers, cfg.nproviders * sizeof(*providers));
    for (size_t i = 0; i < cfg.nproviders; i++)
        if (strcmp(providers[i].name, b->provider) == 0)
            pi = i;
    for (size_t i = 0; i < cfg.nmodels && target == NULL && pi < cfg.nproviders; i++)
        for (size_t j = 0; j < cfg.models[i].ntargets && target == NULL; j++)
            if (cfg.models[i].targets[j].provider == pi) {
                model = cfg.models[i];
                target = &cfg.models[i].targets[j];
            }
    if (target == NULL) {
        reply = gw_master_reply_error("no model of the running configuration routes to provider "
                                      "\"%s\": nothing to call it with",
                                      b->provider);
        goto out;
    }
    providers[pi].api_key = b->secret;
    if (b->base_url != NULL)
        providers[pi].base_url = b->base_url;
    cfg.providers = providers;
    model.targets = (struct gw_target *)target;
    model.ntargets = 1;
    struct json_object *results = gw_master_endpoint_test(&cfg, &model, -1, &ok);
    struct json_object *r = json_object_array_get_idx(results, 0);
    if (r == NULL) {
        json_object_put(results);
        reply = gw_master_reply_error("could not run the test: out of memory");
        goto out;
    }
    reply = gw_master_reply_ok();
    json_object_object_add(reply, "name", json_object_new_string(b->name));
    json_object_object_add(reply, "passed", json_object_new_boolean(ok));
    json_object_object_foreach(r, k, val)
    {
        /* The call's own "ok" is "passed" here; "ok" is the command's. */
        if (strcmp(k, "ok") != 0)
            json_object_object_add(reply, k, json_object_get(val));
    }
    json_object_put(results);
out:
    free(providers);
    return reply;
}

/*
 * provider.test: like endpoint.test (control.c), the call takes up to
 * 10 s, so a child of the master makes it and answers on the admin
 * connection fd; NULL when the child took the connection over.
 */
struct json_object *
gw_master_provider_test(struct gw_master *m, struct json_object *req, struct gw_arena *a, int fd)
{
    const char *name = gw_master_arg_string(req, "name");
    struct gw_byok b;
    char *json;
    int rc;

    if (name == NULL)
        return gw_master_reply_error("which provider credential? (give its name)");
    if ((rc = gw_store_rec_get(m->store, GW_DB_PROVIDERS, name, a, &json)) != 0)
        return rc == GW_ENOENT ? gw_master_reply_error("no provider credential \"%s\"", name)
                               : gw_master_reply_error("could not read it: %s", gw_strerror(rc));
    if (gw_byok_decode(NULL, json, a, &b) != 0)
        return gw_master_reply_error("provider credential \"%s\" is corrupt", name);
    pid_t pid = fork();
    if (pid < 0) {
        gw_log(GW_LOG_ERROR, "fork: %s", strerror(errno));
        return gw_master_reply_error("could not start the test: fork: %s", strerror(errno));
    }
    if (pid > 0) {
        gw_log(GW_LOG_INFO, "provider test of %s in process %ld", name, (long)pid);
        return NULL;
    }

    /* The child: let go of what the master serves, test, answer, exit. */
    gw_log_init("master[provider-test]");
    gw_proctitle_set("aigwd: provider test %s", name);
    for (size_t i = 0; i < m->listeners.n; i++)
        close(m->listeners.fds[i]);
    if (m->listeners.metrics_fd >= 0)
        close(m->listeners.metrics_fd);
    close(m->master_fds[0]);
    close(m->master_fds[1]);
    struct json_object *reply;
    if (gw_byok_decode(m->provider_key, json, a, &b) != 0)
        reply = gw_master_reply_error("provider credential \"%s\" does not open with the "
                                      "provider key (another key, or a changed record)",
                                      name);
    else
        reply = provider_probe(m, &b);
    gw_byok_secret_free(b.secret);
    size_t len;
    const char *s = json_object_to_json_string_length(reply, JSON_C_TO_STRING_PLAIN, &len);
    if (gw_write_all(fd, s, len) != 0 || gw_write_all(fd, "\n", 1) != 0)
        gw_log(GW_LOG_WARN, "admin: reply not delivered: %s", strerror(errno));
    _exit(0);
}
