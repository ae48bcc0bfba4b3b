/*
 * ring.c - the usage ring: many workers push, the master drains.
 *
 * A bounded queue after Dmitry Vyukov's design: each slot carries a
 * sequence number that says whose turn it is.  A producer claims a
 * position by advancing the tail with compare-and-swap, writes the record,
 * then publishes it by setting the slot's sequence to position + 1.  The
 * consumer copies published records, stores them (LMDB), and only then
 * releases the slots (sequence = position + capacity) and moves the head,
 * so a master killed in between finds the records still in the ring.
 */
#include <string.h>

#include "shm/shm.h"

static struct gw_shm_ring_slot *
ring_slots(const struct gw_shm *shm)
{
    return (struct gw_shm_ring_slot *)((char *)shm->hdr + shm->hdr->ring_off);
}

int
gw_shm_ring_push(const struct gw_shm *shm, const struct gw_usage *rec)
{
    struct gw_shm_header *h = shm->hdr;
    struct gw_shm_ring_slot *ring = ring_slots(shm);
    uint64_t mask = h->nring - 1;
    uint64_t pos = atomic_load_explicit(&h->ring_tail, memory_order_relaxed);

    for (;;) {
        struct gw_shm_ring_slot *slot = &ring[pos & mask];
        uint64_t seq = atomic_load_explicit(&slot->seq, memory_order_acquire);
        int64_t diff = (int64_t)(seq - pos);

        if (diff == 0) {
            if (atomic_compare_exchange_weak_explicit(&h->ring_tail, &pos, pos + 1,
                                                      memory_order_relaxed,
                                                      memory_order_relaxed)) {
                slot->rec = *rec;
                atomic_store_explicit(&slot->seq, pos + 1, memory_order_release);
                return 0;
            }
            /* pos was reloaded by the failed exchange */
        } else if (diff < 0) {
            return GW_ETOOBIG; /* full: the slot still holds an undrained record */
        } else {
            pos = atomic_load_explicit(&h->ring_tail, memory_order_relaxed);
        }
    }
}

size_t
gw_shm_ring_peek(const struct gw_shm *shm, struct gw_usage *out, size_t max, uint64_t *first,
                 int64_t stall_ms)
{
    /* Where and since when the head has waited for an unpublished slot. */
    static uint64_t stall_pos = UINT64_MAX;
    static int64_t stall_since;
    struct gw_shm_header *h = shm->hdr;
    struct gw_shm_ring_slot *ring = ring_slots(shm);
    uint64_t mask = h->nring - 1;
    uint64_t head = atomic_load(&h->ring_head);
    size_t n = 0;

    *first = head;
    while (n < max) {
        uint64_t pos = head + n;
        struct gw_shm_ring_slot *slot = &ring[pos & mask];
        uint64_t seq = atomic_load_explicit(&slot->seq, memory_order_acquire);

        if (seq == pos + 1) {
            out[n++] = slot->rec;
            continue;
        }
        if (n > 0 || pos >= atomic_load(&h->ring_tail))
            break; /* empty, or hand back what we have first */
        /* Claimed but not published.  Writing a record takes nanoseconds:
         * one unpublished for stall_ms belongs to a writer that died. */
        int64_t now = gw_now_ms();
        if (stall_pos != pos) {
            stall_pos = pos;
            stall_since = now;
            break;
        }
        if (now - stall_since < stall_ms)
            break;
        gw_log(GW_LOG_WARN, "usage ring: record %llu was claimed by a worker that died before "
               "writing it; skipping it", (unsigned long long)pos);
        atomic_fetch_add(&h->ring_lost, 1);
        atomic_store_explicit(&slot->seq, pos + h->nring, memory_order_release);
        atomic_store(&h->ring_head, pos + 1);
        head = pos + 1;
        *first = head;
        stall_pos = UINT64_MAX;
    }
    return n;
}

void
gw_shm_ring_release(const struct gw_shm *shm, uint64_t upto)
{
    struct gw_shm_header *h = shm->hdr;
    struct gw_shm_ring_slot *ring = ring_slots(shm);
    uint64_t mask = h->nring - 1;

    for (uint64_t pos = atomic_load(&h->ring_head); pos < upto; pos++)
        atomic_store_explicit(&ring[pos & mask].seq, pos + h->nring, memory_order_release);
    atomic_store(&h->ring_head, upto);
}
