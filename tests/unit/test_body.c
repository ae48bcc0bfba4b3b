/*
 * test_body.c - rewriting the model of a request body by splicing bytes:
 * the result must be the same JSON as the client's with only the model
 * (and, for streams, stream_options) changed, and unusual shapes must be
 * left to the general path.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "worker/worker.h"

static char *
rewrite(const char *body, const char *model, bool usage, int *rc)
{
    static struct gw_arena *a;
    const char *out = NULL;
    size_t len = 0;

    if (a == NULL)
        a = gw_arena_create(4096);
    *rc = gw_worker_body_rewrite(a, body, strlen(body), NULL, model, usage, &out, &len);
    if (*rc != 0)
        return NULL;
    /* From the scan's positions, when the body scans: the same bytes. */
    struct gw_body_scan bs;
    if (gw_worker_body_scan(body, strlen(body), &bs) == 0) {
        const char *out2 = NULL;
        size_t len2 = 0;
        assert_int_equal(
            gw_worker_body_rewrite(a, body, strlen(body), &bs, model, usage, &out2, &len2), 0);
        assert_int_equal(len2, len);
        assert_memory_equal(out2, out, len);
    }
    return gw_arena_strndup(a, out, len);
}

static void
model_value_is_replaced_and_the_rest_kept_byte_for_byte(void **state)
{
    int rc;
    char *o = rewrite("{\"model\": \"demo\", \"temperature\":0.70, \"messages\":[{\"role\":"
                      "\"user\",\"content\":\"say \\\"model\\\": x\"}]}",
                      "mock-small", false, &rc);

    (void)state;
    assert_int_equal(rc, 0);
    assert_string_equal(o, "{\"model\": \"mock-small\", \"temperature\":0.70, \"messages\":[{"
                           "\"role\":\"user\",\"content\":\"say \\\"model\\\": x\"}]}");
}

static void
a_stream_gets_include_usage_appended(void **state)
{
    int rc;
    char *o = rewrite("{\"messages\":[],\"stream\":true,\"model\":\"demo\"}\n", "m", true, &rc);

    (void)state;
    assert_int_equal(rc, 0);
    assert_string_equal(o, "{\"messages\":[],\"stream\":true,\"model\":\"m\","
                           "\"stream_options\":{\"include_usage\":true}}\n");
}

static void
nested_model_keys_are_not_touched(void **state)
{
    int rc;
    char *o = rewrite("{\"tools\":[{\"model\":\"inner\"}],\"model\":\"demo\",\"x\":{\"model\":1}}",
                      "t", false, &rc);

    (void)state;
    assert_int_equal(rc, 0);
    assert_string_equal(o,
                        "{\"tools\":[{\"model\":\"inner\"}],\"model\":\"t\",\"x\":{\"model\":1}}");
}

static void
quotes_in_the_new_name_are_escaped(void **state)
{
    int rc;
    char *o = rewrite("{\"model\":\"a\"}", "we\"ird\\", false, &rc);

    (void)state;
    assert_int_equal(rc, 0);
    assert_string_equal(o, "{\"model\":\"we\\\"ird\\\\\"}");
}

static void
shapes_for_the_general_path_are_refused(void **state)
{
    int rc;

    (void)state;
    /* stream_options present: it must be amended, not duplicated */
    assert_null(rewrite("{\"model\":\"a\",\"stream_options\":{\"x\":1}}", "b", true, &rc));
    assert_int_equal(rc, GW_EINVAL);
    /* a key spelled with an escape, alone or beside a plain one that
     * json-c's reading (the last) would not take */
    assert_null(rewrite("{\"mod\\u0065l\":\"a\"}", "b", false, &rc));
    assert_int_equal(rc, GW_EINVAL);
    assert_null(rewrite("{\"model\":\"a\",\"mod\\u0065l\":\"x\"}", "b", false, &rc));
    assert_int_equal(rc, GW_EINVAL);
    /* "model" twice: a reader that keeps the first would see the
     * client's name beside ours; "messages" twice: it would see messages
     * the gateway never checked */
    assert_null(rewrite("{\"model\":\"a\",\"model\":\"b\"}", "c", false, &rc));
    assert_int_equal(rc, GW_EINVAL);
    assert_null(rewrite("{\"messages\":[1],\"model\":\"a\",\"messages\":[2]}", "c", false, &rc));
    assert_int_equal(rc, GW_EINVAL);
    /* what json-c lets through and strict JSON does not: a trailing
     * comma (which stream_options would have doubled), a comment */
    assert_null(rewrite("{\"model\":\"a\",\"stream\":true,}", "b", true, &rc));
    assert_int_equal(rc, GW_EINVAL);
    assert_null(rewrite("{\"model\":\"a\" /* \"model\":\"x\" */}", "b", false, &rc));
    assert_int_equal(rc, GW_EINVAL);
    /* not an object */
    assert_null(rewrite("[1,2]", "b", false, &rc));
    assert_int_equal(rc, GW_EINVAL);
}

/* The body replaced after its scan (masked by a safety rule, say): the
 * scan's positions are not used, the new bytes are walked. */
static void
a_scan_of_other_bytes_is_not_trusted(void **state)
{
    struct gw_arena *a = gw_arena_create(1024);
    const char *old = "{\"model\":\"a\",\"n\":1}", *now = "{\"n\":22,\"model\":\"abc\"}";
    struct gw_body_scan bs;
    const char *out;
    size_t len;

    (void)state;
    assert_int_equal(gw_worker_body_scan(old, strlen(old), &bs), 0);
    assert_int_equal(gw_worker_body_rewrite(a, now, strlen(now), &bs, "m", false, &out, &len), 0);
    assert_int_equal(len, strlen("{\"n\":22,\"model\":\"m\"}"));
    assert_memory_equal(out, "{\"n\":22,\"model\":\"m\"}", len);
    /* From a scan too: stream_options to amend goes the general path. */
    const char *so = "{\"model\":\"a\",\"stream_options\":{}}";
    assert_int_equal(gw_worker_body_scan(so, strlen(so), &bs), 0);
    assert_int_equal(gw_worker_body_rewrite(a, so, strlen(so), &bs, "m", true, &out, &len),
                     GW_EINVAL);
    gw_arena_destroy(a);
}

static void
int_members_are_read_from_the_top_level_only(void **state)
{
    static const char *const keys[] = {"prompt_tokens", "completion_tokens", "absent"};
    const char *o = "{ \"prompt_tokens_details\": {\"prompt_tokens\": 99, \"s\": \"}\\\"\"},\n"
                    "  \"prompt_tokens\" : 12, \"completion_tokens\":\"7\", \"x\":[1,{\"a\":2}],"
                    " \"completion_tokens\": 30.9 }";
    int64_t v[3] = {-1, -1, -1};

    (void)state;
    assert_int_equal(gw_worker_body_int_members(o, strlen(o), keys, 3, v), 0);
    assert_int_equal(v[0], 12);
    assert_int_equal(v[1], 30); /* the last one, its fraction cut */
    assert_int_equal(v[2], -1); /* absent: untouched */
    const char *neg = "{\"prompt_tokens\":-4}";
    assert_int_equal(gw_worker_body_int_members(neg, strlen(neg), keys, 1, v), 0);
    assert_int_equal(v[0], -4);
}

static void
int_members_refuse_what_is_not_an_object(void **state)
{
    static const char *const keys[] = {"a"};
    const char *bad[] = {"",          "[1]",      "null",  "{\"a\":1",
                         "{\"a\" 1}", "{\"a\":}", "{a:1}", "{\"a\":1 \"b\":2}"};
    int64_t v[1];

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(gw_worker_body_int_members(bad[i], strlen(bad[i]), keys, 1, v), GW_EINVAL);
}

static void
scan_finds_the_top_level_members_the_pipeline_reads(void **state)
{
    const char *b =
        " {\"messages\":[{\"role\":\"user\",\"model\":\"inner\"}],\"model\":\"gpt\","
        "\"stream\":true,\"user\":\"u\\\"1\",\"stream_options\":{\"include_usage\":false},"
        "\"model\":\"last\",\"n\":-1.5e+3} \n";
    struct gw_body_scan bs;

    (void)state;
    assert_int_equal(gw_worker_body_scan(b, strlen(b), &bs), 0);
    assert_int_equal(bs.model.len, 6);
    assert_memory_equal(bs.model.v, "\"last\"", 6); /* the last one, as json-c */
    assert_false(bs.model.escaped);
    assert_int_equal(bs.messages.v[0], '[');
    assert_memory_equal(bs.stream.v, "true", bs.stream.len);
    assert_true(bs.user.escaped);
    assert_memory_equal(bs.stream_options.v, "{\"include_usage\":false}", bs.stream_options.len);
    assert_null(bs.input.v);
}

/*
 * Both walks look at eight bytes at a time: a quote, a backslash or a raw
 * control character must be found at every position of a word, and UTF-8
 * bytes (0x80 and up) must pass as plain characters.
 */
static void
strings_are_walked_right_whatever_the_offset_of_their_special_bytes(void **state)
{
    static const char plain[] = "abc\xc3\xa9"
                                "defghijklmnopqrstuvwxyz0123456789";
    char body[160], want[160];

    (void)state;
    for (int at = 0; at < 24; at++) {
        struct gw_body_scan bs;
        int rc;
        char *o;

        /* The closing quote at offset at. */
        snprintf(body, sizeof(body), "{\"m\":\"%.*s\",\"model\":\"x\"}", at, plain);
        assert_int_equal(gw_worker_body_scan(body, strlen(body), &bs), 0);
        assert_memory_equal(bs.model.v, "\"x\"", 3);
        snprintf(want, sizeof(want), "{\"m\":\"%.*s\",\"model\":\"y\"}", at, plain);
        assert_non_null(o = rewrite(body, "y", false, &rc));
        assert_string_equal(o, want);

        /* An escaped quote at offset at does not end the string. */
        snprintf(body, sizeof(body), "{\"m\":\"%.*s\\\"\\\\\",\"model\":\"x\",\"k\":\"%.*s\"}", at,
                 plain, 24 - at, plain);
        assert_int_equal(gw_worker_body_scan(body, strlen(body), &bs), 0);
        assert_memory_equal(bs.model.v, "\"x\"", 3);
        assert_non_null(o = rewrite(body, "y", false, &rc));
        assert_non_null(strstr(o, "\"model\":\"y\""));

        /* A raw control character at offset at is refused. */
        snprintf(body, sizeof(body), "{\"m\":\"%.*s\x01%.*s\",\"model\":\"x\"}", at, plain, 9,
                 plain);
        assert_int_equal(gw_worker_body_scan(body, strlen(body), &bs), GW_EINVAL);
    }
}

/* Whatever the scanner accepts, json-c accepts too (the other way round
 * it may refuse, and json-c decides). */
static void
scan_accepts_only_what_json_c_accepts(void **state)
{
    const char *cases[] = {
        "{}",
        "{\"a\":1}",
        "{\"a\":[1,2,{\"b\":null}],\"c\":\"\\u00e9\\n\\\"\"}",
        "{\"a\":-0.5E-7,\"b\":true,\"c\":false}",
        " \t\r\n{ \"a\" : [ ] , \"b\" : { } } \n",
        "{\"a\":1,}",
        "{\"a\":01}",
        "{\"a\":1.}",
        "{\"a\":.5}",
        "{\"a\":tru}",
        "{\"a\":\"x\ty\"}",
        "{\"a\":\"\\x\"}",
        "{\"a\":\"\\u12g4\"}",
        "{\"a\":1}x",
        "{\"a\":1} {}",
        "[1]",
        "{\"a\" 1}",
        "{\"a\":[1,]}",
        "{\"a\":[1 2]}",
        "{'a':1}",
        "{\"a\":NaN}",
        "{\"a\":\"unterminated}",
        "{\"a\":",
        "{\"\\u0061\":1}",
        "",
        "{\"a\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}",
    };
    struct json_tokener *tok = json_tokener_new_ex(64);
    int accepted = 0;

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct gw_body_scan bs;
        size_t len = strlen(cases[i]);
        if (gw_worker_body_scan(cases[i], len, &bs) != 0)
            continue;
        accepted++;
        json_tokener_reset(tok);
        struct json_object *o = json_tokener_parse_ex(tok, cases[i], (int)len);
        size_t end = json_tokener_get_parse_end(tok);
        while (end < len && strchr(" \t\r\n", cases[i][end]) != NULL)
            end++;
        if (o == NULL || !json_object_is_type(o, json_type_object) || end != len)
            fail_msg("the scanner accepts what json-c does not: %s", cases[i]);
        json_object_put(o);
    }
    assert_int_equal(accepted, 5); /* the five valid ones, and nothing else */
    json_tokener_free(tok);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(model_value_is_replaced_and_the_rest_kept_byte_for_byte),
        cmocka_unit_test(a_stream_gets_include_usage_appended),
        cmocka_unit_test(nested_model_keys_are_not_touched),
        cmocka_unit_test(quotes_in_the_new_name_are_escaped),
        cmocka_unit_test(shapes_for_the_general_path_are_refused),
        cmocka_unit_test(a_scan_of_other_bytes_is_not_trusted),
        cmocka_unit_test(int_members_are_read_from_the_top_level_only),
        cmocka_unit_test(int_members_refuse_what_is_not_an_object),
        cmocka_unit_test(scan_finds_the_top_level_members_the_pipeline_reads),
        cmocka_unit_test(scan_accepts_only_what_json_c_accepts),
        cmocka_unit_test(strings_are_walked_right_whatever_the_offset_of_their_special_bytes),
    };

    return cmocka_run_group_tests_name("body", tests, NULL, NULL);
}
