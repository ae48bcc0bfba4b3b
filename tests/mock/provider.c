/*
 * provider.c - the mock's provider formats other than OpenAI's: which
 * path is whose, Azure OpenAI (OpenAI's format at deployment URLs, the
 * key in api-key), and what every format answers.
 *
 * Whatever the format, the answer follows the request: when it offers
 * tools and its last turn holds no tool result, the mock calls the first
 * tool with GW_MOCK_TOOL_ARGS; when the last turn holds a tool result, it
 * answers "got RESULT"; else it answers N tokens "tok0 " ... as
 * chat.c does.  Usage: the words of the request's text in, N out.  The
 * x-mock-* headers apply (status, delays, chunks, drop, echo).
 */
#include <stdio.h>
#include <string.h>

#include "tests/mock/mock.h"

const char *gw_mock_aws_key;

static bool
has_prefix(const char *p, size_t len, const char *prefix)
{
    size_t n = strlen(prefix);

    return len >= n && memcmp(p, prefix, n) == 0;
}

static bool
has_suffix(const char *p, size_t len, const char *suffix)
{
    size_t n = strlen(suffix);

    return len >= n && memcmp(p + len - n, suffix, n) == 0;
}

/* Azure answers its own errors in OpenAI's shape, codes as strings. */
static int
azure_handle(struct gw_mock_conn *c, const char *path, size_t plen)
{
    const char *key = gw_mock_header(c, "api-key");

    if (path[plen] != '?' || strstr(path + plen, "api-version=") == NULL)
        return gw_mock_respond_error(c, 404, "invalid_request_error", "404",
                                     "Resource not found (no api-version).");
    if (gw_mock_require_key != NULL && (key == NULL || strcmp(key, gw_mock_require_key) != 0))
        return gw_mock_respond_error(c, 401, "invalid_request_error", "401",
                                     "Access denied due to invalid subscription key or wrong API "
                                     "endpoint.");
    if (gw_mock_header(c, "authorization") != NULL)
        return gw_mock_respond_error(c, 400, "invalid_request_error", "400",
                                     "Azure takes the key in api-key, not Authorization.");
    return gw_mock_chat_handle(c);
}

int
gw_mock_provider_dispatch(struct gw_mock_conn *c)
{
    size_t plen;
    const char *path = gw_mock_path(c, &plen);

    if ((llhttp_method_t)c->parser.method != HTTP_POST)
        return 1;
    if (plen == 12 && memcmp(path, "/v1/messages", 12) == 0)
        return gw_mock_anthropic_handle(c, path, plen);
    if (has_prefix(path, plen, "/v1beta/models/") && memchr(path, ':', plen) != NULL)
        return gw_mock_gemini_handle(c, path, plen);
    if (has_prefix(path, plen, "/openai/deployments/") &&
        has_suffix(path, plen, "/chat/completions"))
        return azure_handle(c, path, plen);
    if (has_prefix(path, plen, "/model/") &&
        (has_suffix(path, plen, "/converse") || has_suffix(path, plen, "/converse-stream")))
        return gw_mock_bedrock_handle(c, path, plen);
    return 1;
}

size_t
gw_mock_turn_ntokens(const struct gw_mock_turn *t)
{
    return t->echo != NULL || t->result != NULL ? 1 : t->completion;
}

void
gw_mock_turn_token(const struct gw_mock_turn *t, size_t i, struct gw_buf *b)
{
    if (t->echo != NULL)
        gw_buf_printf(b, "%s", t->echo);
    else if (t->result != NULL)
        gw_buf_printf(b, "got %s", t->result);
    else
        gw_buf_printf(b, "tok%zu ", i);
}

void
gw_mock_turn_text(const struct gw_mock_turn *t, struct gw_buf *b)
{
    for (size_t i = 0; i < gw_mock_turn_ntokens(t); i++)
        gw_mock_turn_token(t, i, b);
}

int
gw_mock_send_json(struct gw_mock_conn *c, int status, struct json_object *o)
{
    size_t len;
    const char *s = json_object_to_json_string_length(o, JSON_C_TO_STRING_PLAIN, &len);
    int rc = gw_mock_respond(c, status, NULL, s, len);

    json_object_put(o);
    return rc;
}

int
gw_mock_send_event(struct gw_mock_conn *c, const struct gw_mock_fault *f, size_t *nsent,
                   const char *event, struct json_object *o, bool last)
{
    c->ev.len = 0;
    if (event != NULL)
        gw_buf_printf(&c->ev, "event: %s\n", event);
    gw_buf_printf(&c->ev, "data: %s\n\n",
                  json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
    json_object_put(o);
    if ((*nsent)++ > 0)
        gw_mock_sleep_ms(f->chunk_delay_ms);
    return gw_mock_stream_event(c, c->ev.data, c->ev.len, last);
}

int
gw_mock_stream_close(struct gw_mock_conn *c)
{
    if (!c->chunked)
        return GW_ECLOSED; /* HTTP/1.0: the end of the stream is the close */
    return 0;
}

int
gw_mock_stream_drop(struct gw_mock_conn *c)
{
    (void)gw_mock_flush(c);
    return GW_ECLOSED;
}

/* Words of an Anthropic or Bedrock content: a string or blocks with "text". */
size_t
gw_mock_content_words(struct json_object *content)
{
    struct json_object *v;
    size_t n = 0;

    if (content == NULL)
        return 0;
    if (json_object_is_type(content, json_type_string))
        return gw_mock_words(json_object_get_string(content),
                             (size_t)json_object_get_string_len(content));
    for (size_t i = 0;
         json_object_is_type(content, json_type_array) && i < json_object_array_length(content);
         i++)
        if (json_object_object_get_ex(json_object_array_get_idx(content, i), "text", &v) &&
            json_object_is_type(v, json_type_string))
            n += gw_mock_words(json_object_get_string(v), (size_t)json_object_get_string_len(v));
    return n;
}
