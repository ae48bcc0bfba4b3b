/*
 * worker.c - a worker process: its set-up after fork, the accept loop and
 * the connection loop.
 *
 * A worker serves one connection at a time with blocking I/O.  Idle
 * workers wait in epoll on the shared listening sockets with
 * EPOLLEXCLUSIVE, so a new connection wakes one idle worker rather than
 * all of them.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "worker/worker.h"

volatile sig_atomic_t gw_worker_stopping;
static volatile sig_atomic_t reopen_logs;

/* The listening sockets, for the signal handler to close. */
static const int *listen_fds;
static size_t nlisten_fds;
static int metrics_fd = -1;
static const int *admin_fds;
static size_t nadmin_fds;

/*
 * Stop: finish the request in hand, take no new one.  The listening
 * sockets are closed right here (close is async-signal-safe), so that no
 * connection queues up for a worker that will not accept it, and so that
 * a master started after this one's death can bind the addresses while
 * long streams still drain here.
 */
static void
on_term(int sig)
{
    (void)sig;
    if (!gw_worker_stopping) {
        for (size_t i = 0; i < nlisten_fds; i++)
            close(listen_fds[i]);
        if (metrics_fd >= 0)
            close(metrics_fd);
        for (size_t i = 0; i < nadmin_fds; i++)
            close(admin_fds[i]);
    }
    gw_worker_stopping = 1;
}

static void
on_usr1(int sig)
{
    (void)sig;
    reopen_logs = 1;
}

/* SIGUSR1 (logrotate): open the log files again by name. */
static void
logs_reopen(struct gw_worker *w)
{
    if (!reopen_logs)
        return;
    reopen_logs = 0;
    const struct gw_gen *g = gw_shm_gen_acquire(w->env->shm, w->me);
    if (g != NULL)
        gw_log_open(gw_gen_str(g, g->log_file));
    gw_shm_gen_release(w->me);
    gw_worker_access_reopen();
    gw_worker_capture_reopen();
}

static void
on_quit(int sig)
{
    (void)sig;
    _exit(0);
}

static void
signals_setup(void)
{
    struct sigaction sa;
    sigset_t all;

    memset(&sa, 0, sizeof(sa));
    sigemptyset(&sa.sa_mask);
    /* No SA_RESTART: a blocking wait must return so the flag is seen. */
    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, NULL);
    sa.sa_handler = on_quit;
    sigaction(SIGQUIT, &sa, NULL);
    sa.sa_handler = on_usr1;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGUSR1, &sa, NULL);
    sa.sa_flags = 0;
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    /* Ctrl-C reaches the whole process group; the master decides. */
    sigaction(SIGINT, &sa, NULL);
    sa.sa_handler = SIG_DFL;
    sigaction(SIGCHLD, &sa, NULL);
    /* The master blocks signals for its signalfd; a child must not. */
    sigemptyset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL);
}

/* Take the client's x-request-id when it is short and plain, else make one. */
static void
request_id_set(struct gw_worker *w, struct gw_request *req)
{
    const char *given = gw_worker_http_header(req, "x-request-id");
    size_t n = given ? strlen(given) : 0;

    if (n > 0 && n < sizeof(req->id) &&
        strspn(given, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:") == n) {
        memcpy(req->id, given, n + 1);
        return;
    }
    /* "%08x%02x%010llx" of prefix, worker index and count, without printf */
    static const char hex[] = "0123456789abcdef";
    char *p = req->id + 20;
    uint64_t served = w->served;
    uint32_t index = (uint32_t)w->env->index & 0xff, prefix = w->id_prefix;

    *p = '\0';
    for (int i = 0; i < 10; i++, served >>= 4)
        *--p = hex[served & 15];
    for (int i = 0; i < 2; i++, index >>= 4)
        *--p = hex[index & 15];
    for (int i = 0; i < 8; i++, prefix >>= 4)
        *--p = hex[prefix & 15];
}

/* Copy the HTTP limits of the current generation for a new connection. */
static void
limits_refresh(struct gw_worker *w)
{
    const struct gw_gen *g = gw_shm_gen_acquire(w->env->shm, w->me);

    if (g != NULL)
        w->limits = g->http;
    gw_shm_gen_release(w->me);
}

static void
state_set(struct gw_worker *w, enum gw_worker_state state)
{
    if (atomic_load(&w->me->state) == (int32_t)state)
        return;
    /* Formatted once per state: a worker changes state twice a request. */
    static char titles[GW_WORKER_NSTATES][64];

    atomic_store(&w->me->state, state);
    if (titles[state][0] == '\0')
        snprintf(titles[state], sizeof(titles[state]), "aigwd: worker[%d] (%s)", w->env->index,
                 gw_shm_worker_state_names[state]);
    gw_proctitle_put(titles[state]);
}

/* Answer a request the parser refused (bad, too large, too slow). */
static void
protocol_error(struct gw_worker *w, struct gw_request *req)
{
    int status = w->conn.error;

    req->keep_alive = false;
    gw_worker_http_error(&w->conn, req, status, "invalid_request_error",
                         status == 413   ? "request_too_large"
                         : status == 431 ? "headers_too_large"
                         : status == 408 ? "request_timeout"
                                         : "bad_request",
                         NULL, "%s",
                         status == 413 && w->conn.body_streamed
                             ? "The upload exceeds http.max_upload_size."
                         : status == 413 ? "The request body exceeds http.max_body_size."
                         : status == 431 ? "The request headers exceed http.max_header_size."
                         : status == 408 ? "The request was not received in time."
                                         : "The request is not valid HTTP/1.1.");
    gw_log(GW_LOG_INFO, "req=%s status=%d (%s)", req->id, status, gw_worker_http_reason(status));
}

/*
 * Should an idle keep-alive connection make way for a new client?  Yes
 * when no worker is waiting for connections: otherwise the new client
 * would wait for a keep-alive timeout while this worker does nothing.
 */
static bool
no_idle_worker(void *ctx)
{
    const struct gw_worker *w = ctx;
    const struct gw_shm *shm = w->env->shm;

    for (uint64_t i = 0; i < shm->hdr->nworkers; i++) {
        struct gw_shm_worker *e = gw_shm_worker(shm, i);
        if (atomic_load(&e->state) == GW_WORKER_IDLE && atomic_load(&e->pid) > 0)
            return false;
    }
    return true;
}

/* Which listener a connection came in on. */
enum listener_kind { LISTENER_CLIENT, LISTENER_METRICS, LISTENER_ADMIN };

static void
connection_serve(struct gw_worker *w, int fd, enum listener_kind kind)
{
    int one = 1;

    w->on_metrics = kind == LISTENER_METRICS;
    w->on_admin = kind == LISTENER_ADMIN;
    state_set(w, GW_WORKER_KEEPALIVE);
    limits_refresh(w);
    struct timeval tv = {.tv_sec = w->limits.write_timeout_ms / 1000,
                         .tv_usec = (w->limits.write_timeout_ms % 1000) * 1000};
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    gw_worker_http_init(&w->conn, fd, &w->limits);
    w->conn.yield_fds = w->env->listen_fds;
    w->conn.nyield_fds = w->env->nlisten;
    w->conn.should_yield = no_idle_worker;
    if (kind == LISTENER_CLIENT)
        w->conn.stream_body = gw_worker_media_body_streamed;
    w->conn.yield_ctx = w;

    for (;;) {
        struct gw_request req = {.arena = w->arena, .model_stat = -1, .target_stat = -1};
        req.start_us = gw_now_us();
        int rc = gw_worker_http_read(&w->conn, &req);
        if (rc == GW_ECLOSED) {
            gw_arena_reset(w->arena);
            break;
        }
        w->served++;
        state_set(w, GW_WORKER_BUSY);
        atomic_store(&w->me->busy_since, (int64_t)time(NULL) * 1000);
        request_id_set(w, &req);
        if (rc != 0) {
            protocol_error(w, &req);
            if (w->conn.error == 413)
                gw_worker_http_linger(&w->conn);
            gw_arena_reset(w->arena);
            break;
        }
        /* Recycled after max_requests: this is the last one, and it says
         * "Connection: close" so the client does not reuse the socket. */
        if (w->env->max_requests > 0 && w->served >= w->env->max_requests)
            gw_worker_stopping = 1;
        /* The request runs on the generation current now, to its end. */
        w->gen = gw_shm_gen_acquire(w->env->shm, w->me);
        if (w->gen != NULL)
            gw_log_level = w->gen->log_level; /* a reload may have changed it */
        rc = gw_worker_pipeline_run(w, &req);
        gw_shm_gen_release(w->me);
        w->gen = NULL;
        atomic_fetch_add(&w->me->requests, 1);
        atomic_fetch_add(&w->env->shm->hdr->requests, 1);
        bool unread = gw_worker_http_body_unread(&w->conn);
        bool again = rc == 0 && req.keep_alive && !gw_worker_stopping && !unread;
        if (unread && rc == 0)
            gw_worker_http_linger(&w->conn);
        logs_reopen(w);
        gw_arena_reset(w->arena);
        state_set(w, gw_worker_stopping ? GW_WORKER_STOPPING
                     : again            ? GW_WORKER_KEEPALIVE
                                        : GW_WORKER_IDLE);
        if (!again)
            break;
    }
    gw_worker_http_fini(&w->conn);
    close(fd);
    if (!gw_worker_stopping)
        state_set(w, GW_WORKER_IDLE);
}

void
gw_worker_main(const struct gw_worker_env *env)
{
    struct gw_worker w = {.env = env, .me = gw_shm_worker(env->shm, (size_t)env->index)};
    char who[32];
    int ep = -1;

    snprintf(who, sizeof(who), "worker[%d]", env->index);
    gw_log_init(who);
    /* The admin socket and the signalfd are the master's alone: a worker
     * holding them would keep a dead master's socket answering. */
    for (size_t i = 0; i < env->nmaster_fds; i++)
        close(env->master_fds[i]);
    listen_fds = env->listen_fds;
    nlisten_fds = env->nlisten;
    metrics_fd = env->metrics_fd;
    admin_fds = env->admin_fds;
    nadmin_fds = env->nadmin;
    signals_setup();
    /* Die with the master; and if it is already gone, do not start. */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != env->master)
        exit(0);

    if (gw_store_open(env->cfg->state_dir, &w.store) != 0)
        exit(GW_EXIT_FATAL);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK || (w.curl = curl_easy_init()) == NULL ||
        (w.curl_passthru = curl_easy_init()) == NULL || (w.multi = curl_multi_init()) == NULL)
        gw_fatal("curl_easy_init failed");
    gw_worker_upstream_init(w.curl);
    gw_worker_transfer_init(w.multi);
    w.arena = gw_arena_create(16384);
    if (gw_random_bytes(&w.id_prefix, sizeof(w.id_prefix)) != 0)
        exit(GW_EXIT_FATAL);

    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        gw_fatal("epoll_create1: %s", strerror(errno));
    for (size_t i = 0; i <= env->nlisten + env->nadmin; i++) {
        int fd = i < env->nlisten    ? env->listen_fds[i]
                 : i == env->nlisten ? env->metrics_fd
                                     : env->admin_fds[i - env->nlisten - 1];
        if (fd < 0)
            continue;
        struct epoll_event ev = {.events = EPOLLIN | EPOLLEXCLUSIVE, .data.fd = fd};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0)
            gw_fatal("epoll_ctl(%d): %s", fd, strerror(errno));
    }
    atomic_store(&w.me->pid, getpid());
    atomic_store(&w.me->started, (int64_t)time(NULL));
    atomic_store(&w.me->requests, 0);
    atomic_store(&w.me->calling, -1);
    state_set(&w, GW_WORKER_IDLE);
    gw_log(GW_LOG_DEBUG, "started");

    while (!gw_worker_stopping) {
        struct epoll_event evs[8];
        int n = epoll_wait(ep, evs, 8, 1000);
        logs_reopen(&w);
        if (getppid() != env->master)
            break;
        for (int i = 0; i < n && !gw_worker_stopping; i++) {
            int fd = accept4(evs[i].data.fd, NULL, NULL, SOCK_CLOEXEC);
            if (fd < 0) {
                if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR &&
                    errno != ECONNABORTED)
                    gw_log(GW_LOG_WARN, "accept: %s", strerror(errno));
                continue;
            }
            enum listener_kind kind =
                evs[i].data.fd == env->metrics_fd ? LISTENER_METRICS : LISTENER_CLIENT;
            for (size_t j = 0; j < env->nadmin; j++)
                if (evs[i].data.fd == env->admin_fds[j])
                    kind = LISTENER_ADMIN;
            connection_serve(&w, fd, kind);
        }
    }
    state_set(&w, GW_WORKER_STOPPING);
    close(ep);
    gw_arena_destroy(w.arena);
    gw_buf_free(&w.scratch);
    curl_easy_cleanup(w.curl);
    curl_easy_cleanup(w.curl_passthru);
    curl_multi_cleanup(w.multi);
    curl_global_cleanup();
    gw_store_close(w.store);
    gw_cache_close(w.cache);
    exit(0);
}
