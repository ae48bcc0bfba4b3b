/*
 * main.c - aigwd: options, start-up, and the master's event loop.
 *
 * The master never serves a client.  It loads the configuration, binds
 * the sockets, forks the workers and then waits on a signalfd and the
 * admin socket: SIGCHLD replaces dead workers, SIGTERM/SIGINT stop
 * gracefully (workers finish the request in hand), SIGQUIT stops at once.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <systemd/sd-daemon.h>

#include "master/master.h"
#include "worker/worker.h"

/* Geometry of the shared-memory segment. */
/* Scoreboard entries beyond twice the pool: workers of a dead master. */
#define SHM_WORKERS_SPARE 64
#define SHM_STATS 8192
#define SHM_BUCKETS 16384
/* Quota counters: one per quota (scope and period) in use. */
#define SHM_QUOTAS 4096
#define SHM_RING 16384
#define SHM_GEN_SIZE (256 * 1024)

static const char usage_text[] = "usage: aigwd [-ht] [-c file] [-p pidfile]\n";

static void
usage_print(FILE *f)
{
    fputs(usage_text, f);
    if (f == stdout)
        fputs("\n"
              "  -c file     configuration file (default " GW_DEFAULT_CONFIG ")\n"
              "  -h          print this help and exit\n"
              "  -p pidfile  write the master's process id to pidfile\n"
              "  -t          check the configuration file and exit\n"
              "\n"
              "See aigwd(8) and aigw.yaml(5).\n",
              f);
}

static int
pidfile_write(const char *path)
{
    char tmp[4200], line[32];
    int fd, n;

    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        gw_log(GW_LOG_ERROR, "open(%s): %s", tmp, strerror(errno));
        return GW_EIO;
    }
    n = snprintf(line, sizeof(line), "%ld\n", (long)getpid());
    if (gw_write_all(fd, line, (size_t)n) != 0 || close(fd) != 0 || rename(tmp, path) != 0) {
        gw_log(GW_LOG_ERROR, "write(%s): %s", path, strerror(errno));
        unlink(tmp);
        return GW_EIO;
    }
    return 0;
}

static int
signals_block(void)
{
    sigset_t set;
    struct sigaction sa = {.sa_handler = SIG_IGN};

    sigaction(SIGPIPE, &sa, NULL);
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGQUIT);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGUSR1);
    sigprocmask(SIG_BLOCK, &set, NULL);
    int fd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    if (fd < 0)
        gw_log(GW_LOG_ERROR, "signalfd: %s", strerror(errno));
    return fd;
}

/*
 * Stop the pool: ask the workers to finish (graceful) or to quit at once,
 * and wait for them, killing those still there after shutdown_timeout.
 * Usage keeps being drained while they finish.
 */
static void
pool_stop(struct gw_master *m, int sfd, bool graceful)
{
    struct gw_master_pool *pool = &m->pool;
    long grace = m->cfg->shutdown_timeout_ms > 0 ? m->cfg->shutdown_timeout_ms : 30000;
    int64_t deadline = gw_now_ms() + grace;
    bool killed = false;

    pool->stopping = true;
    /* Take no new connection: with the workers' copies (closed on their
     * SIGTERM) gone, the kernel refuses it at once instead of queueing it
     * for nobody.  Under socket activation systemd keeps its copy and
     * queues connections for the next start, as it should. */
    gw_master_listen_close(&m->listeners);
    gw_master_pool_signal(pool, graceful ? SIGTERM : SIGQUIT);
    while (gw_master_pool_alive(pool) > 0) {
        struct pollfd pfd = {.fd = sfd, .events = POLLIN};
        int64_t left = deadline - gw_now_ms();
        if (left <= 0 && !killed) {
            gw_log(GW_LOG_WARN, "%d workers still busy after %ld ms; killing them",
                   gw_master_pool_alive(pool), grace);
            gw_master_pool_signal(pool, SIGKILL);
            killed = true;
        }
        poll(&pfd, 1, left > 0 ? (int)(left < 200 ? left : 200) : 200);
        struct signalfd_siginfo si;
        while (read(sfd, &si, sizeof(si)) == sizeof(si)) {
            if (si.ssi_signo == SIGQUIT && graceful) {
                graceful = false;
                gw_master_pool_signal(pool, SIGQUIT);
            }
        }
        gw_master_pool_reap(pool);
        gw_master_usage_drain(m);
    }
    gw_master_usage_drain(m);
}

/* Pet systemd's watchdog when WATCHDOG_USEC is set (sd_notify ignores
 * the message otherwise).  The loop wakes at least every 500 ms. */
static void
watchdog_ping(void)
{
    static int enabled = -1;
    uint64_t usec;

    if (enabled < 0)
        enabled = sd_watchdog_enabled(0, &usec) > 0;
    if (enabled)
        sd_notify(0, "WATCHDOG=1");
}

static void
reload_on_signal(struct gw_master *m)
{
    char err[1024];

    if (gw_master_reload(m, err, sizeof(err)) != 0)
        gw_log(GW_LOG_ERROR, "SIGHUP: %s", err);
}

/* The master's loop; returns the process exit status. */
static int
master_loop(struct gw_master *m, int sfd, int cfd)
{
    bool graceful = true;
    int64_t last_drain = gw_now_ms(), last_maintain = last_drain;
    long drain_every = GW_USAGE_DRAIN_MAX_MS;

    for (;;) {
        long wait = gw_master_pool_spawn(&m->pool);
        struct pollfd pfd[3] = {{.fd = sfd, .events = POLLIN},
                                {.fd = cfd, .events = POLLIN},
                                {.fd = m->ring_bell, .events = POLLIN}};

        if (gw_master_pool_failed(&m->pool)) {
            gw_log(GW_LOG_ERROR, "every worker failed fatally; stopping");
            return GW_EXIT_FATAL;
        }
        /* Usage reaches LMDB at least every drain_every, which follows
         * the rate records come in. */
        if (wait < 0 || wait > drain_every)
            wait = drain_every;
        long health_wait = gw_master_health_tick(m);
        if (health_wait >= 0 && health_wait < wait)
            wait = health_wait;
        if (poll(pfd, 3, (int)wait) < 0 && errno != EINTR) {
            gw_log(GW_LOG_ERROR, "poll: %s", strerror(errno));
            return 1;
        }
        if (pfd[1].revents & POLLIN)
            gw_master_control_serve(cfd, m);
        struct signalfd_siginfo si;
        while (read(sfd, &si, sizeof(si)) == sizeof(si)) {
            switch (si.ssi_signo) {
            case SIGCHLD:
                if (gw_master_pool_reap(&m->pool) > 0) {
                    gw_master_cache_reader_check(m);
                    int dead = gw_store_reader_check(m->store);
                    if (dead > 0)
                        gw_log(GW_LOG_DEBUG, "cleared %d stale LMDB readers", dead);
                }
                break;
            case SIGTERM:
            case SIGINT:
                gw_log(GW_LOG_INFO, "%s: stopping gracefully", strsignal((int)si.ssi_signo));
                goto stop;
            case SIGQUIT:
                gw_log(GW_LOG_INFO, "SIGQUIT: stopping now");
                graceful = false;
                goto stop;
            case SIGHUP:
                gw_log(GW_LOG_INFO, "SIGHUP: reloading %s", m->conf_path);
                reload_on_signal(m);
                break;
            case SIGUSR1:
                /* logrotate moved the files: open them again by name. */
                gw_log(GW_LOG_INFO, "SIGUSR1: reopening log files");
                gw_log_open(m->cfg->log_file);
                gw_master_pool_signal(&m->pool, SIGUSR1);
                break;
            }
        }
        int64_t since_drain = gw_now_ms() - last_drain;
        uint64_t rung = 0;
        if ((pfd[2].revents & POLLIN) && read(m->ring_bell, &rung, sizeof(rung)) < 0)
            rung = 0;
        if (since_drain >= drain_every / 2 || rung > 0) {
            gw_shm_ring_bell_reset(&m->shm);
            size_t n = gw_master_usage_drain(m);
            drain_every = gw_master_usage_drain_every(m->shm.hdr->nring, n, since_drain);
            last_drain = gw_now_ms();
        }
        if (gw_now_ms() - last_maintain >= 1000) {
            gw_master_pool_sweep(&m->pool);
            gw_master_pool_maintain(&m->pool);
            gw_master_quota_tick(m);
            gw_master_usage_maintain(m);
            gw_master_cache_tick(m);
            watchdog_ping();
            last_maintain = gw_now_ms();
        }
    }
stop:
    sd_notify(0, "STOPPING=1\nSTATUS=stopping");
    pool_stop(m, sfd, graceful);
    return 0;
}

/* Attach or create the segment, settle the usage ring, publish gen 1. */
/*
 * The scoreboard is sized from the pool: room for every worker of the
 * largest pool, twice over (a reload that replaces the pool runs old and
 * new workers side by side), and for the workers of a master that died.
 */
static uint64_t
scoreboard_size(const struct gw_config *cfg)
{
    uint64_t n = 2 * (uint64_t)(cfg->workers_max > cfg->workers ? cfg->workers_max : cfg->workers);

    return n + SHM_WORKERS_SPARE;
}

/*
 * A segment left with another geometry (the pool's maximum changed, or a
 * new version) still holds usage records: store them before it is made
 * anew, so that a restart with a bigger pool loses nothing.
 */
static void
shm_drain_old(struct gw_master *m, const char *name)
{
    struct gw_shm old;

    if (gw_shm_attach(name, &old) != 0)
        return;
    struct gw_shm keep = m->shm;
    m->shm = old;
    gw_master_usage_reconcile(m);
    size_t n = gw_master_usage_drain(m);
    if (n > 0)
        gw_log(GW_LOG_INFO, "stored %zu usage records from the earlier segment %s", n, name);
    m->shm = keep;
    gw_shm_close(&old);
}

/* Attach or create the segment, settle the usage ring, publish gen 1. */
static int
shm_setup(struct gw_master *m)
{
    struct gw_shm_geometry geo = {
        .nworkers = scoreboard_size(m->cfg),
        .nstats = SHM_STATS,
        .nbuckets = SHM_BUCKETS,
        .nquotas = SHM_QUOTAS,
        .nring = SHM_RING,
        .gen_size = SHM_GEN_SIZE,
    };
    char name[64];
    bool attached;
    int rc;

    gw_shm_name(m->cfg->state_dir, name, sizeof(name));
    shm_drain_old(m, name);
    if ((rc = gw_shm_open(name, &geo, &m->shm, &attached)) != 0)
        return rc;
    struct gw_shm_header *h = m->shm.hdr;
    if (attached) {
        gw_log(GW_LOG_INFO,
               "attached shared memory %s left by an earlier master (%llu usage "
               "records waiting)",
               name, (unsigned long long)(atomic_load(&h->ring_tail) - atomic_load(&h->ring_head)));
        gw_master_usage_reconcile(m);
        gw_master_usage_drain(m);
    } else {
        /* A fresh segment (a reboot): quota counters start from what the
         * stored usage of their period says. */
        gw_master_quota_seed_all(m);
    }
    atomic_store(&h->master_pid, getpid());
    atomic_store(&h->started, (int64_t)time(NULL));
    return gw_master_publish(m, m->cfg);
}

int
main(int argc, char **argv)
{
    static struct gw_master m;
    char *pidfile = NULL, *conf = NULL, *pidcopy = NULL;
    bool test_only = false;
    char err[1024];
    int ch, sfd = -1, cfd = -1, status = 1;
    bool pid_written = false;

    gw_log_init("master");
    gw_locale_c_thread(); /* the workers, forked from here, keep it */
    m.conf_path = GW_DEFAULT_CONFIG;
    m.listeners.metrics_fd = -1;
    while ((ch = getopt(argc, argv, "c:hp:t")) != -1) {
        switch (ch) {
        case 'c': m.conf_path = optarg; break;
        case 'h': usage_print(stdout); return 0;
        case 'p': pidfile = optarg; break;
        case 't': test_only = true; break;
        default: usage_print(stderr); return 1;
        }
    }
    if (optind != argc) {
        usage_print(stderr);
        return 1;
    }
    if (gw_master_config_load(m.conf_path, &m.cfg, err, sizeof(err)) != 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    if (test_only) {
        fprintf(stderr, "%s: configuration is valid\n", m.conf_path);
        gw_config_free(m.cfg);
        return 0;
    }
    gw_log_level = m.cfg->log_level;
    if (gw_log_open(m.cfg->log_file) != 0)
        goto out;
    gw_worker_park_setup(); /* the workers inherit what it read */
    /* Done with argv: keep copies of what points into it, and let the area
     * become the process title. */
    m.conf_path = conf = strdup(m.conf_path);
    if (pidfile != NULL)
        pidfile = pidcopy = strdup(pidfile);
    if (conf == NULL || (pidfile != NULL && pidcopy == NULL))
        goto out;
    gw_proctitle_init(argc, argv);
    gw_proctitle_set("aigwd: master -c %s", m.conf_path);
    m.pid = getpid();
    m.started = time(NULL);

    /* Root-only work first: the admin socket, the listening sockets
     * (bound here or passed by systemd). */
    if ((sfd = signals_block()) < 0 || (cfd = gw_master_control_open(m.cfg)) < 0 ||
        gw_master_listen_inherit(m.cfg, &m.listeners) != 0)
        goto out;
    m.master_fds[0] = cfd;
    m.master_fds[1] = sfd;
    if (pidfile != NULL) {
        if (pidfile_write(pidfile) != 0)
            goto out;
        pid_written = true;
    }
    /* Hand what the master keeps using to the configured user, and become
     * it before anything is created in state_dir or shared memory. */
    char shm_path[128];
    memcpy(shm_path, "/dev/shm", 8);
    gw_shm_name(m.cfg->state_dir, shm_path + 8, sizeof(shm_path) - 8);
    if (gw_mkdir_p(m.cfg->state_dir, 0700) != 0 ||
        gw_master_privs_chown(m.cfg, m.cfg->state_dir) != 0 ||
        gw_master_privs_chown(m.cfg, m.cfg->admin_socket) != 0 ||
        gw_master_privs_chown(m.cfg, shm_path) != 0 ||
        (m.cfg->log_file != NULL && gw_master_privs_chown(m.cfg, m.cfg->log_file) != 0) ||
        (m.cfg->access_file != NULL && gw_master_privs_chown(m.cfg, m.cfg->access_file) != 0) ||
        gw_master_capture_prepare(m.cfg) != 0 ||
        (m.cfg->capture_dir != NULL && gw_master_privs_chown(m.cfg, m.cfg->capture_dir) != 0) ||
        gw_master_privs_drop(m.cfg) != 0)
        goto out;

    char key_from[4096];
    if (gw_secret_load(m.cfg->state_dir, true, m.secret) != 0 ||
        gw_seal_key_load(m.cfg->provider_key_file, m.cfg->state_dir, m.provider_key, key_from,
                         sizeof(key_from)) != 0 ||
        gw_store_open(m.cfg->state_dir, &m.store) != 0)
        goto out;
    gw_log(GW_LOG_INFO, "provider credentials are sealed with the key in %s", key_from);
    /* Reader slots of processes of an earlier run that died. */
    gw_store_reader_check(m.store);
    if (shm_setup(&m) != 0 || gw_master_cache_start(&m) != 0)
        goto out;
    gw_master_usage_pace_init(&m);
    /* Initialise libcurl (and OpenSSL) once here; each worker still makes
     * its own handles after fork. */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        gw_log(GW_LOG_ERROR, "curl_global_init failed");
        goto out;
    }
    if (gw_master_health_create(&m) != 0)
        goto out;
    if ((m.ring_bell = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0) {
        gw_log(GW_LOG_ERROR, "eventfd: %s", strerror(errno));
        goto out;
    }
    if (gw_master_pool_create(&m.pool, &m, m.cfg->workers, m.cfg->workers_max) != 0)
        goto out;

    gw_master_pool_sweep(&m.pool);
    gw_master_pool_spawn(&m.pool);
    gw_log(GW_LOG_INFO,
           "aigwd %s started: %d workers, %zu models, generation %llu, admin "
           "socket %s",
           GW_VERSION, m.cfg->workers, m.cfg->nmodels,
           (unsigned long long)atomic_load(&m.shm.hdr->generation), m.cfg->admin_socket);
    sd_notifyf(0, "READY=1\nSTATUS=serving with %d workers\nMAINPID=%ld", m.cfg->workers,
               (long)getpid());
    status = master_loop(&m, sfd, cfd);
    gw_log(GW_LOG_INFO, "stopped");
out:
    if (cfd >= 0) {
        close(cfd);
        unlink(m.cfg->admin_socket);
    }
    if (pid_written)
        unlink(pidfile);
    gw_master_pool_destroy(&m.pool);
    gw_master_listen_close(&m.listeners);
    if (sfd >= 0)
        close(sfd);
    if (m.shm.hdr != NULL) {
        gw_master_usage_drain(&m);
        /* A clean stop with every record stored leaves nothing to recover:
         * remove the segment.  After a crash it stays for the next master. */
        bool drained = atomic_load(&m.shm.hdr->ring_head) == atomic_load(&m.shm.hdr->ring_tail);
        if (status == 0 && drained && gw_master_pool_alive(&m.pool) == 0)
            gw_shm_unlink(m.shm.name);
        gw_shm_close(&m.shm);
    }
    gw_store_close(m.store);
    gw_master_cache_stop(&m);
    gw_master_health_destroy(&m);
    curl_global_cleanup();
    gw_config_free(m.cfg);
    explicit_bzero(m.secret, sizeof(m.secret));
    explicit_bzero(m.provider_key, sizeof(m.provider_key));
    free(pidcopy);
    free(conf);
    return status;
}
