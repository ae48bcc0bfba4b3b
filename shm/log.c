/*
 * log.c - one line per event on stderr, each written with a single
 * write(2) so that lines from many processes never interleave.
 *
 * Format: "2026-11-22T16:04:45.123Z info worker[3]: message".  systemd's
 * journal adds its own timestamp, but a plain terminal or file does not,
 * and a precise one is what an operator correlating requests needs.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "shm/shm.h"

int gw_log_level = GW_LOG_INFO;

static char log_who[32] = "aigw";

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void
gw_log_init(const char *who)
{
    snprintf(log_who, sizeof(log_who), "%s", who);
}

int
gw_log_level_parse(const char *name)
{
    for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++)
        if (strcmp(name, level_names[i]) == 0)
            return (int)i;
    return -1;
}

static void
log_vwrite(int level, const char *fmt, va_list ap)
{
    char line[2048];
    struct timespec ts;
    struct tm tm;
    int saved = errno;

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(
        line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s %s: ", tm.tm_year + 1900,
        tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000,
        level_names[level < 0   ? 0
                    : level > 3 ? 3
                                : level],
        log_who);
    if (n < 0)
        n = 0;
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof(line) - 2)
        len = sizeof(line) - 2; /* truncated: still one line */
    /* What a message quotes (a provider's error, a client's text) may
     * hold line breaks and escape sequences: one line, none acting.  (The
     * line holds no NUL: vsnprintf stops a string at it.) */
    line[len] = '\0';
    size_t out = (size_t)n;
    for (size_t i = (size_t)n; i < len;) {
        size_t c = line[i] == '\t' ? 0 : gw_utf8_control(line + i);
        line[out++] = c != 0 ? '?' : line[i];
        i += c != 0 ? c : 1;
    }
    len = out;
    line[len++] = '\n';
    (void)gw_write_all(STDERR_FILENO, line, len);
    errno = saved;
}

int
gw_log_open(const char *path)
{
    /* The stderr we started with, to go back to when the file is dropped. */
    static int original = -2;

    if (original == -2)
        original = fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 3);
    if (path == NULL) {
        if (original >= 0)
            dup2(original, STDERR_FILENO);
        return 0;
    }
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0) {
        gw_log(GW_LOG_ERROR, "open(%s): %s", path, strerror(errno));
        return GW_EIO;
    }
    if (fd != STDERR_FILENO) {
        if (dup2(fd, STDERR_FILENO) < 0) {
            gw_log(GW_LOG_ERROR, "dup2(%s): %s", path, strerror(errno));
            close(fd);
            return GW_EIO;
        }
        close(fd);
    }
    return 0;
}

void
gw_log_write(int level, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    log_vwrite(level, fmt, ap);
    va_end(ap);
}

void
gw_log_limited(struct gw_log_limit *lim, int level, const char *fmt, ...)
{
    int64_t now = gw_now_ms();
    char msg[1024];
    va_list ap;

    if (level > gw_log_level)
        return;
    if (lim->last_ms != 0 && now - lim->last_ms < GW_LOG_LIMIT_MS) {
        lim->held++;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (lim->held > 0)
        gw_log_write(level, "%s (and %llu more like it in the last %lld s)", msg,
                     (unsigned long long)lim->held, (long long)(now - lim->last_ms) / 1000);
    else
        gw_log_write(level, "%s (the next like it comes a minute later at the earliest)", msg);
    lim->last_ms = now;
    lim->held = 0;
}

void
gw_log_raw(const char *msg)
{
    ssize_t r = write(STDERR_FILENO, msg, strlen(msg));
    (void)r;
}

void
gw_fatal(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    log_vwrite(GW_LOG_ERROR, fmt, ap);
    va_end(ap);
    exit(GW_EXIT_FATAL);
}
