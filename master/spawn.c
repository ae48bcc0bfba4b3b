/*
 * spawn.c - the worker pool: forking workers into slots, reaping them and
 * replacing the ones that die.
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "master/master.h"
#include "worker/worker.h"

/* A worker that dies sooner than this after its start died young. */
#define POOL_YOUNG_MS 1000
#define POOL_BACKOFF_MIN_MS 100
#define POOL_BACKOFF_MAX_MS 30000

int
gw_master_pool_create(struct gw_master_pool *p, const struct gw_config *cfg,
                      const struct gw_listeners *l, const unsigned char *secret)
{
    memset(p, 0, sizeof(*p));
    p->slots = calloc((size_t)cfg->workers, sizeof(*p->slots));
    if (p->slots == NULL)
        return GW_ENOMEM;
    p->n = cfg->workers;
    p->cfg = cfg;
    p->listeners = l;
    p->secret = secret;
    p->master = getpid();
    return 0;
}

void
gw_master_pool_destroy(struct gw_master_pool *p)
{
    free(p->slots);
    p->slots = NULL;
    p->n = 0;
}

static int
pool_fork(struct gw_master_pool *p, int i)
{
    pid_t pid = fork();

    if (pid < 0) {
        gw_log(GW_LOG_ERROR, "fork: %s", strerror(errno));
        return GW_EIO;
    }
    if (pid == 0) {
        struct gw_worker_env env = {
            .index = i,
            .master = p->master,
            .cfg = p->cfg,
            .listen_fds = p->listeners->fds,
            .nlisten = p->listeners->n,
            .secret = p->secret,
        };
        gw_worker_main(&env);
    }
    p->slots[i].pid = pid;
    p->slots[i].started_ms = gw_now_ms();
    gw_log(GW_LOG_DEBUG, "worker[%d] started, pid %ld", i, (long)pid);
    return 0;
}

long
gw_master_pool_spawn(struct gw_master_pool *p)
{
    int64_t now = gw_now_ms();
    long next = -1;

    if (p->stopping)
        return -1;
    for (int i = 0; i < p->n; i++) {
        struct gw_pool_slot *s = &p->slots[i];
        if (s->pid != 0 || s->fatal)
            continue;
        if (s->respawn_at_ms > now) {
            long wait = (long)(s->respawn_at_ms - now);
            if (next < 0 || wait < next)
                next = wait;
            continue;
        }
        if (pool_fork(p, i) != 0) {
            s->respawn_at_ms = now + POOL_BACKOFF_MIN_MS;
            if (next < 0 || next > POOL_BACKOFF_MIN_MS)
                next = POOL_BACKOFF_MIN_MS;
        }
    }
    return next;
}

/* Decide what happens to slot s after its worker exited with status. */
static void
slot_exited(struct gw_master_pool *p, int i, int status)
{
    struct gw_pool_slot *s = &p->slots[i];
    int64_t now = gw_now_ms();
    bool abnormal = !WIFEXITED(status) || WEXITSTATUS(status) != 0;

    s->pid = 0;
    if (WIFEXITED(status) && WEXITSTATUS(status) == GW_EXIT_FATAL) {
        s->fatal = true;
        gw_log(GW_LOG_ERROR, "worker[%d] exited with a fatal error; not restarting it", i);
        return;
    }
    if (p->stopping)
        return;
    if (WIFSIGNALED(status))
        gw_log(GW_LOG_WARN, "worker[%d] killed by signal %d (%s); restarting it", i,
               WTERMSIG(status), strsignal(WTERMSIG(status)));
    else if (abnormal)
        gw_log(GW_LOG_WARN, "worker[%d] exited with status %d; restarting it", i,
               WEXITSTATUS(status));
    if (abnormal && now - s->started_ms < POOL_YOUNG_MS) {
        long delay = POOL_BACKOFF_MIN_MS << (s->failures < 9 ? s->failures : 9);
        if (delay > POOL_BACKOFF_MAX_MS)
            delay = POOL_BACKOFF_MAX_MS;
        s->failures++;
        s->respawn_at_ms = now + delay;
        gw_log(GW_LOG_WARN, "worker[%d] died %u times in a row right after starting; next try "
               "in %ld ms", i, s->failures, delay);
    } else {
        s->failures = 0;
        s->respawn_at_ms = now;
    }
}

int
gw_master_pool_reap(struct gw_master_pool *p)
{
    int status, reaped = 0;
    pid_t pid;

    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        reaped++;
        for (int i = 0; i < p->n; i++) {
            if (p->slots[i].pid == pid) {
                slot_exited(p, i, status);
                break;
            }
        }
    }
    return reaped;
}

void
gw_master_pool_signal(struct gw_master_pool *p, int sig)
{
    for (int i = 0; i < p->n; i++)
        if (p->slots[i].pid > 0 && kill(p->slots[i].pid, sig) != 0 && errno != ESRCH)
            gw_log(GW_LOG_WARN, "kill(%ld, %d): %s", (long)p->slots[i].pid, sig,
                   strerror(errno));
}

int
gw_master_pool_alive(const struct gw_master_pool *p)
{
    int n = 0;

    for (int i = 0; i < p->n; i++)
        if (p->slots[i].pid > 0)
            n++;
    return n;
}

bool
gw_master_pool_failed(const struct gw_master_pool *p)
{
    for (int i = 0; i < p->n; i++)
        if (!p->slots[i].fatal)
            return false;
    return p->n > 0;
}
