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
    *rc = gw_worker_body_rewrite(a, body, strlen(body), model, usage, &out, &len);
    return *rc == 0 ? gw_arena_strndup(a, out, len) : NULL;
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
the_last_of_duplicate_model_keys_is_replaced_as_json_c_reads_it(void **state)
{
    int rc;
    char *o = rewrite("{\"model\":\"a\",\"model\":\"b\"}", "c", false, &rc);

    (void)state;
    assert_int_equal(rc, 0);
    assert_string_equal(o, "{\"model\":\"a\",\"model\":\"c\"}");
}

static void
shapes_for_the_general_path_are_refused(void **state)
{
    int rc;

    (void)state;
    /* stream_options present: it must be amended, not duplicated */
    assert_null(rewrite("{\"model\":\"a\",\"stream_options\":{\"x\":1}}", "b", true, &rc));
    assert_int_equal(rc, GW_EINVAL);
    /* a key spelled with an escape */
    assert_null(rewrite("{\"mod\\u0065l\":\"a\"}", "b", false, &rc));
    assert_int_equal(rc, GW_EINVAL);
    /* not an object */
    assert_null(rewrite("[1,2]", "b", false, &rc));
    assert_int_equal(rc, GW_EINVAL);
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

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(model_value_is_replaced_and_the_rest_kept_byte_for_byte),
        cmocka_unit_test(a_stream_gets_include_usage_appended),
        cmocka_unit_test(nested_model_keys_are_not_touched),
        cmocka_unit_test(quotes_in_the_new_name_are_escaped),
        cmocka_unit_test(the_last_of_duplicate_model_keys_is_replaced_as_json_c_reads_it),
        cmocka_unit_test(shapes_for_the_general_path_are_refused),
        cmocka_unit_test(int_members_are_read_from_the_top_level_only),
        cmocka_unit_test(int_members_refuse_what_is_not_an_object),
    };

    return cmocka_run_group_tests_name("body", tests, NULL, NULL);
}
