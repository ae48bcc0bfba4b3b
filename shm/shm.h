/*
 * shm.h - what every aigw process shares: error codes, logging, memory
 * arenas and buffers, the running configuration's types, the LMDB state
 * store, API key hashing and the admin protocol framing.
 *
 * The shared-memory segment itself (routing tables, buckets, breakers,
 * usage ring) joins this folder with the control-plane work; until then
 * workers read the configuration they inherited from the master at fork.
 */
#ifndef GW_SHM_H
#define GW_SHM_H

#include <stdarg.h>
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
    GW_ENOMEM = -1,    /* out of memory */
    GW_EIO = -2,       /* system call failed; errno was logged */
    GW_EINVAL = -3,    /* invalid argument or input */
    GW_ENOENT = -4,    /* no such object */
    GW_EEXIST = -5,    /* object exists */
    GW_ETIMEDOUT = -6, /* deadline passed */
    GW_ETOOBIG = -7,   /* input over a configured limit */
    GW_EPROTO = -8,    /* peer broke the protocol */
    GW_EPERM = -9,     /* caller may not do this */
    GW_ECLOSED = -10,  /* peer closed the connection */
    GW_ECONFIG = -11,  /* configuration invalid */
    GW_ESTORE = -12,   /* LMDB failure */
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
};

struct gw_provider {
    char *name;
    enum gw_provider_type type;
    char *base_url;     /* without a trailing slash */
    char *api_key_env;  /* name of the environment variable, or NULL */
    char *api_key_file; /* path of a file holding the key, or NULL */
    char *api_key;      /* the resolved secret, or NULL: never log it */
};

struct gw_timeouts {
    long connect_ms;    /* TCP (+TLS) connect to the upstream */
    long first_byte_ms; /* request sent -> first response byte */
    long idle_ms;       /* longest silence while receiving */
    long total_ms;      /* whole upstream exchange */
};

struct gw_target {
    size_t provider; /* index into cfg->providers */
    char *model;     /* the model name the provider expects */
};

struct gw_model {
    char *name; /* the name clients send */
    struct gw_target *targets;
    size_t ntargets;
    struct gw_timeouts timeouts;
};

struct gw_http_limits {
    size_t max_header_size;  /* request line + headers; over it: 431 */
    size_t max_body_size;    /* decoded body; over it: 413 */
    long keepalive_timeout_ms; /* idle between requests; then close */
    long read_timeout_ms;    /* silence inside a request; then 408 */
    long write_timeout_ms;   /* a client that stops reading; then close */
};

struct gw_config {
    struct gw_arena *arena;
    char *path;
    char **listen; /* "host:port" strings */
    size_t nlisten;
    char *state_dir;
    char *admin_socket;
    unsigned admin_mode; /* permission bits of the admin socket */
    int workers;
    int log_level;
    bool access_log;
    struct gw_http_limits http;
    struct gw_timeouts timeouts; /* defaults for models */
    size_t max_response_size;    /* buffered (non-streaming) upstream body */
    struct gw_provider *providers;
    size_t nproviders;
    struct gw_model *models;
    size_t nmodels;
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
    char *prefix; /* first characters of the secret, to recognise it */
    char **models; /* allowed model names; nmodels == 0 means all */
    size_t nmodels;
    bool disabled;
    int64_t created; /* unix seconds */
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

/* True when key may call model (by the key's own allow list). */
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

#endif
