/*
 * malloc_count.c - an LD_PRELOAD shim that counts heap calls, for the
 * benchmark's "allocations per request".
 *
 *   cc -O2 -shared -fPIC -o malloc_count.so malloc_count.c
 *   MALLOC_COUNT_DIR=/tmp/x LD_PRELOAD=./malloc_count.so aigwd ...
 *
 * Every process (the one started and each child it forks) keeps its
 * counters in a file of its own, MALLOC_COUNT_DIR/<pid>.cnt, mapped shared,
 * so that the harness can read them at any moment while the process runs:
 * a snapshot before and after a run of known length gives the calls made
 * for those requests, start-up excluded.  A child starts again from zero.
 *
 * The file is struct counts below, eight little-endian 64-bit words (read
 * with `od -An -t u8`).  Nothing here calls malloc: the counters are plain
 * atomics, the file is made with open/ftruncate/mmap, and the name with a
 * hand-made number.  Calls made before the file is mapped (the dynamic
 * loader's) go to a static area and are carried over.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

struct counts {
    uint64_t magic; /* 0x746e756f63636c6d, "mlccount" */
    uint64_t pid;
    uint64_t mallocs; /* malloc, calloc, memalign & co, realloc(NULL, n) */
    uint64_t reallocs;
    uint64_t frees; /* free(p) with p != NULL, realloc(p, 0) */
    uint64_t bytes; /* bytes asked for by the calls counted in mallocs and reallocs */
    uint64_t spare[2];
};

#define MAGIC 0x746e756f63636c6dULL

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void __libc_free(void *);
extern void *__libc_memalign(size_t, size_t);

static struct counts early = {.magic = MAGIC};
static struct counts *cnt = &early;

#define ADD(field, n) __atomic_fetch_add(&cnt->field, (uint64_t)(n), __ATOMIC_RELAXED)

/* Map DIR/<pid>.cnt and make it the counters of this process. */
static void
counts_map(int fresh)
{
    const char *dir = getenv("MALLOC_COUNT_DIR");
    char path[4096], num[24];
    size_t dl, nl = 0;
    pid_t pid = getpid();

    if (dir == NULL || *dir == '\0')
        return;
    dl = strlen(dir);
    if (dl + 32 > sizeof(path))
        return;
    do {
        num[nl++] = (char)('0' + pid % 10);
        pid /= 10;
    } while (pid > 0);
    memcpy(path, dir, dl);
    path[dl++] = '/';
    while (nl > 0)
        path[dl++] = num[--nl];
    memcpy(path + dl, ".cnt", 5);

    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return;
    if (ftruncate(fd, 4096) != 0) {
        close(fd);
        return;
    }
    void *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED)
        return;
    struct counts *c = p;
    if (!fresh)
        *c = *cnt;
    c->magic = MAGIC;
    c->pid = (uint64_t)getpid();
    struct counts *old = cnt;
    cnt = c;
    if (old != &early)
        munmap(old, 4096); /* the parent's file, inherited across fork */
}

static void
child_after_fork(void)
{
    counts_map(1);
}

__attribute__((constructor)) static void
counts_init(void)
{
    counts_map(0);
    pthread_atfork(NULL, NULL, child_after_fork);
}

void *
malloc(size_t n)
{
    ADD(mallocs, 1);
    ADD(bytes, n);
    return __libc_malloc(n);
}

void *
calloc(size_t a, size_t b)
{
    ADD(mallocs, 1);
    ADD(bytes, a * b);
    return __libc_calloc(a, b);
}

void *
realloc(void *p, size_t n)
{
    if (p == NULL) {
        ADD(mallocs, 1);
    } else if (n == 0) {
        ADD(frees, 1);
    } else {
        ADD(reallocs, 1);
    }
    ADD(bytes, n);
    return __libc_realloc(p, n);
}

void *
reallocarray(void *p, size_t a, size_t b)
{
    size_t n;

    if (__builtin_mul_overflow(a, b, &n)) {
        errno = ENOMEM;
        return NULL;
    }
    return realloc(p, n);
}

void
free(void *p)
{
    if (p != NULL)
        ADD(frees, 1);
    __libc_free(p);
}

void *
memalign(size_t align, size_t n)
{
    ADD(mallocs, 1);
    ADD(bytes, n);
    return __libc_memalign(align, n);
}

void *
aligned_alloc(size_t align, size_t n)
{
    return memalign(align, n);
}

int
posix_memalign(void **out, size_t align, size_t n)
{
    if (align < sizeof(void *) || (align & (align - 1)) != 0)
        return 22; /* EINVAL */
    void *p = memalign(align, n);
    if (p == NULL && n != 0)
        return 12; /* ENOMEM */
    *out = p;
    return 0;
}

void *
valloc(size_t n)
{
    return memalign((size_t)sysconf(_SC_PAGESIZE), n);
}

void *
pvalloc(size_t n)
{
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    return memalign(pg, (n + pg - 1) & ~(pg - 1));
}
