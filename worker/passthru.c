/*
 * passthru.c - the pass-through proxies: /v1/mcp/NAME/..., /v1/agent/NAME/...
 * and /v1/sandboxes/NAME/... go to the upstream the configuration declares
 * under mcp:, agents: or sandboxes: (a provider's base URL plus an optional
 * path), with any method, body and query as they came.
 *
 * aigw stands in front as for a model: the key must be valid and allowed
 * the resource ("mcp/NAME", "agent/NAME", "sandbox/NAME", as a model name
 * in --models lists and grants), the rate limits and quotas of its key,
 * user and tenant apply (calls; there are no tokens), and every request is
 * logged and counted.  The client's Authorization is replaced by the
 * provider's credential.  The answer is relayed as it arrives, headers
 * included (Mcp-Session-Id, Content-Type), so MCP's Streamable HTTP and
 * SSE streams, long polls and downloads pass unbuffered.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "worker/worker.h"

/* Timeouts when the provider sets none: agents and MCP streams may stay
 * silent for long, so only a dead connection is cut. */
#define PASSTHRU_CONNECT_MS 10000L
#define PASSTHRU_FIRST_BYTE_MS 300000L
#define PASSTHRU_IDLE_MS 600000L

/* Request headers not passed on: about this hop, or the gateway's own. */
static const char *const request_skip[] = {
    "host",
    "content-length",
    "authorization",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "expect",
    "x-api-key",
    "api-key",
    "cookie",
};

/* Answer headers not passed back: framing and the hop's own. */
static const char *const answer_skip[] = {
    "content-length", "transfer-encoding", "connection",   "keep-alive", "date",
    "server",         "set-cookie",        "x-request-id",
};

struct relay {
    struct gw_worker *w;
    struct gw_request *req;
    struct gw_buf headers; /* answer header lines to pass back */
    char ctype[160];
    long status;
    bool started; /* our response head is out */
    bool client_gone;
    bool got_bytes;
    int64_t last_io_ms;
};

static bool
listed(const char *name, size_t len, const char *const *list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strlen(list[i]) == len && strncasecmp(name, list[i], len) == 0)
            return true;
    return false;
}

static size_t
on_header(char *data, size_t size, size_t n, void *ctx)
{
    struct relay *r = ctx;
    size_t len = size * n, name_len;
    const char *colon = memchr(data, ':', len);

    r->last_io_ms = gw_now_ms();
    if (len >= 5 && strncmp(data, "HTTP/", 5) == 0) {
        r->headers.len = 0; /* a new head (after a 1xx): start again */
        r->ctype[0] = '\0';
        return len;
    }
    if (colon == NULL)
        return len;
    name_len = (size_t)(colon - data);
    const char *v = colon + 1;
    size_t vl = len - name_len - 1;
    while (vl > 0 && (*v == ' ' || *v == '\t'))
        v++, vl--;
    while (vl > 0 && (v[vl - 1] == '\r' || v[vl - 1] == '\n' || v[vl - 1] == ' '))
        vl--;
    if (name_len == 12 && strncasecmp(data, "content-type", 12) == 0) {
        snprintf(r->ctype, sizeof(r->ctype), "%.*s", (int)vl, v);
        return len;
    }
    if (listed(data, name_len, answer_skip, sizeof(answer_skip) / sizeof(answer_skip[0])))
        return len;
    if (gw_buf_printf(&r->headers, "%.*s: %.*s\r\n", (int)name_len, data, (int)vl, v) != 0)
        return 0;
    return len;
}

/* Our response head: the upstream's status and headers. */
static int
relay_start(struct relay *r)
{
    struct gw_worker *w = r->w;

    r->started = true;
    curl_easy_getinfo(w->curl_passthru, CURLINFO_RESPONSE_CODE, &r->status);
    r->req->upstream_status = (int)r->status;
    if (gw_worker_http_stream_begin(&w->conn, r->req, (int)r->status,
                                    r->ctype[0] ? r->ctype : "application/octet-stream",
                                    r->headers.data) != 0) {
        r->client_gone = true;
        return GW_ECLOSED;
    }
    return 0;
}

static size_t
on_data(char *data, size_t size, size_t n, void *ctx)
{
    struct relay *r = ctx;
    size_t len = size * n;

    r->last_io_ms = gw_now_ms();
    if (!r->got_bytes) {
        r->got_bytes = true;
        r->req->first_byte_us = gw_now_us() - r->req->start_us;
    }
    if (!r->started && relay_start(r) != 0)
        return 0;
    if (gw_worker_http_stream_write(&r->w->conn, data, len) != 0) {
        r->client_gone = true;
        return 0;
    }
    return len;
}

/* Run the transfer on the worker's multi handle (its connections stay for
 * the next request), cutting it when the upstream stays silent. */
static CURLcode
relay_run(struct relay *r, const struct gw_timeouts *to, bool *timed_out)
{
    struct gw_transfer_clock clock = {.last_io_ms = &r->last_io_ms,
                                      .got_bytes = &r->got_bytes,
                                      .to = to,
                                      .client_took_ms = &r->w->conn.took_ms};

    return gw_worker_transfer_run(&r->w->xfer, r->w->curl_passthru, &clock, timed_out);
}

/* The upstream request headers: the client's, less the hop's and its
 * credential, plus the provider's credential and our request id. */
static struct curl_slist *
request_headers(struct gw_request *req, const char *api_key)
{
    struct curl_slist *h = NULL, *n;

#define ADD(line)                                                                                  \
    do {                                                                                           \
        if ((n = curl_slist_append(h, (line))) == NULL)                                            \
            goto fail;                                                                             \
        h = n;                                                                                     \
    } while (0)
    ADD("Expect:");
    ADD(gw_arena_printf(req->arena, "x-request-id: %s", req->id));
    if (api_key != NULL)
        ADD(gw_arena_printf(req->arena, "Authorization: Bearer %s", api_key));
    for (size_t i = 0; i < req->nheaders; i++) {
        const struct gw_header *hd = &req->headers[i];
        if (!listed(hd->name, strlen(hd->name), request_skip,
                    sizeof(request_skip) / sizeof(request_skip[0])) &&
            strncmp(hd->name, "x-aigw-", 7) != 0)
            ADD(gw_arena_printf(req->arena, "%s: %s", hd->name, hd->value));
    }
    /* curl adds a Content-Type of its own to a POST body otherwise. */
    if (gw_worker_http_header(req, "content-type") == NULL && req->body_len > 0)
        ADD("Content-Type:");
#undef ADD
    return h;
fail:
    curl_slist_free_all(h);
    return NULL;
}

static long
pick(long set, long dflt)
{
    return set > 0 ? set : dflt;
}

int
gw_worker_passthru(struct gw_worker *w, struct gw_request *req, const struct gw_key *key,
                   enum gw_passthru_kind kind, const char *prefix)
{
    const struct gw_gen *g = w->gen;
    const char *name = req->path + strlen(prefix), *rest = strchr(name, '/');
    size_t name_len = rest != NULL ? (size_t)(rest - name) : strlen(name);
    const struct gw_gen_passthru *p = gw_gen_passthru_find(g, kind, name, name_len);
    const char *kname = gw_passthru_kind_names[kind];
    struct gw_quota_hold qhold;
    struct gw_limit_hold lhold;
    bool refused = false;
    int rc;

    if (p == NULL)
        return gw_worker_http_error(&w->conn, req, 404, "invalid_request_error", "unknown_url",
                                    NULL, "No %s named \"%.*s\" is configured.", kname,
                                    (int)name_len, name);
    req->model = gw_arena_printf(req->arena, "%s/%.*s", kname, (int)name_len, name);
    if (!gw_key_allows(key, req->model))
        return gw_worker_http_error(&w->conn, req, 403, "permission_error", "model_not_allowed",
                                    NULL, "This API key may not use %s.", req->model);
    rc = gw_worker_quota_admit(w, req, key, req->model, &qhold, &refused);
    if (refused)
        return rc;
    rc = gw_worker_limit_admit(w, req, key, NULL, NULL, &lhold, &refused);
    if (refused) {
        gw_worker_quota_release(w, &qhold);
        return rc;
    }

    const struct gw_gen_provider *prov = gw_gen_provider(g, p->provider);
    const char *path = gw_gen_str(g, p->path);
    const char *url = gw_arena_printf(req->arena, "%s%s%s%s%s", gw_gen_str(g, prov->base_url),
                                      path ? path : "", rest != NULL ? rest : "",
                                      req->query ? "?" : "", req->query ? req->query : "");
    struct gw_timeouts to = {
        .connect_ms = pick(prov->timeouts.connect_ms, PASSTHRU_CONNECT_MS),
        .first_byte_ms = pick(prov->timeouts.first_byte_ms, PASSTHRU_FIRST_BYTE_MS),
        .idle_ms = pick(prov->timeouts.idle_ms, PASSTHRU_IDLE_MS),
        .total_ms = prov->timeouts.total_ms,
    };
    req->target = gw_gen_str(g, prov->name);

    CURL *curl = w->curl_passthru;
    struct relay r = {.w = w, .req = req, .last_io_ms = gw_now_ms()};
    struct curl_slist *headers = request_headers(req, gw_gen_str(g, prov->api_key));
    char errbuf[CURL_ERROR_SIZE] = "";
    bool timed_out = false;

    if (curl == NULL || headers == NULL) {
        curl_slist_free_all(headers);
        rc = gw_worker_http_error(&w->conn, req, 500, "server_error", "internal_error", NULL,
                                  "The gateway could not build the upstream request.");
        goto out;
    }
    curl_easy_reset(curl);
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, &r);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &r);
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, to.connect_ms);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, to.total_ms);
    if (req->method == HTTP_HEAD) {
        curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
    } else if (req->method != HTTP_GET || req->body_len > 0) {
        curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, gw_worker_http_method_name(req->method));
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, req->body != NULL ? req->body : "");
        curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
    }
    req->stream = true;

    CURLcode cc = relay_run(&r, &to, &timed_out);
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, NULL);
    curl_slist_free_all(headers);
    if (r.client_gone) {
        rc = GW_ECLOSED;
    } else if (r.started) {
        /* The head is out: a failure now can only cut the body short. */
        if (cc != CURLE_OK) {
            gw_log(GW_LOG_WARN, "req=%s %s: the upstream stopped mid-answer: %s", req->id,
                   req->model, timed_out ? "idle timeout" : curl_easy_strerror(cc));
            rc = GW_ECLOSED;
        } else {
            rc = gw_worker_http_stream_end(&w->conn) != 0 ? GW_ECLOSED : 0;
        }
    } else if (cc == CURLE_OK) {
        /* An answer without a body (202, 204, a HEAD). */
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &r.status);
        req->upstream_status = (int)r.status;
        rc = gw_worker_http_respond(&w->conn, req, (int)r.status,
                                    r.ctype[0] ? r.ctype : "application/octet-stream",
                                    r.headers.data, "", 0);
    } else {
        bool timeout = timed_out || cc == CURLE_OPERATION_TIMEDOUT;
        req->upstream_status = timeout ? 504 : 502;
        gw_log(GW_LOG_WARN, "req=%s %s: %s", req->id, req->model,
               timed_out   ? "no answer in time"
               : errbuf[0] ? errbuf
                           : curl_easy_strerror(cc));
        rc = gw_worker_http_error(&w->conn, req, timeout ? 504 : 502, "server_error",
                                  timeout ? "upstream_timeout" : "upstream_error", NULL,
                                  "The upstream of %s %s (request %s).", req->model,
                                  timeout ? "did not answer in time" : "could not be reached",
                                  req->id);
    }
out:
    gw_buf_free(&r.headers);
    gw_worker_limit_settle(w, req, &lhold);
    gw_worker_quota_settle(w, req, &qhold);
    return rc;
}
