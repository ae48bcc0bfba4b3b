/*
 * ring.c - the usage ring: many workers push, the master drains.
 *
 * A bounded queue after Dmitry Vyukov's design: each slot carries a
 * sequence number that says whose turn it is.  A producer claims a
 * position by advancing the tail with compare-and-swap, marks the slot
 * busy (and itself as its writer), writes the record, and publishes it by
 * setting the sequence to position + 1.  The consumer copies published
 * records, stores them (LMDB), and only then releases the slots
 * (sequence = position + capacity) and moves the head, so a master killed
 * in between finds the records still in the ring.
 *
 * A worker killed between claiming and publishing must not wedge the
 * ring.  The master gives such a slot away, but only when it is sure the
 * writer is gone: a slot claimed and never marked busy is given away after
 * a stall (the writer's own compare-and-swap then fails and it tries
 * another position, losing nothing); a busy slot only when its writer's
 * process is dead.  Every hand-over is a compare-and-swap, so a late
 * writer and the master never both win.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "shm/shm.h"

#define RING_BUSY (1ULL << 63)
/* A busy slot whose writer never said who it is: given away after this. */
#define RING_ANONYMOUS_STALL_MS 60000

/* This process's pid, cached (one system call less per record) and
 * forgotten in a child at fork. */
static pid_t self_pid;

static void
self_pid_forget(void)
{
    self_pid = 0;
}

__attribute__((constructor)) static void
self_pid_init(void)
{
    pthread_atfork(NULL, NULL, self_pid_forget);
}

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

        if (diff < 0)
            return GW_ETOOBIG; /* full: the slot still holds an undrained record */
        if (diff > 0) {
            pos = atomic_load_explicit(&h->ring_tail, memory_order_relaxed);
            continue;
        }
        if (!atomic_compare_exchange_weak(&h->ring_tail, &pos, pos + 1))
            continue; /* pos was reloaded by the failed exchange */
        uint64_t expect = pos;
        if (!atomic_compare_exchange_strong(&slot->seq, &expect, pos | RING_BUSY)) {
            /* The master gave our position away while we were descheduled. */
            pos = atomic_load(&h->ring_tail);
            continue;
        }
        if (self_pid == 0)
            self_pid = getpid();
        atomic_store(&slot->writer, (int32_t)self_pid);
        slot->rec = *rec;
        atomic_store_explicit(&slot->seq, pos + 1, memory_order_release);
        return 0;
    }
}

bool
gw_shm_ring_bell(const struct gw_shm *shm)
{
    struct gw_shm_header *h = shm->hdr;
    uint64_t pending = atomic_load_explicit(&h->ring_tail, memory_order_relaxed) -
                       atomic_load_explicit(&h->ring_head, memory_order_relaxed);
    int32_t quiet = 0;

    if (pending < h->nring / 4 || atomic_load_explicit(&h->ring_bell, memory_order_relaxed) != 0)
        return false;
    return atomic_compare_exchange_strong(&h->ring_bell, &quiet, 1);
}

void
gw_shm_ring_bell_reset(const struct gw_shm *shm)
{
    atomic_store(&shm->hdr->ring_bell, 0);
}

/*
 * May the master give the claimed, unpublished slot at pos away?  It has
 * waited since *since for it.
 */
static bool
slot_abandoned(struct gw_shm_ring_slot *slot, uint64_t pos, uint64_t seq, int64_t waited_ms,
               int64_t stall_ms)
{
    if (seq == pos)
        return waited_ms >= stall_ms; /* claimed, not marked: the writer stalled or died */
    if (seq != (pos | RING_BUSY))
        return false;
    pid_t writer = atomic_load(&slot->writer);
    if (writer > 0)
        return kill(writer, 0) != 0 && errno == ESRCH;
    return waited_ms >= RING_ANONYMOUS_STALL_MS;
}

size_t
gw_shm_ring_peek(struct gw_shm *shm, struct gw_usage *out, size_t max, uint64_t *first,
                 int64_t stall_ms)
{
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
        int64_t now = gw_now_ms();
        if (shm->stall_pos != pos) {
            shm->stall_pos = pos;
            shm->stall_since = now;
            break;
        }
        if (!slot_abandoned(slot, pos, seq, now - shm->stall_since, stall_ms) ||
            !atomic_compare_exchange_strong(&slot->seq, &seq, pos + h->nring))
            break;
        gw_log(GW_LOG_WARN,
               "usage ring: record %llu was claimed by a worker that stopped "
               "before writing it; skipping it",
               (unsigned long long)pos);
        atomic_store(&slot->writer, 0);
        atomic_fetch_add(&h->ring_lost, 1);
        atomic_store(&h->ring_head, pos + 1);
        head = pos + 1;
        *first = head;
        shm->stall_pos = UINT64_MAX;
    }
    return n;
}

void
gw_shm_ring_release(const struct gw_shm *shm, uint64_t upto)
{
    struct gw_shm_header *h = shm->hdr;
    struct gw_shm_ring_slot *ring = ring_slots(shm);
    uint64_t mask = h->nring - 1;

    for (uint64_t pos = atomic_load(&h->ring_head); pos < upto; pos++) {
        atomic_store(&ring[pos & mask].writer, 0);
        atomic_store_explicit(&ring[pos & mask].seq, pos + h->nring, memory_order_release);
    }
    atomic_store(&h->ring_head, upto);
}
