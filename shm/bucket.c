/*
 * bucket.c - token buckets in shared memory, shared by every worker.
 *
 * Each bucket is kept as GCRA (the generic cell rate algorithm): instead
 * of a level and a refill time, one number, the theoretical arrival time
 * (TAT) at which the bucket would be full again.  Taking n tokens pushes
 * the TAT n emission intervals further; the take is allowed while the TAT
 * stays within burst intervals of now.  One atomic, one compare-and-swap:
 * no lock, and nothing a worker killed mid-take could leave half-done.
 */
#include <math.h>
#include <string.h>

#include "shm/shm.h"

static void
bucket_init(void *entry)
{
    /* A TAT in the past: the new bucket starts full. */
    atomic_store(&((struct gw_shm_bucket *)entry)->tat_us, 0);
}

static struct gw_shm_bucket *
bucket_find(const struct gw_shm *shm, const char *name)
{
    struct gw_shm_header *h = shm->hdr;
    struct gw_shm_bucket *b = (struct gw_shm_bucket *)((char *)h + h->buckets_off);
    long i = gw_shm_named_find(b, sizeof(*b), h->nbuckets, name, true, bucket_init);

    return i < 0 ? NULL : &b[i];
}

bool
gw_shm_bucket_take(const struct gw_shm *shm, const char *name, double rate, double burst, double n,
                   int64_t *wait_ms, double *remaining)
{
    struct gw_shm_bucket *b = bucket_find(shm, name);
    double interval = 1e6 / rate; /* microseconds per token */
    int64_t tau = (int64_t)(burst * interval), cost = (int64_t)(n * interval);

    *wait_ms = 0;
    if (remaining != NULL)
        *remaining = burst;
    if (b == NULL) {
        gw_log(GW_LOG_WARN, "token bucket table full; %s is not limited", name);
        return true;
    }
    for (;;) {
        int64_t now = gw_now_us();
        int64_t tat = atomic_load(&b->tat_us);
        int64_t base = tat > now ? tat : now;
        int64_t next = base + cost;

        if (next - now > tau) {
            *wait_ms = (next - now - tau + 999) / 1000;
            if (remaining != NULL)
                *remaining = floor((double)(tau - (base - now)) / interval);
            return false;
        }
        if (atomic_compare_exchange_weak(&b->tat_us, &tat, next)) {
            if (remaining != NULL)
                *remaining = floor((double)(tau - (next - now)) / interval);
            return true;
        }
    }
}

void
gw_shm_bucket_give(const struct gw_shm *shm, const char *name, double rate, double n)
{
    struct gw_shm_bucket *b = bucket_find(shm, name);
    int64_t back = (int64_t)(n * 1e6 / rate);

    if (b == NULL)
        return;
    int64_t tat = atomic_load(&b->tat_us), next;
    do {
        int64_t now = gw_now_us();
        next = tat - back;
        /* A TAT in the past already means full: never bank beyond it. */
        if (next < now)
            next = now;
    } while (!atomic_compare_exchange_weak(&b->tat_us, &tat, next));
}

void
gw_shm_bucket_charge(const struct gw_shm *shm, const char *name, double rate, double n)
{
    struct gw_shm_bucket *b = bucket_find(shm, name);
    int64_t cost = (int64_t)(n * 1e6 / rate);

    if (b == NULL || cost <= 0)
        return;
    int64_t tat = atomic_load(&b->tat_us), next;
    do {
        int64_t now = gw_now_us();
        /* A TAT in the past is a full bucket: charge from now. */
        next = (tat > now ? tat : now) + cost;
    } while (!atomic_compare_exchange_weak(&b->tat_us, &tat, next));
}
