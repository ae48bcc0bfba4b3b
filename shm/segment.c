/*
 * segment.c - the shared-memory segment: creating or re-attaching it, its
 * layout, and the named stat table.
 *
 * The segment outlives the master on purpose.  A master that is killed
 * and started again attaches the segment it finds under the same name
 * (derived from state_dir), keeps its counters and drains the usage
 * records its predecessor had not stored yet.  Only a different layout or
 * geometry makes it start afresh.
 */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "shm/shm.h"

#define SHM_ALIGN 64

const char *const gw_shm_worker_state_names[GW_WORKER_NSTATES] = {
    "empty", "starting", "idle", "busy", "keepalive", "stopping",
};

const char *const gw_route_strategy_names[GW_ROUTE_NSTRATEGIES] = {
    "weighted", "sticky", "least_busy", "latency", "price", "throughput",
};

const double gw_shm_hist_bounds_ms[GW_SHM_HIST_BUCKETS] = {
    5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000,
};

void
gw_shm_name(const char *state_dir, char *out, size_t len)
{
    unsigned char md[32];
    char hex[65], real[4096];
    unsigned int mdlen = 0;

    /* The same directory, however it is written, names the same segment. */
    const char *dir = realpath(state_dir, real) ? real : state_dir;
    EVP_Digest(dir, strlen(dir), md, &mdlen, EVP_sha256(), NULL);
    gw_hex_encode(md, 8, hex);
    snprintf(out, len, "/aigw-%s", hex);
}

static uint64_t
align_up(uint64_t v)
{
    return (v + SHM_ALIGN - 1) & ~(uint64_t)(SHM_ALIGN - 1);
}

/* Compute offsets into h for geo; returns the total size. */
static uint64_t
layout(struct gw_shm_header *h, const struct gw_shm_geometry *geo)
{
    uint64_t off = align_up(sizeof(*h));

    h->workers_off = off;
    h->nworkers = geo->nworkers;
    off = align_up(off + geo->nworkers * sizeof(struct gw_shm_worker));
    h->stats_off = off;
    h->nstats = geo->nstats;
    off = align_up(off + geo->nstats * sizeof(struct gw_shm_stat));
    h->buckets_off = off;
    h->nbuckets = geo->nbuckets;
    off = align_up(off + geo->nbuckets * sizeof(struct gw_shm_bucket));
    h->quotas_off = off;
    h->nquotas = geo->nquotas;
    off = align_up(off + geo->nquotas * sizeof(struct gw_shm_quota));
    h->ring_off = off;
    h->nring = geo->nring;
    off = align_up(off + geo->nring * sizeof(struct gw_shm_ring_slot));
    for (int i = 0; i < GW_SHM_GEN_SLOTS; i++) {
        h->gen_off[i] = off;
        off = align_up(off + geo->gen_size);
    }
    h->gen_size = geo->gen_size;
    return off;
}

static bool
geometry_matches(const struct gw_shm_header *h, const struct gw_shm_geometry *geo, size_t size)
{
    struct gw_shm_header want = {0};
    uint64_t total = layout(&want, geo);

    return h->magic == GW_SHM_MAGIC && h->layout == GW_SHM_LAYOUT && h->size == total &&
           size == total && h->nworkers == want.nworkers && h->nstats == want.nstats &&
           h->nbuckets == want.nbuckets && h->nquotas == want.nquotas && h->nring == want.nring &&
           h->gen_size == want.gen_size;
}

static int
map_fd(int fd, size_t size, struct gw_shm *out)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);

    if (p == MAP_FAILED) {
        gw_log(GW_LOG_ERROR, "mmap(%s, %zu): %s", out->name, size, strerror(errno));
        return GW_EIO;
    }
    out->hdr = p;
    out->size = size;
    return 0;
}

/* Initialise a fresh segment: zeroed by ftruncate, so only non-zero fields. */
static int
segment_init(struct gw_shm *shm, const struct gw_shm_geometry *geo)
{
    struct gw_shm_header *h = shm->hdr;

    layout(h, geo);
    h->size = shm->size;
    h->layout = GW_SHM_LAYOUT;
    if (gw_random_bytes(&h->incarnation, sizeof(h->incarnation)) != 0)
        return GW_EIO;
    struct gw_shm_ring_slot *ring = (struct gw_shm_ring_slot *)((char *)h + h->ring_off);
    for (uint64_t i = 0; i < h->nring; i++)
        atomic_store(&ring[i].seq, i);
    atomic_store(&h->gen_current, -1);
    /* The magic goes last: a half-initialised segment is never taken. */
    atomic_thread_fence(memory_order_release);
    h->magic = GW_SHM_MAGIC;
    return 0;
}

/*
 * Give the segment every page now.  ftruncate(2) makes a sparse object;
 * a page that a full /dev/shm cannot give when a process first touches it
 * is a SIGBUS in that process (the master at start, a worker mid-request),
 * not an error it could report.
 */
static int
reserve(int fd, const char *name, uint64_t size)
{
    int e = posix_fallocate(fd, 0, (off_t)size);

    if (e == 0)
        return 0;
    gw_log(GW_LOG_ERROR, "shared memory %s: cannot reserve its %llu bytes in /dev/shm: %s", name,
           (unsigned long long)size, strerror(e));
    return GW_EIO;
}

int
gw_shm_open(const char *name, const struct gw_shm_geometry *geo, struct gw_shm *out, bool *attached)
{
    struct gw_shm_header probe = {0};
    uint64_t size = layout(&probe, geo);
    struct stat st;
    int fd, rc = GW_EIO;

    memset(out, 0, sizeof(*out));
    out->stall_pos = UINT64_MAX;
    snprintf(out->name, sizeof(out->name), "%s", name);
    *attached = false;

    fd = shm_open(name, O_RDWR | O_CLOEXEC, 0600);
    if (fd >= 0 && fstat(fd, &st) == 0 && (uint64_t)st.st_size == size &&
        map_fd(fd, size, out) == 0) {
        if (geometry_matches(out->hdr, geo, size)) {
            /* (One made by a release that did not reserve its pages.) */
            rc = reserve(fd, name, size);
            if (rc != 0)
                gw_shm_close(out);
            *attached = rc == 0;
            close(fd);
            return rc;
        }
        gw_shm_close(out);
    }
    if (fd >= 0) {
        /* Another layout or size: start a new segment under the name.
         * Processes still mapping the old one keep it until they exit. */
        gw_log(GW_LOG_WARN, "shared memory %s has another layout or size; creating it anew", name);
        close(fd);
        shm_unlink(name);
    }
    fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        gw_log(GW_LOG_ERROR, "shm_open(%s): %s", name, strerror(errno));
        return GW_EIO;
    }
    if (ftruncate(fd, (off_t)size) != 0) {
        gw_log(GW_LOG_ERROR, "ftruncate(%s, %llu): %s", name, (unsigned long long)size,
               strerror(errno));
        goto fail;
    }
    if ((rc = reserve(fd, name, size)) != 0)
        goto fail;
    if ((rc = map_fd(fd, size, out)) != 0)
        goto fail;
    if ((rc = segment_init(out, geo)) != 0)
        goto fail;
    close(fd);
    return 0;
fail:
    if (out->hdr != NULL)
        gw_shm_close(out);
    close(fd);
    shm_unlink(name);
    return rc;
}

int
gw_shm_attach(const char *name, struct gw_shm *out)
{
    struct stat st;
    int fd, rc;

    memset(out, 0, sizeof(*out));
    out->stall_pos = UINT64_MAX;
    snprintf(out->name, sizeof(out->name), "%s", name);
    fd = shm_open(name, O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0)
        return errno == ENOENT ? GW_ENOENT : GW_EIO;
    if (fstat(fd, &st) != 0 || (size_t)st.st_size < sizeof(struct gw_shm_header)) {
        close(fd);
        return GW_EINVAL;
    }
    rc = map_fd(fd, (size_t)st.st_size, out);
    close(fd);
    if (rc == 0 && (out->hdr->magic != GW_SHM_MAGIC || out->hdr->layout != GW_SHM_LAYOUT)) {
        gw_shm_close(out);
        return GW_EINVAL;
    }
    return rc;
}

void
gw_shm_close(struct gw_shm *shm)
{
    if (shm->hdr != NULL)
        munmap(shm->hdr, shm->size);
    shm->hdr = NULL;
    shm->size = 0;
}

int
gw_shm_unlink(const char *name)
{
    if (shm_unlink(name) != 0 && errno != ENOENT)
        return GW_EIO;
    return 0;
}

/* ------------------------------------------------------------ named tables */

/*
 * Open addressing on a hash of the name, for the stat table and the
 * buckets (both start with struct gw_shm_named).  A free entry is claimed
 * with a compare-and-swap from 0 to (pid << 2 | 1), named, then published
 * as 2.  Whoever meets a claim waits while the claimer lives (it is
 * between two stores) and takes the claim over if it died, so a name never
 * gets two entries and a dead claimer never leaves a hole.
 */
#define NAMED_READY 2u

static uint32_t
claim_value(void)
{
    return ((uint32_t)getpid() << 2) | 1u;
}

long
gw_shm_named_find(void *table, size_t stride, uint64_t n, const char *name, bool create,
                  void (*init)(void *entry))
{
    uint64_t h = 1469598103934665603ULL;
    size_t len = strlen(name);

    if (n == 0 || len >= GW_SHM_NAME_LEN)
        return -1;
    for (const char *c = name; *c; c++)
        h = (h ^ (unsigned char)*c) * 1099511628211ULL;
    for (uint64_t probe = 0; probe < n; probe++) {
        uint64_t i = (h + probe) % n;
        struct gw_shm_named *e = (struct gw_shm_named *)((char *)table + i * stride);
        uint32_t state = atomic_load(&e->state);

        while ((state & 3u) == 1u) {
            pid_t claimer = (pid_t)(state >> 2);
            if (kill(claimer, 0) == 0 || errno == EPERM) {
                sched_yield();
                state = atomic_load(&e->state);
                continue;
            }
            /* The claimer died between its two stores: start over from free. */
            if (atomic_compare_exchange_strong(&e->state, &state, 0))
                state = 0;
        }
        if (state == 0) {
            if (!create)
                return -1;
            uint32_t expect = 0;
            if (!atomic_compare_exchange_strong(&e->state, &expect, claim_value())) {
                probe--; /* someone else claimed it: look at this entry again */
                continue;
            }
            memcpy(e->name, name, len + 1);
            if (init != NULL)
                init(e);
            atomic_store(&e->state, NAMED_READY);
            return (long)i;
        }
        if (strcmp(e->name, name) == 0)
            return (long)i;
    }
    return -1;
}

long
gw_shm_stat_find(const struct gw_shm *shm, const char *name, bool create)
{
    return gw_shm_named_find((char *)shm->hdr + shm->hdr->stats_off, sizeof(struct gw_shm_stat),
                             shm->hdr->nstats, name, create, NULL);
}

void
gw_shm_stat_account(struct gw_shm_stat *st, int status, int64_t in, int64_t out,
                    int64_t duration_ms, int64_t ttft_ms)
{
    int cls = status >= 100 && status < 600 ? status / 100 : 0;
    int b;

    atomic_fetch_add(&st->requests, 1);
    atomic_fetch_add(&st->status[cls], 1);
    atomic_fetch_add(&st->input_tokens, (uint64_t)(in > 0 ? in : 0));
    atomic_fetch_add(&st->output_tokens, (uint64_t)(out > 0 ? out : 0));
    for (b = 0; b < GW_SHM_HIST_BUCKETS && duration_ms > gw_shm_hist_bounds_ms[b]; b++)
        ;
    atomic_fetch_add(&st->duration_hist[b], 1);
    atomic_fetch_add(&st->duration_sum_ms, (uint64_t)(duration_ms > 0 ? duration_ms : 0));
    if (ttft_ms >= 0) {
        for (b = 0; b < GW_SHM_HIST_BUCKETS && ttft_ms > gw_shm_hist_bounds_ms[b]; b++)
            ;
        atomic_fetch_add(&st->ttft_hist[b], 1);
        atomic_fetch_add(&st->ttft_sum_ms, (uint64_t)ttft_ms);
        atomic_fetch_add(&st->ttft_count, 1);
    }
}
