/*
 * safety_cost.c - what content safety costs a worker, in process: the
 * input scan of a chat prompt of about 1 KB with six rules (keywords,
 * regex and four PII detectors), and the stream filter per chunk with
 * the same rules on the output.  Not a test: it prints figures.
 *
 *   make all && cc -O2 -std=gnu11 -D_GNU_SOURCE -I. -I/usr/include/json-c \
 *       -o build/safety_cost tests/bench/safety_cost.c build/libaigw.a \
 *       $(pkg-config --libs libcurl json-c yaml-0.1 libssl libcrypto libsystemd \
 *       lmdb xlsxwriter libpcre2-8) -lm && build/safety_cost
 */
#include <stdio.h>
#include <string.h>
#include <time.h>
#include "worker/safety.h"
static int
sink(void *c, const char *d, size_t l)
{
    (void)c;
    (void)d;
    (void)l;
    return 0;
}
static double
now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}
int
main(void)
{
    static const char *const words[] = {"secret plan", "forbidden", "classified"};
    struct gw_worker_safety_def d[6] = {
        {.name = "blocklist",
         .type = GW_SAFETY_KEYWORDS,
         .words = words,
         .nwords = 3,
         .whole_word = 1,
         .on = 3,
         .action = GW_SAFETY_BLOCK,
         .stat = {-1, -1}},
        {.name = "email",
         .type = GW_SAFETY_PII,
         .detector = GW_DETECT_EMAIL,
         .on = 3,
         .action = GW_SAFETY_MASK,
         .stat = {-1, -1}},
        {.name = "phone",
         .type = GW_SAFETY_PII,
         .detector = GW_DETECT_PHONE,
         .on = 3,
         .action = GW_SAFETY_MASK,
         .stat = {-1, -1}},
        {.name = "card",
         .type = GW_SAFETY_PII,
         .detector = GW_DETECT_CREDIT_CARD,
         .on = 3,
         .action = GW_SAFETY_FLAG,
         .stat = {-1, -1}},
        {.name = "leak",
         .type = GW_SAFETY_REGEX,
         .pattern = "(?i)internal\\s+use\\s+only",
         .on = 3,
         .action = GW_SAFETY_BLOCK,
         .stat = {-1, -1}},
        {.name = "ip",
         .type = GW_SAFETY_PII,
         .detector = GW_DETECT_IPV4,
         .on = 3,
         .action = GW_SAFETY_MASK,
         .stat = {-1, -1}},
    };
    gw_log_level = GW_LOG_WARN;
    struct gw_safety_engine *e = gw_worker_safety_engine_create(d, 6, 256);
    struct gw_arena *a = gw_arena_create(1 << 16);
    char prompt[4096] = "";
    for (int i = 0; i < 25; i++)
        strcat(prompt, "Please summarise the following text. ");
    size_t n = 20000;
    const char *o;
    size_t ol;
    double t0 = now();
    for (size_t i = 0; i < n; i++) {
        struct gw_safety_req *st = gw_worker_safety_req_create(e, ~0ULL, a, NULL, "b");
        gw_worker_safety_scan(st, GW_SAFETY_INPUT, prompt, strlen(prompt), &o, &ol);
        gw_arena_reset(a);
    }
    printf("input scan, 6 rules, %zu-byte prompt: %.2f us\n", strlen(prompt), (now() - t0) / n);
    const char *ev = "data: "
                     "{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":"
                     "\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"tok12 "
                     "\"},\"finish_reason\":null}]}\n\n";
    struct gw_safety_req *st = gw_worker_safety_req_create(e, ~0ULL, a, NULL, "b");
    n = 200000;
    t0 = now();
    for (size_t i = 0; i < n; i++)
        gw_worker_safety_stream(st, ev, strlen(ev), sink, NULL);
    printf("stream filter per chunk, 6 output rules: %.2f us\n", (now() - t0) / n);
    return 0;
}
