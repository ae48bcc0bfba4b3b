/*
 * fuzz_http.c - the request reader (worker/http.c over llhttp), fed what
 * a client may send on one connection: requests one after another,
 * pipelined, with bodies by Content-Length or chunked, and uploads read
 * as a stream.  Each request read is answered as the worker would; a bad
 * one gets its error status and ends the connection.
 *
 * Promises checked: a request read has a method, a path that starts with
 * '/' and a body within max_body_size; a bad one has a 4xx or 5xx status.
 */
#include <sys/socket.h>
#include <unistd.h>

#include "tests/fuzz/fuzz.h"
#include "worker/worker.h"

static const struct gw_http_limits limits = {
    .max_header_size = 2048,
    .max_body_size = 4096,
    .max_upload_size = 8192,
    .keepalive_timeout_ms = 20,
    .read_timeout_ms = 20,
    .write_timeout_ms = 20,
};

/* Uploads: the routes whose bodies are streamed (worker/media.c's). */
static bool
streamed(const struct gw_request *req)
{
    return req->path != NULL && strncmp(req->path, "/v1/audio/", 10) == 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int fds[2];
    int room = 1 << 20;

    if (size > 65536 || socketpair(AF_UNIX, SOCK_STREAM, 0, fds) != 0)
        return 0;
    gw_log_level = -1;
    setsockopt(fds[1], SOL_SOCKET, SO_SNDBUF, &room, sizeof(room));
    setsockopt(fds[0], SOL_SOCKET, SO_SNDBUF, &room, sizeof(room));
    if (gw_write_all(fds[1], data, size) != 0) {
        close(fds[0]);
        close(fds[1]);
        return 0;
    }
    shutdown(fds[1], SHUT_WR);

    struct gw_http_conn c;
    struct gw_arena *arena = gw_arena_create(4096);

    gw_worker_http_init(&c, fds[0], &limits);
    c.stream_body = streamed;
    for (int n = 0; n < 64; n++) {
        struct gw_request req = {.arena = arena};

        gw_arena_reset(arena);
        strcpy(req.id, "fuzz");
        int rc = gw_worker_http_read(&c, &req);
        if (rc == GW_EPROTO) {
            FUZZ_CHECK(c.error >= 400 && c.error <= 599);
            gw_worker_http_error(&c, &req, c.error, "invalid_request_error", NULL, NULL, "bad");
            break;
        }
        if (rc != 0)
            break;
        FUZZ_CHECK(req.path != NULL && req.path[0] == '/');
        FUZZ_CHECK(gw_worker_http_method_name(req.method) != NULL);
        if (c.body_streamed) {
            const char *piece;
            size_t len, total = 0;
            while ((rc = gw_worker_http_body_read(&c, &piece, &len)) == 0 && len > 0)
                total += len;
            FUZZ_CHECK(total <= limits.max_upload_size);
            if (rc != 0)
                break;
        } else {
            FUZZ_CHECK(req.body_len <= limits.max_body_size);
        }
        if (gw_worker_http_respond(&c, &req, 200, "text/plain", NULL, "ok\n", 3) != 0 ||
            !req.keep_alive)
            break;
    }
    gw_worker_http_fini(&c);
    gw_arena_destroy(arena);
    close(fds[0]);
    close(fds[1]);
    return 0;
}
