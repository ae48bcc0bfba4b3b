/*
 * spawn.c - the worker pool: forking workers into slots, reaping them,
 * replacing the ones that die, and retiring whole pools on reload.
 */
#include <errno.h>
#include <sched.h>
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

/*
 * workers.cpu_affinity.  The master shares the CPUs with the workers, and
 * on the CPUs of a busy worker its usage drains delay that worker's
 * requests (master/usage.c; on the 16-core machine of
 * tests/bench/README.md, p99 1.5 ms with the master on a core of its own
 * against 2.4 ms paced on the workers' cores).  With cpu_affinity, slot i
 * of a pool of max slots runs on CPU n - max + i of the n CPUs aigwd was
 * started on, and the master on the n - max CPUs left over; with none
 * left over, slots take the CPUs in turn and the master keeps them all.
 */
static int
cpu_nth(const cpu_set_t *set, int nth)
{
    for (int cpu = 0; cpu < CPU_SETSIZE; cpu++)
        if (CPU_ISSET(cpu, set) && nth-- == 0)
            return cpu;
    return -1;
}

static int
cpu_of_slot(const struct gw_master_pool *p, int i)
{
    int n = CPU_COUNT(&p->cpus);

    if (n == 0)
        return -1;
    return cpu_nth(&p->cpus, p->n < n ? n - p->n + i : i % n);
}

const char *
gw_master_cpus_text(const cpu_set_t *set, char *out, size_t len)
{
    size_t used = 0;

    out[0] = '\0';
    for (int cpu = 0; cpu < CPU_SETSIZE && used < len; cpu++) {
        if (!CPU_ISSET(cpu, set))
            continue;
        int last = cpu;
        while (last + 1 < CPU_SETSIZE && CPU_ISSET(last + 1, set))
            last++;
        int n = snprintf(out + used, len - used, last > cpu ? "%s%d-%d" : "%s%d", used ? "," : "",
                         cpu, last);
        used += n > 0 ? (size_t)n : 0;
        cpu = last;
    }
    return out;
}

/* The master's own CPUs for the pool as it is now: those left over, or
 * back to all of them when a reload turned cpu_affinity off. */
static void
cpus_master_set(struct gw_master_pool *p)
{
    int n = CPU_COUNT(&p->cpus);
    cpu_set_t set = p->cpus;

    if (n == 0 || (!p->m->cfg->worker_cpu_affinity && !p->pinned))
        return;
    p->pinned = p->m->cfg->worker_cpu_affinity;
    if (p->pinned && p->n < n) {
        cpu_set_t workers;
        char wtext[256], mtext[256];
        CPU_ZERO(&set);
        for (int i = 0; i < n - p->n; i++)
            CPU_SET(cpu_nth(&p->cpus, i), &set);
        CPU_XOR(&workers, &p->cpus, &set);
        gw_log(GW_LOG_INFO,
               "workers.cpu_affinity: %d worker slots on CPUs %s, one each; the master on CPUs %s",
               p->n, gw_master_cpus_text(&workers, wtext, sizeof(wtext)),
               gw_master_cpus_text(&set, mtext, sizeof(mtext)));
    } else if (p->pinned) {
        gw_log(
            GW_LOG_INFO,
            "workers.cpu_affinity: %d worker slots on %d CPUs, in turn; the master on all of them",
            p->n, n);
    }
    if (sched_setaffinity(0, sizeof(set), &set) != 0)
        gw_log(GW_LOG_WARN, "sched_setaffinity (master): %s", strerror(errno));
}

/* Slots for up to max workers, the first start of them wanted. */
static struct gw_pool_slot *
slots_new(int start, int max)
{
    struct gw_pool_slot *slots = calloc((size_t)max, sizeof(*slots));

    for (int i = 0; slots != NULL && i < max; i++) {
        slots[i].sb = -1;
        slots[i].wanted = i < start;
    }
    return slots;
}

int
gw_master_pool_create(struct gw_master_pool *p, struct gw_master *m, int start, int max)
{
    memset(p, 0, sizeof(*p));
    if (max < start)
        max = start;
    if ((p->slots = slots_new(start, max)) == NULL)
        return GW_ENOMEM;
    p->n = max;
    p->m = m;
    if (sched_getaffinity(0, sizeof(p->cpus), &p->cpus) != 0) {
        gw_log(GW_LOG_WARN, "sched_getaffinity: %s; workers.cpu_affinity is ignored",
               strerror(errno));
        CPU_ZERO(&p->cpus);
    }
    cpus_master_set(p);
    return 0;
}

void
gw_master_pool_destroy(struct gw_master_pool *p)
{
    free(p->slots);
    free(p->retired);
    memset(p, 0, sizeof(*p));
}

/* A scoreboard entry no live process holds. */
/* A worker that died during upstream calls never took itself off the
 * targets' in-flight counts: do it for it. */
static void
calls_clear(struct gw_master_pool *p, struct gw_shm_worker *w)
{
    for (size_t i = 0; i < GW_SHM_WORKER_CALLS; i++) {
        int32_t n = atomic_exchange(&w->calls[i].n, 0);
        int32_t stat = atomic_load(&w->calls[i].stat);
        if (n > 0 && stat >= 0 && (uint64_t)stat < p->m->shm.hdr->nstats)
            atomic_fetch_sub(&gw_shm_stat_at(&p->m->shm, (size_t)stat)->in_flight, n);
    }
}

static int
scoreboard_take(struct gw_master_pool *p)
{
    const struct gw_shm *shm = &p->m->shm;

    for (uint64_t i = 0; i < shm->hdr->nworkers; i++) {
        struct gw_shm_worker *w = gw_shm_worker(shm, i);
        pid_t pid = atomic_load(&w->pid);
        if (pid == 0 || (kill(pid, 0) != 0 && errno == ESRCH)) {
            atomic_store(&w->pid, -1); /* reserved until the child writes its pid */
            calls_clear(p, w);
            atomic_store(&w->state, GW_WORKER_STARTING);
            atomic_store(&w->gen_slots, 0);
            atomic_store(&w->conns, 0);
            atomic_store(&w->room, 0);
            atomic_store(&w->busy, 0);
            atomic_store(&w->requests, 0);
            return (int)i;
        }
    }
    return -1;
}

static void
scoreboard_clear(struct gw_master_pool *p, int sb)
{
    if (sb < 0)
        return;
    struct gw_shm_worker *w = gw_shm_worker(&p->m->shm, (size_t)sb);
    calls_clear(p, w);
    atomic_store(&w->gen_slots, 0);
    atomic_store(&w->conns, 0);
    atomic_store(&w->room, 0);
    atomic_store(&w->busy, 0);
    atomic_store(&w->state, GW_WORKER_EMPTY);
    atomic_store(&w->pid, 0);
}

static int
pool_fork(struct gw_master_pool *p, int i)
{
    struct gw_master *m = p->m;
    int sb = scoreboard_take(p);

    if (sb < 0) {
        gw_log(GW_LOG_ERROR, "worker scoreboard full; cannot start worker[%d]", i);
        return GW_ETOOBIG;
    }
    pid_t pid = fork();
    if (pid < 0) {
        gw_log(GW_LOG_ERROR, "fork: %s", strerror(errno));
        scoreboard_clear(p, sb);
        return GW_EIO;
    }
    if (pid == 0) {
        int cpu = m->cfg->worker_cpu_affinity ? cpu_of_slot(p, i) : -1;
        if (cpu >= 0) {
            cpu_set_t one;
            CPU_ZERO(&one);
            CPU_SET(cpu, &one);
            if (sched_setaffinity(0, sizeof(one), &one) != 0)
                gw_log(GW_LOG_WARN, "sched_setaffinity (worker on CPU %d): %s", cpu,
                       strerror(errno));
        }
        struct gw_worker_env env = {
            .index = sb,
            .master = m->pid,
            .cfg = m->cfg,
            .shm = &m->shm,
            .listen_fds = m->listeners.fds,
            .nlisten = m->listeners.n,
            .metrics_fd = m->listeners.metrics_fd,
            .admin_fds = m->listeners.admin_fds,
            .nadmin = m->listeners.nadmin,
            .secret = m->secret,
            .provider_key = m->provider_key,
            .max_requests = m->cfg->max_requests,
            .connections = m->cfg->worker_connections,
            .master_fds = m->master_fds,
            .nmaster_fds = 2,
            .ring_bell = m->ring_bell,
        };
        gw_worker_main(&env);
    }
    atomic_store(&gw_shm_worker(&m->shm, (size_t)sb)->pid, pid);
    p->slots[i].pid = pid;
    p->slots[i].sb = sb;
    p->slots[i].started_ms = gw_now_ms();
    gw_log(GW_LOG_DEBUG, "worker[%d] started, pid %ld", sb, (long)pid);
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
        if (s->pid != 0 || s->fatal || !s->wanted)
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

/* Decide what happens to slot i after its worker exited with status. */
static void
slot_exited(struct gw_master_pool *p, int i, int status)
{
    struct gw_pool_slot *s = &p->slots[i];
    int64_t now = gw_now_ms();
    bool abnormal = !WIFEXITED(status) || WEXITSTATUS(status) != 0;
    int sb = s->sb;

    scoreboard_clear(p, s->sb);
    s->pid = 0;
    s->sb = -1;
    if (WIFEXITED(status) && WEXITSTATUS(status) == GW_EXIT_FATAL) {
        s->fatal = true;
        gw_log(GW_LOG_ERROR, "worker[%d] exited with a fatal error; not restarting it", sb);
        return;
    }
    if (p->stopping || !s->wanted)
        return; /* stopping, or trimmed as a spare */
    if (WIFSIGNALED(status))
        gw_log(GW_LOG_WARN, "worker[%d] killed by signal %d (%s); restarting it", sb,
               WTERMSIG(status), strsignal(WTERMSIG(status)));
    else if (abnormal)
        gw_log(GW_LOG_WARN, "worker[%d] exited with status %d; restarting it", sb,
               WEXITSTATUS(status));
    if (abnormal && now - s->started_ms < POOL_YOUNG_MS) {
        long delay = POOL_BACKOFF_MIN_MS << (s->failures < 9 ? s->failures : 9);
        if (delay > POOL_BACKOFF_MAX_MS)
            delay = POOL_BACKOFF_MAX_MS;
        s->failures++;
        s->respawn_at_ms = now + delay;
        gw_log(GW_LOG_WARN,
               "worker[%d] died %u times in a row right after starting; next try in %ld ms", sb,
               s->failures, delay);
    } else {
        s->failures = 0;
        s->respawn_at_ms = now;
    }
}

/* A retired worker exited: forget it and free its scoreboard entry. */
static bool
retired_exited(struct gw_master_pool *p, pid_t pid)
{
    for (size_t i = 0; i < p->nretired; i++) {
        if (p->retired[i] != pid)
            continue;
        const struct gw_shm *shm = &p->m->shm;
        for (uint64_t j = 0; j < shm->hdr->nworkers; j++)
            if (atomic_load(&gw_shm_worker(shm, j)->pid) == pid)
                scoreboard_clear(p, (int)j);
        p->retired[i] = p->retired[--p->nretired];
        return true;
    }
    return false;
}

int
gw_master_pool_reap(struct gw_master_pool *p)
{
    int status, reaped = 0;
    pid_t pid;

    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        reaped++;
        if (retired_exited(p, pid))
            continue;
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
            gw_log(GW_LOG_WARN, "kill(%ld, %d): %s", (long)p->slots[i].pid, sig, strerror(errno));
    for (size_t i = 0; i < p->nretired; i++)
        kill(p->retired[i], sig);
}

int
gw_master_pool_alive(const struct gw_master_pool *p)
{
    int n = (int)p->nretired;

    for (int i = 0; i < p->n; i++)
        if (p->slots[i].pid > 0)
            n++;
    return n;
}

bool
gw_master_pool_failed(const struct gw_master_pool *p)
{
    bool any = false;

    for (int i = 0; i < p->n; i++) {
        if (!p->slots[i].wanted)
            continue;
        if (!p->slots[i].fatal)
            return false;
        any = true;
    }
    return any;
}

/*
 * Keep between min_spare and max_spare workers idle, as Apache's prefork
 * does: grow by 1, 2, 4, ... per call (up to 32) while idle workers run
 * short, and retire one idle worker per call while there are too many.
 * Call it about once a second.
 */
void
gw_master_pool_maintain(struct gw_master_pool *p)
{
    const struct gw_config *cfg = p->m->cfg;
    int idle = 0, wanted = 0, victim = -1;

    if (cfg->workers_min_spare <= 0 || p->stopping)
        return;
    for (int i = 0; i < p->n; i++) {
        struct gw_pool_slot *s = &p->slots[i];
        if (!s->wanted)
            continue;
        wanted++;
        const struct gw_shm_worker *e =
            s->pid > 0 && s->sb >= 0 ? gw_shm_worker(&p->m->shm, (size_t)s->sb) : NULL;
        /* A spare is a worker that can take a connection; only one with
         * none open is retired. */
        if (e != NULL && atomic_load(&e->room) > 0) {
            idle++;
            if (atomic_load(&e->state) == GW_WORKER_IDLE)
                victim = i;
        } else if (s->pid == 0) {
            idle++; /* about to start: counts as spare already */
        }
    }
    if (idle < cfg->workers_min_spare && wanted < p->n) {
        int add = p->grow_step ? p->grow_step : 1;
        if (add > cfg->workers_min_spare - idle)
            add = cfg->workers_min_spare - idle;
        for (int i = 0; i < p->n && add > 0; i++) {
            if (!p->slots[i].wanted && p->slots[i].pid == 0) {
                p->slots[i].wanted = true;
                p->slots[i].fatal = false;
                p->slots[i].respawn_at_ms = 0;
                add--;
            }
        }
        gw_log(GW_LOG_INFO, "pool: %d idle workers, fewer than min_spare %d; growing", idle,
               cfg->workers_min_spare);
        p->grow_step = p->grow_step < 32 ? (p->grow_step ? 2 * p->grow_step : 2) : 32;
        return;
    }
    p->grow_step = 0;
    if (idle > cfg->workers_max_spare && victim >= 0 && wanted > 1) {
        p->slots[victim].wanted = false;
        kill(p->slots[victim].pid, SIGTERM);
        gw_log(GW_LOG_DEBUG, "pool: %d idle workers, more than max_spare %d; retiring one", idle,
               cfg->workers_max_spare);
    }
}

int
gw_master_pool_replace(struct gw_master_pool *p, int start, int max)
{
    if (max < start)
        max = start;
    struct gw_pool_slot *slots = slots_new(start, max);
    size_t alive = (size_t)gw_master_pool_alive(p);
    pid_t *retired = realloc(p->retired, (alive + 1) * sizeof(pid_t));

    if (slots == NULL || retired == NULL) {
        free(slots);
        if (retired != NULL)
            p->retired = retired;
        return GW_ENOMEM;
    }
    p->retired = retired;
    for (int i = 0; i < p->n; i++) {
        if (p->slots[i].pid > 0) {
            kill(p->slots[i].pid, SIGTERM);
            p->retired[p->nretired++] = p->slots[i].pid;
        }
    }
    free(p->slots);
    p->slots = slots;
    p->n = max;
    cpus_master_set(p);
    return 0;
}

int
gw_master_pool_wanted(const struct gw_master_pool *p)
{
    int n = 0;

    for (int i = 0; i < p->n; i++)
        if (p->slots[i].wanted)
            n++;
    return n;
}

/* Is pid one of ours (a slot's worker or a retired one)? */
static bool
pool_owns(const struct gw_master_pool *p, pid_t pid)
{
    for (int i = 0; i < p->n; i++)
        if (p->slots[i].pid == pid)
            return true;
    for (size_t i = 0; i < p->nretired; i++)
        if (p->retired[i] == pid)
            return true;
    return false;
}

void
gw_master_pool_sweep(struct gw_master_pool *p)
{
    const struct gw_shm *shm = &p->m->shm;

    /* Workers of an earlier master are not our children: no SIGCHLD tells
     * us when they go, so look. */
    for (uint64_t i = 0; i < shm->hdr->nworkers; i++) {
        struct gw_shm_worker *w = gw_shm_worker(shm, i);
        pid_t pid = atomic_load(&w->pid);
        if (pid > 0 && !pool_owns(p, pid) && kill(pid, 0) != 0 && errno == ESRCH)
            scoreboard_clear(p, (int)i);
    }
}
