/*
 * moderation.c - POST /v1/moderations, as OpenAI answers it: one result
 * per input string, flagged "violence" when the text holds "hurt" and
 * "hate" when it holds "hate" (case-insensitive); x-mock-* faults apply.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "tests/mock/mock.h"

static bool
holds(const char *s, const char *word)
{
    return strcasestr(s, word) != NULL;
}

static void
result_add(struct gw_buf *b, const char *text, bool first)
{
    bool violence = holds(text, "hurt"), hate = holds(text, "hate");

    gw_buf_printf(b,
                  "%s{\"flagged\":%s,\"categories\":{\"hate\":%s,\"harassment\":false,"
                  "\"self-harm\":false,\"sexual\":false,\"violence\":%s},"
                  "\"category_scores\":{\"hate\":%s,\"harassment\":0.0,\"self-harm\":0.0,"
                  "\"sexual\":0.0,\"violence\":%s}}",
                  first ? "" : ",", violence || hate ? "true" : "false", hate ? "true" : "false",
                  violence ? "true" : "false", hate ? "0.97" : "0.01", violence ? "0.95" : "0.01");
}

int
gw_mock_moderation_handle(struct gw_mock_conn *c)
{
    struct json_object *req = NULL, *input = NULL, *model;
    struct gw_mock_fault f;
    struct gw_buf *b = &c->ev;
    int rc;

    if ((rc = gw_mock_fault_parse(c, &f)) != 0 || (rc = gw_mock_fault_apply(c, &f)) != 0)
        return rc < 0 ? rc : 0;
    if ((rc = gw_mock_body_json(c, &req)) != 0)
        return rc > 0 ? 0 : rc;
    if (!json_object_object_get_ex(req, "input", &input)) {
        json_object_put(req);
        return gw_mock_respond_error(c, 400, "invalid_request_error", "missing_input",
                                     "'input' is a required property.");
    }
    b->len = 0;
    gw_buf_printf(b, "{\"id\":\"modr-%llu\",\"model\":", gw_mock_next_id());
    if (json_object_object_get_ex(req, "model", &model) &&
        json_object_is_type(model, json_type_string))
        gw_mock_json_str(b, json_object_get_string(model),
                         (size_t)json_object_get_string_len(model));
    else
        gw_buf_printf(b, "\"omni-moderation-latest\"");
    gw_buf_printf(b, ",\"results\":[");
    if (json_object_is_type(input, json_type_array))
        for (size_t i = 0; i < json_object_array_length(input); i++)
            result_add(b, json_object_get_string(json_object_array_get_idx(input, i)), i == 0);
    else
        result_add(b, json_object_get_string(input), true);
    gw_buf_printf(b, "]}");
    json_object_put(req);
    return gw_mock_respond(c, 200, NULL, b->data, b->len);
}
