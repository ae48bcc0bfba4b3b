/*
 * providers.h - what the adapters of worker/providers/ share, and nothing
 * the rest of the worker needs (that is in worker/worker.h): building the
 * provider's request, the OpenAI answers, errors and chunks made from the
 * provider's, and the framing of a provider's server-sent events.
 *
 * Everything made here lives in the request's arena.
 */
#ifndef GW_WORKER_PROVIDERS_H
#define GW_WORKER_PROVIDERS_H

#include "worker/worker.h"

/* ------------------------------------------------------- the request */

/* o serialized into call->body (arena); o is put. */
int gw_worker_prov_body_set(struct gw_call *call, struct json_object *o);
/* A header line "Name: value" appended to call->headers; the arena copy
 * is wiped, as it may hold a secret. */
int gw_worker_prov_header_add(struct gw_call *call, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* s percent-encoded as a URL path segment (RFC 3986 unreserved kept). */
char *gw_worker_prov_path_escape(struct gw_arena *a, const char *s);

/* o's member key, or NULL (also when o is not an object). */
struct json_object *gw_worker_prov_get(struct json_object *o, const char *key);
/* o's member key when it is a string, else NULL. */
const char *gw_worker_prov_str(struct json_object *o, const char *key);
/*
 * Append item to the list named list_key ("content", "parts") of the last
 * turn of turns when that turn is role's, else of a new turn {"role":
 * role, list_key: [item]}: the providers whose formats want one turn per
 * role in a row (anthropic, bedrock, gemini).  item is taken.
 */
void gw_worker_prov_turn_add(struct json_object *turns, const char *role, const char *list_key,
                             struct json_object *item);
/*
 * The parts of an OpenAI message content (a string, or text and
 * image_url parts, the URL a string or {"url"}) as items of role's turn of
 * turns under list_key (gw_worker_prov_turn_add): text(s) makes the item
 * of each non-empty text, image(a, url) that of each image, NULL when the
 * provider cannot take it.
 */
void gw_worker_prov_content_add(struct gw_arena *a, struct json_object *turns, const char *role,
                                const char *list_key, struct json_object *content,
                                struct json_object *(*text)(const char *s),
                                struct json_object *(*image)(struct gw_arena *a, const char *url));
/* A copy of v (json_object_get would share it between two trees). */
struct json_object *gw_worker_prov_copy(struct json_object *v);
/*
 * The text of an OpenAI message content: a string, or the "text" parts of
 * an array joined; NULL when there is none.  In a.
 */
const char *gw_worker_prov_content_text(struct gw_arena *a, struct json_object *content);
/*
 * The parts of an image_url: a data: URL split into media type and base64
 * data (true), or false for another URL.
 */
bool gw_worker_prov_data_url(struct gw_arena *a, const char *url, const char **media_type,
                             const char **data);
/* The OpenAI request's max_completion_tokens, else max_tokens, else 0. */
int64_t gw_worker_prov_max_tokens(struct json_object *req);

/* ------------------------------------------------------- the answers */

/*
 * A chat.completion with one choice: content (NULL: null), tool_calls
 * (an array, or NULL: none; taken), finish_reason and usage; serialized
 * into *out.
 */
struct gw_worker_prov_answer {
    const char *id;
    const char *model;
    const char *content;
    struct json_object *tool_calls;
    const char *finish_reason;
    int64_t prompt_tokens;
    int64_t completion_tokens;
    int64_t cached_tokens; /* part of prompt_tokens read from a cache */
};
int gw_worker_prov_answer(struct gw_call *call, struct gw_worker_prov_answer *a, const char **out,
                          size_t *out_len);
/* One OpenAI tool call: {"id", "type": "function", "function": {"name", "arguments"}}. */
struct json_object *gw_worker_prov_tool_call(const char *id, const char *name,
                                             const char *arguments);

/*
 * An error in OpenAI's shape {"error": {"message", "type", "param",
 * "code"}} into *out.  code may be NULL.
 */
int gw_worker_prov_error(struct gw_call *call, const char *type, const char *code,
                         const char *message, const char **out, size_t *out_len);
/* The OpenAI error type of an HTTP status. */
const char *gw_worker_prov_error_type(int status);

/* ------------------------------------------------------- the stream */

/* The first chunk, with the role, once (no-op later). */
int gw_worker_prov_chunk_role(struct gw_xstream *xs);
/* A content delta. */
int gw_worker_prov_chunk_text(struct gw_xstream *xs, const char *text, size_t len);
/* A tool call delta: id and name when it begins, arguments as they come
 * (id, name NULL afterwards). */
int gw_worker_prov_chunk_tool(struct gw_xstream *xs, int index, const char *id, const char *name,
                              const char *args, size_t args_len);
/* The chunk with xs->finish_reason, once. */
int gw_worker_prov_chunk_finish(struct gw_xstream *xs);
/* The usage chunk (always: the relay drops it unless the client asked),
 * then data: [DONE]; the stream has ended. */
int gw_worker_prov_chunk_end(struct gw_xstream *xs);
/* An error event in OpenAI's shape; the stream has ended. */
int gw_worker_prov_chunk_error(struct gw_xstream *xs, const char *type, const char *code,
                               const char *message);
/* Send the events made so far on to the relay. */
int gw_worker_prov_flush(struct gw_xstream *xs);

/*
 * Split the provider's server-sent events: bytes are added to xs->in and
 * each complete event is handed to fn with its event name (may be empty)
 * and its data (lines joined with '\n').  Events after the stream ended
 * are read and ignored.  Then flushes.
 */
typedef int (*gw_worker_prov_event_fn)(struct gw_xstream *xs, const char *event, const char *data,
                                       size_t len);
int gw_worker_prov_sse_feed(struct gw_xstream *xs, const char *data, size_t len,
                            gw_worker_prov_event_fn fn);

/* Parse len bytes of JSON (an object), or NULL. */
struct json_object *gw_worker_prov_parse(const char *data, size_t len);

#endif
