/*
 * usage.c - moving usage records from the shared-memory ring into LMDB,
 * and retention: pruning what is older than usage.detail_days and
 * usage.aggregate_days.
 *
 * Records are copied out of the ring, stored with the ring position after
 * the last of them in one LMDB transaction, and only then released in the
 * ring.  A master killed at any point either finds them still in the ring
 * (not yet committed) or finds the stored position telling it to skip them
 * (committed, not yet released): each record is stored exactly once.
 */
#include <stdlib.h>
#include <time.h>

#include "master/master.h"

/* Records per LMDB transaction: each commit syncs the file twice, and a
 * sync can take a few hundred milliseconds on a disk busy with other
 * writes (the access log's, say).  A drain is therefore one commit of all
 * the ring holds (its size, 16,384 records): in batches of 4,096, a full
 * ring took four commits, and the workers waited for room through all
 * eight syncs. */
/* Retention works in transactions of at most this many deletions, and
 * stops for this turn of the loop after this long. */
#define PRUNE_BATCH 1000
#define PRUNE_BUDGET_MS 20
#define DAY_S 86400
/* A slot claimed and not written for this long lost its writer. */
#define DRAIN_STALL_MS 5000

/*
 * The master runs on the workers' CPUs.  A drain under load stores two
 * thousand records in one transaction, 1.3 ms of CPU on the 2-CPU machine
 * of tests/bench/README.md, every 40 ms, and a task the kernel wakes runs
 * until it blocks or its slice ends (3 ms on 16 CPUs): the worker whose
 * CPU it took stalled with every request it held.  On the 16-core machine
 * aigwd's p99 at 64 connections went from 4 ms to 1.4 ms with the master
 * moved to a CPU of its own.  Giving the CPU back with sched_yield did not
 * help: the kernel gives it back to the master as soon as fairness allows,
 * and the worker loses the same time in the same few milliseconds.  So the
 * master works in turns of PACE_RUN_US and rests PACE_REST_US between
 * them, as nginx's cache manager deletes in bounded turns with sleeps:
 * its CPU time is spread over the drain interval, a worker loses at most
 * PACE_RUN_US at a time (p99 2.2-2.5 ms against 3.6-4.3 unpaced in the
 * same rounds; throughput 2.5% lower).  A ring more than half full is
 * drained without rest, before workers would wait for room.
 */
#define PACE_RUN_US 100
#define PACE_REST_US 300

static int64_t pace_since;

/* A store that failed (a full disk, say) is tried again after a pause
 * that doubles from STORE_RETRY_MIN_MS to STORE_RETRY_MAX_MS: the records
 * wait in the ring meanwhile, and every try would log the same error.
 * The workers refuse new requests while the ring's last quarter is all
 * that is left (gw_shm_header.store_error), so that those in flight
 * still find room. */
#define STORE_RETRY_MIN_MS 250
#define STORE_RETRY_MAX_MS 4000

static int64_t retry_at_ms, retry_ms, failing_since_ms;

static void
usage_pace(void *ctx)
{
    struct gw_master *m = ctx;
    const struct gw_shm_header *h = m->shm.hdr;

    if (gw_now_us() - pace_since < PACE_RUN_US)
        return;
    if (atomic_load(&h->ring_tail) - atomic_load(&h->ring_head) <= h->nring / 2) {
        struct timespec rest = {0, PACE_REST_US * 1000};
        nanosleep(&rest, NULL);
    }
    pace_since = gw_now_us();
}

void
gw_master_usage_pace_init(struct gw_master *m)
{
    gw_store_set_pace(m->store, usage_pace, m);
}

size_t
gw_master_usage_drain(struct gw_master *m)
{
    static struct gw_usage *batch;
    static size_t cap;
    size_t total = 0;

    if (cap < m->shm.hdr->nring) {
        struct gw_usage *b = realloc(batch, m->shm.hdr->nring * sizeof(*b));
        if (b == NULL) {
            gw_log(GW_LOG_ERROR, "usage: out of memory for a drain of %llu records",
                   (unsigned long long)m->shm.hdr->nring);
            return 0;
        }
        batch = b;
        cap = m->shm.hdr->nring;
    }
    pace_since = gw_now_us();
    if (retry_at_ms != 0 && gw_now_ms() < retry_at_ms)
        return 0;

    for (;;) {
        uint64_t first;
        size_t n = gw_shm_ring_peek(&m->shm, batch, cap, &first, DRAIN_STALL_MS);
        if (n == 0)
            break;
        int rc = gw_store_usage_add(m->store, batch, n, m->shm.hdr->incarnation, first + n);
        if (rc != 0) {
            /* Leave them in the ring; a later drain tries again. */
            int64_t now = gw_now_ms();
            if (failing_since_ms == 0) {
                failing_since_ms = now;
                gw_log(GW_LOG_ERROR,
                       "usage: %zu records could not be stored (%s); keeping them in "
                       "shared memory and trying again",
                       n, gw_strerror(rc));
            }
            atomic_store(&m->shm.hdr->store_error, rc);
            retry_ms = retry_ms == 0 ? STORE_RETRY_MIN_MS
                                     : (retry_ms * 2 < STORE_RETRY_MAX_MS ? retry_ms * 2
                                                                          : STORE_RETRY_MAX_MS);
            retry_at_ms = now + retry_ms;
            break;
        }
        /* (A master started again may find its predecessor's error.) */
        if (failing_since_ms != 0 || atomic_load(&m->shm.hdr->store_error) != 0) {
            if (failing_since_ms != 0)
                gw_log(GW_LOG_INFO, "usage: records are stored again, after %lld ms of failures",
                       (long long)(gw_now_ms() - failing_since_ms));
            atomic_store(&m->shm.hdr->store_error, 0);
            failing_since_ms = retry_at_ms = retry_ms = 0;
        }
        gw_shm_ring_release(&m->shm, first + n);
        total += n;
        /* A short batch stopped at the first record a worker is still
         * writing: under load there nearly always is one, and peeking
         * again at once made a commit (and two syncs) of a handful of
         * records, a dozen times a drain.  The rest waits for the next
         * drain, a quarter of a second away. */
        if (n < cap)
            break;
    }
    return total;
}

long
gw_master_usage_drain_every(uint64_t nring, size_t drained, int64_t elapsed_ms)
{
    /* At 32,000 requests a second a fixed half second filled the ring
     * (16,384 slots) between two drains, and workers waited for room. */
    if (drained == 0)
        return GW_USAGE_DRAIN_MAX_MS;
    uint64_t every = (uint64_t)(elapsed_ms > 0 ? elapsed_ms : 1) * (nring / 8) / drained;
    if (every < GW_USAGE_DRAIN_MIN_MS)
        return GW_USAGE_DRAIN_MIN_MS;
    if (every > GW_USAGE_DRAIN_MAX_MS)
        return GW_USAGE_DRAIN_MAX_MS;
    return (long)every;
}

void
gw_master_usage_reconcile(struct gw_master *m)
{
    struct gw_shm_header *h = m->shm.hdr;
    uint64_t stored;

    if (gw_store_usage_head(m->store, h->incarnation, &stored) != 0)
        return;
    uint64_t head = atomic_load(&h->ring_head);
    if (stored > head && stored <= atomic_load(&h->ring_tail)) {
        gw_log(GW_LOG_INFO,
               "usage: %llu records were stored before the last master stopped; "
               "releasing them",
               (unsigned long long)(stored - head));
        gw_shm_ring_release(&m->shm, stored);
    }
}

void
gw_master_usage_maintain(struct gw_master *m)
{
    int64_t start = gw_now_ms();
    int64_t today = (int64_t)time(NULL) / DAY_S * DAY_S;
    const struct gw_config *cfg = m->cfg;
    /* Whole UTC days go: a day's records once it is detail_days old. */
    int64_t detail_before =
        cfg->usage_detail_days ? (today - (int64_t)cfg->usage_detail_days * DAY_S) * 1000000 : 0;
    int64_t agg_before = cfg->usage_aggregate_days
                             ? (today - (int64_t)cfg->usage_aggregate_days * DAY_S) * 1000000
                             : 0;
    size_t n, total = 0;
    bool done = m->usage_upgraded;

    pace_since = gw_now_us();

    /* Records of an older version first get their aggregates. */
    while (!done && gw_now_ms() - start < PRUNE_BUDGET_MS) {
        if (gw_store_usage_upgrade(m->store, PRUNE_BATCH, &n, &done) != 0)
            return;
        if (n > 0)
            gw_log(GW_LOG_INFO, "usage: %zu records of an older version upgraded", n);
    }
    m->usage_upgraded = done;
    if (!done || (detail_before <= 0 && agg_before <= 0))
        return;
    do {
        if (gw_store_usage_prune(m->store, detail_before, agg_before, PRUNE_BATCH, &n) != 0)
            break;
        total += n;
    } while (n == PRUNE_BATCH && gw_now_ms() - start < PRUNE_BUDGET_MS);
    if (total > 0)
        gw_log(GW_LOG_DEBUG, "usage: pruned %zu records past their retention", total);
}
