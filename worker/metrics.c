/*
 * metrics.c - GET /metrics in the Prometheus text format (version 0.0.4),
 * rendered from the shared-memory counters, so every worker answers with
 * the figures of the whole gateway.
 */
#include <stdio.h>
#include <string.h>

#include "worker/worker.h"

/* Label values: backslash, double quote and newline are escaped. */
static void
label_put(struct gw_buf *b, const char *v)
{
    for (; *v; v++) {
        if (*v == '\\' || *v == '"')
            gw_buf_printf(b, "\\%c", *v);
        else if (*v == '\n')
            gw_buf_append(b, "\\n", 2);
        else
            gw_buf_append(b, v, 1);
    }
}

static void
help_type(struct gw_buf *b, const char *name, const char *type, const char *help)
{
    gw_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* Entries whose name starts with prefix ("m:", "t:", "k:"). */
#define FOR_EACH_STAT(shm, prefix, st, label)                                                      \
    for (uint64_t i_ = 0; i_ < (shm)->hdr->nstats; i_++)                                           \
        if ((st = gw_shm_stat_at((shm), i_)) != NULL && atomic_load(&st->state) == 2 &&            \
            strncmp(st->name, (prefix), 2) == 0 && ((label) = st->name + 2) != NULL)

static const char *const classes[] = {"none", "1xx", "2xx", "3xx", "4xx", "5xx"};

static void
requests_by_class(struct gw_buf *b, const struct gw_shm *shm, const char *metric,
                  const char *prefix, const char *labelname, const char *help)
{
    struct gw_shm_stat *st;
    const char *label;

    help_type(b, metric, "counter", help);
    FOR_EACH_STAT(shm, prefix, st, label)
    {
        for (int c = 0; c < 6; c++) {
            uint64_t v = atomic_load(&st->status[c]);
            if (v == 0)
                continue;
            gw_buf_printf(b, "%s{%s=\"", metric, labelname);
            label_put(b, label);
            gw_buf_printf(b, "\",status_class=\"%s\"} %llu\n", classes[c], (unsigned long long)v);
        }
    }
}

static void
tokens(struct gw_buf *b, const struct gw_shm *shm, const char *prefix, const char *labelname)
{
    static const char *const dirs[] = {"input", "output"};
    struct gw_shm_stat *st;
    const char *label;

    for (int d = 0; d < 2; d++) {
        char metric[64];
        snprintf(metric, sizeof(metric), "aigw_%s_%s_tokens_total", labelname, dirs[d]);
        help_type(b, metric, "counter",
                  d == 0 ? "Input (prompt) tokens reported by upstreams."
                         : "Output (completion) tokens reported by "
                           "upstreams.");
        FOR_EACH_STAT(shm, prefix, st, label)
        {
            gw_buf_printf(b, "%s{%s=\"", metric, labelname);
            label_put(b, label);
            gw_buf_printf(
                b, "\"} %llu\n",
                (unsigned long long)atomic_load(d == 0 ? &st->input_tokens : &st->output_tokens));
        }
    }
}

static void
histogram(struct gw_buf *b, const struct gw_shm *shm, const char *metric, bool ttft,
          const char *help)
{
    struct gw_shm_stat *st;
    const char *label;

    help_type(b, metric, "histogram", help);
    FOR_EACH_STAT(shm, "m:", st, label)
    {
        _Atomic uint64_t *h = ttft ? st->ttft_hist : st->duration_hist;
        uint64_t cum = 0;
        for (int i = 0; i <= GW_SHM_HIST_BUCKETS; i++) {
            cum += atomic_load(&h[i]);
            gw_buf_printf(b, "%s_bucket{model=\"", metric);
            label_put(b, label);
            if (i < GW_SHM_HIST_BUCKETS)
                gw_buf_printf(b, "\",le=\"%g\"} %llu\n", gw_shm_hist_bounds_ms[i] / 1000.0,
                              (unsigned long long)cum);
            else
                gw_buf_printf(b, "\",le=\"+Inf\"} %llu\n", (unsigned long long)cum);
        }
        uint64_t sum = atomic_load(ttft ? &st->ttft_sum_ms : &st->duration_sum_ms);
        gw_buf_printf(b, "%s_sum{model=\"", metric);
        label_put(b, label);
        gw_buf_printf(b, "\"} %.3f\n%s_count{model=\"", (double)sum / 1000.0, metric);
        label_put(b, label);
        gw_buf_printf(b, "\"} %llu\n", (unsigned long long)cum);
    }
}

/* The response cache's counters, by model (every model, as tokens are). */
static void
cache_counters(struct gw_buf *b, const struct gw_shm *shm)
{
    static const struct {
        const char *name, *help, *reason;
    } figures[] = {
        {"aigw_cache_hits_total", "Requests answered from the response cache.", NULL},
        {"aigw_cache_misses_total", "Cacheable requests not found in the response cache.", NULL},
        {"aigw_cache_stores_total", "Answers stored in the response cache.", NULL},
        {"aigw_cache_evictions_total",
         "Entries removed from the response cache: to make room (size) or past their ttl "
         "(expired).",
         "size"},
        {"aigw_cache_evictions_total", NULL, "expired"},
    };
    struct gw_shm_stat *st;
    const char *label;

    for (size_t f = 0; f < sizeof(figures) / sizeof(figures[0]); f++) {
        if (figures[f].help != NULL)
            help_type(b, figures[f].name, "counter", figures[f].help);
        FOR_EACH_STAT(shm, "m:", st, label)
        {
            uint64_t v = f == 0   ? atomic_load(&st->cache_hits)
                         : f == 1 ? atomic_load(&st->cache_misses)
                         : f == 2 ? atomic_load(&st->cache_stores)
                         : f == 3 ? atomic_load(&st->cache_evictions)
                                  : atomic_load(&st->cache_expired);
            gw_buf_printf(b, "%s{model=\"", figures[f].name);
            label_put(b, label);
            if (figures[f].reason != NULL)
                gw_buf_printf(b, "\",reason=\"%s", figures[f].reason);
            gw_buf_printf(b, "\"} %llu\n", (unsigned long long)v);
        }
    }
}

int
gw_worker_metrics_render(const struct gw_shm *shm, struct gw_buf *b)
{
    struct gw_shm_header *h = shm->hdr;
    struct gw_shm_stat *st;
    const char *label;
    uint64_t by_state[GW_WORKER_NSTATES] = {0};

    b->len = 0;
    requests_by_class(b, shm, "aigw_requests_total", "m:", "model",
                      "Requests answered, by model and status class.");
    requests_by_class(b, shm, "aigw_upstream_requests_total", "t:", "target",
                      "Requests sent to an upstream target, by status class.");
    tokens(b, shm, "m:", "model");
    tokens(b, shm, "k:", "key");
    cache_counters(b, shm);
    histogram(b, shm, "aigw_request_duration_seconds", false,
              "Time from the request to the end of the response.");
    histogram(b, shm, "aigw_time_to_first_token_seconds", true,
              "Time from the request to the first byte from the upstream.");

    /* "s:DIRECTION:ACTION:RULE", claimed for each rule by shm/gen.c. */
    help_type(b, "aigw_safety_matches_total", "counter",
              "Requests in which a content safety rule matched, by rule, direction and action.");
    FOR_EACH_STAT(shm, "s:", st, label)
    {
        const char *a = strchr(label, ':'), *r = a != NULL ? strchr(a + 1, ':') : NULL;
        if (r == NULL)
            continue;
        gw_buf_printf(b, "aigw_safety_matches_total{rule=\"");
        label_put(b, r + 1);
        gw_buf_printf(b, "\",direction=\"%.*s\",action=\"%.*s\"} %llu\n", (int)(a - label), label,
                      (int)(r - a - 1), a + 1, (unsigned long long)atomic_load(&st->requests));
    }

    help_type(b, "aigw_capture_records_total", "counter",
              "Request capture records written, and those that could not be (result=\"error\").");
    FOR_EACH_STAT(shm, "c:", st, label)
    {
        if (strcmp(label, "capture") != 0)
            continue;
        gw_buf_printf(b, "aigw_capture_records_total{result=\"written\"} %llu\n",
                      (unsigned long long)atomic_load(&st->requests));
        gw_buf_printf(b, "aigw_capture_records_total{result=\"error\"} %llu\n",
                      (unsigned long long)atomic_load(&st->failures));
    }

    help_type(b, "aigw_upstream_in_flight", "gauge", "Requests in flight to each target.");
    FOR_EACH_STAT(shm, "t:", st, label)
    {
        gw_buf_printf(b, "aigw_upstream_in_flight{target=\"");
        label_put(b, label);
        gw_buf_printf(b, "\"} %lld\n", (long long)atomic_load(&st->in_flight));
    }

    static const struct {
        const char *name, *type, *help;
    } target_figures[] = {
        {"aigw_breaker_state", "gauge", "Circuit breaker: 0 closed, 1 open, 2 half-open."},
        {"aigw_breaker_opened_total", "counter", "Times the circuit breaker opened."},
        {"aigw_upstream_failures_total", "counter", "Failed attempts on a target."},
        {"aigw_upstream_health_up", "gauge", "Active health check: 1 up (or unchecked), 0 down."},
    };
    for (size_t f = 0; f < sizeof(target_figures) / sizeof(target_figures[0]); f++) {
        help_type(b, target_figures[f].name, target_figures[f].type, target_figures[f].help);
        FOR_EACH_STAT(shm, "t:", st, label)
        {
            long long v = f == 0   ? atomic_load(&st->breaker_state)
                          : f == 1 ? (long long)atomic_load(&st->breaker_opened)
                          : f == 2 ? (long long)atomic_load(&st->failures)
                                   : !atomic_load(&st->health_down);
            gw_buf_printf(b, "%s{target=\"", target_figures[f].name);
            label_put(b, label);
            gw_buf_printf(b, "\"} %lld\n", v);
        }
    }

    uint64_t in_flight = 0, conns = 0;
    for (uint64_t i = 0; i < h->nworkers; i++) {
        struct gw_shm_worker *w = gw_shm_worker(shm, i);
        int s = atomic_load(&w->state);
        if (atomic_load(&w->pid) != 0 && s > 0 && s < GW_WORKER_NSTATES) {
            by_state[s]++;
            int32_t busy = atomic_load(&w->busy), open = atomic_load(&w->conns);
            in_flight += busy > 0 ? (uint64_t)busy : 0;
            conns += open > 0 ? (uint64_t)open : 0;
        }
    }
    help_type(b, "aigw_in_flight_requests", "gauge", "Requests being served now.");
    gw_buf_printf(b, "aigw_in_flight_requests %llu\n", (unsigned long long)in_flight);
    help_type(b, "aigw_client_connections", "gauge", "Client connections open on the workers.");
    gw_buf_printf(b, "aigw_client_connections %llu\n", (unsigned long long)conns);
    help_type(b, "aigw_workers", "gauge", "Worker processes by state.");
    for (int s = 1; s < GW_WORKER_NSTATES; s++)
        gw_buf_printf(b, "aigw_workers{state=\"%s\"} %llu\n", gw_shm_worker_state_names[s],
                      (unsigned long long)by_state[s]);
    help_type(b, "aigw_reloads_total", "counter", "Configuration reloads by result.");
    gw_buf_printf(b, "aigw_reloads_total{result=\"ok\"} %llu\n",
                  (unsigned long long)atomic_load(&h->reloads));
    gw_buf_printf(b, "aigw_reloads_total{result=\"failed\"} %llu\n",
                  (unsigned long long)atomic_load(&h->reload_failures));
    help_type(b, "aigw_config_generation", "gauge", "Routing generation in use.");
    gw_buf_printf(b, "aigw_config_generation %llu\n",
                  (unsigned long long)atomic_load(&h->generation));
    help_type(b, "aigw_usage_records_lost_total", "counter",
              "Usage records lost because their writer died mid-write.");
    gw_buf_printf(b, "aigw_usage_records_lost_total %llu\n",
                  (unsigned long long)atomic_load(&h->ring_lost));
    help_type(b, "aigw_usage_records_written_through_total", "counter",
              "Usage records a worker stored itself because the ring was full.");
    gw_buf_printf(b, "aigw_usage_records_written_through_total %llu\n",
                  (unsigned long long)atomic_load(&h->ring_written_through));
    help_type(b, "aigw_usage_ring_pending", "gauge", "Usage records waiting in shared memory.");
    gw_buf_printf(b, "aigw_usage_ring_pending %llu\n",
                  (unsigned long long)(atomic_load(&h->ring_tail) - atomic_load(&h->ring_head)));
    return b->data == NULL ? GW_ENOMEM : 0;
}
