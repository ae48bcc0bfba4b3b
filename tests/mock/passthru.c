/*
 * passthru.c - /pt/...: an upstream for aigw's pass-through proxies (MCP
 * servers, agents, sandboxes), any method.
 *
 * It answers a JSON description of what it received: method, path, query,
 * the headers that matter (authorization, mcp-session-id, content-type,
 * accept, x-request-id) and the body as text.  A POST whose body holds
 * "initialize" also gets an Mcp-Session-Id header, as an MCP server
 * starting a session does.  A path ending in /sse (or a GET that accepts
 * text/event-stream) is answered with three SSE events, x-mock-chunk-
 * delay-ms apart; /status/NNN answers NNN with no body when NNN is 204.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/mock/mock.h"
#include "worker/worker.h"

static void
header_field(struct gw_buf *b, const struct gw_mock_conn *c, const char *name)
{
    const char *v = gw_mock_header(c, name);

    gw_buf_printf(b, ",\"%s\":", name);
    if (v == NULL)
        gw_buf_printf(b, "null");
    else
        gw_mock_json_str(b, v, strlen(v));
}

int
gw_mock_passthru_handle(struct gw_mock_conn *c)
{
    static const char *const shown[] = {"mcp-session-id", "content-type", "accept", "x-request-id",
                                        "x-custom"};
    struct gw_mock_fault f;
    size_t plen;
    const char *path = gw_mock_path(c, &plen), *url = c->url.data;
    const char *method = gw_worker_http_method_name((llhttp_method_t)c->parser.method);
    const char *accept = gw_mock_header(c, "accept");
    struct gw_buf *b = &c->ev;
    int rc;

    if ((rc = gw_mock_fault_parse(c, &f)) != 0 || (rc = gw_mock_fault_apply(c, &f)) != 0)
        return rc < 0 ? rc : 0;
    if (plen > 11 && memcmp(path + plen - 11, "/status/204", 11) == 0)
        return gw_mock_respond(c, 204, "X-Upstream: mock\r\n", "", 0);
    bool sse = (plen >= 4 && memcmp(path + plen - 4, "/sse", 4) == 0) ||
               (c->parser.method == HTTP_GET && accept != NULL &&
                strstr(accept, "text/event-stream") != NULL);
    if (sse) {
        gw_mock_stream_begin(c);
        for (int i = 0; i < 3; i++) {
            char ev[128];
            int n =
                snprintf(ev, sizeof(ev), "id: %d\nevent: message\ndata: {\"seq\":%d}\n\n", i, i);
            if (i > 0 && f.chunk_delay_ms > 0)
                gw_mock_sleep_ms(f.chunk_delay_ms);
            if ((rc = gw_mock_stream_event(c, ev, (size_t)n, i == 2)) != 0)
                return rc;
        }
        return 0;
    }
    b->len = 0;
    gw_buf_printf(b, "{\"method\":\"%s\",\"path\":", method);
    gw_mock_json_str(b, path, plen);
    gw_buf_printf(b, ",\"query\":");
    if (url[plen] == '?')
        gw_mock_json_str(b, url + plen + 1, strlen(url + plen + 1));
    else
        gw_buf_printf(b, "null");
    header_field(b, c, "authorization");
    for (size_t i = 0; i < sizeof(shown) / sizeof(shown[0]); i++)
        header_field(b, c, shown[i]);
    gw_buf_printf(b, ",\"body\":");
    gw_mock_json_str(b, c->body.data != NULL ? c->body.data : "", c->body.len);
    gw_buf_printf(b, "}");
    bool init = c->body.data != NULL && memmem(c->body.data, c->body.len, "initialize", 10);
    return gw_mock_respond(c, 200, init ? "Mcp-Session-Id: sess-0042\r\n" : "X-Upstream: mock\r\n",
                           b->data, b->len);
}
