/*
 * admin.c - the HTTP admin API: /admin/v1/..., JSON, on the admin.listen
 * sockets only.
 *
 * No management happens here.  A table maps each method and path onto one
 * of the master's admin commands; its arguments come from the query
 * string, the JSON body and the path, in that order (a later one wins).
 * The worker sends the command over the admin Unix socket, exactly as
 * aigwctl does, with "as_user" (the owner of the API key the request
 * came with) and "via_key": the master runs it with that user's
 * permissions (master/accounts.c), records changes in the audit log, and
 * its reply comes back as the response body, "ok" left out.  An error
 * reply carries a code that picks the status: permission_denied 403,
 * not_found 404, unknown_command 501, internal 500, anything else 400;
 * a master that cannot be reached is a 502.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "worker/worker.h"

#define ADMIN_PREFIX "/admin/v1"
/* Sending the command: the master reads it at once or not at all. */
#define ADMIN_SEND_TIMEOUT_S 5
/* The reply: endpoint.test calls every target of a model, up to 10 s
 * each, side by side; everything else answers in milliseconds. */
#define ADMIN_REPLY_TIMEOUT_S 40

/*
 * The REST mapping.  path is what follows /admin/v1; a "{}" segment
 * matches one segment of the request's path, percent-decoded into the
 * argument path_arg.  created: the answer to a success is 201, not 200.
 */
static const struct admin_route {
    llhttp_method_t method;
    const char *path;
    const char *cmd;
    const char *path_arg;
    bool created;
} admin_routes[] = {
    {HTTP_GET, "/status", "status", NULL, false},
    {HTTP_GET, "/workers", "workers", NULL, false},
    {HTTP_POST, "/reload", "reload", NULL, false},
    {HTTP_GET, "/keys", "key.list", NULL, false},
    {HTTP_POST, "/keys", "key.create", NULL, true},
    {HTTP_GET, "/keys/{}", "key.show", "id", false},
    {HTTP_DELETE, "/keys/{}", "key.delete", "id", false},
    {HTTP_POST, "/keys/{}/rotate", "key.rotate", "id", false},
    {HTTP_POST, "/keys/{}/disable", "key.disable", "id", false},
    {HTTP_POST, "/keys/{}/enable", "key.enable", "id", false},
    {HTTP_GET, "/tenants", "tenant.list", NULL, false},
    {HTTP_POST, "/tenants", "tenant.add", NULL, true},
    {HTTP_GET, "/tenants/{}", "tenant.show", "name", false},
    {HTTP_DELETE, "/tenants/{}", "tenant.delete", "name", false},
    {HTTP_GET, "/users", "user.list", NULL, false},
    {HTTP_POST, "/users", "user.add", NULL, true},
    {HTTP_GET, "/users/{}", "user.show", "name", false},
    {HTTP_DELETE, "/users/{}", "user.delete", "name", false},
    {HTTP_POST, "/users/{}/grants", "grant", "user", false},
    {HTTP_DELETE, "/users/{}/grants", "revoke", "user", false},
    {HTTP_GET, "/limits", "limit.show", NULL, false},
    {HTTP_PUT, "/limits", "limit.set", NULL, false},
    {HTTP_POST, "/limits", "limit.set", NULL, false},
    {HTTP_DELETE, "/limits", "limit.clear", NULL, false},
    {HTTP_GET, "/quotas", "quota.show", NULL, false},
    {HTTP_PUT, "/quotas", "quota.set", NULL, false},
    {HTTP_POST, "/quotas", "quota.set", NULL, false},
    {HTTP_DELETE, "/quotas", "quota.clear", NULL, false},
    {HTTP_GET, "/usage", "usage.stats", NULL, false},
    {HTTP_GET, "/usage/totals", "usage", NULL, false},
    {HTTP_GET, "/audit", "audit", NULL, false},
    {HTTP_GET, "/breakers", "breaker.list", NULL, false},
    {HTTP_POST, "/breakers/reset", "breaker.reset", NULL, false},
    {HTTP_POST, "/models/{}/test", "endpoint.test", "model", false},
};

#define NADMIN_ROUTES (sizeof(admin_routes) / sizeof(admin_routes[0]))

/* Query arguments that the commands take as numbers or booleans (a
 * JSON body says the type itself). */
static const char *const int_args[] = {"limit", "rpm", "tpm", "uid", "tokens", "calls"};
static const char *const bool_args[] = {"route_header"};

static int
hex_digit(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* s[0..len) percent-decoded ('+' a space in a query) into a; NULL when
 * it decodes to a NUL. */
static char *
decode(struct gw_arena *a, const char *s, size_t len, bool query)
{
    char *out = gw_arena_alloc(a, len + 1), *o = out;

    for (size_t i = 0; i < len; i++) {
        int hi, lo;
        if (s[i] == '%' && i + 2 < len && (hi = hex_digit(s[i + 1])) >= 0 &&
            (lo = hex_digit(s[i + 2])) >= 0) {
            if (hi == 0 && lo == 0)
                return NULL;
            *o++ = (char)(hi * 16 + lo);
            i += 2;
        } else {
            *o++ = query && s[i] == '+' ? ' ' : s[i];
        }
    }
    *o = '\0';
    return out;
}

/*
 * Does path (after /admin/v1) match pattern?  The "{}" segment's text,
 * decoded, goes into *arg.  *bad is set when that segment does not decode.
 */
static bool
path_match(const char *pattern, const char *path, struct gw_arena *a, char **arg, bool *bad)
{
    while (*pattern != '\0') {
        if (strncmp(pattern, "{}", 2) == 0) {
            size_t n = strcspn(path, "/");
            if (n == 0)
                return false;
            if ((*arg = decode(a, path, n, false)) == NULL)
                *bad = true;
            path += n;
            pattern += 2;
            continue;
        }
        if (*pattern++ != *path++)
            return false;
    }
    return *path == '\0';
}

static bool
in_names(const char *name, const char *const *names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(name, names[i]) == 0)
            return true;
    return false;
}

/* A query value as the command wants it: a number, a boolean or text. */
static struct json_object *
query_value(const char *name, const char *value)
{
    if (in_names(name, int_args, sizeof(int_args) / sizeof(int_args[0])) && value[0] != '\0') {
        char *end;
        long long v = strtoll(value, &end, 10);
        if (*end == '\0')
            return json_object_new_int64(v);
    }
    if (in_names(name, bool_args, sizeof(bool_args) / sizeof(bool_args[0])))
        return json_object_new_boolean(strcmp(value, "true") == 0 || strcmp(value, "1") == 0 ||
                                       value[0] == '\0');
    return json_object_new_string(value);
}

/* Add the query's arguments to cmd; GW_EINVAL for one that does not
 * decode. */
static int
query_args(struct gw_request *req, struct json_object *cmd)
{
    const char *q = req->query;

    while (q != NULL && *q != '\0') {
        size_t n = strcspn(q, "&"), eq = strcspn(q, "=");
        if (n > 0) {
            size_t klen = eq < n ? eq : n;
            char *k = decode(req->arena, q, klen, true);
            char *v = eq < n ? decode(req->arena, q + eq + 1, n - eq - 1, true) : "";
            if (k == NULL || v == NULL)
                return GW_EINVAL;
            if (k[0] != '\0')
                json_object_object_add(cmd, k, query_value(k, v));
        }
        q += n + (q[n] == '&');
    }
    return 0;
}

/* Add the fields of the JSON body to cmd; answers 400 and returns -1 when
 * the body is not a JSON object. */
static int
body_args(struct gw_worker *w, struct gw_request *req, struct json_object *cmd)
{
    struct json_tokener *tok;
    struct json_object *o = NULL;
    enum json_tokener_error e = json_tokener_success;

    if (req->body_len == 0)
        return 0;
    if ((tok = json_tokener_new()) != NULL) {
        o = json_tokener_parse_ex(tok, req->body, (int)req->body_len);
        e = json_tokener_get_error(tok);
        json_tokener_free(tok);
    }
    if (o == NULL || e != json_tokener_success || !json_object_is_type(o, json_type_object)) {
        json_object_put(o);
        gw_worker_http_error(&w->conn, req, 400, "invalid_request_error", "invalid_json", NULL,
                             "The body of an admin API request must be a JSON object (%s).",
                             e != json_tokener_success ? json_tokener_error_desc(e)
                                                       : "it is something else");
        return -1;
    }
    json_object_object_foreach(o, k, v)
    {
        json_object_object_add(cmd, k, json_object_get(v));
    }
    json_object_put(o);
    return 0;
}

/*
 * Send cmd to the master and read its reply into *reply (a new object the
 * caller owns).  0, or GW_EIO (no master to talk to), GW_ETIMEDOUT or
 * GW_EPROTO (a reply that is not JSON), each logged.
 */
static int
master_call(struct gw_worker *w, struct gw_request *req, struct json_object *cmd,
            struct json_object **reply)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    struct timeval snd = {.tv_sec = ADMIN_SEND_TIMEOUT_S}, rcv = {.tv_sec = ADMIN_REPLY_TIMEOUT_S};
    const char *path = w->env->cfg->admin_socket;
    struct gw_buf in = {0};
    char *line;
    size_t used, len;
    int fd = -1, rc = GW_EIO;

    *reply = NULL;
    if (strlen(path) >= sizeof(sa.sun_path))
        goto out;
    strcpy(sa.sun_path, path);
    if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0 ||
        connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        gw_log(GW_LOG_ERROR, "req=%s admin API: connect(%s): %s", req->id, path, strerror(errno));
        goto out;
    }
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &snd, sizeof(snd));
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &rcv, sizeof(rcv));
    const char *s = json_object_to_json_string_length(cmd, JSON_C_TO_STRING_PLAIN, &len);
    /* A refusal may come before the request is read: read either way. */
    bool sent = gw_write_all(fd, s, len) == 0 && gw_write_all(fd, "\n", 1) == 0;
    int werr = errno;
    /* The master may take a while (a usage export): wait for its first
     * bytes here, where the worker's other connections run meanwhile. */
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    int64_t until = gw_now_ms() + ADMIN_REPLY_TIMEOUT_S * 1000;
    while (gw_worker_poll(&pfd, 1, (long)(until - gw_now_ms())) < 0 && errno == EINTR &&
           gw_now_ms() < until)
        ;
    rc = gw_proto_read_line_max(fd, &in, GW_PROTO_MAX_REPLY, &line, &used);
    if (rc < 0) {
        gw_log(GW_LOG_ERROR, "req=%s admin API: no reply from %s: %s", req->id, path,
               sent ? gw_strerror(rc) : strerror(werr));
        rc = rc == GW_ETIMEDOUT ? GW_ETIMEDOUT : GW_EIO;
        goto out;
    }
    if ((*reply = json_tokener_parse(line)) == NULL ||
        !json_object_is_type(*reply, json_type_object)) {
        gw_log(GW_LOG_ERROR, "req=%s admin API: malformed reply from %s", req->id, path);
        json_object_put(*reply);
        *reply = NULL;
        rc = GW_EPROTO;
        goto out;
    }
    rc = 0;
out:
    gw_buf_free(&in);
    if (fd >= 0)
        close(fd);
    return rc;
}

/* Answer the master's error reply: its code picks the status. */
static int
answer_error(struct gw_worker *w, struct gw_request *req, struct json_object *reply)
{
    struct json_object *v;
    const char *code =
        json_object_object_get_ex(reply, "code", &v) ? json_object_get_string(v) : NULL;
    const char *msg =
        json_object_object_get_ex(reply, "error", &v) ? json_object_get_string(v) : NULL;

    if (code == NULL)
        code = "invalid";
    if (msg == NULL)
        msg = "the command failed";
    int status = strcmp(code, "permission_denied") == 0 ? 403
                 : strcmp(code, "not_found") == 0       ? 404
                 : strcmp(code, "unknown_command") == 0 ? 501
                 : strcmp(code, "internal") == 0        ? 500
                                                        : 400;
    const char *type = status == 403   ? "permission_error"
                       : status == 500 ? "server_error"
                                       : "invalid_request_error";

    return gw_worker_http_error(&w->conn, req, status, type, code, NULL, "%s", msg);
}

int
gw_worker_admin_serve(struct gw_worker *w, struct gw_request *req, const struct gw_key *key)
{
    const char *path = req->path + strlen(ADMIN_PREFIX);
    const struct admin_route *rt = NULL;
    struct json_object *cmd = NULL, *reply = NULL, *v;
    char *arg = NULL, allow[64] = "";
    bool bad = false;
    int rc;

    req->extra_headers = "Cache-Control: no-store\r\n";
    for (size_t i = 0; i < NADMIN_ROUTES && rt == NULL; i++) {
        char *a = NULL;
        if (!path_match(admin_routes[i].path, path, req->arena, &a, &bad))
            continue;
        if (admin_routes[i].method == req->method) {
            rt = &admin_routes[i];
            arg = a;
        } else if (strstr(allow, gw_worker_http_method_name(admin_routes[i].method)) == NULL) {
            size_t n = strlen(allow);
            snprintf(allow + n, sizeof(allow) - n, "%s%s", n ? ", " : "",
                     gw_worker_http_method_name(admin_routes[i].method));
        }
    }
    if (rt == NULL && allow[0] != '\0') {
        req->allow = gw_arena_strdup(req->arena, allow);
        return gw_worker_http_error(&w->conn, req, 405, "invalid_request_error",
                                    "method_not_allowed", NULL, "Method %s is not allowed on %s.",
                                    gw_worker_http_method_name(req->method), req->path);
    }
    if (rt == NULL)
        return gw_worker_http_error(&w->conn, req, 404, "invalid_request_error", "unknown_url",
                                    NULL, "Unknown admin API URL: %s %s.",
                                    gw_worker_http_method_name(req->method), req->path);
    if (bad || (rt->path_arg != NULL && arg == NULL))
        return gw_worker_http_error(&w->conn, req, 400, "invalid_request_error", "invalid_path",
                                    NULL, "The path %s does not decode.", req->path);
    if (key->owner == NULL || key->owner[0] == '\0')
        return gw_worker_http_error(&w->conn, req, 403, "permission_error", "permission_denied",
                                    NULL,
                                    "This API key (%s) has no owner. The admin API acts as the "
                                    "owner of the key; use a key created with --user for a user "
                                    "who holds an admin role.",
                                    key->id);

    cmd = json_object_new_object();
    if (query_args(req, cmd) != 0) {
        rc = gw_worker_http_error(&w->conn, req, 400, "invalid_request_error", "invalid_query",
                                  NULL, "The query string does not decode.");
        goto out;
    }
    if (body_args(w, req, cmd) != 0) {
        rc = 0;
        goto out;
    }
    /* usage: the query may say since and until for from and to. */
    if (json_object_object_get_ex(cmd, "since", &v) &&
        !json_object_object_get_ex(cmd, "from", NULL))
        json_object_object_add(cmd, "from", json_object_get(v));
    if (json_object_object_get_ex(cmd, "until", &v) && !json_object_object_get_ex(cmd, "to", NULL))
        json_object_object_add(cmd, "to", json_object_get(v));
    if (rt->path_arg != NULL)
        json_object_object_add(cmd, rt->path_arg, json_object_new_string(arg));
    /* Last, so that nothing the client sent can say otherwise. */
    json_object_object_add(cmd, "cmd", json_object_new_string(rt->cmd));
    json_object_object_add(cmd, "as_user", json_object_new_string(key->owner));
    json_object_object_add(cmd, "via_key", json_object_new_string(key->id));

    if ((rc = master_call(w, req, cmd, &reply)) != 0) {
        rc = gw_worker_http_error(&w->conn, req, 502, "server_error", "master_unreachable", NULL,
                                  "The gateway's master process did not answer the admin "
                                  "request (request %s).",
                                  req->id);
        goto out;
    }
    if (!json_object_object_get_ex(reply, "ok", &v) || !json_object_get_boolean(v)) {
        rc = answer_error(w, req, reply);
        goto out;
    }
    json_object_object_del(reply, "ok");
    size_t len;
    const char *body = json_object_to_json_string_length(
        reply, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len);
    rc = gw_worker_http_respond(&w->conn, req, rt->created ? 201 : 200, "application/json", NULL,
                                body, len);
out:
    json_object_put(cmd);
    json_object_put(reply);
    return rc;
}
