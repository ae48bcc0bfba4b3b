/*
 * mock.h - aigw-mock, an OpenAI-compatible upstream for the integration
 * tests and the benchmarks.
 *
 * One thread per connection with blocking I/O: the mock must never be the
 * bottleneck of a benchmark, and a blocked thread per long stream is the
 * simplest model that scales to a few thousand concurrent streams.  Each
 * connection owns its buffers and reuses them for every request on it.
 *
 * Files: mock.c (command line, listener, signals), http.c (connections,
 * request parsing, routing, response writing), fault.c (the x-mock-*
 * request headers), chat.c (/v1/chat/completions), embed.c
 * (/v1/embeddings), media.c (audio, images, videos).  GET /mock/stats counts the chat and
 * embeddings requests served: {"chat": N, "embeddings": N}.
 * (/v1/embeddings), text.c (/v1/completions, /v1/moderations,
 * /v1/responses).  GET /mock/stats counts the chat, embeddings and text
 * requests served: {"chat": N, "embeddings": N, "text": N}.
 */
#ifndef GW_MOCK_H
#define GW_MOCK_H

#include <llhttp.h>
#include <json-c/json.h>
#include <stdbool.h>
#include <stddef.h>

#include "shm/shm.h"

#define GW_MOCK_READ_SIZE 16384
#define GW_MOCK_MAX_HEADERS 128
#define GW_MOCK_MAX_BODY (64 * 1024 * 1024)

/* Append a string literal to a gw_buf. */
#define GW_MOCK_APPEND(b, lit) gw_buf_append((b), (lit), sizeof(lit) - 1)

/* Offsets into gw_mock_conn.hbuf of a NUL-terminated header name (lowercased)
 * and its value. */
struct gw_mock_hdr {
    size_t name;
    size_t value;
};

/*
 * One client connection and the request being parsed on it.  Only the
 * connection's own thread touches it.  The buffers keep their memory from
 * one request to the next.
 */
struct gw_mock_conn {
    int fd;
    llhttp_t parser;
    struct json_tokener *tok; /* created on the first request with a body */
    struct gw_buf url;        /* request target as received */
    struct gw_buf hbuf;       /* header names and values, see gw_mock_hdr */
    struct gw_buf body;       /* decoded request body */
    struct gw_buf out;        /* bytes of the response not yet written */
    struct gw_buf ev;         /* scratch: a response body or one SSE event */
    struct gw_buf pre;        /* scratch: stream events' common prefix, a vector */
    struct gw_mock_hdr hdrs[GW_MOCK_MAX_HEADERS];
    size_t nhdrs;
    int hstate;      /* where the header callbacks are: none, name, value */
    bool keep_alive; /* the request allows another one on this connection */
    bool chunked;    /* the streamed response uses chunked framing */
    int reject;      /* status for a request refused while parsing (413, 431) */
    int64_t t_read;  /* gw_now_us() when the last read(2) returned */
    char rbuf[GW_MOCK_READ_SIZE];
};

/*
 * What the x-mock-* headers of a request ask for; see fault.c.  Every field
 * is a long so that one table can parse them all.
 */
struct gw_mock_fault {
    long status;         /* x-mock-status, 0 when absent */
    long delay_ms;       /* x-mock-delay-ms: before the first byte */
    long chunk_delay_ms; /* x-mock-chunk-delay-ms: between stream events */
    long chunks;         /* x-mock-chunks: completion tokens, default 5 */
    long drop_after;     /* x-mock-drop-after, -1 when absent */
    long echo;           /* x-mock-echo: 1 to echo the request */
    long no_usage;       /* x-mock-no-usage: 1 to send no usage, even when asked */
    long stamp;          /* x-mock-stamp: 1 to stamp the answer with x_mock_us */
    /* x-mock-bad-shape: 1 for a whole answer whose list of content (an
     * Anthropic message's content, a Gemini candidate's parts, a Bedrock
     * message's content) is a string: a provider, or a proxy before it,
     * that answers in a shape of its own. */
    long bad_shape;
    /* x-mock-error-text: N for an x-mock-status error whose message is
     * "x" and N times "é" (2 bytes each): long, and cut inside a
     * character by any byte limit at an even offset. */
    long error_text;
};

/* The key every /v1 request must present as a bearer token, or NULL. */
extern const char *gw_mock_require_key;

/* Thread body of one accepted connection; arg is the fd cast to intptr_t. */
void *gw_mock_conn_run(void *arg);

const char *gw_mock_header(const struct gw_mock_conn *c, const char *name);
const char *gw_mock_path(const struct gw_mock_conn *c, size_t *len);
unsigned long long gw_mock_next_id(void);
void gw_mock_sleep_ms(long ms);
size_t gw_mock_words(const char *s, size_t len);
int gw_mock_json_str(struct gw_buf *b, const char *s, size_t len);

int gw_mock_respond(struct gw_mock_conn *c, int status, const char *extra, const char *body,
                    size_t len);
int gw_mock_respond_cut(struct gw_mock_conn *c, const char *body, size_t len, long cut);
int gw_mock_respond_error(struct gw_mock_conn *c, int status, const char *type, const char *code,
                          const char *message);
int gw_mock_body_json(struct gw_mock_conn *c, struct json_object **out);

void gw_mock_stream_begin(struct gw_mock_conn *c);
void gw_mock_stream_begin_as(struct gw_mock_conn *c, const char *ctype);
int gw_mock_stream_event(struct gw_mock_conn *c, const char *data, size_t len, bool last);
int gw_mock_flush(struct gw_mock_conn *c);

int gw_mock_fault_parse(struct gw_mock_conn *c, struct gw_mock_fault *f);
/* The message of an injected error (x-mock-status) into out: "mock
 * injected status N", or x-mock-error-text's.  0 or GW_ENOMEM. */
int gw_mock_fault_message(const struct gw_mock_fault *f, struct gw_buf *out);
int gw_mock_fault_apply(struct gw_mock_conn *c, const struct gw_mock_fault *f);

int gw_mock_chat_handle(struct gw_mock_conn *c);
int gw_mock_embed_handle(struct gw_mock_conn *c);
int gw_mock_passthru_handle(struct gw_mock_conn *c);
/* The media endpoints (media.c); 1 when path is none of theirs. */
int gw_mock_media_dispatch(struct gw_mock_conn *c, const char *path, size_t plen);
/* text.c: /v1/completions, /v1/moderations, /v1/responses */
int gw_mock_completions_handle(struct gw_mock_conn *c);
int gw_mock_moderations_handle(struct gw_mock_conn *c);
int gw_mock_responses_handle(struct gw_mock_conn *c);

/*
 * The provider formats other than OpenAI's (provider.c): Azure OpenAI,
 * Anthropic, Gemini and Bedrock on their own paths, each checking its
 * own credential header.  Returns 1 when the path is none of theirs.
 */
int gw_mock_provider_dispatch(struct gw_mock_conn *c);

/* "ACCESS_KEY_ID:SECRET" Bedrock requests must be signed with, or NULL. */
extern const char *gw_mock_aws_key;

/*
 * What a provider-format mock answers, read from the request: the words
 * of its text (prompt tokens), the first tool it offers, the text of a
 * tool result in its last turn.  See provider.c.
 */
struct gw_mock_turn {
    struct gw_mock_fault f;
    const char *model;
    bool stream;
    size_t prompt;
    size_t completion;
    const char *tool;   /* call this tool (the request offers it, no result yet), or NULL */
    const char *result; /* a tool result to answer about, or NULL */
    const char *echo;   /* x-mock-echo: the body as received */
};

/* The answer's text: "got RESULT", or tokens "tok0 tok1 ..."; into b. */
void gw_mock_turn_text(const struct gw_mock_turn *t, struct gw_buf *b);
/* Token i of the answer, or the whole text as token 0 of a tool result. */
void gw_mock_turn_token(const struct gw_mock_turn *t, size_t i, struct gw_buf *b);
size_t gw_mock_turn_ntokens(const struct gw_mock_turn *t);
/* Helpers of the provider formats: a JSON answer (o is put), one SSE
 * event (named, or data only when event is NULL; after the chunk delay),
 * the end of a stream, a stream cut short, the words of a content. */
int gw_mock_send_json(struct gw_mock_conn *c, int status, struct json_object *o);
int gw_mock_send_event(struct gw_mock_conn *c, const struct gw_mock_fault *f, size_t *nsent,
                       const char *event, struct json_object *o, bool last);
int gw_mock_stream_close(struct gw_mock_conn *c);
int gw_mock_stream_drop(struct gw_mock_conn *c);
size_t gw_mock_content_words(struct json_object *content);
#define GW_MOCK_TOOL_ARGS "{\"city\":\"Paris\"}"

int gw_mock_anthropic_handle(struct gw_mock_conn *c, const char *path, size_t plen);
int gw_mock_gemini_handle(struct gw_mock_conn *c, const char *path, size_t plen);
int gw_mock_bedrock_handle(struct gw_mock_conn *c, const char *path, size_t plen);

#endif
