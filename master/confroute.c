/*
 * confroute.c - the keys of the configuration file that decide where a
 * request goes and what happens when an upstream fails: a provider's
 * active health check, a target's weight, price, region and tags, a
 * model's routing (strategy, retries, deadline, circuit breaker, session
 * header) and its fallbacks.
 *
 * The rows that name these parsers sit in master/schema.c with every other
 * row, so that the whole file is described in one place; what is here is
 * what those keys mean beyond their type: defaults that depend on other
 * keys (a health check's, the retries of a model with one target), checks
 * across keys (a timeout shorter than its interval, prices for strategy
 * price) and references that are resolved once the whole file is read
 * (fallbacks name models that may come later).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "master/config_int.h"

#define SECOND_MS 1000LL

/* A provider's health check when health: is given without these keys. */
#define HEALTH_INTERVAL_MS (10 * SECOND_MS)
#define HEALTH_TIMEOUT_MS (2 * SECOND_MS)
#define HEALTH_PATH "/models"

/* A model's routing when routing: leaves these out. */
#define ROUTE_BREAKER_FAILURES 5
#define ROUTE_BREAKER_COOLDOWN_MS (30 * SECOND_MS)
#define ROUTE_BREAKER_ERROR_RATE 0.0 /* off: failures in a row only */
#define ROUTE_BREAKER_WINDOW_MS (30 * SECOND_MS)
#define ROUTE_BREAKER_MIN_REQUESTS 20
#define ROUTE_SESSION_HEADER "x-session-id"
#define ROUTE_HEADER_MAX 64 /* bytes of a session header name */

/* ------------------------------------------------------------ providers */

/*
 * gw_master_confroute_health - health: { interval, timeout, path } of a
 * provider.  Given at all, even empty, it turns the master's active check
 * on with the defaults of the keys it leaves out; the timeout must be
 * shorter than the interval, and the message points at whichever of the
 * two the file gives.
 */
int
gw_master_confroute_health(struct load *ld, const struct node *n, const char *name,
                           const struct field *f, void *dst)
{
    struct gw_provider *p = dst;
    const struct node *interval, *timeout;

    p->health_interval_ms = HEALTH_INTERVAL_MS;
    p->health_timeout_ms = HEALTH_TIMEOUT_MS;
    p->health_path = gw_arena_strdup(ld->cfg->arena, HEALTH_PATH);
    if (gw_master_config_walk(ld, n, name, f->sub, p) != 0)
        return GW_ECONFIG;
    if (p->health_timeout_ms < p->health_interval_ms)
        return 0;
    interval = map_value(n, "interval");
    timeout = map_value(n, "timeout");
    if (timeout != NULL)
        return gw_master_config_error(
            ld, timeout, "\"%s.timeout\" must be shorter than %s.interval (%s)", name, name,
            gw_master_confval_duration_text(ld, p->health_interval_ms));
    return gw_master_config_error(
        ld, interval, "\"%s.interval\" must be longer than %s.timeout (%s by default)", name, name,
        gw_master_confval_duration_text(ld, p->health_timeout_ms));
}

/* Text a URL path or a header may carry: no blanks, no control characters. */
static bool
printable_word(const char *s)
{
    for (; *s != '\0'; s++)
        if ((unsigned char)*s <= ' ' || *s == 0x7f)
            return false;
    return true;
}

/*
 * gw_master_confroute_path - a URL path starting with '/', appended to a
 * provider's base_url, into a char *.
 */
int
gw_master_confroute_path(struct load *ld, const struct node *n, const char *name,
                         const struct field *f, void *dst)
{
    const char *s = gw_master_confval_scalar(ld, n, name, "a path such as /models");

    if (s == NULL)
        return GW_ECONFIG;
    if (s[0] != '/' || !printable_word(s))
        return gw_master_config_error(
            ld, n, "\"%s\" must be a path starting with '/', without spaces (got %s)", name,
            gw_master_config_show_node(ld, n));
    return gw_master_confval_string(ld, n, name, f, dst);
}

/* -------------------------------------------------------------- targets */

/* gw_master_confroute_label - a region or a tag: a word without blanks, into a char *. */
int
gw_master_confroute_label(struct load *ld, const struct node *n, const char *name,
                          const struct field *f, void *dst)
{
    const char *s = gw_master_confval_scalar(ld, n, name, "a string");

    if (s == NULL)
        return GW_ECONFIG;
    if (!printable_word(s))
        return gw_master_config_error(
            ld, n, "\"%s\" must not contain spaces or control characters (got %s)", name,
            gw_master_config_show_node(ld, n));
    return gw_master_confval_string(ld, n, name, f, dst);
}

/* gw_master_confroute_tags - a target's tags: a list of labels, none twice. */
int
gw_master_confroute_tags(struct load *ld, const struct node *n, const char *name,
                         const struct field *f, void *dst)
{
    struct gw_target *t = dst;

    if (gw_master_confval_sequence(ld, n, name, "tag") != 0)
        return GW_ECONFIG;
    t->tags = gw_arena_zalloc(ld->cfg->arena, n->nitems * sizeof(*t->tags));
    for (size_t i = 0; i < n->nitems; i++) {
        const struct node *item = n->items[i];
        const char *item_name = gw_arena_printf(ld->tmp, "%s[%zu]", name, i);

        if (gw_master_confroute_label(ld, item, item_name, f, &t->tags[i]) != 0)
            return GW_ECONFIG;
        for (size_t j = 0; j < i; j++)
            if (strcmp(t->tags[j], t->tags[i]) == 0)
                return gw_master_config_error(ld, item, "\"%s\": %s is listed twice", item_name,
                                              gw_master_config_show_node(ld, item));
        t->ntags = i + 1;
    }
    return 0;
}

/* --------------------------------------------------------------- models */

/*
 * gw_master_confroute_strategy - one of gw_route_strategy_names, into an
 * enum gw_route_strategy; a name not among them is answered with the list.
 */
int
gw_master_confroute_strategy(struct load *ld, const struct node *n, const char *name,
                             const struct field *f, void *dst)
{
    const char *s = gw_master_confval_scalar(ld, n, name, "a routing strategy");
    struct gw_buf b = {0};
    int rc;

    (void)f;
    if (s == NULL)
        return GW_ECONFIG;
    for (int i = 0; i < GW_ROUTE_NSTRATEGIES; i++) {
        if (strcmp(s, gw_route_strategy_names[i]) == 0) {
            *(enum gw_route_strategy *)dst = (enum gw_route_strategy)i;
            return 0;
        }
    }
    for (int i = 0; i < GW_ROUTE_NSTRATEGIES; i++)
        gw_buf_printf(&b, "%s%s", i == 0 ? "" : ", ", gw_route_strategy_names[i]);
    rc = gw_master_config_error(ld, n, "\"%s\" must be one of %s (got %s)", name,
                                b.data != NULL ? b.data : "", gw_master_config_show_node(ld, n));
    gw_buf_free(&b);
    return rc;
}

/*
 * gw_master_confroute_header - the name of a request header, an HTTP token
 * (RFC 9110: letters, digits and !#$%&'*+-.^_`|~), stored lowercased as
 * the worker's header parser keeps names.
 */
int
gw_master_confroute_header(struct load *ld, const struct node *n, const char *name,
                           const struct field *f, void *dst)
{
    static const char tchar[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                "0123456789!#$%&'*+-.^_`|~";
    const char *s = gw_master_confval_scalar(ld, n, name, "the name of a header");
    char *lower;

    (void)f;
    if (s == NULL)
        return GW_ECONFIG;
    if (strspn(s, tchar) != n->len)
        return gw_master_config_error(ld, n,
                                      "\"%s\" must be a header name such as x-session-id (got %s)",
                                      name, gw_master_config_show_node(ld, n));
    if (n->len > ROUTE_HEADER_MAX)
        return gw_master_config_error(ld, n, "\"%s\" is %zu bytes long; at most %d are allowed",
                                      name, n->len, ROUTE_HEADER_MAX);
    lower = gw_arena_strdup(ld->cfg->arena, s);
    for (char *c = lower; *c != '\0'; c++)
        if (*c >= 'A' && *c <= 'Z')
            *c = (char)(*c - 'A' + 'a');
    *(char **)dst = lower;
    return 0;
}

/*
 * gw_master_confroute_fallbacks - the models to try, in order, once every
 * target of this one has failed.  Only the shape is checked here (a list of
 * names, none twice); whether each names another declared model is
 * settled by gw_master_confroute_finish, since models may come later.
 */
int
gw_master_confroute_fallbacks(struct load *ld, const struct node *n, const char *name,
                              const struct field *f, void *dst)
{
    struct gw_model *m = dst;

    (void)f;
    if (gw_master_confval_sequence(ld, n, name, "model name") != 0)
        return GW_ECONFIG;
    m->fallbacks = gw_arena_zalloc(ld->cfg->arena, n->nitems * sizeof(*m->fallbacks));
    for (size_t i = 0; i < n->nitems; i++) {
        const struct node *item = n->items[i];
        const char *item_name = gw_arena_printf(ld->tmp, "%s[%zu]", name, i);
        struct ref *r;

        if (gw_master_confval_scalar(ld, item, item_name, "the name of a model") == NULL)
            return GW_ECONFIG;
        for (size_t j = 0; j < i; j++)
            if (strcmp(m->fallbacks[j], item->value) == 0)
                return gw_master_config_error(ld, item, "\"%s\": %s is listed twice", item_name,
                                              gw_master_config_show_node(ld, item));
        m->fallbacks[i] = gw_arena_strdup(ld->cfg->arena, item->value);
        m->nfallbacks = i + 1;
        r = gw_arena_zalloc(ld->tmp, sizeof(*r));
        r->from = m;
        r->name = item_name;
        r->node = item;
        *ld->fallbacks_tail = r;
        ld->fallbacks_tail = &r->next;
    }
    return 0;
}

/*
 * gw_master_confroute_model_defaults - the routing of a model whose
 * routing: leaves keys out: weighted, no deadline, a breaker that opens
 * after 5 failures in a row for 30s and not by error rate (whose window,
 * once error_rate is set, is 30s and needs 20 attempts), sessions named by
 * x-session-id.  retries is settled after the walk, once the targets are
 * known.
 */
void
gw_master_confroute_model_defaults(struct load *ld, struct gw_model *m)
{
    m->routing.strategy = GW_ROUTE_WEIGHTED;
    m->routing.retries = 0;
    m->routing.deadline_ms = 0;
    m->routing.breaker_failures = ROUTE_BREAKER_FAILURES;
    m->routing.breaker_cooldown_ms = ROUTE_BREAKER_COOLDOWN_MS;
    m->routing.breaker_error_rate = ROUTE_BREAKER_ERROR_RATE;
    m->routing.breaker_window_ms = ROUTE_BREAKER_WINDOW_MS;
    m->routing.breaker_min_requests = ROUTE_BREAKER_MIN_REQUESTS;
    m->routing.session_header = gw_arena_strdup(ld->cfg->arena, ROUTE_SESSION_HEADER);
}

/*
 * gw_master_confroute_model_finish - what routing needs of a whole model:
 * without routing.retries, one retry when there is another target to try
 * and none otherwise; with strategy price, a price on every target, since
 * a target without one would look free.
 */
int
gw_master_confroute_model_finish(struct load *ld, struct gw_model *m, const struct node *map,
                                 const char *name)
{
    const struct node *routing = map_value(map, "routing");
    const struct node *targets = map_value(map, "targets");

    if (routing == NULL || map_key(routing, "retries") == NULL)
        m->routing.retries = m->ntargets > 1 ? 1 : 0;
    if (m->routing.strategy != GW_ROUTE_PRICE)
        return 0;
    for (size_t i = 0; i < targets->nitems; i++)
        if (map_value(targets->items[i], "price") == NULL)
            return gw_master_config_error(
                ld, map_value(routing, "strategy"),
                "\"%s.routing.strategy\": price routing needs price: on the targets "
                "(%s.targets[%zu] has none)",
                name, name, i);
    return 0;
}

/*
 * gw_master_confroute_finish - check each model's fallbacks against the
 * declared models, at the item that names one: it must exist and not be
 * the model itself.  A cycle (a falls back to b, b to a) is allowed: the
 * gateway never tries a model twice for one request.
 */
int
gw_master_confroute_finish(struct load *ld)
{
    const struct gw_config *cfg = ld->cfg;

    for (const struct ref *r = ld->fallbacks; r != NULL; r = r->next) {
        struct gw_buf b = {0};
        int rc;

        if (strcmp(r->from->name, r->node->value) == 0)
            return gw_master_config_error(ld, r->node,
                                          "\"%s\": model %s cannot be its own fallback", r->name,
                                          gw_master_config_show_node(ld, r->node));
        if (gw_config_model_find(cfg, r->node->value) != NULL)
            continue;
        for (size_t j = 0; j < cfg->nmodels; j++)
            gw_buf_printf(&b, "%s%s", j == 0 ? "" : ", ", cfg->models[j].name);
        rc = gw_master_config_error(ld, r->node, "\"%s\": no model named %s (declared: %s)",
                                    r->name, gw_master_config_show_node(ld, r->node),
                                    b.data != NULL ? b.data : "");
        gw_buf_free(&b);
        return rc;
    }
    return 0;
}
