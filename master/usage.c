/*
 * usage.c - moving usage records from the shared-memory ring into LMDB.
 *
 * Records are copied out of the ring, stored with the ring position after
 * the last of them in one LMDB transaction, and only then released in the
 * ring.  A master killed at any point either finds them still in the ring
 * (not yet committed) or finds the stored position telling it to skip them
 * (committed, not yet released): each record is stored exactly once.
 */
#include "master/master.h"

#define DRAIN_BATCH 512
/* A slot claimed and not written for this long lost its writer. */
#define DRAIN_STALL_MS 5000

size_t
gw_master_usage_drain(struct gw_master *m)
{
    static struct gw_usage batch[DRAIN_BATCH];
    size_t total = 0;

    for (;;) {
        uint64_t first;
        size_t n = gw_shm_ring_peek(&m->shm, batch, DRAIN_BATCH, &first, DRAIN_STALL_MS);
        if (n == 0)
            break;
        int rc = gw_store_usage_add(m->store, batch, n, m->shm.hdr->incarnation, first + n);
        if (rc != 0) {
            /* Leave them in the ring; the next drain tries again. */
            gw_log(GW_LOG_ERROR,
                   "usage: %zu records could not be stored (%s); keeping them in "
                   "shared memory",
                   n, gw_strerror(rc));
            break;
        }
        gw_shm_ring_release(&m->shm, first + n);
        total += n;
    }
    return total;
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
