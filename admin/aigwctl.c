/*
 * aigwctl - the administrator's command line: a thin client of the
 * master's admin socket.  It sends one JSON request, prints the reply for
 * a person (or as JSON with --json) and exits 0 on success, 1 when the
 * master refused or failed the command, 2 on a usage error, 3 when the
 * master cannot be reached.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include <xlsxwriter.h>

#include "admin/admin.h"
#include "master/master.h"
#include "shm/shm.h"

#define EXIT_REFUSED 1
#define EXIT_USAGE 2
#define EXIT_UNREACHABLE 3
#define CTL_TIMEOUT_S 10
/* endpoint test: the master's calls take up to 10 s, side by side. */
#define CTL_ENDPOINT_TIMEOUT_S 30

static const char usage_text[] =
    "usage: aigwctl [-h] [-s socket] command [arguments]\n"
    "\n"
    "commands:\n"
    "  help                                  print this help\n"
    "  status [--json]                       show the running gateway\n"
    "  workers [--json]                      list the worker processes\n"
    "  reload [--json]                       re-read the configuration (like SIGHUP)\n"
    "  usage [--json]                        usage totals: requests, input and output tokens\n"
    "  usage [--by DIM[,DIM...]]... [--since T] [--until T] [--key ID] [--user U]\n"
    "        [--tenant T] [--model M] [--target P/M] [--format table|json|csv|xlsx] [-o FILE]\n"
    "                                        usage statistics with totals; DIM: key, user,\n"
    "                                        tenant, model, target, status, day, month, hour,\n"
    "                                        byok, capability, tier; T: YYYY-MM-DD,\n"
    "                                        YYYY-MM-DDTHH:MM[:SS]Z, 24h, 7d, now\n"
    "  usage --detail [--limit N] [filters and format as above]\n"
    "                                        the requests themselves, newest first (N: 100,\n"
    "                                        0: all); --json, --csv, --xlsx FILE: shorthands\n"
    "  key create --name NAME [--user U] [--models a,b] [--expires WHEN] [--route STRATEGY]\n"
    "             [--route-header] [--json]  create an API key; prints its secret once;\n"
    "                                        WHEN: a date or 30s, 12h, 90d, 2w from now\n"
    "  key rotate ID [--json]                new secret for the key; the old one stops working\n"
    "  key list [--json]                     list keys (never their secrets)\n"
    "  key show ID [--json]                  show one key\n"
    "  key disable ID                        refuse the key from now on\n"
    "  key enable ID                         accept a disabled key again\n"
    "  key delete ID                         delete the key for good\n"
    "  limit set SCOPE [--rpm N] [--tpm N] [--json]\n"
    "                                        override the rate limits of SCOPE: --key ID,\n"
    "                                        --user NAME, --tenant NAME or --model NAME\n"
    "  limit show [SCOPE] [--json]           the limits in force (all overrides without a scope)\n"
    "  limit clear SCOPE                     drop an override: the defaults apply again\n"
    "  quota set SCOPE [--tokens N] [--calls N] [--period day|month|total] [--alert-at P%]\n"
    "            [--json]                    cap the tokens or calls of SCOPE: --tenant NAME,\n"
    "                                        --user NAME, --key ID or --model NAME\n"
    "  quota show [SCOPE] [--json]           quotas with what they used and what is left\n"
    "  quota clear SCOPE [--period P]        drop a quota (all periods without --period)\n"
    "  tenant add|show|delete NAME [--json], tenant list [--json]\n"
    "                                        manage tenants (delete: only without users)\n"
    "  user add NAME --tenant T [--uid N] [--json], user list|show|delete\n"
    "                                        manage users; --uid maps a Unix caller to the user\n"
    "  grant USER ROLE [--model M]           give a role (gateway-admin, or endpoint-admin,\n"
    "                                        -operator, -user, -viewer on model M)\n"
    "  revoke USER ROLE [--model M]          take a role back\n"
    "  audit [--limit N] [--json]            the changes made, newest first\n"
    "  breaker list [--json]                 every target: breaker, failures, health, load\n"
    "  breaker reset TARGET|all [--json]     close a target's breaker (TARGET: provider/model)\n"
    "  endpoint test MODEL [--target PROVIDER/MODEL] [--json]\n"
    "                                        make a minimal real call through each target\n"
    "  provider add NAME --type TYPE --tenant T --api-key-file F [--base-url URL]\n"
    "               [--for PROVIDER] [--json]\n"
    "                                        a tenant's own credential for a configured provider\n"
    "  provider list [--tenant T] [--json]   BYOK credentials (never their secrets)\n"
    "  provider test NAME [--json]           a minimal real call with the credential\n"
    "  provider delete NAME                  delete a credential: the provider's applies again\n"
    "  model list [--json]                   the model catalogue: type, targets, prices, status\n"
    "  model show MODEL [--json]             one model of the catalogue\n"
    "  model example MODEL --lang curl|python|node\n"
    "                                        print a ready call of the model\n"
    "  cache stats [--json]                  response cache: entries, bytes, hits, misses\n"
    "  cache purge [--model M] [--json]      remove every cached answer, or the model's\n"
    "  logs [--key ID] [--model M] [--since T] [--follow] [--json] [--dir DIR]\n"
    "                                        the captured requests; T: 2025-01-31[T13:00],\n"
    "                                        or back from now: 30m, 2h, 7d\n"
    "\n"
    "The socket is -s PATH, else $AIGW_SOCKET, else " GW_DEFAULT_SOCKET ".\n"
    "See aigwctl(8).\n";

static const char *socket_path;
static bool json_out;
static long call_timeout_s = CTL_TIMEOUT_S;

static int
usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "aigwctl: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n%s",
            "usage: aigwctl [-h] [-s socket] command [arguments]; see aigwctl help\n");
    return EXIT_USAGE;
}

/*
 * Send req (consumed) and wait for the reply.  Returns the exit status;
 * on success *reply owns the parsed reply.
 */
static int
call(struct json_object *req, struct json_object **reply)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    struct timeval tv = {.tv_sec = call_timeout_s};
    struct gw_buf in = {0};
    char *line;
    size_t used, len;
    int fd = -1, status = EXIT_UNREACHABLE;

    if (strlen(socket_path) >= sizeof(sa.sun_path)) {
        fprintf(stderr, "aigwctl: socket path too long: %s\n", socket_path);
        goto out;
    }
    strcpy(sa.sun_path, socket_path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        fprintf(stderr,
                "aigwctl: cannot connect to %s: %s (is aigwd running? use -s or "
                "AIGW_SOCKET)\n",
                socket_path, strerror(errno));
        goto out;
    }
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    const char *s = json_object_to_json_string_length(req, JSON_C_TO_STRING_PLAIN, &len);
    /* A master that refuses the caller answers and closes without reading
     * the request: the write may fail, and the answer is still there. */
    bool sent = gw_write_all(fd, s, len) == 0 && gw_write_all(fd, "\n", 1) == 0;
    int werr = errno;
    int rc = gw_proto_read_line_max(fd, &in, GW_PROTO_MAX_REPLY, &line, &used);
    if (rc < 0 && !sent) {
        fprintf(stderr, "aigwctl: write to %s: %s\n", socket_path, strerror(werr));
        goto out;
    }
    if (rc < 0) {
        fprintf(stderr, "aigwctl: no reply from %s: %s\n", socket_path, gw_strerror(rc));
        goto out;
    }
    *reply = json_tokener_parse(line);
    if (*reply == NULL) {
        fprintf(stderr, "aigwctl: malformed reply from %s\n", socket_path);
        goto out;
    }
    struct json_object *ok, *err;
    if (!json_object_object_get_ex(*reply, "ok", &ok) || !json_object_get_boolean(ok)) {
        json_object_object_get_ex(*reply, "error", &err);
        fprintf(stderr, "aigwctl: %s\n", err ? json_object_get_string(err) : "command failed");
        json_object_put(*reply);
        *reply = NULL;
        status = EXIT_REFUSED;
        goto out;
    }
    status = 0;
out:
    json_object_put(req);
    gw_buf_free(&in);
    if (fd >= 0)
        close(fd);
    return status;
}

static struct json_object *
request_new(const char *cmd)
{
    struct json_object *o = json_object_new_object();

    json_object_object_add(o, "cmd", json_object_new_string(cmd));
    return o;
}

static void
print_json(struct json_object *o, const char *field)
{
    struct json_object *v = o;

    if (field != NULL)
        json_object_object_get_ex(o, field, &v);
    puts(json_object_to_json_string_ext(v, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED |
                                               JSON_C_TO_STRING_NOSLASHESCAPE));
}

static const char *
field_str(struct json_object *o, const char *name)
{
    struct json_object *v;

    return json_object_object_get_ex(o, name, &v) ? json_object_get_string(v) : "";
}

bool
gw_admin_term_text(char *dst, size_t size, const char *src, bool one_line)
{
    const unsigned char *s = (const unsigned char *)src;
    size_t n = 0;

    while (*s != '\0') {
        /* A character's bytes go whole or not at all. */
        size_t len = 1;
        while ((s[len] & 0xc0) == 0x80 && len < 4)
            len++;
        if (n + len >= size)
            break;
        if (gw_utf8_control((const char *)s) != 0) {
            dst[n++] = one_line && (*s == '\n' || *s == '\r' || *s == '\t') ? ' ' : '?';
        } else {
            memcpy(dst + n, s, len);
            n += len;
        }
        s += len;
    }
    if (size > 0)
        dst[n] = '\0';
    return *s != '\0';
}

static void
models_format(struct json_object *key, char *out, size_t len)
{
    struct json_object *m;
    size_t off = 0;

    out[0] = '\0';
    if (!json_object_object_get_ex(key, "models", &m) || json_object_array_length(m) == 0) {
        snprintf(out, len, "*");
        return;
    }
    for (size_t i = 0; i < json_object_array_length(m) && off < len; i++)
        off += (size_t)snprintf(out + off, len - off, "%s%s", i ? "," : "",
                                json_object_get_string(json_object_array_get_idx(m, i)));
}

static void
time_format(struct json_object *key, char *out, size_t len)
{
    struct json_object *c;
    time_t t = json_object_object_get_ex(key, "created", &c) ? json_object_get_int64(c) : 0;
    struct tm tm;

    gmtime_r(&t, &tm);
    strftime(out, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void
key_print_row(struct json_object *k)
{
    char models[256], created[32];
    struct json_object *d;

    models_format(k, models, sizeof(models));
    time_format(k, created, sizeof(created));
    struct json_object *e;
    bool expired = json_object_object_get_ex(k, "expires", &e) && e != NULL &&
                   json_object_get_int64(e) <= (int64_t)time(NULL);
    printf("%-16s  %-20s  %-16s  %-8s  %-20s  %s\n", field_str(k, "id"), field_str(k, "name"),
           field_str(k, "prefix"),
           json_object_object_get_ex(k, "disabled", &d) && json_object_get_boolean(d) ? "disabled"
           : expired                                                                  ? "expired"
                                                                                      : "active",
           created, models);
}

static void
key_print_header(void)
{
    printf("%-16s  %-20s  %-16s  %-8s  %-20s  %s\n", "ID", "NAME", "PREFIX", "STATUS", "CREATED",
           "MODELS");
}

/* ------------------------------------------------------------ commands */

static int
cmd_status(int argc, char **argv)
{
    struct json_object *reply = NULL;
    int rc;

    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--json") != 0)
            return usage_error("status: unknown argument %s", argv[i]);
        json_out = true;
    }
    if ((rc = call(request_new("status"), &reply)) != 0)
        return rc;
    if (json_out) {
        json_object_object_del(reply, "ok");
        print_json(reply, NULL);
    } else {
        struct json_object *w = NULL;
        json_object_object_get_ex(reply, "workers", &w);
        printf("aigwd %s, pid %s, up %s s\n"
               "config      %s (generation %s, %s reloads, %s failed)\n"
               "workers     %s configured: %s idle, %s busy, %s starting, %s stopping\n"
               "requests    %s served, %s in flight, %s connections open\n"
               "models      %s, providers %s\n",
               field_str(reply, "version"), field_str(reply, "pid"), field_str(reply, "uptime"),
               field_str(reply, "config"), field_str(reply, "generation"),
               field_str(reply, "reloads"), field_str(reply, "reload_failures"),
               field_str(w, "configured"), field_str(w, "idle"), field_str(w, "busy"),
               field_str(w, "starting"), field_str(w, "stopping"), field_str(reply, "requests"),
               field_str(reply, "in_flight"), field_str(reply, "connections"),
               field_str(reply, "models"), field_str(reply, "providers"));
    }
    json_object_put(reply);
    return 0;
}

/* Commands whose only argument is --json. */
static bool
only_json(const char *cmd, int argc, char **argv, int *rc)
{
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--json") != 0) {
            char what[64];
            snprintf(what, sizeof(what), "%s: unknown argument %%s", cmd);
            *rc = usage_error(what, argv[i]);
            return false;
        }
        json_out = true;
    }
    return true;
}

/* A command whose only argument is --json: check that, then ask. */
static int
ask_simple(const char *name, const char *cmd, int argc, char **argv, struct json_object **reply)
{
    int rc;

    if (!only_json(name, argc, argv, &rc))
        return rc;
    return call(request_new(cmd), reply);
}

static int
cmd_workers(int argc, char **argv)
{
    struct json_object *reply = NULL, *arr;
    int rc;

    if ((rc = ask_simple("workers", "workers", argc, argv, &reply)) != 0)
        return rc;
    json_object_object_get_ex(reply, "workers", &arr);
    if (json_out) {
        print_json(reply, "workers");
    } else {
        printf("%-5s  %-8s  %-9s  %10s  %11s  %8s  %s\n", "SLOT", "PID", "STATE", "REQUESTS",
               "CONNECTIONS", "BUSY_MS", "CPUS");
        for (size_t i = 0; i < json_object_array_length(arr); i++) {
            struct json_object *w = json_object_array_get_idx(arr, i);
            printf("%-5s  %-8s  %-9s  %10s  %11s  %8s  %s\n", field_str(w, "slot"),
                   field_str(w, "pid"), field_str(w, "state"), field_str(w, "requests"),
                   field_str(w, "connections"), field_str(w, "busy_ms"), field_str(w, "cpus"));
        }
    }
    json_object_put(reply);
    return 0;
}

static int
cmd_reload(int argc, char **argv)
{
    struct json_object *reply = NULL;
    int rc;

    if ((rc = ask_simple("reload", "reload", argc, argv, &reply)) != 0)
        return rc;
    if (json_out) {
        json_object_object_del(reply, "ok");
        print_json(reply, NULL);
    } else {
        printf("reloaded: generation %s\n", field_str(reply, "generation"));
    }
    json_object_put(reply);
    return 0;
}

/* ------------------------------------------------------ usage statistics */

static const char *const stats_metrics[] = {
    "requests",        "errors",      "input_tokens",  "output_tokens", "cached", "cost",
    "avg_duration_ms", "avg_ttfb_ms", "audio_seconds", "characters",    "images", "videos",
};
#define NMETRICS (sizeof(stats_metrics) / sizeof(stats_metrics[0]))

/* The columns of usage --detail, in order. */
static const char *const detail_cols[] = {
    "time",   "request_id", "key",          "user",          "tenant", "model",
    "target", "status",     "input_tokens", "output_tokens", "cached", "latency_ms",
    "cost",   "capability", "units",        "tier",
};
#define NDETAIL (sizeof(detail_cols) / sizeof(detail_cols[0]))

/* The detail totals: the stats metrics without the averages. */
#define NDETAIL_TOTALS 6

/* A row's value of column name as text: averages with one decimal, costs
 * with six, "" when the row has no such field. */
static void
stats_value(struct json_object *row, const char *name, char *out, size_t len)
{
    struct json_object *v;

    if (row == NULL || !json_object_object_get_ex(row, name, &v))
        snprintf(out, len, "%s", "");
    else if (strcmp(name, "cost") == 0)
        snprintf(out, len, "%.6f", json_object_get_double(v));
    else if (strcmp(name, "audio_seconds") == 0)
        snprintf(out, len, "%.3f", json_object_get_double(v));
    else if (json_object_is_type(v, json_type_double))
        snprintf(out, len, "%.1f", json_object_get_double(v));
    else
        snprintf(out, len, "%s", json_object_get_string(v));
}

/* stats_value for a terminal: a model name is what a client sent, and
 * may hold an escape sequence (gw_admin_term_text). */
static void
stats_cell(struct json_object *row, const char *name, char *out, size_t len)
{
    char v[256];

    stats_value(row, name, v, sizeof(v));
    gw_admin_term_text(out, len, v, true);
}

/* A spreadsheet takes a field that begins so for a formula, which a
 * client's text (a model name) must not become: OWASP's "CSV injection". */
static bool
formula_like(const char *s)
{
    char *end;

    if (strchr("=+-@\t\r", s[0]) == NULL || s[0] == '\0')
        return false;
    strtod(s, &end); /* a negative number is a number */
    return *end != '\0' || end == s;
}

/* One CSV field, quoted as RFC 4180 says when it must be; text that a
 * spreadsheet would take for a formula gets a leading "'", as OWASP
 * advises, and is quoted. */
static void
csv_field(FILE *out, const char *s, bool last)
{
    bool formula = formula_like(s);

    if (!formula && strpbrk(s, ",\"\r\n") == NULL && s[0] != ' ' &&
        (s[0] == '\0' || s[strlen(s) - 1] != ' ')) {
        fputs(s, out);
    } else {
        fputs(formula ? "\"'" : "\"", out);
        for (; *s; s++) {
            if (*s == '"')
                fputc('"', out);
            fputc(*s, out);
        }
        fputc('"', out);
    }
    fputs(last ? "\r\n" : ",", out);
}

/* A header line, then one line per row: the rows alone, so that a column
 * adds up to the total. */
static void
emit_csv(FILE *out, const char *const *cols, size_t ncols, struct json_object *rows)
{
    char v[256];

    for (size_t c = 0; c < ncols; c++)
        csv_field(out, cols[c], c + 1 == ncols);
    for (size_t r = 0; r < json_object_array_length(rows); r++) {
        for (size_t c = 0; c < ncols; c++) {
            stats_value(json_object_array_get_idx(rows, r), cols[c], v, sizeof(v));
            csv_field(out, v, c + 1 == ncols);
        }
    }
}

/* One sheet: a bold header, then the rows, numbers as numbers. */
static void
xlsx_sheet(lxw_worksheet *ws, lxw_format *bold, const char *const *cols, size_t ncols,
           struct json_object *rows)
{
    for (size_t c = 0; c < ncols; c++)
        worksheet_write_string(ws, 0, (lxw_col_t)c, cols[c], bold);
    for (size_t r = 0; r < json_object_array_length(rows); r++) {
        struct json_object *row = json_object_array_get_idx(rows, r), *v;
        for (size_t c = 0; c < ncols; c++) {
            if (!json_object_object_get_ex(row, cols[c], &v))
                continue;
            lxw_row_t y = (lxw_row_t)(r + 1);
            lxw_col_t x = (lxw_col_t)c;
            if (json_object_is_type(v, json_type_int) || json_object_is_type(v, json_type_double))
                worksheet_write_number(ws, y, x, json_object_get_double(v), NULL);
            else if (json_object_is_type(v, json_type_boolean))
                worksheet_write_boolean(ws, y, x, json_object_get_boolean(v), NULL);
            else
                worksheet_write_string(ws, y, x, json_object_get_string(v), NULL);
        }
    }
    worksheet_set_column(ws, 0, (lxw_col_t)(ncols - 1), 16, NULL);
}

/*
 * An export to a file is written to a file of its own beside it
 * (FILE.XXXXXX), then renamed over FILE once all of it is written: a full
 * disk or any error midway leaves FILE as it was (an earlier export stays
 * whole) and no part of the new one.  The file gets the mode fopen(3)
 * would give it (0666 less the umask), not mkstemp(3)'s 0600.  A FILE that
 * is there and is not a regular file (/dev/stdout, a FIFO) is written to
 * directly, never replaced.
 */
static char export_tmp[4096]; /* what is written: the new file, or FILE */
static bool export_direct;

/* Drop what an export wrote so far, unless it was written directly. */
static void
export_discard(void)
{
    if (!export_direct)
        unlink(export_tmp);
}

/* The descriptor to write an export to path through, named export_tmp;
 * -1 after saying why not. */
static int
export_temp(const char *path)
{
    struct stat st;
    int fd;

    export_direct = stat(path, &st) == 0 && !S_ISREG(st.st_mode);
    if (snprintf(export_tmp, sizeof(export_tmp), export_direct ? "%s" : "%s.XXXXXX", path) >=
        (int)sizeof(export_tmp)) {
        fprintf(stderr, "aigwctl: cannot write %s: %s\n", path, strerror(ENAMETOOLONG));
        return -1;
    }
    fd = export_direct ? open(path, O_WRONLY | O_TRUNC | O_CLOEXEC) : mkstemp(export_tmp);
    if (fd < 0) {
        fprintf(stderr, "aigwctl: cannot write %s: %s\n", path, strerror(errno));
        return -1;
    }
    mode_t mask = umask(0);
    umask(mask);
    if (!export_direct && fchmod(fd, 0666 & ~mask) != 0) {
        fprintf(stderr, "aigwctl: cannot write %s: %s\n", path, strerror(errno));
        close(fd);
        export_discard();
        return -1;
    }
    return fd;
}

/* err: why writing export_tmp failed, or 0: put it in place of path. */
static int
export_done(const char *path, int err)
{
    if (err == 0 && !export_direct && rename(export_tmp, path) != 0)
        err = errno;
    if (err == 0)
        return 0;
    fprintf(stderr, "aigwctl: cannot write %s: %s\n", path, strerror(err));
    export_discard();
    return EXIT_REFUSED;
}

/* Sheet one ("usage" or "requests") holds the rows, sheet "totals" the
 * totals.  The file is written here, with the caller's permissions, never
 * by the master. */
static int
emit_xlsx(const char *path, const char *sheet, const char *const *cols, size_t ncols,
          struct json_object *rows, const char *const *tcols, size_t ntcols,
          struct json_object *totals)
{
    int fd = export_temp(path);
    if (fd < 0)
        return EXIT_REFUSED;
    close(fd);
    lxw_workbook *wb = workbook_new(export_tmp);
    struct json_object *one = json_object_new_array();

    if (wb == NULL) {
        fprintf(stderr, "aigwctl: cannot create workbook %s\n", path);
        export_discard();
        json_object_put(one);
        return EXIT_REFUSED;
    }
    lxw_format *bold = workbook_add_format(wb);
    format_set_bold(bold);
    xlsx_sheet(workbook_add_worksheet(wb, sheet), bold, cols, ncols, rows);
    json_object_array_add(one, json_object_get(totals));
    xlsx_sheet(workbook_add_worksheet(wb, "totals"), bold, tcols, ntcols, one);
    lxw_error err = workbook_close(wb);
    json_object_put(one);
    if (err != LXW_NO_ERROR) {
        fprintf(stderr, "aigwctl: cannot write %s: %s\n", path, lxw_strerror(err));
        export_discard();
        return EXIT_REFUSED;
    }
    return export_done(path, 0);
}

/* A table for a person: the columns, then a total line, unless totals is
 * NULL (its first tfirst columns say "total"; nlabel columns of labels
 * are aligned left). */
static void
emit_table(FILE *out, const char *const *cols, size_t ncols, size_t nlabel, size_t tfirst,
           struct json_object *rows, struct json_object *totals)
{
    size_t nrows = json_object_array_length(rows);
    int *width = calloc(ncols, sizeof(int));
    char v[256];

    if (width == NULL)
        return;
    for (size_t c = 0; c < ncols; c++) {
        width[c] = (int)strlen(cols[c]);
        if (c == 0 && tfirst > 0 && width[c] < 5)
            width[c] = 5; /* "total" */
        for (size_t r = 0; r < nrows + 1; r++) {
            struct json_object *row = r < nrows ? json_object_array_get_idx(rows, r) : totals;
            stats_cell(row, cols[c], v, sizeof(v));
            if ((int)strlen(v) > width[c])
                width[c] = (int)strlen(v);
        }
    }
    for (size_t r = 0; r < nrows + (totals != NULL ? 2 : 1); r++) {
        struct json_object *row = r == 0       ? NULL
                                  : r <= nrows ? json_object_array_get_idx(rows, r - 1)
                                               : totals;
        if (tfirst == 0 && totals != NULL && r > 0 && r <= nrows)
            continue; /* without dimensions the one row is the total */
        for (size_t c = 0; c < ncols; c++) {
            if (row == NULL)
                snprintf(v, sizeof(v), "%s", cols[c]);
            else if (row == totals && c < tfirst)
                snprintf(v, sizeof(v), "%s", c == 0 ? "total" : "");
            else
                stats_cell(row, cols[c], v, sizeof(v));
            if (v[0] == '\0')
                snprintf(v, sizeof(v), "%s", "-");
            /* Labels to the left, numbers to the right. */
            fprintf(out, c < nlabel ? "%-*s%s" : "%*s%s", width[c], v, c + 1 < ncols ? "  " : "\n");
        }
    }
    free(width);
}

enum usage_format { FORMAT_TABLE, FORMAT_JSON, FORMAT_CSV, FORMAT_XLSX };

struct usage_opts {
    enum usage_format format;
    const char *file; /* -o, --xlsx FILE; NULL: stdout */
    bool detail;
    long long limit; /* --detail: records; 0: all */
};

/* Where the answer goes: stdout, or the -o file (see export_temp). */
static FILE *
output_open(const struct usage_opts *o)
{
    if (o->file == NULL)
        return stdout;
    int fd = export_temp(o->file);
    if (fd < 0)
        return NULL;
    FILE *f = fdopen(fd, "w");
    if (f == NULL) {
        fprintf(stderr, "aigwctl: cannot write %s: %s\n", o->file, strerror(errno));
        close(fd);
        export_discard();
    }
    return f;
}

/* Every write is checked here: a write that failed (a full disk) set the
 * stream's error flag, and the flush says why again. */
static int
output_close(const struct usage_opts *o, FILE *f)
{
    int err = 0;

    errno = 0;
    if (fflush(f) != 0 || ferror(f))
        err = errno != 0 ? errno : EIO;
    if (f == stdout) {
        if (err != 0)
            fprintf(stderr, "aigwctl: cannot write the output: %s\n", strerror(err));
        return err != 0 ? EXIT_REFUSED : 0;
    }
    if (fclose(f) != 0 && err == 0)
        err = errno;
    return export_done(o->file, err);
}

static void
emit_json(FILE *out, struct json_object *o)
{
    fprintf(out, "%s\n",
            json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED |
                                                  JSON_C_TO_STRING_NOSLASHESCAPE));
}

/* Print or export the answer of usage.stats. */
static int
usage_stats_emit(const struct usage_opts *o, struct json_object *reply)
{
    struct json_object *by, *rows, *totals;
    const char *cols[GW_STATS_NDIMS + NMETRICS];
    size_t nby, ncols = 0;
    FILE *out;
    int rc = 0;

    if (!json_object_object_get_ex(reply, "by", &by) ||
        !json_object_object_get_ex(reply, "rows", &rows) ||
        !json_object_object_get_ex(reply, "totals", &totals)) {
        fprintf(stderr, "aigwctl: malformed reply to usage\n");
        return EXIT_REFUSED;
    }
    nby = json_object_array_length(by);
    for (size_t c = 0; c < nby && c < GW_STATS_NDIMS; c++)
        cols[ncols++] = json_object_get_string(json_object_array_get_idx(by, c));
    for (size_t c = 0; c < NMETRICS; c++)
        cols[ncols++] = stats_metrics[c];
    if (o->format == FORMAT_XLSX)
        return emit_xlsx(o->file, "usage", cols, ncols, rows, stats_metrics, NMETRICS, totals);
    if ((out = output_open(o)) == NULL)
        return EXIT_REFUSED;
    if (o->format == FORMAT_JSON) {
        json_object_object_del(reply, "ok");
        json_object_object_del(reply, "by");
        emit_json(out, reply);
    } else if (o->format == FORMAT_CSV) {
        emit_csv(out, cols, ncols, rows);
    } else {
        emit_table(out, cols, ncols, nby, nby, rows, totals);
    }
    rc = output_close(o, out);
    return rc;
}

/*
 * usage --detail: ask for pages of at most 1,000 records, newest first,
 * until the limit or the end, and add the totals of what was listed.
 * req holds the range and filters.
 */
static int
usage_detail(const struct usage_opts *o, struct json_object *req)
{
    struct json_object *rows = json_object_new_array(), *reply = NULL, *page, *more, *v;
    struct json_object *totals = json_object_new_object(), *doc = NULL;
    long long left = o->limit;
    int64_t until_us = -1, skip = 0, input = 0, output = 0, cached = 0, errors = 0;
    double cost = 0;
    FILE *out;
    int rc = 0;

    for (;;) {
        struct json_object *r = json_object_get(req);
        long long n = left > 0 && left < 1000 ? left : 1000;
        json_object_object_add(r, "limit", json_object_new_int64(n));
        if (until_us >= 0) {
            json_object_object_add(r, "until_us", json_object_new_int64(until_us));
            json_object_object_add(r, "skip", json_object_new_int64(skip));
        }
        if ((rc = call(r, &reply)) != 0)
            goto out;
        if (!json_object_object_get_ex(reply, "rows", &page) ||
            !json_object_object_get_ex(reply, "more", &more)) {
            fprintf(stderr, "aigwctl: malformed reply to usage --detail\n");
            rc = EXIT_REFUSED;
            goto out;
        }
        size_t got = json_object_array_length(page);
        for (size_t i = 0; i < got; i++) {
            struct json_object *row = json_object_array_get_idx(page, i);
            json_object_array_add(rows, json_object_get(row));
            int64_t t =
                json_object_object_get_ex(row, "time_us", &v) ? json_object_get_int64(v) : 0;
            /* The next page ends after this microsecond and skips the
             * rows of it already listed. */
            skip = t == until_us - 1 ? skip + 1 : 1;
            until_us = t + 1;
        }
        left -= (long long)got;
        bool again = json_object_get_boolean(more) && got > 0 && (o->limit == 0 || left > 0);
        json_object_put(reply);
        reply = NULL;
        if (!again)
            break;
    }
    size_t nrows = json_object_array_length(rows);
    for (size_t i = 0; i < nrows; i++) {
        struct json_object *row = json_object_array_get_idx(rows, i);
        if (json_object_object_get_ex(row, "input_tokens", &v))
            input += json_object_get_int64(v);
        if (json_object_object_get_ex(row, "output_tokens", &v))
            output += json_object_get_int64(v);
        if (json_object_object_get_ex(row, "cached", &v))
            cached += json_object_get_boolean(v);
        if (json_object_object_get_ex(row, "status", &v))
            errors += json_object_get_int(v) >= 400;
        if (json_object_object_get_ex(row, "cost", &v))
            cost += json_object_get_double(v);
    }
    char text[48];
    snprintf(text, sizeof(text), "%.6f", cost);
    json_object_object_add(totals, "requests", json_object_new_int64((int64_t)nrows));
    json_object_object_add(totals, "errors", json_object_new_int64(errors));
    json_object_object_add(totals, "input_tokens", json_object_new_int64(input));
    json_object_object_add(totals, "output_tokens", json_object_new_int64(output));
    json_object_object_add(totals, "cached", json_object_new_int64(cached));
    json_object_object_add(totals, "cost", json_object_new_double_s(atof(text), text));

    if (o->format == FORMAT_XLSX) {
        rc = emit_xlsx(o->file, "requests", detail_cols, NDETAIL, rows, stats_metrics,
                       NDETAIL_TOTALS, totals);
        goto out;
    }
    if ((out = output_open(o)) == NULL) {
        rc = EXIT_REFUSED;
        goto out;
    }
    if (o->format == FORMAT_JSON) {
        doc = json_object_new_object();
        json_object_object_add(doc, "rows", json_object_get(rows));
        json_object_object_add(doc, "totals", json_object_get(totals));
        emit_json(out, doc);
    } else if (o->format == FORMAT_CSV) {
        emit_csv(out, detail_cols, NDETAIL, rows);
    } else {
        emit_table(out, detail_cols, NDETAIL, 7, 0, rows, NULL);
        fprintf(out,
                "total: %zu requests, %lld errors, %lld input tokens, %lld output tokens, "
                "%lld cached, cost %s\n",
                nrows, (long long)errors, (long long)input, (long long)output, (long long)cached,
                text);
    }
    rc = output_close(o, out);
out:
    json_object_put(reply);
    json_object_put(doc);
    json_object_put(rows);
    json_object_put(totals);
    return rc;
}

/* The usage command: totals alone (no argument but --json), statistics
 * (--by and the rest), or the records themselves (--detail). */
static int
cmd_usage(int argc, char **argv)
{
    struct usage_opts o = {.format = FORMAT_TABLE, .limit = 100};
    struct json_object *req = NULL, *reply = NULL;
    char dims[256] = "";
    int formats = 0, rc;

    /* Without arguments (or with --json alone): the all-time totals. */
    if (argc == 0 || (argc == 1 && strcmp(argv[0], "--json") == 0)) {
        if ((rc = ask_simple("usage", "usage", argc, argv, &reply)) != 0)
            return rc;
        json_object_object_del(reply, "ok");
        if (json_out)
            print_json(reply, NULL);
        else
            printf("requests       %s\ninput_tokens   %s\noutput_tokens  %s\n",
                   field_str(reply, "requests"), field_str(reply, "input_tokens"),
                   field_str(reply, "output_tokens"));
        json_object_put(reply);
        return 0;
    }
    req = json_object_new_object();
    for (int i = 0; i < argc; i++) {
        const char *opt = argv[i];
        bool has = i + 1 < argc;
        if (strcmp(opt, "--json") == 0) {
            o.format = FORMAT_JSON;
            formats++;
        } else if (strcmp(opt, "--csv") == 0) {
            o.format = FORMAT_CSV;
            formats++;
        } else if (strcmp(opt, "--xlsx") == 0 && has) {
            o.format = FORMAT_XLSX;
            o.file = argv[++i];
            formats++;
        } else if (strcmp(opt, "--format") == 0 && has) {
            const char *f = argv[++i];
            formats++;
            if (strcmp(f, "table") == 0)
                o.format = FORMAT_TABLE;
            else if (strcmp(f, "json") == 0)
                o.format = FORMAT_JSON;
            else if (strcmp(f, "csv") == 0)
                o.format = FORMAT_CSV;
            else if (strcmp(f, "xlsx") == 0)
                o.format = FORMAT_XLSX;
            else {
                json_object_put(req);
                return usage_error("usage: --format %s: expected table, json, csv or xlsx", f);
            }
        } else if (strcmp(opt, "-o") == 0 && has) {
            o.file = argv[++i];
        } else if (strcmp(opt, "--detail") == 0) {
            o.detail = true;
        } else if (strcmp(opt, "--limit") == 0 && has) {
            char *end;
            o.limit = strtoll(argv[++i], &end, 10);
            if (*end != '\0' || end == argv[i] || o.limit < 0) {
                json_object_put(req);
                return usage_error("usage: --limit %s: expected a whole number (0: all)", argv[i]);
            }
        } else if (strcmp(opt, "--by") == 0 && has) {
            size_t used = strlen(dims);
            snprintf(dims + used, sizeof(dims) - used, "%s%s", used ? "," : "", argv[++i]);
        } else if ((strcmp(opt, "--since") == 0 || strcmp(opt, "--until") == 0 ||
                    strcmp(opt, "--from") == 0 || strcmp(opt, "--to") == 0 ||
                    strcmp(opt, "--key") == 0 || strcmp(opt, "--user") == 0 ||
                    strcmp(opt, "--tenant") == 0 || strcmp(opt, "--model") == 0 ||
                    strcmp(opt, "--target") == 0) &&
                   has) {
            /* --from and --to go as such, so that an error names them. */
            json_object_object_add(req, opt + 2, json_object_new_string(argv[++i]));
        } else {
            json_object_put(req);
            return usage_error("usage: unknown or incomplete argument %s", opt);
        }
    }
    const char *bad = formats > 1 ? "choose one of --format, --json, --csv and --xlsx FILE"
                      : o.format == FORMAT_XLSX && o.file == NULL
                          ? "an XLSX workbook needs a file: -o FILE"
                      : o.detail && dims[0] != '\0' ? "--detail lists requests; leave --by out"
                                                    : NULL;
    if (bad != NULL) {
        json_object_put(req);
        return usage_error("usage: %s", bad);
    }
    json_out = o.format == FORMAT_JSON;
    if (o.detail) {
        json_object_object_add(req, "cmd", json_object_new_string("usage.detail"));
        rc = usage_detail(&o, req);
        json_object_put(req);
        return rc;
    }
    json_object_object_add(req, "cmd", json_object_new_string("usage.stats"));
    if (dims[0] != '\0')
        json_object_object_add(req, "by", json_object_new_string(dims));
    if ((rc = call(req, &reply)) != 0)
        return rc;
    rc = usage_stats_emit(&o, reply);
    json_object_put(reply);
    return rc;
}

static int
cmd_key_create(int argc, char **argv)
{
    struct json_object *req = request_new("key.create"), *reply = NULL;
    const char *name = NULL;
    int rc;

    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            json_out = true;
        } else if (strcmp(argv[i], "--name") == 0 && i + 1 < argc) {
            name = argv[++i];
        } else if (strcmp(argv[i], "--route") == 0 && i + 1 < argc) {
            json_object_object_add(req, "route", json_object_new_string(argv[++i]));
        } else if (strcmp(argv[i], "--route-header") == 0) {
            json_object_object_add(req, "route_header", json_object_new_boolean(1));
        } else if (strcmp(argv[i], "--user") == 0 && i + 1 < argc) {
            json_object_object_add(req, "user", json_object_new_string(argv[++i]));
        } else if (strcmp(argv[i], "--expires") == 0 && i + 1 < argc) {
            json_object_object_add(req, "expires", json_object_new_string(argv[++i]));
        } else if (strcmp(argv[i], "--models") == 0 && i + 1 < argc) {
            struct json_object *models = json_object_new_array();
            char *list = strdup(argv[++i]), *save = NULL;
            for (char *m = strtok_r(list, ",", &save); m; m = strtok_r(NULL, ",", &save))
                if (*m != '\0')
                    json_object_array_add(models, json_object_new_string(m));
            free(list);
            if (json_object_array_length(models) == 0) {
                json_object_put(models);
                json_object_put(req);
                return usage_error("key create: %s", "--models needs at least one model name "
                                                     "(leave it out to allow every model)");
            }
            json_object_object_add(req, "models", models);
        } else {
            json_object_put(req);
            return usage_error("key create: unknown or incomplete argument %s", argv[i]);
        }
    }
    if (name == NULL) {
        json_object_put(req);
        return usage_error("key create: %s", "--name NAME is required");
    }
    json_object_object_add(req, "name", json_object_new_string(name));
    if ((rc = call(req, &reply)) != 0)
        return rc;
    struct json_object *key;
    json_object_object_get_ex(reply, "key", &key);
    if (json_out) {
        struct json_object *o = json_object_new_object();
        json_object_object_add(o, "id", json_object_new_string(field_str(key, "id")));
        json_object_object_add(o, "key", json_object_new_string(field_str(reply, "secret")));
        json_object_object_add(o, "name", json_object_new_string(field_str(key, "name")));
        print_json(o, NULL);
        json_object_put(o);
    } else {
        printf("id:     %s\nname:   %s\nkey:    %s\n\n"
               "This is the only time the key is shown: store it now.\n",
               field_str(key, "id"), field_str(key, "name"), field_str(reply, "secret"));
    }
    json_object_put(reply);
    return 0;
}

static int
cmd_key_list(int argc, char **argv)
{
    struct json_object *reply = NULL, *keys;
    int rc;

    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--json") != 0)
            return usage_error("key list: unknown argument %s", argv[i]);
        json_out = true;
    }
    if ((rc = call(request_new("key.list"), &reply)) != 0)
        return rc;
    json_object_object_get_ex(reply, "keys", &keys);
    if (json_out) {
        print_json(reply, "keys");
    } else {
        key_print_header();
        for (size_t i = 0; i < json_object_array_length(keys); i++)
            key_print_row(json_object_array_get_idx(keys, i));
    }
    json_object_put(reply);
    return 0;
}

/*
 * The arguments of a command that takes one operand and --json: the
 * operand in *out, or a usage error naming cmd ("key rotate: unexpected
 * argument -x", "key rotate: which key? give its ID").
 */
static int
one_operand(int argc, char **argv, const char *cmd, const char *missing, const char **out)
{
    char what[64], unexpected[96];

    *out = NULL;
    snprintf(what, sizeof(what), "%s: %%s", cmd);
    snprintf(unexpected, sizeof(unexpected), "%s: unexpected argument %%s", cmd);
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            json_out = true;
        else if (*out == NULL && argv[i][0] != '-')
            *out = argv[i];
        else
            return usage_error(unexpected, argv[i]);
    }
    return *out == NULL ? usage_error(what, missing) : 0;
}

/* show, disable, enable, delete: one key id, one command. */
static int
cmd_key_id(const char *cmd, int argc, char **argv)
{
    struct json_object *req, *reply = NULL;
    const char *id;
    char name[32];
    int rc;

    snprintf(name, sizeof(name), "key %s", strchr(cmd, '.') + 1);
    if ((rc = one_operand(argc, argv, name, "which key? give its ID", &id)) != 0)
        return rc;
    req = request_new(cmd);
    json_object_object_add(req, "id", json_object_new_string(id));
    if ((rc = call(req, &reply)) != 0)
        return rc;
    if (strcmp(cmd, "key.show") == 0) {
        struct json_object *key;
        json_object_object_get_ex(reply, "key", &key);
        if (json_out) {
            print_json(reply, "key");
        } else {
            key_print_header();
            key_print_row(key);
        }
    } else if (json_out) {
        puts("{ \"ok\": true }");
    } else {
        printf("key %s %s\n", id,
               strcmp(cmd, "key.delete") == 0    ? "deleted"
               : strcmp(cmd, "key.disable") == 0 ? "disabled"
                                                 : "enabled");
    }
    json_object_put(reply);
    return 0;
}

static int cmd_key_rotate(int argc, char **argv);

static int
cmd_key(int argc, char **argv)
{
    static const char *const id_cmds[] = {"show", "disable", "enable", "delete"};
    char cmd[32];

    if (argc < 1)
        return usage_error("key: %s", "which subcommand? create, list, show, disable, enable, "
                                      "delete");
    if (strcmp(argv[0], "create") == 0)
        return cmd_key_create(argc - 1, argv + 1);
    if (strcmp(argv[0], "list") == 0)
        return cmd_key_list(argc - 1, argv + 1);
    if (strcmp(argv[0], "rotate") == 0)
        return cmd_key_rotate(argc - 1, argv + 1);
    for (size_t i = 0; i < sizeof(id_cmds) / sizeof(id_cmds[0]); i++) {
        if (strcmp(argv[0], id_cmds[i]) == 0) {
            snprintf(cmd, sizeof(cmd), "key.%s", id_cmds[i]);
            return cmd_key_id(cmd, argc - 1, argv + 1);
        }
    }
    return usage_error("key: unknown subcommand %s", argv[0]);
}

/* Widest value of field in the objects of arr, at least min. */
static int
column_width(struct json_object *arr, const char *field, int min)
{
    int w = min;

    for (size_t i = 0; i < json_object_array_length(arr); i++) {
        int len = (int)strlen(field_str(json_object_array_get_idx(arr, i), field));
        if (len > w)
            w = len;
    }
    return w;
}

static int
cmd_breaker_list(int argc, char **argv)
{
    struct json_object *reply = NULL, *arr;
    int rc;

    if ((rc = ask_simple("breaker list", "breaker.list", argc, argv, &reply)) != 0)
        return rc;
    json_object_object_get_ex(reply, "targets", &arr);
    if (json_out) {
        print_json(reply, "targets");
    } else {
        int tw = column_width(arr, "target", 6), mw = column_width(arr, "model", 5);
        printf("%-*s  %-*s  %-9s  %5s  %6s  %6s  %9s  %8s  %-9s  %9s  %8s  %8s\n", tw, "TARGET", mw,
               "MODEL", "STATE", "FAILS", "TOTAL", "OPENED", "WINDOW", "RETRY_IN", "HEALTH",
               "IN_FLIGHT", "TTFT_MS", "TOK/S");
        for (size_t i = 0; i < json_object_array_length(arr); i++) {
            struct json_object *t = json_object_array_get_idx(arr, i), *v;
            double retry =
                json_object_object_get_ex(t, "retry_in_s", &v) ? json_object_get_double(v) : 0;
            double ttft =
                json_object_object_get_ex(t, "ttft_ms", &v) ? json_object_get_double(v) : 0;
            double tps =
                json_object_object_get_ex(t, "tokens_per_s", &v) ? json_object_get_double(v) : 0;
            double rate =
                json_object_object_get_ex(t, "error_rate", &v) ? json_object_get_double(v) : 0;
            char retry_s[32], window_s[48];
            if (strcmp(field_str(t, "state"), "open") == 0)
                snprintf(retry_s, sizeof(retry_s), "%.1fs", retry);
            else
                snprintf(retry_s, sizeof(retry_s), "-");
            /* Failed of all attempts in the error-rate window, when there is one. */
            if (rate > 0)
                snprintf(window_s, sizeof(window_s), "%s/%s", field_str(t, "window_failures"),
                         field_str(t, "window_requests"));
            else
                snprintf(window_s, sizeof(window_s), "-");
            printf("%-*s  %-*s  %-9s  %5s  %6s  %6s  %9s  %8s  %-9s  %9s  %8.1f  %8.1f\n", tw,
                   field_str(t, "target"), mw, field_str(t, "model"), field_str(t, "state"),
                   field_str(t, "consecutive_failures"), field_str(t, "failures"),
                   field_str(t, "opened"), window_s, retry_s, field_str(t, "health"),
                   field_str(t, "in_flight"), ttft, tps);
        }
    }
    json_object_put(reply);
    return 0;
}

static int
cmd_breaker_reset(int argc, char **argv)
{
    struct json_object *req, *reply = NULL, *done;
    const char *target;
    int rc;

    if ((rc = one_operand(argc, argv, "breaker reset", "which target? give PROVIDER/MODEL, or all",
                          &target)) != 0)
        return rc;
    req = request_new("breaker.reset");
    json_object_object_add(req, "target", json_object_new_string(target));
    if ((rc = call(req, &reply)) != 0)
        return rc;
    json_object_object_get_ex(reply, "reset", &done);
    if (json_out) {
        print_json(reply, "reset");
    } else {
        for (size_t i = 0; i < json_object_array_length(done); i++)
            printf("breaker of %s closed\n",
                   json_object_get_string(json_object_array_get_idx(done, i)));
    }
    json_object_put(reply);
    return 0;
}

static int
cmd_breaker(int argc, char **argv)
{
    if (argc < 1)
        return usage_error("breaker: %s", "which subcommand? list, reset");
    if (strcmp(argv[0], "list") == 0)
        return cmd_breaker_list(argc - 1, argv + 1);
    if (strcmp(argv[0], "reset") == 0)
        return cmd_breaker_reset(argc - 1, argv + 1);
    return usage_error("breaker: unknown subcommand %s", argv[0]);
}

/* A limit of a reply: the number, or "unlimited" for 0, "-" for none. */
static const char *
limit_text(struct json_object *o, const char *field, char *buf, size_t len)
{
    struct json_object *v;

    if (!json_object_object_get_ex(o, field, &v) || v == NULL)
        return "-";
    if (json_object_get_int64(v) == 0)
        return "unlimited";
    snprintf(buf, len, "%lld", (long long)json_object_get_int64(v));
    return buf;
}

static void
limit_print(struct json_object *l)
{
    struct json_object *ov, *def;
    char a[32], b[32], c[32], d[32], e[32], f[32];

    json_object_object_get_ex(l, "override", &ov);
    json_object_object_get_ex(l, "default", &def);
    printf("%-40s  rpm %-10s tpm %-10s (override rpm %s tpm %s; default rpm %s tpm %s)\n",
           field_str(l, "scope"), limit_text(l, "rpm", a, sizeof(a)),
           limit_text(l, "tpm", b, sizeof(b)), ov ? limit_text(ov, "rpm", c, sizeof(c)) : "-",
           ov ? limit_text(ov, "tpm", d, sizeof(d)) : "-", limit_text(def, "rpm", e, sizeof(e)),
           limit_text(def, "tpm", f, sizeof(f)));
}

/* The command of FAMILY SUB for set|show|clear families ("limit.set"),
 * or NULL when sub is none of those. */
static const char *
family_command(const char *family, const char *sub)
{
    static const char *const subs[] = {"set", "show", "clear"};
    static char cmd[64];

    for (size_t i = 0; i < sizeof(subs) / sizeof(subs[0]); i++) {
        if (strcmp(sub, subs[i]) == 0) {
            snprintf(cmd, sizeof(cmd), "%s.%s", family, sub);
            return cmd;
        }
    }
    return NULL;
}

/* Call req (consumed) and print the reply of a set|show|clear family: the
 * list under plural (none when it is empty), the object under singular,
 * else cleared. */
static int
family_call(struct json_object *req, const char *plural, const char *singular,
            void (*print)(struct json_object *), const char *none, const char *cleared)
{
    struct json_object *reply = NULL, *arr;
    int rc;

    if ((rc = call(req, &reply)) != 0)
        return rc;
    if (json_out) {
        json_object_object_del(reply, "ok");
        print_json(reply, NULL);
    } else if (json_object_object_get_ex(reply, plural, &arr)) {
        if (json_object_array_length(arr) == 0)
            printf("%s\n", none);
        for (size_t i = 0; i < json_object_array_length(arr); i++)
            print(json_object_array_get_idx(arr, i));
    } else if (json_object_object_get_ex(reply, singular, &arr)) {
        print(arr);
    } else {
        printf("%s\n", cleared);
    }
    json_object_put(reply);
    return 0;
}

/* limit set|show|clear: --key, --user, --tenant or --model names the scope. */
static int
cmd_limit(int argc, char **argv)
{
    struct json_object *req;
    const char *sub, *what;

    if (argc < 1)
        return usage_error("limit: %s", "which subcommand? set, show, clear");
    sub = argv[0];
    if ((what = family_command("limit", sub)) == NULL)
        return usage_error("limit: unknown subcommand %s", sub);
    req = request_new(what);
    for (int i = 1; i < argc; i++) {
        bool has = i + 1 < argc;
        if (strcmp(argv[i], "--json") == 0) {
            json_out = true;
        } else if (has && (strcmp(argv[i], "--key") == 0 || strcmp(argv[i], "--model") == 0 ||
                           strcmp(argv[i], "--user") == 0 || strcmp(argv[i], "--tenant") == 0)) {
            json_object_object_add(req, argv[i] + 2, json_object_new_string(argv[i + 1]));
            i++;
        } else if (has && strcmp(sub, "set") == 0 &&
                   (strcmp(argv[i], "--rpm") == 0 || strcmp(argv[i], "--tpm") == 0)) {
            char *end;
            errno = 0;
            long long v = strtoll(argv[i + 1], &end, 10);
            if (errno != 0 || *end != '\0' || end == argv[i + 1] || v < 0) {
                json_object_put(req);
                return usage_error("limit set: %s needs a whole number", argv[i]);
            }
            json_object_object_add(req, argv[i] + 2, json_object_new_int64(v));
            i++;
        } else {
            json_object_put(req);
            return usage_error("limit: unexpected or incomplete argument %s", argv[i]);
        }
    }
    return family_call(req, "limits", "limit", limit_print, "no limit overrides",
                       "limit override cleared");
}

/* One side (tokens or calls) of a quota: "used/limit", or "-". */
static const char *
quota_side(struct json_object *q, const char *what, char *buf, size_t len)
{
    struct json_object *d, *used, *limit;

    if (!json_object_object_get_ex(q, what, &d) || d == NULL ||
        !json_object_object_get_ex(d, "used", &used) ||
        !json_object_object_get_ex(d, "limit", &limit))
        return "-";
    snprintf(buf, len, "%lld/%lld", (long long)json_object_get_int64(used),
             (long long)json_object_get_int64(limit));
    return buf;
}

static void
quota_print(struct json_object *q)
{
    struct json_object *v;
    char tokens[64], calls[64], resets[32] = "never", alert[16] = "-";

    if (json_object_object_get_ex(q, "resets", &v) && v != NULL) {
        time_t t = (time_t)json_object_get_int64(v);
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(resets, sizeof(resets), "%Y-%m-%dT%H:%M:%SZ", &tm);
    }
    if (json_object_object_get_ex(q, "alert_at", &v))
        snprintf(alert, sizeof(alert), "%d%%", json_object_get_int(v));
    printf("%-32s %-6s tokens %-24s calls %-16s alert %-4s resets %s\n", field_str(q, "scope"),
           field_str(q, "period"), quota_side(q, "tokens", tokens, sizeof(tokens)),
           quota_side(q, "calls", calls, sizeof(calls)), alert, resets);
}

/* quota set|show|clear: --tenant, --user, --key or --model names the scope. */
static int
cmd_quota(int argc, char **argv)
{
    static const char *const scopes[] = {"--tenant", "--user", "--key", "--model", "--period"};
    struct json_object *req;
    const char *sub, *what;

    if (argc < 1)
        return usage_error("quota: %s", "which subcommand? set, show, clear");
    sub = argv[0];
    if ((what = family_command("quota", sub)) == NULL)
        return usage_error("quota: unknown subcommand %s", sub);
    req = request_new(what);
    for (int i = 1; i < argc; i++) {
        bool has = i + 1 < argc, named = false;
        if (strcmp(argv[i], "--json") == 0) {
            json_out = true;
            continue;
        }
        for (size_t s = 0; s < sizeof(scopes) / sizeof(scopes[0]) && has; s++) {
            if (strcmp(argv[i], scopes[s]) == 0) {
                json_object_object_add(req, argv[i] + 2, json_object_new_string(argv[i + 1]));
                named = true;
            }
        }
        if (named) {
            i++;
        } else if (has && strcmp(sub, "set") == 0 &&
                   (strcmp(argv[i], "--tokens") == 0 || strcmp(argv[i], "--calls") == 0 ||
                    strcmp(argv[i], "--alert-at") == 0)) {
            bool pct = strcmp(argv[i], "--alert-at") == 0;
            char *end;
            errno = 0;
            long long v = strtoll(argv[i + 1], &end, 10);
            if (pct && *end == '%')
                end++;
            if (errno != 0 || *end != '\0' || end == argv[i + 1] || v < 0) {
                json_object_put(req);
                return usage_error(pct ? "quota set: %s needs a percentage such as 80%%"
                                       : "quota set: %s needs a whole number",
                                   argv[i]);
            }
            json_object_object_add(req, pct ? "alert_at" : argv[i] + 2, json_object_new_int64(v));
            i++;
        } else {
            json_object_put(req);
            return usage_error("quota: unexpected or incomplete argument %s", argv[i]);
        }
    }
    return family_call(req, "quotas", "quota", quota_print, "no quotas", "quota cleared");
}

/* endpoint test MODEL [--target PROVIDER/MODEL]: exits 1 unless every
 * target tested answered 2xx. */
static int
cmd_endpoint_test(int argc, char **argv)
{
    struct json_object *req, *reply = NULL, *arr, *passed;
    const char *model = NULL, *target = NULL;
    int rc;

    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            json_out = true;
        else if (strcmp(argv[i], "--target") == 0 && i + 1 < argc)
            target = argv[++i];
        else if (model == NULL && argv[i][0] != '-')
            model = argv[i];
        else
            return usage_error("endpoint test: unexpected or incomplete argument %s", argv[i]);
    }
    if (model == NULL)
        return usage_error("endpoint test: %s", "which model? give its name");
    req = request_new("endpoint.test");
    json_object_object_add(req, "model", json_object_new_string(model));
    if (target != NULL)
        json_object_object_add(req, "target", json_object_new_string(target));
    call_timeout_s = CTL_ENDPOINT_TIMEOUT_S;
    if ((rc = call(req, &reply)) != 0)
        return rc;
    json_object_object_get_ex(reply, "targets", &arr);
    bool ok =
        json_object_object_get_ex(reply, "passed", &passed) && json_object_get_boolean(passed);
    if (json_out) {
        json_object_object_del(reply, "ok");
        print_json(reply, NULL);
    } else {
        int tw = column_width(arr, "target", 6);
        printf("%-*s  %6s  %10s  %s\n", tw, "TARGET", "STATUS", "LATENCY_MS", "ERROR");
        for (size_t i = 0; i < json_object_array_length(arr); i++) {
            struct json_object *t = json_object_array_get_idx(arr, i), *e;
            double ms =
                json_object_object_get_ex(t, "latency_ms", &e) ? json_object_get_double(e) : 0;
            bool has_err = json_object_object_get_ex(t, "error", &e) && e != NULL;
            printf("%-*s  %6s  %10.1f  %s\n", tw, field_str(t, "target"), field_str(t, "status"),
                   ms, has_err ? json_object_get_string(e) : "-");
        }
    }
    json_object_put(reply);
    return ok ? 0 : EXIT_REFUSED;
}

static int
cmd_endpoint(int argc, char **argv)
{
    if (argc < 1)
        return usage_error("endpoint: %s", "which subcommand? test");
    if (strcmp(argv[0], "test") == 0)
        return cmd_endpoint_test(argc - 1, argv + 1);
    return usage_error("endpoint: unknown subcommand %s", argv[0]);
}

/* ------------------------------------------------------------ accounts */

/* "role" or "role on model" of a grant, in buf. */
static const char *
grant_text(struct json_object *g, char *buf, size_t len)
{
    const char *model = field_str(g, "model");

    snprintf(buf, len, "%s%s%s", field_str(g, "role"), model[0] ? " on " : "", model);
    return buf;
}

static void
user_print_row(struct json_object *u)
{
    struct json_object *grants, *uid;
    char text[1024] = "", one[256];

    if (json_object_object_get_ex(u, "grants", &grants))
        for (size_t i = 0; i < json_object_array_length(grants); i++) {
            size_t used = strlen(text);
            snprintf(text + used, sizeof(text) - used, "%s%s", i ? ", " : "",
                     grant_text(json_object_array_get_idx(grants, i), one, sizeof(one)));
        }
    printf("%-20s %-16s %-8s %s\n", field_str(u, "name"), field_str(u, "tenant"),
           json_object_object_get_ex(u, "uid", &uid) ? json_object_get_string(uid) : "-",
           text[0] ? text : "-");
}

static void
names_print(const char *label, struct json_object *o, const char *name)
{
    struct json_object *arr;

    printf("%-8s", label);
    if (json_object_object_get_ex(o, name, &arr) && json_object_array_length(arr) > 0)
        for (size_t i = 0; i < json_object_array_length(arr); i++)
            printf("%s%s", i ? ", " : "",
                   json_object_get_string(json_object_array_get_idx(arr, i)));
    else
        printf("-");
    printf("\n");
}

/* tenant add|list|show|delete, user add|list|show|delete. */
static int
cmd_account(const char *what, int argc, char **argv)
{
    struct json_object *req, *reply = NULL, *v;
    const char *name = NULL;
    char cmd[32];
    int rc;

    if (argc < 1)
        return usage_error("%s: which subcommand? add, list, show, delete", what);
    const char *sub = argv[0];
    if (strcmp(sub, "add") != 0 && strcmp(sub, "list") != 0 && strcmp(sub, "show") != 0 &&
        strcmp(sub, "delete") != 0)
        return usage_error("unknown subcommand %s (add, list, show, delete)", sub);
    snprintf(cmd, sizeof(cmd), "%s.%s", what, sub);
    req = request_new(cmd);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            json_out = true;
        } else if (strcmp(what, "user") == 0 && strcmp(argv[i], "--tenant") == 0 && i + 1 < argc) {
            json_object_object_add(req, "tenant", json_object_new_string(argv[++i]));
        } else if (strcmp(what, "user") == 0 && strcmp(argv[i], "--uid") == 0 && i + 1 < argc) {
            char *end;
            long uid = strtol(argv[++i], &end, 10);
            if (*end != '\0' || end == argv[i] || uid < 0) {
                json_object_put(req);
                return usage_error("--uid %s: not a number", argv[i]);
            }
            json_object_object_add(req, "uid", json_object_new_int64(uid));
        } else if (name == NULL && argv[i][0] != '-' && strcmp(sub, "list") != 0) {
            name = argv[i];
        } else {
            json_object_put(req);
            return usage_error("unknown or incomplete argument %s", argv[i]);
        }
    }
    if (name == NULL && strcmp(sub, "list") != 0) {
        json_object_put(req);
        return usage_error("%s: give a NAME", cmd);
    }
    if (name != NULL)
        json_object_object_add(req, "name", json_object_new_string(name));
    if ((rc = call(req, &reply)) != 0)
        return rc;
    if (json_out) {
        print_json(reply, strcmp(sub, "list") == 0     ? (what[0] == 't' ? "tenants" : "users")
                          : strcmp(sub, "delete") == 0 ? NULL
                                                       : what);
    } else if (strcmp(sub, "list") == 0 && strcmp(what, "tenant") == 0) {
        json_object_object_get_ex(reply, "tenants", &v);
        printf("%-20s %s\n", "NAME", "USERS");
        for (size_t i = 0; i < json_object_array_length(v); i++) {
            struct json_object *t = json_object_array_get_idx(v, i), *users;
            json_object_object_get_ex(t, "users", &users);
            printf("%-20s %zu\n", field_str(t, "name"), json_object_array_length(users));
        }
    } else if (strcmp(sub, "list") == 0) {
        json_object_object_get_ex(reply, "users", &v);
        printf("%-20s %-16s %-8s %s\n", "NAME", "TENANT", "UID", "GRANTS");
        for (size_t i = 0; i < json_object_array_length(v); i++)
            user_print_row(json_object_array_get_idx(v, i));
    } else if (strcmp(sub, "show") == 0) {
        json_object_object_get_ex(reply, what, &v);
        printf("name:   %s\n", field_str(v, "name"));
        if (strcmp(what, "tenant") == 0) {
            names_print("users:", v, "users");
        } else {
            struct json_object *grants, *uid;
            char one[256];
            printf("tenant: %s\nuid:    %s\n", field_str(v, "tenant"),
                   json_object_object_get_ex(v, "uid", &uid) ? json_object_get_string(uid) : "-");
            json_object_object_get_ex(v, "grants", &grants);
            printf("grants:%s\n", json_object_array_length(grants) ? "" : " -");
            for (size_t i = 0; i < json_object_array_length(grants); i++)
                printf("  %s\n",
                       grant_text(json_object_array_get_idx(grants, i), one, sizeof(one)));
            names_print("keys:", v, "keys");
        }
    } else {
        printf("%s %s %s\n", what, name, strcmp(sub, "add") == 0 ? "added" : "deleted");
    }
    json_object_put(reply);
    return 0;
}

/* grant|revoke USER ROLE [--model M] */
static int
cmd_grant(const char *cmd, int argc, char **argv)
{
    struct json_object *req = request_new(cmd), *reply = NULL;
    const char *user = NULL, *role = NULL, *model = NULL;
    int rc;

    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            json_out = true;
        else if (strcmp(argv[i], "--model") == 0 && i + 1 < argc)
            model = argv[++i];
        else if (user == NULL && argv[i][0] != '-')
            user = argv[i];
        else if (role == NULL && argv[i][0] != '-')
            role = argv[i];
        else {
            json_object_put(req);
            return usage_error("unknown or incomplete argument %s", argv[i]);
        }
    }
    if (user == NULL || role == NULL) {
        json_object_put(req);
        return usage_error("%s: give USER ROLE [--model M]", cmd);
    }
    json_object_object_add(req, "user", json_object_new_string(user));
    json_object_object_add(req, "role", json_object_new_string(role));
    if (model != NULL)
        json_object_object_add(req, "model", json_object_new_string(model));
    if ((rc = call(req, &reply)) != 0)
        return rc;
    if (json_out)
        puts("{ \"ok\": true }");
    else
        printf("%s %s%s%s %s %s\n", strcmp(cmd, "grant") == 0 ? "granted" : "revoked", role,
               model ? " on " : "", model ? model : "", strcmp(cmd, "grant") == 0 ? "to" : "from",
               user);
    json_object_put(reply);
    return 0;
}

static int
cmd_audit(int argc, char **argv)
{
    struct json_object *req = request_new("audit"), *reply = NULL, *entries, *args;
    int rc;

    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            json_out = true;
        } else if (strcmp(argv[i], "--limit") == 0 && i + 1 < argc) {
            char *end;
            long n = strtol(argv[++i], &end, 10);
            if (*end != '\0' || end == argv[i] || n < 0) {
                json_object_put(req);
                return usage_error("--limit %s: not a number", argv[i]);
            }
            json_object_object_add(req, "limit", json_object_new_int64(n));
        } else {
            json_object_put(req);
            return usage_error("audit: unknown or incomplete argument %s", argv[i]);
        }
    }
    if ((rc = call(req, &reply)) != 0)
        return rc;
    json_object_object_get_ex(reply, "entries", &entries);
    if (json_out) {
        print_json(reply, "entries");
    } else {
        printf("%-20s %-16s %-14s %s\n", "TIME", "USER(UID)", "COMMAND", "ARGUMENTS");
        for (size_t i = 0; i < json_object_array_length(entries); i++) {
            struct json_object *e = json_object_array_get_idx(entries, i), *t;
            char when[32] = "-", who[128];
            time_t secs = json_object_object_get_ex(e, "time", &t) ? json_object_get_int64(t) : 0;
            struct tm tm;
            if (gmtime_r(&secs, &tm) != NULL)
                strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
            /* Over the HTTP admin API: the user, and "http" for the uid. */
            snprintf(who, sizeof(who), "%s(%s)", field_str(e, "user"),
                     json_object_object_get_ex(e, "via", &t) ? json_object_get_string(t)
                                                             : field_str(e, "uid"));
            json_object_object_get_ex(e, "args", &args);
            printf("%-20s %-16s %-14s %s\n", when, who, field_str(e, "command"),
                   json_object_to_json_string_ext(args, JSON_C_TO_STRING_PLAIN |
                                                            JSON_C_TO_STRING_NOSLASHESCAPE));
        }
    }
    json_object_put(reply);
    return 0;
}

static int
cmd_key_rotate(int argc, char **argv)
{
    struct json_object *req, *reply = NULL;
    const char *id;
    int rc;

    if ((rc = one_operand(argc, argv, "key rotate", "which key? give its ID", &id)) != 0)
        return rc;
    req = request_new("key.rotate");
    json_object_object_add(req, "id", json_object_new_string(id));
    if ((rc = call(req, &reply)) != 0)
        return rc;
    if (json_out) {
        struct json_object *o = json_object_new_object();
        json_object_object_add(o, "id", json_object_new_string(field_str(reply, "id")));
        json_object_object_add(o, "key", json_object_new_string(field_str(reply, "secret")));
        print_json(o, NULL);
        json_object_put(o);
    } else {
        printf("id:     %s\nkey:    %s\n\nThe old secret no longer works. This is the only "
               "time the new one is shown: store it now.\n",
               field_str(reply, "id"), field_str(reply, "secret"));
    }
    json_object_put(reply);
    return 0;
}

/* ------------------------------------------- for the other files (admin.h) */

int
gw_admin_call(struct json_object *req, struct json_object **reply)
{
    return call(req, reply);
}

struct json_object *
gw_admin_request(const char *cmd)
{
    return request_new(cmd);
}

int
gw_admin_usage_error(const char *fmt, const char *arg)
{
    return usage_error(fmt, arg);
}

int
gw_admin_one_operand(int argc, char **argv, const char *cmd, const char *missing, const char **out)
{
    return one_operand(argc, argv, cmd, missing, out);
}

void
gw_admin_json_set(void)
{
    json_out = true;
}

bool
gw_admin_json(void)
{
    return json_out;
}

void
gw_admin_timeout_set(long s)
{
    call_timeout_s = s;
}

void
gw_admin_print_json(struct json_object *o, const char *field)
{
    print_json(o, field);
}

const char *
gw_admin_field(struct json_object *o, const char *name)
{
    return field_str(o, name);
}

int
gw_admin_column_width(struct json_object *arr, const char *field, int min)
{
    return column_width(arr, field, min);
}

void
gw_admin_time_format(struct json_object *o, char *out, size_t len)
{
    time_format(o, out, len);
}

static void
cache_row(struct json_object *o, const char *name)
{
    printf("%-24s %8s %12s %8s %8s %8s %9s %8s\n", name, field_str(o, "entries"),
           field_str(o, "bytes"), field_str(o, "hits"), field_str(o, "misses"),
           field_str(o, "stores"), field_str(o, "evictions"), field_str(o, "expired"));
}

/* cache stats [--json] | cache purge [--model M] [--json] */
static int
cmd_cache(int argc, char **argv)
{
    struct json_object *req, *reply = NULL, *models;
    const char *model = NULL;
    int rc;

    if (argc < 1 || (strcmp(argv[0], "stats") != 0 && strcmp(argv[0], "purge") != 0))
        return usage_error("cache: %s", "give stats or purge");
    bool purge = strcmp(argv[0], "purge") == 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            json_out = true;
        else if (purge && strcmp(argv[i], "--model") == 0 && i + 1 < argc)
            model = argv[++i];
        else
            return usage_error("cache: unknown or incomplete argument %s", argv[i]);
    }
    req = request_new(purge ? "cache.purge" : "cache.stats");
    if (model != NULL)
        json_object_object_add(req, "model", json_object_new_string(model));
    if ((rc = call(req, &reply)) != 0)
        return rc;
    json_object_object_del(reply, "ok");
    if (json_out) {
        print_json(reply, NULL);
    } else if (purge) {
        printf("removed %s cached answers%s%s\n", field_str(reply, "removed"),
               model ? " of model " : "", model ? model : "");
    } else {
        printf("cache %s, max_size %s bytes\n",
               strcmp(field_str(reply, "enabled"), "true") == 0 ? "on" : "off (no model caches)",
               field_str(reply, "max_size"));
        printf("%-24s %8s %12s %8s %8s %8s %9s %8s\n", "MODEL", "ENTRIES", "BYTES", "HITS",
               "MISSES", "STORES", "EVICTIONS", "EXPIRED");
        json_object_object_get_ex(reply, "models", &models);
        for (size_t i = 0; i < json_object_array_length(models); i++) {
            struct json_object *m = json_object_array_get_idx(models, i);
            cache_row(m, field_str(m, "model"));
        }
        cache_row(reply, "total");
    }
    json_object_put(reply);
    return 0;
}

/* logs [--key ID] [--model M] [--since T] [--follow] [--json] [--dir DIR] */
static int
cmd_logs(int argc, char **argv)
{
    struct gw_admin_logs_filter f = {0};
    struct json_object *reply = NULL, *v;
    const char *dir = NULL;
    char since[32];
    int rc;

    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            f.json = true;
        else if (strcmp(argv[i], "--follow") == 0 || strcmp(argv[i], "-f") == 0)
            f.follow = true;
        else if (strcmp(argv[i], "--key") == 0 && i + 1 < argc)
            f.key = argv[++i];
        else if (strcmp(argv[i], "--model") == 0 && i + 1 < argc)
            f.model = argv[++i];
        else if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc)
            dir = argv[++i];
        else if (strcmp(argv[i], "--since") == 0 && i + 1 < argc) {
            if (gw_admin_logs_since(argv[++i], since, sizeof(since)) != 0)
                return usage_error("--since %s: give YYYY-MM-DD[THH:MM[:SS]] or 30m, 2h, 7d",
                                   argv[i]);
            f.since = since;
        } else
            return usage_error("logs: unknown or incomplete argument %s", argv[i]);
    }
    f.json |= json_out;
    if (dir == NULL) {
        if ((rc = call(request_new("capture.info"), &reply)) != 0)
            return rc;
        if (json_object_object_get_ex(reply, "journal", &v) && json_object_get_boolean(v)) {
            fprintf(stderr, "aigwctl: capture goes to journald: journalctl -t aigwd-capture -o "
                            "cat (add AIGW_MODEL=M or AIGW_KEY_ID=K to filter)\n");
            json_object_put(reply);
            return EXIT_REFUSED;
        }
        if (!json_object_object_get_ex(reply, "dir", &v) ||
            !json_object_is_type(v, json_type_string)) {
            fprintf(stderr, "aigwctl: capture is not configured (capture: in aigw.yaml)\n");
            json_object_put(reply);
            return EXIT_REFUSED;
        }
        dir = json_object_get_string(v);
    }
    rc = gw_admin_logs(dir, &f) == 0 ? 0 : EXIT_REFUSED;
    json_object_put(reply);
    return rc;
}

int
main(int argc, char **argv)
{
    int i = 1;

    signal(SIGPIPE, SIG_IGN); /* a closed socket is an error to report, not a death */
    gw_locale_c_thread();
    socket_path = getenv("AIGW_SOCKET");
    if (socket_path == NULL || socket_path[0] == '\0')
        socket_path = GW_DEFAULT_SOCKET;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (strcmp(argv[i], "-s") == 0 && i + 1 < argc) {
            socket_path = argv[++i];
        } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            fputs(usage_text, stdout);
            return 0;
        } else if (strcmp(argv[i], "--json") == 0) {
            json_out = true;
        } else {
            return usage_error("unknown option %s", argv[i]);
        }
    }
    if (i >= argc)
        return usage_error("%s", "no command given");
    const char *cmd = argv[i++];
    if (strcmp(cmd, "help") == 0) {
        fputs(usage_text, stdout);
        return 0;
    }
    if (strcmp(cmd, "status") == 0)
        return cmd_status(argc - i, argv + i);
    if (strcmp(cmd, "key") == 0)
        return cmd_key(argc - i, argv + i);
    if (strcmp(cmd, "tenant") == 0 || strcmp(cmd, "user") == 0)
        return cmd_account(cmd, argc - i, argv + i);
    if (strcmp(cmd, "grant") == 0 || strcmp(cmd, "revoke") == 0)
        return cmd_grant(cmd, argc - i, argv + i);
    if (strcmp(cmd, "audit") == 0)
        return cmd_audit(argc - i, argv + i);
    if (strcmp(cmd, "workers") == 0)
        return cmd_workers(argc - i, argv + i);
    if (strcmp(cmd, "reload") == 0)
        return cmd_reload(argc - i, argv + i);
    if (strcmp(cmd, "usage") == 0)
        return cmd_usage(argc - i, argv + i);
    if (strcmp(cmd, "breaker") == 0)
        return cmd_breaker(argc - i, argv + i);
    if (strcmp(cmd, "limit") == 0)
        return cmd_limit(argc - i, argv + i);
    if (strcmp(cmd, "quota") == 0)
        return cmd_quota(argc - i, argv + i);
    if (strcmp(cmd, "endpoint") == 0)
        return cmd_endpoint(argc - i, argv + i);
    if (strcmp(cmd, "provider") == 0)
        return gw_admin_provider(argc - i, argv + i);
    if (strcmp(cmd, "model") == 0)
        return gw_admin_model(argc - i, argv + i);
    if (strcmp(cmd, "cache") == 0)
        return cmd_cache(argc - i, argv + i);
    if (strcmp(cmd, "logs") == 0)
        return cmd_logs(argc - i, argv + i);
    return usage_error("unknown command %s", cmd);
}
