/*
 * listen.c - the client listening sockets (and the /metrics and admin API
 * ones).  The master binds them, or takes them from systemd (socket
 * activation); the workers inherit them across fork and accept on them.
 *
 * Every socket is matched to a configured address.  out->fds[i] always
 * belongs to cfg->listen[i], which is what lets a reload find the socket
 * it already has for an address: by the configured text first, then by
 * the address the socket is bound to.  Sockets taken from systemd are
 * reused on reload like any other; only the first start asks systemd.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

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

/* getaddrinfo() of a configured "host:port"; the caller frees *res.
 * Logs and returns -1 on failure. */
static int
addr_resolve(const char *text, struct addrinfo **res)
{
    char host[256], port[16];
    struct addrinfo hints = {.ai_flags = AI_PASSIVE, .ai_socktype = SOCK_STREAM};
    int grc;

    *res = NULL;
    if (addr_split(text, host, sizeof(host), port, sizeof(port)) != 0) {
        gw_log(GW_LOG_ERROR, "listen %s: not host:port", text);
        return -1;
    }
    if ((grc = getaddrinfo(host[0] ? host : NULL, port, &hints, res)) != 0) {
        gw_log(GW_LOG_ERROR, "getaddrinfo(%s): %s", text, gai_strerror(grc));
        return -1;
    }
    return 0;
}

static int
sa_port(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)sa)->sin_port);
    if (sa->sa_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
    return -1;
}

/* 0.0.0.0 or [::]: every address of the machine. */
static bool
sa_is_any(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return ((const struct sockaddr_in *)sa)->sin_addr.s_addr == htonl(INADDR_ANY);
    if (sa->sa_family == AF_INET6)
        return IN6_IS_ADDR_UNSPECIFIED(&((const struct sockaddr_in6 *)sa)->sin6_addr);
    return false;
}

/* Same family, address and port (IPv6: and scope). */
static bool
sa_equal(const struct sockaddr *a, const struct sockaddr *b)
{
    if (a->sa_family != b->sa_family || sa_port(a) != sa_port(b))
        return false;
    if (a->sa_family == AF_INET)
        return ((const struct sockaddr_in *)a)->sin_addr.s_addr ==
               ((const struct sockaddr_in *)b)->sin_addr.s_addr;
    if (a->sa_family == AF_INET6) {
        const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
        return memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0 &&
               x->sin6_scope_id == y->sin6_scope_id;
    }
    return false;
}

/* "127.0.0.1:8080" or "[::1]:8080" into buf. */
static const char *
sa_format(const struct sockaddr *sa, char *buf, size_t len)
{
    char host[INET6_ADDRSTRLEN] = "?";

    if (sa->sa_family == AF_INET) {
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, host, sizeof(host));
        snprintf(buf, len, "%s:%d", host, sa_port(sa));
    } else if (sa->sa_family == AF_INET6) {
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, host, sizeof(host));
        snprintf(buf, len, "[%s]:%d", host, sa_port(sa));
    } else {
        snprintf(buf, len, "(address family %d)", sa->sa_family);
    }
    return buf;
}

/*
 * Does a socket bound to sa serve the configured address whose
 * getaddrinfo() answers are res?  exact: one of the answers is sa.  Not
 * exact: the configured host is every address ("*", empty, 0.0.0.0, ::)
 * and sa has the same port, whatever its address.
 */
static bool
addr_matches(const struct addrinfo *res, const struct sockaddr *sa, bool exact)
{
    for (const struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
        if (exact ? sa_equal(ai->ai_addr, sa)
                  : sa_is_any(ai->ai_addr) && sa_port(ai->ai_addr) == sa_port(sa))
            return true;
    }
    return false;
}

/* The address fd is bound to; false when it has none we understand. */
static bool
fd_address(int fd, struct sockaddr_storage *ss)
{
    socklen_t len = sizeof(*ss);

    if (getsockname(fd, (struct sockaddr *)ss, &len) != 0) {
        gw_log(GW_LOG_WARN, "getsockname(fd %d): %s", fd, strerror(errno));
        return false;
    }
    return ss->ss_family == AF_INET || ss->ss_family == AF_INET6;
}

static int
listen_one(const char *text)
{
    struct addrinfo *res = NULL;
    int fd = -1, one = 1;

    if (addr_resolve(text, &res) != 0)
        return -1;
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

/*
 * The socket of the old set that already serves text, duplicated, or -1:
 * the one configured with the same text, else one bound to the same
 * address ("localhost:8080" after "127.0.0.1:8080").  Binding again would
 * fail while the old socket is open, and for a socket from systemd it
 * would fail for as long as systemd holds it.
 */
static int
listen_reuse(const char *const *old_text, const int *old_fds, size_t n, const char *text)
{
    struct addrinfo *res = NULL;
    int fd = -1;

    for (size_t i = 0; i < n; i++)
        if (old_fds[i] >= 0 && old_text[i] != NULL && strcmp(old_text[i], text) == 0)
            return fcntl(old_fds[i], F_DUPFD_CLOEXEC, 0);
    if (n == 0 || addr_resolve(text, &res) != 0)
        return -1;
    for (size_t i = 0; i < n && fd < 0; i++) {
        struct sockaddr_storage ss;
        if (old_fds[i] >= 0 && fd_address(old_fds[i], &ss) &&
            addr_matches(res, (struct sockaddr *)&ss, true))
            fd = fcntl(old_fds[i], F_DUPFD_CLOEXEC, 0);
    }
    freeaddrinfo(res);
    return fd;
}

/* ------------------------------------------------------ socket activation */

/* A socket systemd passed; fd -1 once claimed or closed. */
struct inherited {
    int fd;
    const char *name; /* FileDescriptorName=, or "unknown" */
    struct sockaddr_storage addr;
};

/*
 * Claim the inherited socket that serves text: an exact address match
 * first, then (for a wildcard host) any socket on the same port.
 * Returns the fd, now owned by the caller, or -1.
 */
static int
inherited_claim(struct inherited *tab, size_t n, const char *text)
{
    struct addrinfo *res = NULL;
    int fd = -1;

    if (n == 0 || addr_resolve(text, &res) != 0)
        return -1;
    for (int exact = 1; exact >= 0 && fd < 0; exact--) {
        for (size_t i = 0; i < n && fd < 0; i++) {
            if (tab[i].fd >= 0 && addr_matches(res, (struct sockaddr *)&tab[i].addr, exact)) {
                char where[INET6_ADDRSTRLEN + 16];
                fd = tab[i].fd;
                tab[i].fd = -1;
                gw_log(GW_LOG_INFO,
                       "listening on %s: inherited from systemd (fd %d \"%s\", "
                       "bound to %s)",
                       text, fd, tab[i].name,
                       sa_format((struct sockaddr *)&tab[i].addr, where, sizeof(where)));
            }
        }
    }
    freeaddrinfo(res);
    return fd;
}

/*
 * Take what systemd passed (LISTEN_FDS for LISTEN_PID), once per process:
 * a second call finds nothing, as the fds are no longer systemd's.  The
 * variables stay in the environment (unsetting them would drop strings
 * that the process title code moved to the heap); they cannot mislead
 * anyone: workers are forked, not executed, and LISTEN_PID names only
 * the master.  Keeps the listening TCP sockets, non-blocking and
 * close-on-exec, in *tab; closes the others.  Returns how many were
 * passed, or GW_E*.
 */
static int
inherited_take(struct inherited **tab, char ***names)
{
    static bool taken;
    int n;

    *tab = NULL;
    if (taken)
        return 0;
    taken = true;
    n = sd_listen_fds_with_names(0, names);
    if (n < 0) {
        gw_log(GW_LOG_ERROR, "sd_listen_fds: %s", strerror(-n));
        return GW_EIO;
    }
    if (n == 0)
        return 0;
    if ((*tab = calloc((size_t)n, sizeof(**tab))) == NULL) {
        for (int i = 0; i < n; i++)
            close(SD_LISTEN_FDS_START + i);
        return GW_ENOMEM;
    }
    gw_log(GW_LOG_INFO, "systemd passed %d socket%s (socket activation)", n, n == 1 ? "" : "s");
    for (int i = 0; i < n; i++) {
        struct inherited *s = &(*tab)[i];
        int fd = SD_LISTEN_FDS_START + i, r;

        s->fd = fd;
        s->name = *names != NULL && (*names)[i] != NULL ? (*names)[i] : "unknown";
        r = sd_is_socket_inet(fd, AF_UNSPEC, SOCK_STREAM, 1, 0);
        if (r <= 0 || !fd_address(fd, &s->addr)) {
            gw_log(GW_LOG_WARN,
                   "fd %d \"%s\" from systemd is not a listening TCP socket%s%s; "
                   "closing it",
                   fd, s->name, r < 0 ? ": " : "", r < 0 ? strerror(-r) : "");
            close(fd);
            s->fd = -1;
            continue;
        }
        if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) != 0 ||
            fcntl(fd, F_SETFD, FD_CLOEXEC) != 0)
            gw_log(GW_LOG_WARN, "fcntl(fd %d from systemd): %s", fd, strerror(errno));
    }
    return n;
}

/* Close what no configured address claimed, saying so.  failed: the
 * listeners could not all be opened, so what is left may not be all that
 * no address would have claimed. */
static void
inherited_release(struct inherited *tab, size_t n, const struct gw_config *cfg, bool failed)
{
    for (size_t i = 0; i < n; i++) {
        char where[INET6_ADDRSTRLEN + 16];
        if (tab[i].fd < 0)
            continue;
        sa_format((struct sockaddr *)&tab[i].addr, where, sizeof(where));
        if (failed)
            gw_log(GW_LOG_WARN, "socket %s (fd %d \"%s\") from systemd: not used; closing it",
                   where, tab[i].fd, tab[i].name);
        else
            gw_log(GW_LOG_WARN,
                   "socket %s (fd %d \"%s\") from systemd matches no listen address of %s; "
                   "closing it",
                   where, tab[i].fd, tab[i].name,
                   cfg->path != NULL ? cfg->path : "the configuration");
        close(tab[i].fd);
        tab[i].fd = -1;
    }
}

/* ------------------------------------------------------------ the sets */

/*
 * Fill out for cfg: each address from the old set if it has it, else
 * from systemd's sockets if any serves it, else bound here.
 */
static int
listen_build(const struct gw_config *cfg, const struct gw_config *old,
             const struct gw_listeners *old_l, struct inherited *tab, size_t ntab,
             struct gw_listeners *out)
{
    size_t nold = 0;

    if (old != NULL && old_l != NULL)
        nold = old->nlisten < old_l->n ? old->nlisten : old_l->n;
    out->fds = calloc(cfg->nlisten ? cfg->nlisten : 1, sizeof(int));
    out->n = 0;
    out->metrics_fd = -1;
    out->admin_fds = NULL;
    out->nadmin = 0;
    if (out->fds == NULL)
        return GW_ENOMEM;
    for (size_t i = 0; i < cfg->nlisten; i++) {
        int fd = listen_reuse((const char *const *)(nold ? old->listen : NULL),
                              nold ? old_l->fds : NULL, nold, cfg->listen[i]);
        if (fd < 0 && (fd = inherited_claim(tab, ntab, cfg->listen[i])) >= 0) {
            out->fds[out->n++] = fd;
            continue; /* logged with where it came from */
        }
        if (fd < 0 && (fd = listen_one(cfg->listen[i])) < 0)
            goto fail;
        out->fds[out->n++] = fd;
        gw_log(GW_LOG_INFO, "listening on %s", cfg->listen[i]);
    }
    if (cfg->nadmin_listen > 0 &&
        (out->admin_fds = calloc(cfg->nadmin_listen, sizeof(int))) == NULL)
        goto fail;
    for (size_t i = 0; i < cfg->nadmin_listen; i++) {
        const char *text = cfg->admin_listen[i];
        size_t nold_admin = old != NULL && old_l != NULL ? old_l->nadmin : 0;
        int fd = listen_reuse((const char *const *)(nold_admin ? old->admin_listen : NULL),
                              nold_admin ? old_l->admin_fds : NULL, nold_admin, text);
        bool inherited = fd < 0 && (fd = inherited_claim(tab, ntab, text)) >= 0;
        if (fd < 0 && (fd = listen_one(text)) < 0)
            goto fail;
        out->admin_fds[out->nadmin++] = fd;
        if (!inherited)
            gw_log(GW_LOG_INFO, "listening on %s (admin API)", text);
    }
    if (cfg->metrics_listen != NULL) {
        const char *old_text = old != NULL ? old->metrics_listen : NULL;
        int old_fd = old_l != NULL ? old_l->metrics_fd : -1;
        int fd = listen_reuse(&old_text, &old_fd, old_text != NULL ? 1 : 0, cfg->metrics_listen);
        bool inherited = fd < 0 && (fd = inherited_claim(tab, ntab, cfg->metrics_listen)) >= 0;
        if (fd < 0 && (fd = listen_one(cfg->metrics_listen)) < 0)
            goto fail;
        out->metrics_fd = fd;
        if (!inherited)
            gw_log(GW_LOG_INFO, "listening on %s (metrics)", cfg->metrics_listen);
    }
    return 0;
fail:
    gw_master_listen_close(out);
    return GW_EIO;
}

int
gw_master_listen_open(const struct gw_config *cfg, struct gw_listeners *out)
{
    return listen_build(cfg, NULL, NULL, NULL, 0, out);
}

int
gw_master_listen_inherit(const struct gw_config *cfg, struct gw_listeners *out)
{
    struct inherited *tab = NULL;
    char **names = NULL;
    int n, rc;

    out->fds = NULL;
    out->n = 0;
    out->metrics_fd = -1;
    out->admin_fds = NULL;
    out->nadmin = 0;
    if ((n = inherited_take(&tab, &names)) <= 0) {
        rc = n < 0 ? n : gw_master_listen_open(cfg, out);
        goto done;
    }
    rc = listen_build(cfg, NULL, NULL, tab, (size_t)n, out);
    /* On failure every inherited socket goes too (listen_build closed
     * those it had claimed). */
    inherited_release(tab, (size_t)n, cfg, rc != 0);
done:
    for (int i = 0; names != NULL && names[i] != NULL; i++)
        free(names[i]);
    free(names);
    free(tab);
    return rc;
}

int
gw_master_listen_reopen(const struct gw_config *cfg, const struct gw_config *old,
                        const struct gw_listeners *old_l, struct gw_listeners *out)
{
    return listen_build(cfg, old, old_l, NULL, 0, out);
}

void
gw_master_listen_close(struct gw_listeners *l)
{
    for (size_t i = 0; i < l->n; i++)
        close(l->fds[i]);
    free(l->fds);
    l->fds = NULL;
    l->n = 0;
    if (l->metrics_fd >= 0)
        close(l->metrics_fd);
    l->metrics_fd = -1;
    for (size_t i = 0; i < l->nadmin; i++)
        close(l->admin_fds[i]);
    free(l->admin_fds);
    l->admin_fds = NULL;
    l->nadmin = 0;
}
