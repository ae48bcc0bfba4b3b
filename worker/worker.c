/*
 * worker.c - a worker process: its set-up after fork, the accept loop and
 * the connection loop.
 *
 * A worker serves up to workers.connections connections at once, each in
 * a State Threads coroutine (libst) with code that reads as blocking I/O:
 * where a connection would block (a client read or write, the upstream
 * transfer) it waits in gw_worker_poll, and the process's one event loop
 * runs the other connections meanwhile.  With workers.connections 1 (the
 * default) that is the classic pre-fork model: one connection per process,
 * a crash takes one request with it.
 *
 * A worker with no connection open waits in epoll_wait on the shared
 * listening sockets with EPOLLEXCLUSIVE, so a new connection wakes one
 * idle worker rather than all of them; one serving connections and with
 * room for more polls that epoll descriptor from its event loop.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <malloc.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include <st.h>

#include "worker/worker.h"

volatile sig_atomic_t gw_worker_stopping;
bool gw_worker_woken_on_stop;
static volatile sig_atomic_t reopen_logs;
/* Waits the worker's coroutines entered, each a turn of the event loop
 * for the others (see the end of connection_main's loop). */
static uint64_t waits_entered;

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
logs_reopen(struct gw_worker_proc *p)
{
    if (!reopen_logs)
        return;
    reopen_logs = 0;
    const struct gw_gen *g = gw_shm_gen_acquire(&p->gens);
    if (g != NULL)
        gw_log_open(gw_gen_str(g, g->log_file));
    gw_shm_gen_release(&p->gens, g);
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
    uint64_t served = w->proc->served;
    uint32_t index = (uint32_t)w->env->index & 0xff, prefix = w->proc->id_prefix;

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
    const struct gw_gen *g = gw_shm_gen_acquire(&w->proc->gens);

    if (g != NULL)
        w->limits = g->http;
    gw_shm_gen_release(&w->proc->gens, g);
}

/*
 * Publish the process's figures in its scoreboard entry: connections open,
 * requests in progress, room for more, and the state they make (busy while
 * any request runs, keepalive while connections wait for their next one),
 * also shown in the process title.
 */
static void
state_publish(struct gw_worker_proc *p)
{
    int state = gw_worker_stopping ? GW_WORKER_STOPPING
                : p->busy > 0      ? GW_WORKER_BUSY
                : p->conns > 0     ? GW_WORKER_KEEPALIVE
                                   : GW_WORKER_IDLE;

    atomic_store(&p->me->conns, p->conns);
    atomic_store(&p->me->busy, p->busy);
    atomic_store(&p->me->room, gw_worker_stopping ? 0 : p->env->connections - p->conns);
    if (p->state == state)
        return;
    /* Formatted once per state: a worker changes state twice a request. */
    static char titles[GW_WORKER_NSTATES][64];

    p->state = state;
    atomic_store(&p->me->state, state);
    if (titles[state][0] == '\0')
        snprintf(titles[state], sizeof(titles[state]), "aigwd: worker[%d] (%s)", p->env->index,
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

/* Can worker e take a new connection?  A live one with room; a stopping
 * one publishes no room (state_publish). */
static bool
worker_takes_more(struct gw_shm_worker *e)
{
    return atomic_load(&e->room) > 0 && atomic_load(&e->pid) > 0;
}

/*
 * Should an idle keep-alive connection make way for a new client?  Yes
 * when no worker has room for one: otherwise the new client would wait
 * for a keep-alive timeout while this worker does nothing.  Only asked
 * where a worker serves one connection at a time.
 */
static bool
no_idle_worker(void *ctx)
{
    const struct gw_worker *w = ctx;
    const struct gw_shm *shm = w->env->shm;

    for (uint64_t i = 0; i < shm->hdr->nworkers; i++) {
        if (worker_takes_more(gw_shm_worker(shm, i)))
            return false;
    }
    return true;
}

/* Which listener a connection came in on. */
enum listener_kind { LISTENER_CLIENT, LISTENER_METRICS, LISTENER_ADMIN };

static void
connection_serve(struct gw_worker *w, int fd, enum listener_kind kind)
{
    struct gw_worker_proc *p = w->proc;
    int one = 1;

    w->on_metrics = kind == LISTENER_METRICS;
    w->on_admin = kind == LISTENER_ADMIN;
    limits_refresh(w);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    gw_worker_http_init(&w->conn, fd, &w->limits);
    if (w->env->connections == 1) {
        w->conn.yield_fds = w->env->listen_fds;
        w->conn.nyield_fds = w->env->nlisten;
        w->conn.should_yield = no_idle_worker;
        w->conn.yield_ctx = w;
    }
    if (kind == LISTENER_CLIENT)
        w->conn.stream_body = gw_worker_media_body_streamed;

    for (;;) {
        uint64_t waits = waits_entered;
        struct gw_request req = {.arena = w->arena, .model_stat = -1, .target_stat = -1};
        int rc = gw_worker_http_read(&w->conn, &req);
        if (rc == GW_ECLOSED) {
            gw_arena_reset(w->arena);
            break;
        }
        p->served++;
        p->busy++;
        state_publish(p);
        atomic_store(&w->me->busy_since, (int64_t)time(NULL) * 1000);
        request_id_set(w, &req);
        if (rc != 0) {
            protocol_error(w, &req);
            if (w->conn.error == 413)
                gw_worker_http_linger(&w->conn);
            gw_arena_reset(w->arena);
            p->busy--;
            break;
        }
        /* Recycled after max_requests: this is the last one, and it says
         * "Connection: close" so the client does not reuse the socket. */
        if (w->env->max_requests > 0 && p->served >= w->env->max_requests)
            gw_worker_stopping = 1;
        /* The request runs on the generation current now, to its end. */
        w->gen = gw_shm_gen_acquire(&p->gens);
        if (w->gen != NULL)
            gw_log_level = w->gen->log_level; /* a reload may have changed it */
        rc = gw_worker_pipeline_run(w, &req);
        gw_shm_gen_release(&p->gens, w->gen);
        w->gen = NULL;
        atomic_fetch_add(&w->me->requests, 1);
        atomic_fetch_add(&w->env->shm->hdr->requests, 1);
        bool unread = gw_worker_http_body_unread(&w->conn);
        bool again = rc == 0 && req.keep_alive && !gw_worker_stopping && !unread;
        if (unread && rc == 0)
            gw_worker_http_linger(&w->conn);
        logs_reopen(p);
        gw_arena_reset(w->arena);
        p->busy--;
        state_publish(p);
        if (!again)
            break;
        /* Coroutines are not preempted: one whose client and upstream are
         * always ready by the time it looks would serve request after
         * request while the connections waiting on a descriptor starve
         * (they wake only when no coroutine can run).  One request per
         * turn, as an nginx worker handles each ready connection once per
         * pass of its event loop.  A request that waited (for its bytes,
         * for the upstream) has had its turn: a yield then would only add
         * a poll(2) that finds nothing, one a request at a fixed load. */
        if (p->conns > 1 && waits_entered == waits)
            gw_worker_yield();
    }
    gw_worker_http_fini(&w->conn);
    close(fd);
}

/* ------------------------------------------------------- the event loop */

#if defined(__SANITIZE_ADDRESS__)
/* LeakSanitizer, under `make asan`: libst allocates the descriptor of the
 * process's primordial thread in st_init and never frees it; it lives as
 * long as the process.  (A hook LSan calls, so it holds however aigwd is
 * started.) */
const char *__lsan_default_suppressions(void);
const char *
__lsan_default_suppressions(void)
{
    return "leak:libst.so\n";
}
#endif

/* Connection contexts kept for the next connections, with their upstream
 * connections open (as many as nginx's upstream keepalive of the bench). */
#define CONTEXTS_KEPT 64

/* A connection's stack: the whole integration suite passes with 64 KiB
 * (curl, OpenSSL, LMDB, json-c and PCRE2's JIT, whose default stack is
 * 32 KiB of this one), and no function of worker/ or shm/ may take more
 * than 16 KiB (-Wframe-larger-than, Makefile).  The sanitizers' frames
 * are larger.  Pages are touched only as deep as a connection goes. */
#ifndef CONN_STACK_SIZE
#if defined(__SANITIZE_ADDRESS__)
#define CONN_STACK_SIZE (2 * 1024 * 1024)
#else
#define CONN_STACK_SIZE (256 * 1024)
#endif
#endif

/* st_init has run: this is a worker process (not a unit test, not the
 * master's endpoint-test child), and waits go through the event loop. */
static bool st_ready;

/*
 * The worker's clock.  libst's event loop gives poll(2) the time to the
 * earliest deadline of its sleep queue in whole milliseconds, rounded
 * down, and so polls with a timeout of 0 while less than a millisecond is
 * left: every timed wait that runs out spent its last millisecond, half
 * of one on average, spinning at full CPU.  The accept loop's wait of
 * 200 ms did that five times a second in every worker; on the bench's
 * two CPUs, that CPU was the client's, the mock's or the other worker's,
 * and the request in flight took 0.8 ms more (tests/bench/README.md,
 * twelfth pass).  So a timed wait gives libst no deadline.  It enters
 * its own in the heap kept here; a timerfd armed at the earliest one, to
 * the nanosecond, is in the loop's poll set; and the clock coroutine
 * wakes what is due: a wait on a condition variable by signalling it, a
 * poll by interrupting it (st_poll then returns EINTR, and the wait
 * finds itself due).  A deadline that leaves the heap early (the wait
 * woke first) leaves the timerfd as it is: it fires once for nothing,
 * and is armed for the next.
 */
struct clock_wait {
    int64_t due_ns; /* CLOCK_MONOTONIC */
    st_thread_t waiter;
    st_cond_t cond; /* signalled when due; NULL: the waiter is interrupted */
    size_t at;      /* its place in the heap */
    bool due;       /* the clock woke it */
};

static int clock_fd = -1;
static int64_t clock_armed_ns = INT64_MAX; /* what clock_fd fires at */
static struct clock_wait **clock_heap;
static size_t clock_n, clock_cap;

static int64_t
clock_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static bool
clock_arm(int64_t due_ns)
{
    struct itimerspec its = {
        .it_value = {.tv_sec = due_ns / 1000000000, .tv_nsec = due_ns % 1000000000}};

    if (timerfd_settime(clock_fd, TFD_TIMER_ABSTIME, &its, NULL) != 0)
        return false;
    clock_armed_ns = due_ns;
    return true;
}

static void
clock_swap(size_t i, size_t j)
{
    struct clock_wait *t = clock_heap[i];

    clock_heap[i] = clock_heap[j];
    clock_heap[j] = t;
    clock_heap[i]->at = i;
    clock_heap[j]->at = j;
}

static void
clock_sift(size_t i)
{
    while (i > 0 && clock_heap[(i - 1) / 2]->due_ns > clock_heap[i]->due_ns) {
        clock_swap(i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
    for (;;) {
        size_t l = 2 * i + 1, m = i;
        if (l < clock_n && clock_heap[l]->due_ns < clock_heap[m]->due_ns)
            m = l;
        if (l + 1 < clock_n && clock_heap[l + 1]->due_ns < clock_heap[m]->due_ns)
            m = l + 1;
        if (m == i)
            return;
        clock_swap(i, m);
        i = m;
    }
}

static void clock_leave(struct clock_wait *w);

/* Enter w, due in timeout_us; false when it cannot (no clock, no memory,
 * a time past what the clock counts): the wait then gives libst its
 * deadline after all. */
static bool
clock_enter(struct clock_wait *w, int64_t timeout_us, st_cond_t cond)
{
    int64_t now = clock_now_ns();

    if (clock_fd < 0 || timeout_us > (INT64_MAX - now) / 1000)
        return false;
    if (clock_n == clock_cap) {
        size_t n = clock_cap > 0 ? 2 * clock_cap : 64;
        struct clock_wait **h = realloc(clock_heap, n * sizeof(*h));
        if (h == NULL)
            return false;
        clock_heap = h;
        clock_cap = n;
    }
    *w = (struct clock_wait){
        .due_ns = now + timeout_us * 1000, .waiter = st_thread_self(), .cond = cond, .at = clock_n};
    clock_heap[clock_n++] = w;
    clock_sift(w->at);
    if (w->due_ns < clock_armed_ns && !clock_arm(w->due_ns)) {
        clock_leave(w);
        return false;
    }
    return true;
}

/* Take w out of the heap, unless the clock did when it woke it. */
static void
clock_leave(struct clock_wait *w)
{
    if (w->due)
        return;
    size_t i = w->at;
    clock_n--;
    if (i != clock_n) {
        clock_swap(i, clock_n);
        clock_sift(i);
    }
}

static void *
clock_main(void *arg)
{
    (void)arg;
    for (;;) {
        struct pollfd pfd = {.fd = clock_fd, .events = POLLIN};
        uint64_t fired;
        if (st_poll(&pfd, 1, ST_UTIME_NO_TIMEOUT) <= 0 ||
            read(clock_fd, &fired, sizeof(fired)) != (ssize_t)sizeof(fired))
            continue;
        clock_armed_ns = INT64_MAX;
        int64_t now = clock_now_ns();
        while (clock_n > 0 && clock_heap[0]->due_ns <= now) {
            struct clock_wait *w = clock_heap[0];
            clock_leave(w);
            w->due = true;
            if (w->cond != NULL)
                st_cond_signal(w->cond);
            else
                st_thread_interrupt(w->waiter);
        }
        if (clock_n > 0)
            (void)clock_arm(clock_heap[0]->due_ns); /* valid times: it cannot fail */
    }
    return NULL;
}

static void
clock_start(void)
{
    clock_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (clock_fd < 0)
        gw_fatal("timerfd_create: %s", strerror(errno));
    if (st_thread_create(clock_main, NULL, 0, 64 * 1024) == NULL)
        gw_fatal("st_thread_create: %s", strerror(errno));
}

/*
 * Wait on cond for at most timeout_us (-1: no limit): 0 when signalled,
 * -1 with ETIME when the time ran out, -1 with EINTR when interrupted.
 */
static int
clock_cond_wait(st_cond_t cond, int64_t timeout_us)
{
    struct clock_wait w;

    if (timeout_us < 0)
        return st_cond_wait(cond);
    if (timeout_us == 0 || !clock_enter(&w, timeout_us, cond))
        return st_cond_timedwait(cond, (st_utime_t)timeout_us);
    int rc = st_cond_wait(cond), err = errno;
    clock_leave(&w);
    if (w.due) {
        errno = ETIME;
        return -1;
    }
    errno = err;
    return rc;
}

/* Sleep us microseconds (-1: until interrupted); -1 with EINTR when
 * interrupted. */
static int
clock_sleep(int64_t us)
{
    st_cond_t cond;

    if (us < 0)
        return st_usleep(ST_UTIME_NO_TIMEOUT);
    if (us == 0 || (cond = st_cond_new()) == NULL)
        return st_usleep((st_utime_t)us);
    int rc = clock_cond_wait(cond, us);
    int err = errno;
    st_cond_destroy(cond);
    errno = err;
    return rc != 0 && err == ETIME ? 0 : rc;
}

int
gw_worker_poll(struct pollfd *fds, size_t nfds, long timeout_ms)
{
    struct clock_wait w;

    if (!st_ready)
        return poll(fds, (nfds_t)nfds, timeout_ms < 0 ? -1 : (int)timeout_ms);
    waits_entered++;
    if (nfds == 0) /* nothing to watch (curl between two sockets): only the time */
        return clock_sleep(timeout_ms < 0 ? -1 : (int64_t)timeout_ms * 1000) != 0 ? -1 : 0;
    if (timeout_ms < 0)
        return st_poll(fds, (int)nfds, ST_UTIME_NO_TIMEOUT);
    if (timeout_ms == 0 || !clock_enter(&w, (int64_t)timeout_ms * 1000, NULL))
        return st_poll(fds, (int)nfds, (st_utime_t)timeout_ms * 1000);
    for (size_t i = 0; i < nfds; i++)
        fds[i].revents = 0; /* counted below after the clock's interrupt */
    int n = st_poll(fds, (int)nfds, ST_UTIME_NO_TIMEOUT), err = errno;
    clock_leave(&w);
    if (n < 0 && err == EINTR && w.due && !gw_worker_stopping) {
        /* The clock's interrupt; descriptors that became ready in the
         * same turn of the loop have their revents. */
        n = 0;
        for (size_t i = 0; i < nfds; i++)
            n += fds[i].revents != 0;
        return n;
    }
    errno = err;
    return n;
}

/*
 * The park set.  libst's event loop (Debian builds it with poll(2), no
 * epoll) hands the kernel every descriptor a coroutine waits on, each time
 * it waits: with 30 keep-alive clients idle between two requests, a poll
 * call registered and unregistered 30-odd sockets to learn that one was
 * ready, and at 10,000 requests a second that was a third of a worker's
 * CPU (perf; tests/bench/README.md); with 1,000 streams, a thousand
 * sockets for each event of each stream.  So in a worker of many
 * connections, a wait on a connection's own socket goes to an epoll
 * instance of the worker's own instead, and sleeps on a condition
 * variable kept per descriptor.  The park coroutine waits on that
 * instance in the loop's poll set, notes what it reports against the
 * descriptor, and wakes the wait it is for.  Where the poll set would be
 * small, a plain poll costs fewer system calls (no second wait), and the
 * wait is gw_worker_poll's: a client's wait parks from PARK_FROM_DEFAULT
 * connections in the worker (most of them idle between two requests, each
 * a wait), an upstream's from PARK_FROM_DEFAULT requests in progress (each
 * an upstream wait, at most).  AIGW_PARK_FROM in the environment sets
 * that number (aigwd(8)), read once by the master (gw_worker_park_setup)
 * and inherited by the workers it forks; 0 leaves the park set out.
 *
 * A descriptor is in the set in one of two ways:
 *  - for good, edge-triggered (PARK_EDGE): registered once for input and
 *    output, it is reported each time something arrives or room opens,
 *    whether a wait is under way or not, and what was reported waits in
 *    `ready` for the next wait, which takes it without sleeping.  No
 *    system call but the wait's own, as nginx does.  The caller must have
 *    found the socket drained for what it waits for (a read or write that
 *    came back short, or EAGAIN): a wait is for what comes after.  (A
 *    short read may have stopped at the peer's end of sending, reported
 *    with the bytes before it: that report, EPOLLRDHUP, lasts.)  What
 *    it takes may be stale (reported for bytes a read took since); the
 *    read then finds nothing, and the next wait sleeps.  The client's
 *    socket (http.c) and a connection of our own to an upstream (h1.c)
 *    are kept so (gw_worker_wait_client, gw_worker_wait_upstream).
 *  - for one report at a time (EPOLLONESHOT), re-armed by each wait with
 *    one EPOLL_CTL_MOD, which reports at once what is ready already: for
 *    curl's sockets, which curl reads as it likes, not to EAGAIN
 *    (gw_worker_wait_curl).
 * A wait with fewer connections (or requests) than PARK_FROM_DEFAULT
 * takes its descriptor out of the set (its reports would wake the park
 * coroutine for nothing): at a steady load, a descriptor is registered
 * once or never.
 */
#define PARK_FROM_DEFAULT 8

enum park_mode { PARK_ONESHOT, PARK_EDGE };

struct fd_park {
    st_cond_t cond;   /* made on the descriptor's first wait, kept */
    uint32_t ready;   /* reported and not taken by a wait (EPOLL* bits) */
    uint32_t waiting; /* what the wait asleep on cond is for; 0: none */
    bool registered;  /* in the park set */
    bool edge;        /* ... for good (PARK_EDGE) */
};

/* Not taken by a wait: they last.  EPOLLRDHUP (the peer sent all it
 * will) wakes every wait for input: a read that came back short may have
 * stopped at that end, which no later report would announce. */
#define PARK_LASTING (EPOLLERR | EPOLLHUP | EPOLLRDHUP)

static int park_ep = -1;
static long park_from = PARK_FROM_DEFAULT;
static struct fd_park *parks; /* by descriptor */
static size_t nparks;
static const int *park_conns, *park_busy; /* the worker's connections, requests in progress */

static short
poll_events_of(uint32_t e)
{
    return (short)((e & (EPOLLIN | EPOLLRDHUP) ? POLLIN : 0) | (e & EPOLLOUT ? POLLOUT : 0) |
                   (e & EPOLLERR ? POLLERR : 0) | (e & EPOLLHUP ? POLLHUP : 0));
}

static void *
park_main(void *arg)
{
    struct epoll_event evs[64];

    (void)arg;
    for (;;) {
        struct pollfd pfd = {.fd = park_ep, .events = POLLIN};
        if (st_poll(&pfd, 1, ST_UTIME_NO_TIMEOUT) <= 0)
            continue; /* interrupted: the worker is stopping, its waits wake anyway */
        int n = epoll_wait(park_ep, evs, (int)(sizeof(evs) / sizeof(evs[0])), 0);
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd < 0 || (size_t)fd >= nparks || parks[fd].cond == NULL)
                continue;
            struct fd_park *pk = &parks[fd];
            pk->ready |= evs[i].events;
            if (pk->ready & pk->waiting)
                st_cond_signal(pk->cond);
        }
    }
    return NULL;
}

void
gw_worker_park_setup(void)
{
    const char *from = getenv("AIGW_PARK_FROM");
    char *end;

    if (from == NULL || *from == '\0')
        return;
    errno = 0;
    long n = strtol(from, &end, 10);
    if (*end != '\0' || n < 0 || errno != 0)
        gw_log(GW_LOG_WARN, "AIGW_PARK_FROM=%s is not a number; %ld it is", from, park_from);
    else
        park_from = n;
}

static void
park_start(const int *conns, const int *busy)
{
    if (park_from == 0)
        return;
    park_conns = conns;
    park_busy = busy;
    park_ep = epoll_create1(EPOLL_CLOEXEC);
    if (park_ep < 0)
        gw_fatal("epoll_create1: %s", strerror(errno));
    if (st_thread_create(park_main, NULL, 0, 64 * 1024) == NULL)
        gw_fatal("st_thread_create: %s", strerror(errno));
}

/* Its place in the park set's table, made (with its condition variable)
 * on first use; NULL without memory. */
static struct fd_park *
park_of(int fd)
{
    if ((size_t)fd >= nparks) {
        size_t n = nparks > 0 ? nparks : 256;
        while (n <= (size_t)fd)
            n *= 2;
        struct fd_park *t = realloc(parks, n * sizeof(*t));
        if (t == NULL)
            return NULL;
        memset(t + nparks, 0, (n - nparks) * sizeof(*t));
        parks = t;
        nparks = n;
    }
    struct fd_park *pk = &parks[fd];
    if (pk->cond == NULL && (pk->cond = st_cond_new()) == NULL)
        return NULL;
    return pk;
}

static uint32_t
epoll_events_of(short events)
{
    return (events & POLLIN ? EPOLLIN | EPOLLRDHUP : 0u) | (events & POLLOUT ? EPOLLOUT : 0u);
}

/* Put fd in the park set for a wait on events: for good once (PARK_EDGE),
 * or armed for one report. */
static int
park_arm(struct fd_park *pk, int fd, short events, enum park_mode mode)
{
    bool edge = mode == PARK_EDGE;

    if (edge && pk->registered && pk->edge)
        return 0;
    struct epoll_event ev = {.events = edge ? EPOLLIN | EPOLLRDHUP | EPOLLOUT | EPOLLET
                                            : epoll_events_of(events) | EPOLLONESHOT,
                             .data.fd = fd};
    int op = pk->registered ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;

    /* A descriptor closed without gw_worker_fd_forget left the set when
     * it closed; its number, reused, may be registered already.  Either
     * way the set reports at once what is ready now. */
    if (epoll_ctl(park_ep, op, fd, &ev) != 0 &&
        (op = errno == ENOENT   ? EPOLL_CTL_ADD
              : errno == EEXIST ? EPOLL_CTL_MOD
                                : -1) >= 0 &&
        epoll_ctl(park_ep, op, fd, &ev) != 0)
        op = -1;
    pk->registered = op >= 0;
    pk->edge = edge && pk->registered;
    pk->ready = 0;
    return op >= 0 ? 0 : -1;
}

/* What of want the set reported, as poll(2) says it, taken (but
 * PARK_LASTING); 0: nothing. */
static short
park_take(struct fd_park *pk, uint32_t want)
{
    uint32_t got = pk->ready & want;

    pk->ready &= ~(got & ~(uint32_t)PARK_LASTING);
    return poll_events_of(got);
}

static int
wait_fd(int fd, short events, long timeout_ms, const int *many, enum park_mode mode)
{
    struct fd_park *pk = NULL;
    uint32_t want = epoll_events_of(events) | EPOLLERR | EPOLLHUP;

    if (park_ep < 0 || fd < 0 || *many < park_from)
        gw_worker_fd_forget(fd); /* its reports would wake the park set for nothing */
    else if ((pk = park_of(fd)) != NULL && park_arm(pk, fd, events, mode) != 0)
        pk = NULL;
    if (pk == NULL) {
        struct pollfd pfd = {.fd = fd, .events = events};
        int n = gw_worker_poll(&pfd, 1, timeout_ms);
        return n > 0 ? pfd.revents : n;
    }
    short got = park_take(pk, want);
    if (got != 0)
        return got; /* reported before the wait: no need to sleep */
    /* Armed for one report with the socket ready already, the set reports
     * it at once; the park coroutine runs when this one sleeps. */
    pk->waiting = want;
    waits_entered++;
    int rc = clock_cond_wait(pk->cond, timeout_ms < 0 ? -1 : (int64_t)timeout_ms * 1000),
        err = errno;
    pk = &parks[fd]; /* the table may have grown meanwhile */
    pk->waiting = 0;
    if ((got = park_take(pk, want)) != 0)
        return got;
    if (rc != 0 && err != ETIME) {
        errno = err; /* EINTR: the worker is stopping */
        return -1;
    }
    return 0;
}

int
gw_worker_wait_client(int fd, short events, long timeout_ms)
{
    return wait_fd(fd, events, timeout_ms, park_conns, PARK_EDGE);
}

int
gw_worker_wait_upstream(int fd, short events, long timeout_ms)
{
    return wait_fd(fd, events, timeout_ms, park_busy, PARK_EDGE);
}

int
gw_worker_wait_curl(int fd, short events, long timeout_ms)
{
    return wait_fd(fd, events, timeout_ms, park_busy, PARK_ONESHOT);
}

void
gw_worker_fd_forget(int fd)
{
    if (fd < 0 || (size_t)fd >= nparks || !parks[fd].registered)
        return;
    epoll_ctl(park_ep, EPOLL_CTL_DEL, fd, NULL);
    parks[fd].registered = parks[fd].edge = false;
    parks[fd].ready = 0;
}

void
gw_worker_yield(void)
{
    /* Due at once: runnable again after the connections that are now,
     * and after the wait that wakes those whose descriptors are ready. */
    if (st_ready)
        st_usleep(0);
}

void
gw_worker_sleep_us(long us)
{
    if (!st_ready) {
        usleep(us > 0 ? (useconds_t)us : 0);
        return;
    }
    waits_entered++;
    (void)clock_sleep(us);
}

void
gw_worker_calling(struct gw_worker *w, int32_t stat, int delta)
{
    struct gw_shm_worker *me = w->me;
    size_t free_at = GW_SHM_WORKER_CALLS;

    /* Only this process writes its entries: plain loads suffice to find
     * one; the atomics are for the master reading them after a crash. */
    for (size_t i = 0; i < GW_SHM_WORKER_CALLS; i++) {
        int32_t n = atomic_load(&me->calls[i].n);
        if (n > 0 && atomic_load(&me->calls[i].stat) == stat) {
            atomic_store(&me->calls[i].n, n + delta);
            return;
        }
        if (n == 0 && free_at == GW_SHM_WORKER_CALLS)
            free_at = i;
    }
    if (delta > 0 && free_at < GW_SHM_WORKER_CALLS) {
        atomic_store(&me->calls[free_at].stat, stat);
        atomic_store(&me->calls[free_at].n, delta);
    }
}

/* A context for a new connection: a free one (its curl handles keep their
 * upstream connections), else a new one. */
static struct gw_worker *
context_take(struct gw_worker_proc *p)
{
    struct gw_worker *w = p->free;

    if (w != NULL) {
        p->free = w->next_free;
        p->nfree--;
        return w;
    }
    if ((w = calloc(1, sizeof(*w))) == NULL)
        return NULL;
    w->env = p->env;
    w->me = p->me;
    w->proc = p;
    w->store = p->store;
    w->fd = -1;
    if (gw_worker_transfer_init(&w->xfer) != 0 || (w->curl = curl_easy_init()) == NULL ||
        (w->curl_passthru = curl_easy_init()) == NULL ||
        (w->arena = gw_arena_create(16384)) == NULL) {
        curl_easy_cleanup(w->curl);
        curl_easy_cleanup(w->curl_passthru);
        gw_worker_transfer_fini(&w->xfer);
        free(w);
        return NULL;
    }
    gw_worker_upstream_init(w->curl);
    w->next_all = p->all;
    w->pprev_all = &p->all;
    if (p->all != NULL)
        p->all->pprev_all = &w->next_all;
    p->all = w;
    return w;
}

static void
context_destroy(struct gw_worker *w)
{
    gw_arena_destroy(w->arena);
    gw_buf_free(&w->scratch);
    curl_easy_cleanup(w->curl);
    curl_easy_cleanup(w->curl_passthru);
    gw_worker_transfer_fini(&w->xfer); /* closes its upstream connections */
    free(w);
}

/*
 * A context whose connection ended waits for the next one, with its
 * upstream connections open, unless CONTEXTS_KEPT already wait: after a
 * burst of connections, what it held (curl handles, idle upstream
 * connections) goes.
 */
static void
context_put(struct gw_worker_proc *p, struct gw_worker *w)
{
    if (p->nfree < CONTEXTS_KEPT) {
        w->next_free = p->free;
        p->free = w;
        p->nfree++;
        return;
    }
    /* Out of the list of all in O(1): after a burst of 1,000 streams a
     * walk to each of them took 3% of the worker (perf). */
    *w->pprev_all = w->next_all;
    if (w->next_all != NULL)
        w->next_all->pprev_all = w->pprev_all;
    context_destroy(w);
    p->trim = true;
}

/*
 * The connection is over and connection_main's is the coroutine's
 * outermost frame: the stack pages below it held deeper frames.  libst
 * keeps a finished coroutine's stack for the next one, pages and all, so
 * a burst of 1,000 streams would keep ~90 MiB; give them back.  The
 * range stays STACK_TOP_SLACK under the stack's top (libst's thread
 * descriptor and this frame) and STACK_KEEP under this frame (madvise's
 * own frames).
 */
#define STACK_TOP_SLACK (32 * 1024)
#define STACK_KEEP (16 * 1024)

static void
stack_release(void)
{
    char here;
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t lo = ((uintptr_t)&here - CONN_STACK_SIZE + STACK_TOP_SLACK + page - 1) & ~(page - 1);
    uintptr_t hi = ((uintptr_t)&here - STACK_KEEP) & ~(page - 1);

    if (hi > lo)
        madvise((void *)lo, hi - lo, MADV_DONTNEED);
}

static void *
connection_main(void *arg)
{
    struct gw_worker *w = arg;
    struct gw_worker_proc *p = w->proc;

    connection_serve(w, w->fd, (enum listener_kind)w->kind);
    explicit_bzero(&w->auth_memo, sizeof(w->auth_memo));
    stack_release();
    w->fd = -1;
    w->thread = NULL;
    context_put(p, w);
    p->conns--;
    state_publish(p);
    st_cond_signal(p->room);
    return NULL;
}

/* Serve fd, which came in on a listener of kind, in a coroutine of its own. */
static void
connection_start(struct gw_worker_proc *p, int fd, enum listener_kind kind)
{
    struct gw_worker *w = context_take(p);

    if (w == NULL) {
        gw_log(GW_LOG_ERROR, "out of memory for a new connection; closed");
        close(fd);
        return;
    }
    w->fd = fd;
    w->kind = kind;
    p->conns++;
    state_publish(p);
    if ((w->thread = st_thread_create(connection_main, w, 0, CONN_STACK_SIZE)) == NULL) {
        gw_log(GW_LOG_ERROR, "st_thread_create: %s; connection closed", strerror(errno));
        close(fd);
        w->fd = -1;
        context_put(p, w);
        p->conns--;
        state_publish(p);
    }
}

/*
 * Accept balance.  EPOLLEXCLUSIVE wakes one worker waiting in epoll_wait,
 * but a worker serving connections watches the listening sockets from its
 * event loop, where every such worker is told of every new connection and
 * the one the kernel runs first takes it: wrk's 64 connections split
 * 20/44 as often as 32/32, and 32 opened at once by one client all went
 * to one worker.  Yet a worker has one CPU at most for its connections
 * (by hand, p99 9-13 ms in runs split unevenly, 6 ms in one split evenly;
 * tests/bench/README.md).
 * So a worker that has at least ACCEPT_SLACK more connections than another
 * live worker with room leaves the new connection to it, as nginx's
 * accept_disabled lets a worker with fewer free connections skip its turn.
 * It waits ACCEPT_DEFER_US and looks again; should the other not take the
 * connection within ACCEPT_DEFER_MAX_US (stopped, or too busy to run),
 * it takes it itself, so a connection is never left waiting on a balance.
 */
#define ACCEPT_SLACK 2
#define ACCEPT_DEFER_US 1000
#define ACCEPT_DEFER_MAX_US 5000

static bool
accept_leave_to_another(struct gw_worker_proc *p)
{
    const struct gw_shm *shm = p->env->shm;

    for (uint64_t i = 0; i < shm->hdr->nworkers; i++) {
        struct gw_shm_worker *e = gw_shm_worker(shm, i);
        if (e != p->me && worker_takes_more(e) && atomic_load(&e->conns) + ACCEPT_SLACK <= p->conns)
            return true;
    }
    return false;
}

/*
 * Wait for new connections and start them, as many as there is room for.
 * A worker with none open blocks in epoll_wait itself, where
 * EPOLLEXCLUSIVE wakes one idle worker per connection; one serving
 * connections waits in its event loop on the epoll descriptor, and leaves
 * a new connection to a worker with fewer (above).
 */
static void
accept_some(struct gw_worker_proc *p, int ep)
{
    const struct gw_worker_env *env = p->env;
    struct epoll_event evs[8];
    int n;

    if (p->conns == 0) {
        n = epoll_wait(ep, evs, 8, 1000);
    } else {
        struct pollfd pfd = {.fd = ep, .events = POLLIN};
        if (gw_worker_poll(&pfd, 1, 200) <= 0)
            return;
        for (long waited = 0; waited < ACCEPT_DEFER_MAX_US && accept_leave_to_another(p);
             waited += ACCEPT_DEFER_US) {
            gw_worker_sleep_us(ACCEPT_DEFER_US);
            if (gw_worker_poll(&pfd, 1, 0) <= 0)
                return; /* another worker took it */
        }
        n = epoll_wait(ep, evs, 8, 0);
    }
    for (int i = 0; i < n && !gw_worker_stopping && p->conns < env->connections; i++) {
        int fd = accept4(evs[i].data.fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ECONNABORTED)
                gw_log(GW_LOG_WARN, "accept: %s", strerror(errno));
            continue;
        }
        enum listener_kind kind =
            evs[i].data.fd == env->metrics_fd ? LISTENER_METRICS : LISTENER_CLIENT;
        for (size_t j = 0; j < env->nadmin; j++)
            if (evs[i].data.fd == env->admin_fds[j])
                kind = LISTENER_ADMIN;
        connection_start(p, fd, kind);
    }
}

/* Enough descriptors for every connection: the client's, the upstream's
 * (two while a fallback connects), the socket pair of each curl multi
 * handle (its wake-up channel), and the plain-HTTP connections it keeps
 * (GW_H1_IDLE_MAX, worker/h1.c). */
static void
fd_limit_raise(int connections)
{
    struct rlimit rl;
    rlim_t want = (rlim_t)connections * (6 + GW_H1_IDLE_MAX) + 256;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= want)
        return;
    rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > want ? want : rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur < want)
        gw_log(GW_LOG_WARN,
               "workers.connections %d wants %llu open files, the limit is %llu: connections "
               "past it are refused (raise LimitNOFILE)",
               connections, (unsigned long long)want, (unsigned long long)rl.rlim_cur);
}

void
gw_worker_main(const struct gw_worker_env *env)
{
    struct gw_worker_proc p = {
        .env = env, .me = gw_shm_worker(env->shm, (size_t)env->index), .state = -1};
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

    p.gens.shm = env->shm;
    p.gens.me = p.me;
    fd_limit_raise(env->connections);
    gw_worker_woken_on_stop = env->connections > 1;
    if (st_set_eventsys(ST_EVENTSYS_POLL) != 0 || st_init() != 0 ||
        (p.room = st_cond_new()) == NULL)
        gw_fatal("st_init: %s", strerror(errno));
    st_ready = true;
    clock_start();
    if (env->connections > 1)
        park_start(&p.conns, &p.busy);
    if (gw_store_open(env->cfg->state_dir, &p.store) != 0)
        exit(GW_EXIT_FATAL);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        gw_fatal("curl_global_init failed");
    if (gw_random_bytes(&p.id_prefix, sizeof(p.id_prefix)) != 0)
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
    atomic_store(&p.me->pid, getpid());
    atomic_store(&p.me->started, (int64_t)time(NULL));
    atomic_store(&p.me->requests, 0);
    state_publish(&p);
    gw_log(GW_LOG_DEBUG, "started, %d connections at most", env->connections);

    while (!gw_worker_stopping) {
        if (p.conns >= env->connections)
            clock_cond_wait(p.room, 1000 * 1000);
        else
            accept_some(&p, ep);
        /* After a burst, once its connections are gone: the heap the
         * destroyed contexts used goes back to the system. */
        if (p.trim && p.conns <= CONTEXTS_KEPT / 2) {
            p.trim = false;
            malloc_trim(0);
        }
        logs_reopen(&p);
        gw_worker_access_tick();
        if (getppid() != env->master)
            gw_worker_stopping = 1;
    }
    /* Stopping: connections waiting for their next request close now
     * (woken here), those with a request in hand finish it. */
    state_publish(&p);
    for (struct gw_worker *w = p.all; w != NULL; w = w->next_all)
        if (w->thread != NULL)
            st_thread_interrupt(w->thread);
    while (p.conns > 0) {
        clock_cond_wait(p.room, 100 * 1000);
        gw_worker_access_tick();
    }

    close(ep);
    while (p.all != NULL) {
        struct gw_worker *w = p.all;
        p.all = w->next_all;
        context_destroy(w);
    }
    st_cond_destroy(p.room);
    gw_worker_access_flush();
    curl_global_cleanup();
    gw_store_close(p.store);
    gw_cache_close(p.cache);
    exit(0);
}
