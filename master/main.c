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
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <systemd/sd-daemon.h>

#include "master/master.h"

/* How long a graceful stop waits for workers before killing them. */
#define STOP_GRACE_MS 30000

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
 * and wait for them, killing those still there after the grace period.
 */
static void
pool_stop(struct gw_master_pool *pool, int sfd, bool graceful)
{
    int64_t deadline = gw_now_ms() + STOP_GRACE_MS;
    bool killed = false;

    pool->stopping = true;
    gw_master_pool_signal(pool, graceful ? SIGTERM : SIGQUIT);
    while (gw_master_pool_alive(pool) > 0) {
        struct pollfd pfd = {.fd = sfd, .events = POLLIN};
        int64_t left = deadline - gw_now_ms();
        if (left <= 0 && !killed) {
            gw_log(GW_LOG_WARN, "%d workers still busy after %d s; killing them",
                   gw_master_pool_alive(pool), STOP_GRACE_MS / 1000);
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
    }
}

/* The master's loop; returns the process exit status. */
static int
master_loop(struct gw_master_state *st, struct gw_master_pool *pool, int sfd, int cfd)
{
    bool graceful = true;

    for (;;) {
        long wait = gw_master_pool_spawn(pool);
        struct pollfd pfd[2] = {{.fd = sfd, .events = POLLIN}, {.fd = cfd, .events = POLLIN}};

        if (gw_master_pool_failed(pool)) {
            gw_log(GW_LOG_ERROR, "every worker failed fatally; stopping");
            return GW_EXIT_FATAL;
        }
        if (poll(pfd, 2, wait < 0 ? 5000 : (int)wait) < 0 && errno != EINTR) {
            gw_log(GW_LOG_ERROR, "poll: %s", strerror(errno));
            return 1;
        }
        if (pfd[1].revents & POLLIN)
            gw_master_control_serve(cfd, st);
        struct signalfd_siginfo si;
        while (read(sfd, &si, sizeof(si)) == sizeof(si)) {
            switch (si.ssi_signo) {
            case SIGCHLD:
                if (gw_master_pool_reap(pool) > 0) {
                    int dead = gw_store_reader_check(st->store);
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
                /* Reload builds a new configuration generation; that work
                 * lands with the shared-memory control plane. */
                gw_log(GW_LOG_WARN, "SIGHUP: reload is not supported yet; restart aigwd to "
                       "apply a new configuration");
                break;
            case SIGUSR1:
                /* Logs go to stderr: there is no file to reopen. */
                break;
            }
        }
    }
stop:
    sd_notify(0, "STOPPING=1");
    pool_stop(pool, sfd, graceful);
    return 0;
}

int
main(int argc, char **argv)
{
    const char *conf = GW_DEFAULT_CONFIG, *pidfile = NULL;
    bool test_only = false;
    struct gw_config *cfg = NULL;
    struct gw_store *store = NULL;
    struct gw_listeners listeners = {0};
    struct gw_master_pool pool = {0};
    unsigned char secret[GW_SECRET_LEN];
    char err[1024];
    int ch, sfd = -1, cfd = -1, status = 1;
    bool pid_written = false;

    gw_log_init("master");
    while ((ch = getopt(argc, argv, "c:hp:t")) != -1) {
        switch (ch) {
        case 'c': conf = optarg; break;
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
    if (gw_master_config_load(conf, &cfg, err, sizeof(err)) != 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    if (test_only) {
        fprintf(stderr, "%s: configuration is valid\n", conf);
        gw_config_free(cfg);
        return 0;
    }
    gw_log_level = cfg->log_level;

    if (gw_mkdir_p(cfg->state_dir, 0700) != 0 ||
        gw_secret_load(cfg->state_dir, true, secret) != 0 ||
        gw_store_open(cfg->state_dir, &store) != 0)
        goto out;
    /* Reader slots of processes of an earlier run that died. */
    gw_store_reader_check(store);
    /* Initialise libcurl (and OpenSSL) once here; each worker still makes
     * its own handles after fork. */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        gw_log(GW_LOG_ERROR, "curl_global_init failed");
        goto out;
    }
    if ((sfd = signals_block()) < 0 || (cfd = gw_master_control_open(cfg)) < 0 ||
        gw_master_listen_open(cfg, &listeners) != 0)
        goto out;
    if (pidfile != NULL) {
        if (pidfile_write(pidfile) != 0)
            goto out;
        pid_written = true;
    }
    if (gw_master_pool_create(&pool, cfg, &listeners, secret) != 0)
        goto out;

    struct gw_master_state st = {
        .cfg = cfg, .store = store, .secret = secret, .pool = &pool, .started = time(NULL)};
    gw_master_pool_spawn(&pool);
    gw_log(GW_LOG_INFO, "aigwd %s started: %d workers, %zu models, admin socket %s", GW_VERSION,
           cfg->workers, cfg->nmodels, cfg->admin_socket);
    sd_notifyf(0, "READY=1\nSTATUS=serving with %d workers\nMAINPID=%ld", cfg->workers,
               (long)getpid());
    status = master_loop(&st, &pool, sfd, cfd);
    gw_log(GW_LOG_INFO, "stopped");
out:
    if (cfd >= 0) {
        close(cfd);
        unlink(cfg->admin_socket);
    }
    if (pid_written)
        unlink(pidfile);
    gw_master_pool_destroy(&pool);
    gw_master_listen_close(&listeners);
    if (sfd >= 0)
        close(sfd);
    gw_store_close(store);
    curl_global_cleanup();
    gw_config_free(cfg);
    memset(secret, 0, sizeof(secret));
    return status;
}
