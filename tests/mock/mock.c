/*
 * mock.c - aigw-mock: the command line, the listening socket and the
 * accept loop.  Every accepted connection gets a detached thread with a
 * small stack (http.c), so thousands of slow streams can run at once.
 *
 * SIGINT and SIGTERM are blocked in every thread and read from a signalfd
 * by the accept loop, which then exits 0.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tests/mock/mock.h"

#define THREAD_STACK (64 * 1024)
#define BACKLOG 4096

static const char usage_text[] =
    "usage: aigw-mock [--host ADDR] --port N [--require-key KEY] [--aws-key ID:SECRET]\n"
    "\n"
    "  --host ADDR         address to listen on (default 127.0.0.1)\n"
    "  --port N            port to listen on; 0 picks a free one\n"
    "  --require-key KEY   requests must send KEY (Authorization: Bearer, or the\n"
    "                      header of the provider format: api-key, x-api-key,\n"
    "                      x-goog-api-key)\n"
    "  --aws-key ID:SECRET Bedrock requests must be signed (SigV4) with it\n"
    "\n"
    "Prints \"listening HOST:PORT\" on stdout once it accepts connections.\n";

static void
usage(FILE *f, int status)
{
    fputs(usage_text, f);
    exit(status);
}

/* Open as many files as the hard limit allows: each stream is one fd. */
static void
nofile_raise(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            gw_log(GW_LOG_WARN, "setrlimit(RLIMIT_NOFILE): %s", strerror(errno));
    }
}

/* Bind and listen on host:port (non-blocking); returns the fd or -1. */
static int
listen_open(const char *host, const char *port, int *bound_port)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    struct sockaddr_storage ss;
    socklen_t sslen = sizeof(ss);
    int fd = -1, one = 1;

    int err = getaddrinfo(host, port, &hints, &res);
    if (err != 0) {
        gw_log(GW_LOG_ERROR, "getaddrinfo(%s, %s): %s", host, port, gai_strerror(err));
        goto fail;
    }
    for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            gw_log(GW_LOG_ERROR, "socket(%s): %s", host, strerror(errno));
            continue;
        }
        (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, BACKLOG) == 0)
            break;
        gw_log(GW_LOG_ERROR, "bind/listen(%s:%s): %s", host, port, strerror(errno));
        close(fd);
        fd = -1;
    }
    if (fd < 0)
        goto fail;
    if (getsockname(fd, (struct sockaddr *)&ss, &sslen) != 0) {
        gw_log(GW_LOG_ERROR, "getsockname: %s", strerror(errno));
        goto fail;
    }
    *bound_port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                 : ((struct sockaddr_in *)&ss)->sin_port);
    freeaddrinfo(res);
    return fd;

fail:
    if (fd >= 0)
        close(fd);
    if (res != NULL)
        freeaddrinfo(res);
    return -1;
}

/* Accept every pending connection and give each its thread. */
static void
accept_all(int lfd, const pthread_attr_t *attr)
{
    int one = 1;

    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                gw_log(GW_LOG_WARN, "accept: %s", strerror(errno));
                gw_mock_sleep_ms(10); /* let connections end rather than spin */
            } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
                gw_log(GW_LOG_ERROR, "accept: %s", strerror(errno));
            }
            return;
        }
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        pthread_t t;
        int err = pthread_create(&t, attr, gw_mock_conn_run, (void *)(intptr_t)fd);
        if (err != 0) {
            gw_log(GW_LOG_WARN, "pthread_create: %s", strerror(err));
            close(fd);
        }
    }
}

int
main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"host", required_argument, NULL, 'H'},
        {"port", required_argument, NULL, 'p'},
        {"require-key", required_argument, NULL, 'k'},
        {"aws-key", required_argument, NULL, 'a'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *host = "127.0.0.1";
    const char *port = NULL;
    pthread_attr_t attr;
    sigset_t sigs;
    int ch, lfd, sfd, bound;

    gw_log_init("mock");
    while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (ch) {
        case 'H': host = optarg; break;
        case 'p': port = optarg; break;
        case 'k': gw_mock_require_key = optarg; break;
        case 'a': gw_mock_aws_key = optarg; break;
        case 'h': usage(stdout, 0); break;
        default: usage(stderr, 1);
        }
    }
    if (optind != argc || port == NULL)
        usage(stderr, 1);
    char *end;
    long pn = strtol(port, &end, 10);
    if (*port == '\0' || *end != '\0' || pn < 0 || pn > 65535) {
        fprintf(stderr, "aigw-mock: invalid port: %s\n", port);
        return 1;
    }

    nofile_raise();
    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL); /* inherited by every thread */
    sfd = signalfd(-1, &sigs, SFD_CLOEXEC);
    if (sfd < 0)
        gw_fatal("signalfd: %s", strerror(errno));
    lfd = listen_open(host, port, &bound);
    if (lfd < 0)
        return 1;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, THREAD_STACK);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);

    bool v6 = strchr(host, ':') != NULL;
    printf("listening %s%s%s:%d\n", v6 ? "[" : "", host, v6 ? "]" : "", bound);
    fflush(stdout);

    for (;;) {
        struct pollfd pfd[2] = {{.fd = lfd, .events = POLLIN}, {.fd = sfd, .events = POLLIN}};
        if (poll(pfd, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            gw_fatal("poll: %s", strerror(errno));
        }
        if (pfd[1].revents != 0) {
            struct signalfd_siginfo si;
            if (read(sfd, &si, sizeof(si)) != (ssize_t)sizeof(si))
                gw_fatal("read(signalfd): %s", strerror(errno));
            gw_log(GW_LOG_INFO, "signal %u from pid %u: exiting", si.ssi_signo, si.ssi_pid);
            break;
        }
        if (pfd[0].revents != 0)
            accept_all(lfd, &attr);
    }
    close(lfd);
    pthread_attr_destroy(&attr);
    exit(0);
}
