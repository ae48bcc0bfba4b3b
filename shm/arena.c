/*
 * arena.c - region allocation.  Requests and configuration generations
 * allocate from an arena and release everything at once, so per-request
 * code has no free() to forget and a long-lived worker cannot leak.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shm/shm.h"

struct arena_chunk {
    struct arena_chunk *next;
    size_t size;
    size_t used;
    max_align_t data[];
};

struct arena_cleanup {
    struct arena_cleanup *next;
    void (*fn)(void *arg);
    void *arg;
};

struct gw_arena {
    struct arena_chunk *head; /* the chunk being filled; the first one is last */
    size_t chunk_size;
    struct arena_cleanup *cleanups; /* latest first */
};

static struct arena_chunk *
chunk_new(size_t size)
{
    struct arena_chunk *c = malloc(sizeof(*c) + size);

    if (c == NULL)
        gw_fatal("malloc(%zu): out of memory", sizeof(*c) + size);
    c->next = NULL;
    c->size = size;
    c->used = 0;
    return c;
}

struct gw_arena *
gw_arena_create(size_t chunk_size)
{
    struct gw_arena *a = malloc(sizeof(*a));

    if (a == NULL)
        gw_fatal("malloc(%zu): out of memory", sizeof(*a));
    a->chunk_size = chunk_size < 256 ? 256 : chunk_size;
    a->head = chunk_new(a->chunk_size);
    a->cleanups = NULL;
    return a;
}

void
gw_arena_on_reset(struct gw_arena *a, void (*fn)(void *arg), void *arg)
{
    struct arena_cleanup *c = gw_arena_alloc(a, sizeof(*c));

    c->fn = fn;
    c->arg = arg;
    c->next = a->cleanups;
    a->cleanups = c;
}

/* The cleanups run before the memory they live in goes. */
static void
cleanups_run(struct gw_arena *a)
{
    while (a->cleanups != NULL) {
        struct arena_cleanup *c = a->cleanups;
        a->cleanups = c->next;
        c->fn(c->arg);
    }
}

void
gw_arena_destroy(struct gw_arena *a)
{
    if (a == NULL)
        return;
    cleanups_run(a);
    for (struct arena_chunk *c = a->head, *next; c != NULL; c = next) {
        next = c->next;
        free(c);
    }
    free(a);
}

void
gw_arena_reset(struct gw_arena *a)
{
    cleanups_run(a);
    struct arena_chunk *c = a->head;

    /* The first chunk allocated is at the tail of the list: keep it. */
    while (c->next != NULL) {
        struct arena_chunk *next = c->next;
        free(c);
        c = next;
    }
    c->used = 0;
    a->head = c;
}

void *
gw_arena_alloc(struct gw_arena *a, size_t size)
{
    const size_t align = sizeof(max_align_t);
    struct arena_chunk *c = a->head;

    size = (size + align - 1) & ~(align - 1);
    if (size == 0)
        size = align;
    if (c->size - c->used < size) {
        /* Large blocks get a chunk of their own, so they waste nothing. */
        c = chunk_new(size > a->chunk_size ? size : a->chunk_size);
        c->next = a->head;
        a->head = c;
    }
    void *p = (char *)c->data + c->used;
    c->used += size;
    return p;
}

void *
gw_arena_zalloc(struct gw_arena *a, size_t size)
{
    void *p = gw_arena_alloc(a, size);

    memset(p, 0, size);
    return p;
}

char *
gw_arena_strndup(struct gw_arena *a, const char *s, size_t n)
{
    char *p = gw_arena_alloc(a, n + 1);

    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *
gw_arena_strdup(struct gw_arena *a, const char *s)
{
    return gw_arena_strndup(a, s, strlen(s));
}

char *
gw_arena_catv(struct gw_arena *a, const char *const *strs, size_t n)
{
    size_t len = 0;

    for (size_t i = 0; i < n; i++)
        len += strs[i] != NULL ? strlen(strs[i]) : 0;
    char *out = gw_arena_alloc(a, len + 1), *o = out;
    for (size_t i = 0; i < n; i++) {
        size_t k = strs[i] != NULL ? strlen(strs[i]) : 0;
        memcpy(o, strs[i] != NULL ? strs[i] : "", k);
        o += k;
    }
    *o = '\0';
    return out;
}

char *
gw_arena_printf(struct gw_arena *a, const char *fmt, ...)
{
    struct arena_chunk *c = a->head;
    char *room = (char *)c->data + c->used;
    size_t left = c->size - c->used;
    va_list ap;

    /* Format once, into the free end of the current chunk; only text that
     * does not fit there is formatted a second time. */
    va_start(ap, fmt);
    int n = vsnprintf(room, left, fmt, ap);
    va_end(ap);
    if (n < 0) {
        n = 0;
        if (left > 0)
            room[0] = '\0';
    }
    const size_t align = sizeof(max_align_t);
    if ((((size_t)n + 1 + align - 1) & ~(align - 1)) <= left)
        return gw_arena_alloc(a, (size_t)n + 1); /* room itself: it fits */
    char *p = gw_arena_alloc(a, (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return p;
}
