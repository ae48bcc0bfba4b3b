/*
 * health.c - the master's active health checks of providers.
 *
 * A provider with health: { interval, timeout, path } gets a GET of
 * base_url + path every interval.  A 2xx answer marks every target of the
 * provider up (health_down = 0 in its "t:provider/model" stat entry); an
 * error, a timeout or any other status marks them down, and the workers
 * then send them no traffic (worker/route.c).  Providers without a check
 * are never marked down here: passive detection is the breakers' job.
 *
 * The checks run on one libcurl multi handle that the master's loop
 * drives a step at a time (gw_master_health_tick), so a slow or dead
 * upstream never blocks the master.  Each check uses a fresh connection:
 * the point is to learn whether the provider accepts connections now.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "master/master.h"

/* While checks are in flight, the loop comes back at least this often. */
#define HEALTH_POLL_MS 50
/* Bytes of a health answer kept for the log; the rest is read and dropped. */
#define HEALTH_BODY_KEEP 200

enum health_state {
    HEALTH_UNKNOWN = -1, /* no answer yet */
    HEALTH_UP = 0,
    HEALTH_DOWN = 1,
};

/* One provider's check.  Owns its copies of everything it uses, so a
 * reload may free the configuration it came from. */
struct health_check {
    char *provider; /* name, for the log and to match across reloads */
    char *url;
    char *auth;    /* the credential's header line, or NULL; never logged */
    char *version; /* anthropic: its "anthropic-version: V" line, or NULL */
    long interval_ms;
    long timeout_ms;
    long *stats; /* stat entries of the provider's targets */
    size_t nstats;
    int state; /* enum health_state */
    int64_t due_ms;
    int64_t started_ms;
    CURL *easy; /* in flight, or NULL */
    struct curl_slist *headers;
    char errbuf[CURL_ERROR_SIZE];
    char body[HEALTH_BODY_KEEP + 1];
    size_t body_len;
};

struct gw_health {
    CURLM *multi;
    struct health_check **checks;
    size_t n;
};

/* Stop a check's transfer, if any, and release its handle. */
static void
check_abort(struct gw_health *h, struct health_check *c)
{
    if (c->easy != NULL) {
        curl_multi_remove_handle(h->multi, c->easy);
        curl_easy_cleanup(c->easy);
        c->easy = NULL;
    }
    curl_slist_free_all(c->headers);
    c->headers = NULL;
}

static void
check_free(struct gw_health *h, struct health_check *c)
{
    if (c == NULL)
        return;
    check_abort(h, c);
    if (c->auth != NULL)
        explicit_bzero(c->auth, strlen(c->auth));
    free(c->auth);
    free(c->version);
    free(c->provider);
    free(c->url);
    free(c->stats);
    free(c);
}

/* Write health_down of every target of c. */
static void
check_mark(const struct gw_master *m, const struct health_check *c, int down)
{
    for (size_t i = 0; i < c->nstats; i++)
        atomic_store(&gw_shm_stat_at(&m->shm, (size_t)c->stats[i])->health_down, down);
}

/*
 * Every target of provider p in cfg, as stat entry indexes (claimed when
 * missing, as publishing a generation does).  Owned by the caller.
 */
static int
provider_stats(const struct gw_master *m, const struct gw_config *cfg, size_t p, long **out,
               size_t *n)
{
    long *stats = NULL;
    size_t count = 0, cap = 0;
    char name[GW_SHM_NAME_LEN];

    for (size_t i = 0; i < cfg->nmodels; i++) {
        const struct gw_model *mod = &cfg->models[i];
        for (size_t j = 0; j < mod->ntargets; j++) {
            if (mod->targets[j].provider != p)
                continue;
            snprintf(name, sizeof(name), "t:%s/%s", cfg->providers[p].name, mod->targets[j].model);
            long idx = gw_shm_stat_find(&m->shm, name, true);
            bool seen = false;
            for (size_t k = 0; k < count; k++)
                seen |= stats[k] == idx;
            if (idx < 0 || seen)
                continue;
            if (count == cap) {
                cap = cap ? 2 * cap : 4;
                long *grown = realloc(stats, cap * sizeof(*stats));
                if (grown == NULL) {
                    free(stats);
                    return GW_ENOMEM;
                }
                stats = grown;
            }
            stats[count++] = idx;
        }
    }
    *out = stats;
    *n = count;
    return 0;
}

/* A check for provider p of cfg, due now; NULL when out of memory. */
static struct health_check *
check_new(const struct gw_master *m, const struct gw_config *cfg, size_t p)
{
    const struct gw_provider *prov = &cfg->providers[p];
    struct health_check *c = calloc(1, sizeof(*c));

    if (c == NULL)
        return NULL;
    c->state = HEALTH_UNKNOWN;
    c->interval_ms = prov->health_interval_ms;
    c->timeout_ms =
        prov->health_timeout_ms > 0 ? prov->health_timeout_ms : prov->health_interval_ms;
    c->due_ms = gw_now_ms();
    c->provider = strdup(prov->name);
    if (asprintf(&c->url, "%s%s", prov->base_url, prov->health_path ? prov->health_path : "") < 0)
        c->url = NULL;
    /* Each type's own header; a Bedrock access key is for signing only. */
    const char *header = prov->type == GW_PROVIDER_AZURE       ? "api-key"
                         : prov->type == GW_PROVIDER_ANTHROPIC ? "x-api-key"
                         : prov->type == GW_PROVIDER_GEMINI    ? "x-goog-api-key"
                                                               : "Authorization: Bearer";
    bool send = prov->api_key != NULL &&
                !(prov->type == GW_PROVIDER_BEDROCK && strchr(prov->api_key, ':') != NULL);
    if (send &&
        asprintf(&c->auth, "%s%s %s", header, strchr(header, ':') ? "" : ":", prov->api_key) < 0)
        c->auth = NULL;
    if (prov->type == GW_PROVIDER_ANTHROPIC &&
        asprintf(&c->version, "anthropic-version: %s", prov->api_version) < 0)
        c->version = NULL;
    if (c->provider == NULL || c->url == NULL || (send && c->auth == NULL) ||
        (prov->type == GW_PROVIDER_ANTHROPIC && c->version == NULL) ||
        provider_stats(m, cfg, p, &c->stats, &c->nstats) != 0) {
        free(c->provider);
        free(c->url);
        free(c->auth);
        free(c->version);
        free(c);
        return NULL;
    }
    return c;
}

static size_t
on_body(char *data, size_t size, size_t nmemb, void *arg)
{
    struct health_check *c = arg;
    size_t len = size * nmemb, keep = HEALTH_BODY_KEEP - c->body_len;

    if (keep > len)
        keep = len;
    memcpy(c->body + c->body_len, data, keep);
    c->body_len += keep;
    c->body[c->body_len] = '\0';
    return len;
}

/* Start c's request; on failure c counts as failed now. */
static int
check_start(struct gw_health *h, struct health_check *c, int64_t now)
{
    c->started_ms = now;
    c->errbuf[0] = '\0';
    c->body_len = 0;
    c->body[0] = '\0';
    c->easy = curl_easy_init();
    if (c->easy == NULL)
        goto fail;
    if (c->auth != NULL && (c->headers = curl_slist_append(NULL, c->auth)) == NULL)
        goto fail;
    if (c->version != NULL) {
        struct curl_slist *more = curl_slist_append(c->headers, c->version);
        if (more == NULL)
            goto fail;
        c->headers = more;
    }
    curl_easy_setopt(c->easy, CURLOPT_URL, c->url);
    curl_easy_setopt(c->easy, CURLOPT_HTTPGET, 1L);
    curl_easy_setopt(c->easy, CURLOPT_HTTPHEADER, c->headers);
    curl_easy_setopt(c->easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c->easy, CURLOPT_TIMEOUT_MS, c->timeout_ms);
    curl_easy_setopt(c->easy, CURLOPT_CONNECTTIMEOUT_MS, c->timeout_ms);
    /* Each check connects anew: a connection kept from the last one would
     * hide an upstream that stopped accepting. */
    curl_easy_setopt(c->easy, CURLOPT_FORBID_REUSE, 1L);
    curl_easy_setopt(c->easy, CURLOPT_FRESH_CONNECT, 1L);
    curl_easy_setopt(c->easy, CURLOPT_ERRORBUFFER, c->errbuf);
    curl_easy_setopt(c->easy, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c->easy, CURLOPT_WRITEDATA, c);
    curl_easy_setopt(c->easy, CURLOPT_PRIVATE, c);
    curl_easy_setopt(c->easy, CURLOPT_USERAGENT, "aigwd/" GW_VERSION " health-check");
    if (curl_multi_add_handle(h->multi, c->easy) != CURLM_OK)
        goto fail;
    return 0;
fail:
    check_abort(h, c);
    return GW_ENOMEM;
}

/* A check ended: mark its targets, log a change, schedule the next one. */
static void
check_done(struct gw_master *m, struct health_check *c, CURLcode cc, long status, int64_t now)
{
    char why[768];
    int was = c->state;

    if (cc == CURLE_OK && status >= 200 && status < 300) {
        c->state = HEALTH_UP;
        why[0] = '\0';
    } else {
        c->state = HEALTH_DOWN;
        if (cc != CURLE_OK)
            snprintf(why, sizeof(why), "GET %.300s: %s", c->url,
                     c->errbuf[0] ? c->errbuf : curl_easy_strerror(cc));
        else {
            /* The start of the answer often says why; one line of it. */
            for (size_t i = 0; i < c->body_len; i++)
                if ((unsigned char)c->body[i] < ' ' || c->body[i] == 0x7f)
                    c->body[i] = ' ';
            snprintf(why, sizeof(why), "GET %.300s: status %ld%s%.200s", c->url, status,
                     c->body_len ? ": " : "", c->body);
        }
    }
    check_mark(m, c, c->state == HEALTH_DOWN);
    if (c->state == HEALTH_DOWN && was != HEALTH_DOWN)
        gw_log(GW_LOG_WARN, "provider %s is down: %s (no traffic to its targets until it is up)",
               c->provider, why);
    else if (c->state == HEALTH_UP && was == HEALTH_DOWN)
        gw_log(GW_LOG_INFO, "provider %s is up again", c->provider);
    else if (c->state == HEALTH_UP && was == HEALTH_UNKNOWN)
        gw_log(GW_LOG_DEBUG, "provider %s is up", c->provider);
    /* Checks keep their rhythm from start to start; a late one goes now. */
    c->due_ms = c->started_ms + c->interval_ms;
    if (c->due_ms < now)
        c->due_ms = now;
}

/* Clear health_down of the targets of cfg's providers that have no
 * check: nothing here would ever set them up again. */
static void
unchecked_clear(const struct gw_master *m, const struct gw_config *cfg)
{
    char name[GW_SHM_NAME_LEN];

    for (size_t i = 0; i < cfg->nmodels; i++) {
        for (size_t j = 0; j < cfg->models[i].ntargets; j++) {
            const struct gw_target *t = &cfg->models[i].targets[j];
            if (cfg->providers[t->provider].health_interval_ms > 0)
                continue;
            snprintf(name, sizeof(name), "t:%s/%s", cfg->providers[t->provider].name, t->model);
            long idx = gw_shm_stat_find(&m->shm, name, false);
            if (idx >= 0)
                atomic_store(&gw_shm_stat_at(&m->shm, (size_t)idx)->health_down, 0);
        }
    }
}

/*
 * The checks for m->cfg, taking over from old (may be NULL) what still
 * applies: a provider of the same name keeps its last state, and, when
 * its URL, credential and timings are unchanged, its schedule and a
 * request in flight.  Whatever old still holds afterwards is released.
 */
static int
checks_build(struct gw_master *m, struct gw_health *h, struct health_check **old, size_t nold)
{
    const struct gw_config *cfg = m->cfg;
    struct health_check **checks = calloc(cfg->nproviders ? cfg->nproviders : 1, sizeof(*checks));
    size_t n = 0;

    if (checks == NULL)
        return GW_ENOMEM;
    /* Everything that can fail first, so a failure leaves old as it was. */
    for (size_t p = 0; p < cfg->nproviders; p++) {
        if (cfg->providers[p].health_interval_ms <= 0)
            continue;
        if ((checks[n] = check_new(m, cfg, p)) == NULL) {
            for (size_t i = 0; i < n; i++)
                check_free(h, checks[i]);
            free(checks);
            return GW_ENOMEM;
        }
        n++;
    }
    for (size_t k = 0; k < n; k++) {
        struct health_check *c = checks[k];
        for (size_t i = 0; i < nold; i++) {
            struct health_check *o = old[i];
            if (o == NULL || strcmp(o->provider, c->provider) != 0)
                continue;
            c->state = o->state;
            bool same = strcmp(o->url, c->url) == 0 && o->interval_ms == c->interval_ms &&
                        o->timeout_ms == c->timeout_ms &&
                        ((o->auth == NULL && c->auth == NULL) ||
                         (o->auth != NULL && c->auth != NULL && strcmp(o->auth, c->auth) == 0));
            if (same) {
                /* Keep the old check, its schedule and a request in flight
                 * (whose handle points at it), with the new targets. */
                long *stats = o->stats;
                o->stats = c->stats;
                o->nstats = c->nstats;
                c->stats = stats;
                check_free(h, c);
                checks[k] = c = o;
                old[i] = NULL;
            }
            break;
        }
        /* A target added to a provider known to be down is down too. */
        if (c->state != HEALTH_UNKNOWN)
            check_mark(m, c, c->state == HEALTH_DOWN);
    }
    for (size_t i = 0; i < nold; i++)
        check_free(h, old[i]);
    free(old);
    h->checks = checks;
    h->n = n;
    unchecked_clear(m, cfg);
    return 0;
}

/*
 * gw_master_health_create - set up m->health for m->cfg: one check per
 * provider with health.interval, the first one due at once.  Needs
 * curl_global_init and the shm segment.  Targets of providers without a
 * check are marked up (a segment attached from an earlier master may say
 * otherwise).  Returns 0 or GW_ENOMEM.
 */
int
gw_master_health_create(struct gw_master *m)
{
    struct gw_health *h = calloc(1, sizeof(*h));

    if (h == NULL || (h->multi = curl_multi_init()) == NULL) {
        gw_log(GW_LOG_ERROR, "health checks: curl_multi_init failed");
        free(h);
        return GW_ENOMEM;
    }
    if (checks_build(m, h, NULL, 0) != 0) {
        gw_log(GW_LOG_ERROR, "health checks: out of memory");
        curl_multi_cleanup(h->multi);
        free(h);
        return GW_ENOMEM;
    }
    m->health = h;
    return 0;
}

/*
 * gw_master_health_reload - after m->cfg was replaced: check the providers
 * of the new configuration.  Providers that stay keep their state; those
 * removed, or whose check was removed, are no longer checked (and targets
 * of providers without a check are marked up).  On failure the old checks
 * go on and GW_ENOMEM is returned.
 */
int
gw_master_health_reload(struct gw_master *m)
{
    struct gw_health *h = m->health;

    if (h == NULL)
        return 0;
    int rc = checks_build(m, h, h->checks, h->n);
    if (rc != 0)
        gw_log(GW_LOG_ERROR, "health checks: out of memory; still checking the previous "
                             "configuration's providers");
    return rc;
}

/*
 * gw_master_health_tick - one step of the checks, never blocking: start
 * those due, move the transfers on, finish those done.  Returns the ms
 * until it wants to run again (at most HEALTH_POLL_MS while a check is in
 * flight), or -1 when there is no check at all.
 */
long
gw_master_health_tick(struct gw_master *m)
{
    struct gw_health *h = m->health;
    int64_t now = gw_now_ms();
    int running = 0, left;
    CURLMsg *msg;

    if (h == NULL || h->n == 0)
        return -1;
    for (size_t i = 0; i < h->n; i++) {
        struct health_check *c = h->checks[i];
        if (c->easy == NULL && c->due_ms <= now && check_start(h, c, now) != 0) {
            snprintf(c->errbuf, sizeof(c->errbuf), "could not start the request");
            check_done(m, c, CURLE_OUT_OF_MEMORY, 0, now);
        }
    }
    curl_multi_perform(h->multi, &running);
    while ((msg = curl_multi_info_read(h->multi, &left)) != NULL) {
        struct health_check *c = NULL;
        long status = 0;
        if (msg->msg != CURLMSG_DONE)
            continue;
        CURLcode cc = msg->data.result;
        CURL *easy = msg->easy_handle;
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&c);
        curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
        if (c == NULL || c->easy != easy)
            continue;
        now = gw_now_ms();
        check_done(m, c, cc, status, now);
        check_abort(h, c);
    }

    long wait = -1;
    now = gw_now_ms();
    for (size_t i = 0; i < h->n; i++) {
        const struct health_check *c = h->checks[i];
        long w = c->easy != NULL ? HEALTH_POLL_MS : (c->due_ms > now ? (long)(c->due_ms - now) : 0);
        if (wait < 0 || w < wait)
            wait = w;
    }
    return wait;
}

/* Stop every check in flight and release m->health.  NULL is fine. */
void
gw_master_health_destroy(struct gw_master *m)
{
    struct gw_health *h = m->health;

    if (h == NULL)
        return;
    for (size_t i = 0; i < h->n; i++)
        check_free(h, h->checks[i]);
    free(h->checks);
    curl_multi_cleanup(h->multi);
    free(h);
    m->health = NULL;
}

/*
 * gw_master_health_state - "up", "down" or "unchecked" for provider name
 * (as last seen by its check; "up" until the first answer).
 */
const char *
gw_master_health_state(const struct gw_master *m, const char *provider)
{
    const struct gw_health *h = m->health;

    for (size_t i = 0; h != NULL && i < h->n; i++)
        if (strcmp(h->checks[i]->provider, provider) == 0)
            return h->checks[i]->state == HEALTH_DOWN ? "down" : "up";
    return "unchecked";
}
