/*
 * logs.c - aigwctl logs: the capture records, read from the files
 * themselves (the master only says where they are: capture.info), so
 * that reading a month of records costs the gateway nothing.  The files
 * are capture-*.jsonl in the capture directory; their names sort in time
 * order.  A line that is not a whole JSON object (a write cut short by a
 * full disk) is skipped.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "admin/admin.h"
#include "shm/shm.h"

#define FOLLOW_POLL_MS 200
#define SUMMARY_TEXT 100

int
gw_admin_logs_since(const char *s, char *out, size_t len)
{
    struct tm tm = {0};
    char *end;
    time_t t;

    long n = strtol(s, &end, 10);
    if (end != s && n >= 0 && end[0] != '\0' && end[1] == '\0' && strchr("smhd", end[0])) {
        long mult = end[0] == 's' ? 1 : end[0] == 'm' ? 60 : end[0] == 'h' ? 3600 : 86400;
        t = time(NULL) - (time_t)(n * mult);
        gmtime_r(&t, &tm);
        strftime(out, len, "%Y-%m-%dT%H:%M:%S", &tm);
        return 0;
    }
    const char *rest = strptime(s, "%Y-%m-%d", &tm);
    if (rest == NULL)
        return -1;
    if (*rest == 'T' || *rest == ' ') {
        const char *r2 = strptime(rest + 1, "%H:%M:%S", &tm);
        if (r2 == NULL)
            r2 = strptime(rest + 1, "%H:%M", &tm);
        rest = r2;
        if (rest != NULL && *rest == 'Z')
            rest++;
    }
    if (rest == NULL || *rest != '\0')
        return -1;
    strftime(out, len, "%Y-%m-%dT%H:%M:%S", &tm);
    return 0;
}

static int
name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The capture files of dir after `after` (NULL: all), sorted; the caller
 * frees each name and the array.  -1 when dir cannot be read. */
static int
files_list(const char *dir, const char *after, char ***out, size_t *n)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char **v = NULL;
    size_t cap = 0;

    *n = 0;
    if (d == NULL)
        return -1;
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (strncmp(e->d_name, "capture-", 8) != 0 || len < 14 ||
            strcmp(e->d_name + len - 6, ".jsonl") != 0)
            continue;
        if (after != NULL && strcmp(e->d_name, after) <= 0)
            continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            char **nv = realloc(v, cap * sizeof(*v));
            if (nv == NULL)
                break;
            v = nv;
        }
        if ((v[*n] = strdup(e->d_name)) != NULL)
            (*n)++;
    }
    closedir(d);
    if (*n > 1)
        qsort(v, *n, sizeof(*v), name_cmp);
    *out = v;
    return 0;
}

static const char *
str_field(struct json_object *o, const char *k)
{
    struct json_object *v;

    return json_object_object_get_ex(o, k, &v) && json_object_is_type(v, json_type_string)
               ? json_object_get_string(v)
               : NULL;
}

/* Text cut to SUMMARY_TEXT bytes on one line, for the summary: a
 * client's prompt or a model's answer, which may hold escape sequences
 * (gw_admin_term_text). */
static void
text_print(const char *prefix, const char *s)
{
    char text[SUMMARY_TEXT + 1];

    if (s == NULL)
        return;
    bool cut = gw_admin_term_text(text, sizeof(text), s, true);
    printf("  %s %s%s\n", prefix, text, cut ? "..." : "");
}

/* A field of the record's first line, fit for a terminal. */
static const char *
head_field(struct json_object *o, const char *k, char *out, size_t len)
{
    const char *s = str_field(o, k);

    if (s == NULL)
        return "-";
    gw_admin_term_text(out, len, s, true);
    return out;
}

static void
summary_print(struct json_object *o)
{
    struct json_object *v, *req, *msgs, *resp, *choices, *usage;
    const char *last_user = NULL, *answer = NULL;
    char when[64], id[96], key[64], model[256];

    printf("%s  %s  %s  %s  status=%s", head_field(o, "time", when, sizeof(when)),
           head_field(o, "request_id", id, sizeof(id)), head_field(o, "key_id", key, sizeof(key)),
           head_field(o, "model", model, sizeof(model)),
           json_object_object_get_ex(o, "status", &v) ? json_object_get_string(v) : "-");
    if (json_object_object_get_ex(o, "cache_hit", &v) && json_object_get_boolean(v))
        printf(" cache=hit");
    if (json_object_object_get_ex(o, "usage", &usage) &&
        json_object_is_type(usage, json_type_object)) {
        struct json_object *p = NULL, *c = NULL;
        json_object_object_get_ex(usage, "prompt_tokens", &p);
        json_object_object_get_ex(usage, "completion_tokens", &c);
        printf(" tokens=%s/%s", p ? json_object_get_string(p) : "-",
               c ? json_object_get_string(c) : "-");
    }
    if (json_object_object_get_ex(o, "duration_ms", &v))
        printf(" ms=%s", json_object_get_string(v));
    putchar('\n');
    if (json_object_object_get_ex(o, "request", &req) &&
        json_object_object_get_ex(req, "messages", &msgs) &&
        json_object_is_type(msgs, json_type_array)) {
        for (size_t i = json_object_array_length(msgs); i > 0; i--) {
            struct json_object *m = json_object_array_get_idx(msgs, i - 1);
            const char *role = str_field(m, "role");
            if (role != NULL && strcmp(role, "user") == 0) {
                last_user = str_field(m, "content");
                break;
            }
        }
    }
    if (json_object_object_get_ex(o, "response", &resp) &&
        json_object_object_get_ex(resp, "choices", &choices) &&
        json_object_is_type(choices, json_type_array) && json_object_array_length(choices) > 0) {
        struct json_object *msg;
        if (json_object_object_get_ex(json_object_array_get_idx(choices, 0), "message", &msg))
            answer = str_field(msg, "content");
    }
    text_print(">", last_user);
    text_print("<", answer);
}

/* One line of a file: print it when it passes f. */
static void
line_take(const char *line, size_t len, const struct gw_admin_logs_filter *f)
{
    struct json_tokener *tok = json_tokener_new();
    struct json_object *o;
    const char *s;

    if (tok == NULL)
        return;
    o = json_tokener_parse_ex(tok, line, (int)len);
    if (o == NULL || json_tokener_get_error(tok) != json_tokener_success ||
        !json_object_is_type(o, json_type_object))
        goto out;
    if (f->key != NULL && ((s = str_field(o, "key_id")) == NULL || strcmp(s, f->key) != 0))
        goto out;
    if (f->model != NULL && ((s = str_field(o, "model")) == NULL || strcmp(s, f->model) != 0))
        goto out;
    if (f->since != NULL && ((s = str_field(o, "time")) == NULL || strcmp(s, f->since) < 0))
        goto out;
    if (f->json)
        printf("%.*s\n", (int)len, line);
    else
        summary_print(o);
out:
    json_object_put(o);
    json_tokener_free(tok);
}

/*
 * Read fp from where it is to its end, whole lines only; a partial last
 * line stays in part for the next read.
 */
static void
file_drain(FILE *fp, struct gw_buf *part, const struct gw_admin_logs_filter *f)
{
    char chunk[65536];
    size_t n;

    while ((n = fread(chunk, 1, sizeof(chunk), fp)) > 0) {
        gw_buf_append(part, chunk, n);
        size_t start = 0;
        for (size_t i = 0; i < part->len; i++) {
            if (part->data[i] != '\n')
                continue;
            if (i > start)
                line_take(part->data + start, i - start, f);
            start = i + 1;
        }
        gw_buf_consume(part, start);
    }
    clearerr(fp);
    fflush(stdout);
}

int
gw_admin_logs(const char *dir, const struct gw_admin_logs_filter *f)
{
    char **names = NULL, *last = NULL, path[4200];
    size_t n = 0;
    FILE *cur = NULL;
    struct gw_buf part = {0};

    if (files_list(dir, NULL, &names, &n) != 0) {
        fprintf(stderr, "aigwctl: cannot read the capture directory %s: %s\n", dir,
                strerror(errno));
        return 1;
    }
    for (;;) {
        for (size_t i = 0; i < n; i++) {
            if (cur != NULL) {
                file_drain(cur, &part, f);
                fclose(cur);
                cur = NULL;
            }
            part.len = 0;
            snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
            if ((cur = fopen(path, "r")) == NULL)
                fprintf(stderr, "aigwctl: %s: %s\n", path, strerror(errno));
            else
                file_drain(cur, &part, f);
            free(last);
            last = names[i];
        }
        free(names);
        names = NULL;
        if (!f->follow)
            break;
        /* Follow: the newest file as it grows, and the next ones. */
        struct timespec ts = {.tv_nsec = FOLLOW_POLL_MS * 1000000L};
        nanosleep(&ts, NULL);
        if (cur != NULL)
            file_drain(cur, &part, f);
        if (files_list(dir, last, &names, &n) != 0)
            n = 0;
    }
    if (cur != NULL)
        fclose(cur);
    free(last);
    gw_buf_free(&part);
    return 0;
}
