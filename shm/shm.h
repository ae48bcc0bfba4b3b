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
#include <string.h>
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
    GW_ENOSPC = -14,    /* the state store's disk (or map) is full */
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
 * single write(2), so lines of concurrent processes never interleave.  A
 * message is one line: control characters in it (but tabs), which what it
 * quotes may hold, are written as '?'.
 */
#define gw_log(level, ...)                                                                         \
    do {                                                                                           \
        if ((level) <= gw_log_level)                                                               \
            gw_log_write((level), __VA_ARGS__);                                                    \
    } while (0)

void gw_log_write(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * For a message that a failing resource would repeat with every request
 * (a full disk): logged at most once a minute for each limit (one per
 * call site), with how many were held back since the last, as nginx does
 * with its access log's write errors.
 */
#define GW_LOG_LIMIT_MS 60000
struct gw_log_limit {
    int64_t last_ms; /* when last logged; 0: never */
    uint64_t held;   /* held back since */
};
void gw_log_limited(struct gw_log_limit *lim, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

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
/* Call fn(arg) at the next reset or destroy (latest first): for what an
 * arena's user holds outside it (heap buffers, references). */
void gw_arena_on_reset(struct gw_arena *a, void (*fn)(void *arg), void *arg);
/* Never NULL for a live arena: allocation failure is fatal (exits). */
void *gw_arena_alloc(struct gw_arena *a, size_t size);
void *gw_arena_zalloc(struct gw_arena *a, size_t size);
char *gw_arena_strdup(struct gw_arena *a, const char *s);
char *gw_arena_strndup(struct gw_arena *a, const char *s, size_t n);
char *gw_arena_printf(struct gw_arena *a, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* The n strings one after the other (a NULL one as ""): what a "%s%s"
 * format would make, without vsnprintf's cost on a request's path.
 * gw_arena_cat(a, s1, s2, ...) counts them itself. */
char *gw_arena_catv(struct gw_arena *a, const char *const *strs, size_t n);
#define gw_arena_cat(a, ...)                                                                       \
    gw_arena_catv((a), (const char *const[]){__VA_ARGS__},                                         \
                  sizeof((const char *const[]){__VA_ARGS__}) / sizeof(const char *))

/* A growable byte buffer on the heap; the owner calls gw_buf_free. */
struct gw_buf {
    char *data;
    size_t len;
    size_t cap;
};

int gw_buf_reserve(struct gw_buf *b, size_t extra);

/* Inline, with the room checked here: a request's access log line alone
 * is some 25 appends. */
static inline int
gw_buf_append(struct gw_buf *b, const void *data, size_t len)
{
    if (b->data == NULL || b->cap - b->len <= len) {
        int rc = gw_buf_reserve(b, len);
        if (rc != 0)
            return rc;
    }
    if (len > 0)
        memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';
    return 0;
}

int gw_buf_printf(struct gw_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Without printf, for the per-request paths: a C string, a number in
 * decimal. */
int gw_buf_append_str(struct gw_buf *b, const char *s);
int gw_buf_append_u64(struct gw_buf *b, uint64_t v);
int gw_buf_append_i64(struct gw_buf *b, int64_t v);
/* Append a string literal: its length is counted by the compiler. */
#define GW_BUF_LIT(b, s) gw_buf_append((b), (s), sizeof(s) - 1)
/* Drops the first n bytes. */
void gw_buf_consume(struct gw_buf *b, size_t n);
void gw_buf_free(struct gw_buf *b);

/* ------------------------------------------------------------ time, misc */

/* Monotonic clock in milliseconds / microseconds. */
int64_t gw_now_ms(void);
int64_t gw_now_us(void);
/* Wall clock, unix microseconds. */
int64_t gw_wall_us(void);

/* Write all of buf to a blocking fd, retrying short writes and EINTR. */
int gw_write_all(int fd, const void *buf, size_t len);

/* Fill buf with cryptographically random bytes (getrandom). */
int gw_random_bytes(void *buf, size_t len);

/*
 * Put the calling thread on glibc's static "C" locale object (what it runs
 * in anyway: nothing here calls setlocale).  json-c's parse duplicates the
 * thread's locale and makes a C LC_NUMERIC one from the copy on every
 * call, and for the global locale each of those allocates and takes
 * glibc's process-wide locale lock as a writer: about 1 us a parse, and in
 * a process with threads a convoy on that lock.  From the static object
 * glibc hands the same object back, with no lock and no allocation.
 * Per thread; a forked child keeps it.
 */
void gw_locale_c_thread(void);

/* Lowercase hex of len bytes into out (2*len+1 bytes). */
void gw_hex_encode(const unsigned char *in, size_t len, char *out);
/* v in decimal into out, NUL-terminated; returns its length. */
#define GW_U64_TEXT_MAX 21
size_t gw_u64_text(uint64_t v, char out[GW_U64_TEXT_MAX]);
/*
 * len, less a UTF-8 sequence cut short at the end of s[0..len): where to
 * cut text that must stay whole characters (a JSON string, a stored
 * name), or where text that goes on later has its last whole character.
 */
size_t gw_utf8_whole(const char *s, size_t len);
/* How many bytes of the string s to keep for at most max: all of it, or
 * max less a character cut short there. */
size_t gw_utf8_prefix(const char *s, size_t max);
/* The bytes of the control character s begins with: 1 for C0 (but the
 * NUL that ends s) and DEL, 2 for C1 as UTF-8 writes it (U+0080 to
 * U+009F, CSI among them); 0 for any other.  Text from outside must not
 * carry these onto a terminal or into a line-based file. */
size_t gw_utf8_control(const char *s);

/*
 * Process titles as ps shows them.  gw_proctitle_init takes over the argv
 * area (copying the environment away) and must run before anything reads
 * argv[1..] again; gw_proctitle_set is then cheap (no system call).
 */
void gw_proctitle_init(int argc, char **argv);
void gw_proctitle_set(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The same with a title already formatted. */
void gw_proctitle_put(const char *title);

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

/*
 * A pass-through upstream: /v1/mcp/NAME/..., /v1/agent/NAME/... and
 * /v1/sandboxes/NAME/... go to a provider's base URL (plus path) as they
 * came, with aigw's authentication, limits and logging in front.
 */
enum gw_passthru_kind { GW_PASSTHRU_MCP, GW_PASSTHRU_AGENT, GW_PASSTHRU_SANDBOX, GW_PASSTHRU_N };

/* "mcp", "agent", "sandbox": also the first part of the resource name
 * ("mcp/github") that keys and grants allow. */
extern const char *const gw_passthru_kind_names[GW_PASSTHRU_N];

struct gw_passthru {
    enum gw_passthru_kind kind;
    char *name;
    size_t provider; /* index into cfg->providers */
    char *path;      /* appended to the provider's base URL, "" when none */
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

/*
 * Content safety (safety: in the file).  A rule finds text by keywords,
 * a regular expression or a built-in PII detector, on the input, the
 * output or both, and blocks, masks or flags what it finds.  The master
 * checks every rule (shm/safety.c compiles it, as workers will); workers
 * compile the rules of each generation again, after fork (worker/safety.c).
 */
enum gw_safety_type {
    GW_SAFETY_KEYWORDS = 0,
    GW_SAFETY_REGEX,
    GW_SAFETY_PII,
    GW_SAFETY_NTYPES,
};

enum gw_safety_action {
    GW_SAFETY_BLOCK = 0,
    GW_SAFETY_MASK,
    GW_SAFETY_FLAG,
    GW_SAFETY_NACTIONS,
};

enum gw_safety_detector {
    GW_DETECT_EMAIL = 0,
    GW_DETECT_PHONE,
    GW_DETECT_CREDIT_CARD,
    GW_DETECT_IBAN,
    GW_DETECT_CN_ID,
    GW_DETECT_IPV4,
    GW_DETECT_IPV6,
    GW_DETECT_API_KEY,
    GW_DETECT_BEARER,
    GW_DETECT_NDETECTORS,
};

/* "keywords" ..., "block" ..., "email" ...: the names the file uses. */
extern const char *const gw_safety_type_names[GW_SAFETY_NTYPES];
extern const char *const gw_safety_action_names[GW_SAFETY_NACTIONS];
extern const char *const gw_safety_detector_names[GW_DETECT_NDETECTORS];

#define GW_SAFETY_MAX_RULES 64 /* a model's rule set is a 64-bit mask */
#define GW_SAFETY_ON_INPUT 1u
#define GW_SAFETY_ON_OUTPUT 2u

struct gw_safety_rule {
    char *name;
    enum gw_safety_type type;
    enum gw_safety_action action;
    enum gw_safety_detector detector; /* pii */
    unsigned on;                      /* GW_SAFETY_ON_* */
    bool whole_word;                  /* keywords */
    bool restore;                     /* mask: put the values back in the answer */
    char *pattern;                    /* regex */
    char *file;                       /* keywords: one per line, or NULL */
    char **words;                     /* keywords: the file's and the inline ones */
    size_t nwords;
    char *mask; /* mask: fixed replacement; NULL: numbered placeholders [NAME_1] */
};

struct gw_safety {
    struct gw_safety_rule *rules;
    size_t nrules;
    size_t stream_window; /* most output text held back in a stream, bytes */
    char **allow_keys;    /* key ids, tenants and models never inspected */
    size_t nallow_keys;
    char **allow_tenants;
    size_t nallow_tenants;
    char **allow_models;
    size_t nallow_models;
    /* moderation: an OpenAI-compatible moderations model asked about the
     * input (worker/moderation.c); model NULL: none. */
    char *moderation_model;
    size_t moderation_index;      /* into cfg->models, resolved at the end */
    char **moderation_categories; /* none: any flagged category */
    size_t nmoderation_categories;
    enum gw_safety_action moderation_action; /* block or flag */
    bool moderation_fail_closed;             /* on_error: block */
};
/* What a model does (models: type), for the catalogue and its examples. */
enum gw_model_type {
    GW_MODEL_CHAT = 0,
    GW_MODEL_COMPLETIONS,
    GW_MODEL_EMBEDDINGS,
    GW_MODEL_IMAGES,
    GW_MODEL_AUDIO,
    GW_MODEL_MODERATIONS,
    GW_MODEL_RESPONSES,
    GW_MODEL_VIDEO,
    GW_MODEL_NTYPES,
};

/* "chat", "completions", "embeddings", "images", "audio", "moderations",
 * "responses", "video" */
extern const char *const gw_model_type_names[GW_MODEL_NTYPES];

struct gw_model {
    char *name; /* the name clients send */
    enum gw_model_type type;
    int64_t context_length; /* tokens, 0: not said */
    struct gw_target *targets;
    size_t ntargets;
    struct gw_timeouts timeouts;
    struct gw_routing routing;
    char **fallbacks; /* other models to try, in order, when every target failed */
    size_t nfallbacks;
    struct gw_limits limits; /* the whole model, all keys together */
    /* Safety rules that apply (bit i: safety.rules[i]); every rule when
     * the model has no safety: key. */
    uint64_t safety_rules;
    bool safety_set;
    bool safety_moderation; /* the moderation model is asked about its input */
    char **safety_names;    /* as written, resolved at the end of the load */
    size_t nsafety_names;
    long cache_ttl_ms;        /* cache: ttl; 0: answers of this model are not cached */
    bool cache_deterministic; /* cache: when: deterministic (temperature 0 or a seed) */
    bool capture;             /* capture: true: every request is captured */
};

/* A list of names from the configuration (key ids, tenants). */
struct gw_names {
    char **v;
    size_t n;
};

/* Keys and tenants a feature leaves alone (cache: bypass:, capture: bypass:). */
struct gw_bypass {
    struct gw_names keys;
    struct gw_names tenants;
};

struct gw_http_limits {
    size_t max_header_size;    /* request line + headers; over it: 431 */
    size_t max_body_size;      /* decoded body; over it: 413 */
    long keepalive_timeout_ms; /* idle between requests; then close */
    long read_timeout_ms;      /* silence inside a request; then 408 */
    long write_timeout_ms;     /* a client that stops reading; then close */
    size_t max_upload_size;    /* a body streamed to the upstream (uploads); over it: 413 */
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
    uint64_t max_requests;    /* recycle a worker after this many; 0: never */
    int worker_connections;   /* connections one worker serves at once (workers.connections) */
    bool worker_cpu_affinity; /* workers.cpu_affinity: a CPU each, the master on those left */
    long shutdown_timeout_ms;

    int log_level;
    char *log_file; /* error log; NULL: stderr */
    bool access_log;
    char *access_file;    /* JSON lines; NULL: stderr */
    bool access_journal;  /* access log to journald instead */
    size_t access_buffer; /* bytes of lines a worker gathers; 0: a write per line */
    long access_flush_ms; /* and the longest a gathered line waits */
    char *metrics_listen; /* "host:port" of the /metrics listener, or NULL */
    char **admin_listen;  /* admin.listen: the HTTP admin API's "host:port"s */
    size_t nadmin_listen;

    struct gw_http_limits http;
    struct gw_timeouts timeouts; /* defaults for models */
    size_t max_response_size;    /* buffered (non-streaming) upstream body */
    struct gw_provider *providers;
    size_t nproviders;
    struct gw_model *models;
    size_t nmodels;
    struct gw_limits key_limits;    /* limits: key: the default of every key */
    struct gw_limits user_limits;   /* limits: user: every key owner (all their keys) */
    struct gw_limits tenant_limits; /* limits: tenant: every tenant (all its keys) */
    struct gw_limits model_limits;  /* limits: model: the default of every model */
    struct gw_passthru *passthru;   /* mcp:, agents: and sandboxes:, in that order */
    size_t npassthru;
    char *quota_webhook; /* quotas: webhook: POSTed a quota alert, or NULL */
    long quota_webhook_timeout_ms;
    /* usage: retention of the per-request records and of the daily
     * aggregates, in days; 0: kept forever. */
    uint64_t usage_detail_days;
    uint64_t usage_aggregate_days;
    struct gw_safety safety;
    char *provider_key_file; /* secrets: provider_key_file, or NULL (see shm/seal.c) */

    size_t cache_max_size; /* cache: max_size: bytes of cached answers (state_dir/cache) */
    /* capture: (worker/capture.c): to files in capture_dir or to journald;
     * requests of models with capture: true, of these keys and tenants. */
    char *capture_dir;
    bool capture_journal;
    int capture_rotate; /* enum gw_capture_rotate */
    size_t capture_max_size;
    size_t capture_max_record;
    struct gw_names capture_keys;    /* key ids */
    struct gw_names capture_tenants; /* tenant names */
    /* cache: bypass: and capture: bypass: the keys and tenants whose
     * requests are never cached or captured. */
    struct gw_bypass cache_bypass;
    struct gw_bypass capture_bypass;
};

/* capture: rotate: a file per UTC day, or a new file past max_size. */
enum gw_capture_rotate { GW_CAPTURE_DAILY = 0, GW_CAPTURE_SIZE };

/* Loading and validation live in the master (gw_master_config_load); the
 * lookups below are what workers need. */
const struct gw_model *gw_config_model_find(const struct gw_config *cfg, const char *name);
/* A model, or a pass-through upstream as "mcp/NAME", "agent/NAME" or
 * "sandbox/NAME": what keys may be allowed and grants given on. */
bool gw_config_callable(const struct gw_config *cfg, const char *name);
/* Release a configuration and everything in its arena; NULL is fine. */
void gw_config_free(struct gw_config *cfg);

/* ------------------------------------------------------- content safety */

/*
 * The matching half of a safety rule, shared by the master (which checks
 * a rule by compiling it) and the workers (which compile it for use):
 * every rule becomes one PCRE2 pattern, and a PII detector adds a check of
 * each candidate (a Luhn sum, an IBAN's mod 97, ...).
 */
struct gw_safety_spec {
    enum gw_safety_type type;
    enum gw_safety_detector detector;
    bool whole_word;
    const char *pattern;      /* regex */
    const char *const *words; /* keywords */
    size_t nwords;
};

/*
 * Compile spec into a new PCRE2 pattern (a pcre2_code_8 *, owned by the
 * caller: pcre2_code_free), JIT-compiled for complete and hard-partial
 * matches when jit is set.  *maxlen is the longest text a match can span
 * (0: unbounded).  On failure returns NULL and writes why into err, with
 * *erroffset the offset in the pattern the problem was found at (regex).
 */
void *gw_safety_compile(const struct gw_safety_spec *spec, bool jit, size_t *maxlen, char *err,
                        size_t errlen, size_t *erroffset);

/* Does the candidate text a detector's pattern found pass its check? */
bool gw_safety_detector_check(enum gw_safety_detector d, const char *s, size_t len);

/* The check sums alone, for tests: digits (with blanks or dashes). */
bool gw_safety_luhn_ok(const char *s, size_t len);
bool gw_safety_iban_ok(const char *s, size_t len);
bool gw_safety_cn_id_ok(const char *s, size_t len);

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

/* ------------------------------------------------- sealed secrets */

/*
 * BYOK provider credentials are kept in LMDB sealed with AES-256-GCM
 * (shm/seal.c): a random 96-bit nonce per record, the record's identity
 * as associated data, so a sealed value cannot be moved to another
 * record.  Sealed bytes: nonce (12) | ciphertext (len) | tag (16).
 */
#define GW_SEAL_KEY_LEN 32
#define GW_SEAL_NONCE_LEN 12
#define GW_SEAL_TAG_LEN 16
#define GW_SEAL_OVERHEAD (GW_SEAL_NONCE_LEN + GW_SEAL_TAG_LEN)

/* Seal len bytes of in into out (len + GW_SEAL_OVERHEAD bytes).  0 or
 * GW_EIO (no randomness, OpenSSL failed). */
int gw_seal_encrypt(const unsigned char key[GW_SEAL_KEY_LEN], const void *ad, size_t adlen,
                    const void *in, size_t len, unsigned char *out);
/* Open sealed bytes in (inlen) into out (inlen - GW_SEAL_OVERHEAD bytes);
 * GW_EINVAL when they are short, were changed, or belong to other
 * associated data or another key: nothing is written to out then. */
int gw_seal_decrypt(const unsigned char key[GW_SEAL_KEY_LEN], const void *ad, size_t adlen,
                    const unsigned char *in, size_t inlen, unsigned char *out, size_t *outlen);

/*
 * Load the key that seals provider credentials, the first found of: the
 * configured file (path, when not NULL), the systemd credential
 * $CREDENTIALS_DIRECTORY/aigw-provider-key, STATE_DIR/provider.key.  A
 * file (not the credential) that does not exist is created with 32
 * random bytes, mode 0600.  A file that others than its owner may read
 * or write is refused (GW_EPERM), as is one that holds neither 32 bytes
 * nor 64 hex digits (GW_EINVAL).  *from names what was used (static or
 * path; for messages).  Logs every failure, never the key.
 */
int gw_seal_key_load(const char *path, const char *state_dir, unsigned char key[GW_SEAL_KEY_LEN],
                     char *from, size_t fromlen);

/*
 * A BYOK credential (shm/byok.c): a tenant's own secret for a configured
 * provider ("for").  Requests of that tenant routed to that provider send
 * this secret instead of the provider's, and base_url (when set) instead
 * of the provider's.  Stored as JSON with the secret sealed; the
 * associated data is the record's identity: tenant, name, for, type and
 * base_url.  type is the provider type the secret is for
 * (gw_byok_type_names).
 */
struct gw_byok {
    char *name;
    char *tenant;
    char *type;
    char *provider;       /* "for": the configured provider it stands in for */
    char *base_url;       /* or NULL: the provider's */
    char fingerprint[24]; /* "sha256:" and 12 hex digits of the secret's hash */
    int64_t created;      /* unix seconds */
    char *secret;         /* heap, NUL-terminated; NULL unless opened */
};

/* "openai", "azure", "anthropic", "gemini", "bedrock": by enum
 * gw_provider_type value; NULL-terminated. */
extern const char *const gw_byok_type_names[];
/* The name of provider type t, or NULL when unknown here. */
const char *gw_byok_type_name(unsigned t);

/*
 * Seal b->secret under key and return the record as JSON text (heap,
 * the caller frees), fingerprint filled in.  NULL when sealing failed.
 */
char *gw_byok_encode(const unsigned char key[GW_SEAL_KEY_LEN], struct gw_byok *b);
/*
 * Decode a stored record into out (strings in a).  With key, also open
 * the secret into out->secret (heap; release it with gw_byok_secret_free).
 * GW_EINVAL when the record is not one, or its secret does not open (a
 * wrong key, a changed record).
 */
int gw_byok_decode(const unsigned char *key, const char *json, struct gw_arena *a,
                   struct gw_byok *out);
/* Wipe and free a secret opened by gw_byok_decode; NULL is fine. */
void gw_byok_secret_free(char *secret);

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
    int64_t expires;   /* unix seconds after which the key is refused; 0: never */
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
/*
 * Pace long write transactions: gw_store_usage_add, gw_store_usage_prune
 * and gw_store_usage_upgrade call pace(ctx) every GW_STORE_PACE_EVERY
 * records they write or delete.  The master, which shares the CPUs with
 * the workers, gives them a turn there (master/usage.c).
 */
#define GW_STORE_PACE_EVERY 32
void gw_store_set_pace(struct gw_store *st, void (*pace)(void *ctx), void *ctx);
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
enum gw_store_db {
    GW_DB_TENANTS,
    GW_DB_USERS,
    GW_DB_AUDIT,
    GW_DB_QUOTAS,
    GW_DB_PROVIDERS, /* BYOK credentials by name, sealed (master/providers.c) */
    GW_DB_COUNT
};

int gw_store_rec_put(struct gw_store *st, enum gw_store_db db, const char *name, const char *json,
                     bool create_only);
int gw_store_rec_get(struct gw_store *st, enum gw_store_db db, const char *name, struct gw_arena *a,
                     char **json);
int gw_store_rec_del(struct gw_store *st, enum gw_store_db db, const char *name);
int gw_store_rec_list(struct gw_store *st, enum gw_store_db db, bool newest_first, size_t limit,
                      struct gw_arena *a, char ***json, size_t *n);
int gw_store_audit_add(struct gw_store *st, const char *json);

/*
 * Roles a user may be granted, and what each lets its holder do with the
 * model it is granted on (gateway-admin: everything, on every model):
 *
 *   endpoint-admin     call, view, operate, manage (grant roles on it)
 *   endpoint-operator  call, view, operate (its limits and quotas)
 *   endpoint-user      call
 *   endpoint-viewer    view (metadata and usage)
 *
 * gw_role_caps: the GW_CAP_* bits of a role, 0 for an unknown one.
 * gw_role_calls: whether the role lets its holder call the model.  The
 * master's admin commands check the other bits (master/accounts.c).
 */
enum gw_role_cap {
    GW_CAP_CALL = 1 << 0,
    GW_CAP_VIEW = 1 << 1,
    GW_CAP_OPERATE = 1 << 2,
    GW_CAP_MANAGE = 1 << 3,
    GW_CAP_ALL = GW_CAP_CALL | GW_CAP_VIEW | GW_CAP_OPERATE | GW_CAP_MANAGE,
};
extern const char *const gw_role_names[];
unsigned gw_role_caps(const char *role);
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
 * to_us, in time order (newest first with newest_first), inside one read
 * transaction (a cursor range scan over the time prefix of the keys).
 * rec is valid only during the call.  A non-zero return from fn ends the
 * scan and is returned.
 */
typedef int (*gw_store_usage_fn)(const struct gw_usage *rec, void *ctx);
int gw_store_usage_scan(struct gw_store *st, int64_t from_us, int64_t to_us, bool newest_first,
                        gw_store_usage_fn fn, void *ctx);

/*
 * Daily aggregates.  gw_store_usage_add adds every record it stores to
 * the aggregate of its UTC day, key, user, tenant, model, target and
 * status, in the same transaction, so each record is in its aggregate
 * exactly once.  agg_scan calls fn for the aggregates of the days whose
 * start lies in [from_us, to_us): dims carries the day's start (time_us),
 * key_id, user, tenant, model, target and status; sums the sums.  Both
 * are valid only during the call.
 */
struct gw_usage_sums;
typedef int (*gw_store_usage_agg_fn)(const struct gw_usage *dims, const struct gw_usage_sums *sums,
                                     void *ctx);
int gw_store_usage_agg_scan(struct gw_store *st, int64_t from_us, int64_t to_us,
                            gw_store_usage_agg_fn fn, void *ctx);

/*
 * Retention.  pruned_before: the time (a UTC day's start) before which
 * detail records may have been deleted and only aggregates answer; 0 when
 * none ever were.  prune deletes, in one transaction and at most max
 * records in all, the detail records older than detail_before_us (first
 * raising pruned_before to it) and then the aggregates of days older than
 * agg_before_us; a bound of 0 prunes nothing of that kind.  *deleted says
 * how many went: max means there may be more.  upgrade rewrites at most
 * max records stored by an older version (without their aggregates) in
 * today's format and adds them to their aggregates, in one transaction;
 * *done is set once none is left.  prune keeps older records until they
 * are upgraded.
 */
int gw_store_usage_pruned_before(struct gw_store *st, int64_t *us);
int gw_store_usage_prune(struct gw_store *st, int64_t detail_before_us, int64_t agg_before_us,
                         size_t max, size_t *deleted);
int gw_store_usage_upgrade(struct gw_store *st, size_t max, size_t *converted, bool *done);

/*
 * Rate-limit overrides, by scope name ("key:ID", "model:NAME").  A field
 * GW_LIMIT_UNSET is not overridden.  get returns GW_ENOENT when the scope
 * has none.  list hands out names and limits in a (n entries each).
 */
int gw_store_limit_set(struct gw_store *st, const char *scope, const struct gw_limits *l);
int gw_store_limit_get(struct gw_store *st, const char *scope, struct gw_limits *out);
int gw_store_limit_del(struct gw_store *st, const char *scope);
/* How many overrides are stored: lets a worker skip looking up each
 * scope of each request when there are none. */
int gw_store_limit_count(struct gw_store *st, size_t *n);
int gw_store_limit_list(struct gw_store *st, struct gw_arena *a, char ***scopes,
                        struct gw_limits **limits, size_t *n);

/* True when key may call model: by the key's own allow list and, when
 * the key has an owner, by the owner's grants. */
bool gw_key_allows(const struct gw_key *key, const char *model);

/* ------------------------------------------------- response cache */

/*
 * The response cache (shm/cache.c): its own LMDB environment in
 * state_dir/cache, opened by each process after fork.  Entries are keyed
 * by the client's model name and the SHA-256 of the canonical request
 * (worker/cache.c); each holds the answer's content type and body (a
 * whole chat.completion or embeddings object), its usage and its expiry.
 */
#define GW_CACHE_HASH_LEN 32
#define GW_CACHE_MODEL_MAX 256 /* longer model names are not cached */

struct gw_cache;

struct gw_cache_entry {
    int64_t created_us; /* wall clock, unix microseconds */
    int64_t expires_us;
    int64_t prompt_tokens;
    int64_t completion_tokens;
    const char *ctype;
    const char *body;
    size_t body_len;
};

struct gw_cache_count {
    uint64_t entries;
    uint64_t bytes; /* keys and values */
};

/* Told of each entry removed to make room (expired false) or past its
 * expiry (true), after the removal is committed. */
typedef void (*gw_cache_gone_fn)(void *ctx, const char *model, bool expired);
/* Called with the totals (model NULL) and each model's counts. */
typedef void (*gw_cache_count_fn)(void *ctx, const char *model, const struct gw_cache_count *c);

/*
 * Open (creating) the environment in dir.  owner: the master, which
 * removes a cache a system crash left unsynced and syncs it at close.
 */
int gw_cache_open(const char *dir, bool owner, struct gw_cache **out);
void gw_cache_close(struct gw_cache *c);
int gw_cache_sync(struct gw_cache *c);
void gw_cache_reader_check(struct gw_cache *c);
/* The entry of model and hash that has not expired at now_us, copied into
 * a (body NUL-terminated); GW_ENOENT when there is none. */
int gw_cache_get(struct gw_cache *c, const char *model, const unsigned char hash[GW_CACHE_HASH_LEN],
                 int64_t now_us, struct gw_arena *a, struct gw_cache_entry *out);
/* Store e, first removing the entries that expire soonest while the cache
 * would hold more than max_size bytes (a bounded number: GW_ETOOBIG when
 * they are not enough, or e alone is too big; nothing changes then). */
int gw_cache_put(struct gw_cache *c, const char *model, const unsigned char hash[GW_CACHE_HASH_LEN],
                 const struct gw_cache_entry *e, uint64_t max_size, gw_cache_gone_fn gone,
                 void *ctx);
/* Remove up to max entries expired at now_us, in one transaction. */
int gw_cache_sweep(struct gw_cache *c, int64_t now_us, size_t max, gw_cache_gone_fn gone, void *ctx,
                   size_t *removed);
/* Remove every entry, or those of model, in short transactions. */
int gw_cache_purge(struct gw_cache *c, const char *model, size_t *removed);
int gw_cache_counts(struct gw_cache *c, gw_cache_count_fn fn, void *ctx);

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

/*
 * The same for a line of up to max bytes.  Replies use GW_PROTO_MAX_REPLY:
 * a list of every key or the whole audit log is many megabytes, and the
 * master only sends what it was asked for.  Requests stay under
 * GW_PROTO_MAX_LINE, which is what the master reads.
 */
#define GW_PROTO_MAX_REPLY (256 * 1024 * 1024)
int gw_proto_read_line_max(int fd, struct gw_buf *b, size_t max, char **line, size_t *consumed);

/* --------------------------------------------------- the shm segment */

/*
 * The segment is a named POSIX shared-memory object (mode 0600) that the
 * master creates and every worker maps.  It holds no pointers, only
 * offsets from its start, so a restarted master can attach it again and
 * find everything where it was.  Every shared mutable field is an atomic;
 * there is no lock that a dying process could leave held.
 *
 *   header | scoreboard | stat tables | buckets | quotas | usage ring |
 *   generations
 */
#define GW_SHM_MAGIC 0x314d485357474941ULL /* "AIGWSHM1" */
#define GW_SHM_LAYOUT 11
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
/* Upstream calls a worker can have in progress to distinct targets and
 * still be accounted for if it dies (more run, but are not taken off the
 * targets' in-flight figures by the master after a crash). */
#define GW_SHM_WORKER_CALLS 16

struct gw_shm_worker {
    _Atomic int32_t pid;
    _Atomic int32_t state;      /* enum gw_worker_state */
    _Atomic uint32_t gen_slots; /* bit s: a request here reads generation slot s */
    _Atomic int32_t conns;      /* client connections open */
    _Atomic int32_t room;       /* connections it can still take (workers.connections) */
    _Atomic int32_t busy;       /* requests in progress */
    _Atomic uint64_t requests;
    _Atomic int64_t started;    /* unix seconds */
    _Atomic int64_t busy_since; /* unix ms of the request in hand (the latest one) */
    /* Upstream calls in progress by target stat index, so that the
     * master can take a dead worker's calls off the in-flight figures. */
    struct {
        _Atomic int32_t stat;
        _Atomic int32_t n;
    } calls[GW_SHM_WORKER_CALLS];
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
    /* Models: the response cache (worker/cache.c, master/cache.c). */
    _Atomic uint64_t cache_hits;
    _Atomic uint64_t cache_misses;
    _Atomic uint64_t cache_stores;
    _Atomic uint64_t cache_evictions; /* removed to make room (cache.max_size) */
    _Atomic uint64_t cache_expired;   /* removed by the master past their ttl */
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

/*
 * One request's usage: what the ring carries and LMDB keeps.  Strings are
 * NUL-padded and need not end in a NUL when they fill their field.
 * Changing this struct changes GW_SHM_LAYOUT, and shm/store.c keeps
 * reading the records an older version stored.
 */
struct gw_usage {
    int64_t time_us; /* wall clock, unix µs, when the answer's last bytes went out */
    int64_t input_tokens;
    int64_t output_tokens;
    int64_t cost_nano; /* at the serving target's prices, in 1e-9 units; 0: no price */
    int32_t status;
    uint32_t duration_ms;
    uint32_t ttfb_ms;
    uint8_t stream;
    uint8_t cached;     /* answered from the response cache */
    uint8_t byok;       /* served with the tenant's own credential: not billed by the platform */
    uint8_t capability; /* enum gw_usage_capability; 0 in records older than it */
    char request_id[72];
    char key_id[24];
    char model[64];
    char target[96];
    char user[72];   /* the key's owner, or "" */
    char tenant[72]; /* the owner's tenant, or "" */
    /* What the capability counts besides tokens (see gw_usage_capability):
     * audio milliseconds, characters, images or videos; 0 for text. */
    int64_t units;
    char tier[24]; /* images: "SIZE/QUALITY" such as "1024x1024/standard"; else "" */
};

/*
 * What a request used, for usage per capability: text capabilities count
 * tokens (input_tokens, output_tokens); the others count units as well:
 * transcription audio milliseconds, speech input characters, images the
 * images made (and tier their resolution), video the videos created.
 * Every record is a call.  GW_CAP_NONE: a record older than capabilities.
 */
enum gw_usage_capability {
    GW_CAP_NONE = 0,
    GW_CAP_CHAT,
    GW_CAP_EMBEDDINGS,
    GW_CAP_TRANSCRIPTION, /* and translation: audio in */
    GW_CAP_SPEECH,        /* audio out */
    GW_CAP_IMAGES,
    GW_CAP_VIDEO,
    GW_CAP_COUNT,
};

/* "", "chat", "embeddings", "transcription", "speech", "images", "video" */
extern const char *const gw_usage_capability_names[GW_CAP_COUNT];

/* Sums of many records: one group of the statistics, or one stored daily
 * aggregate. */
struct gw_usage_sums {
    uint64_t requests;
    uint64_t errors; /* status >= 400 */
    uint64_t input_tokens;
    uint64_t output_tokens;
    uint64_t cached;
    uint64_t duration_ms;
    uint64_t ttfb_ms;
    int64_t cost_nano;
    /* Units by capability (added after the fields above: a stored
     * aggregate of an older version is the prefix of this struct). */
    uint64_t audio_ms;   /* transcription */
    uint64_t characters; /* speech */
    uint64_t images;
    uint64_t videos;
};

struct gw_shm_ring_slot {
    _Atomic uint64_t seq;   /* whose turn; bit 63: being written */
    _Atomic int32_t writer; /* pid of the worker writing it */
    int32_t pad;
    struct gw_usage rec;
};

/* gw_shm_header.lines_cut: a file that may end with a line cut short. */
#define GW_CUT_ACCESS_LOG 1u
#define GW_CUT_CAPTURE 2u

struct gw_shm_header {
    uint64_t magic;
    uint32_t layout;
    /* GW_CUT_* bits: a worker's write to that file failed part way (the
     * disk full mid-line), so the next line any worker writes there
     * starts with a newline (gw_worker_lines_write). */
    _Atomic uint32_t lines_cut;
    uint64_t size;
    uint64_t incarnation; /* random, new with each fresh segment */
    _Atomic int32_t master_pid;
    /* The master's last try to store usage records failed: its GW_E*
     * code (GW_ENOSPC: a full disk); 0 once it stores again. */
    _Atomic int32_t store_error;
    _Atomic int64_t started; /* unix seconds of the current master */

    /* Geometry: offsets from the segment start, counts. */
    uint64_t workers_off, nworkers;
    uint64_t stats_off, nstats;
    uint64_t buckets_off, nbuckets;
    uint64_t quotas_off, nquotas;
    uint64_t ring_off, nring; /* nring: a power of two */
    uint64_t gen_off[GW_SHM_GEN_SLOTS], gen_size;

    /* Routing generations. */
    _Atomic int32_t gen_current; /* slot of the live generation */
    _Atomic int32_t ring_bell;   /* a worker woke the master to drain (gw_shm_ring_bell) */
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
    _Atomic uint64_t byok_generation; /* bumped by the master on every BYOK credential change */
    /* Capture files with rotate: size: the unix second the current file
     * was begun, which names it; moved on by the worker that fills it. */
    _Atomic int64_t capture_file;
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
    uint64_t nquotas;
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

/* -------------------------------------------------------------- quotas */

/*
 * A quota caps the tokens or calls of one scope ("tenant:T", "user:U",
 * "key:ID", "model:M") over a period that rolls over at UTC boundaries.
 * Its definition is state (LMDB "quotas", aigwctl quota set); what was
 * used in the current period is a counter in shm that every worker adds
 * to, named "SCOPE|PERIOD".
 */
enum gw_quota_period { GW_QUOTA_DAY, GW_QUOTA_MONTH, GW_QUOTA_TOTAL, GW_QUOTA_NPERIODS };

/* "day", "month", "total" */
extern const char *const gw_quota_period_names[GW_QUOTA_NPERIODS];

/* The period named s, or -1. */
int gw_quota_period_parse(const char *s);

/*
 * The number of the period that unix time t falls in (days or months
 * since 1970, 1 for total; never 0) and the unix time it ends (0 for
 * total, which never does).
 */
int64_t gw_quota_period_id(enum gw_quota_period p, int64_t t);
int64_t gw_quota_period_end(enum gw_quota_period p, int64_t t);
/* The unix time the period containing t began (0 for total). */
int64_t gw_quota_period_start(enum gw_quota_period p, int64_t t);

/* A quota as stored: -1 in tokens or calls when that one is not capped. */
struct gw_quota {
    char scope[GW_SHM_NAME_LEN]; /* "tenant:acme" */
    enum gw_quota_period period;
    int64_t tokens;
    int64_t calls;
    int32_t alert_pct; /* 0: no alert */
    int64_t alerted;   /* the period id last alerted, 0: never */
};

/* Its record name, "SCOPE|PERIOD"; false when it does not fit. */
bool gw_quota_name(const struct gw_quota *q, char *out, size_t len);
/* Decode a stored record (JSON); GW_EINVAL when it is not one. */
int gw_quota_decode(const char *json, struct gw_quota *out);
/* Encode q as JSON text (owned by the caller's json-c object). */
struct json_object *gw_quota_encode(const struct gw_quota *q);

struct gw_shm_quota {
    _Atomic uint32_t state; /* struct gw_shm_named */
    char name[GW_SHM_NAME_LEN];
    _Atomic int64_t period; /* the period id the counts are of */
    _Atomic int64_t tokens;
    _Atomic int64_t calls;
};

/* The counter named name ("SCOPE|PERIOD"), created at zero when create;
 * NULL when absent or the table is full. */
struct gw_shm_quota *gw_shm_quota_get(const struct gw_shm *shm, const char *name, bool create);

/* Move q on to period (counts back to zero) if it is of an earlier one. */
void gw_shm_quota_roll(struct gw_shm_quota *q, int64_t period);

/* ---------------------------------------------------------- usage ring */

/*
 * Workers push usage records; the master drains them.  push never drops:
 * it returns GW_ETOOBIG only when the ring is full, and the caller then
 * waits or writes the record through to LMDB itself.
 */
int gw_shm_ring_push(const struct gw_shm *shm, const struct gw_usage *rec);
/*
 * After a push: true when the ring is a quarter full or more, once until
 * the master's next drain (gw_shm_ring_bell_reset).  The worker then wakes
 * the master, so that a burst is drained before it fills the ring, however
 * long the master meant to wait.
 */
bool gw_shm_ring_bell(const struct gw_shm *shm);
/* Master: a drain begins; the next quarter-full ring rings again. */
void gw_shm_ring_bell_reset(const struct gw_shm *shm);

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

struct gw_gen_passthru {
    uint32_t kind; /* enum gw_passthru_kind */
    uint32_t name;
    uint32_t provider; /* index in providers */
    uint32_t path;     /* 0: none */
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

/* One safety rule; the worker compiles it from these (shm/safety.c). */
struct gw_gen_safety_rule {
    uint32_t name;
    uint8_t type;     /* enum gw_safety_type */
    uint8_t action;   /* enum gw_safety_action */
    uint8_t detector; /* enum gw_safety_detector */
    uint8_t on;       /* GW_SAFETY_ON_* */
    uint8_t whole_word;
    uint8_t restore;
    uint8_t pad[2];
    uint32_t pattern; /* regex text */
    uint32_t words;   /* keywords: nwords strings, one after another */
    uint32_t nwords;
    uint32_t mask;   /* 0: numbered placeholders */
    int32_t stat[2]; /* "s:input:ACTION:NAME", "s:output:..." in the stat table */
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
    uint64_t safety_rules;   /* bit i: safety rule i applies */
    uint32_t type;           /* enum gw_model_type */
    uint32_t pad;
    int64_t context_length; /* 0: not said */
    int64_t cache_ttl_ms;   /* 0: not cached */
    uint8_t cache_deterministic;
    uint8_t capture;
    uint8_t moderation; /* the moderation model is asked about the input */
    uint8_t pad3[5];
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
    uint32_t access_buffer; /* log.access_buffer, bytes; 0: a write per line */
    uint32_t access_flush_ms;
    struct gw_http_limits http;
    uint64_t max_response_size;
    uint32_t nproviders, providers;
    uint32_t nmodels, models;
    uint32_t ntargets, targets;
    struct gw_limits key_limits;    /* every key's default; 0 fields: unlimited */
    struct gw_limits user_limits;   /* every user's default (all their keys) */
    struct gw_limits tenant_limits; /* every tenant's default (all its keys) */
    uint32_t npassthru, passthru;
    /* Content safety: rules, and the allowlists as strings one after
     * another (a count and the offset of the first). */
    uint32_t nsafety, safety;
    uint32_t safety_window;
    uint32_t nallow_keys, allow_keys;
    uint32_t nallow_tenants, allow_tenants;
    uint32_t nallow_models, allow_models;
    /* Moderation: the model asked (index + 1; 0: none), its categories as
     * strings one after another, the action and what a failed call does. */
    uint32_t moderation_model;
    uint32_t nmoderation_categories, moderation_categories;
    uint8_t moderation_action; /* enum gw_safety_action */
    uint8_t moderation_fail_closed;
    uint8_t pad4[2];
    uint64_t cache_max_size;
    uint32_t capture_dir; /* 0: no capture files */
    uint8_t capture_journal;
    uint8_t capture_rotate; /* enum gw_capture_rotate */
    uint8_t pad2[2];
    uint64_t capture_max_size;
    uint64_t capture_max_record;
    uint32_t capture_keys; /* offset of uint32_t string offsets */
    uint32_t ncapture_keys;
    uint32_t capture_tenants;
    uint32_t ncapture_tenants;
    /* cache.bypass and capture.bypass: offsets of uint32_t string offsets */
    uint32_t cache_bypass_keys, ncache_bypass_keys;
    uint32_t cache_bypass_tenants, ncache_bypass_tenants;
    uint32_t capture_bypass_keys, ncapture_bypass_keys;
    uint32_t capture_bypass_tenants, ncapture_bypass_tenants;
};

static inline const struct gw_gen_safety_rule *
gw_gen_safety_rule(const struct gw_gen *g, size_t i)
{
    return (const struct gw_gen_safety_rule *)((const char *)g + g->safety) + i;
}

/* Is s one of the n strings laid one after another at offset off? */
bool gw_gen_list_has(const struct gw_gen *g, uint32_t off, uint32_t n, const char *s);

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
/* Whether the list of names at off (n string offsets) holds name. */
bool gw_gen_names_has(const struct gw_gen *g, uint32_t off, uint32_t n, const char *name);

/* The pass-through upstream of kind called name, or NULL. */
const struct gw_gen_passthru *gw_gen_passthru_find(const struct gw_gen *g,
                                                   enum gw_passthru_kind kind, const char *name,
                                                   size_t len);

/*
 * Master: lay cfg out as generation number gen in a free slot and make it
 * current.  Returns 0, GW_ETOOBIG when it does not fit gen_size, or
 * GW_EEXIST when every other slot is still held by requests of older
 * generations (try again later).
 */
int gw_shm_gen_publish(const struct gw_shm *shm, const struct gw_config *cfg, uint64_t gen);

/*
 * Worker: the generation slots its requests hold.  A worker may serve
 * requests that started on different generations at once (a reload
 * between them); each slot counts its requests, and the scoreboard entry
 * has a bit for every slot in use, so the master will not overwrite it.
 */
struct gw_gen_refs {
    const struct gw_shm *shm;
    struct gw_shm_worker *me;
    uint32_t n[GW_SHM_GEN_SLOTS];
};

/*
 * Take the current generation for one request; NULL when none was ever
 * published.  gw_shm_gen_release(refs, g) when the request is done.
 */
const struct gw_gen *gw_shm_gen_acquire(struct gw_gen_refs *refs);
void gw_shm_gen_release(struct gw_gen_refs *refs, const struct gw_gen *g);
/* Master: the current generation, which only the master replaces. */
const struct gw_gen *gw_shm_gen_current(const struct gw_shm *shm);

/*
 * The model catalogue (shm/catalogue.c): OpenAI's model object for m of
 * generation g ({"id","object","created","owned_by"}) with an "aigw"
 * member: type, context_length, pricing, targets with their status, and
 * the model's status ("ok", "degraded", "down") from health checks and
 * breakers in shm.  A new object, owned by the caller.
 */
struct json_object;
struct json_object *gw_shm_catalogue_model(const struct gw_shm *shm, const struct gw_gen *g,
                                           const struct gw_gen_model *m);

#endif
