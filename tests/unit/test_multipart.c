/*
 * test_multipart.c - multipart/form-data read as it streams: the parts and
 * their offsets must be the same whatever the pieces the body comes in,
 * a delimiter split between pieces or hidden behind a false start must be
 * found, and a malformed or unfinished body must be told apart.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "worker/worker.h"

#define CTYPE "multipart/form-data; boundary=XyZ"

struct seen {
    int n;
    char names[8][64];
    bool file[8];
    uint64_t start[8], end[8];
    char value[8][GW_MULTIPART_VALUE_MAX + 1];
};

static void
on_part(void *ctx, const struct gw_multipart_part *p)
{
    struct seen *s = ctx;

    if (s->n >= 8)
        return;
    snprintf(s->names[s->n], sizeof(s->names[0]), "%s", p->name);
    s->file[s->n] = p->file;
    s->start[s->n] = p->start;
    s->end[s->n] = p->end;
    memcpy(s->value[s->n], p->value, p->value_len);
    s->value[s->n][p->value_len] = '\0';
    s->n++;
}

/* A body with the file first (as the SDKs send it) whose content holds
 * false starts of the delimiter, then the model. */
static const char body[] = "--XyZ\r\n"
                           "Content-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n"
                           "Content-Type: audio/wav\r\n"
                           "\r\n"
                           "RIFF\r\n--Xy\r\r\n--XyQ data\r\n"
                           "\r\n--XyZ\r\n"
                           "Content-Disposition: form-data; name=\"model\"\r\n"
                           "\r\n"
                           "whisper-1"
                           "\r\n--XyZ\r\n"
                           "content-disposition: form-data; name=response_format\r\n"
                           "\r\n"
                           "verbose_json"
                           "\r\n--XyZ--\r\n";

static void
feed_in_pieces(size_t piece, struct seen *s, int *rc, bool *done)
{
    struct gw_multipart mp;
    size_t len = sizeof(body) - 1;

    memset(s, 0, sizeof(*s));
    assert_int_equal(gw_worker_multipart_init(&mp, CTYPE, on_part, s), 0);
    *rc = 0;
    for (size_t off = 0; off < len && *rc == 0; off += piece)
        *rc = gw_worker_multipart_feed(&mp, body + off, off + piece > len ? len - off : piece);
    *done = gw_worker_multipart_done(&mp);
}

static void
test_parts_are_the_same_in_pieces_of_any_size(void **state)
{
    const char *file = strstr(body, "RIFF");
    const char *model = strstr(body, "whisper-1");

    (void)state;
    for (size_t piece = 1; piece <= sizeof(body); piece++) {
        struct seen s;
        int rc;
        bool done;
        feed_in_pieces(piece, &s, &rc, &done);
        assert_int_equal(rc, 0);
        assert_true(done);
        assert_int_equal(s.n, 3);
        assert_string_equal(s.names[0], "file");
        assert_true(s.file[0]);
        assert_int_equal(s.start[0], (uint64_t)(file - body));
        assert_string_equal(s.value[0], "RIFF\r\n--Xy\r\r\n--XyQ data\r\n");
        assert_string_equal(s.names[1], "model");
        assert_false(s.file[1]);
        assert_int_equal(s.start[1], (uint64_t)(model - body));
        assert_int_equal(s.end[1], (uint64_t)(model - body) + 9);
        assert_string_equal(s.value[1], "whisper-1");
        assert_string_equal(s.names[2], "response_format");
        assert_string_equal(s.value[2], "verbose_json");
    }
}

static void
test_an_unfinished_body_is_not_done(void **state)
{
    struct gw_multipart mp;
    struct seen s = {0};

    (void)state;
    assert_int_equal(gw_worker_multipart_init(&mp, CTYPE, on_part, &s), 0);
    assert_int_equal(gw_worker_multipart_feed(&mp, body, sizeof(body) - 10), 0);
    assert_false(gw_worker_multipart_done(&mp));
}

static void
test_a_malformed_body_is_refused(void **state)
{
    static const char bad[] = "--XyZ\r\nno-colon-line\r\n\r\nv\r\n--XyZ!!";
    struct gw_multipart mp;
    struct seen s = {0};

    (void)state;
    assert_int_equal(gw_worker_multipart_init(&mp, CTYPE, on_part, &s), 0);
    assert_int_equal(gw_worker_multipart_feed(&mp, bad, sizeof(bad) - 1), GW_EPROTO);
    assert_false(gw_worker_multipart_done(&mp));
}

static void
test_boundaries_are_read_from_the_content_type(void **state)
{
    char b[80];

    (void)state;
    assert_int_equal(gw_worker_multipart_boundary(
                         "multipart/form-data; boundary=----formdata-undici-0123", b, sizeof(b)),
                     0);
    assert_string_equal(b, "----formdata-undici-0123");
    assert_int_equal(
        gw_worker_multipart_boundary("Multipart/Form-Data; charset=x; boundary=\"a b\"", b, 80), 0);
    assert_string_equal(b, "a b");
    assert_int_equal(gw_worker_multipart_boundary("application/json", b, sizeof(b)), GW_EINVAL);
    assert_int_equal(gw_worker_multipart_boundary("multipart/form-data", b, sizeof(b)), GW_EINVAL);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parts_are_the_same_in_pieces_of_any_size),
        cmocka_unit_test(test_an_unfinished_body_is_not_done),
        cmocka_unit_test(test_a_malformed_body_is_refused),
        cmocka_unit_test(test_boundaries_are_read_from_the_content_type),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
