/*
 * shm.h - what every aigw process shares: error codes, logging, memory
 * arenas and buffers, the running configuration's types, the LMDB state
 * store, API key hashing and the admin protocol framing.
 *
 * The shared-memory segment (segment.c, ring.c, bucket.c, gen.c) is the
 * control plane: routing generations, the worker scoreboard, per-upstream
 * state, token buckets, counters and the usage ring.
 */
#ifndef GW_SHM_H
#define GW_SHM_H

#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define GW_VERSION "0.1.0"
#define GW_DEFAULT_CONFIG "/etc/aigw/aigw.yaml"
#define GW_DEFAULT_SOCKET "/run/aigw/aigw.sock"

/* ------------------------------------------------------------------ errors */

/*
 * Every function that can fail returns 0 or one of these (negative) codes;
 * gw_strerror() names them.  Pointer-returning functions return NULL.
 */
enum gw_err {
    GW_OK = 0,
    GW_ENOMEM = -1,     /* out of memory */
    GW_EIO = -2,        /* system call failed; errno was logged */
    GW_EINVAL = -3,     /* invalid argument or input */
    GW_ENOENT = -4,     /* no such object */
    GW_EEXIST = -5,     /* object exists */
    GW_ETIMEDOUT = -6,  /* deadline passed */
    GW_ETOOBIG = -7,    /* input over a configured limit */
    GW_EPROTO = -8,     /* peer broke the protocol */
    GW_EPERM = -9,      /* caller may not do this */
    GW_ECLOSED = -10,   /* peer closed the connection */
    GW_ECONFIG = -11,   /* configuration invalid */
    GW_ESTORE = -12,    /* LMDB failure */
    GW_EUPSTREAM = -13, /* upstream attempt failed; nothing sent to the client yet */
};

const char *gw_strerror(int err);

/* Exit status of a process that must not be restarted (bad config, etc). */
#define GW_EXIT_FATAL 2

/* ----------------------------------------------------------------- logging */

enum gw_log_level {
    GW_LOG_ERROR = 0,
    GW_LOG_WARN = 1,
    GW_LOG_INFO = 2,
    GW_LOG_DEBUG = 3,
};

extern int gw_log_level;

/*
 * Name the calling process in every line it logs ("master", "worker[3]").
 * The string is copied.
 */
void gw_log_init(const char *who);

/*
 * gw_log() checks the level before any formatting happens, so a disabled
 * debug line costs one comparison.  Each line is written to stderr with a
 * single write(2), so lines of concurrent processes never interleave.
 */
#define gw_log(level, ...)                                                                         \
    do {                                                                                           \
        if ((level) <= gw_log_level)                                                               \
            gw_log_write((level), __VA_ARGS__);                                                    \
    } while (0)

void gw_log_write(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Async-signal-safe: writes msg as is (no prefix, no formatting). */
void gw_log_raw(const char *msg);

/* Log at error level and exit(GW_EXIT_FATAL). */
void gw_fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/*
 * Send the error log to path (appending; created 0640) instead of
 * stderr, or reopen it after logrotate moved it: the file becomes fd 2,
 * so whatever writes to stderr lands there too.  NULL keeps stderr.
 */
int gw_log_open(const char *path);

/* Parse "error", "warn", "info", "debug"; returns the level or -1. */
int gw_log_level_parse(const char *name);

/* ------------------------------------------------------------------ memory */

/*
 * An arena hands out memory that is released all at once: per request
 * (gw_arena_reset after each one, so a long-lived worker cannot leak) or per
 * configuration generation (gw_arena_destroy with the config).
 */
struct gw_arena;

struct gw_arena *gw_arena_create(size_t chunk_size);
void gw_arena_destroy(struct gw_arena *a);
/* Keeps the first chunk, frees the others. */
void gw_arena_reset(struct gw_arena *a);
/* Never NULL for a live arena: allocation failure is fatal (exits). */
void *gw_arena_alloc(struct gw_arena *a, size_t size);
void *gw_arena_zalloc(struct gw_arena *a, size_t size);
char *gw_arena_strdup(struct gw_arena *a, const char *s);
char *gw_arena_strndup(struct gw_arena *a, const char *s, size_t n);
char *gw_arena_printf(struct gw_arena *a, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* A growable byte buffer on the heap; the owner calls gw_buf_free. */
struct gw_buf {
    char *data;
    size_t len;
    size_t cap;
};

int gw_buf_reserve(struct gw_buf *b, size_t extra);
int gw_buf_append(struct gw_buf *b, const void *data, size_t len);
int gw_buf_printf(struct gw_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Drops the first n bytes. */
void gw_buf_consume(struct gw_buf *b, size_t n);
void gw_buf_free(struct gw_buf *b);

/* ------------------------------------------------------------ time, misc */

/* Monotonic clock in milliseconds / microseconds. */
int64_t gw_now_ms(void);
int64_t gw_now_us(void);

/* Write all of buf to a blocking fd, retrying short writes and EINTR. */
int gw_write_all(int fd, const void *buf, size_t len);

/* Fill buf with cryptographically random bytes (getrandom). */
int gw_random_bytes(void *buf, size_t len);

/* Lowercase hex of len bytes into out (2*len+1 bytes). */
void gw_hex_encode(const unsigned char *in, size_t len, char *out);

/*
 * Process titles as ps shows them.  gw_proctitle_init takes over the argv
 * area (copying the environment away) and must run before anything reads
 * argv[1..] again; gw_proctitle_set is then cheap (no system call).
 */
void gw_proctitle_init(int argc, char **argv);
void gw_proctitle_set(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* mkdir -p with mode for created components. */
int gw_mkdir_p(const char *path, mode_t mode);

/* ------------------------------------------------------- configuration */

/*
 * The running configuration: one object, built whole by the master
 * (master/config.c), validated, then used.  Every string and array lives in
 * cfg->arena, so gw_config_free releases all of it.  Durations are in
 * milliseconds, sizes in bytes.
 */
enum gw_provider_type {
    GW_PROVIDER_OPENAI = 0,
    GW_PROVIDER_AZURE,
    GW_PROVIDER_ANTHROPIC,
    GW_PROVIDER_GEMINI,
    GW_PROVIDER_BEDROCK,
};

/* What an openai-type server does differently (from its preset, or the
 * provider's own keys). */
#define GW_QUIRK_NO_STREAM_USAGE 0x1 /* refuses stream_options: do not ask for usage */
#define GW_QUIRK_MAX_TOKENS 0x2      /* knows max_tokens, not max_completion_tokens */

struct gw_timeouts {
    long connect_ms;    /* TCP (+TLS) connect to the upstream */
    long first_byte_ms; /* request sent -> first response byte */
    long idle_ms;       /* longest silence while receiving */
    long total_ms;      /* whole upstream exchange */
};

struct gw_provider {
    char *name;
    enum gw_provider_type type;
    char *base_url;     /* without a trailing slash */
    char *api_key_env;  /* name of the environment variable, or NULL */
    char *api_key_file; /* path of a file holding the key, or NULL */
    char *api_key;      /* the resolved secret, or NULL: never log it */
    /* Active health check from the master; health_interval_ms 0: none. */
    long health_interval_ms;
    long health_timeout_ms;
    char *health_path; /* appended to base_url, e.g. "/models" */
    /* Timeouts for this provider; a field 0 means "the model's". */
    struct gw_timeouts timeouts;
    char *preset;        /* openai: the preset that filled in defaults, or NULL */
    unsigned quirks;     /* GW_QUIRK_* */
    char *api_version;   /* azure: api-version; anthropic: anthropic-version */
    char *region;        /* bedrock: the AWS region signed for */
    unsigned max_tokens; /* anthropic, bedrock: when the request names none; 0: default */
};

struct gw_target {
    size_t provider;     /* index into cfg->providers */
    char *model;         /* the model name the provider expects */
    unsigned weight;     /* for weighted and sticky routing, >= 1 */
    double price_input;  /* per million input tokens, 0: unknown */
    double price_output; /* per million output tokens */
    char *region;        /* or NULL */
    char **tags;
    size_t ntags;
    char *deployment;  /* azure: the deployment called (default: model) */
    char *api_version; /* azure: this target's api-version, or NULL: the provider's */
};

enum gw_route_strategy {
    GW_ROUTE_WEIGHTED = 0,
    GW_ROUTE_STICKY,
    GW_ROUTE_LEAST_BUSY,
    GW_ROUTE_LATENCY,
    GW_ROUTE_PRICE,
    GW_ROUTE_THROUGHPUT,
    GW_ROUTE_NSTRATEGIES,
};

/* "weighted", "sticky", "least_busy", "latency", "price", "throughput" */
extern const char *const gw_route_strategy_names[GW_ROUTE_NSTRATEGIES];

struct gw_routing {
    enum gw_route_strategy strategy;
    unsigned retries;          /* further attempts after the first */
    long deadline_ms;          /* for all attempts together; 0: none */
    unsigned breaker_failures; /* consecutive failures that open the breaker; 0: not by count */
    long breaker_cooldown_ms;  /* open this long, then one probe (half-open) */
    /* The failed share of the attempts in one window that opens the
     * breaker, once there were min_requests of them; 0: not by rate.  No
     * breaker at all when both this and breaker_failures are 0. */
    double breaker_error_rate;
    long breaker_window_ms;
    unsigned breaker_min_requests;
    char *session_header; /* sticky: header naming the session ["x-session-id"] */
};

/*
 * Rate limits of one scope (a key, a model): requests and tokens per
 * minute; 0 means unlimited.  An override stored in LMDB may leave a
 * field GW_LIMIT_UNSET, which then takes the configured default.
 */
#define GW_LIMIT_UNSET UINT64_MAX

struct gw_limits {
    uint64_t rpm;
    uint64_t tpm;
};

struct gw_model {
    char *name; /* the name clients send */
    struct gw_target *targets;
    size_t ntargets;
    struct gw_timeouts timeouts;
    struct gw_routing routing;
    char **fallbacks; /* other models to try, in order, when every target failed */
    size_t nfallbacks;
    struct gw_limits limits; /* the whole model, all keys together */
};

struct gw_http_limits {
    size_t max_header_size;    /* request line + headers; over it: 431 */
    size_t max_body_size;      /* decoded body; over it: 413 */
    long keepalive_timeout_ms; /* idle between requests; then close */
    long read_timeout_ms;      /* silence inside a request; then 408 */
    long write_timeout_ms;     /* a client that stops reading; then close */
};

struct gw_config {
    struct gw_arena *arena;
    char *path;
    char **listen; /* "host:port" strings */
    size_t nlisten;
    char *state_dir;
    char *admin_socket;
    unsigned admin_mode; /* permission bits of the admin socket */
    char *user;          /* drop to this user after binding (when root), or NULL */
    char *group;         /* and this group (default: the user's), or NULL */

    /* The pool: a fixed size (min_spare == 0), or Apache-prefork style
     * between min_spare and max_spare idle workers, at most workers_max. */
    int workers; /* fixed size, or how many to start with */
    int workers_min_spare;
    int workers_max_spare;
    int workers_max;
    uint64_t max_requests; /* recycle a worker after this many; 0: never */
    long shutdown_timeout_ms;

    int log_level;
    char *log_file; /* error log; NULL: stderr */
    bool access_log;
    char *access_file;    /* JSON lines; NULL: stderr */
    bool access_journal;  /* access log to journald instead */
    char *metrics_listen; /* "host:port" of the /metrics listener, or NULL */

    struct gw_http_limits http;
    struct gw_timeouts timeouts; /* defaults for models */
    size_t max_response_size;    /* buffered (non-streaming) upstream body */
    struct gw_provider *providers;
    size_t nproviders;
    struct gw_model *models;
    size_t nmodels;
    struct gw_limits key_limits;   /* limits: key: the default of every key */
    struct gw_limits model_limits; /* limits: model: the default of every model */
};

/* Loading and validation live in the master (gw_master_config_load); the
 * lookups below are what workers need. */
const struct gw_model *gw_config_model_find(const struct gw_config *cfg, const char *name);
/* Release a configuration and everything in its arena; NULL is fine. */
void gw_config_free(struct gw_config *cfg);

/* ------------------------------------------------------------- API keys */

#define GW_SECRET_LEN 32
#define GW_KEY_HASH_LEN 32
#define GW_KEY_PREFIX "sk-aigw-"
#define GW_KEY_ID_LEN 16     /* "key_" + 12 hex */
#define GW_KEY_SECRET_LEN 52 /* "sk-aigw-" + 43 base64url + NUL */

/*
 * Load the server secret from DIR/secret, creating it (mode 0600, random)
 * when create is true and it does not exist.  The secret keys the HMAC that
 * API keys are stored under.
 */
int gw_secret_load(const char *state_dir, bool create, unsigned char secret[GW_SECRET_LEN]);

/* HMAC-SHA-256 of the presented key under the server secret. */
void gw_key_hash(const unsigned char secret[GW_SECRET_LEN], const char *key, size_t len,
                 unsigned char out[GW_KEY_HASH_LEN]);

/* Make a new random key id ("key_xxxxxxxxxxxx") and secret ("sk-aigw-..."). */
int gw_key_generate(char id[GW_KEY_ID_LEN + 1], char secret[GW_KEY_SECRET_LEN]);

/* ----------------------------------------------------------- LMDB store */

/*
 * The state store: LMDB under state_dir.  Each process opens its own
 * handle after fork.  The master writes; workers read.  Records handed out
 * are copies in the caller's arena, valid after the transaction ended.
 */
struct gw_store;

struct gw_key {
    char *id;
    char *name;
    char *prefix;  /* first characters of the secret, to recognise it */
    char **models; /* allowed model names; nmodels == 0 means all */
    size_t nmodels;
    bool disabled;
    int64_t created;   /* unix seconds */
    char *route;       /* routing strategy bound to the key, or "" */
    bool route_header; /* may choose a strategy with x-aigw-route */
    char *owner;       /* user owning the key, or "" (no owner: the key's list alone) */
    char *tenant;      /* the owner's tenant, or "" */
    /* Filled from the owner's grants when the key is read (not stored):
     * the models the owner may call; owner_all: every model. */
    char **owner_models;
    size_t nowner_models;
    bool owner_all;
};

int gw_store_open(const char *state_dir, struct gw_store **out);
void gw_store_close(struct gw_store *st);
/* Clear reader slots left by dead processes; returns how many. */
int gw_store_reader_check(struct gw_store *st);

int gw_store_key_add(struct gw_store *st, const struct gw_key *key,
                     const unsigned char hash[GW_KEY_HASH_LEN]);
/* GW_ENOENT when no key has this hash. */
int gw_store_key_lookup(struct gw_store *st, const unsigned char hash[GW_KEY_HASH_LEN],
                        struct gw_arena *a, struct gw_key **out);
int gw_store_key_get(struct gw_store *st, const char *id, struct gw_arena *a, struct gw_key **out);
int gw_store_key_list(struct gw_store *st, struct gw_arena *a, struct gw_key ***out, size_t *n);
int gw_store_key_set_disabled(struct gw_store *st, const char *id, bool disabled);
int gw_store_key_del(struct gw_store *st, const char *id);
/* Give key id a new secret hash and prefix: the old hash stops matching
 * in the same transaction.  GW_ENOENT when there is no such key. */
int gw_store_key_rotate(struct gw_store *st, const char *id,
                        const unsigned char hash[GW_KEY_HASH_LEN], const char *prefix);

/*
 * Account records (tenants, users by name; audit entries by time), each
 * a JSON object kept as text.  put with create_only fails with GW_EEXIST
 * when the name is taken.  get hands out the text in a; GW_ENOENT when
 * absent.  list hands out up to limit records (0: all) in a, in key order
 * or newest (last) first.  audit_add stores one entry under the current
 * time.
 */
enum gw_store_db { GW_DB_TENANTS, GW_DB_USERS, GW_DB_AUDIT };

int gw_store_rec_put(struct gw_store *st, enum gw_store_db db, const char *name, const char *json,
                     bool create_only);
int gw_store_rec_get(struct gw_store *st, enum gw_store_db db, const char *name, struct gw_arena *a,
                     char **json);
int gw_store_rec_del(struct gw_store *st, enum gw_store_db db, const char *name);
int gw_store_rec_list(struct gw_store *st, enum gw_store_db db, bool newest_first, size_t limit,
                      struct gw_arena *a, char ***json, size_t *n);
int gw_store_audit_add(struct gw_store *st, const char *json);

/* Roles a user may be granted, and whether a role lets its holder call
 * the model it is granted on (gateway-admin: every model). */
extern const char *const gw_role_names[];
bool gw_role_calls(const char *role);

/*
 * Usage records.  gw_store_usage_add stores n records and adds them to
 * the totals in one transaction.  When incarnation is not 0 the records
 * come from the ring of that segment incarnation and head (the ring
 * position after the last of them) is stored in the same transaction, so
 * a master that dies after the commit does not store them twice.
 */
struct gw_usage;

struct gw_usage_totals {
    uint64_t requests;
    uint64_t input_tokens;
    uint64_t output_tokens;
};

int gw_store_usage_add(struct gw_store *st, const struct gw_usage *recs, size_t n,
                       uint64_t incarnation, uint64_t head);
/* The ring head stored for this incarnation; GW_ENOENT when none is. */
int gw_store_usage_head(struct gw_store *st, uint64_t incarnation, uint64_t *head);
int gw_store_usage_totals(struct gw_store *st, struct gw_usage_totals *out);
/*
 * Call fn(rec, ctx) for every stored record with from_us <= time_us <
 * to_us, in time order, inside one read transaction (a cursor range scan
 * over the time prefix of the keys).  rec is valid only during the call.
 * A non-zero return from fn ends the scan and is returned.
 */
typedef int (*gw_store_usage_fn)(const struct gw_usage *rec, void *ctx);
int gw_store_usage_scan(struct gw_store *st, int64_t from_us, int64_t to_us, gw_store_usage_fn fn,
                        void *ctx);

/*
 * Rate-limit overrides, by scope name ("key:ID", "model:NAME").  A field
 * GW_LIMIT_UNSET is not overridden.  get returns GW_ENOENT when the scope
 * has none.  list hands out names and limits in a (n entries each).
 */
int gw_store_limit_set(struct gw_store *st, const char *scope, const struct gw_limits *l);
int gw_store_limit_get(struct gw_store *st, const char *scope, struct gw_limits *out);
int gw_store_limit_del(struct gw_store *st, const char *scope);
int gw_store_limit_list(struct gw_store *st, struct gw_arena *a, char ***scopes,
                        struct gw_limits **limits, size_t *n);

/* True when key may call model: by the key's own allow list and, when
 * the key has an owner, by the owner's grants. */
bool gw_key_allows(const struct gw_key *key, const char *model);

/* ---------------------------------------------------- admin protocol */

/*
 * aigwctl and the master speak JSON, one object per line, over the admin
 * Unix socket: a request {"cmd": "key.create", ...} and one reply
 * {"ok": true, ...} or {"ok": false, "error": "message"}.
 */
#define GW_PROTO_MAX_LINE (1024 * 1024)

/* Takes one complete line (without '\n', NUL-terminated in place) from b;
 * returns its length, GW_ENOENT when no full line is buffered yet, or
 * GW_ETOOBIG when the buffered line is over GW_PROTO_MAX_LINE. The line
 * stays valid until the next call that changes b. */
int gw_proto_line_take(struct gw_buf *b, char **line, size_t *consumed);

/* Read from fd until one line arrives (blocking, with the fd's timeouts). */
int gw_proto_read_line(int fd, struct gw_buf *b, char **line, size_t *consumed);

/* --------------------------------------------------- the shm segment */

/*
 * The segment is a named POSIX shared-memory object (mode 0600) that the
 * master creates and every worker maps.  It holds no pointers, only
 * offsets from its start, so a restarted master can attach it again and
 * find everything where it was.  Every shared mutable field is an atomic;
 * there is no lock that a dying process could leave held.
 *
 *   header | scoreboard | stat tables | buckets | usage ring | generations
 */
#define GW_SHM_MAGIC 0x314d485357474941ULL /* "AIGWSHM1" */
#define GW_SHM_LAYOUT 4
#define GW_SHM_GEN_SLOTS 8
#define GW_SHM_NAME_LEN 96

enum gw_worker_state {
    GW_WORKER_EMPTY = 0,
    GW_WORKER_STARTING,
    GW_WORKER_IDLE,      /* waiting for a connection */
    GW_WORKER_BUSY,      /* serving a request */
    GW_WORKER_KEEPALIVE, /* connection open, waiting for its next request */
    GW_WORKER_STOPPING,
    GW_WORKER_NSTATES,
};

/* "empty", "starting", "idle", "busy", "keepalive", "stopping" */
extern const char *const gw_shm_worker_state_names[GW_WORKER_NSTATES];

/* One scoreboard slot; each worker writes only its own. */
struct gw_shm_worker {
    _Atomic int32_t pid;
    _Atomic int32_t state;    /* enum gw_worker_state */
    _Atomic int32_t gen_slot; /* generation slot in use, -1 when none */
    _Atomic uint64_t requests;
    _Atomic int64_t started;    /* unix seconds */
    _Atomic int64_t busy_since; /* unix ms of the request in hand */
    _Atomic int32_t calling;    /* stat index of the target being called, -1 none */
    char pad[20];
};

/* Histogram bucket bounds (ms) for durations and time to first token. */
#define GW_SHM_HIST_BUCKETS 12
extern const double gw_shm_hist_bounds_ms[GW_SHM_HIST_BUCKETS];

/*
 * Counters and live figures under one name: a model ("m:demo"), an
 * upstream target ("t:local/mock-small") or a key ("k:key_..").  Entries
 * are claimed once and never move, so an index stays valid across
 * reloads and a restarted master.
 */
/* The head of every entry of a named table (stats, buckets). */
struct gw_shm_named {
    _Atomic uint32_t state; /* 0 free, (pid << 2 | 1) being claimed, 2 ready */
    char name[GW_SHM_NAME_LEN];
};

/*
 * Find or claim the entry called name in a table of n entries of stride
 * bytes, each starting with struct gw_shm_named; init (may be NULL)
 * prepares a new entry before it is published.  Returns the index, or -1
 * when absent (create false) or the table is full.  Lock-free; a claimer
 * that dies mid-claim is taken over, never waited for forever.
 */
long gw_shm_named_find(void *table, size_t stride, uint64_t n, const char *name, bool create,
                       void (*init)(void *entry));

struct gw_shm_stat {
    _Atomic uint32_t state; /* struct gw_shm_named */
    char name[GW_SHM_NAME_LEN];
    _Atomic int64_t in_flight;
    _Atomic uint64_t requests;
    _Atomic uint64_t status[6]; /* by class: [1]=1xx .. [5]=5xx, [0]=no response */
    _Atomic uint64_t input_tokens;
    _Atomic uint64_t output_tokens;
    _Atomic uint64_t duration_hist[GW_SHM_HIST_BUCKETS + 1];
    _Atomic uint64_t duration_sum_ms;
    _Atomic uint64_t ttft_hist[GW_SHM_HIST_BUCKETS + 1];
    _Atomic uint64_t ttft_sum_ms;
    _Atomic uint64_t ttft_count;
    /* Live figures for routing (upstream targets). */
    _Atomic int64_t ewma_ttft_us;            /* 0: no sample yet */
    _Atomic int64_t ewma_tokens_per_s_milli; /* 0: no sample yet */
    _Atomic uint64_t consecutive_failures;
    _Atomic uint64_t failures;
    _Atomic int32_t breaker_state;    /* enum gw_breaker_state */
    _Atomic int32_t health_down;      /* the master's active check failed */
    _Atomic int64_t breaker_until_ms; /* open: until then (monotonic ms) */
    _Atomic int64_t not_before_ms;    /* Retry-After: no new request before */
    _Atomic uint64_t breaker_opened;  /* times it opened */
    /* The error-rate window: attempts and failed ones since window_start_ms
     * (monotonic ms); whoever finds it over moves the start on with
     * compare-and-swap and zeroes the counts. */
    _Atomic int64_t window_start_ms;
    _Atomic uint64_t window_requests;
    _Atomic uint64_t window_failures;
    /* Models: the weighted round-robin position shared by all workers. */
    _Atomic uint64_t rr;
};

enum gw_breaker_state {
    GW_BREAKER_CLOSED = 0,
    GW_BREAKER_OPEN,
    GW_BREAKER_HALF_OPEN, /* one probe request is out */
};

/*
 * A token bucket shared by all workers, kept as GCRA: one atomic, the
 * theoretical arrival time, moved with compare-and-swap.
 */
struct gw_shm_bucket {
    _Atomic uint32_t state; /* struct gw_shm_named */
    char name[GW_SHM_NAME_LEN];
    _Atomic int64_t tat_us; /* monotonic microseconds */
};

/* One request's usage: what the ring carries and LMDB keeps. */
struct gw_usage {
    int64_t time_us; /* wall clock, unix microseconds, at the end */
    int64_t input_tokens;
    int64_t output_tokens;
    int32_t status;
    uint32_t duration_ms;
    uint32_t ttfb_ms;
    uint8_t stream;
    uint8_t pad[3];
    char request_id[72];
    char key_id[24];
    char model[64];
    char target[96];
};

struct gw_shm_ring_slot {
    _Atomic uint64_t seq;   /* whose turn; bit 63: being written */
    _Atomic int32_t writer; /* pid of the worker writing it */
    int32_t pad;
    struct gw_usage rec;
};

struct gw_shm_header {
    uint64_t magic;
    uint32_t layout;
    uint32_t pad0;
    uint64_t size;
    uint64_t incarnation; /* random, new with each fresh segment */
    _Atomic int32_t master_pid;
    _Atomic int32_t pad1;
    _Atomic int64_t started; /* unix seconds of the current master */

    /* Geometry: offsets from the segment start, counts. */
    uint64_t workers_off, nworkers;
    uint64_t stats_off, nstats;
    uint64_t buckets_off, nbuckets;
    uint64_t ring_off, nring; /* nring: a power of two */
    uint64_t gen_off[GW_SHM_GEN_SLOTS], gen_size;

    /* Routing generations. */
    _Atomic int32_t gen_current; /* slot of the live generation */
    _Atomic int32_t pad2;
    _Atomic uint64_t generation; /* its number */
    _Atomic uint64_t reloads;
    _Atomic uint64_t reload_failures;

    /* Usage ring positions: tail claimed by workers, head by the master. */
    _Atomic uint64_t ring_tail;
    _Atomic uint64_t ring_head;
    _Atomic uint64_t ring_lost;       /* records skipped (a writer died mid-write) */
    _Atomic uint64_t requests;        /* requests served since the segment was made */
    _Atomic uint64_t keys_generation; /* bumped by the master on every key or limit change */
    _Atomic uint64_t ring_written_through;
};

struct gw_shm {
    struct gw_shm_header *hdr;
    size_t size;
    char name[64];
    /* The master's view of a ring slot it is waiting for (see ring.c). */
    uint64_t stall_pos;
    int64_t stall_since;
};

/* Sizes the master asks for (from the configuration). */
struct gw_shm_geometry {
    uint64_t nworkers;
    uint64_t nstats;
    uint64_t nbuckets;
    uint64_t nring;
    uint64_t gen_size;
};

/* The object name for a state directory: "/aigw-<hash>". */
void gw_shm_name(const char *state_dir, char *out, size_t len);

/*
 * Master: attach the segment called name if it exists with this layout
 * and geometry (*attached = true; its contents, usage ring included, are
 * kept), else create it afresh.  Workers inherit the mapping across fork.
 */
int gw_shm_open(const char *name, const struct gw_shm_geometry *geo, struct gw_shm *out,
                bool *attached);
/* Map an existing segment (for tests and tools); GW_ENOENT if absent. */
int gw_shm_attach(const char *name, struct gw_shm *out);
void gw_shm_close(struct gw_shm *shm);
int gw_shm_unlink(const char *name);

static inline struct gw_shm_worker *
gw_shm_worker(const struct gw_shm *shm, size_t i)
{
    return (struct gw_shm_worker *)((char *)shm->hdr + shm->hdr->workers_off) + i;
}

static inline struct gw_shm_stat *
gw_shm_stat_at(const struct gw_shm *shm, size_t i)
{
    return (struct gw_shm_stat *)((char *)shm->hdr + shm->hdr->stats_off) + i;
}

/*
 * Find or claim the entry named name (e.g. "t:local/mock-small").
 * Returns its index, or -1 when the table is full.  Lock-free.
 */
long gw_shm_stat_find(const struct gw_shm *shm, const char *name, bool create);

/* Account one finished request into a stat entry. */
void gw_shm_stat_account(struct gw_shm_stat *st, int status, int64_t in, int64_t out,
                         int64_t duration_ms, int64_t ttft_ms);

/* ------------------------------------------------------- token buckets */

/*
 * Take n tokens from the bucket named name, which refills at rate tokens
 * per second up to burst.  Returns true when they were there (and are
 * now taken); false leaves the bucket as it was and sets *wait_ms to the
 * time until n tokens will be there.  Creates the bucket full.
 * Lock-free: many workers take from one bucket concurrently.
 */
bool gw_shm_bucket_take(const struct gw_shm *shm, const char *name, double rate, double burst,
                        double n, int64_t *wait_ms, double *remaining);
/* Give back tokens taken (settling an estimate); never above burst. */
void gw_shm_bucket_give(const struct gw_shm *shm, const char *name, double rate, double n);
/*
 * Take n tokens whatever the level: settling an estimate that was too
 * low.  The bucket may go into debt (later takes wait longer), never
 * refuses.  Lock-free.
 */
void gw_shm_bucket_charge(const struct gw_shm *shm, const char *name, double rate, double n);

/* ---------------------------------------------------------- usage ring */

/*
 * Workers push usage records; the master drains them.  push never drops:
 * it returns GW_ETOOBIG only when the ring is full, and the caller then
 * waits or writes the record through to LMDB itself.
 */
int gw_shm_ring_push(const struct gw_shm *shm, const struct gw_usage *rec);

/*
 * Master: copy up to max published records from the head into out,
 * without releasing them; *first is the ring position of out[0].
 * Returns the count.  A slot whose writer is gone (dead, or stalled past
 * stall_ms before it began writing) is skipped and counted in ring_lost.
 */
size_t gw_shm_ring_peek(struct gw_shm *shm, struct gw_usage *out, size_t max, uint64_t *first,
                        int64_t stall_ms);
/* Master: release every record before position upto (after it is stored). */
void gw_shm_ring_release(const struct gw_shm *shm, uint64_t upto);

/* --------------------------------------------------- routing generation */

/*
 * A generation is the routing part of a configuration laid out flat in a
 * slot of the segment: arrays of structs and NUL-terminated strings, all
 * found by offsets from the generation's start (0 means none).  The master
 * writes a generation into a slot that no worker uses, then makes it
 * current with one atomic store; workers pick it up at their next request
 * and keep using the one they took until the request ends.
 */
struct gw_gen_provider {
    uint32_t name;
    uint32_t base_url;
    uint32_t api_key;            /* 0: no credential */
    uint32_t type;               /* enum gw_provider_type */
    struct gw_timeouts timeouts; /* 0 fields: the model's */
    uint32_t quirks;             /* GW_QUIRK_* */
    uint32_t api_version;        /* azure, anthropic; 0: none */
    uint32_t region;             /* bedrock */
    uint32_t max_tokens;         /* anthropic, bedrock; 0: the adapter's default */
};

struct gw_gen_target {
    uint32_t provider; /* index in providers */
    uint32_t model;    /* provider's model name */
    int32_t stat;      /* index of "t:provider/model" in the stat table */
    uint32_t weight;
    double price_input;
    double price_output;
    uint32_t deployment;  /* azure; 0: model */
    uint32_t api_version; /* azure; 0: the provider's */
};

struct gw_gen_model {
    uint32_t name;
    uint32_t first_target;
    uint32_t ntargets;
    int32_t stat; /* "m:name" */
    struct gw_timeouts timeouts;
    uint32_t strategy; /* enum gw_route_strategy */
    uint32_t retries;
    int64_t deadline_ms;
    uint32_t breaker_failures;
    uint32_t session_header;
    int64_t breaker_cooldown_ms;
    double breaker_error_rate; /* 0: the breaker does not open by rate */
    int64_t breaker_window_ms;
    uint32_t breaker_min_requests;
    uint32_t fallbacks; /* offset of uint32_t model indexes */
    uint32_t nfallbacks;
    uint32_t schedule; /* offset of uint16_t target indexes: smooth weighted round-robin */
    uint32_t nschedule;
    struct gw_limits limits; /* the whole model; 0 fields: unlimited */
};

struct gw_gen {
    uint64_t generation;
    int64_t published; /* unix seconds */
    uint32_t size;     /* bytes used */
    uint32_t config_path;
    uint32_t log_file;    /* error log path, 0: stderr */
    uint32_t access_file; /* access log path, 0: stderr */
    int32_t log_level;
    uint8_t access_log;
    uint8_t access_journal;
    uint8_t pad[2];
    struct gw_http_limits http;
    uint64_t max_response_size;
    uint32_t nproviders, providers;
    uint32_t nmodels, models;
    uint32_t ntargets, targets;
    struct gw_limits key_limits; /* every key's default; 0 fields: unlimited */
};

static inline const char *
gw_gen_str(const struct gw_gen *g, uint32_t off)
{
    return off ? (const char *)g + off : NULL;
}

static inline const struct gw_gen_provider *
gw_gen_provider(const struct gw_gen *g, size_t i)
{
    return (const struct gw_gen_provider *)((const char *)g + g->providers) + i;
}

static inline const struct gw_gen_model *
gw_gen_model_at(const struct gw_gen *g, size_t i)
{
    return (const struct gw_gen_model *)((const char *)g + g->models) + i;
}

static inline const struct gw_gen_target *
gw_gen_target(const struct gw_gen *g, size_t i)
{
    return (const struct gw_gen_target *)((const char *)g + g->targets) + i;
}

const struct gw_gen_model *gw_gen_model_find(const struct gw_gen *g, const char *name);

/*
 * Master: lay cfg out as generation number gen in a free slot and make it
 * current.  Returns 0, GW_ETOOBIG when it does not fit gen_size, or
 * GW_EEXIST when every other slot is still held by requests of older
 * generations (try again later).
 */
int gw_shm_gen_publish(const struct gw_shm *shm, const struct gw_config *cfg, uint64_t gen);

/*
 * Worker: take the current generation for one request, recording the slot
 * in the worker's scoreboard entry so the master will not overwrite it;
 * gw_shm_gen_release when the request is done.
 */
const struct gw_gen *gw_shm_gen_acquire(const struct gw_shm *shm, struct gw_shm_worker *me);
void gw_shm_gen_release(struct gw_shm_worker *me);

#endif
