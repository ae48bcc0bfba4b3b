/*
 * fuzz_body.c - the request body read by bytes (worker/body.c) against
 * json-c, which reads it in the general path.  A chat request's body is
 * checked by gw_worker_body_scan and sent on by gw_worker_body_rewrite
 * with the provider's model name swapped in, without a tree; whatever the
 * bytes, they must mean to json-c what the tree would have said.
 *
 * Promises checked:
 * - a body the scan accepts, json-c parses whole into an object, and the
 *   members the scan found (model, stream, user) read the same in it;
 * - a body json-c accepts, rewritten, parses into exactly the tree the
 *   general path makes: the same members, "model" the new name, and
 *   stream_options.include_usage true when usage was asked for;
 * - the integer members read by bytes are json-c's.
 */
#include <json-c/json.h>

#include "tests/fuzz/fuzz.h"
#include "worker/worker.h"

#define MODEL "fuzz-target-model"

/* A member found by the scan, unescaped string or literal, matches o's. */
static void
member_check(struct json_object *o, const char *key, const struct gw_body_member *m)
{
    struct json_object *v;
    bool have = json_object_object_get_ex(o, key, &v);

    FUZZ_CHECK(have == (m->v != NULL));
    if (m->v == NULL)
        return;
    if (m->v[0] == '"' && !m->escaped) {
        FUZZ_CHECK(json_object_is_type(v, json_type_string));
        FUZZ_CHECK((size_t)json_object_get_string_len(v) == m->len - 2);
        FUZZ_CHECK(memcmp(json_object_get_string(v), m->v + 1, m->len - 2) == 0);
    } else if (m->len == 4 && memcmp(m->v, "true", 4) == 0) {
        FUZZ_CHECK(json_object_is_type(v, json_type_boolean) && json_object_get_boolean(v));
    } else if (m->len == 5 && memcmp(m->v, "false", 5) == 0) {
        FUZZ_CHECK(json_object_is_type(v, json_type_boolean) && !json_object_get_boolean(v));
    } else if (m->len == 4 && memcmp(m->v, "null", 4) == 0) {
        FUZZ_CHECK(v == NULL);
    }
}

/* The tree the general path (worker/providers/openai.c) would send. */
static void
general_path(struct json_object *json, bool add_usage)
{
    struct json_object *so;

    json_object_object_add(json, "model", json_object_new_string(MODEL));
    if (add_usage) {
        if (!json_object_object_get_ex(json, "stream_options", &so) ||
            !json_object_is_type(so, json_type_object)) {
            so = json_object_new_object();
            json_object_object_add(json, "stream_options", so);
        }
        json_object_object_add(so, "include_usage", json_object_new_boolean(1));
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    bool add_usage = data[0] & 1;
    const char *body = (const char *)data + 1;
    size_t len = size - 1;
    struct gw_body_scan scan;
    struct json_object *tree = fuzz_json(body, len);
    bool scanned = gw_worker_body_scan(body, len, &scan) == 0;

    if (scanned) {
        FUZZ_CHECK(tree != NULL && json_object_is_type(tree, json_type_object));
        FUZZ_CHECK(scan.close != NULL && scan.close >= body && scan.close < body + len &&
                   *scan.close == '}');
        member_check(tree, "model", &scan.model);
        member_check(tree, "stream", &scan.stream);
        member_check(tree, "user", &scan.user);
        member_check(tree, "messages", &scan.messages);
        member_check(tree, "input", &scan.input);
        member_check(tree, "stream_options", &scan.stream_options);
    }
    if (tree != NULL && json_object_is_type(tree, json_type_object)) {
        struct gw_arena *a = gw_arena_create(4096);
        const char *out;
        size_t out_len;

        if (gw_worker_body_rewrite(a, body, len, scanned ? &scan : NULL, MODEL, add_usage, &out,
                                   &out_len) == 0) {
            struct json_object *sent = fuzz_json(out, out_len);
            general_path(tree, add_usage);
            FUZZ_CHECK(sent != NULL);
            FUZZ_CHECK(json_object_equal(sent, tree));
            json_object_put(sent);
        }
        gw_arena_destroy(a);

        static const char *const keys[] = {"prompt_tokens", "completion_tokens", "n"};
        int64_t vals[3] = {-7, -7, -7};
        if (gw_worker_body_int_members(body, len, keys, 3, vals) == 0) {
            for (size_t i = 0; i < 3; i++) {
                struct json_object *v;
                if (json_object_object_get_ex(tree, keys[i], &v) &&
                    json_object_is_type(v, json_type_int))
                    FUZZ_CHECK(vals[i] == json_object_get_int64(v));
            }
        }
    }
    json_object_put(tree);
    return 0;
}
