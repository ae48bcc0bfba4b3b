/*
 * worker.h - the worker process: HTTP/1.1 server side, the request
 * pipeline, the upstream call and the SSE relay.
 */
#ifndef GW_WORKER_H
#define GW_WORKER_H

#include <poll.h>
#include <signal.h>
#include <sys/uio.h>

#include <curl/curl.h>
#include <llhttp.h>
#include <json-c/json.h>

#include "shm/shm.h"

/* ------------------------------------------------------------ the process */

/* What the master hands a worker at fork. */
struct gw_worker_env {
    int index; /* scoreboard slot */
    pid_t master;
    const struct gw_config *cfg; /* start-up settings only (state_dir); routing is in shm */
    const struct gw_shm *shm;
    const int *listen_fds;
    size_t nlisten;
    int metrics_fd;       /* the /metrics listener, or -1 */
    const int *admin_fds; /* the HTTP admin API's listeners (admin.listen) */
    size_t nadmin;
    const unsigned char *secret;
    const unsigned char *provider_key; /* opens BYOK credentials (worker/byok.c) */
    uint64_t max_requests;             /* recycle after this many requests; 0: never */
    int connections;                   /* served at once (workers.connections) */
    const int *master_fds;             /* the master's own descriptors, closed at start */
    size_t nmaster_fds;
    int ring_bell; /* eventfd that wakes the master to drain usage (gw_shm_ring_bell) */
};

/*
 * Serve connections until told to stop (SIGTERM: finish the request in
 * hand, then exit) or until the master is gone.  Never returns: exits 0,
 * or GW_EXIT_FATAL when something a restart cannot fix is wrong.
 */
void gw_worker_main(const struct gw_worker_env *env) __attribute__((noreturn));

/* Set by SIGTERM; checked between requests and while idle. */
extern volatile sig_atomic_t gw_worker_stopping;
/* Set in a worker of many connections, which interrupts its connections'
 * waits when it stops; a worker of one looks at gw_worker_stopping
 * between slices of its waits instead. */
extern bool gw_worker_woken_on_stop;

/* ------------------------------------------------------------------ HTTP */

struct gw_header {
    char *name; /* lowercased */
    char *value;
};

/*
 * One request, carried through the whole pipeline.  Everything it points
 * to lives in arena (reset after the request) or, for the body, in the
 * connection's reusable buffer.
 */
struct gw_request {
    struct gw_arena *arena;
    char id[65];
    llhttp_method_t method;
    char *path;  /* without the query string */
    char *query; /* after '?', or NULL */
    struct gw_header *headers;
    size_t nheaders;
    const char *body;
    size_t body_len;
    bool keep_alive;
    int http_minor;
    int64_t start_us;

    /* Filled in along the pipeline, read by the access log. */
    int status;                /* what was answered */
    int upstream_status;       /* what the upstream answered (502/504 when it failed), 0: none */
    const char *allow;         /* methods for a 405's Allow header */
    const char *extra_headers; /* "Name: value\r\n" lines every response carries */
    const char *limit_headers; /* x-ratelimit-* lines, the same way (worker/limit.c) */
    const char *quota_headers; /* x-aigw-quota-* lines, the same way (worker/quota.c) */
    const char *key_id;
    const char *tenant; /* the key owner's tenant, or NULL */
    const char *user;   /* the key's owner, or NULL */
    bool byok;          /* the attempt that answered used the tenant's own credential */
    const char *model;
    const char *target; /* "provider/model" */
    int32_t model_stat; /* stat table entries, -1 when none */
    int32_t target_stat;
    bool stream;
    bool have_usage;
    int64_t prompt_tokens;
    int64_t completion_tokens;
    int64_t first_byte_us;
    int64_t cost_nano; /* at the serving target's prices, 1e-9 units */

    /* Response cache and capture (worker/cache.c, worker/capture.c). */
    const char *cache_headers;    /* "x-aigw-cache: hit|miss|bypass\r\n", or NULL */
    bool cache_hit;               /* answered from the cache, without an upstream call */
    struct gw_safety_req *safety; /* the content-safety inspection, or NULL */
    /* The moderation model's verdict: the action taken ("block", "flag")
     * and the categories it matched, or NULL. */
    const char *moderation_action;
    const char *moderation_categories; /* a JSON array */
    bool capture;                      /* account() writes a capture record */
    struct gw_answer *answer;          /* the answer as the client got it, or NULL */

    /* Usage per capability (worker/media.c): what units counts. */
    uint8_t capability; /* enum gw_usage_capability; 0: from the endpoint */
    int64_t units;
    const char *tier;
};

#define GW_HTTP_MAX_YIELD_FDS 16

struct gw_http_conn;

/*
 * Rewrites every answer of one request on its way out, for a route that
 * speaks another API than OpenAI's (worker/messages.c: Anthropic's).  The
 * pipeline answers in OpenAI's shapes as always; while c->filter is set,
 * gw_worker_http_respond and the stream calls hand their arguments to it
 * instead, and the filter's own calls of them go straight out.  ctx is the
 * filter's, in the request's arena.
 */
struct gw_http_filter {
    int (*respond)(struct gw_http_conn *c, struct gw_request *req, int status, const char *ctype,
                   const char *extra, const char *body, size_t len);
    int (*stream_begin)(struct gw_http_conn *c, struct gw_request *req, int status,
                        const char *ctype, const char *extra);
    int (*stream_write)(struct gw_http_conn *c, const char *data, size_t len);
    int (*stream_end)(struct gw_http_conn *c);
    void *ctx;
};

/* llhttp_execute, with how many bytes it took: all of them, or up to
 * where it paused (a message complete) or failed. */
static inline llhttp_errno_t
gw_http_parse(llhttp_t *p, const char *data, size_t len, size_t *used)
{
    llhttp_errno_t e = llhttp_execute(p, data, len);
    const char *at = e == HPE_OK ? NULL : llhttp_get_error_pos(p);

    *used = at != NULL && at >= data && at <= data + len ? (size_t)(at - data) : len;
    return e;
}

struct gw_http_conn {
    int fd;
    const struct gw_http_limits *limits;
    llhttp_t parser;
    char *in; /* read buffer: in[off..len) is not parsed yet */
    size_t in_cap, in_len, in_off;
    struct gw_buf url, field, value, body;
    struct gw_request *req;
    size_t msg_bytes;       /* bytes of the current message seen so far */
    size_t header_bytes;    /* request line + headers so far */
    const char *parse_base; /* where the bytes of the parse under way start */
    size_t headers_cap;     /* room in req->headers */
    uint64_t served;        /* requests read on this connection */
    /* Wall clock (unix µs) when the current answer's last write began
     * (a whole answer, or a stream's end); 0: not yet.  A usage record is dated by it: a
     * client that waits for one answer before it sends the next request
     * then always finds them in that order, whichever worker served
     * which. */
    int64_t sent_us;
    /* When the client last took bytes that a write had waited for
     * (monotonic ms; 0: none yet): a transfer does not count the time
     * its relay spent waiting for the client as the upstream's silence. */
    int64_t took_ms;
    bool in_value;
    bool done;
    bool headers_done;
    /* The last read found the socket empty (it came back short, or
     * EAGAIN): the next bytes are waited for, not read for first.  The
     * worker's wait on a client's socket is for what arrives after it
     * (edge-triggered, worker.c). */
    bool drained;
    /* Between two requests, the read before the wait last found the next
     * request there (see gw_worker_http_read). */
    bool idle_hit;
    int64_t header_deadline; /* the headers must be in by then (ms) */
    /* An idle keep-alive connection gives way to a new client waiting on
     * one of yield_fds when should_yield says no other worker is free. */
    const int *yield_fds;
    size_t nyield_fds;
    bool (*should_yield)(void *ctx);
    void *yield_ctx;
    /* A request whose route takes its body as a stream (uploads, see
     * worker/media.c): stream_body, asked once the headers are in, says
     * so; then gw_worker_http_read returns without the body, which is
     * read piece by piece with gw_worker_http_body_read, bounded by
     * max_upload_size instead of max_body_size. */
    bool (*stream_body)(const struct gw_request *req);
    bool body_streamed; /* the request in hand is such a request */
    size_t body_off;    /* body.data[body_off..body.len) not handed out yet */
    uint64_t body_seen; /* its body bytes parsed so far */
    int error;          /* HTTP status to answer when parsing failed */
    bool response_open; /* headers sent, body (chunked) in progress */
    bool chunked;       /* response uses chunked transfer coding */
    uint64_t bytes_out; /* bytes written to the client, for the access log */
    struct gw_buf out;
    const struct gw_http_filter *filter; /* this request's answers are rewritten, or NULL */
    struct gw_buf filter_in, filter_out; /* the filter's buffers, kept for the connection */
    bool filtering;                      /* inside the filter: write as asked */
};

void gw_worker_http_init(struct gw_http_conn *c, int fd, const struct gw_http_limits *limits);
void gw_worker_http_fini(struct gw_http_conn *c);

/*
 * Read and parse the next request on c into req (whose arena the caller
 * provides).  Returns 0 when a whole request (body included) is in hand;
 * GW_ECLOSED when the peer closed or stayed idle past keepalive_timeout
 * before sending anything (close quietly); GW_EPROTO when the request is
 * bad, too big or too slow: then c->error holds the status to answer with
 * gw_worker_http_error before closing.  Either way req->start_us is when
 * the request's first byte came (gw_now_us).
 */
int gw_worker_http_read(struct gw_http_conn *c, struct gw_request *req);

/*
 * The next piece of a streamed request body (c->body_streamed): *data
 * and *len point into the connection's buffer, valid until the next
 * call; *len is 0 at the end of the body.  Returns 0; GW_EPROTO when
 * the body is too big, malformed or too slow (c->error holds the status
 * to answer: 413, 400 or 408); GW_ECLOSED when the client went away.
 */
int gw_worker_http_body_read(struct gw_http_conn *c, const char **data, size_t *len);
/* Whether the request in hand has body bytes not read yet (a streamed
 * body its handler did not read to the end): the connection cannot
 * serve another request. */
bool gw_worker_http_body_unread(const struct gw_http_conn *c);
/*
 * Before closing a connection whose client may still be sending (an
 * upload refused early): stop writing, and read and drop what comes for
 * a little while, so that the client reads the answer instead of a reset.
 */
void gw_worker_http_linger(struct gw_http_conn *c);

/* Header value by lowercase name, or NULL. */
const char *gw_worker_http_header(const struct gw_request *req, const char *name);

/*
 * Send a complete response.  extra is NULL or preformatted header lines
 * ("Name: value\r\n"...).  Returns 0 or GW_EIO/GW_ETIMEDOUT (client gone
 * or not reading: close the connection).
 */
int gw_worker_http_respond(struct gw_http_conn *c, struct gw_request *req, int status,
                           const char *ctype, const char *extra, const char *body, size_t len);

/*
 * Send an error in OpenAI's shape {"error": {"message", "type", "param",
 * "code"}}.  param and code may be NULL (sent as null).
 */
int gw_worker_http_error(struct gw_http_conn *c, struct gw_request *req, int status,
                         const char *type, const char *code, const char *param, const char *fmt,
                         ...) __attribute__((format(printf, 7, 8)));

/* A streamed response: headers now, then chunks as they come, then end. */
int gw_worker_http_stream_begin(struct gw_http_conn *c, struct gw_request *req, int status,
                                const char *ctype, const char *extra);
int gw_worker_http_stream_write(struct gw_http_conn *c, const char *data, size_t len);
int gw_worker_http_stream_end(struct gw_http_conn *c);
/*
 * Append whole lines (data ends with a newline) to fd, in one writev(2)
 * as long as it takes them: the access log, the capture files, which
 * every worker appends to.  A write that fails part way (the disk full
 * mid-line) leaves the start of a line in the file and sets the file's
 * bit in *cut (gw_shm_header.lines_cut); the next write of any worker
 * then begins with a newline, so that only that line is unreadable, not
 * the next one too.  Returns 0 or the errno.
 */
int gw_worker_lines_write(int fd, _Atomic uint32_t *cut, uint32_t bit, const char *data,
                          size_t len);
/* After a writev(2) or sendmsg(2) of *n vectors at *iov wrote written
 * bytes: move past them, so that the call can go on with the rest. */
void gw_worker_iov_consume(struct iovec **iov, int *n, size_t written);

const char *gw_worker_http_reason(int status);
/*
 * Append a header line ("Name: value") to call->headers.  The node lives
 * in the request's arena, not on the heap: no allocation a header, and
 * nothing to free but the arena.  The line is not copied: it must live
 * as long as the request (in its arena, or a literal); NULL (an arena out
 * of memory) is GW_ENOMEM.  A secret line (a provider's credential, in the
 * arena) is wiped by gw_worker_headers_wipe, which the list's user calls
 * when it is done with it, before the arena goes.
 */
struct gw_call;
int gw_worker_call_header(struct gw_call *call, const char *line, bool secret);
void gw_worker_headers_wipe(struct curl_slist *headers);

/* A method's name ("POST"); "UNKNOWN" for a number that is none. */
const char *gw_worker_http_method_name(llhttp_method_t method);

/* ------------------------------------------------------------- SSE relay */

/* Receives bytes to forward to the client; returns 0 or a GW_E* code. */
typedef int (*gw_sse_emit_fn)(void *ctx, const char *data, size_t len);

/*
 * Relays a server-sent-events stream event by event as it arrives, never
 * holding back a complete event, and reads the usage the upstream reports
 * in its final chunk.  When drop_usage is set (the client did not ask for
 * stream_options.include_usage, the gateway did), that usage-only chunk is
 * not forwarded.
 */
struct gw_sse {
    gw_sse_emit_fn emit;
    void *ctx;
    bool drop_usage;
    struct gw_buf pending; /* an incomplete event */
    bool have_usage;
    int64_t prompt_tokens;
    int64_t completion_tokens;
    size_t events;
    int64_t generated; /* chunks that carried content or tool arguments */
};

void gw_worker_sse_init(struct gw_sse *s, gw_sse_emit_fn emit, void *ctx, bool drop_usage);
void gw_worker_sse_fini(struct gw_sse *s);
/* Offset just past the blank line ("\n\n" or "\n\r\n") that ends the
 * first event in p, or 0 when p holds no whole event. */
size_t gw_worker_sse_event_end(const char *p, size_t len);
/* Feed bytes from the upstream; complete events are emitted at once. */
int gw_worker_sse_feed(struct gw_sse *s, const char *data, size_t len);
/* The upstream ended: emit whatever partial event is left. */
int gw_worker_sse_finish(struct gw_sse *s);

/*
 * Read OpenAI-style usage ("usage": {"prompt_tokens", "completion_tokens"})
 * from a JSON body.  Returns true when found.
 */
bool gw_worker_usage_parse(const char *json, size_t len, int64_t *prompt, int64_t *completion);

/* ------------------------------------------------------------ pipeline */

/* A worker's own state, created after fork and kept for its life. */
/*
 * A connection's upstream transfers: curl's multi handle (which keeps the
 * upstream connections between requests), and the sockets and the timer
 * curl asks to have watched (worker/upstream.c).
 */
#define GW_TRANSFER_WATCH_MAX 8
#define GW_H1_IDLE_MAX 4     /* plain-HTTP connections kept open per connection */
#define GW_H1_ORIGIN_MAX 128 /* longest "host:port" kept open */
#define GW_H1_READ_SIZE 16384
struct gw_h1_idle {
    int fd;
    int64_t since_ms;
    char origin[GW_H1_ORIGIN_MAX];
};

struct gw_transfer {
    CURLM *multi;
    curl_socket_t fd[GW_TRANSFER_WATCH_MAX];
    int what[GW_TRANSFER_WATCH_MAX]; /* CURL_POLL_IN, _OUT, _INOUT */
    size_t n;
    int64_t timer_at_ms; /* when curl wants its timeout handled; -1 none */
    /* The plain-HTTP upstreams' connections (worker/h1.c): the handle that
     * connects them, and those open between two requests. */
    CURL *connect;
    struct gw_h1_idle idle[GW_H1_IDLE_MAX];
    size_t nidle;
    char *rbuf; /* where answers are read, GW_H1_READ_SIZE bytes (as curl's own buffer) */
};

/*
 * What a worker process shares among the connections it serves at once:
 * each connection runs as a State Threads coroutine on the process's one
 * event loop (worker.c), with a struct gw_worker of its own.
 */
struct gw_worker_proc {
    const struct gw_worker_env *env;
    struct gw_shm_worker *me; /* own scoreboard entry */
    struct gw_gen_refs gens;  /* the generation slots its requests hold */
    struct gw_store *store;
    struct gw_cache *cache; /* the response cache, opened at its first use */
    uint64_t served;        /* requests read, all connections */
    unsigned id_prefix;     /* random, makes request ids unique across workers */
    int conns;              /* connections open */
    int busy;               /* requests in progress */
    int state;              /* enum gw_worker_state last published */
    struct gw_worker *all;  /* every connection context, open or free */
    struct gw_worker *free; /* contexts not serving a connection */
    int nfree;
    bool trim;  /* contexts were destroyed: give their heap back when quiet */
    void *room; /* st_cond_t: signalled when a connection ends */
};

/* The longest API key whose hash a connection remembers: aigw's own are
 * GW_KEY_SECRET_LEN - 1 bytes. */
#define GW_AUTH_MEMO_MAX 128

/* One connection and the request in hand on it. */
struct gw_worker {
    const struct gw_worker_env *env;
    struct gw_shm_worker *me;     /* the process's scoreboard entry */
    struct gw_worker_proc *proc;  /* what the process's connections share */
    const struct gw_gen *gen;     /* the generation of the request in hand */
    struct gw_http_limits limits; /* copied from the latest generation */
    struct gw_store *store;
    struct gw_transfer xfer; /* its multi handle keeps the upstream connections */
    CURL *curl;
    CURL *curl_passthru; /* the pass-through proxies' own handle (passthru.c) */
    struct gw_http_conn conn;
    struct gw_arena *arena; /* per request, reset after each */
    bool on_metrics;        /* this connection came in on the metrics listener */
    bool on_admin;          /* ... on an admin API listener */
    struct gw_buf scratch;  /* reused per request (metrics page) */
    /* The API key last presented on this connection and its keyed hash
     * (pipeline.c): a client sends the same key with every request, and
     * hashing it is most of what checking it costs.  Wiped when the
     * connection ends. */
    struct {
        size_t len; /* 0: none */
        char key[GW_AUTH_MEMO_MAX];
        unsigned char hash[GW_KEY_HASH_LEN];
    } auth_memo;
    int fd;       /* the connection's socket, -1 when none */
    int kind;     /* the listener it came in on (worker.c) */
    void *thread; /* st_thread_t serving it */
    struct gw_worker *next_all, *next_free;
    struct gw_worker **pprev_all; /* the next_all (or the list's head) that points here */
};

/*
 * Wait for events on fds like poll(2), timeout_ms < 0 for ever; other
 * connections of the worker run meanwhile.  Returns as poll(2) does; -1
 * with EINTR when the worker is stopping and wakes its connections.
 */
int gw_worker_poll(struct pollfd *fds, size_t nfds, long timeout_ms);
/*
 * Wait for events (POLLIN, POLLOUT) on one socket of this connection's own,
 * its client's or its upstream's, up to timeout_ms (< 0: for ever), letting
 * the worker's other connections run.  Returns the poll(2) revents (> 0),
 * 0 timed out, -1 with errno (EINTR as gw_worker_poll).  In a worker of
 * many connections, or of many requests in progress for an upstream's
 * socket, it is watched through the worker's park set (worker.c), where it
 * stays registered between waits: gw_worker_fd_forget before it is closed
 * (or before curl may close it).
 *
 * gw_worker_wait_client and gw_worker_wait_upstream wait for what happens
 * after the caller found the socket drained for the events it waits for:
 * a read or write that came back short or with EAGAIN (the park set is
 * edge-triggered for them).  They may return events that are no longer
 * true (a read then finds nothing).  gw_worker_wait_curl is for curl's
 * sockets, which it need not have drained: it reports what is ready now.
 */
int gw_worker_wait_client(int fd, short events, long timeout_ms);
int gw_worker_wait_upstream(int fd, short events, long timeout_ms);
int gw_worker_wait_curl(int fd, short events, long timeout_ms);
void gw_worker_fd_forget(int fd);
/* Read AIGW_PARK_FROM (aigwd(8)), once, in the master before it forks the
 * workers; a value that is not a number is warned about and ignored. */
void gw_worker_park_setup(void);
/* Sleep, letting the worker's other connections run. */
void gw_worker_sleep_us(long us);
/* Let the worker's other connections run (and those whose descriptors
 * became ready wake) before this one goes on. */
void gw_worker_yield(void);
/* Note an upstream call to target stat begun (+1) or ended (-1) in the
 * scoreboard, for the master to undo if the worker dies meanwhile. */
void gw_worker_calling(struct gw_worker *w, int32_t stat, int delta);

/*
 * Answer one parsed request: route, authenticate, authorize, call the
 * upstream, account.  Returns 0 when the connection may serve another
 * request, GW_ECLOSED when it must be closed.
 */
int gw_worker_pipeline_run(struct gw_worker *w, struct gw_request *req);

/*
 * The HTTP admin API (worker/admin.c): answer a request for /admin/v1/...
 * that came in on an admin.listen socket with key, by forwarding it to
 * the master's admin socket as the key's owner.  Returns 0 when the
 * connection may serve another request.
 */
int gw_worker_admin_serve(struct gw_worker *w, struct gw_request *req, const struct gw_key *key);

/*
 * Rate limits (worker/limit.c).  A hold is what one request took from the
 * shm buckets of its scopes (its key, its model), so that the token
 * estimate can be settled with the real usage after the response.
 */
struct gw_limit_hold {
    int nscopes;
    struct {
        char tname[GW_SHM_NAME_LEN]; /* "tk:ID" / "tm:NAME"; "" when no TPM limit */
        double tpm;
        double charged; /* tokens taken up front */
    } s[4];
};

struct gw_call;

/*
 * Check the RPM and TPM limits of the request's key, its owner, the
 * owner's tenant and model m before
 * the upstream call, taking one request and an estimate of its tokens
 * from each limited scope, and set req->limit_headers.  Returns 0 when
 * admitted; otherwise the request is answered with a 429 (nothing stays
 * taken), *refused is set and the result is the answer's.  call (NULL
 * for a pass-through request) gives the body's max_tokens, read only
 * when a token limit applies.
 */
int gw_worker_limit_admit(struct gw_worker *w, struct gw_request *req, const struct gw_key *key,
                          const struct gw_gen_model *m, struct gw_call *call,
                          struct gw_limit_hold *hold, bool *refused);
/* After the response: move the token buckets from the estimate to the
 * real usage (given back, or charged without refusing). */
void gw_worker_limit_settle(struct gw_worker *w, const struct gw_request *req,
                            const struct gw_limit_hold *hold);

/*
 * Quotas (worker/quota.c).  A hold is the quota counters of one request
 * and whether it reserved a call in each.
 */
#define GW_QUOTA_HOLD_MAX 16

struct gw_quota_hold {
    int n;
    bool counted; /* the tokens are in (gw_worker_quota_count) */
    struct {
        struct gw_shm_quota *counter;
        bool took_call;
    } s[GW_QUOTA_HOLD_MAX];
};

/*
 * Check every quota that applies to a request of key to model: answer
 * 429 insufficient_quota naming the quota when one is used up (*refused
 * set, the result is the answer's, nothing stays reserved), else reserve
 * a call in each call quota, set req->quota_headers (the least left) and
 * return 0.
 */
int gw_worker_quota_admit(struct gw_worker *w, struct gw_request *req, const struct gw_key *key,
                          const char *model, struct gw_quota_hold *hold, bool *refused);
/* Count a whole answer's tokens now, before its last byte goes out, so
 * that a client that has the answer sees them counted; settle then adds
 * them no more. */
void gw_worker_quota_count(struct gw_quota_hold *hold, int64_t tokens);
/* Give back the calls a hold reserved (the request was not sent). */
void gw_worker_quota_release(struct gw_worker *w, struct gw_quota_hold *hold);
/* After the response: count its tokens; a failed request's call is given
 * back. */
void gw_worker_quota_settle(struct gw_worker *w, const struct gw_request *req,
                            struct gw_quota_hold *hold);

/*
 * The pass-through proxies (worker/passthru.c): relay the request under
 * prefix ("/v1/mcp/") to the upstream of that kind named by the next path
 * segment, answering as the upstream does.
 */
int gw_worker_passthru(struct gw_worker *w, struct gw_request *req, const struct gw_key *key,
                       enum gw_passthru_kind kind, const char *prefix);

/* One JSON line for a finished request, where the generation says. */
void gw_worker_access_write(struct gw_worker *w, const struct gw_request *req, long ms);
/* SIGUSR1: open the access log file again by name (after logrotate). */
void gw_worker_access_reopen(void);
/* log.access_buffer: write the lines held back, now (the worker stops),
 * or once the oldest is log.access_flush old (called at least once a
 * second). */
void gw_worker_access_flush(void);
void gw_worker_access_tick(void);

/* Render the Prometheus page from the shm counters into b (reset first). */
int gw_worker_metrics_render(const struct gw_shm *shm, struct gw_buf *b);

/* ------------------------------------------------------------- routing */

/*
 * Choose a target of model m for the next attempt by strategy, among the
 * eligible ones not yet in tried (a bit per target index).  Returns the
 * target's index within the model, or -1 when none is eligible.  *probe
 * says the request goes through a breaker that is not closed (the one
 * probe it lets through).
 */
int gw_worker_route_pick(const struct gw_worker *w, const struct gw_gen *g,
                         const struct gw_gen_model *m, enum gw_route_strategy strategy,
                         const char *session, const uint64_t tried[4], bool *probe);
void gw_worker_route_tried_add(uint64_t tried[4], uint32_t i);

/*
 * Learn from an attempt: latency and throughput averages on success;
 * failures, Retry-After and the breaker on failure; either way, the
 * attempt counts in the target's error-rate window when m has an
 * error_rate.
 */
struct gw_call;
void gw_worker_route_result(const struct gw_worker *w, const struct gw_gen *g,
                            const struct gw_gen_model *m, const struct gw_gen_target *t, bool ok,
                            bool probe, const struct gw_call *call, int64_t duration_us);

/* ------------------------------------------------- upstream call */

struct gw_safety_req;

enum gw_endpoint {
    GW_EP_CHAT = 0,
    GW_EP_EMBEDDINGS,
    /* Media (worker/media.c). */
    GW_EP_IMAGES,         /* POST /v1/images/generations */
    GW_EP_SPEECH,         /* POST /v1/audio/speech: audio bytes relayed as they come */
    GW_EP_TRANSCRIPTIONS, /* POST /v1/audio/transcriptions: a multipart upload, spooled */
    GW_EP_TRANSLATIONS,   /* POST /v1/audio/translations: the same */
    GW_EP_VIDEOS,         /* POST /v1/videos: JSON or multipart */
    GW_EP_VIDEO_GET,      /* GET /v1/videos/{id}[/content]: to the target that made it */
    /* text APIs: /v1/completions, /v1/moderations, /v1/responses */
    GW_EP_COMPLETIONS,
    GW_EP_MODERATIONS,
    GW_EP_RESPONSES,
};

/* Why an attempt failed, kept until the pipeline retries or answers it. */
struct gw_call_failure {
    int status;       /* 502, 504, or the upstream's 5xx / 429 */
    const char *code; /* OpenAI-style error code */
    char message[512];
    const char *body; /* the upstream's own answer (arena), or NULL */
    size_t body_len;
    char ctype[128];
    int64_t retry_after_ms; /* from Retry-After, 0: none */
};

/*
 * One call of one target for one request: what the pipeline decided, what
 * the provider adapter built from it, and what came back.  Lives on the
 * pipeline's stack; strings in the request's arena.
 */
struct gw_call {
    struct gw_request *req;
    struct gw_http_conn *conn;
    enum gw_endpoint endpoint;
    const struct gw_gen_model *model;
    const struct gw_gen_target *target;
    enum gw_provider_type type;
    const char *provider_name;
    const char *base_url;
    const char *api_key; /* NULL: none; never log it */
    const char *target_model;
    struct gw_timeouts timeouts;     /* for this attempt (provider, model, deadline) */
    struct json_object *json;        /* the client's body, parsed; the adapter may edit it */
    const struct gw_body_scan *scan; /* the client's body checked by bytes, or NULL */
    bool stream;
    bool client_usage;            /* the client asked for stream_options.include_usage */
    const char *user;             /* the body's "user" (session affinity), or NULL */
    struct gw_safety_req *safety; /* the answer is inspected (worker/safety.c), or NULL */
    struct gw_answer *answer;     /* sees the answer as it goes out (worker/answer.c), or NULL */
    /* Called once with a whole, successful answer, right before its last
     * byte goes to the client (the cache stores it there, so that a
     * client that got the answer finds it stored), or NULL. */
    void (*on_complete)(struct gw_call *call, void *ctx);
    void *on_complete_ctx;
    const struct gw_gen *gen;               /* the generation of model and target */
    const struct gw_gen_provider *provider; /* the target's provider, for its type's keys */
    int64_t created;                        /* unix seconds, for translated answers */

    /* Media endpoints (worker/media.c). */
    const char *upstream_path; /* below base_url instead of the endpoint's (GET /videos/ID) */
    bool method_get;           /* a GET without body */
    const char *content_type;  /* of the body sent; NULL: application/json */
    struct gw_upload *upload;  /* the body is the client's upload, spooled (not body) */
    bool raw;                  /* a 2xx answer is relayed as it comes, with its content type */
    int pin_target; /* 1 + the index of the only target to call (no fallbacks); 0: none */
    /* A whole 2xx answer before it goes out: may read it (usage) and
     * replace it (*body in the arena); nonzero: the answer is unusable. */
    int (*answer_hook)(struct gw_call *call, const char **body, size_t *len);
    void *hook_ctx;

    /* Built by the adapter. */
    char *url;
    const char *body; /* valid while json lives */
    size_t body_len;
    /* The request's header lines (gw_worker_call_header), in the arena:
     * curl reads the list (CURLOPT_HTTPHEADER) and h1.c writes it out. */
    struct curl_slist *headers;
    struct curl_slist **headers_end;

    /* Results, for the response and the access log. */
    int status;
    bool have_usage;
    int64_t prompt_tokens;
    int64_t completion_tokens;
    int64_t first_byte_us;         /* since req->start_us; 0 if none came */
    int64_t attempt_start_us;      /* monotonic start of this attempt */
    int64_t attempt_first_byte_us; /* since the attempt's start; 0 if none came */
    struct gw_call_failure fail;
};

/*
 * A provider stream being translated into OpenAI's chat.completion.chunk
 * events (worker/providers/stream.c).  The adapter feeds it the
 * provider's bytes; the OpenAI events it makes go to emit (the SSE
 * relay, which reads and, unless asked for, drops the usage chunk).
 */
#define GW_XSTREAM_BLOCKS 128 /* content blocks of one answer mapped to tool calls */

struct gw_xstream {
    struct gw_call *call;
    gw_sse_emit_fn emit;
    void *ctx;
    struct gw_buf in;  /* provider bytes not framed yet */
    struct gw_buf out; /* OpenAI events made, not emitted yet */
    const char *id;    /* of the chunks (arena) */
    const char *model;
    bool started;  /* the role chunk is out */
    bool finished; /* the finish_reason chunk is out */
    bool ended;    /* [DONE] or an error event is out: ignore the rest */
    bool saw_tool; /* a tool call was made (gemini: finish_reason tool_calls) */
    const char *finish_reason;
    int ntools;                            /* tool calls begun */
    int16_t block_tool[GW_XSTREAM_BLOCKS]; /* provider block index -> tool index, -1: none */
    bool have_usage;
    int64_t prompt_tokens;
    int64_t completion_tokens;
    int64_t cached_tokens;
};

/*
 * A provider adapter turns the canonical (OpenAI) request into the
 * provider's and, where the wire formats differ, the answer back: a whole
 * answer, an error, a stream.  One per wire format in worker/providers/;
 * a NULL member means the provider's answer is OpenAI's already.
 */
struct gw_provider_adapter {
    const char *type;
    /* Fill call->url, call->body and provider headers into call->headers;
     * GW_ENOENT when the provider does not serve call->endpoint. */
    int (*request)(struct gw_call *call);
    /* A 2xx answer into a chat.completion (*out in the request's arena). */
    int (*response)(struct gw_call *call, const char *body, size_t len, const char **out,
                    size_t *out_len);
    /* An error answer (4xx, 5xx) into OpenAI's error shape, with the
     * status the client should see in *status. */
    int (*error)(struct gw_call *call, int *status, const char *body, size_t len, const char **out,
                 size_t *out_len);
    /* A 2xx stream: bytes as they come, then the end of the transfer.
     * finish returns GW_EPROTO when the stream stopped before its end. */
    int (*stream_feed)(struct gw_xstream *xs, const char *data, size_t len);
    int (*stream_finish)(struct gw_xstream *xs);
};

const struct gw_provider_adapter *gw_worker_provider_adapter(enum gw_provider_type type);
extern const struct gw_provider_adapter gw_worker_provider_openai;
extern const struct gw_provider_adapter gw_worker_provider_azure;
extern const struct gw_provider_adapter gw_worker_provider_anthropic;
extern const struct gw_provider_adapter gw_worker_provider_gemini;
extern const struct gw_provider_adapter gw_worker_provider_bedrock;

void gw_worker_xstream_init(struct gw_xstream *xs, struct gw_call *call, gw_sse_emit_fn emit,
                            void *ctx);
void gw_worker_xstream_fini(struct gw_xstream *xs);

/*
 * AWS Signature Version 4 (worker/providers/sigv4.c) of one request:
 * the value of its Authorization header into auth (at least 256 + the
 * length of access_key and scope bytes; GW_SIGV4_AUTH_MAX is plenty).
 * headers are "name:value" lines with lowercase names, sorted by name,
 * values trimmed: the headers signed, host and x-amz-date among them.
 * path is the request's path as sent (already percent-encoded); query
 * without '?', its parameters in any order.  amz_date is
 * "YYYYMMDDTHHMMSSZ".  Returns 0 or GW_EINVAL.
 */
#define GW_SIGV4_AUTH_MAX 1024
struct gw_sigv4 {
    const char *access_key;
    const char *secret_key;
    const char *region;
    const char *service;
    const char *amz_date;
};
int gw_worker_sigv4_sign(const struct gw_sigv4 *k, const char *method, const char *path,
                         const char *query, const char *const *headers, size_t nheaders,
                         const char *payload, size_t payload_len, char *auth, size_t auth_size);
/* The canonical request and the signing key, for the tests. */
char *gw_worker_sigv4_canonical(struct gw_arena *a, const char *method, const char *path,
                                const char *query, const char *const *headers, size_t nheaders,
                                const char *payload_hash);
void gw_worker_sigv4_key(const char *secret, const char *date, const char *region,
                         const char *service, unsigned char key[32]);

/*
 * One message of AWS's binary event stream (application/vnd.amazon.
 * eventstream): the string headers that matter and the payload, pointing
 * into the buffer decoded.
 */
struct gw_evstream_msg {
    const char *event_type; /* :event-type, or NULL */
    size_t event_type_len;
    const char *message_type; /* :message-type: event, exception, error */
    size_t message_type_len;
    const char *exception_type; /* :exception-type or :error-code */
    size_t exception_type_len;
    const char *payload;
    size_t payload_len;
};

/*
 * Decode the message at the start of p.  Returns its length when whole
 * and valid, 0 when more bytes are needed, GW_EPROTO when the framing or
 * a CRC is wrong.
 */
long gw_worker_evstream_decode(const char *p, size_t len, struct gw_evstream_msg *m);
/* Encode one message with string headers (names[i]: values[i]) into b. */
int gw_worker_evstream_encode(struct gw_buf *b, const char *const *names, const char *const *values,
                              size_t nheaders, const char *payload, size_t payload_len);

/*
 * Call the upstream, with the connection's curl handle or, to a plain-HTTP
 * upstream, over a connection of xfer's own (worker/h1.c), connections
 * kept and reused either way, and answer the client: the non-streaming body as is, or the
 * stream relayed event by event; the upstream's own 4xx (but 429) is
 * passed through.  Returns 0 when the client was answered, GW_ECLOSED
 * when the client connection cannot be used any more, or GW_EUPSTREAM
 * when the attempt failed (unreachable, timeout, 5xx, 429) before anything
 * reached the client: call->fail says why, and the caller may try another
 * target or answer with gw_worker_upstream_fail_answer.
 */
int gw_worker_upstream_call(struct gw_transfer *xfer, CURL *curl, struct gw_call *call,
                            size_t max_response_size);
int gw_worker_upstream_fail_answer(struct gw_call *call);

/*
 * Driving a transfer on the worker's multi handle, for the provider calls
 * and the pass-through proxies alike.  The multi handle reports the
 * sockets and the timer it needs (gw_worker_transfer_init sets the
 * callbacks, once per worker); gw_worker_transfer_run waits for them with
 * one poll(2) and hands curl exactly what became ready
 * (curl_multi_socket_action), so curl does not poll again before each
 * read: one wait, one read, one write per streamed event.  The transfer
 * is cut, *timed_out set and CURLE_OPERATION_TIMEDOUT returned when the
 * upstream stays silent past first_byte (before *got_bytes) or idle
 * (after) since *last_io_ms: the time of the upstream's last bytes, which
 * the callbacks of a transfer on curl move, and gw_worker_h1_run with each
 * read of its own.  The silence counts from later when an upload's last
 * read or the client's last take of a write that waited for it is later:
 * while the worker sends a body or waits for a slow client, the upstream
 * is not the one keeping it.
 */
struct gw_transfer_clock {
    int64_t *last_io_ms;
    const bool *got_bytes;
    const struct gw_timeouts *to;
    const _Atomic int64_t *upload_read_ms; /* an upload's last read, or NULL */
    const int64_t *client_took_ms;         /* gw_http_conn.took_ms, or NULL */
};

int gw_worker_transfer_init(struct gw_transfer *t);
void gw_worker_transfer_fini(struct gw_transfer *t);
CURLcode gw_worker_transfer_run(struct gw_transfer *t, CURL *curl,
                                const struct gw_transfer_clock *clock, bool *timed_out);
/*
 * The same for a CURLOPT_CONNECT_ONLY handle: on success, *fd is a
 * descriptor of its connected socket that the caller owns, and that
 * outlives the transfer (curl closes its own when the handle leaves the
 * multi handle).
 */
CURLcode gw_worker_transfer_connect(struct gw_transfer *t, CURL *curl,
                                    const struct gw_transfer_clock *clock, bool *timed_out,
                                    int *fd);
/*
 * How long a transfer may wait for its upstream now, in milliseconds,
 * given its clock and its deadline (deadline_ms < 0: none); 0 when its
 * time is up (*timed_out tells whether by first_byte or idle, rather
 * than by the deadline).  Capped at a second when the worker's stop does
 * not interrupt waits.
 */
long gw_worker_transfer_wait_ms(const struct gw_transfer_clock *clock, int64_t now,
                                int64_t deadline_ms, bool *timed_out);

/*
 * HTTP/1.1 to a plain-HTTP upstream, spoken by the worker (worker/h1.c):
 * the request written in one go, the answer read with llhttp and
 * handed to the callbacks as curl would (each header line, then the body
 * decoded from its chunks), *status set once the final status is in.
 * libcurl resolves and connects; the connection stays open in t for the
 * next request to the same origin while the upstream keeps it alive.
 * Returns a CURLcode, with errbuf (CURL_ERROR_SIZE) saying what failed,
 * as a transfer on curl's own would; *timed_out as for the transfers.
 */
struct gw_h1_request {
    const char *url; /* http://host[:port][/path][?query] */
    bool get;        /* GET without a body, else POST */
    const struct curl_slist *headers;
    const char *body;
    size_t body_len;
    size_t (*on_header)(char *line, size_t size, size_t n, void *ctx);
    size_t (*on_data)(char *data, size_t size, size_t n, void *ctx);
    void *ctx;
    long *status;
    struct gw_arena *arena; /* the request's */
};

bool gw_worker_h1_serves(const char *url);
CURLcode gw_worker_h1_run(struct gw_transfer *t, const struct gw_h1_request *r,
                          const struct gw_transfer_clock *clock, char *errbuf, bool *timed_out);
/* Close the connections kept open (gw_worker_transfer_fini does). */
void gw_worker_h1_close_idle(struct gw_transfer *t);
/*
 * A request body checked by bytes: gw_worker_body_scan returns 0 when
 * body is one valid JSON object (strict RFC 8259, nesting well inside
 * json-c's limit, no escaped top-level key), with where the top-level
 * members the pipeline reads sit (the last of a repeated key, as json-c
 * reads it); v NULL: absent.  Otherwise GW_EINVAL, and json-c decides
 * (its own leniencies, its error message).  No allocation, no tree: a
 * request that needs nothing more than these never builds one.
 */
struct gw_body_member {
    const char *v; /* the value's bytes in the body, quotes included */
    size_t len;
    bool escaped; /* a string holding a backslash escape */
};

struct gw_body_scan {
    struct gw_body_member model, messages, input, stream, stream_options, user;
    /* One of those members is named twice: this is its last value, as
     * json-c reads it, but a reader that keeps the first would not. */
    bool repeated;
    const char *body; /* what was scanned, and its length */
    size_t len;
    const char *close; /* the top-level object's closing brace */
};

int gw_worker_body_scan(const char *body, size_t len, struct gw_body_scan *out);

/*
 * The client's body as a json-c tree (call->json), parsed from req->body
 * at the first use: by a provider adapter that translates, a quirk, the
 * safety rules, the cache key, the token estimate of a rate limit.  The
 * tree belongs to the call (the pipeline puts it); never NULL.
 */
struct json_object *gw_worker_call_json(struct gw_call *call);

/*
 * Read the integer members named keys[0..nkeys) of the JSON object in
 * obj[0..len), top level only, by bytes (no parse, no allocation); vals[i]
 * is left as it was for a key that is absent.  Returns 0, or GW_EINVAL
 * when obj is not an object.  A member named twice: the last one wins, as
 * in json-c.
 */
int gw_worker_body_int_members(const char *obj, size_t len, const char *const *keys, size_t nkeys,
                               int64_t *vals);

/*
 * The request body with the top-level "model" value replaced by model
 * (and, with add_usage, stream_options.include_usage added), made by
 * copying the bytes around it rather than re-serializing a parsed tree.
 * scan, when it is gw_worker_body_scan's of these very bytes, saves
 * scanning them again; otherwise (NULL, or the body was replaced since)
 * they are scanned.  *out is in a.  Returns 0, or GW_EINVAL when the body
 * needs the general path: the scan does not take it (not strict JSON, an
 * escaped key), "model" is no string, a member the gateway reads is named
 * twice, or there is a stream_options object to amend.
 */
int gw_worker_body_rewrite(struct gw_arena *a, const char *body, size_t len,
                           const struct gw_body_scan *scan, const char *model, bool add_usage,
                           const char **out, size_t *out_len);

/*
 * BYOK (worker/byok.c): when the request's tenant has its own credential
 * for provider p, put it (and its base URL, if it has one) into call
 * instead of the provider's and set req->byok.  A credential that cannot
 * be used (it does not open, or is of another provider type) sends none:
 * the platform's is never used for a tenant that has its own.
 */
void gw_worker_byok_apply(struct gw_worker *w, struct gw_call *call,
                          const struct gw_gen_provider *p);

/* -------------------------------------------------------------- media */

/*
 * multipart/form-data read as it streams (worker/multipart.c).  Each part
 * is reported when it ends: its field name, whether it is a file, the
 * offsets of its value in the body and the first bytes of the value.
 */
#define GW_MULTIPART_VALUE_MAX 256

struct gw_multipart_part {
    char name[64];       /* the form field's name (cut to fit) */
    bool file;           /* it has a filename */
    uint64_t start, end; /* the value is body[start..end) */
    const char *value;   /* its first bytes (valid during the call) */
    size_t value_len;    /* min(end - start, GW_MULTIPART_VALUE_MAX) */
};

typedef void (*gw_multipart_part_fn)(void *ctx, const struct gw_multipart_part *p);

struct gw_multipart {
    char delim[80]; /* "\r\n--" boundary */
    size_t dlen;
    uint8_t fail[80]; /* KMP failure function of delim */
    size_t match;     /* bytes of delim matched so far */
    int state;
    bool closed;  /* the closing delimiter was seen */
    uint64_t pos; /* body bytes fed */
    char line[1024];
    size_t line_len;
    struct gw_multipart_part part;
    char value[GW_MULTIPART_VALUE_MAX + 80];
    size_t vlen;
    size_t nparts;
    gw_multipart_part_fn fn;
    void *ctx;
};

/* The boundary of a multipart/form-data content type into out; GW_EINVAL
 * when the type is another or has no valid boundary. */
int gw_worker_multipart_boundary(const char *ctype, char *out, size_t size);
/* Start reading a body of content type ctype; fn gets each part. */
int gw_worker_multipart_init(struct gw_multipart *mp, const char *ctype, gw_multipart_part_fn fn,
                             void *ctx);
/* Feed the next len bytes; GW_EPROTO when the body is malformed. */
int gw_worker_multipart_feed(struct gw_multipart *mp, const char *data, size_t len);
/* Whether the closing delimiter came: the body is complete. */
bool gw_worker_multipart_done(const struct gw_multipart *mp);

/*
 * An upload spooled to an unlinked file (worker/media.c) and sent to each
 * attempt from there, its model field's value replaced by the target's
 * model name on the way (curl's read callback).
 */
struct gw_upload {
    int fd;
    uint64_t size;                   /* bytes spooled */
    uint64_t model_start, model_end; /* the model value; equal: none */
    const char *model;               /* what replaces it */
    uint64_t pos;                    /* of the body sent (rewritten) */
    _Atomic int64_t last_read_ms;    /* curl last took bytes (upstream.c timeouts) */
};

/* Whether the request's body is read as a stream (gw_http_conn.stream_body). */
bool gw_worker_media_body_streamed(const struct gw_request *req);
/* POST /v1/audio/transcriptions, /translations, /v1/videos: a multipart
 * upload spooled and routed by its model field, or a JSON body. */
int gw_worker_media_upload(struct gw_worker *w, struct gw_request *req, const struct gw_key *key,
                           enum gw_endpoint ep);
/* GET /v1/videos/{id}[/content]: to the target that made the video. */
int gw_worker_media_video_get(struct gw_worker *w, struct gw_request *req,
                              const struct gw_key *key);
/* Checks and settings of a JSON media request before its attempts
 * (required fields, raw relay, usage units); nonzero when it answered
 * (-1: answered, keep the connection). */
int gw_worker_media_prepare(struct gw_worker *w, struct gw_request *req, struct gw_call *call);
/* Whether ep is a media endpoint (no response cache). */
bool gw_worker_media_endpoint(enum gw_endpoint ep);
/* The usage capability of a request to endpoint ep. */
uint8_t gw_worker_media_capability(enum gw_endpoint ep);
/* Rewind an upload for a new attempt to a target whose model is model;
 * the size of the body it will send. */
uint64_t gw_worker_media_upload_rewind(struct gw_upload *u, const char *model);
/* curl's read callback over an upload. */
size_t gw_worker_media_upload_read(char *buf, size_t size, size_t n, void *ctx);

/* The pipeline's steps that media.c reuses (worker/pipeline.c): a JSON
 * body's whole path from its parse on, and the attempts over a model's
 * targets (call->pin_target honoured). */
int gw_worker_pipeline_proxy(struct gw_worker *w, struct gw_request *req, const struct gw_key *key,
                             enum gw_endpoint ep);
int gw_worker_pipeline_attempts(struct gw_worker *w, struct gw_request *req,
                                const struct gw_key *key, struct gw_call *call,
                                const struct gw_gen_model *first);

/* Set the options of the worker's easy handle that never change. */
void gw_worker_upstream_init(CURL *curl);

/* ------------------------------------------- answers, cache and capture */

/*
 * The answer as the client got it (worker/answer.c), kept for the response
 * cache and for capture: a non-streamed body as it was sent, or a stream
 * read event by event and put back together as one chat.completion
 * object (content, tool calls, finish reasons, usage).  Lives in the
 * request's arena; the upstream call feeds it (call->answer).
 */
struct gw_answer;

struct gw_answer *gw_worker_answer_create(struct gw_arena *a);
/* A successful non-streamed answer, whole. */
void gw_worker_answer_body(struct gw_answer *an, const char *body, size_t len);
/* Bytes of a stream as they were relayed to the client. */
void gw_worker_answer_feed(struct gw_answer *an, const char *data, size_t len);
/*
 * The answer as one JSON text (in the arena), or NULL when none came.
 * *complete says whether it is whole: a body, or a stream that ended with
 * [DONE], no error, and a finish reason for every choice.  usage (when
 * have_usage) fills in a stream's usage when the client did not see it.
 */
const char *gw_worker_answer_text(struct gw_answer *an, bool have_usage, int64_t prompt,
                                  int64_t completion, size_t *len, bool *complete);
/*
 * Turn a stored chat.completion object into the events of a stream
 * (OpenAI's chunks: the role, the content in pieces, tool calls, the
 * finish reason, a usage chunk when include_usage, then [DONE]) in out.
 * GW_EINVAL when body is not such an object.
 */
int gw_worker_answer_replay(const char *body, size_t len, bool include_usage, struct gw_buf *out);
/* Append s (len bytes) to b as a JSON string. */
int gw_worker_json_str(struct gw_buf *b, const char *s, size_t len);

/*
 * json-c's array length and items for a value of any type: 0 and NULL
 * when v is no array (or NULL).  json-c asserts on anything but an array,
 * and what clients and providers send is whatever they like: the worker
 * reads arrays only through these.
 */
static inline size_t
gw_worker_json_len(struct json_object *v)
{
    return json_object_is_type(v, json_type_array) ? json_object_array_length(v) : 0;
}

static inline struct json_object *
gw_worker_json_at(struct json_object *v, size_t i)
{
    return i < gw_worker_json_len(v) ? json_object_array_get_idx(v, i) : NULL;
}

/*
 * The response cache step (worker/cache.c), after limits and quotas,
 * before the upstream: lookup answers a hit (returns true, *rc the
 * answer's result) or notes what store needs after the upstream answered.
 */
struct gw_cache_step {
    bool applies; /* the model caches and the request is cacheable */
    bool store;   /* store the answer when it is complete */
    unsigned char hash[GW_CACHE_HASH_LEN];
};

bool gw_worker_cache_lookup(struct gw_worker *w, struct gw_request *req, struct gw_call *call,
                            struct gw_cache_step *cs, int *rc);
void gw_worker_cache_store(struct gw_worker *w, struct gw_request *req, const struct gw_call *call,
                           const struct gw_cache_step *cs, int rc);
/*
 * The cache key of a request body: SHA-256 of its canonical form (object
 * keys sorted, numbers in one notation) with endpoint, leaving out what
 * does not change the answer: stream, stream_options and user.
 */
void gw_worker_cache_key(struct json_object *body, enum gw_endpoint ep,
                         unsigned char out[GW_CACHE_HASH_LEN]);
/* Whether the request asks for a repeatable answer: temperature 0 or a seed. */
bool gw_worker_cache_deterministic(struct json_object *body);

/*
 * Request capture (worker/capture.c).  begin decides, once the model and
 * key are known, whether the request is captured (and makes the answer
 * collector); write puts its record out from account(); reopen after
 * SIGUSR1.
 */
void gw_worker_capture_begin(struct gw_worker *w, struct gw_request *req, const struct gw_key *key,
                             struct gw_call *call);
void gw_worker_capture_write(struct gw_worker *w, const struct gw_request *req, long ms);
void gw_worker_capture_reopen(void);

#endif
