/*
 * title.c - process titles, so that ps and top show what each process
 * is: "aigwd: master", "aigwd: worker[3] (busy)".
 *
 * Linux shows a process's argv area as its command line.  At start the
 * environment, which follows argv in memory, is copied elsewhere, and the
 * whole contiguous area becomes room for the title.  The short name in
 * /proc/PID/comm stays "aigwd", so pidof, pkill and ps -C still find it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shm/shm.h"

extern char **environ;

static char *title_area;
static char **env_copy;   /* the environment moved out of the title area */
static char *env_strings; /* its strings, in one block */
static size_t title_len;
static size_t title_dirty; /* bytes from the start that may not be NUL */

void
gw_proctitle_init(int argc, char **argv)
{
    char *end = argv[0] + strlen(argv[0]) + 1;

    for (int i = 1; i < argc; i++)
        if (argv[i] == end)
            end = argv[i] + strlen(argv[i]) + 1;
    size_t nenv = 0;
    for (; environ[nenv] != NULL; nenv++)
        if (environ[nenv] == end)
            end = environ[nenv] + strlen(environ[nenv]) + 1;
    /* Move the environment out of the way before we write over it: into
     * one block kept here, so that strings setenv/unsetenv drop from
     * environ (sd_listen_fds unsets LISTEN_*) stay owned, not leaked. */
    size_t total = 0;
    for (size_t i = 0; i < nenv; i++)
        total += strlen(environ[i]) + 1;
    char **env = malloc((nenv + 1) * sizeof(char *));
    char *p = malloc(total ? total : 1);
    if (env == NULL || p == NULL) {
        free(env);
        free(p);
        return;
    }
    env_copy = env;
    env_strings = p;
    for (size_t i = 0; i < nenv; i++) {
        size_t n = strlen(environ[i]) + 1;
        env[i] = memcpy(p, environ[i], n);
        p += n;
    }
    env[nenv] = NULL;
    environ = env;
    title_area = argv[0];
    title_len = (size_t)(end - argv[0]);
    title_dirty = title_len;
    /* Later argv[] entries point into the area: they are no longer valid. */
    for (int i = 1; i < argc; i++)
        argv[i] = NULL;
}

void
gw_proctitle_set(const char *fmt, ...)
{
    char buf[256];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    gw_proctitle_put(buf);
}

void
gw_proctitle_put(const char *buf)
{
    if (title_area == NULL || title_len < 2)
        return;
    size_t n = strlen(buf);
    if (n > title_len - 1)
        n = title_len - 1;
    memcpy(title_area, buf, n);
    /* Clear only what the last title left behind: a worker sets its
     * title twice per request, and the area may be kilobytes long. */
    if (title_dirty > n)
        memset(title_area + n, '\0', title_dirty - n);
    title_area[n] = '\0';
    title_dirty = n;
}
