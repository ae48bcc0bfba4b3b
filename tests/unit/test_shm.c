/*
 * test_shm.c - the shared-memory control plane: the segment and its
 * layout, the stat table, the usage ring, GCRA token buckets, routing
 * generations, and the LMDB usage records the ring drains into.
 *
 * Each test works on its own segment ("/aigw-test-<pid>-<n>"), unlinked in
 * teardown.  Tests that race several processes fork children that only
 * use the shm API and _exit() with a status the parent checks: a cmocka
 * assertion in a child would unwind into the child's copy of the runner.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <fcntl.h>
#include <json-c/json.h>
#include <lmdb.h>
#include <locale.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "shm/shm.h"

#define NCHILDREN 4

/* ---------------------------------------------------------------- fixture */

struct fx {
    char name[64];
    struct gw_shm shm;
    struct gw_shm other; /* a second mapping or segment some tests open */
    char other_name[64];
};

static int name_seq;

static void
name_make(char *out, size_t len)
{
    snprintf(out, len, "/aigw-test-%d-%d", (int)getpid(), ++name_seq);
}

static struct gw_shm_geometry
geo_small(void)
{
    return (struct gw_shm_geometry){.nworkers = 8,
                                    .nstats = 64,
                                    .nbuckets = 64,
                                    .nquotas = 32,
                                    .nring = 64,
                                    .gen_size = 64 * 1024};
}

static int
fx_setup_geo(void **state, struct gw_shm_geometry geo)
{
    struct fx *f = calloc(1, sizeof(*f));
    bool attached = true;

    if (f == NULL)
        return -1;
    name_make(f->name, sizeof(f->name));
    gw_shm_unlink(f->name);
    if (gw_shm_open(f->name, &geo, &f->shm, &attached) != 0 || attached) {
        free(f);
        return -1;
    }
    *state = f;
    return 0;
}

static int
fx_setup(void **state)
{
    return fx_setup_geo(state, geo_small());
}

/* A ring big enough for the multi-process test. */
static int
fx_setup_big_ring(void **state)
{
    struct gw_shm_geometry geo = geo_small();

    geo.nring = 1024;
    return fx_setup_geo(state, geo);
}

static int
fx_teardown(void **state)
{
    struct fx *f = *state;

    gw_shm_close(&f->shm);
    gw_shm_close(&f->other);
    gw_shm_unlink(f->name);
    if (f->other_name[0] != '\0')
        gw_shm_unlink(f->other_name);
    free(f);
    return 0;
}

static struct gw_shm_ring_slot *
ring_slots(const struct gw_shm *shm)
{
    return (struct gw_shm_ring_slot *)((char *)shm->hdr + shm->hdr->ring_off);
}

static struct gw_usage
rec_make(int child, int seq)
{
    struct gw_usage u = {
        .time_us = 1700000000000000LL + seq,
        .input_tokens = seq,
        .output_tokens = 2 * seq,
        .status = 200,
        .duration_ms = 10,
    };

    snprintf(u.request_id, sizeof(u.request_id), "c%d-%d", child, seq);
    snprintf(u.key_id, sizeof(u.key_id), "key_%012d", child);
    snprintf(u.model, sizeof(u.model), "demo");
    snprintf(u.target, sizeof(u.target), "local/mock-small");
    return u;
}

static bool
rec_parse(const struct gw_usage *u, int *child, int *seq)
{
    return sscanf(u->request_id, "c%d-%d", child, seq) == 2;
}

/* Wait for every child; true when all exited with status 0. */
static bool
children_reap(pid_t *pids, int n)
{
    bool ok = true;

    for (int i = 0; i < n; i++) {
        int status = 0;
        if (waitpid(pids[i], &status, 0) != pids[i] || !WIFEXITED(status) ||
            WEXITSTATUS(status) != 0)
            ok = false;
    }
    return ok;
}

/* -------------------------------------------------------------- segment */

static void
open_creates_a_fresh_segment_with_header_and_geometry(void **state)
{
    struct fx *f = *state;
    struct gw_shm_header *h = f->shm.hdr;

    assert_non_null(h);
    assert_true(h->magic == GW_SHM_MAGIC);
    assert_int_equal(h->layout, GW_SHM_LAYOUT);
    assert_int_equal(h->size, f->shm.size);
    assert_int_equal(h->nworkers, 8);
    assert_int_equal(h->nstats, 64);
    assert_int_equal(h->nbuckets, 64);
    assert_int_equal(h->nring, 64);
    assert_int_equal(h->gen_size, 64 * 1024);
    assert_true(h->incarnation != 0);
    assert_int_equal(atomic_load(&h->gen_current), -1);
    assert_int_equal(atomic_load(&h->ring_head), 0);
    assert_int_equal(atomic_load(&h->ring_tail), 0);
    for (size_t i = 0; i < h->nworkers; i++) {
        assert_int_equal(atomic_load(&gw_shm_worker(&f->shm, i)->pid), 0);
        assert_int_equal(atomic_load(&gw_shm_worker(&f->shm, i)->gen_slots), 0);
    }
    for (size_t i = 0; i < h->nring; i++)
        assert_int_equal(atomic_load(&ring_slots(&f->shm)[i].seq), i);
    assert_string_equal(f->shm.name, f->name);
}

static void
open_again_with_the_same_geometry_attaches_and_keeps_the_data(void **state)
{
    struct fx *f = *state;
    struct gw_shm_geometry geo = geo_small();
    struct gw_usage got[8];
    uint64_t first;
    bool attached = false;

    long idx = gw_shm_stat_find(&f->shm, "m:demo", true);
    assert_true(idx >= 0);
    atomic_store(&gw_shm_stat_at(&f->shm, idx)->requests, 7);
    for (int i = 0; i < 3; i++) {
        struct gw_usage u = rec_make(0, i);
        assert_int_equal(gw_shm_ring_push(&f->shm, &u), 0);
    }

    assert_int_equal(gw_shm_open(f->name, &geo, &f->other, &attached), 0);
    assert_true(attached);
    assert_true(f->other.hdr != f->shm.hdr);
    assert_true(f->other.hdr->incarnation == f->shm.hdr->incarnation);
    assert_int_equal(gw_shm_stat_find(&f->other, "m:demo", false), idx);
    assert_int_equal(atomic_load(&gw_shm_stat_at(&f->other, idx)->requests), 7);
    assert_int_equal(gw_shm_ring_peek(&f->other, got, 8, &first, 1000), 3);
    assert_int_equal(first, 0);
    for (int i = 0; i < 3; i++)
        assert_string_equal(got[i].request_id, rec_make(0, i).request_id);

    /* One object, two mappings: a write through one is seen by the other. */
    atomic_fetch_add(&gw_shm_stat_at(&f->other, idx)->requests, 1);
    assert_int_equal(atomic_load(&gw_shm_stat_at(&f->shm, idx)->requests), 8);
}

static void
open_with_another_geometry_recreates_the_segment(void **state)
{
    struct fx *f = *state;
    struct gw_shm_geometry geo = geo_small();
    uint64_t old_incarnation = f->shm.hdr->incarnation;
    bool attached = true;

    assert_true(gw_shm_stat_find(&f->shm, "m:demo", true) >= 0);
    struct gw_usage u = rec_make(0, 1);
    assert_int_equal(gw_shm_ring_push(&f->shm, &u), 0);

    geo.nstats = 128;
    assert_int_equal(gw_shm_open(f->name, &geo, &f->other, &attached), 0);
    assert_false(attached);
    assert_int_equal(f->other.hdr->nstats, 128);
    assert_true(f->other.hdr->incarnation != old_incarnation);
    assert_int_equal(gw_shm_stat_find(&f->other, "m:demo", false), -1);
    assert_int_equal(atomic_load(&f->other.hdr->ring_tail), 0);
    /* The old mapping is still valid and still has its data. */
    assert_true(gw_shm_stat_find(&f->shm, "m:demo", false) >= 0);
}

static void
open_ignores_an_object_of_the_right_size_without_the_magic(void **state)
{
    struct fx *f = *state;
    struct gw_shm_geometry geo = geo_small();
    bool attached = true;

    /* What a creator killed before segment_init finished leaves behind. */
    name_make(f->other_name, sizeof(f->other_name));
    int fd = shm_open(f->other_name, O_RDWR | O_CREAT | O_EXCL, 0600);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, (off_t)f->shm.size), 0);
    close(fd);

    assert_int_equal(gw_shm_open(f->other_name, &geo, &f->other, &attached), 0);
    assert_false(attached);
    assert_true(f->other.hdr->magic == GW_SHM_MAGIC);
    assert_int_equal(atomic_load(&f->other.hdr->gen_current), -1);
}

static void
attach_of_a_missing_name_is_enoent(void **state)
{
    struct gw_shm shm;
    char name[64];

    (void)state;
    name_make(name, sizeof(name));
    assert_int_equal(gw_shm_attach(name, &shm), GW_ENOENT);
}

static void
attach_maps_an_existing_segment(void **state)
{
    struct fx *f = *state;

    long idx = gw_shm_stat_find(&f->shm, "k:key_1", true);
    assert_int_equal(gw_shm_attach(f->name, &f->other), 0);
    assert_int_equal(f->other.size, f->shm.size);
    assert_true(f->other.hdr->incarnation == f->shm.hdr->incarnation);
    assert_int_equal(gw_shm_stat_find(&f->other, "k:key_1", false), idx);
}

static void
check_layout(const struct gw_shm_header *h)
{
    struct {
        uint64_t off, len;
    } r[5 + GW_SHM_GEN_SLOTS] = {
        {h->workers_off, h->nworkers * sizeof(struct gw_shm_worker)},
        {h->stats_off, h->nstats * sizeof(struct gw_shm_stat)},
        {h->buckets_off, h->nbuckets * sizeof(struct gw_shm_bucket)},
        {h->quotas_off, h->nquotas * sizeof(struct gw_shm_quota)},
        {h->ring_off, h->nring * sizeof(struct gw_shm_ring_slot)},
    };
    uint64_t end = sizeof(*h);

    for (int i = 0; i < GW_SHM_GEN_SLOTS; i++) {
        r[5 + i].off = h->gen_off[i];
        r[5 + i].len = h->gen_size;
    }
    for (size_t i = 0; i < sizeof(r) / sizeof(r[0]); i++) {
        assert_int_equal(r[i].off % 64, 0);
        assert_true(r[i].off >= end); /* after the header or the previous region */
        end = r[i].off + r[i].len;
    }
    assert_true(end <= h->size);
}

static void
offsets_are_aligned_and_regions_do_not_overlap(void **state)
{
    struct fx *f = *state;
    struct gw_shm_geometry odd = {
        .nworkers = 3, .nstats = 5, .nbuckets = 7, .nquotas = 5, .nring = 16, .gen_size = 1000};
    bool attached = true;

    check_layout(f->shm.hdr);
    name_make(f->other_name, sizeof(f->other_name));
    assert_int_equal(gw_shm_open(f->other_name, &odd, &f->other, &attached), 0);
    assert_false(attached);
    check_layout(f->other.hdr);
}

/* ----------------------------------------------------------- stat table */

static void
stat_find_claims_a_name_once(void **state)
{
    struct fx *f = *state;

    assert_int_equal(gw_shm_stat_find(&f->shm, "m:demo", false), -1);
    long a = gw_shm_stat_find(&f->shm, "m:demo", true);
    assert_true(a >= 0 && a < 64);
    assert_int_equal(gw_shm_stat_find(&f->shm, "m:demo", true), a);
    assert_int_equal(gw_shm_stat_find(&f->shm, "m:demo", false), a);
    assert_string_equal(gw_shm_stat_at(&f->shm, a)->name, "m:demo");
    assert_int_equal(atomic_load(&gw_shm_stat_at(&f->shm, a)->state), 2);
}

static void
stat_find_gives_different_names_different_entries(void **state)
{
    struct fx *f = *state;
    long a = gw_shm_stat_find(&f->shm, "m:demo", true);
    long b = gw_shm_stat_find(&f->shm, "t:local/mock-small", true);
    long c = gw_shm_stat_find(&f->shm, "k:key_000000000001", true);

    assert_true(a >= 0 && b >= 0 && c >= 0);
    assert_true(a != b && b != c && a != c);
}

static void
stat_find_refuses_a_name_too_long_for_an_entry(void **state)
{
    struct fx *f = *state;
    char name[GW_SHM_NAME_LEN + 1];

    memset(name, 'x', sizeof(name) - 1);
    name[sizeof(name) - 1] = '\0';
    assert_int_equal(gw_shm_stat_find(&f->shm, name, true), -1);
    name[GW_SHM_NAME_LEN - 1] = '\0'; /* 95 characters fit */
    assert_true(gw_shm_stat_find(&f->shm, name, true) >= 0);
}

static void
stat_table_full_returns_minus_one(void **state)
{
    struct fx *f = *state;
    bool seen[64] = {false};
    char name[32];

    for (int i = 0; i < 64; i++) {
        snprintf(name, sizeof(name), "m:model-%d", i);
        long idx = gw_shm_stat_find(&f->shm, name, true);
        assert_true(idx >= 0 && idx < 64);
        assert_false(seen[idx]);
        seen[idx] = true;
    }
    assert_int_equal(gw_shm_stat_find(&f->shm, "m:one-too-many", true), -1);
    assert_int_equal(gw_shm_stat_find(&f->shm, "m:one-too-many", false), -1);
    /* Names already there are still found in a full table. */
    for (int i = 0; i < 64; i++) {
        snprintf(name, sizeof(name), "m:model-%d", i);
        assert_true(gw_shm_stat_find(&f->shm, name, true) >= 0);
    }
}

static void
stat_claims_raced_by_processes_leave_one_entry_per_name(void **state)
{
    struct fx *f = *state;
    enum { NNAMES = 50 };
    pid_t pids[NCHILDREN];
    int gate[2];
    char name[32];

    /* The children wait on the pipe; closing it releases them together. */
    assert_int_equal(pipe(gate), 0);
    for (int c = 0; c < NCHILDREN; c++) {
        pids[c] = fork();
        assert_true(pids[c] >= 0);
        if (pids[c] == 0) {
            char b;
            close(gate[1]);
            if (read(gate[0], &b, 1) != 0)
                _exit(3);
            /* Each child walks the names from a different place. */
            for (int k = 0; k < NNAMES; k++) {
                int i = (k + c * 13) % NNAMES;
                char nm[32];
                snprintf(nm, sizeof(nm), "t:prov/model-%d", i);
                long idx = gw_shm_stat_find(&f->shm, nm, true);
                if (idx < 0)
                    _exit(1);
                atomic_fetch_add(&gw_shm_stat_at(&f->shm, idx)->requests, 1);
            }
            _exit(0);
        }
    }
    close(gate[0]);
    close(gate[1]);
    assert_true(children_reap(pids, NCHILDREN));

    int ready = 0;
    for (uint64_t i = 0; i < f->shm.hdr->nstats; i++) {
        struct gw_shm_stat *st = gw_shm_stat_at(&f->shm, i);
        uint32_t s = atomic_load(&st->state);
        assert_true(s == 0 || s == 2);
        if (s != 2)
            continue;
        ready++;
        /* No name twice, and every claim of it landed here. */
        for (uint64_t j = i + 1; j < f->shm.hdr->nstats; j++)
            if (atomic_load(&gw_shm_stat_at(&f->shm, j)->state) == 2)
                assert_string_not_equal(st->name, gw_shm_stat_at(&f->shm, j)->name);
        assert_int_equal(atomic_load(&st->requests), NCHILDREN);
    }
    assert_int_equal(ready, NNAMES);
    for (int i = 0; i < NNAMES; i++) {
        snprintf(name, sizeof(name), "t:prov/model-%d", i);
        assert_true(gw_shm_stat_find(&f->shm, name, false) >= 0);
    }
}

/* ---------------------------------------------------------------- ring */

static void
ring_push_peek_release_keep_the_order(void **state)
{
    struct fx *f = *state;
    struct gw_usage got[64];
    uint64_t first = 99;

    assert_int_equal(gw_shm_ring_peek(&f->shm, got, 64, &first, 1000), 0);
    assert_int_equal(first, 0);
    for (int i = 0; i < 10; i++) {
        struct gw_usage u = rec_make(0, i);
        assert_int_equal(gw_shm_ring_push(&f->shm, &u), 0);
    }
    /* max is honoured; the rest waits for the next peek. */
    assert_int_equal(gw_shm_ring_peek(&f->shm, got, 4, &first, 1000), 4);
    assert_int_equal(first, 0);
    gw_shm_ring_release(&f->shm, first + 4);
    assert_int_equal(gw_shm_ring_peek(&f->shm, got, 64, &first, 1000), 6);
    assert_int_equal(first, 4);
    for (int i = 0; i < 6; i++) {
        int c, seq;
        assert_true(rec_parse(&got[i], &c, &seq));
        assert_int_equal(seq, 4 + i);
        assert_int_equal(got[i].input_tokens, 4 + i);
        assert_string_equal(got[i].target, "local/mock-small");
    }
    gw_shm_ring_release(&f->shm, first + 6);
    assert_int_equal(gw_shm_ring_peek(&f->shm, got, 64, &first, 1000), 0);
    assert_int_equal(first, 10);
    assert_int_equal(atomic_load(&f->shm.hdr->ring_head), 10);
}

static void
ring_peek_does_not_release(void **state)
{
    struct fx *f = *state;
    struct gw_usage a[8], b[8];
    uint64_t fa, fb;

    for (int i = 0; i < 3; i++) {
        struct gw_usage u = rec_make(0, i);
        assert_int_equal(gw_shm_ring_push(&f->shm, &u), 0);
    }
    assert_int_equal(gw_shm_ring_peek(&f->shm, a, 8, &fa, 1000), 3);
    assert_int_equal(gw_shm_ring_peek(&f->shm, b, 8, &fb, 1000), 3);
    assert_int_equal(fa, fb);
    assert_memory_equal(a, b, 3 * sizeof(a[0]));
    assert_int_equal(atomic_load(&f->shm.hdr->ring_head), 0);
}

/* The ring (64 slots here) rings for its master once at a quarter full,
 * not again until a drain begins, and again at a quarter full after it. */
static void
ring_bell_rings_once_a_quarter_full_until_the_drain(void **state)
{
    struct fx *f = *state;
    struct gw_usage got[64];
    uint64_t first;
    int rung = 0, rung_at = -1;

    for (int seq = 0; seq < 40; seq++) {
        struct gw_usage u = rec_make(0, seq);
        assert_int_equal(gw_shm_ring_push(&f->shm, &u), 0);
        if (gw_shm_ring_bell(&f->shm)) {
            rung++;
            rung_at = seq;
        }
    }
    assert_int_equal(rung, 1);
    assert_int_equal(rung_at, 15); /* the push that made 16 of 64 pending */

    /* A drain begins: what is still pending past a quarter rings again. */
    gw_shm_ring_bell_reset(&f->shm);
    assert_true(gw_shm_ring_bell(&f->shm));
    assert_false(gw_shm_ring_bell(&f->shm));
    assert_int_equal(gw_shm_ring_peek(&f->shm, got, 64, &first, 1000), 40);
    gw_shm_ring_release(&f->shm, first + 40);
    gw_shm_ring_bell_reset(&f->shm);
    assert_false(gw_shm_ring_bell(&f->shm)); /* empty */
    for (int seq = 0; seq < 15; seq++) {
        struct gw_usage u = rec_make(0, seq);
        assert_int_equal(gw_shm_ring_push(&f->shm, &u), 0);
        assert_false(gw_shm_ring_bell(&f->shm));
    }
    struct gw_usage u = rec_make(0, 15);
    assert_int_equal(gw_shm_ring_push(&f->shm, &u), 0);
    assert_true(gw_shm_ring_bell(&f->shm));
}

static void
ring_full_push_is_etoobig_and_loses_nothing(void **state)
{
    struct fx *f = *state;
    struct gw_usage got[64];
    uint64_t first;
    int seq = 0;

    for (; seq < 64; seq++) {
        struct gw_usage u = rec_make(0, seq);
        assert_int_equal(gw_shm_ring_push(&f->shm, &u), 0);
    }
    struct gw_usage extra = rec_make(0, 999);
    assert_int_equal(gw_shm_ring_push(&f->shm, &extra), GW_ETOOBIG);
    assert_int_equal(atomic_load(&f->shm.hdr->ring_tail), 64);

    assert_int_equal(gw_shm_ring_peek(&f->shm, got, 64, &first, 1000), 64);
    for (int i = 0; i < 64; i++)
        assert_int_equal(got[i].input_tokens, i);

    /* Releasing some makes room for exactly as many, across the wrap. */
    gw_shm_ring_release(&f->shm, first + 10);
    for (int i = 0; i < 10; i++, seq++) {
        struct gw_usage u = rec_make(0, seq);
        assert_int_equal(gw_shm_ring_push(&f->shm, &u), 0);
    }
    assert_int_equal(gw_shm_ring_push(&f->shm, &extra), GW_ETOOBIG);
    assert_int_equal(gw_shm_ring_peek(&f->shm, got, 64, &first, 1000), 64);
    assert_int_equal(first, 10);
    for (int i = 0; i < 64; i++)
        assert_int_equal(got[i].input_tokens, 10 + i);
    assert_int_equal(atomic_load(&f->shm.hdr->ring_lost), 0);
}

/*
 * A worker killed between claiming a slot (moving the tail) and publishing
 * it.  The child does exactly the claim half of a push and is then killed.
 * Runs before the multi-process ring test: peek keeps its stall position
 * in a static, per process.
 */
static void
ring_slot_of_a_killed_writer_is_skipped_after_stall_ms(void **state)
{
    struct fx *f = *state;
    struct gw_usage got[64];
    uint64_t first;
    int status;

    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        atomic_fetch_add(&f->shm.hdr->ring_tail, 1);
        raise(SIGKILL);
        _exit(1);
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    assert_int_equal(atomic_load(&f->shm.hdr->ring_tail), 1);

    for (int i = 1; i <= 2; i++) {
        struct gw_usage u = rec_make(0, i);
        assert_int_equal(gw_shm_ring_push(&f->shm, &u), 0);
    }
    /* Within stall_ms the head waits for the writer. */
    assert_int_equal(gw_shm_ring_peek(&f->shm, got, 64, &first, 200), 0);
    assert_int_equal(first, 0);
    assert_int_equal(gw_shm_ring_peek(&f->shm, got, 64, &first, 200), 0);
    assert_int_equal(atomic_load(&f->shm.hdr->ring_lost), 0);
    assert_int_equal(atomic_load(&f->shm.hdr->ring_head), 0);

    usleep(250 * 1000);
    assert_int_equal(gw_shm_ring_peek(&f->shm, got, 64, &first, 200), 2);
    assert_int_equal(first, 1);
    assert_int_equal(got[0].input_tokens, 1);
    assert_int_equal(got[1].input_tokens, 2);
    assert_int_equal(atomic_load(&f->shm.hdr->ring_lost), 1);
    gw_shm_ring_release(&f->shm, first + 2);

    /* The ring is not wedged: the skipped slot takes records again. */
    for (int i = 0; i < 64; i++) {
        struct gw_usage u = rec_make(0, 100 + i);
        assert_int_equal(gw_shm_ring_push(&f->shm, &u), 0);
    }
    assert_int_equal(gw_shm_ring_peek(&f->shm, got, 64, &first, 200), 64);
    assert_int_equal(first, 3);
    for (int i = 0; i < 64; i++)
        assert_int_equal(got[i].input_tokens, 100 + i);
    assert_int_equal(atomic_load(&f->shm.hdr->ring_lost), 1);
}

static void
ring_records_pushed_by_processes_arrive_exactly_once(void **state)
{
    struct fx *f = *state;
    enum { PER_CHILD = 5000 };
    static struct gw_usage got[256];
    int next[NCHILDREN] = {0};
    pid_t pids[NCHILDREN];
    size_t received = 0;

    assert_int_equal(f->shm.hdr->nring, 1024);
    for (int c = 0; c < NCHILDREN; c++) {
        pids[c] = fork();
        assert_true(pids[c] >= 0);
        if (pids[c] == 0) {
            for (int seq = 0; seq < PER_CHILD; seq++) {
                struct gw_usage u = rec_make(c, seq);
                int rc;
                while ((rc = gw_shm_ring_push(&f->shm, &u)) == GW_ETOOBIG)
                    sched_yield();
                if (rc != 0)
                    _exit(1);
            }
            _exit(0);
        }
    }

    int64_t deadline = gw_now_ms() + 20000;
    while (received < (size_t)NCHILDREN * PER_CHILD && gw_now_ms() < deadline) {
        uint64_t first;
        /* A long stall: a writer preempted mid-push is alive, not dead. */
        size_t n = gw_shm_ring_peek(&f->shm, got, 256, &first, 60000);
        for (size_t i = 0; i < n; i++) {
            int c, seq;
            assert_true(rec_parse(&got[i], &c, &seq));
            assert_true(c >= 0 && c < NCHILDREN);
            /* Each child's records come in its order, none twice, none skipped. */
            assert_int_equal(seq, next[c]);
            assert_int_equal(got[i].input_tokens, seq);
            next[c]++;
        }
        gw_shm_ring_release(&f->shm, first + n);
        received += n;
        if (n == 0)
            sched_yield();
    }
    assert_true(children_reap(pids, NCHILDREN));
    assert_int_equal(received, NCHILDREN * PER_CHILD);
    for (int c = 0; c < NCHILDREN; c++)
        assert_int_equal(next[c], PER_CHILD);
    assert_int_equal(atomic_load(&f->shm.hdr->ring_lost), 0);
    assert_int_equal(atomic_load(&f->shm.hdr->ring_tail), NCHILDREN * PER_CHILD);
    assert_int_equal(atomic_load(&f->shm.hdr->ring_head), NCHILDREN * PER_CHILD);
}

/* ------------------------------------------------------------- buckets */

static void
new_bucket_allows_burst_takes_then_refuses(void **state)
{
    struct fx *f = *state;
    int64_t wait_ms = -1;

    for (int i = 0; i < 5; i++) {
        assert_true(gw_shm_bucket_take(&f->shm, "k:burst", 1, 5, 1, &wait_ms, NULL));
        assert_int_equal(wait_ms, 0);
    }
    assert_false(gw_shm_bucket_take(&f->shm, "k:burst", 1, 5, 1, &wait_ms, NULL));
    assert_true(wait_ms > 0);
}

static void
remaining_decreases_with_each_take(void **state)
{
    struct fx *f = *state;
    int64_t wait_ms;
    double remaining = -1;

    /* One token a second: nothing refills while the test runs. */
    for (int i = 0; i < 5; i++) {
        assert_true(gw_shm_bucket_take(&f->shm, "k:rem", 1, 5, 1, &wait_ms, &remaining));
        assert_true(remaining == 4 - i);
    }
    assert_false(gw_shm_bucket_take(&f->shm, "k:rem", 1, 5, 1, &wait_ms, &remaining));
    assert_true(remaining == 0);
}

static void
refused_take_says_about_one_interval_and_takes_nothing(void **state)
{
    struct fx *f = *state;
    int64_t wait_ms, again_ms;

    /* 2 tokens a second: one every 500 ms, slow enough for a loaded box. */
    for (int i = 0; i < 3; i++)
        assert_true(gw_shm_bucket_take(&f->shm, "k:wait", 2, 3, 1, &wait_ms, NULL));
    assert_false(gw_shm_bucket_take(&f->shm, "k:wait", 2, 3, 1, &wait_ms, NULL));
    assert_true(wait_ms > 0 && wait_ms <= 500);
    /* A refusal leaves the bucket as it was: the wait does not grow. */
    assert_false(gw_shm_bucket_take(&f->shm, "k:wait", 2, 3, 1, &again_ms, NULL));
    assert_true(again_ms > 0 && again_ms <= wait_ms);
    /* Two tokens are one interval further away. */
    assert_false(gw_shm_bucket_take(&f->shm, "k:wait", 2, 3, 2, &again_ms, NULL));
    assert_true(again_ms > 500 && again_ms <= 1000);
}

static void
take_is_allowed_again_after_waiting_wait_ms(void **state)
{
    struct fx *f = *state;
    int64_t wait_ms = 0;
    int taken = 0;

    /* 20 tokens a second; take until refused (at least the burst). */
    while (gw_shm_bucket_take(&f->shm, "k:sleep", 20, 2, 1, &wait_ms, NULL))
        assert_true(++taken < 1000);
    assert_true(taken >= 2);
    assert_true(wait_ms > 0 && wait_ms <= 50);
    usleep((useconds_t)wait_ms * 1000);
    assert_true(gw_shm_bucket_take(&f->shm, "k:sleep", 20, 2, 1, &wait_ms, NULL));
    assert_int_equal(wait_ms, 0);
}

static void
give_returns_tokens_but_never_beyond_burst(void **state)
{
    struct fx *f = *state;
    int64_t wait_ms;
    double remaining;

    assert_true(gw_shm_bucket_take(&f->shm, "k:give", 1, 5, 3, &wait_ms, &remaining));
    assert_true(remaining == 2);
    gw_shm_bucket_give(&f->shm, "k:give", 1, 2);
    assert_true(gw_shm_bucket_take(&f->shm, "k:give", 1, 5, 1, &wait_ms, &remaining));
    assert_true(remaining == 3);

    /* Giving back far more than was taken only fills it. */
    gw_shm_bucket_give(&f->shm, "k:give", 1, 100);
    assert_true(gw_shm_bucket_take(&f->shm, "k:give", 1, 5, 5, &wait_ms, &remaining));
    assert_true(remaining == 0);
    assert_false(gw_shm_bucket_take(&f->shm, "k:give", 1, 5, 1, &wait_ms, &remaining));
}

static void
charge_takes_without_refusing_and_leaves_a_debt(void **state)
{
    struct fx *f = *state;
    int64_t wait_ms;
    double remaining;

    /* 5 tokens, refilling at 1 per second: take 3, then settle a usage of
     * 9 by charging 6 more; the bucket is 4 in debt. */
    assert_true(gw_shm_bucket_take(&f->shm, "k:charge", 1, 5, 3, &wait_ms, &remaining));
    assert_true(remaining == 2);
    gw_shm_bucket_charge(&f->shm, "k:charge", 1, 6);
    assert_false(gw_shm_bucket_take(&f->shm, "k:charge", 1, 5, 1, &wait_ms, NULL));
    /* Owed 4, and 1 to take: about 5 s. */
    assert_true(wait_ms > 4000 && wait_ms <= 5000);
    /* Charging a full bucket starts from now, not from a TAT in the past. */
    gw_shm_bucket_charge(&f->shm, "k:charge-full", 1, 2);
    assert_true(gw_shm_bucket_take(&f->shm, "k:charge-full", 1, 5, 3, &wait_ms, &remaining));
    assert_true(remaining == 0);
    assert_false(gw_shm_bucket_take(&f->shm, "k:charge-full", 1, 5, 1, &wait_ms, NULL));
}

static void
buckets_with_different_names_are_independent(void **state)
{
    struct fx *f = *state;
    int64_t wait_ms;

    assert_true(gw_shm_bucket_take(&f->shm, "k:a", 1, 1, 1, &wait_ms, NULL));
    assert_false(gw_shm_bucket_take(&f->shm, "k:a", 1, 1, 1, &wait_ms, NULL));
    assert_true(gw_shm_bucket_take(&f->shm, "k:b", 1, 1, 1, &wait_ms, NULL));
}

static void
bucket_hammered_by_processes_admits_no_more_than_its_rate(void **state)
{
    struct fx *f = *state;
    const double rate = 1000, burst = 20;
    pid_t pids[NCHILDREN];
    long idx = gw_shm_stat_find(&f->shm, "k:hammer-admitted", true);

    assert_true(idx >= 0);
    struct gw_shm_stat *admitted = gw_shm_stat_at(&f->shm, idx);
    int64_t start = gw_now_us();
    for (int c = 0; c < NCHILDREN; c++) {
        pids[c] = fork();
        assert_true(pids[c] >= 0);
        if (pids[c] == 0) {
            int64_t wait_ms;
            while (gw_now_us() - start < 1000000)
                if (gw_shm_bucket_take(&f->shm, "k:hammer", rate, burst, 1, &wait_ms, NULL))
                    atomic_fetch_add(&admitted->requests, 1);
            _exit(0);
        }
    }
    assert_true(children_reap(pids, NCHILDREN));
    double elapsed_s = (double)(gw_now_us() - start) / 1e6;

    uint64_t n = atomic_load(&admitted->requests);
    assert_true((double)n <= burst + rate * elapsed_s + 1);
    assert_true((double)n > burst); /* and it did refill */
}

/* ---------------------------------------------------------- generations */

/* A configuration built by hand: two providers, two models, three targets. */
static struct gw_config *
config_build(const char *tag, size_t url_pad)
{
    struct gw_arena *a = gw_arena_create(4096);
    struct gw_config *cfg = gw_arena_zalloc(a, sizeof(*cfg));

    cfg->arena = a;
    cfg->path = gw_arena_strdup(a, "/etc/aigw/test.yaml");
    cfg->log_level = GW_LOG_DEBUG;
    cfg->access_log = true;
    cfg->http = (struct gw_http_limits){8192, 1 << 20, 5000, 10000, 15000, 1 << 22};
    cfg->max_response_size = 4 << 20;

    cfg->nproviders = 2;
    cfg->providers = gw_arena_zalloc(a, 2 * sizeof(*cfg->providers));
    cfg->providers[0] = (struct gw_provider){
        .name = gw_arena_strdup(a, "local"),
        .type = GW_PROVIDER_OPENAI,
        .base_url = gw_arena_strdup(a, "http://127.0.0.1:9000/v1"),
        .api_key = gw_arena_strdup(a, "sk-local-secret"),
    };
    char *url = gw_arena_alloc(a, url_pad + 32);
    size_t len = (size_t)snprintf(url, 32, "https://api.example.com/v1");
    memset(url + len, 'x', url_pad);
    url[len + url_pad] = '\0';
    cfg->providers[1] = (struct gw_provider){
        .name = gw_arena_strdup(a, "remote"),
        .type = GW_PROVIDER_OPENAI,
        .base_url = url,
    };

    cfg->nmodels = 2;
    cfg->models = gw_arena_zalloc(a, 2 * sizeof(*cfg->models));
    struct gw_target *t0 = gw_arena_zalloc(a, 2 * sizeof(*t0));
    t0[0] =
        (struct gw_target){.provider = 0, .model = gw_arena_strdup(a, "mock-small"), .weight = 3};
    t0[1] =
        (struct gw_target){.provider = 1, .model = gw_arena_printf(a, "gpt-%s", tag), .weight = 1};
    cfg->models[0] = (struct gw_model){
        .name = gw_arena_printf(a, "demo%s", tag),
        .targets = t0,
        .ntargets = 2,
        .timeouts = {1000, 2000, 3000, 4000},
    };
    struct gw_target *t1 = gw_arena_zalloc(a, sizeof(*t1));
    t1[0] =
        (struct gw_target){.provider = 1, .model = gw_arena_strdup(a, "solo-model"), .weight = 1};
    cfg->models[1] = (struct gw_model){
        .name = gw_arena_printf(a, "solo%s", tag),
        .targets = t1,
        .ntargets = 1,
        .timeouts = {100, 200, 300, 400},
    };
    return cfg;
}

/* Publish a configuration tagged tag as generation gen. */
static int
publish(const struct gw_shm *shm, const char *tag, uint64_t gen)
{
    struct gw_config *cfg = config_build(tag, 0);
    int rc = gw_shm_gen_publish(shm, cfg, gen);

    gw_config_free(cfg);
    return rc;
}

static struct gw_shm_worker *
worker_live(const struct gw_shm *shm, size_t i)
{
    struct gw_shm_worker *w = gw_shm_worker(shm, i);

    atomic_store(&w->pid, (int32_t)getpid());
    return w;
}

static void
gen_acquire_is_null_before_any_publish(void **state)
{
    struct fx *f = *state;
    struct gw_shm_worker *me = worker_live(&f->shm, 0);

    struct gw_gen_refs refs = {.shm = &f->shm, .me = me};

    assert_null(gw_shm_gen_acquire(&refs));
    assert_int_equal(atomic_load(&me->gen_slots), 0);
}

static void
gen_publish_lays_out_the_config_for_acquire(void **state)
{
    struct fx *f = *state;
    struct gw_shm_worker *me = worker_live(&f->shm, 0);
    struct gw_config *cfg = config_build("A", 0);

    assert_int_equal(gw_shm_gen_publish(&f->shm, cfg, 1), 0);
    assert_int_equal(atomic_load(&f->shm.hdr->generation), 1);
    struct gw_gen_refs refs = {.shm = &f->shm, .me = me};
    const struct gw_gen *g = gw_shm_gen_acquire(&refs);
    assert_non_null(g);
    assert_int_equal(atomic_load(&me->gen_slots), 1u << atomic_load(&f->shm.hdr->gen_current));

    assert_int_equal(g->generation, 1);
    assert_true(g->published > 0);
    assert_true(g->size > sizeof(*g) && g->size <= f->shm.hdr->gen_size);
    assert_string_equal(gw_gen_str(g, g->config_path), "/etc/aigw/test.yaml");
    assert_int_equal(g->log_level, GW_LOG_DEBUG);
    assert_int_equal(g->access_log, 1);
    assert_memory_equal(&g->http, &cfg->http, sizeof(g->http));
    assert_int_equal(g->max_response_size, 4 << 20);

    assert_int_equal(g->nproviders, 2);
    assert_string_equal(gw_gen_str(g, gw_gen_provider(g, 0)->name), "local");
    assert_string_equal(gw_gen_str(g, gw_gen_provider(g, 0)->base_url), "http://127.0.0.1:9000/v1");
    assert_string_equal(gw_gen_str(g, gw_gen_provider(g, 0)->api_key), "sk-local-secret");
    assert_string_equal(gw_gen_str(g, gw_gen_provider(g, 1)->name), "remote");
    assert_null(gw_gen_str(g, gw_gen_provider(g, 1)->api_key));
    assert_int_equal(gw_gen_provider(g, 1)->type, GW_PROVIDER_OPENAI);

    assert_int_equal(g->nmodels, 2);
    assert_int_equal(g->ntargets, 3);
    const struct gw_gen_model *m = gw_gen_model_find(g, "demoA");
    assert_non_null(m);
    assert_string_equal(gw_gen_str(g, m->name), "demoA");
    assert_int_equal(m->ntargets, 2);
    assert_int_equal(m->timeouts.first_byte_ms, 2000);
    assert_int_equal(m->stat, gw_shm_stat_find(&f->shm, "m:demoA", false));
    assert_true(m->stat >= 0);
    const struct gw_gen_target *t = gw_gen_target(g, m->first_target);
    assert_int_equal(t[0].provider, 0);
    assert_string_equal(gw_gen_str(g, t[0].model), "mock-small");
    assert_int_equal(t[0].stat, gw_shm_stat_find(&f->shm, "t:local/mock-small", false));
    assert_true(t[0].stat >= 0);
    assert_int_equal(t[1].provider, 1);
    assert_string_equal(gw_gen_str(g, t[1].model), "gpt-A");
    assert_int_equal(t[1].stat, gw_shm_stat_find(&f->shm, "t:remote/gpt-A", false));
    assert_true(t[1].stat >= 0 && t[1].stat != t[0].stat);

    const struct gw_gen_model *solo = gw_gen_model_find(g, "soloA");
    assert_non_null(solo);
    assert_int_equal(solo->ntargets, 1);
    assert_int_equal(solo->timeouts.total_ms, 400);
    assert_string_equal(gw_gen_str(g, gw_gen_target(g, solo->first_target)->model), "solo-model");
    assert_null(gw_gen_model_find(g, "missing"));

    gw_shm_gen_release(&refs, g);
    assert_int_equal(atomic_load(&me->gen_slots), 0);
    gw_config_free(cfg);
}

static void
gen_new_publish_is_current_while_a_held_one_stays_intact(void **state)
{
    struct fx *f = *state;
    struct gw_shm_worker *old = worker_live(&f->shm, 0), *young = worker_live(&f->shm, 1);

    assert_int_equal(publish(&f->shm, "A", 1), 0);
    struct gw_gen_refs old_refs = {.shm = &f->shm, .me = old};
    struct gw_gen_refs young_refs = {.shm = &f->shm, .me = young};
    const struct gw_gen *g1 = gw_shm_gen_acquire(&old_refs);
    assert_non_null(g1);
    void *copy = malloc(g1->size);
    assert_non_null(copy);
    memcpy(copy, g1, g1->size);

    assert_int_equal(publish(&f->shm, "B", 2), 0);
    const struct gw_gen *g2 = gw_shm_gen_acquire(&young_refs);
    assert_non_null(g2);
    assert_true(g2 != g1);
    assert_int_equal(g2->generation, 2);
    assert_non_null(gw_gen_model_find(g2, "demoB"));
    assert_null(gw_gen_model_find(g2, "demoA"));
    gw_shm_gen_release(&young_refs, g2);

    /* The request that took generation 1 still reads generation 1. */
    for (uint64_t gen = 3; gen <= 12; gen++)
        assert_int_equal(publish(&f->shm, "C", gen), 0);
    assert_int_equal(g1->generation, 1);
    assert_non_null(gw_gen_model_find(g1, "demoA"));
    assert_null(gw_gen_model_find(g1, "demoB"));
    assert_memory_equal(g1, copy, ((const struct gw_gen *)copy)->size);
    gw_shm_gen_release(&old_refs, g1);
    free(copy);
}

/* One worker's connections may hold two generations at once (a reload
 * between their requests): both stay announced until their last user is
 * done, each slot on its own. */
static void
gen_slots_held_by_concurrent_requests_of_one_worker(void **state)
{
    struct fx *f = *state;
    struct gw_shm_worker *me = worker_live(&f->shm, 0);
    struct gw_gen_refs refs = {.shm = &f->shm, .me = me};

    assert_int_equal(publish(&f->shm, "A", 1), 0);
    int first = atomic_load(&f->shm.hdr->gen_current);
    const struct gw_gen *a1 = gw_shm_gen_acquire(&refs), *a2 = gw_shm_gen_acquire(&refs);
    assert_ptr_equal(a1, a2);
    assert_int_equal(publish(&f->shm, "B", 2), 0);
    int second = atomic_load(&f->shm.hdr->gen_current);
    const struct gw_gen *b = gw_shm_gen_acquire(&refs);
    assert_int_equal(b->generation, 2);
    assert_int_equal(atomic_load(&me->gen_slots), (1u << first) | (1u << second));

    gw_shm_gen_release(&refs, a1);
    assert_int_equal(atomic_load(&me->gen_slots), (1u << first) | (1u << second));
    /* Generation 1 is still read: publishing never takes its slot. */
    for (uint64_t gen = 3; gen <= 20; gen++) {
        assert_int_equal(publish(&f->shm, "C", gen), 0);
        assert_int_not_equal(atomic_load(&f->shm.hdr->gen_current), first);
    }
    assert_int_equal(a2->generation, 1);
    gw_shm_gen_release(&refs, a2);
    gw_shm_gen_release(&refs, b);
    assert_int_equal(atomic_load(&me->gen_slots), 0);
}

static void
gen_slot_held_by_a_live_worker_is_never_overwritten(void **state)
{
    struct fx *f = *state;

    assert_int_equal(publish(&f->shm, "A", 1), 0);
    int held = atomic_load(&f->shm.hdr->gen_current);
    struct gw_shm_worker *w = worker_live(&f->shm, 5);
    atomic_store(&w->gen_slots, 1u << held);
    const struct gw_gen *g =
        (const struct gw_gen *)((char *)f->shm.hdr + f->shm.hdr->gen_off[held]);
    void *copy = malloc(g->size);
    assert_non_null(copy);
    memcpy(copy, g, g->size);

    for (uint64_t gen = 2; gen <= 30; gen++) {
        assert_int_equal(publish(&f->shm, "B", gen), 0);
        assert_int_not_equal(atomic_load(&f->shm.hdr->gen_current), held);
        assert_int_equal(atomic_load(&f->shm.hdr->generation), gen);
    }
    assert_memory_equal(g, copy, ((const struct gw_gen *)copy)->size);
    free(copy);
}

static void
gen_publish_is_eexist_when_every_other_slot_is_held(void **state)
{
    struct fx *f = *state;

    assert_int_equal(publish(&f->shm, "A", 1), 0);
    int current = atomic_load(&f->shm.hdr->gen_current);
    size_t wi = 0;
    struct gw_shm_worker *last = NULL;
    for (int s = 0; s < GW_SHM_GEN_SLOTS; s++) {
        if (s == current)
            continue;
        last = worker_live(&f->shm, wi++);
        atomic_store(&last->gen_slots, 1u << s);
    }
    assert_int_equal(wi, GW_SHM_GEN_SLOTS - 1);

    assert_int_equal(publish(&f->shm, "B", 2), GW_EEXIST);
    assert_int_equal(atomic_load(&f->shm.hdr->gen_current), current);
    assert_int_equal(atomic_load(&f->shm.hdr->generation), 1);

    /* One request finishes: its slot is the one the next publish takes. */
    int freed = __builtin_ctz(atomic_load(&last->gen_slots));
    atomic_store(&last->gen_slots, 0);
    assert_int_equal(publish(&f->shm, "B", 2), 0);
    assert_int_equal(atomic_load(&f->shm.hdr->gen_current), freed);
    assert_int_equal(atomic_load(&f->shm.hdr->generation), 2);
}

static void
gen_slot_noted_by_a_dead_worker_is_reused(void **state)
{
    struct fx *f = *state;
    int status;

    pid_t dead = fork();
    assert_true(dead >= 0);
    if (dead == 0)
        _exit(0);
    assert_int_equal(waitpid(dead, &status, 0), dead);

    assert_int_equal(publish(&f->shm, "A", 1), 0);
    int current = atomic_load(&f->shm.hdr->gen_current);
    size_t wi = 0;
    for (int s = 0; s < GW_SHM_GEN_SLOTS; s++) {
        if (s == current)
            continue;
        struct gw_shm_worker *w = gw_shm_worker(&f->shm, wi++);
        atomic_store(&w->pid, (int32_t)dead);
        atomic_store(&w->gen_slots, 1u << s);
    }
    assert_int_equal(publish(&f->shm, "B", 2), 0);
    assert_int_equal(atomic_load(&f->shm.hdr->generation), 2);
}

static void
gen_publish_of_an_oversized_config_is_etoobig(void **state)
{
    struct fx *f = *state;
    struct gw_shm_worker *me = worker_live(&f->shm, 0);

    assert_int_equal(publish(&f->shm, "A", 1), 0);
    int current = atomic_load(&f->shm.hdr->gen_current);

    /* Strings over gen_size. */
    struct gw_config *cfg = config_build("big", 70 * 1024);
    assert_int_equal(gw_shm_gen_publish(&f->shm, cfg, 2), GW_ETOOBIG);
    gw_config_free(cfg);

    /* Arrays over gen_size (64 KiB / 48-byte models). */
    cfg = config_build("many", 0);
    cfg->nmodels = 2000;
    cfg->models = gw_arena_zalloc(cfg->arena, cfg->nmodels * sizeof(*cfg->models));
    for (size_t i = 0; i < cfg->nmodels; i++)
        cfg->models[i].name = gw_arena_printf(cfg->arena, "m%zu", i);
    assert_int_equal(gw_shm_gen_publish(&f->shm, cfg, 3), GW_ETOOBIG);
    gw_config_free(cfg);

    assert_int_equal(atomic_load(&f->shm.hdr->gen_current), current);
    assert_int_equal(atomic_load(&f->shm.hdr->generation), 1);
    struct gw_gen_refs refs = {.shm = &f->shm, .me = me};
    const struct gw_gen *g = gw_shm_gen_acquire(&refs);
    assert_non_null(g);
    assert_int_equal(g->generation, 1);
    assert_non_null(gw_gen_model_find(g, "demoA"));
    gw_shm_gen_release(&refs, g);
}

/* ---------------------------------------------------------- LMDB usage */

struct store_fx {
    char dir[64];
    struct gw_store *st;
};

static int
store_setup(void **state)
{
    struct store_fx *s = calloc(1, sizeof(*s));

    if (s == NULL)
        return -1;
    snprintf(s->dir, sizeof(s->dir), "/tmp/aigw-test-shm-XXXXXX");
    if (mkdtemp(s->dir) == NULL || gw_store_open(s->dir, &s->st) != 0) {
        free(s);
        return -1;
    }
    *state = s;
    return 0;
}

static int
store_teardown(void **state)
{
    struct store_fx *s = *state;
    char cmd[128];

    gw_store_close(s->st);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", s->dir);
    int rc = system(cmd);
    free(s);
    return rc == 0 ? 0 : -1;
}

/* Records in the usage database, counted with LMDB directly (the store is
 * closed first: one process must not open an environment twice). */
static size_t
usage_records_count(struct store_fx *s)
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    MDB_stat ms;

    gw_store_close(s->st);
    s->st = NULL;
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 16), 0);
    assert_int_equal(mdb_env_set_mapsize(env, (size_t)1 << 30), 0);
    assert_int_equal(mdb_env_open(env, s->dir, MDB_RDONLY, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "usage", 0, &dbi), 0);
    assert_int_equal(mdb_stat(txn, dbi, &ms), 0);
    mdb_txn_abort(txn);
    mdb_env_close(env);
    assert_int_equal(gw_store_open(s->dir, &s->st), 0);
    return ms.ms_entries;
}

static void
usage_head_is_enoent_on_a_fresh_store(void **state)
{
    struct store_fx *s = *state;
    struct gw_usage_totals t;
    uint64_t head = 42;

    assert_int_equal(gw_store_usage_head(s->st, 0x1234, &head), GW_ENOENT);
    assert_int_equal(gw_store_usage_totals(s->st, &t), 0);
    assert_int_equal(t.requests, 0);
}

static void
usage_add_with_incarnation_stores_records_and_head(void **state)
{
    struct store_fx *s = *state;
    struct gw_usage recs[3] = {rec_make(0, 1), rec_make(0, 2), rec_make(0, 3)};
    struct gw_usage_totals t;
    uint64_t head = 0;

    assert_int_equal(gw_store_usage_add(s->st, recs, 3, 0xfeedULL, 3), 0);
    assert_int_equal(gw_store_usage_head(s->st, 0xfeedULL, &head), 0);
    assert_int_equal(head, 3);
    assert_int_equal(gw_store_usage_head(s->st, 0xbeefULL, &head), GW_ENOENT);
    assert_int_equal(gw_store_usage_totals(s->st, &t), 0);
    assert_int_equal(t.requests, 3);
    assert_int_equal(t.input_tokens, 1 + 2 + 3);
    assert_int_equal(t.output_tokens, 2 + 4 + 6);
    assert_int_equal(usage_records_count(s), 3);
}

static void
usage_totals_add_up_across_calls_and_write_through(void **state)
{
    struct store_fx *s = *state;
    struct gw_usage a[2] = {rec_make(0, 10), rec_make(1, 20)};
    struct gw_usage b = rec_make(2, 5);
    struct gw_usage c[3] = {rec_make(0, 1), rec_make(0, 1), rec_make(0, 1)};
    struct gw_usage neg = rec_make(3, 0);
    struct gw_usage_totals t;
    uint64_t head = 0;

    neg.input_tokens = -7; /* unknown: counts as a request, adds no tokens */
    neg.output_tokens = -1;
    assert_int_equal(gw_store_usage_add(s->st, a, 2, 0x77ULL, 2), 0);
    /* A worker writing through (incarnation 0) leaves the head alone. */
    assert_int_equal(gw_store_usage_add(s->st, &b, 1, 0, 0), 0);
    assert_int_equal(gw_store_usage_add(s->st, &neg, 1, 0, 0), 0);
    assert_int_equal(gw_store_usage_head(s->st, 0x77ULL, &head), 0);
    assert_int_equal(head, 2);
    /* Same timestamps, three positions: three records. */
    assert_int_equal(gw_store_usage_add(s->st, c, 3, 0x77ULL, 5), 0);
    assert_int_equal(gw_store_usage_head(s->st, 0x77ULL, &head), 0);
    assert_int_equal(head, 5);

    assert_int_equal(gw_store_usage_totals(s->st, &t), 0);
    assert_int_equal(t.requests, 2 + 1 + 1 + 3);
    assert_int_equal(t.input_tokens, 10 + 20 + 5 + 3);
    assert_int_equal(t.output_tokens, 20 + 40 + 10 + 6);
    assert_int_equal(usage_records_count(s), 7);
}

static void
count_pace(void *ctx)
{
    (*(int *)ctx)++;
}

static void
usage_add_paces_every_32_records_and_stores_them_all(void **state)
{
    struct store_fx *s = *state;
    struct gw_usage recs[100];
    struct gw_usage_totals t;
    int paced = 0;

    for (int i = 0; i < 100; i++)
        recs[i] = rec_make(0, 1);
    gw_store_set_pace(s->st, count_pace, &paced);
    assert_int_equal(gw_store_usage_add(s->st, recs, 100, 0x99ULL, 100), 0);
    assert_int_equal(paced, 100 / GW_STORE_PACE_EVERY); /* after the 32nd, 64th, 96th */
    assert_int_equal(gw_store_usage_totals(s->st, &t), 0);
    assert_int_equal(t.requests, 100);
    assert_int_equal(usage_records_count(s), 100);
    /* A short batch is not paced. */
    gw_store_set_pace(s->st, count_pace, &paced);
    paced = 0;
    assert_int_equal(gw_store_usage_add(s->st, recs, 31, 0x98ULL, 31), 0);
    assert_int_equal(paced, 0);
}

/* ------------------------------------------------------------------ main */

#define SHM_TEST(f) cmocka_unit_test_setup_teardown(f, fx_setup, fx_teardown)
#define STORE_TEST(f) cmocka_unit_test_setup_teardown(f, store_setup, store_teardown)

/* ------------------------------------------------ buffers and arenas */

static void
buf_appends_numbers_and_text_as_printf_would(void **state)
{
    struct gw_buf b = {0};
    char want[128];

    (void)state;
    assert_int_equal(GW_BUF_LIT(&b, "n="), 0);
    assert_int_equal(gw_buf_append_u64(&b, 0), 0);
    assert_int_equal(gw_buf_append_str(&b, " "), 0);
    assert_int_equal(gw_buf_append_u64(&b, UINT64_MAX), 0);
    assert_int_equal(gw_buf_append_str(&b, " "), 0);
    assert_int_equal(gw_buf_append_i64(&b, INT64_MIN), 0);
    assert_int_equal(gw_buf_append_str(&b, " "), 0);
    assert_int_equal(gw_buf_append_i64(&b, -42), 0);
    snprintf(want, sizeof(want), "n=0 %llu %lld -42", (unsigned long long)UINT64_MAX,
             (long long)INT64_MIN);
    assert_string_equal(b.data, want);
    assert_int_equal(b.len, strlen(want));
    gw_buf_free(&b);
}

static void
u64_text_and_arena_cat_write_what_printf_would(void **state)
{
    struct gw_arena *a = gw_arena_create(64);
    char n[GW_U64_TEXT_MAX], want[64], big[300];

    (void)state;
    assert_int_equal(gw_u64_text(0, n), 1);
    assert_string_equal(n, "0");
    assert_int_equal(gw_u64_text(UINT64_MAX, n), 20);
    snprintf(want, sizeof(want), "%llu", (unsigned long long)UINT64_MAX);
    assert_string_equal(n, want);
    assert_string_equal(gw_arena_cat(a, "x-aigw-attempts: ", n, "\r\n"),
                        "x-aigw-attempts: 18446744073709551615\r\n");
    assert_string_equal(gw_arena_cat(a, ""), "");
    assert_string_equal(gw_arena_cat(a, "a", "", "b"), "ab");
    /* A NULL string counts as "" and does not end the list. */
    assert_string_equal(gw_arena_cat(a, "a", NULL, "b"), "ab");
    /* Longer than the arena's chunk. */
    memset(big, 'y', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    char *c = gw_arena_cat(a, big, "/", big);
    assert_int_equal(strlen(c), 2 * (sizeof(big) - 1) + 1);
    assert_int_equal(c[sizeof(big) - 1], '/');
    assert_int_equal(c[2 * (sizeof(big) - 1)], 'y');
    gw_arena_destroy(a);
}

static void
buf_printf_grows_past_its_room_and_keeps_what_was_there(void **state)
{
    struct gw_buf b = {0};
    char big[1000];

    (void)state;
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    assert_int_equal(gw_buf_printf(&b, "%s", "head "), 0);
    size_t cap = b.cap;
    assert_int_equal(gw_buf_printf(&b, "%d:%s", 7, big), 0); /* past the room it had */
    assert_true(b.cap > cap);
    assert_int_equal(b.len, 5 + 2 + strlen(big));
    assert_memory_equal(b.data, "head 7:xxx", 10);
    assert_int_equal(b.data[b.len], '\0');
    assert_int_equal(gw_buf_printf(&b, "%s", ""), 0);
    assert_int_equal(b.len, 5 + 2 + strlen(big));
    gw_buf_free(&b);
}

static void
arena_printf_formats_in_place_or_in_a_new_chunk(void **state)
{
    struct gw_arena *a = gw_arena_create(256);
    char big[600];

    (void)state;
    memset(big, 'y', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    char *s1 = gw_arena_printf(a, "%s-%d", "small", 1);
    char *s2 = gw_arena_printf(a, "%s", big); /* larger than a chunk */
    char *s3 = gw_arena_printf(a, "%s-%d", "small", 3);
    assert_string_equal(s1, "small-1");
    assert_string_equal(s2, big);
    assert_string_equal(s3, "small-3");
    assert_string_equal(s1, "small-1"); /* not overwritten by what followed */
    /* Fill the chunk to its last bytes: text that does not fit moves on. */
    for (int i = 0; i < 100; i++) {
        char *p = gw_arena_printf(a, "%031d", i);
        assert_int_equal(strlen(p), 31);
        assert_int_equal(atoi(p), i);
    }
    gw_arena_destroy(a);
}

static void
note_call(void *arg)
{
    struct gw_buf *b = arg;

    gw_buf_append(b, "x", 1);
}

static void
note_call_y(void *arg)
{
    struct gw_buf *b = arg;

    gw_buf_append(b, "y", 1);
}

/* What a request holds outside its arena is let go at the reset, latest
 * first, once; a destroy runs what is left. */
static void
arena_cleanups_run_at_reset_latest_first_and_once(void **state)
{
    struct gw_arena *a = gw_arena_create(256);
    struct gw_buf b = {0};

    (void)state;
    gw_arena_on_reset(a, note_call, &b);
    gw_arena_on_reset(a, note_call_y, &b);
    for (int i = 0; i < 50; i++) /* past the first chunk */
        gw_arena_printf(a, "%063d", i);
    assert_int_equal(b.len, 0);
    gw_arena_reset(a);
    assert_int_equal(b.len, 2);
    assert_memory_equal(b.data, "yx", 2);
    gw_arena_reset(a);
    assert_int_equal(b.len, 2);
    gw_arena_on_reset(a, note_call, &b);
    gw_arena_destroy(a);
    assert_int_equal(b.len, 3);
    gw_buf_free(&b);
}

/* In a thread of its own: a thread's locale is its own. */
static void *
locale_thread(void *arg)
{
    int *ok = arg;
    locale_t before = uselocale((locale_t)0);
    locale_t copy = duplocale(before);

    /* On the global locale a copy is a new object (what json-c makes on
     * every parse, under glibc's locale lock). */
    ok[0] = before == LC_GLOBAL_LOCALE && copy != (locale_t)0 && copy != before;
    freelocale(copy);

    gw_locale_c_thread();
    locale_t c = uselocale((locale_t)0);
    /* On the static C object, the copy and json-c's C LC_NUMERIC from it
     * are that same object: no allocation, no lock. */
    ok[1] = c != LC_GLOBAL_LOCALE && duplocale(c) == c && newlocale(LC_NUMERIC_MASK, "C", c) == c;
    /* And numbers still parse with a '.', as in any C locale. */
    struct json_object *o = json_tokener_parse("{\"t\": 0.25}"), *t;
    ok[2] = o != NULL && json_object_object_get_ex(o, "t", &t) && json_object_get_double(t) == 0.25;
    json_object_put(o);
    return NULL;
}

static void
locale_c_thread_puts_the_thread_on_the_static_c_locale(void **state)
{
    pthread_t t;
    int ok[3] = {0, 0, 0};

    (void)state;
    assert_int_equal(pthread_create(&t, NULL, locale_thread, ok), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_true(ok[0]);
    assert_true(ok[1]);
    assert_true(ok[2]);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(arena_cleanups_run_at_reset_latest_first_and_once),
        cmocka_unit_test(buf_appends_numbers_and_text_as_printf_would),
        cmocka_unit_test(u64_text_and_arena_cat_write_what_printf_would),
        cmocka_unit_test(buf_printf_grows_past_its_room_and_keeps_what_was_there),
        cmocka_unit_test(arena_printf_formats_in_place_or_in_a_new_chunk),
        cmocka_unit_test(locale_c_thread_puts_the_thread_on_the_static_c_locale),
        SHM_TEST(open_creates_a_fresh_segment_with_header_and_geometry),
        SHM_TEST(open_again_with_the_same_geometry_attaches_and_keeps_the_data),
        SHM_TEST(open_with_another_geometry_recreates_the_segment),
        SHM_TEST(open_ignores_an_object_of_the_right_size_without_the_magic),
        cmocka_unit_test(attach_of_a_missing_name_is_enoent),
        SHM_TEST(attach_maps_an_existing_segment),
        SHM_TEST(offsets_are_aligned_and_regions_do_not_overlap),

        SHM_TEST(stat_find_claims_a_name_once),
        SHM_TEST(stat_find_gives_different_names_different_entries),
        SHM_TEST(stat_find_refuses_a_name_too_long_for_an_entry),
        SHM_TEST(stat_table_full_returns_minus_one),
        SHM_TEST(stat_claims_raced_by_processes_leave_one_entry_per_name),

        SHM_TEST(ring_push_peek_release_keep_the_order),
        SHM_TEST(ring_peek_does_not_release),
        SHM_TEST(ring_full_push_is_etoobig_and_loses_nothing),
        SHM_TEST(ring_bell_rings_once_a_quarter_full_until_the_drain),
        SHM_TEST(ring_slot_of_a_killed_writer_is_skipped_after_stall_ms),
        cmocka_unit_test_setup_teardown(ring_records_pushed_by_processes_arrive_exactly_once,
                                        fx_setup_big_ring, fx_teardown),

        SHM_TEST(new_bucket_allows_burst_takes_then_refuses),
        SHM_TEST(remaining_decreases_with_each_take),
        SHM_TEST(refused_take_says_about_one_interval_and_takes_nothing),
        SHM_TEST(take_is_allowed_again_after_waiting_wait_ms),
        SHM_TEST(give_returns_tokens_but_never_beyond_burst),
        SHM_TEST(charge_takes_without_refusing_and_leaves_a_debt),
        SHM_TEST(buckets_with_different_names_are_independent),
        SHM_TEST(bucket_hammered_by_processes_admits_no_more_than_its_rate),

        SHM_TEST(gen_acquire_is_null_before_any_publish),
        SHM_TEST(gen_publish_lays_out_the_config_for_acquire),
        SHM_TEST(gen_new_publish_is_current_while_a_held_one_stays_intact),
        SHM_TEST(gen_slots_held_by_concurrent_requests_of_one_worker),
        SHM_TEST(gen_slot_held_by_a_live_worker_is_never_overwritten),
        SHM_TEST(gen_publish_is_eexist_when_every_other_slot_is_held),
        SHM_TEST(gen_slot_noted_by_a_dead_worker_is_reused),
        SHM_TEST(gen_publish_of_an_oversized_config_is_etoobig),

        STORE_TEST(usage_head_is_enoent_on_a_fresh_store),
        STORE_TEST(usage_add_with_incarnation_stores_records_and_head),
        STORE_TEST(usage_totals_add_up_across_calls_and_write_through),
        STORE_TEST(usage_add_paces_every_32_records_and_stores_them_all),
    };

    /* The ring's "writer died" warning is expected here. */
    gw_log_level = GW_LOG_ERROR;
    return cmocka_run_group_tests_name("shm", tests, NULL, NULL);
}
