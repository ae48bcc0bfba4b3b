/*
 * test_http.c - the worker's HTTP/1.1 server side over a real socket
 * pair: parsing, limits, timeouts, and the bytes of responses.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "worker/worker.h"

struct fixture {
    int fds[2]; /* [0] server side, [1] the test's client side */
    struct gw_http_limits lim;
    struct gw_http_conn conn;
    struct gw_arena *arena;
    struct gw_request req;
};

static int
setup(void **state)
{
    static struct fixture f;

    memset(&f, 0, sizeof(f));
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, f.fds), 0);
    f.lim = (struct gw_http_limits){.max_header_size = 1024,
                                    .max_body_size = 64,
                                    .keepalive_timeout_ms = 200,
                                    .read_timeout_ms = 200,
                                    .write_timeout_ms = 1000};
    gw_worker_http_init(&f.conn, f.fds[0], &f.lim);
    f.arena = gw_arena_create(4096);
    *state = &f;
    return 0;
}

static int
teardown(void **state)
{
    struct fixture *f = *state;

    gw_worker_http_fini(&f->conn);
    gw_arena_destroy(f->arena);
    close(f->fds[0]);
    close(f->fds[1]);
    return 0;
}

static void
send_text(struct fixture *f, const char *s)
{
    assert_int_equal(gw_write_all(f->fds[1], s, strlen(s)), 0);
}

static int
read_req(struct fixture *f)
{
    gw_arena_reset(f->arena);
    memset(&f->req, 0, sizeof(f->req));
    f->req.arena = f->arena;
    strcpy(f->req.id, "test-id");
    return gw_worker_http_read(&f->conn, &f->req);
}

/* What the server wrote, as text. */
static char *
received(struct fixture *f)
{
    static char buf[8192];
    size_t len = 0;
    struct pollfd p = {.fd = f->fds[1], .events = POLLIN};

    while (poll(&p, 1, 50) > 0 && len < sizeof(buf) - 1) {
        ssize_t n = read(f->fds[1], buf + len, sizeof(buf) - 1 - len);
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    buf[len] = '\0';
    return buf;
}

static void
get_with_query_and_headers_is_parsed(void **state)
{
    struct fixture *f = *state;

    send_text(f, "GET /v1/models?limit=2 HTTP/1.1\r\nHost: x\r\nX-Custom-Thing:  v a l  \r\n\r\n");
    assert_int_equal(read_req(f), 0);
    assert_int_equal(f->req.method, HTTP_GET);
    assert_string_equal(f->req.path, "/v1/models");
    assert_string_equal(f->req.query, "limit=2");
    assert_string_equal(gw_worker_http_header(&f->req, "x-custom-thing"), "v a l");
    assert_null(gw_worker_http_header(&f->req, "absent"));
    assert_true(f->req.keep_alive);
}

static void
absolute_form_names_its_path(void **state)
{
    struct fixture *f = *state;

    /* RFC 9112, 3.2.2: a server must take the absolute form as well. */
    send_text(f, "GET HTTP://gw.example:8080/v1/models?limit=2 HTTP/1.1\r\nHost: x\r\n\r\n"
                 "GET https://gw.example?x=1 HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_int_equal(read_req(f), 0);
    assert_string_equal(f->req.path, "/v1/models");
    assert_string_equal(f->req.query, "limit=2");
    assert_int_equal(read_req(f), 0);
    assert_string_equal(f->req.path, "/");
    assert_string_equal(f->req.query, "x=1");
}

static void
other_request_targets_are_bad_requests(void **state)
{
    struct fixture *f = *state;

    send_text(f, "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_int_equal(read_req(f), GW_EPROTO);
    assert_int_equal(f->conn.error, 400);
}

static void
content_length_body_is_read_whole(void **state)
{
    struct fixture *f = *state;

    send_text(f, "POST /v1/x HTTP/1.1\r\nContent-Length: 11\r\n\r\nhello");
    send_text(f, " world");
    assert_int_equal(read_req(f), 0);
    assert_int_equal(f->req.body_len, 11);
    assert_memory_equal(f->req.body, "hello world", 11);
}

static void
chunked_body_is_decoded(void **state)
{
    struct fixture *f = *state;

    send_text(f, "POST /v1/x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                 "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");
    assert_int_equal(read_req(f), 0);
    assert_int_equal(f->req.body_len, 11);
    assert_memory_equal(f->req.body, "hello world", 11);
}

static void
pipelined_requests_are_read_one_after_the_other(void **state)
{
    struct fixture *f = *state;

    send_text(f, "POST /a HTTP/1.1\r\nContent-Length: 2\r\n\r\nabGET /b HTTP/1.1\r\n\r\n");
    assert_int_equal(read_req(f), 0);
    assert_string_equal(f->req.path, "/a");
    assert_memory_equal(f->req.body, "ab", 2);
    assert_int_equal(read_req(f), 0);
    assert_string_equal(f->req.path, "/b");
    assert_int_equal(f->req.body_len, 0);
}

static void
headers_over_the_limit_give_431(void **state)
{
    struct fixture *f = *state;
    char big[2048];

    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    send_text(f, "GET / HTTP/1.1\r\nX-Big: ");
    send_text(f, big);
    send_text(f, "\r\n\r\n");
    assert_int_equal(read_req(f), GW_EPROTO);
    assert_int_equal(f->conn.error, 431);
}

static void
declared_body_over_the_limit_gives_413_before_reading_it(void **state)
{
    struct fixture *f = *state;

    send_text(f, "POST / HTTP/1.1\r\nContent-Length: 100000\r\n\r\n");
    assert_int_equal(read_req(f), GW_EPROTO);
    assert_int_equal(f->conn.error, 413);
}

static void
chunked_body_over_the_limit_gives_413(void **state)
{
    struct fixture *f = *state;

    send_text(f, "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                 "40\r\n0123456789012345678901234567890123456789012345678901234567890123\r\n"
                 "1\r\nx\r\n0\r\n\r\n");
    assert_int_equal(read_req(f), GW_EPROTO);
    assert_int_equal(f->conn.error, 413);
}

static void
garbage_gives_400(void **state)
{
    struct fixture *f = *state;

    send_text(f, "HELLO\x01 there\r\n\r\n");
    assert_int_equal(read_req(f), GW_EPROTO);
    assert_int_equal(f->conn.error, 400);
}

static void
idle_connection_is_closed_quietly(void **state)
{
    struct fixture *f = *state;

    assert_int_equal(read_req(f), GW_ECLOSED);
}

static void
partial_request_times_out_with_408(void **state)
{
    struct fixture *f = *state;

    send_text(f, "POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc");
    assert_int_equal(read_req(f), GW_EPROTO);
    assert_int_equal(f->conn.error, 408);
}

static void
expect_100_continue_is_answered_before_the_body(void **state)
{
    struct fixture *f = *state;

    send_text(f, "POST / HTTP/1.1\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\nok");
    assert_int_equal(read_req(f), 0);
    assert_string_equal(received(f), "HTTP/1.1 100 Continue\r\n\r\n");
}

static void
http10_is_not_kept_alive_by_default(void **state)
{
    struct fixture *f = *state;

    send_text(f, "GET / HTTP/1.0\r\n\r\n");
    assert_int_equal(read_req(f), 0);
    assert_false(f->req.keep_alive);
}

static void
response_has_length_request_id_and_body(void **state)
{
    struct fixture *f = *state;

    send_text(f, "GET / HTTP/1.1\r\n\r\n");
    assert_int_equal(read_req(f), 0);
    assert_int_equal(
        gw_worker_http_respond(&f->conn, &f->req, 200, "application/json", NULL, "{}", 2), 0);
    char *r = received(f);
    assert_non_null(strstr(r, "HTTP/1.1 200 OK\r\n"));
    assert_non_null(strstr(r, "Content-Length: 2\r\n"));
    assert_non_null(strstr(r, "x-request-id: test-id\r\n"));
    assert_null(strstr(r, "Connection: close"));
    assert_string_equal(strstr(r, "\r\n\r\n"), "\r\n\r\n{}");
}

static void
error_has_openai_shape(void **state)
{
    struct fixture *f = *state;

    send_text(f, "GET / HTTP/1.1\r\n\r\n");
    assert_int_equal(read_req(f), 0);
    assert_int_equal(gw_worker_http_error(&f->conn, &f->req, 404, "invalid_request_error",
                                          "model_not_found", "model", "no \"%s\"", "x"),
                     0);
    char *r = received(f);
    assert_non_null(strstr(r, "HTTP/1.1 404 Not Found\r\n"));
    assert_string_equal(
        strstr(r, "\r\n\r\n") + 4,
        "{\"error\":{\"message\":\"no \\\"x\\\"\",\"type\":\"invalid_request_error\","
        "\"param\":\"model\",\"code\":\"model_not_found\"}}");
}

static void
stream_uses_chunked_coding_one_chunk_per_write(void **state)
{
    struct fixture *f = *state;

    send_text(f, "GET / HTTP/1.1\r\n\r\n");
    assert_int_equal(read_req(f), 0);
    assert_int_equal(gw_worker_http_stream_begin(&f->conn, &f->req, 200, "text/event-stream", NULL),
                     0);
    assert_int_equal(gw_worker_http_stream_write(&f->conn, "data: a\n\n", 9), 0);
    assert_int_equal(gw_worker_http_stream_end(&f->conn), 0);
    char *r = received(f);
    assert_non_null(strstr(r, "Transfer-Encoding: chunked\r\n"));
    assert_string_equal(strstr(r, "\r\n\r\n") + 4, "9\r\ndata: a\n\n\r\n0\r\n\r\n");
}

/* A partial write ends inside a vector, on a boundary, and past all. */
static void
iov_consume_moves_past_what_was_written(void **state)
{
    char a[] = "head", b[] = "body";
    struct iovec v[2] = {{.iov_base = a, .iov_len = 4}, {.iov_base = b, .iov_len = 4}};
    struct iovec *iov = v;
    int n = 2;

    (void)state;
    gw_worker_iov_consume(&iov, &n, 2);
    assert_int_equal(n, 2);
    assert_ptr_equal(iov->iov_base, a + 2);
    assert_int_equal(iov->iov_len, 2);
    gw_worker_iov_consume(&iov, &n, 2);
    assert_int_equal(n, 1);
    assert_ptr_equal(iov->iov_base, b);
    assert_int_equal(iov->iov_len, 4);
    gw_worker_iov_consume(&iov, &n, 3);
    assert_int_equal(n, 1);
    assert_ptr_equal(iov->iov_base, b + 3);
    assert_int_equal(iov->iov_len, 1);
    gw_worker_iov_consume(&iov, &n, 1);
    assert_int_equal(n, 0);
}

/* Every method llhttp knows has its name; a number it does not know gets
 * a word, not llhttp's abort(). */
static void
method_names_never_abort(void **state)
{
    (void)state;
    assert_string_equal(gw_worker_http_method_name(HTTP_POST), "POST");
    assert_string_equal(gw_worker_http_method_name(HTTP_DELETE), "DELETE");
    assert_string_equal(gw_worker_http_method_name((llhttp_method_t)0xff), "UNKNOWN");
}

#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

int
main(void)
{
    const struct CMUnitTest tests[] = {
        T(get_with_query_and_headers_is_parsed),
        T(absolute_form_names_its_path),
        T(other_request_targets_are_bad_requests),
        T(content_length_body_is_read_whole),
        T(chunked_body_is_decoded),
        T(pipelined_requests_are_read_one_after_the_other),
        T(headers_over_the_limit_give_431),
        T(declared_body_over_the_limit_gives_413_before_reading_it),
        T(chunked_body_over_the_limit_gives_413),
        T(garbage_gives_400),
        T(idle_connection_is_closed_quietly),
        T(partial_request_times_out_with_408),
        T(expect_100_continue_is_answered_before_the_body),
        T(http10_is_not_kept_alive_by_default),
        T(response_has_length_request_id_and_body),
        T(error_has_openai_shape),
        T(stream_uses_chunked_coding_one_chunk_per_write),
        cmocka_unit_test(iov_consume_moves_past_what_was_written),
        cmocka_unit_test(method_names_never_abort),
    };

    return cmocka_run_group_tests_name("http", tests, NULL, NULL);
}
