/*
 * safety.h - content safety in the worker (worker/safety.c): the rules of
 * a generation compiled for this process, the inspection of a request's
 * text before it goes upstream, and of the answer, whole or streamed,
 * before it reaches the client.
 */
#ifndef GW_WORKER_SAFETY_H
#define GW_WORKER_SAFETY_H

#include "worker/worker.h"

enum gw_safety_dir {
    GW_SAFETY_INPUT = 0,
    GW_SAFETY_OUTPUT = 1,
};

/* One rule as the engine takes it: from a generation, or from a test. */
struct gw_worker_safety_def {
    const char *name;
    enum gw_safety_type type;
    enum gw_safety_action action;
    enum gw_safety_detector detector;
    unsigned on; /* GW_SAFETY_ON_* */
    bool whole_word;
    bool restore;
    const char *pattern;
    const char *const *words;
    size_t nwords;
    const char *mask; /* NULL: [LABEL_n] placeholders */
    int32_t stat[2];  /* stat entries per direction, -1: none */
};

/* The compiled rules; one per generation in a worker. */
struct gw_safety_engine;

/*
 * Compile n rules (JIT) into a new engine that holds back at most window
 * bytes of a stream.  Returns NULL (and logs) when a rule does not
 * compile, which the master's check makes a should-not-happen.  The
 * engine owns copies of everything it needs.
 */
struct gw_safety_engine *gw_worker_safety_engine_create(const struct gw_worker_safety_def *defs,
                                                        size_t n, size_t window);
void gw_worker_safety_engine_destroy(struct gw_safety_engine *e);

/*
 * One request's inspection: which rules apply (bit i: rule i), what was
 * masked (for restore), which rules already matched (each is counted
 * once per request and direction).  Lives in arena a; shm (may be NULL)
 * takes the counts.  One request at a time per process: the stream
 * windows are the process's own buffers, reused.
 */
struct gw_safety_req;

struct gw_safety_req *gw_worker_safety_req_create(struct gw_safety_engine *e, uint64_t rules,
                                                  struct gw_arena *a, const struct gw_shm *shm,
                                                  const char *request_id);

/* Do the request's rules look at dir at all? */
bool gw_worker_safety_req_wants(const struct gw_safety_req *st, enum gw_safety_dir dir);

/*
 * Inspect one whole text.  Returns -1 when no block rule matched, else
 * the index of the block rule that did.  *out is the text with masks
 * applied (and, for output, masked input values restored), in the arena,
 * or text itself when nothing changed.
 */
int gw_worker_safety_scan(struct gw_safety_req *st, enum gw_safety_dir dir, const char *text,
                          size_t len, const char **out, size_t *out_len);

/*
 * The rules that matched the request so far, as a JSON array of
 * {"rule", "direction", "action"} (never the matched text; the
 * moderation model's verdict adds its "categories"), appended to b: what
 * a capture record calls its safety verdicts.  [] when nothing matched.
 */
void gw_worker_safety_verdicts(const struct gw_request *req, struct gw_buf *b);

/* The name of rule i, for messages. */
const char *gw_worker_safety_rule_name(const struct gw_safety_req *st, int i);

/*
 * The stream filter: takes the complete events the SSE relay emits
 * (several at once, or the last one incomplete) and passes them on to
 * emit, holding back the tail of each choice's text that could still
 * become a match (at most the window), masked and restored like whole
 * answers.  When a block rule matches it emits an error event instead
 * and returns GW_EPERM: the stream must end there.  stream_end releases
 * what is still held (a stream that ended without [DONE]).
 */
int gw_worker_safety_stream(struct gw_safety_req *st, const char *data, size_t len,
                            gw_sse_emit_fn emit, void *ctx);
int gw_worker_safety_stream_end(struct gw_safety_req *st, gw_sse_emit_fn emit, void *ctx);

/*
 * Pipeline step: inspect the request's input for its model and key
 * (unless the allowlist names them), mask the body or answer 400
 * content_blocked, and leave call->safety set when the answer must be
 * inspected too.  Returns 0 to go on; otherwise the request was answered
 * (*answered set) and the result is the answer's.
 */
int gw_worker_safety_input(struct gw_worker *w, struct gw_request *req, const struct gw_key *key,
                           struct gw_call *call, bool *answered);

/*
 * The external moderation step (worker/moderation.c), run by
 * gw_worker_safety_input for models it applies to: the text of the
 * request is sent to safety.moderation's model (an OpenAI-compatible
 * /moderations); when it flags a configured category the request is
 * blocked (400 content_blocked) or flagged.  Returns 0 to go on;
 * otherwise the request was answered (*answered set).
 */
int gw_worker_moderation(struct gw_worker *w, struct gw_request *req, struct gw_call *call,
                         bool *answered);

/*
 * Upstream step, non-streamed answer: inspect choices[].message.content;
 * *body and *len may be replaced by a masked or restored answer (in the
 * arena).  When a block rule matched the client was answered with 400
 * content_blocked: *answered is set and the result is the answer's.
 */
int gw_worker_safety_response(struct gw_call *call, const char **body, size_t *len, bool *answered);

#endif
