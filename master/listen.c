/*
 * listen.c - the client listening sockets.  The master binds them; the
 * workers inherit them across fork and accept on them.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "master/master.h"

#define LISTEN_BACKLOG 4096

/* Split "host:port", "[v6]:port", "*:port" or ":port" (host NULL = any). */
static int
addr_split(const char *text, char *host, size_t hostlen, char *port, size_t portlen)
{
    const char *colon;

    if (text[0] == '[') {
        const char *end = strchr(text, ']');
        if (end == NULL || end[1] != ':')
            return GW_EINVAL;
        snprintf(host, hostlen, "%.*s", (int)(end - text - 1), text + 1);
        colon = end + 1;
    } else {
        colon = strrchr(text, ':');
        if (colon == NULL)
            return GW_EINVAL;
        snprintf(host, hostlen, "%.*s", (int)(colon - text), text);
        if (strcmp(host, "*") == 0)
            host[0] = '\0';
    }
    snprintf(port, portlen, "%s", colon + 1);
    return 0;
}

static int
listen_one(const char *text)
{
    char host[256], port[16];
    struct addrinfo hints = {.ai_flags = AI_PASSIVE, .ai_socktype = SOCK_STREAM}, *res = NULL;
    int fd = -1, one = 1, grc;

    if (addr_split(text, host, sizeof(host), port, sizeof(port)) != 0) {
        gw_log(GW_LOG_ERROR, "listen %s: not host:port", text);
        return -1;
    }
    if ((grc = getaddrinfo(host[0] ? host : NULL, port, &hints, &res)) != 0) {
        gw_log(GW_LOG_ERROR, "getaddrinfo(%s): %s", text, gai_strerror(grc));
        return -1;
    }
    fd = socket(res->ai_family, res->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        gw_log(GW_LOG_ERROR, "socket(%s): %s", text, strerror(errno));
        goto fail;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, res->ai_addr, res->ai_addrlen) != 0) {
        gw_log(GW_LOG_ERROR, "bind(%s): %s", text, strerror(errno));
        goto fail;
    }
    if (listen(fd, LISTEN_BACKLOG) != 0) {
        gw_log(GW_LOG_ERROR, "listen(%s): %s", text, strerror(errno));
        goto fail;
    }
    freeaddrinfo(res);
    return fd;
fail:
    if (fd >= 0)
        close(fd);
    freeaddrinfo(res);
    return -1;
}

/* The socket of old already listening on text, duplicated, or -1. */
static int
listen_reuse(const struct gw_config *old, const struct gw_listeners *l, const char *text)
{
    for (size_t i = 0; old != NULL && i < old->nlisten && i < l->n; i++)
        if (strcmp(old->listen[i], text) == 0)
            return fcntl(l->fds[i], F_DUPFD_CLOEXEC, 0);
    return -1;
}

int
gw_master_listen_open(const struct gw_config *cfg, struct gw_listeners *out)
{
    return gw_master_listen_reopen(cfg, NULL, NULL, out);
}

int
gw_master_listen_reopen(const struct gw_config *cfg, const struct gw_config *old,
                        const struct gw_listeners *old_l, struct gw_listeners *out)
{
    out->fds = calloc(cfg->nlisten, sizeof(int));
    out->n = 0;
    if (out->fds == NULL)
        return GW_ENOMEM;
    for (size_t i = 0; i < cfg->nlisten; i++) {
        int fd = listen_reuse(old, old_l, cfg->listen[i]);
        if (fd < 0)
            fd = listen_one(cfg->listen[i]);
        if (fd < 0) {
            gw_master_listen_close(out);
            return GW_EIO;
        }
        out->fds[out->n++] = fd;
        gw_log(GW_LOG_INFO, "listening on %s", cfg->listen[i]);
    }
    return 0;
}

void
gw_master_listen_close(struct gw_listeners *l)
{
    for (size_t i = 0; i < l->n; i++)
        close(l->fds[i]);
    free(l->fds);
    l->fds = NULL;
    l->n = 0;
}
