/*
 * aigwctl - the administrator's command line: a thin client of the
 * master's admin socket.  It sends one JSON request, prints the reply for
 * a person (or as JSON with --json) and exits 0 on success, 1 when the
 * master refused or failed the command, 2 on a usage error, 3 when the
 * master cannot be reached.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "shm/shm.h"

#define EXIT_REFUSED 1
#define EXIT_USAGE 2
#define EXIT_UNREACHABLE 3
#define CTL_TIMEOUT_S 10

static const char usage_text[] =
    "usage: aigwctl [-h] [-s socket] command [arguments]\n"
    "\n"
    "commands:\n"
    "  help                                  print this help\n"
    "  status [--json]                       show the running gateway\n"
    "  workers [--json]                      list the worker processes\n"
    "  reload                                re-read the configuration (like SIGHUP)\n"
    "  usage [--json]                        usage totals: requests, input and output tokens\n"
    "  key create --name NAME [--models a,b] [--route STRATEGY] [--route-header] [--json]\n"
    "                                        create an API key; prints its secret once\n"
    "  key list [--json]                     list keys (never their secrets)\n"
    "  key show ID [--json]                  show one key\n"
    "  key disable ID                        refuse the key from now on\n"
    "  key enable ID                         accept a disabled key again\n"
    "  key delete ID                         delete the key for good\n"
    "\n"
    "The socket is -s PATH, else $AIGW_SOCKET, else " GW_DEFAULT_SOCKET ".\n"
    "See aigwctl(8).\n";

static const char *socket_path;
static bool json_out;

static int
usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "aigwctl: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n%s", "usage: aigwctl [-s socket] command [arguments]; see aigwctl help\n");
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
    struct timeval tv = {.tv_sec = CTL_TIMEOUT_S};
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
        fprintf(stderr, "aigwctl: cannot connect to %s: %s (is aigwd running? use -s or "
                "AIGW_SOCKET)\n", socket_path, strerror(errno));
        goto out;
    }
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    const char *s = json_object_to_json_string_length(req, JSON_C_TO_STRING_PLAIN, &len);
    if (gw_write_all(fd, s, len) != 0 || gw_write_all(fd, "\n", 1) != 0) {
        fprintf(stderr, "aigwctl: write to %s: %s\n", socket_path, strerror(errno));
        goto out;
    }
    int rc = gw_proto_read_line(fd, &in, &line, &used);
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
    printf("%-16s  %-20s  %-16s  %-8s  %-20s  %s\n", field_str(k, "id"), field_str(k, "name"),
           field_str(k, "prefix"),
           json_object_object_get_ex(k, "disabled", &d) && json_object_get_boolean(d)
               ? "disabled"
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
               "requests    %s served, %s in flight\n"
               "models      %s, providers %s\n",
               field_str(reply, "version"), field_str(reply, "pid"), field_str(reply, "uptime"),
               field_str(reply, "config"), field_str(reply, "generation"),
               field_str(reply, "reloads"), field_str(reply, "reload_failures"),
               field_str(w, "configured"), field_str(w, "idle"), field_str(w, "busy"),
               field_str(w, "starting"), field_str(w, "stopping"), field_str(reply, "requests"),
               field_str(reply, "in_flight"), field_str(reply, "models"),
               field_str(reply, "providers"));
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

static int
cmd_workers(int argc, char **argv)
{
    struct json_object *reply = NULL, *arr;
    int rc;

    if (!only_json("workers", argc, argv, &rc))
        return rc;
    if ((rc = call(request_new("workers"), &reply)) != 0)
        return rc;
    json_object_object_get_ex(reply, "workers", &arr);
    if (json_out) {
        print_json(reply, "workers");
    } else {
        printf("%-5s  %-8s  %-9s  %10s  %8s\n", "SLOT", "PID", "STATE", "REQUESTS", "BUSY_MS");
        for (size_t i = 0; i < json_object_array_length(arr); i++) {
            struct json_object *w = json_object_array_get_idx(arr, i);
            printf("%-5s  %-8s  %-9s  %10s  %8s\n", field_str(w, "slot"), field_str(w, "pid"),
                   field_str(w, "state"), field_str(w, "requests"), field_str(w, "busy_ms"));
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

    if (!only_json("reload", argc, argv, &rc))
        return rc;
    if ((rc = call(request_new("reload"), &reply)) != 0)
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

static int
cmd_usage(int argc, char **argv)
{
    struct json_object *reply = NULL;
    int rc;

    if (!only_json("usage", argc, argv, &rc))
        return rc;
    if ((rc = call(request_new("usage"), &reply)) != 0)
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

/* show, disable, enable, delete: one key id, one command. */
static int
cmd_key_id(const char *cmd, int argc, char **argv)
{
    struct json_object *req, *reply = NULL;
    const char *id = NULL;
    int rc;

    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            json_out = true;
        else if (id == NULL && argv[i][0] != '-')
            id = argv[i];
        else
            return usage_error("key: unexpected argument %s", argv[i]);
    }
    if (id == NULL)
        return usage_error("key %s: which key? give its ID", strchr(cmd, '.') + 1);
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
    for (size_t i = 0; i < sizeof(id_cmds) / sizeof(id_cmds[0]); i++) {
        if (strcmp(argv[0], id_cmds[i]) == 0) {
            snprintf(cmd, sizeof(cmd), "key.%s", id_cmds[i]);
            return cmd_key_id(cmd, argc - 1, argv + 1);
        }
    }
    return usage_error("key: unknown subcommand %s", argv[0]);
}

int
main(int argc, char **argv)
{
    int i = 1;

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
    if (strcmp(cmd, "workers") == 0)
        return cmd_workers(argc - i, argv + i);
    if (strcmp(cmd, "reload") == 0)
        return cmd_reload(argc - i, argv + i);
    if (strcmp(cmd, "usage") == 0)
        return cmd_usage(argc - i, argv + i);
    return usage_error("unknown command %s", cmd);
}
