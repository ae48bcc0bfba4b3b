/*
 * messages.h - the inbound Anthropic Messages API: POST /v1/messages for
 * clients that speak Anthropic's API (coding agents, the Anthropic SDKs),
 * routed to a model of any provider type through the canonical (OpenAI)
 * path.
 *
 * The translations (worker/providers/inbound_anthropic.c) go the other way
 * round from the anthropic adapter's: an Anthropic request becomes an
 * OpenAI chat request, and an OpenAI answer, error or stream becomes
 * Anthropic's.  The glue (worker/messages.c) puts the request through
 * them and the answers through an HTTP filter (struct gw_http_filter).
 */
#ifndef GW_WORKER_MESSAGES_H
#define GW_WORKER_MESSAGES_H

#include "worker/worker.h"

/*
 * An Anthropic Messages request as the canonical OpenAI chat request:
 * system, messages with text, image, tool_use and tool_result blocks,
 * tools and tool_choice, max_tokens, stop_sequences, temperature, top_p,
 * metadata.user_id and stream (with stream_options.include_usage).
 * Returns 0 with *out (the caller's, json_object_put) or GW_EINVAL with
 * what is wrong, worded like Anthropic's validation errors, in err.
 */
int gw_worker_messages_request(struct json_object *in, struct json_object **out, char *err,
                               size_t errlen);

/*
 * A chat.completion as an Anthropic message: {"id": "msg_...", "type":
 * "message", "role", "model", "content": [text and tool_use blocks, tool
 * arguments parsed into "input"], "stop_reason", "stop_sequence", "usage":
 * {"input_tokens", "output_tokens"}}.  model stands in when the answer
 * names none.  *out in a.  GW_EPROTO when body is no chat.completion.
 */
int gw_worker_messages_answer(struct gw_arena *a, const char *body, size_t len, const char *model,
                              const char **out, size_t *out_len);

/*
 * An error answer (OpenAI's shape, or anything) as Anthropic's {"type":
 * "error", "error": {"type", "message"}} with the status Anthropic would
 * use for it in *out_status (503 becomes 529 overloaded_error).  *out in a.
 */
int gw_worker_messages_error(struct gw_arena *a, int status, const char *body, size_t len,
                             int *out_status, const char **out, size_t *out_len);

/*
 * An OpenAI chat.completion.chunk stream being turned into Anthropic's
 * events: message_start, then per content block content_block_start,
 * content_block_delta (text_delta, input_json_delta) and
 * content_block_stop, then message_delta (stop_reason, usage) and
 * message_stop; an OpenAI error event becomes an "error" event.
 */
#define GW_MESSAGES_TOOLS 128 /* tool calls of one answer */

struct gw_messages_stream {
    struct gw_arena *a; /* ids and names */
    struct gw_buf *in;  /* OpenAI bytes not yet a whole event (the caller's) */
    const char *model;  /* until a chunk names one */
    const char *id;     /* "msg_..." */
    bool started;       /* message_start is out */
    bool pinged;        /* the ping after the first block is out */
    bool ended;         /* message_stop or an error is out: ignore the rest */
    int open;           /* index of the open content block, -1: none */
    bool open_text;     /* it is a text block */
    int next;           /* index of the next block */
    int open_tool;      /* the OpenAI tool call index of the open tool_use block */
    const char *stop_reason;
    bool have_usage;
    int64_t input_tokens;
    int64_t output_tokens;
    int64_t cached_tokens;
    int64_t deltas; /* content and argument deltas, the output when no usage came */
};

void gw_worker_messages_stream_init(struct gw_messages_stream *s, struct gw_arena *a,
                                    struct gw_buf *in, const char *model);
/* OpenAI event bytes in (any cut); Anthropic events appended to out. */
int gw_worker_messages_stream_feed(struct gw_messages_stream *s, const char *data, size_t len,
                                   struct gw_buf *out);
/* The OpenAI stream ended: what is left, and the last events if it did
 * not end with [DONE] yet began. */
int gw_worker_messages_stream_finish(struct gw_messages_stream *s, struct gw_buf *out);

/*
 * The glue (worker/messages.c).  filter_set makes every answer of req on
 * c Anthropic's (errors included, from authentication on); begin turns
 * req->body into the canonical chat request, or answers a bad one with a
 * 400 (then *answered is set and the result is the answer's).
 */
void gw_worker_messages_filter_set(struct gw_http_conn *c, struct gw_request *req);
int gw_worker_messages_begin(struct gw_http_conn *c, struct gw_request *req, bool *answered);

/*
 * POST /v1/messages/count_tokens: the request's input tokens, estimated
 * without a call (four bytes of text a token, a few per message, the tool
 * definitions), as {"input_tokens": N}; errors in Anthropic's shape (the
 * request's filter is set).
 */
int gw_worker_messages_count_tokens(struct gw_http_conn *c, struct gw_request *req,
                                    const struct gw_key *key, const struct gw_gen *g);

#endif
