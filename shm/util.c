/*
 * util.c - small system helpers every process uses.
 */
#include <errno.h>
#include <locale.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "shm/shm.h"

int64_t
gw_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t
gw_now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t
gw_wall_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int
gw_write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;

    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return GW_ETIMEDOUT;
            return GW_EIO;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int
gw_random_bytes(void *buf, size_t len)
{
    char *p = buf;

    while (len > 0) {
        ssize_t n = getrandom(p, len, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            gw_log(GW_LOG_ERROR, "getrandom(%zu): %s", len, strerror(errno));
            return GW_EIO;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

void
gw_locale_c_thread(void)
{
    /* newlocale(LC_ALL_MASK, "C", 0) is the static object, never freed. */
    locale_t c = newlocale(LC_ALL_MASK, "C", (locale_t)0);

    if (c != (locale_t)0)
        uselocale(c);
}

size_t
gw_u64_text(uint64_t v, char out[GW_U64_TEXT_MAX])
{
    char digits[GW_U64_TEXT_MAX - 1], *p = digits + sizeof(digits);

    do {
        *--p = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    size_t n = (size_t)(digits + sizeof(digits) - p);
    memcpy(out, p, n);
    out[n] = '\0';
    return n;
}

/* A character cut short at its end leaves 1 to 3 of its continuation
 * bytes wanting; half of it would read as an invalid byte. */
size_t
gw_utf8_whole(const char *s, size_t len)
{
    size_t i = len, k = 0;

    while (i > 0 && k < 3 && ((unsigned char)s[i - 1] & 0xC0) == 0x80) {
        i--;
        k++;
    }
    if (i == 0)
        return len;
    unsigned char c = (unsigned char)s[i - 1];
    size_t need = c >= 0xF0 && c < 0xF8 ? 3 : c >= 0xE0 && c < 0xF0 ? 2 : c >= 0xC0 ? 1 : 0;
    return need > k ? i - 1 : len;
}

size_t
gw_utf8_control(const char *s)
{
    const unsigned char *c = (const unsigned char *)s;

    if ((c[0] > 0 && c[0] < 0x20) || c[0] == 0x7f)
        return 1;
    return c[0] == 0xc2 && c[1] >= 0x80 && c[1] < 0xa0 ? 2 : 0;
}

size_t
gw_utf8_prefix(const char *s, size_t max)
{
    size_t n = strnlen(s, max + 1);

    return n > max ? gw_utf8_whole(s, max) : n;
}

void
gw_hex_encode(const unsigned char *in, size_t len, char *out)
{
    static const char digits[] = "0123456789abcdef";

    for (size_t i = 0; i < len; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * len] = '\0';
}

int
gw_mkdir_p(const char *path, mode_t mode)
{
    char tmp[4096];
    size_t len = strlen(path);

    if (len == 0 || len >= sizeof(tmp))
        return GW_EINVAL;
    memcpy(tmp, path, len + 1);
    for (char *p = tmp + 1; *p != '\0'; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(tmp, mode) != 0 && errno != EEXIST) {
            gw_log(GW_LOG_ERROR, "mkdir(%s): %s", tmp, strerror(errno));
            return GW_EIO;
        }
        *p = '/';
    }
    if (mkdir(tmp, mode) != 0 && errno != EEXIST) {
        gw_log(GW_LOG_ERROR, "mkdir(%s): %s", tmp, strerror(errno));
        return GW_EIO;
    }
    return 0;
}
